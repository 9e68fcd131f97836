"""Binary data sets: the embedded digits, a teacher SBN's samples, files, and named benchmarks.

* ``digits``: scikit-learn's built-in 8x8 digits (1,797 images, pixel values 0..16),
  binarised as ``pixel >= DIGITS_THRESHOLD`` (8, half the range): 64 visible units.
  Fixed split: a permutation with ``numpy.random.default_rng(0)``; the first 1,438 images
  train, the last 359 test. No validation split. No download.
* ``synthetic:<arch>:<seed>``: samples from a teacher SBN initialised with
  ``SBNParams.init(arch, seed, scale=SYNTHETIC_SCALE)`` (biases drawn too), 1,000 train and
  500 test points, drawn with ``default_rng(seed + 1)``. The teacher comes with the data,
  so its exact test log-likelihood is known when it is small enough to enumerate.
* ``binarized-mnist``, ``caltech101-silhouettes``, ``uci:<name>``: the standard benchmark
  sets with train, valid and test splits, from a path, a cache folder or a download; see
  :mod:`sbn_ppl.base.datasets`.
* a file (a ``str`` or any path-like): ``.npy``; ``.npz`` with arrays ``train`` and
  ``test`` (and optionally ``valid``), or with one array; MATLAB v5 ``.mat``; text
  (``.txt``, ``.dat``, ``.csv``, ``.data``, ``.amat``: one row per line, values separated
  by whitespace or commas, lines starting with ``#`` after any indentation are comments).
  An ``.amat`` that is really a MATLAB file (as some copies of binarized MNIST are) is read
  as one. A file with one array is split like the digits (80% train, fixed permutation),
  and the :class:`Dataset` says so (``split_from_one_array``, ``note``).

Every array is checked by :func:`validate_binary`: bad data raises a ``ValueError`` that
says what is wrong and where. Subsets for scoring and curves are seeded random ones
(:func:`random_subset`), never the first N: some test sets are sorted by class.
"""
from __future__ import annotations

import os

import numpy as np

import sbn_ppl.base.datasets as datasets
from sbn_ppl.base.arrays import Dataset, validate_binary, read_arrays, SPLITS
from sbn_ppl.base.params import SBNParams

DIGITS_THRESHOLD = 8
SYNTHETIC_SCALE = 2.0
SYNTHETIC_TRAIN, SYNTHETIC_TEST = 1000, 500
TRAIN_FRACTION = 0.8


# Seeded random subsets


# Built-in data sets


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
    import sbn_ppl.base.density as density
    from sbn_ppl.base.architecture import Architecture
    from sbn_ppl.base.resources import check_memory

    sizes = Architecture.parse(arch, connectivity).sizes
    check_memory((n_train + n_test) * sum(sizes) * 8.0 * 3, f"synthetic data {arch} ({n_train + n_test} samples)")
    teacher = SBNParams.init(arch, seed=seed, scale=SYNTHETIC_SCALE, guide=(), connectivity=connectivity)
    rng = np.random.default_rng(seed + 1)
    biases = {
        f"b_{l}": SYNTHETIC_SCALE * 0.5 * rng.standard_normal(n) for l, n in enumerate(teacher.architecture.sizes)
    }
    teacher = teacher.replace(**biases)
    x = density.sample_prior(teacher, n_train + n_test, rng)[0].astype(np.float32)
    return Dataset(f"synthetic:{arch}:{seed}", x[:n_train], x[n_train:], teacher)


# Reading files


def load_file(path: str | os.PathLike) -> Dataset:
    """A data file as a :class:`Dataset`; see the module docstring for the formats.

    :param path: the file (a ``str`` or any path-like).
    """
    path = os.fspath(path)
    arrays = read_arrays(path)
    name = os.path.basename(path)
    present = [s for s in SPLITS if s in arrays]
    if present:
        return _named_splits(path, name, arrays, present)
    if len(arrays) != 1:
        raise ValueError(f"data file {path!r} holds arrays {sorted(arrays)}; expected 'train' and 'test' "
                         "(and optionally 'valid'), or one array")
    x = validate_binary(next(iter(arrays.values())), name=name)
    note = (f"{name} holds one array: split {TRAIN_FRACTION:.0%} train / {1 - TRAIN_FRACTION:.0%} test "
            "by a fixed permutation (seed 0)")
    return Dataset(name, *_split(x), split_from_one_array=True, note=note, source=path)


def _named_splits(path: str, name: str, arrays: dict, present: list[str]) -> Dataset:
    if "train" not in present or "test" not in present:
        raise ValueError(
            f"data file {path!r} holds {', '.join(repr(s) for s in present)} but needs both 'train' and 'test' "
            "(and optionally 'valid'): save it with np.savez(path, train=..., test=...), "
            "or save one array alone to have it split 80/20"
        )
    train = validate_binary(arrays["train"], name=f"{name}[train]")
    splits = {s: validate_binary(arrays[s], width=train.shape[1], name=f"{name}[{s}]") for s in present}
    return Dataset(name, splits["train"], splits["test"], valid=splits.get("valid"), source=path)


def load_dataset(spec: str | os.PathLike, path: str | os.PathLike | None = None, width: int | None = None) -> Dataset:
    """A data set by name, or a file.

    :param spec: ``"digits"``, ``"synthetic:<arch>:<seed>"``, a named benchmark
        (``"binarized-mnist"``, ``"caltech101-silhouettes"``, ``"uci:<name>"``; see
        :mod:`sbn_ppl.base.datasets`), or a file path (``str`` or path-like).
    :param path: for a named benchmark only: where its files are (a folder, or one
        ``.npz``); ``None`` looks in the cache folder and downloads what is missing.
    :param width: the model's number of visible units, checked here so that an error names
        the file (``None``: no check).
    """
    if isinstance(spec, str) and datasets.is_benchmark(spec):
        return datasets.load_benchmark(spec, path).check_width(width)
    if path is not None:
        raise ValueError(f"path= applies to the named benchmarks ({', '.join(datasets.names())}), not to {spec!r}")
    return _load_builtin_or_file(spec).check_width(width)


def _load_builtin_or_file(spec: str | os.PathLike) -> Dataset:
    if spec == "digits":
        return load_digits()
    if isinstance(spec, str) and spec.startswith("synthetic"):
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not parts[1]:
            raise ValueError(f"cannot read data spec {spec!r}: expected 'synthetic:<arch>:<seed>', e.g. synthetic:16-6-3:0")
        try:
            seed = int(parts[2]) if len(parts) == 3 else 0
        except ValueError:
            raise ValueError(f"cannot read data spec {spec!r}: the seed must be an integer") from None
        return synthetic(parts[1], seed)
    return load_file(spec)
