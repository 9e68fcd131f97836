"""The fitting driver: one :class:`~sbn_ppl.base.methods.Method` through its backend's runner, for
a budget, with a progress bar, a learning curve, divergence checks and whole checkpoints.

``fit(method, params, train, budget=Budget(...), checkpointing=Checkpointing(...), ...)``.

Budgets (:class:`Budget`): ``steps``, ``epochs`` (``epochs * (N // batch_size)`` steps) and ``seconds`` of
training time (JIT compilation counts, scoring does not); training stops at whichever
comes first. With only ``seconds`` there is no step cap. A time budget is met to within
one step: the driver times the steps and never starts a chunk that its estimate says
would overrun.
"""
from __future__ import annotations

import contextlib
import gc
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, NamedTuple

import numpy as np

from sbn_ppl.base import schedules
from sbn_ppl.base.arrays import validate_binary
from sbn_ppl.base.methods import Method
from sbn_ppl.base.options import copies
from sbn_ppl.base.params import SBNParams
from sbn_ppl.base.resources import check_memory
from sbn_ppl.engine.rundir import RunDir, check_resumable, code_version, read_checkpoint
from sbn_ppl.engine.runner import effective_batch_size, runner_for, steps_per_epoch

DEFAULT_BATCH_SIZE = 100
DEFAULT_STEPS = 1000  # the budget when none is given
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


@dataclass(frozen=True)
class Budget:
    """How long to train: ``steps``, ``epochs`` (``epochs * (N // batch_size)`` steps) and/or
    ``seconds`` of training time (JIT compilation counts, scoring does not); training stops at
    whichever comes first. With only ``seconds`` there is no step cap; with nothing,
    ``DEFAULT_STEPS`` steps."""

    steps: int | None = None
    seconds: float | None = None
    epochs: float | None = None

    def checked(self) -> "Budget":
        """This budget (``DEFAULT_STEPS`` steps if it is empty), each part checked."""
        budget = self if self != Budget() else Budget(steps=DEFAULT_STEPS)
        check_budget(budget.steps, budget.seconds, budget.epochs)
        return budget

    def step_cap(self, num_data: int, batch_size: int) -> int | None:
        """The step cap on ``num_data`` training points in batches of ``batch_size`` (``None``: none)."""
        return step_budget(self.steps, self.epochs, num_data, batch_size)


@dataclass(frozen=True)
class Checkpointing:
    """When and where a run records itself.

    :param every: steps between checkpoints (``None``: only by ``seconds``, or once at the end).
    :param seconds: about this many seconds of training between checkpoints (a time budget's chunks).
    :param out: the run folder (:class:`~sbn_ppl.engine.rundir.RunDir`); ``None``: nothing is written.
    :param overwrite: replace the run ``out`` holds.
    :param resume: continue the run ``out`` holds (its manifest must match this run's).
    :param on_checkpoint: ``on_checkpoint(params, record) -> dict | None``, merged into the
        checkpoint's record; ``"stop": True`` in it ends training there (early stopping).
    :param on_start: ``on_start(runner)``, called once before the first step (after a resumed
        state is loaded); the runner's ``state`` and ``kernel`` are then the method's current
        ones at every ``on_checkpoint`` (the gradient-variance diagnostic draws from them).
    """

    every: int | None = DEFAULT_CHECKPOINT_EVERY
    seconds: float | None = None
    out: str | os.PathLike | None = None
    overwrite: bool = False
    resume: bool = False
    on_checkpoint: Callable[[SBNParams, dict], dict | None] | None = None
    on_start: Callable[[Any], None] | None = None

    def check(self) -> None:
        if self.every is not None and (isinstance(self.every, bool) or int(self.every) != self.every or self.every < 1):
            raise ValueError(f"checkpoint_every must be an integer >= 1, got {self.every}")
        if self.seconds is not None and not self.seconds > 0:
            raise ValueError(f"checkpoint_seconds must be positive, got {self.seconds}")


_LOOSE = ("steps", "seconds", "epochs", "checkpoint_every", "checkpoint_seconds", "out", "overwrite", "resume",
          "on_checkpoint")


def fit(
    method: Method,
    params: SBNParams,
    train: np.ndarray,
    *,
    budget: Budget | None = None,
    checkpointing: Checkpointing | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    progress: bool = True,
    on_finish: Callable[[Any], None] | None = None,
    devices: int | None = None,
    data: str | None = None,
    **loose,
) -> FitResult:
    """Fit ``params`` to ``train`` with ``method`` for ``budget`` (:class:`Budget`; default
    ``DEFAULT_STEPS`` steps).

    At each checkpoint (:class:`Checkpointing`: every ``every`` steps, or about every
    ``seconds`` of training) it records the mean ``info`` of the steps since the last record,
    adds what ``on_checkpoint(params, record)`` returns, and with ``out`` writes a whole
    checkpoint and, first, the folder's manifest (:mod:`sbn_ppl.engine.rundir`: the settings,
    ``data`` (the training data's name) with its content hash, the architecture, the code).
    ``on_finish(runner)`` is called once at the end (``runner.bound(x)`` gives the method's own
    bound). Raises :class:`TrainingDiverged` (keeping the last finite checkpoint) when the
    objective or the parameters stop being finite or exceed ``DIVERGED_MAGNITUDE``.

    ``devices`` (NumPyro backend): split the data axis over this many JAX devices (``None``:
    every device; ``docs/multi_device.md``); the batch size must divide over them. The Pyro
    backend runs on one device. In a multi-process run only process 0 writes ``out``.
    """
    if loose:
        given = ", ".join(sorted(loose))
        hint = " (budget=Budget(steps=..., seconds=..., epochs=...), checkpointing=Checkpointing(every=..., " \
               "out=..., resume=...))" if set(loose) <= set(_LOOSE) else ""
        raise TypeError(f"fit() got unexpected keyword argument(s) {given}{hint}")
    if not isinstance(method, Method):
        raise TypeError(f"fit takes a Method (see sbn_ppl.inference.get_method), got {type(method).__name__}")
    budget = (budget or Budget()).checked()
    ckpt = checkpointing or Checkpointing()
    ckpt.check()
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size}")
    check_seed(seed)
    train = validate_binary(train, width=params.architecture.visible_size, name="training data")
    opts = method.check_options(dict(options or {}))
    max_steps = budget.step_cap(len(train), batch_size)
    check_memory(_step_bytes(params, opts, effective_batch_size(len(train), batch_size)),
                 f"one step of {method.name} (batch {batch_size}, options {_plain(opts)})")
    header = {"method": method.name, "backend": method.backend, "seed": int(seed), "options": _plain(opts),
              "batch_size": effective_batch_size(len(train), batch_size), "train_size": len(train)}
    from sbn_ppl.engine.sharding import check_devices, device_list, is_writer

    check_devices(devices)
    if devices is not None and devices > 1 and method.backend == "numpyro":
        device_list(devices)  # more devices than there are: refused now, not at the first step
    out = None if ckpt.out is None else os.fspath(ckpt.out)
    manifest = fit_manifest(header, params, train, data)
    with interrupts_noticed():
        rundir = RunDir(out, overwrite=ckpt.overwrite, resume=ckpt.resume, manifest=manifest) \
            if out is not None and is_writer() else None
        try:
            run = _Run(method, train, opts, int(seed), batch_size, header, max_steps, budget.seconds, ckpt, rundir,
                       progress, on_finish, devices)
            if out is not None and ckpt.resume:  # every process reads the folder (shared), only process 0 writes it
                if rundir is None:
                    check_resumable(out, manifest)
                found = read_checkpoint(out)
                if found is not None:
                    return _resume(run, params, found)
            return _train(run, params, _Progress())
        finally:
            if rundir is not None:
                rundir.close()


def fit_manifest(header: dict, params: SBNParams, train: np.ndarray, data: str | None) -> dict:
    """What a ``fit`` run folder holds (:mod:`sbn_ppl.engine.rundir`): the settings, the training
    data's name and content hash, the architecture and connectivity, the code."""
    from sbn_ppl.base.datasets import content_sha256

    arch = params.architecture
    return {"kind": "fit", "settings": dict(header),
            "data": {"name": data, "sha256": {"train": content_sha256(train)}},
            "architecture": {"sizes": list(arch.sizes), "connectivity": arch.connectivity},
            "code": code_version()}


def check_seed(seed, name: str = "seed") -> None:
    """A seed is a non-negative integer (NumPy's generators refuse others, at the first step)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {seed!r}")


class _Run(NamedTuple):
    """One run's fixed parts: what ``_train`` needs besides the state it advances."""

    method: Method
    train: np.ndarray
    opts: dict
    seed: int
    batch_size: int
    header: dict
    max_steps: int | None
    seconds: float | None
    ckpt: Checkpointing
    rundir: RunDir | None
    progress: bool
    on_finish: Callable[[Any], None] | None
    devices: int | None


class _Progress(NamedTuple):
    """Where training stands: steps done, the learning curve so far, training seconds, and the
    method's saved state arrays (a resume), if any."""

    done: int = 0
    metrics: list = []
    elapsed: float = 0.0
    state: dict | None = None


def _resume(run: _Run, params: SBNParams, found) -> FitResult:
    """Continue from the checkpoint ``found`` (its files already checked)."""
    if found.params.architecture.sizes != params.architecture.sizes:
        raise ValueError(f"{found.folder}/params.npz is for architecture {found.params.architecture}, not "
                         f"{params.architecture}; start afresh with --overwrite")
    start, metrics = found.step, list(found.metrics["curve"])
    elapsed = float(found.metrics.get("seconds", 0.0))
    if (run.max_steps is not None and start >= run.max_steps) or (run.seconds is not None and elapsed >= run.seconds):
        _say(run.progress, f"{run.ckpt.out}: already at step {start} ({elapsed:.1f} s); nothing left of the budget")
        return FitResult(found.params, metrics, run.method.name, run.method.backend)
    return _train(run, found.params, _Progress(start, metrics, elapsed, found.state))


def _train(run: _Run, params: SBNParams, at: _Progress) -> FitResult:
    method, rundir, header = run.method, run.rundir, run.header
    done, metrics, elapsed = at.done, list(at.metrics), at.elapsed
    runner = runner_for(method, params, run.opts, run.train, run.seed, run.batch_size, run.devices)
    if done:
        exact = at.state is not None and runner.load_state_arrays(at.state)
        _say(run.progress and rundir is not None, f"{rundir.out if rundir else ''}: resuming at step {done}" + (
            " with the method's saved state (an exact continuation)" if exact else
            " from the saved parameters (this backend's optimiser and per-data-point state start afresh)"))
    if run.ckpt.on_start is not None:
        run.ckpt.on_start(runner)
    per_epoch = steps_per_epoch(len(run.train), runner.batch_size)
    clock = _Clock(run.ckpt.every, run.ckpt.seconds, runner)
    last_good: SBNParams | None = params
    max_steps, seconds, on_checkpoint = run.max_steps, run.seconds, run.ckpt.on_checkpoint
    schedule, reached = run.opts.get("lr_schedule"), 0.0
    bar = _progress(max_steps, f"{method.name} ({method.backend})", run.progress, initial=done)
    try:
        while (max_steps is None or done < max_steps) and (seconds is None or elapsed < seconds):
            check_interrupted()
            chunk = clock.next_chunk(max_steps - done if max_steps is not None else None,
                                     seconds - elapsed if seconds is not None else None)
            if chunk < 1:
                break
            f0, rate = budget_progress(done, elapsed, max_steps, seconds, clock.step_time)
            progress = (max(f0, reached), rate)  # a time budget's estimate never winds the rate back up
            reached = progress[0] + chunk * rate
            t0 = time.perf_counter()
            info = runner.run(done, chunk, progress)  # floats: waits for asynchronous (JAX) work
            dt = time.perf_counter() - t0
            check_interrupted()  # a Ctrl-C that a library swallowed (during compilation) is not lost
            elapsed += dt
            clock.timed(chunk, dt)
            done += chunk
            current = runner.params()
            _check_finite(info, current, done, last_good, rundir, header, metrics)
            last_good = current
            record = {"step": done, "epoch": done / per_epoch, "seconds": elapsed, **info}
            if not schedules.is_constant(schedule):  # the rate's multiplier at the chunk's last step
                record["lr_multiplier"] = schedules.multiplier(schedule, progress[0] + (chunk - 1) * progress[1])
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
                _say(run.progress, f"{method.name} ({method.backend}): stopped early at step {done} "
                                   "(on_checkpoint asked)")
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
    if run.on_finish is not None:
        run.on_finish(runner)
    return FitResult(final, metrics, method.name, method.backend)


# -- Ctrl-C ------------------------------------------------------------------------------------
_INTERRUPTED = [False]


def _on_sigint(signum, frame) -> None:
    _INTERRUPTED[0] = True
    if _in_gc_callback(frame):  # raised there, Python prints it as an "ignored" exception with its
        return                  # traceback and goes on: noted only, check_interrupted raises it next
    raise KeyboardInterrupt


def _in_gc_callback(frame) -> bool:
    """Whether ``frame`` runs inside a garbage-collection callback (JAX registers one that
    runs while XLA compiles)."""
    codes = {getattr(cb, "__code__", None) for cb in gc.callbacks} - {None}
    while frame is not None and codes:
        if frame.f_code in codes:
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def interrupts_noticed():
    """Within it, a Ctrl-C is never lost: SIGINT sets a flag as well as raising
    ``KeyboardInterrupt``, and :func:`check_interrupted` raises it again where a library
    swallowed it (JAX's garbage-collection callback swallows one that lands while XLA
    compiles, and the run went on to the end). One that lands inside a garbage-collection
    callback only sets the flag: raised there, Python would print it with a traceback and
    ignore it. Nested uses share the outer one's handler; off
    the main thread, or under a handler of the caller's own, it does nothing."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    _INTERRUPTED[0] = False
    signal.signal(signal.SIGINT, _on_sigint)
    try:
        yield
        check_interrupted()
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def check_interrupted() -> None:
    """Raise ``KeyboardInterrupt`` if a Ctrl-C arrived under :func:`interrupts_noticed`."""
    if _INTERRUPTED[0]:
        raise KeyboardInterrupt


def budget_progress(done: int, elapsed: float, max_steps: int | None, seconds: float | None,
                    step_time: float | None) -> tuple[float, float]:
    """``(f0, rate)``: the fraction of the budget spent at step ``done`` and its growth per step.
    A step cap: ``done / max_steps`` and ``1 / max_steps`` (exact, the same on every machine). A
    time budget: ``elapsed / seconds`` and the measured step time over ``seconds`` (0 until a
    chunk has been timed). Both: the one further along, since training stops at whichever comes first."""
    by_steps = (done / max_steps, 1.0 / max_steps) if max_steps else (0.0, 0.0)
    by_time = (elapsed / seconds, (step_time or 0.0) / seconds) if seconds else (0.0, 0.0)
    return max(by_steps, by_time)


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
