"""RELAX in JAX (the math: this folder's ``__init__``; no Pyro twin).

Own tricks: each layer's net ``r_l`` is four arrays in the control variate's dict beside
``eta`` and ``log_temperature``, so the shared step
(:func:`~sbn_ppl.inference.shared.relaxation.numpyro.control_variate_kernel`) trains them by
the same variance gradient.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.methods import Kernel
from sbn_ppl.inference.shared.relaxation.numpyro import concrete_control, control_variate_kernel


def net_inputs(arch: Architecture, l: int) -> int:
    """Width of ``r_l``'s input ``[x, b_1 .. b_{l-1}, s_l]``."""
    return sum(arch.sizes[: l + 1])


def initial_control(key, arch: Architecture, temperature: float, hidden: int) -> dict:
    """``eta_l = 1``, ``lambda_l = temperature``; ``r_l``: input weights ``N(0, 1 / fan-in)``, zero
    biases and output weights (so RELAX starts as REBAR)."""
    cv = {"eta": jnp.ones(arch.num_layers), "log_temperature": jnp.full(arch.num_layers, math.log(temperature))}
    for l, key_l in zip(range(1, arch.num_layers + 1), jax.random.split(key, arch.num_layers)):
        width = net_inputs(arch, l)
        cv[f"r_W1_{l}"] = jax.random.normal(key_l, (width, hidden)) / math.sqrt(width)
        cv[f"r_b1_{l}"] = jnp.zeros(hidden)
        cv[f"r_w2_{l}"] = jnp.zeros(hidden)
        cv[f"r_b2_{l}"] = jnp.zeros(())
    return cv


def net(cv, l: int, inputs):
    """``r_l(inputs) = tanh(inputs W1 + b1) . w2 + b2``, ``(B,)``."""
    return jnp.tanh(inputs @ cv[f"r_W1_{l}"] + cv[f"r_b1_{l}"]) @ cv[f"r_w2_{l}"] + cv[f"r_b2_{l}"]


def relax_control(arch: Architecture, params):
    """``control(cv, noise, l, below, z)``: ``eta_l f(b_<l, s_l, ...) + r_l([x, b_<l, s_l])``,
    ``s_l = sigma(z / lambda_l)``."""
    def control(cv, noise, l, below, z):
        temperature = jnp.exp(cv["log_temperature"][l - 1])
        relaxed = concrete_control(arch, params, noise, cv["eta"][l - 1], temperature, l, below, z)
        inputs = jnp.concatenate([jnp.broadcast_to(b, z.shape[:-1] + b.shape[-1:]) for b in below]
                                 + [jax.nn.sigmoid(z / temperature)], axis=-1)
        return relaxed + net(cv, l, inputs)
    return control


def build(arch: Architecture, options: dict) -> Kernel:
    """The RELAX :class:`~sbn_ppl.base.methods.Kernel` (options ``lr``, ``optimizer``,
    ``lr_half_life``, ``temperature``: the starting lambda, ``hidden``: the nets' width);
    ``info``: ``ControlVariateInfo`` (objective, mean lambda, mean eta)."""
    temperature, hidden = float(options["temperature"]), int(options["hidden"])
    return control_variate_kernel(arch, options, lambda key: initial_control(key, arch, temperature, hidden),
                                  relax_control)
