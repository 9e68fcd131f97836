import pathlib

import numpy as np
import pytest

from sbn_ppl import load_dataset, validate_binary
import sbn_ppl.yardstick.exact as enumeration
from sbn_ppl.base.data import DIGITS_THRESHOLD
from sbn_ppl.base.arrays import random_subset, read_text_matrix, subset_indices


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
    ll = enumeration.exact_log_likelihood(d.teacher, d.test).mean()
    assert np.isfinite(ll) and ll > -8 * np.log(2)


def _rows(x):
    return sorted(map(bytes, np.asarray(x).astype(np.uint8)))


@pytest.mark.parametrize("suffix", [".npy", ".txt", ".amat", ".csv", ".data"])
def test_files_with_one_matrix(tmp_path, suffix):
    x = (np.random.default_rng(0).random((50, 7)) < 0.3).astype(np.float32)
    path = tmp_path / f"data{suffix}"
    if suffix == ".npy":
        np.save(path, x)
    else:
        np.savetxt(path, x, fmt="%d", delimiter="," if suffix in (".csv", ".data") else " ")
    d = load_dataset(str(path))
    assert d.train.shape == (40, 7) and d.test.shape == (10, 7) and d.valid is None
    assert _rows(np.concatenate([d.train, d.test])) == _rows(x)
    # evaluate can tell that the test split is a cut of one array, and score all of it instead
    assert d.split_from_one_array and "80%" in d.note
    assert _rows(d.split("all")) == _rows(x)


def test_npz_with_train_and_test(tmp_path):
    np.savez(tmp_path / "d.npz", train=np.ones((3, 4)), test=np.zeros((2, 4)))
    d = load_dataset(str(tmp_path / "d.npz"))
    assert d.train.shape == (3, 4) and d.test.shape == (2, 4) and d.valid is None
    assert not d.split_from_one_array


def test_npz_with_train_valid_and_test(tmp_path):
    np.savez(tmp_path / "d.npz", train=np.ones((3, 4), np.uint8), valid=np.zeros((1, 4)), test=np.zeros((2, 4)))
    d = load_dataset(tmp_path / "d.npz")
    assert d.splits == ("train", "valid", "test")
    assert d.split("valid").shape == (1, 4) and d.split("all").shape == (6, 4)
    np.testing.assert_array_equal(d.split("all")[:3], d.train)


def test_split_selection_and_its_errors():
    d = load_dataset("digits")
    assert d.splits == ("train", "test")
    np.testing.assert_array_equal(d.split("test"), d.test)
    assert d.split("all").shape == (1797, 64)
    with pytest.raises(ValueError, match="'digits' has no 'valid' split; it has train, test"):
        d.split("valid")
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        d.split("dev")


def test_text_parsing_fast_path_equals_the_general_one(tmp_path):
    x = (np.random.default_rng(1).random((300, 40)) < 0.5).astype(np.uint8)
    lines = [" ".join(map(str, row)) for row in x]
    fast = tmp_path / "fast.amat"
    fast.write_bytes(("\r\n".join(lines)).encode())  # CRLF, no final newline
    slow = tmp_path / "slow.txt"  # a comment line makes it take the general path
    slow.write_text("# header\n" + "\n".join(lines) + "\n\n")
    np.testing.assert_array_equal(read_text_matrix(fast), x)
    np.testing.assert_array_equal(read_text_matrix(slow), x)
    (tmp_path / "floats.txt").write_text("0.0 1.0\n1.0 0.0\n")  # not single digits: general path
    np.testing.assert_array_equal(read_text_matrix(tmp_path / "floats.txt"), [[0, 1], [1, 0]])


def test_amat_may_be_a_matlab_file(tmp_path):
    """Some public copies of binarized MNIST are MATLAB v5 files named .amat, holding one array X."""
    from scipy.io import savemat

    x = (np.random.default_rng(2).random((20, 6)) < 0.5).astype(np.uint8)
    with open(tmp_path / "m.amat", "wb") as f:
        savemat(f, {"X": x})
    d = load_dataset(tmp_path / "m.amat")
    assert _rows(d.split("all")) == _rows(x)


@pytest.mark.parametrize(
    "x, width, message",
    [
        (np.array([[0, 1], [0.5, 1]]), None, r"non-binary value 0.5 at row 1, column 0"),
        (np.array([[0, 1], [3, 1]], np.int64), None, r"non-binary value 3 at row 1, column 0"),
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
    with pytest.raises(ValueError, match="line 2 has 2 values but line 1 has 3"):
        load_dataset(str(tmp_path / "ragged.txt"))
    (tmp_path / "x.json").write_text("[]")
    with pytest.raises(ValueError, match="unknown file type"):
        load_dataset(str(tmp_path / "x.json"))
    np.save(tmp_path / "gray.npy", np.full((10, 3), 0.2))
    with pytest.raises(ValueError, match="gray.npy: non-binary value 0.2"):
        load_dataset(str(tmp_path / "gray.npy"))
    with pytest.raises(ValueError, match="synthetic:<arch>:<seed>"):
        load_dataset("synthetic:")


# Issue 14: each of these gave a misleading message (or crashed) before.


@pytest.mark.parametrize("suffix, kind", [(".npy", ".npy"), (".npz", ".npz")])
def test_a_file_that_is_not_numpy_says_so(tmp_path, suffix, kind):
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(b"garbage, not an array\n")
    with pytest.raises(ValueError, match=rf"bad{suffix}.*is not a {kind} file") as e:
        load_dataset(str(path))
    assert "pickle" not in str(e.value)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n"])
def test_an_empty_text_file_says_empty(tmp_path, text):
    (tmp_path / "empty.txt").write_text(text)
    with pytest.raises(ValueError, match="empty.txt.*empty file") as e:
        load_dataset(str(tmp_path / "empty.txt"))
    assert "reshape" not in str(e.value)


def test_ragged_rows_of_words_are_not_numbers(tmp_path):
    (tmp_path / "words.txt").write_text("0 1 0\nthe quick brown fox\njumps\n")
    with pytest.raises(ValueError, match=r"words.txt.*line 2: 'the' is not a number") as e:
        load_dataset(str(tmp_path / "words.txt"))
    assert "values but" not in str(e.value)


def test_a_binary_file_named_txt_is_not_text(tmp_path):
    (tmp_path / "b.txt").write_bytes(bytes(range(256)))
    with pytest.raises(ValueError, match="b.txt.*not a text file"):
        load_dataset(tmp_path / "b.txt")


def test_a_wrong_width_file_is_named(tmp_path):
    np.savetxt(tmp_path / "five.txt", np.zeros((10, 5)), fmt="%d")
    with pytest.raises(ValueError, match=r"five.txt.*5 columns but the model has 4 visible units"):
        load_dataset(str(tmp_path / "five.txt"), width=4)
    assert load_dataset(str(tmp_path / "five.txt"), width=5).visible_size == 5


def test_indented_comments_are_comments(tmp_path):
    (tmp_path / "c.txt").write_text("  # a header\n0 1\n\t# a note\n1 0\n   #\n1 1\n0 0\n1 1\n")
    d = load_dataset(str(tmp_path / "c.txt"))
    assert d.visible_size == 2 and len(d.split("all")) == 5


def test_paths_are_accepted_wherever_file_names_are(tmp_path):
    np.save(tmp_path / "x.npy", np.eye(10))
    d = load_dataset(pathlib.Path(tmp_path / "x.npy"))
    assert d.name == "x.npy" and d.visible_size == 10


@pytest.mark.parametrize("present", [("train",), ("train", "valid"), ("test",)])
def test_npz_without_train_and_test_is_refused(tmp_path, present):
    np.savez(tmp_path / "p.npz", **{k: np.zeros((5, 3)) for k in present})
    with pytest.raises(ValueError, match=r"p.npz.*needs both 'train' and 'test'.*np.savez") as e:
        load_dataset(str(tmp_path / "p.npz"))
    assert "80/20" in str(e.value)  # and says how to have it split instead


def test_a_named_set_refuses_a_path_it_cannot_use(tmp_path):
    with pytest.raises(ValueError, match="path="):
        load_dataset("digits", path=tmp_path)


# Seeded random subsets: never the first N.


def test_subset_is_seeded_sorted_and_without_replacement():
    a, b = subset_indices(1000, 100, seed=3), subset_indices(1000, 100, seed=3)
    np.testing.assert_array_equal(a, b)
    assert len(np.unique(a)) == 100 and np.all(np.diff(a) > 0) and a.max() < 1000
    assert not np.array_equal(a, subset_indices(1000, 100, seed=4))
    assert not np.array_equal(a, np.arange(100))
    x = np.arange(30).reshape(10, 3)
    np.testing.assert_array_equal(random_subset(x, 4, seed=0), x[subset_indices(10, 4, seed=0)])
    assert random_subset(x, None, seed=0) is x and random_subset(x, 10, seed=0) is x and random_subset(x, 99, 0) is x
    with pytest.raises(ValueError, match="at least 1"):
        random_subset(x, 0, seed=0)


def test_subset_of_a_class_sorted_array_is_unbiased():
    """Rows sorted by class (like MNIST's test set): the first N are one class, a random N are not."""
    classes, per_class, n = 10, 1000, 1000
    label = np.repeat(np.arange(classes), per_class)
    x = np.eye(classes, dtype=np.float32)[label]  # one-hot rows, sorted by class
    assert x[:n, 0].all()  # the first N: all class 0
    N, p = len(x), 1 / classes
    # hypergeometric count of a class in the subset: sd = sqrt(n p (1 - p) (N - n) / (N - 1)) = 9.0
    sd = np.sqrt(n * p * (1 - p) * (N - n) / (N - 1))
    for seed in range(5):
        counts = random_subset(x, n, seed=seed).sum(axis=0)
        # 5 sd on each of 50 counts: a false failure has probability below 1e-4
        assert np.all(np.abs(counts - n * p) < 5 * sd), counts
