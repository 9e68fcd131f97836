"""Importance sampling of ``log p(x)`` at benchmark scale: jitted, streaming, with diagnostics.

For each data point ``x_n`` and a guide ``q`` (the recognition network or amortised mean
field, from the ``q_`` keys of :class:`~sbn_ppl.SBNParams`)::

    log p^(x_n) = log (1/K) sum_k w_nk,   w_nk = p(x_n, h_nk) / q(h_nk | x_n),   h_nk ~ q(. | x_n)

an estimate of ``log p(x_n)`` that lies below it on average (Jensen) by about
``var(w) / (2 K p(x)^2)``. The densities are those of :mod:`sbn_ppl.models.numpyro_sbn`,
the ones every JAX method trains on.

How it runs (:func:`is_log_likelihood`):

* **Chunks.** Data points go in batches of ``B`` (default 100) and particles in chunks of
  ``C`` (so that ``C B`` is about 2,048 rows): one jitted call draws ``C`` particles for
  ``B`` points and returns their ``(C, B)`` log-weights. Memory is ``O(C B (D + H))``
  on the device plus ``O(B M)`` on the host (``M``, the k-hat tail, at most 2,048),
  whatever K is. The next chunk is dispatched before the last one is read, so the device
  never waits for the host.
* **Precision.** Sampling and the log-weights are float32; everything after is float64
  (:class:`~sbn_ppl.yardstick.estimates.ImportanceWeights`: running maximum, rescaled sums of
  ``w`` and ``w^2``, the largest weights for k-hat). A float32 log-weight is a sum of about
  ``D + 2 H`` terms of a few nats, so it is off by about ``1e-6 |log w|`` (``1e-4`` nats at
  ``log w ~ -100``); an error ``delta_k`` in each log-weight moves the estimate by at most
  ``max_k |delta_k|``, far below the Monte Carlo error. The float64 accumulation adds no
  error that grows with K.
* **Random numbers.** Counter-based (:func:`uniforms`): the bits of particle ``k`` of data
  point ``n`` (its row in ``x``) are a Threefry hash of ``(seed, k, n, unit)``, so the same
  seed gives the same particles whatever the batch and chunk sizes: a point's estimate
  does not depend on how the work was cut. Each unit gets 48 bits near 0 and is compared on
  its rare side (:func:`~sbn_ppl.inference.shared.particles.numpyro.sample_guide_from_uniforms`),
  so a confident guide's rare values are drawn with the probabilities ``log q`` gives them
  (to ``2^-48``).
* **Progress.** ``progress=True`` shows a tqdm bar over particles x points, with its rate and ETA.

Every result carries the per-point effective sample size and Pareto k-hat of the weights
and the warnings they call for (:mod:`sbn_ppl.yardstick.diagnostics`).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import random

import sbn_ppl.base.pytrees as pytrees
from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.arrays import validate_binary
from sbn_ppl.yardstick.diagnostics import importance_warnings
from sbn_ppl.yardstick.estimates import ImportanceWeights, LogLikelihood
from sbn_ppl.inference.shared.particles import numpyro as particles_jax
from sbn_ppl.base.params import SBNParams, generative_keys, mean_field_keys, recognition_keys

pytrees.register()

GUIDES = particles_jax.GUIDES
POINTS_PER_BATCH = 100  # B: data points per jitted call
ROWS_PER_CHUNK = 2048  # C B: particles x points per jitted call (measured best on a 2-core CPU)


# -- the math: one chunk of log-weights -----------------------------------------------------


_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def threefry2x32(key, x0, x1):
    """Threefry-2x32 with 20 rounds (Salmon, Moraes, Dror & Shaw 2011, "Parallel random
    numbers: as easy as 1, 2, 3"): a keyed bijection of the 64-bit counter ``(x0, x1)``
    (uint32 arrays of one shape) to 64 random bits ``(y0, y1)``.

    The same function as JAX's ``threefry2x32`` primitive, bit for bit (tested), written
    in plain ``jnp`` integer ops: XLA vectorises these on a CPU, where the primitive's
    lowering costs about 2.8 times the CPU time (measured: 3.0 against 8.5 us per 800 words).
    """
    k0, k1 = key[0], key[1]
    ks = (k0, k1, k0 ^ k1 ^ jnp.uint32(0x1BD11BDA))
    x0, x1 = x0 + k0, x1 + k1
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x0 = x0 + x1
            x1 = ((x1 << jnp.uint32(r)) | (x1 >> jnp.uint32(32 - r))) ^ x0
        x0, x1 = x0 + ks[(i + 1) % 3], x1 + ks[(i + 2) % 3] + jnp.uint32(i + 1)
    return x0, x1


def uniforms(key, arch: Architecture, points, particles):
    """One uniform in [0, 1) per hidden unit of particle ``k`` of point ``n``, for every
    ``k`` in ``particles`` ``(C,)`` and ``n`` in ``points`` ``(B,)``: one ``(C, B, n_l)``
    float32 array per hidden layer.

    Counter-based: unit ``j`` of particle ``k`` of point ``n`` gets the 64 random bits
    ``(b1, b2) = threefry2x32(key, (k, n H + j))`` (``H`` hidden units), and
    ``u = (b1 >> 8) 2^-24 + (b2 >> 8) 2^-48``: 24 bits everywhere and 48 near 0, so
    ``P(u < p) = p`` to float32 precision for every ``p >= 2^-48`` (about ``3.6e-15``).
    A 24-bit uniform alone would draw a unit whose guide probability is below ``2^-24``
    (``|logit| > 17``, common in a confident recognition network) with probability
    ``2^-24`` while ``log q`` says far less: a rare particle with a weight many nats too
    large. The bits of a (point, particle) depend on nothing else, so the draws do not
    change with the batch and chunk sizes.
    """
    h = arch.num_hidden
    shape = (particles.shape[0], points.shape[0], h)
    b1, b2 = threefry2x32(key, jnp.broadcast_to(particles[:, None, None], shape),
                          jnp.broadcast_to(points[None, :, None] * h + jnp.arange(h, dtype=jnp.uint32), shape))
    u = (b1 >> 8).astype(jnp.float32) * (2.0 ** -24) + (b2 >> 8).astype(jnp.float32) * (2.0 ** -48)
    bounds = np.cumsum((0,) + arch.hidden_sizes)
    return [u[..., bounds[i]:bounds[i + 1]] for i in range(arch.num_layers)]


def log_weights(key, arch: Architecture, params, guide: str, x, points, particles):
    """``log w = log p(x, h) - log q(h | x)`` for particles ``particles`` ``(C,)`` of the
    points ``points`` ``(B,)`` (rows of ``x``): ``(C, B)`` float32.

    :param key: a raw ``(2,)`` uint32 key (``jax.random.PRNGKey(seed)``).
    """
    layers, log_q = particles_jax.sample_guide_from_uniforms(uniforms(key, arch, points, particles), arch, params,
                                                             x, guide)
    return particles_jax.log_weights(arch, params, layers, log_q)


_log_weights = jax.jit(log_weights, static_argnames=("arch", "guide"))


# -- the driver -------------------------------------------------------------------------------


def _guide_arrays(params: SBNParams, guide: str) -> dict:
    if guide not in GUIDES:
        raise ValueError(f"unknown guide {guide!r}; expected one of {', '.join(GUIDES)}")
    if not params.has_guide(guide):
        raise ValueError(f"the parameters hold no {guide!r} guide (its q_ keys are missing)")
    arch = params.architecture
    keys = generative_keys(arch) + (recognition_keys(arch) if guide == "recognition" else mean_field_keys(arch))
    return {k: jnp.asarray(params[k], dtype=jnp.float32) for k in keys}


def _check_count(value, what: str) -> int:
    if isinstance(value, bool) or int(value) != value or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _chunks(num_points: int, num_particles: int, points_per_batch: int, rows_per_chunk: int):
    """Batch size B, particle chunk C (near-equal chunks, so padding wastes under one per chunk)."""
    b = min(num_points, points_per_batch)
    c_max = max(1, min(num_particles, rows_per_chunk // b))
    num_chunks = -(-num_particles // c_max)
    return b, -(-num_particles // num_chunks)


def _weight_chunks(params, x, guide, num_particles, seed, points_per_batch, rows_per_chunk, bar=None, devices=None):
    """Yield ``(start, rows, log_w)`` for every data batch and particle chunk, in order:
    ``log_w`` ``(C', rows)`` float32 NumPy, the padding already cut off. One chunk is
    always in flight while the previous one is read. With several devices each batch of
    points is split over them (B rounded up to a multiple of the device count; the draws
    are counter-based, so the estimates do not change)."""
    import sbn_ppl.engine.sharding as sharding

    mesh = sharding.data_mesh(devices)
    arch = params.architecture
    theta = _guide_arrays(params, guide)
    n = x.shape[0]
    b, c = _chunks(n, num_particles, points_per_batch, rows_per_chunk)
    ndev = sharding.mesh_size(mesh)
    b = -(-b // ndev) * ndev
    if (n + b) * arch.num_hidden >= 2**32 or num_particles + c >= 2**32:
        raise ValueError(f"{n} points x {num_particles} particles exceed the random-number counter (2^32 "
                         "points x hidden units); score the points in parts")
    key = random.PRNGKey(seed)
    if mesh is not None:
        rep = sharding.replicated(mesh)
        theta = {k: sharding.put(np.asarray(v), rep) for k, v in theta.items()}
        key = sharding.put(np.asarray(key), rep)
    in_flight = None
    for start in range(0, n, b):
        rows = min(b, n - start)
        xb = np.zeros((b, x.shape[1]), np.float32)  # the last batch padded: one compilation
        xb[:rows] = x[start:start + rows]
        if mesh is None:
            xb = jnp.asarray(xb)
            points = jnp.arange(start, start + b, dtype=jnp.uint32)
        else:  # the batch's points split over the devices
            xb = sharding.put(xb, sharding.along(mesh, 0, 2))
            points = sharding.put(np.arange(start, start + b, dtype=np.uint32), sharding.along(mesh, 0, 1))
        for k0 in range(0, num_particles, c):
            particles = np.arange(k0, k0 + c, dtype=np.uint32)
            particles = jnp.asarray(particles) if mesh is None else sharding.put(particles, rep)
            log_w = _log_weights(key, arch, theta, guide, xb, points, particles)  # dispatched, not waited for
            if in_flight is not None:
                yield _ready(*in_flight, bar)
            in_flight = (start, rows, min(c, num_particles - k0), log_w)
    if in_flight is not None:
        yield _ready(*in_flight, bar)


def _ready(start, rows, count, log_w, bar):
    from sbn_ppl.engine.sharding import to_host

    out = to_host(log_w)[:count, :rows]
    if bar is not None:
        bar.update(count * rows)
    return start, rows, out


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="particle", unit_scale=True, desc="importance sampling", leave=False,
                smoothing=0.05)


def is_log_likelihood(params: SBNParams, x, guide: str = "recognition", num_particles: int = 1000, seed: int = 0,
                      *, progress: bool = False, points_per_batch: int = POINTS_PER_BATCH,
                      rows_per_chunk: int = ROWS_PER_CHUNK, devices: int | None = None) -> LogLikelihood:
    """Importance-sampling estimate of ``log p(x_n)`` for every row of ``x``, jitted and streaming.

    :param params: the SBN with the guide's ``q_`` keys.
    :param x: data ``(N, D)`` of 0./1.
    :param guide: ``"recognition"`` or ``"mean_field"``.
    :param num_particles: ``K``, importance samples per data point (the papers use 5,000).
    :param seed: same seed, same particles (whatever the batch and chunk sizes).
        Needs ``N H < 2^32`` (``H`` hidden units: 10 million points at 400).
    :param progress: show a progress bar (particles x points, with an ETA).
    :param points_per_batch: ``B``; ``rows_per_chunk``: about ``C B`` (memory and speed only).
    :param devices: the points of each batch are split over this many devices (``None``:
        every device); the particles are the same whatever the count (counter-based draws).
    :returns: :class:`~sbn_ppl.yardstick.estimates.LogLikelihood` with ``estimator`` ``"is(K=..,guide)"``,
        the delta-method standard errors, and the per-point ESS, Pareto k-hat and warnings.
    """
    num_particles = _check_count(num_particles, "the number of importance samples")
    points_per_batch = _check_count(points_per_batch, "points_per_batch")
    rows_per_chunk = _check_count(rows_per_chunk, "rows_per_chunk")
    _guide_arrays(params, guide)
    x = validate_binary(x, width=params.architecture.visible_size, name="x").astype(np.float32)
    n = x.shape[0]
    bar = _progress(n * num_particles, progress)
    done, acc, start_of_acc = [], None, None
    try:
        for start, rows, log_w in _weight_chunks(params, x, guide, num_particles, seed, points_per_batch,
                                                 rows_per_chunk, bar, devices):
            if start != start_of_acc:  # a new batch of points: finish the last one
                if acc is not None:
                    done.append(_finish(acc))
                acc, start_of_acc = ImportanceWeights(rows, num_particles), start
            acc.add(log_w)
        done.append(_finish(acc))
    finally:
        if bar is not None:
            bar.close()
    estimate, stderr, ess, khat = (np.concatenate(column) for column in zip(*done))
    return LogLikelihood(estimate, stderr, f"is(K={num_particles},{guide})", ess, khat,
                         importance_warnings(ess, khat, num_particles))


def _finish(acc: ImportanceWeights):
    return acc.log_mean(), acc.stderr(), acc.ess(), acc.khat()


def importance_log_weights(params: SBNParams, x, guide: str = "recognition", num_particles: int = 1000,
                           seed: int = 0, *, points_per_batch: int = POINTS_PER_BATCH,
                           rows_per_chunk: int = ROWS_PER_CHUNK, devices: int | None = None) -> np.ndarray:
    """All ``(K, N)`` log-weights :func:`is_log_likelihood` would draw with the same seed
    (float32). For small problems: tests, diagnostics, plots."""
    num_particles = _check_count(num_particles, "the number of importance samples")
    x = validate_binary(x, width=params.architecture.visible_size, name="x").astype(np.float32)
    out = np.empty((num_particles, x.shape[0]), np.float32)
    k_done = {}
    for start, rows, log_w in _weight_chunks(params, x, guide, num_particles, seed, points_per_batch,
                                             rows_per_chunk, devices=devices):
        k0 = k_done.get(start, 0)
        out[k0:k0 + log_w.shape[0], start:start + rows] = log_w
        k_done[start] = k0 + log_w.shape[0]
    return out
