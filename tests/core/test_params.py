import os

import numpy as np
import pytest

from sbn_ppl import SBNParams


def test_init_is_seeded_and_has_the_documented_keys():
    a, b = SBNParams.init("6-4-2", seed=1), SBNParams.init("6-4-2", seed=1)
    assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["W_1_0"], SBNParams.init("6-4-2", seed=2)["W_1_0"])
    assert a["W_2_1"].shape == (2, 4) and a["W_1_0"].shape == (4, 6) and a["b_0"].shape == (6,)
    assert a["q_W_0_1"].shape == (6, 4) and a["q_W_1_2"].shape == (4, 2)
    assert a["q_mf_W_0_2"].shape == (6, 2)
    assert list(a["sizes"]) == [6, 4, 2]


def test_dense_has_skip_weights_and_is_recognised_from_the_file(tmp_path):
    p = SBNParams.init("6-4-3-2", seed=0, connectivity="dense")
    assert {"W_2_0", "W_3_0", "W_3_1", "q_W_0_3"} <= set(p)
    p.save(tmp_path / "p.npz")
    q = SBNParams.load(tmp_path / "p.npz")
    assert q.architecture == p.architecture
    assert q.architecture.connectivity == "dense"


def test_save_load_round_trip_is_exact_and_atomic(tmp_path):
    p = SBNParams.init("5-3-2", seed=0)
    path = tmp_path / "sub" / "params.npz"
    p.save(path)
    assert os.listdir(path.parent) == ["params.npz"]  # no temporary file left behind
    q = SBNParams.load(path)
    assert set(q) == set(p)
    assert all(np.array_equal(p[k], q[k]) and p[k].dtype == q[k].dtype for k in p)


def test_torch_and_jax_conversion_is_loss_free():
    p = SBNParams.init("5-3-2", seed=0)
    t = p.to_torch()
    j = p.to_jax()
    back_t = SBNParams.from_mapping(t, like=p)
    back_j = SBNParams.from_mapping(j, like=p)
    for k in t:
        assert np.array_equal(back_t[k], p[k])
        assert np.array_equal(back_j[k], p[k])
        assert str(t[k].dtype) == "torch.float32" and str(j[k].dtype) == "float32"


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda a: a.pop("W_1_0"), "lack 'W_1_0'"),
        (lambda a: a.__setitem__("W_1_0", np.zeros((2, 2))), "shape"),
        (lambda a: a.__setitem__("b_1", np.array([np.nan, 0, 0])), "NaN"),
        (lambda a: a.__setitem__("q_W_0_1", np.zeros((4, 3))), "guide parameter"),
        (lambda a: a.__setitem__("W_2_0", np.zeros((2, 5))), "does not belong"),
        (lambda a: a.pop("sizes"), "sizes"),
    ],
)
def test_mismatched_parameters_are_rejected(change, message):
    arrays = dict(SBNParams.init("5-3-2", seed=0))
    change(arrays)
    with pytest.raises(ValueError, match=message):
        SBNParams(arrays, connectivity="layered")


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        SBNParams.load(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip file")
    with pytest.raises(ValueError, match="parameter file .*bad.npz is corrupt"):
        SBNParams.load(bad)


def test_fractional_layer_widths_in_a_file_are_refused_not_truncated(tmp_path):
    import numpy as np
    import pytest

    from sbn_ppl import SBNParams

    arrays = dict(SBNParams.init("4-3", seed=0, guide=()))
    arrays["sizes"] = np.array([4.0, 3.5])
    with pytest.raises(ValueError, match="whole numbers"):
        SBNParams(arrays)
