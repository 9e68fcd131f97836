"""Named benchmark sets: binarized MNIST, Caltech-101 Silhouettes and NADE's binary UCI sets.

The sets of the SBN literature (NVIL, reweighted wake-sleep, VIMCO), each with fixed
``train``, ``valid`` and ``test`` splits of 0/1 rows:

==========================  =====  ======  ======  ======  ==========================================
name                        D      train   valid   test    canonical source
==========================  =====  ======  ======  ======  ==========================================
``binarized-mnist``         784    50,000  10,000  10,000  Larochelle's ``binarized_mnist_*.amat``
``caltech101-silhouettes``  784    4,100   2,264   2,307   Marlin's ``caltech101_silhouettes_28_split1.mat``
``uci:adult``               123    5,000   1,414   26,147  NADE's files, as copied in arranger1044/DEBD
``uci:connect4``            126    16,000  4,000   47,557  same
``uci:mushrooms``           112    2,000   500     5,624   same
``uci:nips``                500    400     100     1,240   same
``uci:ocr_letters``         128    32,152  10,000  10,000  same
==========================  =====  ======  ======  ======  ==========================================

Binarized MNIST rows are 28 x 28 images in row-major order. Caltech rows are kept as in
Marlin's file: column-major pixels (``reshape(28, 28, order="F")`` shows an upright image)
and 1 is background (mean about 0.55), as the RWS and NVIL papers use the file.

**Where a set is read from**, in this order:

1. ``path`` when the caller gives one: a folder holding the set's files under their own
   names (``binarized_mnist_train.amat`` ..., ``adult.train.data`` ..., or the set's
   ``.npz``), or one ``.npz`` with arrays ``train``, ``valid`` and ``test`` (for Caltech,
   also Marlin's ``.mat`` itself).
2. the cache folder, ``$SBN_PPL_DATA`` or else ``~/.cache/sbn_ppl``, laid out as::

       binarized_mnist.npz                       (train, valid, test), or
       binarized_mnist/binarized_mnist_{train,valid,test}.amat
       caltech101_silhouettes.npz, or
       caltech101_silhouettes/caltech101_silhouettes_28_split1.mat
       uci/<name>.npz, or
       uci/<name>/<name>.{train,valid,test}.data

   (so ``SBN_PPL_DATA=../shared/data`` reads the project's shared copies, which are the
   ``.npz`` forms).
3. a download of the source files that are missing from the cache, from the canonical
   URL, or from ``$SBN_PPL_DATA_URL/<path in the cache layout>`` when that variable is set
   (a mirror laid out like the cache). The download streams (with a progress bar on a
   terminal) into a temporary file beside its destination, is read and checked, and only
   then moved into place with ``os.replace``: a broken or interrupted download never
   enters the cache.
   Offline, it fails with one line that says which file to put where.

**Checks**, on every load: each split's shape and its 0/1 values are hard errors. The
content hash, the sha256 of ``np.packbits(x.astype(np.uint8), axis=1)`` (independent of
how the file is formatted), is compared with the table here; a mismatch is a
:class:`ContentHashWarning` naming both hashes, not a refusal: the expected hashes were
taken from copies identified with the canonical splits by their statistics, not byte for
byte (see the provenance in the project's shared data README). A split whose canonical row
order is not known here has no expected hash and is not compared.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sbn_ppl.base.arrays import Dataset, read_arrays, validate_binary

DATA_ENV = "SBN_PPL_DATA"
URL_ENV = "SBN_PPL_DATA_URL"
DEFAULT_CACHE = "~/.cache/sbn_ppl"
UCI_PREFIX = "uci:"
DOWNLOAD_TIMEOUT_S = 60  # the longest wait for the server's next byte
DOWNLOAD_DEADLINE_S = 1800  # the longest a whole file's download may take
CHUNK_BYTES = 1 << 20


class ContentHashWarning(UserWarning):
    """A named set's content differs from the expected one (it is used anyway)."""


@dataclass(frozen=True)
class SourceFile:
    """One file of a benchmark as published.

    :param path: its place in the cache folder (and under a ``$SBN_PPL_DATA_URL`` mirror).
    :param url: the canonical download, or ``None`` if there is none.
    :param arrays: split -> the array's name in the file (``"x"``: a file of one matrix).
    """

    path: str
    url: str | None
    arrays: dict[str, str]


@dataclass(frozen=True)
class Benchmark:
    """A named data set: its shape, its files, and the expected content of each split.

    :param name: the data spec (``"binarized-mnist"``).
    :param width: the number of columns (visible units).
    :param rows: split -> number of rows.
    :param npz: the place in the cache folder of the converted form (one ``.npz`` with every split).
    :param files: the source files, together holding every split.
    :param content_sha256: split -> expected :func:`content_sha256`, or ``None`` if not known.
    :param provenance: where the data come from, for messages.
    """

    name: str
    width: int
    rows: dict[str, int]
    npz: str
    files: tuple[SourceFile, ...]
    content_sha256: dict[str, str | None]
    provenance: str


def content_sha256(x) -> str:
    """The sha256 of a 0/1 matrix packed row by row: independent of the file's format and of dtype.

    :param x: a 2-D array of 0/1 values.
    """
    return hashlib.sha256(np.packbits(np.asarray(x).astype(np.uint8), axis=1).tobytes()).hexdigest()


# The registry

MNIST_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
CALTECH_URL = "https://people.cs.umass.edu/~marlin/data/"
DEBD_URL = "https://raw.githubusercontent.com/arranger1044/DEBD/850908666388f1b1c766a304b37dae14613f1e51/datasets/"
SPLIT_NAMES = ("train", "valid", "test")


def _mnist() -> Benchmark:
    files = tuple(
        SourceFile(f"binarized_mnist/binarized_mnist_{s}.amat", f"{MNIST_URL}binarized_mnist_{s}.amat", {s: "x"})
        for s in SPLIT_NAMES
    )
    return Benchmark(
        "binarized-mnist", 784, {"train": 50_000, "valid": 10_000, "test": 10_000}, "binarized_mnist.npz", files,
        {
            "train": "727146c35424b019f3e350e1e69faa05644a0abaf787e3f4e1a9632220a13906",
            "valid": "a256ac44ae26be720fad8616a05ed6ecfd1619930d9a208379bb2a4405df5b6d",
            "test": "9fcd8da6f0fdf09b2ba30fe63a0bb784042a0de82563172530229b983e294ff2",
        },
        "the fixed binarization of Larochelle & Murray (2011), from Hugo Larochelle's public datasets page",
    )


def _caltech() -> Benchmark:
    mat = "caltech101_silhouettes_28_split1.mat"
    files = (SourceFile(f"caltech101_silhouettes/{mat}", CALTECH_URL + mat,
                        {"train": "train_data", "valid": "val_data", "test": "test_data"}),)
    return Benchmark(
        "caltech101-silhouettes", 784, {"train": 4_100, "valid": 2_264, "test": 2_307}, "caltech101_silhouettes.npz",
        files,
        {
            "train": "e125288897a623f1173c16fef12be0945b4755cde162849ab56fd5282a91b9f6",
            "valid": "e21ec5befd37a30f670cacc3f6cf50cc18ae28237afc930244111a88ac7fbeed",
            "test": "154edf98a2a2d4f1b2814efc44c33dc57c444658c67ed356370a0778c771d1c7",
        },
        "Caltech-101 Silhouettes 28x28, split1 (Marlin et al. 2010), from Benjamin Marlin's page",
    )


# NADE's binary UCI sets (Larochelle & Murray 2011): width, rows, and the content hashes of
# the splits whose row order is known here (the project's shared copies, checked equal to
# DEBD's files). Adult's and connect4's test and ocr_letters' train were rebuilt in another
# row order for the shared copies, so the canonical order's hash is not known: None.
UCI_SETS = {
    "adult": (123, (5_000, 1_414, 26_147), (
        "336b872785f2cb157e671f1d358171aa61b8ff62cb8b9aa862f7ae344c9c8ba6",
        "89d0a9f152f10a9a1d078231e0f81925704cebf58e4ac5dcf27a97b45e4dd83c",
        None)),
    "connect4": (126, (16_000, 4_000, 47_557), (
        "c3d3eca3a8bd8f018784d2be4383325a13a988a93af4d5cf361af5f0629f53bc",
        "627d145c5e1a9b5c8fa8da78ac45ce8e6c6271547e665c93869e4dcee41d6ec3",
        None)),
    "mushrooms": (112, (2_000, 500, 5_624), (
        "b9b5e3b85f7fc3a6a7b15951f2974a0bafa2b9528001bcb8740f7187f2d7ff2b",
        "c820fb1db5cc0918a66cac28324508eb29e73edabd540313c39bcf476757f5c4",
        "de4f74441a3f07d6acc13aaa572e67e6e101551d99bee7d668c340e5ce720256")),
    "nips": (500, (400, 100, 1_240), (
        "9f49e87ac456779f4a7f7a652f5e02101391379d0357ed62e05a8f112ed4c215",
        "01dd37b289b5aaf5cdcd03559441e3b79b8f2a498a36584a3c87e86829391eca",
        "82db8901acd317bae38bf70b88e95387d9c63e6ae8b0838111342f7b8c5867f0")),
    "ocr_letters": (128, (32_152, 10_000, 10_000), (
        None,
        "a5187a0334abcf5258e80da23d85d30056b0b9115e5ad33bf655fa27b87c752a",
        "66f46e2bcc88f9b285aea214ac91bab94c37fcc2b609f64fc62f448f35a663df")),
}


def _uci(name: str) -> Benchmark:
    width, rows, hashes = UCI_SETS[name]
    files = tuple(
        SourceFile(f"uci/{name}/{name}.{s}.data", f"{DEBD_URL}{name}/{name}.{s}.data", {s: "x"}) for s in SPLIT_NAMES
    )
    return Benchmark(
        UCI_PREFIX + name, width, dict(zip(SPLIT_NAMES, rows)), f"uci/{name}.npz", files,
        dict(zip(SPLIT_NAMES, hashes)),
        "NADE's binary UCI sets (Larochelle & Murray 2011), as copied in github.com/arranger1044/DEBD",
    )


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b for b in (_mnist(), _caltech(), *(_uci(n) for n in UCI_SETS))
}


def names() -> tuple[str, ...]:
    """The names of the benchmark sets."""
    return tuple(BENCHMARKS)


def is_benchmark(spec: str) -> bool:
    """Whether ``spec`` names a benchmark set (or tries to: any ``uci:...``)."""
    return spec in BENCHMARKS or spec.startswith(UCI_PREFIX)


def benchmark(name: str) -> Benchmark:
    """The registry entry of a named set, or a ``ValueError`` listing the names."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown data set {name!r}; the named sets are {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def cache_dir() -> Path:
    """The cache folder: ``$SBN_PPL_DATA``, else ``~/.cache/sbn_ppl``."""
    return Path(os.environ.get(DATA_ENV) or DEFAULT_CACHE).expanduser()


# Loading


def load_benchmark(name: str, path: str | os.PathLike | None = None) -> Dataset:
    """A named set, from ``path``, else the cache, else a download; see the module docstring.

    :param name: the set's name (:func:`names`).
    :param path: a folder with the set's files, or one ``.npz`` (or Caltech's ``.mat``);
        ``None``: the cache folder, downloading what is missing.
    """
    bench = benchmark(name)
    splits, source = _from_path(bench, Path(path)) if path is not None else _from_cache(bench, cache_dir())
    for split, x in splits.items():
        _check_content(bench, split, x, source)
    return Dataset(bench.name, splits["train"], splits["test"], valid=splits["valid"], source=source)


def _from_path(bench: Benchmark, path: Path) -> tuple[dict[str, np.ndarray], str]:
    if path.is_dir():
        npz = path / Path(bench.npz).name
        if npz.exists():
            return _read_npz(bench, npz), str(npz)
        files = [path / Path(f.path).name for f in bench.files]
        if all(p.exists() for p in files):
            return _read_files(bench, files), str(path)
        raise ValueError(f"folder {str(path)!r} holds neither {npz.name} nor all of "
                         f"{', '.join(p.name for p in files)} (the files of {bench.name})")
    if not path.exists():
        raise ValueError(f"data path {str(path)!r} for {bench.name} does not exist")
    if path.suffix.lower() == ".npz":
        return _read_npz(bench, path), str(path)
    if len(bench.files) == 1:
        return _read_files(bench, [path]), str(path)
    raise ValueError(f"{bench.name} is {len(bench.files)} files: give the folder that holds them "
                     f"({', '.join(Path(f.path).name for f in bench.files)}), or one .npz with train, valid and test")


def _from_cache(bench: Benchmark, root: Path) -> tuple[dict[str, np.ndarray], str]:
    if root.exists() and not root.is_dir():
        raise ValueError(f"${DATA_ENV} is {str(root)!r}, a file; it names the cache folder: set it to the folder "
                         f"that holds the data (e.g. {str(root.parent)!r}), or pass the file as path=")
    npz = root / bench.npz
    if npz.exists():
        return _read_npz(bench, npz), str(npz)
    splits = {}
    for f in bench.files:
        dest = root / f.path
        splits.update(_read_source(bench, f, dest) if dest.exists() else download(bench, f, dest))
    return splits, str(root / Path(bench.files[0].path).parent)


def _read_npz(bench: Benchmark, path: Path) -> dict[str, np.ndarray]:
    arrays = read_arrays(path)
    missing = [s for s in bench.rows if s not in arrays]
    if missing:
        raise ValueError(f"{str(path)!r} holds arrays {sorted(arrays)}, not {', '.join(missing)}: "
                         f"{bench.name} needs train, valid and test")
    return {s: _checked(bench, s, arrays[s], str(path)) for s in bench.rows}


def _read_files(bench: Benchmark, paths: list[Path]) -> dict[str, np.ndarray]:
    splits = {}
    for f, path in zip(bench.files, paths):
        splits.update(_read_source(bench, f, path))
    return splits


def _read_source(bench: Benchmark, f: SourceFile, path: Path, label: str | None = None) -> dict[str, np.ndarray]:
    """The splits in one source file, shape- and 0/1-checked. ``label``: the file's name in messages."""
    label = label or str(path)
    arrays = read_arrays(path, label=label)
    return {split: _checked(bench, split, _pick(arrays, key, label), label) for split, key in f.arrays.items()}


def _pick(arrays: dict[str, np.ndarray], key: str, label: str) -> np.ndarray:
    if key in arrays:
        return arrays[key]
    if len(arrays) == 1:  # a file of one matrix, whatever its name (MATLAB copies of the .amat call it X)
        return next(iter(arrays.values()))
    raise ValueError(f"{label!r} holds arrays {sorted(arrays)}, not {key!r}")


def _checked(bench: Benchmark, split: str, x, source: str) -> np.ndarray:
    """``x`` as ``float32`` 0/1 of the split's shape; a ``ValueError`` otherwise."""
    x = validate_binary(x, name=f"{bench.name} {split} split in {source}")
    expected = (bench.rows[split], bench.width)
    if x.shape != expected:
        raise ValueError(f"{bench.name} {split} split in {source}: shape {x.shape[0]:,} x {x.shape[1]}, "
                         f"expected {expected[0]:,} x {expected[1]}")
    return x


def _check_content(bench: Benchmark, split: str, x: np.ndarray, source: str) -> None:
    expected = bench.content_sha256.get(split)
    if expected is None:
        return
    actual = content_sha256(x)
    if actual != expected:
        warnings.warn(
            f"{bench.name} {split} split in {source}: content sha256 {actual} differs from the expected "
            f"{expected} (the canonical split, identified by its statistics); the data are used as they are",
            ContentHashWarning, stacklevel=4,  # the caller of load_dataset
        )


# Downloading


def source_url(f: SourceFile) -> str | None:
    """Where to download ``f``: ``$SBN_PPL_DATA_URL/<f.path>`` when that is set, else its canonical URL."""
    mirror = os.environ.get(URL_ENV)
    return f"{mirror.rstrip('/')}/{f.path}" if mirror else f.url


def download(bench: Benchmark, f: SourceFile, dest: Path) -> dict[str, np.ndarray]:
    """Download ``f`` to ``dest`` atomically, after checking it; return its splits.

    It says "downloading ..." on stderr before it asks for the first byte. The bytes stream
    into a temporary ``.part`` file beside ``dest`` (with a progress bar on a terminal), are
    read and checked as any copy would be, and only then replace ``dest``; a failure, a
    server silent for ``DOWNLOAD_TIMEOUT_S`` or a download past ``DOWNLOAD_DEADLINE_S`` leaves
    nothing in the cache.

    :param bench: the set the file belongs to.
    :param f: the file.
    :param dest: where it goes (in the cache folder).
    """
    url = source_url(f)
    if url is None:
        raise ValueError(f"{bench.name}: no public download of {Path(f.path).name} is known; "
                         f"put the file at {dest} (or pass path=)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".part{dest.suffix}", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            _stream(url, out, dest.name, dest)
        splits = _read_source(bench, f, Path(tmp), label=url)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
        return splits
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _stream(url: str, out, label: str, dest: Path) -> None:
    import sys
    import time
    from urllib.error import HTTPError
    from urllib.request import urlopen

    from tqdm.auto import tqdm

    print(f"downloading {url} to {dest} ...", file=sys.stderr, flush=True)
    deadline = time.monotonic() + DOWNLOAD_DEADLINE_S
    try:
        with urlopen(url, timeout=min(DOWNLOAD_TIMEOUT_S, DOWNLOAD_DEADLINE_S)) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {label}", disable=None) as bar:
                while chunk := response.read1(CHUNK_BYTES):  # what has arrived: the deadline is checked often
                    out.write(chunk)
                    bar.update(len(chunk))
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"not finished after {DOWNLOAD_DEADLINE_S:g} s, the download's deadline")
    except OSError as e:  # URLError, HTTPError, timeouts and refused connections are all OSErrors
        reason = " ".join(str(getattr(e, "reason", None) or e).split())
        if isinstance(e, HTTPError):
            reason = f"HTTP {e.code}: {reason}"
        raise ValueError(f"cannot download {url} ({reason}); put that file at {dest} "
                         f"(or point ${DATA_ENV} at a folder that has it, or pass path=)") from None
