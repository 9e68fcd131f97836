"""Binary data sets: the embedded digits, a teacher SBN's samples, and files.

* ``digits``: scikit-learn's built-in 8x8 digits (1,797 images, pixel values 0..16),
  binarised as ``pixel >= DIGITS_THRESHOLD`` (8, half the range): 64 visible units.
  Fixed split: a permutation with ``numpy.random.default_rng(0)``; the first 1,438 images
  train, the last 359 test. No download.
* ``synthetic:<arch>:<seed>``: samples from a teacher SBN initialised with
  ``SBNParams.init(arch, seed, scale=SYNTHETIC_SCALE)`` (biases drawn too), 1,000 train and
  500 test points, drawn with ``default_rng(seed + 1)``. The teacher comes with the data,
  so its exact test log-likelihood is known when it is small enough to enumerate.
* a file: ``.npy``, ``.npz`` (arrays ``train`` and ``test``, or one array), whitespace text
  (``.txt``, ``.dat``, ``.csv`` with whitespace or commas) and ``.amat``; rows are data
  points. A file with one array is split like the digits (80% train, fixed permutation).

Every array is checked by :func:`validate_binary`: bad data raises a ``ValueError`` that
says what is wrong and where.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .params import SBNParams

DIGITS_THRESHOLD = 8
SYNTHETIC_SCALE = 2.0
SYNTHETIC_TRAIN, SYNTHETIC_TEST = 1000, 500
TRAIN_FRACTION = 0.8
TEXT_SUFFIXES = (".txt", ".dat", ".csv", ".amat")


@dataclass(frozen=True)
class Dataset:
    """Train and test matrices of 0.0/1.0 (``float32``, rows are data points)."""

    name: str
    train: np.ndarray
    test: np.ndarray
    teacher: SBNParams | None = None

    @property
    def visible_size(self) -> int:
        return int(self.train.shape[1])


def validate_binary(x, width: int | None = None, name: str = "data") -> np.ndarray:
    """Return ``x`` as a 2-D ``float32`` array of 0/1, or raise a ``ValueError`` naming the problem."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    try:
        x = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name}: cannot be read as a numeric matrix ({e})") from None
    if x.ndim == 1:
        raise ValueError(f"{name}: expected a 2-D matrix (rows are data points), got a 1-D array of length {len(x)}")
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D matrix (rows are data points), got shape {x.shape}")
    if x.shape[0] == 0:
        raise ValueError(f"{name}: the data set is empty (0 rows)")
    if x.shape[1] == 0:
        raise ValueError(f"{name}: rows have no columns")
    nan = np.argwhere(np.isnan(x))
    if len(nan):
        r, c = nan[0]
        raise ValueError(f"{name}: NaN at row {r}, column {c} ({len(nan)} NaN values in all)")
    bad = np.argwhere((x != 0) & (x != 1))
    if len(bad):
        r, c = bad[0]
        raise ValueError(
            f"{name}: non-binary value {float(x[r, c]):g} at row {r}, column {c} "
            f"({len(bad)} values not 0 or 1); binarise the data first"
        )
    if width is not None and x.shape[1] != width:
        raise ValueError(f"{name}: rows have {x.shape[1]} columns but the model has {width} visible units")
    return x.astype(np.float32)


def _split(x: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(len(x))
    n_train = int(round(TRAIN_FRACTION * len(x)))
    if n_train == 0 or n_train == len(x):
        raise ValueError(f"cannot split {len(x)} data points into non-empty train and test sets")
    return x[order[:n_train]], x[order[n_train:]]


def load_digits() -> Dataset:
    """The embedded default: scikit-learn's 8x8 digits, binarised at 8 of 16."""
    from sklearn.datasets import load_digits as sk_digits

    images = sk_digits().data
    x = (images >= DIGITS_THRESHOLD).astype(np.float32)
    train, test = _split(x, seed=0)
    return Dataset("digits", train, test)


def synthetic(
    arch: str, seed: int = 0, n_train: int = SYNTHETIC_TRAIN, n_test: int = SYNTHETIC_TEST, connectivity: str = "layered"
) -> Dataset:
    """Samples of a teacher SBN; ``Dataset.teacher`` holds its parameters."""
    from . import density

    teacher = SBNParams.init(arch, seed=seed, scale=SYNTHETIC_SCALE, guide=(), connectivity=connectivity)
    rng = np.random.default_rng(seed + 1)
    biases = {
        f"b_{l}": SYNTHETIC_SCALE * 0.5 * rng.standard_normal(n) for l, n in enumerate(teacher.architecture.sizes)
    }
    teacher = teacher.replace(**biases)
    x = density.sample_prior(teacher, n_train + n_test, rng)[0].astype(np.float32)
    return Dataset(f"synthetic:{arch}:{seed}", x[:n_train], x[n_train:], teacher)


def load_file(path: str) -> Dataset:
    """A data file; see the module docstring for the formats."""
    if not os.path.exists(path):
        raise ValueError(f"data file {path!r} does not exist")
    suffix = os.path.splitext(path)[1].lower()
    try:
        if suffix == ".npy":
            arrays = {"x": np.load(path, allow_pickle=False)}
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
        elif suffix in TEXT_SUFFIXES:
            text = open(path).read().replace(",", " ")
            rows = [line.split() for line in text.splitlines() if line.strip() and not line.startswith("#")]
            if rows and len({len(r) for r in rows}) > 1:
                lengths = [len(r) for r in rows]
                bad = next(i for i, n in enumerate(lengths) if n != lengths[0])
                raise ValueError(f"row {bad} has {lengths[bad]} values but row 0 has {lengths[0]}")
            arrays = {"x": np.array(rows, dtype=np.float64).reshape(len(rows), -1)}
        else:
            raise ValueError(f"unknown file type {suffix!r}; expected .npy, .npz, .txt, .dat, .csv or .amat")
    except ValueError as e:
        raise ValueError(f"cannot read data file {path!r}: {e}") from None
    except Exception as e:  # noqa: BLE001 - any unreadable file gets one clear message
        raise ValueError(f"cannot read data file {path!r}: {e}") from None
    name = os.path.basename(path)
    if "train" in arrays and "test" in arrays:
        train = validate_binary(arrays["train"], name=f"{name}[train]")
        test = validate_binary(arrays["test"], width=train.shape[1], name=f"{name}[test]")
        return Dataset(name, train, test)
    if len(arrays) != 1:
        raise ValueError(f"data file {path!r} holds arrays {sorted(arrays)}; expected 'train' and 'test', or one array")
    x = validate_binary(next(iter(arrays.values())), name=name)
    return Dataset(name, *_split(x))


def load_dataset(spec: str) -> Dataset:
    """``"digits"``, ``"synthetic:<arch>:<seed>"`` or a file path."""
    if spec == "digits":
        return load_digits()
    if spec.startswith("synthetic"):
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not parts[1]:
            raise ValueError(f"cannot read data spec {spec!r}: expected 'synthetic:<arch>:<seed>', e.g. synthetic:16-6-3:0")
        try:
            seed = int(parts[2]) if len(parts) == 3 else 0
        except ValueError:
            raise ValueError(f"cannot read data spec {spec!r}: the seed must be an integer") from None
        return synthetic(parts[1], seed)
    return load_file(spec)
