"""The fitting driver: one :class:`~sbn_ppl.methods.Method` through its backend's runner, for
a budget, with a progress bar, a learning curve, divergence checks and whole checkpoints.

Budgets: ``steps``, ``epochs`` (``epochs * (N // batch_size)`` steps) and ``seconds`` of
training time (JIT compilation counts, scoring does not); training stops at whichever
comes first. With only ``seconds`` there is no step cap. A time budget is met to within
one step: the driver times the steps and never starts a chunk that its estimate says
would overrun.
"""
from __future__ import annotations

import math
import sys
import time
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np

from .data import validate_binary
from .methods import Method
from .options import copies
from .params import SBNParams
from .resources import check_memory
from .rundir import RunDir, read_metrics, read_state
from .runner import effective_batch_size, runner_for, steps_per_epoch

DEFAULT_BATCH_SIZE = 100
DEFAULT_CHECKPOINT_EVERY = 100
DIVERGED_MAGNITUDE = 1e6  # a parameter this large means the optimiser has blown up


class FitResult(NamedTuple):
    params: SBNParams
    metrics: list[dict]  # one record per checkpoint: step, epoch, seconds, objective, ...
    method: str
    backend: str


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite objective or exploding parameters."""


def check_budget(steps: int | None, seconds: float | None, epochs: float | None = None) -> None:
    if steps is None and seconds is None and epochs is None:
        raise ValueError("give a budget: a number of steps, epochs and/or seconds")
    if steps is not None and (isinstance(steps, bool) or int(steps) != steps or steps < 1):
        raise ValueError(f"the number of steps must be an integer >= 1, got {steps}")
    if epochs is not None and not (math.isfinite(epochs) and epochs > 0):
        raise ValueError(f"the number of epochs must be positive, got {epochs}")
    if seconds is not None and not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"the time budget must be a positive number of seconds, got {seconds}")


def step_budget(steps: int | None, epochs: float | None, num_data: int, batch_size: int) -> int | None:
    """The step cap: the smaller of ``steps`` and ``epochs`` in steps (``None``: no cap)."""
    caps = [int(steps)] if steps is not None else []
    if epochs is not None:
        caps.append(max(1, math.ceil(epochs * steps_per_epoch(num_data, effective_batch_size(num_data, batch_size)))))
    return min(caps) if caps else None


def fit(
    method: Method,
    params: SBNParams,
    train: np.ndarray,
    *,
    steps: int | None = None,
    seconds: float | None = None,
    epochs: float | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    checkpoint_every: int | None = DEFAULT_CHECKPOINT_EVERY,
    checkpoint_seconds: float | None = None,
    out: str | None = None,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = True,
    on_checkpoint: Callable[[SBNParams, dict], dict | None] | None = None,
    on_finish: Callable[[Any], None] | None = None,
    devices: int | None = None,
) -> FitResult:
    """Fit ``params`` to ``train`` with ``method`` (see the module's docstring for budgets).

    Every ``checkpoint_every`` steps (or, with ``checkpoint_seconds``, about every that many
    seconds of training) it records the mean ``info`` of the steps since the last record,
    adds whatever ``on_checkpoint(params, record)`` returns (a ``"stop": True`` in it ends
    training there: early stopping), and with ``out`` writes a whole checkpoint (:class:`~sbn_ppl.rundir.RunDir`). ``on_finish(runner)`` is called once at
    the end (``runner.bound(x)`` gives the method's own bound). Raises
    :class:`TrainingDiverged` (keeping the last finite checkpoint) when the objective or the
    parameters stop being finite or exceed ``DIVERGED_MAGNITUDE``.

    ``devices`` (NumPyro backend): split the data axis over this many JAX devices (``None``:
    every device; ``docs/multi_device.md``); the batch size must divide over them. The Pyro
    backend runs on one device. In a multi-process run only process 0 writes ``out``.
    """
    if not isinstance(method, Method):
        raise TypeError(f"fit takes a Method (see sbn_ppl.inference.get_method), got {type(method).__name__}")
    if steps is None and seconds is None and epochs is None:
        steps = 1000
    check_budget(steps, seconds, epochs)
    if checkpoint_every is not None and (int(checkpoint_every) != checkpoint_every or checkpoint_every < 1):
        raise ValueError(f"checkpoint_every must be an integer >= 1, got {checkpoint_every}")
    if checkpoint_seconds is not None and not checkpoint_seconds > 0:
        raise ValueError(f"checkpoint_seconds must be positive, got {checkpoint_seconds}")
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size}")
    train = validate_binary(train, width=params.architecture.visible_size, name="training data")
    opts = method.check_options(dict(options or {}))
    max_steps = step_budget(steps, epochs, len(train), batch_size)
    check_memory(_step_bytes(params, opts, effective_batch_size(len(train), batch_size)),
                 f"one step of {method.name} (batch {batch_size}, options {_plain(opts)})")
    header = {"method": method.name, "backend": method.backend, "seed": int(seed), "options": _plain(opts),
              "batch_size": effective_batch_size(len(train), batch_size), "train_size": len(train)}
    from .sharding import check_devices, is_writer

    check_devices(devices)
    rundir = RunDir(out, overwrite=overwrite, resume=resume) if out is not None and is_writer() else None
    try:
        start, metrics, elapsed, resume_state = 0, [], 0.0, None
        if out is not None and resume:  # every process reads the folder (shared), only process 0 writes it
            previous = read_metrics(out)
            if previous is not None:
                _check_resumable(out, previous, header)
                params = SBNParams.load(f"{out}/params.npz")
                start, metrics = int(previous["step"]), list(previous["curve"])
                elapsed = float(previous.get("seconds", 0.0))
                if (max_steps is not None and start >= max_steps) or (seconds is not None and elapsed >= seconds):
                    _say(progress, f"{out}: already at step {start} ({elapsed:.1f} s); nothing left of the budget")
                    return FitResult(params, metrics, method.name, method.backend)
                resume_state = read_state(out)
        return _train(method, params, train, opts, seed, batch_size, header, max_steps, seconds, checkpoint_every,
                      checkpoint_seconds, rundir, progress, on_checkpoint, on_finish, start, metrics, elapsed,
                      resume_state, devices)
    finally:
        if rundir is not None:
            rundir.close()


def _train(method, params, train, opts, seed, batch_size, header, max_steps, seconds, checkpoint_every,
           checkpoint_seconds, rundir, progress, on_checkpoint, on_finish, done, metrics, elapsed,
           resume_state=None, devices=None) -> FitResult:
    runner = runner_for(method, params, opts, train, seed, batch_size, devices)
    if done:
        exact = resume_state is not None and runner.load_state_arrays(resume_state)
        _say(progress and rundir is not None, f"{rundir.out if rundir else ''}: resuming at step {done}" + (
            " with the method's saved state (an exact continuation)" if exact else
            " from the saved parameters (this backend's optimiser and per-data-point state start afresh)"))
    per_epoch = steps_per_epoch(len(train), runner.batch_size)
    clock = _Clock(checkpoint_every, checkpoint_seconds, runner)
    last_good: SBNParams | None = params
    bar = _progress(max_steps, f"{method.name} ({method.backend})", progress, initial=done)
    try:
        while (max_steps is None or done < max_steps) and (seconds is None or elapsed < seconds):
            chunk = clock.next_chunk(max_steps - done if max_steps is not None else None,
                                     seconds - elapsed if seconds is not None else None)
            if chunk < 1:
                break
            t0 = time.perf_counter()
            info = runner.run(done, chunk)  # floats: waits for asynchronous (JAX) work
            dt = time.perf_counter() - t0
            elapsed += dt
            clock.timed(chunk, dt)
            done += chunk
            current = runner.params()
            _check_finite(info, current, done, last_good, rundir, header, metrics)
            last_good = current
            record = {"step": done, "epoch": done / per_epoch, "seconds": elapsed, **info}
            stop = False
            if on_checkpoint is not None:
                record.update(on_checkpoint(current, record) or {})
                stop = bool(record.pop("stop", False))
            metrics.append(record)
            if rundir is not None:
                rundir.write(current, {**header, "step": done, "seconds": elapsed, "finished": False,
                                       "curve": metrics}, runner.state_arrays())
            bar.update(chunk)
            bar.set_postfix(objective=f"{record['objective']:.3f}")
            if stop:
                _say(progress, f"{method.name} ({method.backend}): stopped early at step {done} (on_checkpoint asked)")
                break
    except KeyboardInterrupt:
        bar.close()
        if rundir is not None and metrics:
            _say(True, f"interrupted at step {done}; the checkpoint of step {metrics[-1]['step']} is saved in "
                       f"{rundir.out} (continue with --resume)")
        elif rundir is not None:
            _say(True, "interrupted before the first checkpoint: nothing was saved")
        raise
    bar.close()
    final = runner.params()
    if rundir is not None and metrics:
        rundir.write(final, {**header, "step": done, "seconds": elapsed, "finished": True, "curve": metrics},
                     runner.state_arrays())
    if on_finish is not None:
        on_finish(runner)
    return FitResult(final, metrics, method.name, method.backend)


class _Clock:
    """Chunk lengths. A pure step budget: ``checkpoint_every`` steps a chunk (one scan length).
    A time budget: a first one-step chunk (it pays for any compilation), a timed one-step
    chunk, then a fixed length, the power of two nearest to ``checkpoint_seconds`` (default:
    a tenth of the budget left) at the timed speed; no chunk is started that the running
    estimate of the step time says would overrun the budget."""

    def __init__(self, every: int | None, target: float | None, runner):
        self.every, self.target, self.runner = every, target, runner
        self.timed_chunks, self.step_time, self.fixed = 0, None, None
        self.adaptive = target is not None

    def next_chunk(self, steps_left: int | None, seconds_left: float | None) -> int:
        if seconds_left is None and not self.adaptive:  # a pure step budget: deterministic chunks
            length = self.every or steps_left
            if self.fixed is None:
                self.fixed = length
                self.runner.fix_length(length)
            return min(length, steps_left)
        if self.fixed is None:
            n = 1
        else:
            n = self.fixed
        if steps_left is not None:
            n = min(n, steps_left)
        if seconds_left is not None and self.step_time is not None:
            n = min(n, int(seconds_left / self.step_time))
        return n

    def timed(self, chunk: int, seconds: float) -> None:
        self.timed_chunks += 1
        if self.timed_chunks == 1:
            return  # compilation
        per_step = max(seconds / chunk, 1e-9)
        self.step_time = per_step if self.step_time is None else 0.5 * self.step_time + 0.5 * per_step
        if self.fixed is None:
            target = self.target if self.target is not None else 1.0
            n = 1 << max(0, round(math.log2(max(target / per_step, 1.0))))
            if self.every is not None:
                n = min(n, self.every)
            self.fixed = n
            self.runner.fix_length(n)


def _check_finite(info: dict, params: SBNParams, step: int, last_good, rundir, header, metrics) -> None:
    objective = info.get("objective", 0.0)
    bad_objective = not math.isfinite(objective)
    worst = max((float(np.max(np.abs(v))) for k, v in params.items() if k != "sizes" and v.size), default=0.0)
    if bad_objective or not math.isfinite(worst) or worst > DIVERGED_MAGNITUDE:
        kept = f"; the last finite checkpoint (step {metrics[-1]['step']}) is kept" if rundir is not None and metrics \
            else ""
        raise TrainingDiverged(f"training diverged at step {step} (objective {objective:.4g}, largest parameter "
                               f"{worst:.3g}); lower --lr{kept}")


def _check_resumable(out: str, previous: dict, header: dict) -> None:
    changed = [f"{k} was {previous.get(k)!r}, now {v!r}" for k, v in header.items() if previous.get(k) != v]
    if changed:
        raise ValueError(f"cannot resume {out!r} with other settings ({'; '.join(changed)})")


def _step_bytes(params: SBNParams, opts: dict, batch_size: int) -> float:
    """A rough floor on one step's working memory: the batch's layers for each particle or
    chain, float32, about eight copies (samples, activations, log-probabilities, gradients).

    The fixed-point mean field (the method with a ``bound_sweeps`` option) also works per edge:
    its pass makes ``e^{t w}`` and ``1 / d`` for both tilts and a couple of temporaries (6
    float32 an edge) for the data point in flight (it streams the batch a row at a time, so
    this does not grow with the batch), and holds per-edge arrays that do not scale with the
    batch: ``e^{w}``, the gradient's accumulator, the gradient, Adam's two moments, the
    update and the new weights (8 float32 an edge)."""
    arch = params.architecture
    total = float(batch_size) * copies(opts) * sum(arch.sizes) * 4.0 * 8
    if "bound_sweeps" in opts:
        total += 4.0 * arch.num_edges() * (6 + 8)
    return total


def _plain(opts: dict) -> dict:
    """Options as they go to JSON (an optimiser object is recorded by its type name)."""
    return {k: v if isinstance(v, (str, int, float, bool, type(None))) else type(v).__name__ for k, v in opts.items()}


def _say(enabled: bool, message: str) -> None:
    if enabled:
        print(message, file=sys.stderr, flush=True)


def _progress(total, desc, enabled, initial=0):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, disable=not enabled, leave=False, unit="step")
