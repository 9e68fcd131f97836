"""The named benchmark sets: path, cache and download, against tiny fixtures on a local HTTP server.

Nothing here reaches the internet or ``../shared``: every test runs with ``$SBN_PPL_DATA``
in a temporary folder and ``$SBN_PPL_DATA_URL`` on 127.0.0.1, and the registry's shapes and
hashes are replaced by the fixtures' own.
"""
import dataclasses
import functools
import http.server
import os
import socket
import threading
import warnings

import numpy as np
import pytest

from sbn_ppl import load_dataset
from sbn_ppl.base import datasets
from sbn_ppl.base.datasets import ContentHashWarning, content_sha256

ROWS = {"train": 12, "valid": 5, "test": 7}
WIDTH = 6


def _fixture_splits(seed=0):
    rng = np.random.default_rng(seed)
    return {s: (rng.random((n, WIDTH)) < 0.4).astype(np.uint8) for s, n in ROWS.items()}


def _shrink(monkeypatch, name, splits):
    """Make the registry entry ``name`` expect the fixture's shapes and content hashes."""
    entry = dataclasses.replace(
        datasets.BENCHMARKS[name], width=WIDTH, rows=dict(ROWS),
        content_sha256={s: content_sha256(x) for s, x in splits.items()},
    )
    monkeypatch.setitem(datasets.BENCHMARKS, name, entry)
    return entry


def _write_amat(path, x):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(" ".join(map(str, row)) for row in x) + "\n")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    requests = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        _Quiet.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A local HTTP mirror of ``tmp_path/mirror``: ``$SBN_PPL_DATA_URL`` points at it, ``$SBN_PPL_DATA`` at a cache."""
    root = tmp_path / "mirror"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    _Quiet.requests = []
    monkeypatch.setenv(datasets.URL_ENV, f"http://127.0.0.1:{httpd.server_address[1]}")
    monkeypatch.setenv(datasets.DATA_ENV, str(tmp_path / "cache"))
    yield root
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def _no_real_cache_or_internet(tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.DATA_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv(datasets.URL_ENV, f"http://127.0.0.1:{_closed_port()}")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


def _mnist_mirror(root, splits):
    for s, x in splits.items():
        _write_amat(root / "binarized_mnist" / f"binarized_mnist_{s}.amat", x)


def test_download_fills_the_cache_atomically_and_is_read_from_it_next_time(server, tmp_path, monkeypatch):
    splits = _fixture_splits()
    _shrink(monkeypatch, "binarized-mnist", splits)
    _mnist_mirror(server, splits)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matching hashes: no warning
        d = load_dataset("binarized-mnist")
    assert d.name == "binarized-mnist" and d.splits == ("train", "valid", "test") and not d.split_from_one_array
    for s, x in splits.items():
        np.testing.assert_array_equal(d.split(s), x)
        assert d.split(s).dtype == np.float32
    cached = tmp_path / "cache" / "binarized_mnist"
    assert sorted(os.listdir(cached)) == [f"binarized_mnist_{s}.amat" for s in ("test", "train", "valid")]  # no .part
    assert len(_Quiet.requests) == 3
    again = load_dataset("binarized-mnist")  # from the cache: no request
    assert len(_Quiet.requests) == 3
    np.testing.assert_array_equal(again.train, d.train)


def test_a_partly_cached_set_downloads_only_what_is_missing(server, tmp_path, monkeypatch):
    splits = _fixture_splits()
    _shrink(monkeypatch, "binarized-mnist", splits)
    _mnist_mirror(server, splits)
    _write_amat(tmp_path / "cache" / "binarized_mnist" / "binarized_mnist_train.amat", splits["train"])
    load_dataset("binarized-mnist")
    assert sorted(_Quiet.requests) == ["/binarized_mnist/binarized_mnist_test.amat",
                                       "/binarized_mnist/binarized_mnist_valid.amat"]


def test_a_wrong_content_hash_warns_with_both_hashes(server, monkeypatch):
    splits = _fixture_splits()
    entry = _shrink(monkeypatch, "binarized-mnist", splits)
    monkeypatch.setitem(entry.content_sha256, "valid", "0" * 64)
    _mnist_mirror(server, splits)
    with pytest.warns(ContentHashWarning) as record:
        d = load_dataset("binarized-mnist")
    assert len(record) == 1
    message = str(record[0].message)
    assert "valid" in message and "0" * 64 in message and content_sha256(splits["valid"]) in message
    np.testing.assert_array_equal(d.valid, splits["valid"])  # a warning, not a refusal


@pytest.mark.parametrize(
    "text, message",
    [
        ("0 1 0 1 0 1\n0 2 0 1 0 1\n", r"non-binary value 2 at row 1, column 1"),
        ("0 1 0 1 0 1\n0 1 0\n", r"line 2 has 3 values but line 1 has 6"),
        ("<html>not found</html>\n", r"line 1: '<html>not' is not a number"),
    ],
)
def test_a_corrupt_download_is_refused_and_not_cached(server, tmp_path, monkeypatch, text, message):
    splits = _fixture_splits()
    _shrink(monkeypatch, "binarized-mnist", splits)
    _mnist_mirror(server, splits)
    (server / "binarized_mnist" / "binarized_mnist_valid.amat").write_text(text)
    with pytest.raises(ValueError, match=message) as e:
        load_dataset("binarized-mnist")
    assert "binarized_mnist_valid.amat" in str(e.value)
    cached = tmp_path / "cache" / "binarized_mnist"
    assert "binarized_mnist_valid.amat" not in os.listdir(cached)
    assert not [n for n in os.listdir(cached) if n.startswith(".")]  # no temporary file left behind


def test_a_download_of_the_wrong_shape_is_refused(server, monkeypatch):
    splits = _fixture_splits()
    _shrink(monkeypatch, "binarized-mnist", splits)
    _mnist_mirror(server, {**splits, "test": splits["train"]})
    with pytest.raises(ValueError, match=r"test split .* shape 12 x 6, expected 7 x 6"):
        load_dataset("binarized-mnist")


def test_offline_is_one_line_that_says_what_to_put_where(tmp_path, monkeypatch):
    _shrink(monkeypatch, "binarized-mnist", _fixture_splits())
    with pytest.raises(ValueError) as e:
        load_dataset("binarized-mnist")  # the autouse fixture points the mirror at a closed port
    message = str(e.value)
    assert "\n" not in message and message.startswith("cannot download http://127.0.0.1:")
    dest = tmp_path / "cache" / "binarized_mnist" / "binarized_mnist_train.amat"
    assert f"put that file at {dest}" in message


def test_a_missing_file_on_the_server_is_the_same_one_line_error(server, monkeypatch):
    _shrink(monkeypatch, "binarized-mnist", _fixture_splits())
    expected = r"^cannot download .*binarized_mnist_train.amat \(HTTP 404: .*\); put that file"
    with pytest.raises(ValueError, match=expected):
        load_dataset("binarized-mnist")


def test_the_canonical_urls_are_used_without_a_mirror(monkeypatch):
    monkeypatch.delenv(datasets.URL_ENV)
    f = datasets.benchmark("binarized-mnist").files[0]
    assert datasets.source_url(f) == (
        "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/binarized_mnist_train.amat")
    assert datasets.source_url(datasets.benchmark("caltech101-silhouettes").files[0]) == (
        "https://people.cs.umass.edu/~marlin/data/caltech101_silhouettes_28_split1.mat")
    assert datasets.source_url(datasets.benchmark("uci:nips").files[2]).endswith("/datasets/nips/nips.test.data")


def test_a_user_path_comes_first_as_a_folder_of_amat_or_an_npz(tmp_path, monkeypatch):
    splits = _fixture_splits()
    _shrink(monkeypatch, "binarized-mnist", splits)
    folder = tmp_path / "mine"
    for s, x in splits.items():
        _write_amat(folder / f"binarized_mnist_{s}.amat", x)
    np.savez(tmp_path / "mnist.npz", **splits)
    for path in (folder, str(folder), tmp_path / "mnist.npz", str(tmp_path / "mnist.npz")):
        d = load_dataset("binarized-mnist", path=path)  # no server: it never downloads
        np.testing.assert_array_equal(d.test, splits["test"])
    assert str(folder) in d.source or "mnist.npz" in d.source
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds neither binarized_mnist.npz nor all of"):
        load_dataset("binarized-mnist", path=tmp_path / "empty")
    with pytest.raises(ValueError, match="binarized-mnist is 3 files: give the folder"):
        load_dataset("binarized-mnist", path=folder / "binarized_mnist_train.amat")
    np.savez(tmp_path / "two.npz", train=splits["train"], test=splits["test"])
    with pytest.raises(ValueError, match="not valid: binarized-mnist needs train, valid and test"):
        load_dataset("binarized-mnist", path=tmp_path / "two.npz")


def test_mnist_amat_files_may_be_matlab_files(tmp_path, monkeypatch):
    """Some public copies of the three .amat files are MATLAB v5 files holding one array X."""
    from scipy.io import savemat

    splits = _fixture_splits(seed=3)
    _shrink(monkeypatch, "binarized-mnist", splits)
    for s, x in splits.items():
        with open(tmp_path / f"binarized_mnist_{s}.amat", "wb") as f:
            savemat(f, {"X": x})
    np.testing.assert_array_equal(load_dataset("binarized-mnist", path=tmp_path).train, splits["train"])


def test_the_cache_may_hold_the_npz_form(tmp_path, monkeypatch):
    """``$SBN_PPL_DATA`` laid out like the project's shared folder: ``<set>.npz`` and ``uci/<name>.npz``."""
    splits = _fixture_splits()
    _shrink(monkeypatch, "binarized-mnist", splits)
    _shrink(monkeypatch, "uci:nips", splits)
    (tmp_path / "cache" / "uci").mkdir(parents=True)
    np.savez(tmp_path / "cache" / "binarized_mnist.npz", **splits)
    np.savez(tmp_path / "cache" / "uci" / "nips.npz", **splits)
    np.testing.assert_array_equal(load_dataset("binarized-mnist").valid, splits["valid"])
    np.testing.assert_array_equal(load_dataset("uci:nips", width=WIDTH).train, splits["train"])
    with pytest.raises(ValueError, match=r"uci:nips \(.*nips.npz\): rows have 6 columns but the model has 5"):
        load_dataset("uci:nips", width=5)


def test_caltech_downloads_marlins_mat_and_keeps_its_arrays_as_they_are(server, monkeypatch):
    from scipy.io import savemat

    splits = _fixture_splits(seed=1)
    _shrink(monkeypatch, "caltech101-silhouettes", splits)
    (server / "caltech101_silhouettes").mkdir()
    with open(server / "caltech101_silhouettes" / "caltech101_silhouettes_28_split1.mat", "wb") as f:
        savemat(f, {"train_data": splits["train"].astype(float), "val_data": splits["valid"].astype(float),
                    "test_data": splits["test"].astype(float), "train_labels": np.arange(ROWS["train"])[:, None]})
    d = load_dataset("caltech101-silhouettes")
    for s, x in splits.items():
        np.testing.assert_array_equal(d.split(s), x)  # no flip of polarity, no reordering of pixels


def test_uci_downloads_comma_separated_files(server, monkeypatch):
    splits = _fixture_splits(seed=2)
    _shrink(monkeypatch, "uci:mushrooms", splits)
    (server / "uci" / "mushrooms").mkdir(parents=True)
    for s, x in splits.items():
        np.savetxt(server / "uci" / "mushrooms" / f"mushrooms.{s}.data", x, fmt="%d", delimiter=",")
    d = load_dataset("uci:mushrooms")
    np.testing.assert_array_equal(d.split("all"), np.concatenate([splits[s] for s in ("train", "valid", "test")]))


def test_the_registry_names_every_set_and_refuses_unknown_ones():
    assert datasets.names() == ("binarized-mnist", "caltech101-silhouettes", "uci:adult", "uci:connect4",
                                "uci:mushrooms", "uci:nips", "uci:ocr_letters")
    shapes = {n: (datasets.benchmark(n).width, tuple(datasets.benchmark(n).rows.values())) for n in datasets.names()}
    assert shapes["binarized-mnist"] == (784, (50_000, 10_000, 10_000))
    assert shapes["caltech101-silhouettes"] == (784, (4_100, 2_264, 2_307))
    with pytest.raises(ValueError, match="unknown data set 'uci:iris'; the named sets are binarized-mnist, "):
        load_dataset("uci:iris")
