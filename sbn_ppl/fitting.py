"""The fitting driver: run one :class:`~sbn_ppl.methods.Method` for a budget, with a
progress bar, a learning curve, and atomic checkpoints (``params.npz``, ``metrics.json``).
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np

from .data import validate_binary
from .files import write_json
from .methods import Method, get_method
from .params import SBNParams


class FitResult(NamedTuple):
    params: SBNParams
    metrics: list[dict]  # one record per checkpoint: step, seconds, objective, ...
    method: str
    backend: str


def check_budget(steps: int | None, seconds: float | None) -> None:
    if steps is None and seconds is None:
        raise ValueError("give a budget: a number of steps and/or seconds")
    if steps is not None and steps < 1:
        raise ValueError(f"the number of steps must be at least 1, got {steps}")
    if seconds is not None and not seconds > 0:
        raise ValueError(f"the time budget must be positive, got {seconds} seconds")


def fit(
    method: str | Method,
    params: SBNParams,
    train: np.ndarray,
    *,
    backend: str | None = None,
    steps: int | None = 1000,
    seconds: float | None = None,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    checkpoint_every: int = 100,
    out: str | None = None,
    progress: bool = True,
    on_checkpoint: Callable[[Any, dict], dict | None] | None = None,
    checkpoint_seconds: float | None = None,
    on_finish: Callable[[Any], None] | None = None,
) -> FitResult:
    """Fit ``params`` to ``train`` with a registered method.

    Stops after ``steps`` steps or ``seconds`` of training time, whichever comes first.
    Every ``checkpoint_every`` steps it records the method's objective (and whatever
    ``on_checkpoint(params, record)`` returns) and, with ``out``, rewrites
    ``out/params.npz`` and ``out/metrics.json`` atomically.

    With ``checkpoint_seconds``, checkpoints come about every ``checkpoint_seconds`` of
    training time instead (still at most ``checkpoint_every`` steps apart): one step
    (which pays for any compilation), one timed step, then chunks of one fixed number of
    steps, the power of two nearest to ``checkpoint_seconds`` at the timed speed (so a
    ``run`` jitted on its number of steps compiles twice, not once per chunk). A time
    budget may be overrun by up to one chunk. ``on_finish(state)``, if given, is called
    once with the method's final state (to evaluate ``Method.bound``, say).
    """
    check_budget(steps, seconds)
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be at least 1, got {checkpoint_every}")
    if checkpoint_seconds is not None and not checkpoint_seconds > 0:
        raise ValueError(f"checkpoint_seconds must be positive, got {checkpoint_seconds}")
    m = method if isinstance(method, Method) else get_method(method, backend)
    train = validate_binary(train, width=params.architecture.visible_size, name="training data")
    opts = m.check_options(dict(options or {}))
    state = m.init(params, train, seed=seed, **opts)
    metrics: list[dict] = []
    done, elapsed = 0, 0.0
    clock = _Clock(checkpoint_seconds) if checkpoint_seconds is not None else None
    bar = _progress(steps, f"{m.name} ({m.backend})", progress)
    while (steps is None or done < steps) and (seconds is None or elapsed < seconds):
        chunk = checkpoint_every if steps is None else min(checkpoint_every, steps - done)
        if clock is not None:
            chunk = min(chunk, clock.next_chunk())
        t0 = time.perf_counter()
        state, info = m.run(state, chunk)
        info = {k: float(v) for k, v in info.items()}  # also waits for asynchronous (JAX) work
        dt = time.perf_counter() - t0
        elapsed += dt
        if clock is not None:
            clock.timed(chunk, dt)
        done += chunk
        record = {"step": done, "seconds": elapsed, **info}
        current = m.get_params(state)
        if on_checkpoint is not None:
            record.update(on_checkpoint(current, record) or {})
        metrics.append(record)
        if out is not None:
            _checkpoint(out, current, metrics, m, seed, opts)
        bar.update(chunk)
        bar.set_postfix(objective=f"{record['objective']:.3f}")
    bar.close()
    if on_finish is not None:
        on_finish(state)
    return FitResult(m.get_params(state), metrics, m.name, m.backend)


class _Clock:
    """Chunk lengths for checkpoints about every ``target`` seconds of training (see :func:`fit`)."""

    def __init__(self, target: float):
        self.target, self.chunks, self.fixed = target, 0, None

    def next_chunk(self) -> int:
        return self.fixed or 1

    def timed(self, chunk: int, seconds: float) -> None:
        self.chunks += 1
        if self.chunks == 2:  # the first chunk paid for compilation; the second is the speed
            steps = self.target / max(seconds / chunk, 1e-9)
            self.fixed = 1 << max(0, round(np.log2(max(steps, 1.0))))


def _checkpoint(out: str, params: SBNParams, metrics: list[dict], m: Method, seed: int, opts: dict) -> None:
    os.makedirs(out, exist_ok=True)
    params.save(os.path.join(out, "params.npz"))
    write_json(
        os.path.join(out, "metrics.json"),
        {"method": m.name, "backend": m.backend, "seed": seed, "options": opts, "curve": metrics},
    )


def _progress(total, desc, enabled):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False, unit="step")
