import numpy as np
import pytest

from sbn_ppl import evaluation, load_dataset, validate_binary
from sbn_ppl.data import DIGITS_THRESHOLD


def test_digits_is_embedded_binarised_and_split_fixed():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert a.train.shape == (1438, 64) and a.test.shape == (359, 64)
    assert set(np.unique(a.train)) == {0.0, 1.0}
    np.testing.assert_array_equal(a.train, b.train)
    from sklearn.datasets import load_digits

    raw = (load_digits().data >= DIGITS_THRESHOLD).astype(np.float32)
    # the split is a permutation of the whole set
    together = np.concatenate([a.train, a.test])
    assert sorted(map(bytes, together.astype(np.uint8))) == sorted(map(bytes, raw.astype(np.uint8)))


def test_synthetic_comes_with_its_teacher():
    d = load_dataset("synthetic:8-4-2:3")
    assert d.train.shape == (1000, 8) and d.test.shape == (500, 8)
    assert d.teacher.architecture.sizes == (8, 4, 2)
    np.testing.assert_array_equal(d.train, load_dataset("synthetic:8-4-2:3").train)
    assert not np.array_equal(d.train, load_dataset("synthetic:8-4-2:4").train)
    # the teacher's exact held-out log-likelihood is available, and is the best achievable
    ll = evaluation.exact_log_likelihood(d.teacher, d.test).mean()
    assert np.isfinite(ll) and ll > -8 * np.log(2)


@pytest.mark.parametrize("suffix", [".npy", ".txt", ".amat", ".csv"])
def test_files_with_one_matrix(tmp_path, suffix):
    x = (np.random.default_rng(0).random((50, 7)) < 0.3).astype(np.float32)
    path = tmp_path / f"data{suffix}"
    if suffix == ".npy":
        np.save(path, x)
    else:
        np.savetxt(path, x, fmt="%d", delimiter="," if suffix == ".csv" else " ")
    d = load_dataset(str(path))
    assert d.train.shape == (40, 7) and d.test.shape == (10, 7)
    assert sorted(map(bytes, np.concatenate([d.train, d.test]).astype(np.uint8))) == sorted(
        map(bytes, x.astype(np.uint8))
    )


def test_npz_with_train_and_test(tmp_path):
    np.savez(tmp_path / "d.npz", train=np.ones((3, 4)), test=np.zeros((2, 4)))
    d = load_dataset(str(tmp_path / "d.npz"))
    assert d.train.shape == (3, 4) and d.test.shape == (2, 4)


@pytest.mark.parametrize(
    "x, width, message",
    [
        (np.array([[0, 1], [0.5, 1]]), None, r"non-binary value 0.5 at row 1, column 0"),
        (np.array([[0, np.nan]]), None, r"NaN at row 0, column 1"),
        (np.zeros((3, 5)), 4, r"5 columns but the model has 4 visible units"),
        (np.zeros((0, 4)), None, r"empty"),
        (np.zeros(4), None, r"2-D"),
        ([["a", "b"]], None, r"numeric"),
    ],
)
def test_bad_data_is_named(x, width, message):
    with pytest.raises(ValueError, match=message):
        validate_binary(x, width=width)


def test_bad_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_dataset(str(tmp_path / "missing.npy"))
    (tmp_path / "ragged.txt").write_text("0 1 0\n1 1\n")
    with pytest.raises(ValueError, match="row 1 has 2 values"):
        load_dataset(str(tmp_path / "ragged.txt"))
    (tmp_path / "bad.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cannot read data file"):
        load_dataset(str(tmp_path / "bad.npy"))
    (tmp_path / "x.json").write_text("[]")
    with pytest.raises(ValueError, match="unknown file type"):
        load_dataset(str(tmp_path / "x.json"))
    np.save(tmp_path / "gray.npy", np.full((10, 3), 0.2))
    with pytest.raises(ValueError, match="gray.npy: non-binary value 0.2"):
        load_dataset(str(tmp_path / "gray.npy"))
    with pytest.raises(ValueError, match="synthetic:<arch>:<seed>"):
        load_dataset("synthetic:")
