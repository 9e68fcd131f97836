"""SBN parameters: one backend-neutral container, a documented ``.npz`` format,
and loss-free conversion to torch tensors and JAX arrays.

File format (``numpy.savez``; every array ``float32`` except ``sizes``):

* ``sizes``: int array ``[D, H1, ..., HL]``;
* ``b_<l>``: bias of layer ``l`` (``l = 0`` is the visible layer), shape ``(n_l,)``;
* ``W_<m>_<l>``: weights from parent layer ``m`` to child layer ``l`` (``m > l``),
  shape ``(n_m, n_l)``, so ``a_l = b_l + sum_m h_m @ W_<m>_<l>``;
* guide parameters, when present, under keys that start with ``q_``:
  the recognition network ``q_b_<l>`` and ``q_W_<m>_<l>`` (``m < l``, shape
  ``(n_m, n_l)``: ``logit q(h_l = 1 | below) = q_b_<l> + sum_m h_m @ q_W_<m>_<l>``),
  the amortised mean-field guide ``q_mf_b_<l>`` and ``q_mf_W_0_<l>`` (``logits_l =
  q_mf_b_<l> + x @ q_mf_W_0_<l>``), and any further ``q_*`` arrays an algorithm adds.

The connectivity is read off the weight keys present (``dense`` when a layer has a
parent other than the layer directly above it).
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Iterator

import numpy as np

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.resources import check_memory

DTYPE = np.float32
_GEN_KEY = re.compile(r"^(b_(\d+)|W_(\d+)_(\d+))$")


def generative_keys(arch: Architecture) -> list[str]:
    """Names of the generative parameters, in a fixed order."""
    keys = [f"b_{l}" for l in range(arch.num_layers + 1)]
    keys += [f"W_{m}_{l}" for m, l in arch.edges()]
    return keys


def recognition_keys(arch: Architecture) -> list[str]:
    keys = [f"q_b_{l}" for l in range(1, arch.num_layers + 1)]
    keys += [f"q_W_{m}_{l}" for l in range(1, arch.num_layers + 1) for m in arch.recognition_parents(l)]
    return keys


def mean_field_keys(arch: Architecture) -> list[str]:
    keys = [f"q_mf_b_{l}" for l in range(1, arch.num_layers + 1)]
    keys += [f"q_mf_W_0_{l}" for l in range(1, arch.num_layers + 1)]
    return keys


_GUIDE_KEYS = {"recognition": recognition_keys, "mean_field": mean_field_keys}


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value)


class SBNParams(Mapping):
    """An immutable mapping ``name -> numpy array`` plus the architecture it describes.

    Build one with :meth:`init`, :meth:`load` or :meth:`from_mapping` (which also takes
    torch tensors, JAX arrays and Pyro's param store).
    """

    def __init__(self, arrays: Mapping[str, Any], connectivity: str | None = None):
        arrays = {k: _to_numpy(v) for k, v in arrays.items()}
        if "sizes" not in arrays:
            raise ValueError("parameters lack 'sizes' (the bottom-up layer widths [D, H1, ..., HL])")
        raw = np.asarray(arrays["sizes"]).ravel()
        if raw.dtype.kind not in "iub" and not np.all(np.equal(np.mod(raw.astype(np.float64), 1), 0)):
            raise ValueError(f"parameter 'sizes' must hold whole numbers (layer widths), got {raw.tolist()}")
        sizes = tuple(int(s) for s in raw)
        if connectivity is None:
            connectivity = _infer_connectivity(sizes, arrays)
        self.architecture = Architecture(sizes, connectivity)
        arrays["sizes"] = np.asarray(sizes, dtype=np.int64)
        for k, v in arrays.items():
            if k != "sizes":
                arrays[k] = np.asarray(v, dtype=DTYPE)
        self._arrays = arrays
        self._validate()

    # -- Mapping protocol ----------------------------------------------------------------
    def __getitem__(self, key: str) -> np.ndarray:
        return self._arrays[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def __repr__(self) -> str:
        guide = sorted({k.split("_")[1] if k.startswith("q_mf") else "q" for k in self if k.startswith("q_")})
        return f"SBNParams({self.architecture}, guide keys: {guide or 'none'})"

    # -- construction --------------------------------------------------------------------
    @classmethod
    def init(
        cls,
        arch: Architecture | str,
        seed: int = 0,
        scale: float = 0.1,
        guide: tuple[str, ...] = ("recognition", "mean_field"),
        connectivity: str = "layered",
    ) -> "SBNParams":
        """Seeded initialisation: weights ``N(0, scale^2)``, biases 0.

        ``guide`` lists which guide parameter sets to add (``"recognition"``,
        ``"mean_field"``); they start at zero weights and zero logits.
        """
        arch = Architecture.parse(arch, connectivity)
        if not np.isfinite(scale) or scale < 0:
            raise ValueError(f"scale must be a finite non-negative number, got {scale}")
        weights = sum(arch.sizes[m] * arch.sizes[l] for m, l in arch.edges())
        # float64 while drawn, then float32; the two guides hold about as many weights again each
        check_memory(weights * (1 + len(guide)) * 12.0, f"the parameters of architecture {arch}")
        rng = np.random.default_rng(seed)
        s = arch.sizes
        arrays: dict[str, np.ndarray] = {"sizes": np.asarray(s)}
        for l in range(arch.num_layers + 1):
            arrays[f"b_{l}"] = np.zeros(s[l])
        for m, l in arch.edges():
            arrays[f"W_{m}_{l}"] = scale * rng.standard_normal((s[m], s[l]))
        unknown = set(guide) - {"recognition", "mean_field"}
        if unknown:
            raise ValueError(f"unknown guide {sorted(unknown)}; expected 'recognition' or 'mean_field'")
        if "recognition" in guide:
            for key in recognition_keys(arch):
                m_l = key.split("_")[2:]
                shape = (s[int(m_l[0])], s[int(m_l[1])]) if key.startswith("q_W") else (s[int(m_l[0])],)
                arrays[key] = scale * rng.standard_normal(shape) if key.startswith("q_W") else np.zeros(shape)
        if "mean_field" in guide:
            for l in range(1, arch.num_layers + 1):
                arrays[f"q_mf_b_{l}"] = np.zeros(s[l])
                arrays[f"q_mf_W_0_{l}"] = scale * rng.standard_normal((s[0], s[l]))
        return cls(arrays, arch.connectivity)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any], like: "SBNParams | None" = None) -> "SBNParams":
        """From any mapping of arrays (torch tensors, JAX arrays, Pyro's param store...).

        Keys that are not parameters of ours are ignored. ``like`` supplies ``sizes`` and
        the connectivity (and any arrays ``mapping`` lacks).
        """
        arrays: dict[str, Any] = dict(like._arrays) if like is not None else {}
        for k in list(mapping.keys()):
            if k == "sizes" or _GEN_KEY.match(k) or k.startswith("q_"):
                arrays[k] = mapping[k]
        return cls(arrays, like.architecture.connectivity if like is not None else None)

    def replace(self, **arrays: Any) -> "SBNParams":
        """A copy with some arrays replaced or added."""
        new = dict(self._arrays)
        new.update(arrays)
        return SBNParams(new, self.architecture.connectivity)

    def generative(self) -> "SBNParams":
        """Only the generative parameters (no ``q_`` keys)."""
        return SBNParams({k: v for k, v in self.items() if not k.startswith("q_")}, self.architecture.connectivity)

    def has_guide(self, guide: str) -> bool:
        keys = recognition_keys(self.architecture) if guide == "recognition" else mean_field_keys(self.architecture)
        return all(k in self for k in keys)

    def with_guide(self, guide: str, seed: int) -> "SBNParams":
        """These parameters, plus ``guide`` at its default initialisation (``SBNParams.init``
        with ``seed``) if they have none."""
        if self.has_guide(guide):
            return self
        fresh = SBNParams.init(self.architecture, int(seed), guide=(guide,))
        return self.replace(**{k: fresh[k] for k in _GUIDE_KEYS[guide](self.architecture)})

    def only(self, guide: str | None = None) -> "SBNParams":
        """The generative arrays and ``guide``'s (none for ``None``): what a method that trains
        that guide saves, with no other guide's keys."""
        arch = self.architecture
        keys = generative_keys(arch) + (_GUIDE_KEYS[guide](arch) if guide is not None else [])
        return SBNParams({"sizes": np.asarray(arch.sizes), **{k: self[k] for k in keys}}, arch.connectivity)

    @classmethod
    def from_arrays(cls, arch: Architecture, arrays: Mapping[str, Any]) -> "SBNParams":
        """Parameters of ``arch`` from a mapping of arrays (NumPy, JAX or torch), e.g. a method's state."""
        return cls({"sizes": np.asarray(arch.sizes), **{k: _to_numpy(v) for k, v in arrays.items()}},
                   arch.connectivity)

    # -- conversion ------------------------------------------------------------------------
    def to_torch(self, device=None) -> dict:
        """``{name: torch.Tensor}`` (float32; ``sizes`` excluded), loss-free."""
        import torch

        return {k: torch.as_tensor(v, device=device) for k, v in self.items() if k != "sizes"}

    def to_jax(self) -> dict:
        """``{name: jax.Array}`` (float32; ``sizes`` excluded), loss-free."""
        import jax.numpy as jnp

        return {k: jnp.asarray(v) for k, v in self.items() if k != "sizes"}

    # -- files -------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the ``.npz`` file atomically (a temporary file, then a rename)."""
        from sbn_ppl.base.files import write_npz

        write_npz(os.fspath(path), self._arrays)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "SBNParams":
        path = os.fspath(path)
        if not os.path.exists(path):
            raise ValueError(f"parameter file {path!r} does not exist")
        from sbn_ppl.base.files import check_npz

        check_npz(path, "parameter file")  # random bytes: corrupt, never "pickled data"
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k] for k in f.files}
            return cls(arrays)
        except Exception as e:  # noqa: BLE001 - any unreadable file gets one clear message
            raise ValueError(f"cannot read parameter file {path!r}: {e}") from None

    # -- checks ---------------------------------------------------------------------------
    def _validate(self) -> None:
        arch, s = self.architecture, self.architecture.sizes
        expected = {f"b_{l}": (s[l],) for l in range(arch.num_layers + 1)}
        expected.update({f"W_{m}_{l}": (s[m], s[l]) for m, l in arch.edges()})
        for key, shape in expected.items():
            if key not in self._arrays:
                raise ValueError(f"parameters for architecture {arch} lack {key!r} (shape {shape})")
            if self._arrays[key].shape != shape:
                raise ValueError(
                    f"parameter {key!r} has shape {self._arrays[key].shape}, but architecture {arch} needs {shape}"
                )
        for key, v in self._arrays.items():
            if key != "sizes" and not np.all(np.isfinite(v)):
                raise ValueError(f"parameter {key!r} contains NaN or infinite values")
            if _GEN_KEY.match(key) and key not in expected:
                raise ValueError(f"parameter {key!r} does not belong to architecture {arch}")
        for key in recognition_keys(arch) + mean_field_keys(arch):
            if key in self._arrays:
                parts = key.split("_")
                idx = [int(p) for p in parts if p.isdigit()]
                shape = (s[idx[0]], s[idx[1]]) if len(idx) == 2 else (s[idx[0]],)
                if self._arrays[key].shape != shape:
                    raise ValueError(f"guide parameter {key!r} has shape {self._arrays[key].shape}, expected {shape}")


def _infer_connectivity(sizes: tuple[int, ...], arrays: Mapping[str, Any]) -> str:
    for key in arrays:
        m = _GEN_KEY.match(key)
        if m and m.group(3) is not None and int(m.group(3)) > int(m.group(4)) + 1:
            return "dense"
    return "layered"
