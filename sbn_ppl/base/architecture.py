"""The shape of a sigmoid belief network: layer widths and which layers feed which.

Layers are numbered bottom-up: layer 0 is the visible layer ``x`` (D units), layers
1..L are the hidden layers ``h1 .. hL``; ``hL`` is on top with a factorised prior.
Edges always point downwards (from a higher layer ``m`` to a lower layer ``l < m``).

* ``layered``: each layer's only parent is the layer directly above it.
* ``dense``: each layer takes input from every layer above it (Neal's general
  ordering; with all hidden widths 1 this is ``sigma(b_i + sum_{j<i} w_ji s_j)``).
"""
from __future__ import annotations

from dataclasses import dataclass

CONNECTIVITIES = ("layered", "dense")


@dataclass(frozen=True)
class Architecture:
    """Bottom-up widths ``(D, H1, ..., HL)`` and a connectivity."""

    sizes: tuple[int, ...]
    connectivity: str = "layered"

    def __post_init__(self):
        if any(isinstance(s, bool) or int(s) != s for s in self.sizes):
            raise ValueError(f"layer widths must be whole numbers, got sizes {list(self.sizes)}")
        sizes = tuple(int(s) for s in self.sizes)
        object.__setattr__(self, "sizes", sizes)
        if len(sizes) < 2:
            raise ValueError(
                f"an architecture needs a visible layer and at least one hidden layer, got sizes {list(sizes)}"
            )
        if any(s < 1 for s in sizes):
            raise ValueError(f"every layer width must be a positive integer, got sizes {list(sizes)}")
        if self.connectivity not in CONNECTIVITIES:
            raise ValueError(
                f"unknown connectivity {self.connectivity!r}; expected one of {', '.join(CONNECTIVITIES)}"
            )

    @classmethod
    def parse(cls, spec: "str | Architecture | tuple | list", connectivity: str = "layered") -> "Architecture":
        """``"64-32-16"`` (bottom-up) -> ``Architecture((64, 32, 16))``."""
        if isinstance(spec, Architecture):
            return spec
        if isinstance(spec, str):
            try:
                sizes = tuple(int(p) for p in spec.strip().split("-"))
            except ValueError:
                raise ValueError(
                    f"cannot read architecture {spec!r}: expected bottom-up widths like '64-32-16'"
                ) from None
            return cls(sizes, connectivity)
        return cls(tuple(spec), connectivity)

    def __str__(self) -> str:
        return "-".join(str(s) for s in self.sizes) + ("" if self.connectivity == "layered" else " (dense)")

    @property
    def num_layers(self) -> int:
        """Number of hidden layers L."""
        return len(self.sizes) - 1

    @property
    def visible_size(self) -> int:
        return self.sizes[0]

    @property
    def hidden_sizes(self) -> tuple[int, ...]:
        return self.sizes[1:]

    @property
    def num_hidden(self) -> int:
        """Total number of hidden units."""
        return sum(self.sizes[1:])

    def parents(self, layer: int) -> tuple[int, ...]:
        """Layers that feed ``layer`` in the generative model (all above it)."""
        top = self.num_layers
        if layer >= top:
            return ()
        if self.connectivity == "layered":
            return (layer + 1,)
        return tuple(range(layer + 1, top + 1))

    def children(self, layer: int) -> tuple[int, ...]:
        """Layers that ``layer`` feeds in the generative model."""
        return tuple(l for l in range(layer) if layer in self.parents(l))

    def recognition_parents(self, layer: int) -> tuple[int, ...]:
        """Layers (below) that feed hidden ``layer`` in the bottom-up recognition network."""
        if layer < 1:
            return ()
        if self.connectivity == "layered":
            return (layer - 1,)
        return tuple(range(layer))

    def edges(self) -> tuple[tuple[int, int], ...]:
        """All generative edges ``(m, l)``: parent layer m feeds child layer l."""
        return tuple((m, l) for l in range(self.num_layers + 1) for m in self.parents(l))

    def num_edges(self) -> int:
        """Number of unit-to-unit connections (weights) in the generative net."""
        return sum(self.sizes[m] * self.sizes[l] for m, l in self.edges())


def site_name(layer: int) -> str:
    """The model's site name for a layer: ``"x"`` for layer 0, ``"h<l>"`` above."""
    return "x" if layer == 0 else f"h{layer}"
