"""The Concrete relaxation's arithmetic in JAX (the math: this folder's ``__init__``).

Noise is one flat uniform draw per call, ``(2, B, H)``: ``u`` drives the guide's draws (the
logistic ``z = c + logit u``, its hard value ``[z > 0]`` and relaxed value
``sigma(z / lambda)``), ``v`` REBAR's conditional draws ``z~ ~ p(z | b)``. Layers are lists
``[x (B, D), h1 (B, n1), ..., hL]`` as everywhere (:mod:`..particles.numpyro`).
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.methods import Batch, Kernel
from sbn_ppl.base.optimizers import optax_optimizer
from sbn_ppl.base.params import SBNParams, generative_keys, recognition_keys
from sbn_ppl.inference.shared.elbo.numpyro import elbo_estimate
from sbn_ppl.inference.shared.gradient.numpyro import gradient_kernel
from sbn_ppl.models.numpyro_sbn import bernoulli_log_prob, log_joint, preactivation, recognition_logits

sg = jax.lax.stop_gradient


# -- noise ----------------------------------------------------------------------------------------


def per_layer(noise, arch: Architecture) -> list:
    """``(..., H)`` noise cut into one ``(..., n_l)`` array per hidden layer."""
    cuts = np.cumsum((0,) + tuple(arch.hidden_sizes))
    return [noise[..., cuts[i]:cuts[i + 1]] for i in range(arch.num_layers)]


def draw_uniforms(key, arch: Architecture, batch: int, count: int = 2):
    """``count`` uniforms per hidden unit of each of ``batch`` points, one flat draw: ``(count, B, H)``."""
    return jax.random.uniform(key, (count * batch * arch.num_hidden,)).reshape(count, batch, arch.num_hidden)


def logistic(u):
    """``logit u = log u - log(1 - u)``: Logistic(0, 1) noise from uniforms, ``u`` kept off 0 and 1."""
    tiny = jnp.finfo(u.dtype).tiny
    u = jnp.clip(u, tiny, 1.0 - jnp.finfo(u.dtype).epsneg)
    return jnp.log(u) - jnp.log1p(-u)


# -- densities -----------------------------------------------------------------------------------


def concrete_log_density(y, logits, temperature):
    """``log f(y | c, lambda) = log lambda + c - lambda y - 2 softplus(c - lambda y)``: the binary
    Concrete density of the logit-space variable ``y`` (``s = sigma(y)``), elementwise."""
    t = temperature * y
    return jnp.log(temperature) + logits - t - 2.0 * jax.nn.softplus(logits - t)


def relaxed_log_mass(s, a):
    """``s log sigma(a) + (1 - s) log sigma(-a)``: the Bernoulli log-mass, multilinear in ``s``
    (the discrete one at ``s`` in ``{0, 1}``), elementwise."""
    return -(s * jax.nn.softplus(-a) + (1.0 - s) * jax.nn.softplus(a))


def relaxed_log_joint(arch: Architecture, theta, layers):
    """``log p(x, s)`` with every unit scored by :func:`relaxed_log_mass` (``(B,)``)."""
    return sum(relaxed_log_mass(layers[l], preactivation(arch, theta, layers, l)).sum(-1)
               for l in range(arch.num_layers + 1))


def conditional_logistic(v, logits, b):
    """``z~ ~ p(z | b)`` for ``z ~ Logistic(c, 1)``, ``b = [z > 0]``, from uniforms ``v``:
    ``softplus(logit v + softplus(c))`` if ``b = 1``, ``-softplus(-logit v + softplus(-c))`` if
    ``b = 0`` (the uniform of ``z`` confined to ``b``'s side, in the softplus form)."""
    lv = logistic(v)
    one = jax.nn.softplus(lv + jax.nn.softplus(logits))
    zero = -jax.nn.softplus(-lv + jax.nn.softplus(-logits))
    return jnp.where(b > 0.5, one, zero)


# -- the guide's draws ---------------------------------------------------------------------------


def hard_chain(arch: Architecture, phi, x, noise):
    """The discrete draw ``b_l = [c_l + L_l > 0]`` bottom up from logistic noise ``noise`` (one
    ``(B, n_l)`` array a layer): ``b ~ q(. | x)``. Returns the layers and each layer's logits
    ``c_l(b_<l)`` (with ``phi``'s gradient)."""
    layers, logits = [x], []
    for l, noise_l in zip(range(1, arch.num_layers + 1), noise):
        c = recognition_logits(arch, phi, layers, l)
        layers.append(sg((c + noise_l > 0).astype(x.dtype)))
        logits.append(c)
    return layers, logits


def relaxed_tail(arch: Architecture, params, layers, noise, temperature):
    """``layers`` (``[x, ..., s_l]``, relaxed or hard) continued upwards in the relaxed chain:
    ``s_m = sigma((c_m(s_<m) + L_m) / lambda)`` for the layers above, from the same logistic
    noise ``noise`` (all layers; those given are skipped). Returns ``f(s) = log p(x, s) - log q(s | x)``
    with every unit scored multilinearly (:func:`relaxed_log_mass`), ``(B,)``."""
    layers = list(layers)
    for l in range(len(layers), arch.num_layers + 1):
        layers.append(jax.nn.sigmoid((recognition_logits(arch, params, layers, l) + noise[l - 1]) / temperature))
    log_q = sum(relaxed_log_mass(layers[l], recognition_logits(arch, params, layers, l)).sum(-1)
                for l in range(1, arch.num_layers + 1))
    return relaxed_log_joint(arch, params, layers) - log_q


# -- the objectives -----------------------------------------------------------------------------


def discrete_elbo_terms(arch: Architecture, params, layers, logits):
    """``log p(x, b)`` and ``log q(b_l | b_<l)`` per layer at the hard ``layers`` (``logits`` their
    guide logits): ``(B,)`` and a list of ``(B,)``."""
    log_q = [bernoulli_log_prob(layers[l], logits[l - 1]).sum(-1) for l in range(1, arch.num_layers + 1)]
    return log_joint(arch, params, layers), log_q


def concrete_objective(arch: Architecture, params, x, noise, temperature, prior_temperature,
                       density: str = "concrete"):
    """The relaxed single-sample ELBO per data point, ``(B,)``, pathwise in ``params``.

    ``y_l = (c_l(s_<l) + L_l) / lambda_q``, ``s_l = sigma(y_l)`` bottom up; then

    * ``density="concrete"`` (Maddison et al.): ``log p(x | s_1) + sum_l [log f(y_l | a_l(s_>l),
      lambda_p) - log f(y_l | c_l, lambda_q)]``, the binary Concrete densities in logit space;
    * ``density="bernoulli"`` (Jang et al.'s discrete densities at the relaxed values):
      ``log p(x, s) - log q(s | x)`` scored multilinearly.
    """
    layers, log_q = [x], 0.0
    ys = []
    for l, noise_l in zip(range(1, arch.num_layers + 1), noise):
        c = recognition_logits(arch, params, layers, l)
        y = (c + noise_l) / temperature
        log_q = log_q + (concrete_log_density(y, c, temperature) if density == "concrete"
                         else relaxed_log_mass(jax.nn.sigmoid(y), c)).sum(-1)
        layers.append(jax.nn.sigmoid(y))
        ys.append(y)
    if density != "concrete":
        return relaxed_log_joint(arch, params, layers) - log_q
    log_p = bernoulli_log_prob(x, preactivation(arch, params, layers, 0)).sum(-1)
    for l, y in zip(range(1, arch.num_layers + 1), ys):
        log_p = log_p + concrete_log_density(y, preactivation(arch, params, layers, l), prior_temperature).sum(-1)
    return log_p - log_q


def straight_through_objective(arch: Architecture, params, x, noise, temperature):
    """The discrete single-sample ELBO ``log p(x, b) - log q(b | x)`` per data point, ``(B,)``, at
    hard draws ``b_l = [c_l + L_l > 0]`` whose gradient is that of ``sigma((c_l + L_l) / lambda)``
    (``b + s - sg(s)``: the value exactly ``b``); units scored multilinearly, so the backward
    pass sees ``d/ds [s a - softplus(a)] = a``."""
    layers, log_q = [x], 0.0
    for l, noise_l in zip(range(1, arch.num_layers + 1), noise):
        c = recognition_logits(arch, params, layers, l)
        soft = jax.nn.sigmoid((c + noise_l) / temperature)
        h = sg((c + noise_l > 0).astype(x.dtype)) + soft - sg(soft)
        log_q = log_q + relaxed_log_mass(h, c).sum(-1)
        layers.append(h)
    return relaxed_log_joint(arch, params, layers) - log_q


# -- REBAR's and RELAX's estimator ---------------------------------------------------------------


def control_variate_surrogate(arch: Architecture, params, x, uniforms, control):
    """The per-point surrogate ``S`` ``(B,)`` of REBAR / RELAX, layer by layer, and ``f(b)``.

    ``b ~ q(. | x)`` from ``u`` (``uniforms[0]``); for each layer ``l``, ``z_l = c_l(b_<l) + L_l``
    (the logistic behind ``b_l``) and ``z~_l ~ p(z_l | b_l)`` from ``v`` (``uniforms[1]``), and

        S = log p(x, b) + sum_l [ (sg f(b) - c_l(z~_l)) (log q_l - sg log q_l) + c_l(z_l) - c_l(z~_l) ]

    with ``f(b) = log p(x, b) - log q(b | x)`` and ``log q_l = log q(b_l | b_<l)``. In theta its
    gradient is ``grad log p(x, b)``; in phi, the estimator (the score term's learning signal
    ``f(b) - c_l(z~_l)`` exactly, the product with a zero-valued difference leaking no gradient
    of ``c``), unbiased for ``grad E_q[f]`` whatever ``c_l``: ``E[c(z~) grad log q_l +
    grad c(z~)] = grad E[c(z)]`` by the conditional reparameterisation. The zero-mean term
    ``-grad_phi log q(b | x)`` of ``f``'s own dependence on phi is left out.

    :param uniforms: ``(2, B, H)`` uniforms (:func:`draw_uniforms`).
    :param control: ``control(l, below, z) -> (B,)``, the control variate ``c_l`` of layer
        ``l`` at the logistic value ``z`` ``(B, n_l)``, ``below = [x, b_1, ..., b_{l-1}]``; it
        must not carry theta's or phi's gradient but through ``z``.
    """
    noise, v = per_layer(logistic(uniforms[0]), arch), per_layer(uniforms[1], arch)
    layers, logits = hard_chain(arch, params, x, noise)
    log_p, log_q = discrete_elbo_terms(arch, params, layers, logits)
    f = sg(log_p - sum(log_q))
    s = log_p
    for l in range(1, arch.num_layers + 1):
        c, below = logits[l - 1], layers[:l]
        z, z_tilde = c + noise[l - 1], conditional_logistic(v[l - 1], c, layers[l])
        c_z, c_z_tilde = control(l, below, z), control(l, below, z_tilde)
        s = s + (f - c_z_tilde) * (log_q[l - 1] - sg(log_q[l - 1])) + c_z - c_z_tilde
    return s, f


def concrete_control(arch: Architecture, params, noise, eta, temperature, l: int, below, z):
    """REBAR's control variate for layer ``l``: ``eta f(b_<l, sigma(z / lambda), relaxed layers
    above from the same noise)`` (:func:`relaxed_tail` at fixed ``params``, temperature
    ``lambda``), ``(B,)``."""
    return eta * relaxed_tail(arch, sg(params), list(below) + [jax.nn.sigmoid(z / temperature)], noise, temperature)


def control_variate_gradients(arch: Architecture, params, cv, x, uniforms, control, phi_keys):
    """One draw of REBAR / RELAX on the batch ``x``: the gradients of ``-(1/B) sum_n S_n`` in
    ``params`` (theta's plain, phi's the estimator), the gradient in the control variate's
    arrays ``cv`` of the estimator's squared norm over ``phi_keys`` (its variance, less a term
    free of ``cv``: Tucker et al. 2017, sec. 3.3), and ``(1/B) sum_n f(b_n)``.

    :param control: ``control(cv, noise, l, below, z) -> (B,)`` (:func:`control_variate_surrogate`).
    """
    noise = per_layer(logistic(uniforms[0]), arch)

    def param_grads(cv):
        def loss(p):
            s, f = control_variate_surrogate(arch, p, x, uniforms, lambda l, below, z: control(cv, noise, l, below, z))
            return -s.mean(), f.mean()
        return jax.grad(loss, has_aux=True)(params)

    grads, vjp, objective = jax.vjp(param_grads, cv, has_aux=True)
    cotangent = {k: (2.0 * g if k in phi_keys else jnp.zeros_like(g)) for k, g in grads.items()}
    return grads, vjp(cotangent)[0], objective


# -- REBAR's and RELAX's kernel -------------------------------------------------------------------

BOUND_SAMPLES = 16  # single-sample ELBOs averaged by the method's bound


class ControlVariateState(NamedTuple):
    """The trained generative and recognition arrays, the control variate's arrays (``eta``,
    ``log_temperature``: one a hidden layer) and the optimiser's state (over both)."""

    params: dict
    cv: dict
    opt_state: Any


class ControlVariateInfo(NamedTuple):
    objective: jax.Array  # mean over the batch of the single-sample ELBO f(b)
    temperature: jax.Array  # mean over the layers of the learned lambda_l
    eta: jax.Array  # mean over the layers of the learned eta_l


def estimator(arch: Architecture, state: ControlVariateState, key, x, control_of):
    """One draw on the batch ``x``: (gradients in ``params``, in ``cv``, the objective)."""
    uniforms = draw_uniforms(key, arch, x.shape[0], 2)
    return control_variate_gradients(arch, state.params, state.cv, x, uniforms, control_of(arch, state.params),
                                     recognition_keys(arch))


def control_variate_kernel(arch: Architecture, options: dict, initial_cv, control_of) -> Kernel:
    """The :class:`Kernel` of a REBAR-like method: ``initial_cv(key)`` its control variate's
    arrays, ``control_of(arch, params)`` its ``control(cv, noise, l, below, z)``."""
    optimizer = optax_optimizer(options["optimizer"], options["lr"], options["lr_half_life"],
                                options["lr_schedule"])

    def start(key, params: SBNParams, train=None):
        params = params.with_guide("recognition", int(jax.random.randint(key, (), 0, 2**31 - 1)))
        trained = {k: jnp.asarray(params[k]) for k in generative_keys(arch) + recognition_keys(arch)}
        cv = initial_cv(jax.random.fold_in(key, 2))
        return ControlVariateState(trained, cv, optimizer.init((trained, cv))), jax.random.fold_in(key, 1)

    def update(key, state: ControlVariateState, batch: Batch):
        grads, cv_grads, objective = estimator(arch, state, key, batch.x, control_of)
        updates, opt_state = optimizer.update((grads, cv_grads), state.opt_state, (state.params, state.cv))
        params, cv = optax.apply_updates((state.params, state.cv), updates)
        info = ControlVariateInfo(objective, jnp.exp(cv["log_temperature"]).mean(), cv["eta"].mean())
        return ControlVariateState(params, cv, opt_state), info

    def guide_gradient(key, state, x):
        """One draw of the estimator (ascent) in the recognition arrays."""
        grads = estimator(arch, state.trained, key, jnp.asarray(x), control_of)[0]
        return {k: -grads[k] for k in recognition_keys(arch)}

    kernel = gradient_kernel(arch, start, update, lambda key, p, x: elbo_estimate(key, arch, p, x, BOUND_SAMPLES))
    return kernel._replace(guide_gradient=guide_gradient)
