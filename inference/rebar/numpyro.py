"""REBAR in JAX (the math: this folder's ``__init__``; no Pyro twin).

Own tricks: none; the step (theta's and phi's gradients and, by one vector-Jacobian product
of phi's gradient, the variance gradient in ``(eta, log lambda)``, one optax optimiser over all
three) is :func:`~sbn_ppl.inference.shared.relaxation.numpyro.control_variate_kernel`.
"""
from __future__ import annotations

import math

import jax.numpy as jnp

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.methods import Kernel
from sbn_ppl.inference.shared.relaxation.numpyro import concrete_control, control_variate_kernel


def rebar_control(arch: Architecture, params):
    """``control(cv, noise, l, below, z)``: REBAR's ``eta_l f(b_<l, sigma(z / lambda_l), ...)``."""
    def control(cv, noise, l, below, z):
        return concrete_control(arch, params, noise, cv["eta"][l - 1], jnp.exp(cv["log_temperature"][l - 1]), l,
                                below, z)
    return control


def initial_control(arch: Architecture, temperature: float) -> dict:
    """``eta_l = 1``, ``lambda_l = temperature`` for every hidden layer."""
    return {"eta": jnp.ones(arch.num_layers), "log_temperature": jnp.full(arch.num_layers, math.log(temperature))}


def build(arch: Architecture, options: dict) -> Kernel:
    """The REBAR :class:`~sbn_ppl.base.methods.Kernel` (options ``lr``, ``optimizer``,
    ``lr_half_life``, ``temperature``: the starting lambda); ``info``: ``ControlVariateInfo`` (objective, mean lambda, mean eta)."""
    return control_variate_kernel(arch, options, lambda key: initial_control(arch, float(options["temperature"])),
                                  rebar_control)
