import pytest

from sbn_ppl import Architecture
from sbn_ppl.base.architecture import site_name


def test_parse_bottom_up_widths():
    arch = Architecture.parse("64-32-16")
    assert arch.sizes == (64, 32, 16)
    assert arch.num_layers == 2 and arch.num_hidden == 48 and arch.visible_size == 64
    assert [site_name(l) for l in range(3)] == ["x", "h1", "h2"]


def test_layered_parents_are_the_layer_above():
    arch = Architecture((5, 4, 3, 2))
    assert [arch.parents(l) for l in range(4)] == [(1,), (2,), (3,), ()]
    assert arch.children(3) == (2,)
    assert [arch.recognition_parents(l) for l in range(1, 4)] == [(0,), (1,), (2,)]
    assert arch.num_edges() == 5 * 4 + 4 * 3 + 3 * 2


def test_dense_parents_are_every_layer_above():
    arch = Architecture((5, 4, 3, 2), "dense")
    assert [arch.parents(l) for l in range(4)] == [(1, 2, 3), (2, 3), (3,), ()]
    assert arch.children(3) == (0, 1, 2)
    assert arch.recognition_parents(3) == (0, 1, 2)


@pytest.mark.parametrize("spec", ["64", "64-x", "64--3", "64-0-2", ""])
def test_bad_architectures_are_rejected(spec):
    with pytest.raises(ValueError):
        Architecture.parse(spec)


def test_unknown_connectivity():
    with pytest.raises(ValueError, match="connectivity"):
        Architecture((3, 2), "sparse")


def test_non_integer_widths_are_rejected():
    with pytest.raises(ValueError, match="whole numbers"):
        Architecture((8.9, 3.5))
