"""Binary data as arrays: the :class:`Dataset` record, the check every array passes
(:func:`validate_binary`), seeded random subsets, and reading arrays from files (``.npy``,
``.npz``, MATLAB v5 ``.mat``, text). The named sets and files are loaded by
:mod:`sbn_ppl.base.data` and :mod:`sbn_ppl.base.datasets`, which both stand on this module."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from sbn_ppl.base.params import SBNParams


SPLITS = ("train", "valid", "test")


TEXT_SUFFIXES = (".txt", ".dat", ".csv", ".data", ".amat")


NPY_MAGIC = b"\x93NUMPY"


ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # an .npz is a zip archive (the second: an empty one)


MATLAB_MAGIC = b"MATLAB 5.0 MAT-file"


@dataclass(frozen=True)
class Dataset:
    """Train, test and (optionally) validation matrices of 0.0/1.0 (``float32``, rows are data points).

    :param name: how the data set is named in records: a spec (``"digits"``) or a file's name.
    :param train: the training rows.
    :param test: the held-out rows that scores are reported on.
    :param teacher: the SBN that generated the data, for ``synthetic`` sets; else ``None``.
    :param valid: validation rows (early stopping, model selection), or ``None`` if the set has none.
    :param split_from_one_array: ``True`` when ``train`` and ``test`` were cut from one array
        (80/20) by the loader, so the file itself defines no held-out set; an evaluation can
        then score ``split("all")`` and say so.
    :param note: a human-readable remark on how the splits were made ("" if none).
    :param source: where the rows were read from (file paths), or ``None`` for built-in sets.
    """

    name: str
    train: np.ndarray
    test: np.ndarray
    teacher: SBNParams | None = None
    valid: np.ndarray | None = None
    split_from_one_array: bool = False
    note: str = ""
    source: str | None = None

    @property
    def visible_size(self) -> int:
        return int(self.train.shape[1])

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits present, in the order ``train``, ``valid``, ``test``."""
        return tuple(s for s in SPLITS if getattr(self, s) is not None)

    def split(self, which: str) -> np.ndarray:
        """The rows of one split.

        :param which: ``"train"``, ``"valid"``, ``"test"``, or ``"all"`` (every present split, in that order).
        """
        if which == "all":
            return np.concatenate([getattr(self, s) for s in self.splits])
        if which not in SPLITS:
            raise ValueError(f"unknown split {which!r}; choose one of train, valid, test, all")
        rows = getattr(self, which)
        if rows is None:
            present = ", ".join(self.splits)
            raise ValueError(f"data set {self.name!r} has no {which!r} split; it has {present} (or 'all')")
        return rows

    def check_width(self, width: int | None) -> "Dataset":
        """Return the data set, or raise a ``ValueError`` naming it if its rows are not ``width`` wide.

        :param width: the model's number of visible units (``None``: no check).
        """
        if width is not None and self.visible_size != width:
            where = f"{self.name} ({self.source})" if self.source else self.name
            raise ValueError(f"{where}: rows have {self.visible_size} columns "
                             f"but the model has {width} visible units")
        return self


def validate_binary(x, width: int | None = None, name: str = "data") -> np.ndarray:
    """Return ``x`` as a 2-D ``float32`` array of 0/1, or raise a ``ValueError`` naming the problem.

    :param x: an array-like (or a torch tensor), rows are data points.
    :param width: the number of columns required (the model's visible units), or ``None``.
    :param name: what to call ``x`` in an error message (a file name, ``"x"``).
    """
    x = _as_matrix(x, name)
    if x.dtype.kind == "f":
        nan = np.argwhere(np.isnan(x))
        if len(nan):
            r, c = nan[0]
            raise ValueError(f"{name}: NaN at row {r}, column {c} ({len(nan)} NaN values in all)")
    if not _all_binary(x):
        bad = np.argwhere((x != 0) & (x != 1))
        r, c = bad[0]
        raise ValueError(
            f"{name}: non-binary value {float(x[r, c]):g} at row {r}, column {c} "
            f"({len(bad)} values not 0 or 1); binarise the data first"
        )
    if width is not None and x.shape[1] != width:
        raise ValueError(f"{name}: rows have {x.shape[1]} columns but the model has {width} visible units")
    return x.astype(np.float32)


def _all_binary(x: np.ndarray) -> bool:
    if x.dtype.kind == "f":
        return not np.any((x != 0) & (x != 1))
    return bool(x.min() >= 0 and x.max() <= 1)  # integers: no mask of the whole array


def _as_matrix(x, name: str) -> np.ndarray:
    """``x`` as a non-empty 2-D numeric NumPy array (integers stay integers: no float64 copy of big data)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray) or x.dtype.kind not in "biuf":
        x = _numeric(x, name)
    if x.ndim == 1:
        raise ValueError(f"{name}: expected a 2-D matrix (rows are data points), got a 1-D array of length {len(x)}")
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D matrix (rows are data points), got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name}: the data set is empty (0 rows)")
    if x.shape[1] == 0:
        raise ValueError(f"{name}: rows have no columns")
    return x.astype(np.uint8) if x.dtype.kind == "b" else x


def _numeric(x, name: str) -> np.ndarray:
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: cannot be read as a numeric matrix ({e})") from None


def subset_indices(size: int, n: int | None, seed: int) -> np.ndarray:
    """Sorted indices of ``n`` of ``size`` rows, drawn without replacement by ``default_rng(seed)``.

    :param size: the number of rows to choose from.
    :param n: how many to choose; ``None`` or ``n >= size`` gives every row, ``0..size-1``.
    :param seed: the seed of the draw: the same ``(size, n, seed)`` always gives the same rows.
    """
    if n is None or n >= size:
        return np.arange(size)
    if n < 1:
        raise ValueError(f"a subset needs at least 1 row, got n={n}")
    return np.sort(np.random.default_rng(seed).choice(size, size=int(n), replace=False))


def random_subset(x, n: int | None, seed: int):
    """A seeded random subset of the rows of ``x`` (in their original order), never the first ``n``.

    Use it for ``--limit``, learning-curve points and scoring subsets: a test set may be
    sorted by class (binarized MNIST's is), so its first rows are a biased sample.

    :param x: an array (anything indexable by an index array), rows are data points.
    :param n: the number of rows; ``None`` or ``n >= len(x)`` returns ``x`` itself.
    :param seed: the seed of the draw (see :func:`subset_indices`).
    """
    if n is None or n >= len(x):
        return x
    return x[subset_indices(len(x), n, seed)]


def read_arrays(path: str | os.PathLike, label: str | None = None) -> dict[str, np.ndarray]:
    """The arrays in a data file, by name (``{"x": ...}`` for a file of one matrix); see the module docstring.

    Raises a ``ValueError`` that names the file and what is wrong with it.

    :param path: the file; its suffix (and, for ``.amat``, its first bytes) says how to read it.
    :param label: what to call the file in messages (default: ``path``), e.g. the URL of a download.
    """
    path = os.fspath(path)
    label = label or path
    if not os.path.exists(path):
        raise ValueError(f"data file {label!r} does not exist")
    suffix = os.path.splitext(path)[1].lower()
    try:
        if os.path.getsize(path) == 0:
            raise ValueError("empty file (0 bytes)")
        return _read_by_suffix(path, suffix)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets one clear message
        raise ValueError(f"cannot read data file {label!r}: {e}") from None


def _read_by_suffix(path: str, suffix: str) -> dict[str, np.ndarray]:
    head = _head(path)
    if suffix == ".npy":
        if not head.startswith(NPY_MAGIC):
            raise ValueError("it is not a .npy file (it does not start with NumPy's header)")
        return {"x": np.load(path, allow_pickle=False)}
    if suffix == ".npz":
        if not head.startswith(ZIP_MAGICS):
            raise ValueError("it is not a .npz file (NumPy's .npz is a zip archive; this is not one)")
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    if suffix == ".mat" or (suffix == ".amat" and head.startswith(MATLAB_MAGIC)):
        return read_matlab(path)
    if suffix in TEXT_SUFFIXES:
        return {"x": read_text_matrix(path)}
    raise ValueError(f"unknown file type {suffix!r}; expected .npy, .npz, .mat, or text ({', '.join(TEXT_SUFFIXES)})")


def _head(path: str, size: int = 32) -> bytes:
    with open(path, "rb") as f:
        return f.read(size)


def read_matlab(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of a MATLAB (v5, as SciPy reads it) file, by name, without MATLAB's ``__header__`` entries."""
    from scipy.io import loadmat  # SciPy comes with scikit-learn

    if not _head(os.fspath(path)).startswith(b"MATLAB"):
        raise ValueError("it is not a MATLAB .mat file (it does not start with MATLAB's header)")
    return {k: v for k, v in loadmat(os.fspath(path)).items() if not k.startswith("__")}


def read_text_matrix(path: str | os.PathLike) -> np.ndarray:
    """A matrix from a text file: one row per line, values separated by whitespace or commas.

    Blank lines and ``#`` comment lines (indented or not) are skipped. A file of single
    0/1 digits (binarized MNIST's ``.amat``) is parsed with byte-string operations
    (``uint8``); anything else line by line (``float64``), with an error that names the
    first bad line.

    :param path: the text file.
    """
    with open(path, "rb") as f:
        raw = f.read()
    fast = _binary_digit_rows(raw)
    if fast is not None:
        return fast
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"it is not a text file (byte {e.start} is not UTF-8 text)") from None
    return _text_rows(text)


SEPARATORS = b" \t,\r"


BINARY_TEXT_BYTES = b"01\n" + SEPARATORS


def _binary_digit_rows(raw: bytes) -> np.ndarray | None:
    """The rows of a text of single 0/1 digits between separators, or ``None`` if it is anything else.

    Byte-string operations throughout (``bytes.translate`` runs at memory speed): about
    0.5 s for binarized MNIST's 78 MB training file, where ``np.loadtxt`` takes 1.6 s.
    """
    if raw.translate(None, BINARY_TEXT_BYTES):
        return None  # another character: a comment, a word, a number such as 0.5
    digit = np.frombuffer(raw, np.uint8) >= ord("0")  # every separator and newline is below "0"
    if np.any(digit[1:] & digit[:-1]):
        return None  # a token of several digits, such as 10
    per_line = [n for n in (len(line.translate(None, SEPARATORS)) for line in raw.split(b"\n")) if n]
    if not per_line or any(n != per_line[0] for n in per_line):
        return None  # empty or ragged: the line-by-line reader names the problem
    digits = np.frombuffer(raw.translate(None, SEPARATORS + b"\n"), np.uint8) - ord("0")
    return digits.reshape(len(per_line), per_line[0])


def _text_rows(text: str) -> np.ndarray:
    numbers, rows = [], []  # line numbers (from 1) and their values, as strings
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            numbers.append(number)
            rows.append(line.replace(",", " ").split())
    if not rows:
        raise ValueError("empty file: it holds no rows of numbers (only blank or # comment lines)")
    if len({len(r) for r in rows}) == 1:
        try:
            return np.array(rows, dtype=np.float64)
        except ValueError:
            pass  # a word somewhere: found below
    _check_numbers(numbers, rows)
    widths = [len(r) for r in rows]
    bad = next(i for i, w in enumerate(widths) if w != widths[0])
    raise ValueError(f"line {numbers[bad]} has {widths[bad]} values but line {numbers[0]} has {widths[0]}")


def _check_numbers(numbers: list[int], rows: list[list[str]]) -> None:
    for number, row in zip(numbers, rows):
        for value in row:
            try:
                float(value)
            except ValueError:
                raise ValueError(f"line {number}: {value!r} is not a number") from None
