"""The comparison harness: every method fitted on the same data, from the same start, for the
same budget, and scored by the same yardstick (DESIGN.md section 3).

:func:`compare` is the whole job. For every method it runs :func:`sbn_ppl.fitting.fit`
(the harness knows an algorithm only as a :class:`~sbn_ppl.methods.Method`) with

* the same data split, architecture and initial parameters: one ``SBNParams.init(arch,
  seed)``, guide keys included, with the visible biases at the logit of the training
  mean (Hinton 2010, "A practical guide to training RBMs", section 8.1) unless
  ``data_bias=False``;
* the same budget (``steps`` and/or training ``seconds``; scoring is not counted) and
  the same ``seed``: a method's random numbers depend on the seed and on the method
  only, never on which methods ran before it;
* the same yardstick: exact ``log p(x)`` by enumeration when the net has at most
  ``MAX_EXACT_HIDDEN`` hidden units, otherwise annealed importance sampling (guide-free),
  plus importance sampling with the method's own guide where it has one; the method's
  own bound; ``KL(q||p)`` of its guide when exact.

The test log-likelihood is recorded at ``checkpoints`` points during training (on the
first ``curve_points`` test points, the same for every method) and, at the end, on the
whole test set, with the training log-likelihood. With ``out``, each finished method's
record is saved at once (``results.json``, ``results.csv``, ``learning_curves.png``,
``<method>-<backend>/params.npz``): an interrupted run keeps what finished and
``resume=True`` continues it, skipping methods already done.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from . import report
from .architecture import Architecture
from .data import Dataset, load_dataset
from .evaluation import MAX_EXACT_HIDDEN, LogLikelihood, exact_kl, score
from .files import _jsonable
from .fitting import check_budget, fit
from .methods import BACKENDS, Method, backends_of, get_method, method_names
from .params import SBNParams

DEFAULT_HIDDEN = (12, 6)  # 64-12-6 on digits: 18 hidden units, so the test log-likelihood is exact
DEFAULT_SECONDS = 20.0  # training seconds per method when no budget is given (compilation included)
DEFAULT_CHECKPOINTS = 8
DEFAULT_CURVE_POINTS = 100
ESTIMATORS = ("auto", "exact", "ais", "is")


@dataclass(frozen=True)
class Yardstick:
    """How every method is scored: one estimator of ``log p(x)``, fixed settings, one seed.

    ``estimator`` is ``"exact"`` (enumeration), ``"ais"`` (annealed importance sampling,
    guide-free) or ``"is"`` (importance sampling with the method's own guide, ``K =
    num_particles``); ``ais_options`` go to ``ais_log_likelihood``.
    """

    estimator: str
    num_particles: int = 1000
    ais_options: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0

    @classmethod
    def resolve(cls, estimator: str, arch: Architecture, num_particles: int = 1000,
                ais_temperatures: int | None = None, ais_chains: int | None = None, seed: int = 0) -> "Yardstick":
        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {estimator!r}; expected one of {', '.join(ESTIMATORS)}")
        exact_ok = arch.num_hidden <= MAX_EXACT_HIDDEN
        if estimator == "auto":
            estimator = "exact" if exact_ok else "ais"
        if estimator == "exact" and not exact_ok:
            raise ValueError(f"exact scoring needs at most {MAX_EXACT_HIDDEN} hidden units; architecture {arch} "
                             f"has {arch.num_hidden} (use estimator 'ais' or 'is')")
        if estimator == "ais" and not _ais_installed():
            raise ValueError("AIS scoring needs sbn_ppl.inference.ais, which is not installed; "
                             f"use estimator 'is' or at most {MAX_EXACT_HIDDEN} hidden units")
        if int(num_particles) != num_particles or num_particles < 1:
            raise ValueError(f"the number of importance samples must be a positive integer, got {num_particles}")
        for name, value in (("temperatures", ais_temperatures), ("chains", ais_chains)):
            if value is not None and (int(value) != value or value < 1):
                raise ValueError(f"the number of AIS {name} must be a positive integer, got {value}")
        ais = {k: int(v) for k, v in (("num_temperatures", ais_temperatures), ("num_chains", ais_chains))
               if v is not None}
        return cls(estimator, int(num_particles), ais, seed)

    def log_likelihood(self, params: SBNParams, x: np.ndarray, guide: str | None,
                       estimator: str | None = None) -> LogLikelihood | None:
        """``log p(x_n)`` per data point; ``None`` for importance sampling without a guide."""
        estimator = estimator or self.estimator
        with _one_blas_thread():
            if estimator == "exact":
                return score(params, x, "exact")
            if estimator == "ais":
                return score(params, x, "ais", seed=self.seed, **self.ais_options)
            if guide is None or not params.has_guide(guide):
                return None
            return score(params, x, "is", guide=guide, num_particles=self.num_particles, seed=self.seed)


def compare(
    data: str | Dataset = "digits",
    arch: str | Architecture | None = None,
    *,
    connectivity: str = "layered",
    methods: Sequence[str | Method] | str | None = None,
    backend: str | None = None,
    steps: int | None = None,
    seconds: float | None = None,
    seed: int = 0,
    out: str | None = None,
    resume: bool = False,
    checkpoints: int = DEFAULT_CHECKPOINTS,
    curve_points: int | None = DEFAULT_CURVE_POINTS,
    train_points: int | None = None,
    estimator: str = "auto",
    num_particles: int = 1000,
    ais_temperatures: int | None = None,
    ais_chains: int | None = None,
    options: Mapping[str, Any] | None = None,
    data_bias: bool = True,
    progress: bool = True,
) -> list[dict]:
    """Fit every method on the same data and score them on the same yardstick.

    :param data: ``"digits"``, ``"synthetic:<arch>:<seed>"``, a data file, or a :class:`Dataset`.
    :param arch: bottom-up widths ``"D-H1-..."``; default: a synthetic set's teacher
        architecture, else ``D-12-6``.
    :param methods: method names (``"rws"``, or ``"rws:pyro"`` for one backend), a
        comma-separated string, or :class:`Method` objects; default: every installed method.
    :param backend: ``None`` (each method's default backend: NumPyro where it exists),
        ``"numpyro"``, ``"pyro"`` (the methods that have it) or ``"all"`` (every backend).
    :param steps, seconds: the budget of every method (training steps and/or training
        seconds, whichever comes first); default ``DEFAULT_SECONDS`` seconds. Only a pure
        step budget gives records that repeat exactly.
    :param seed: initial parameters, every method's randomness, and the scoring seed.
    :param out: a folder for ``results.json``/``.csv``, ``learning_curves.png`` and each
        method's ``<method>-<backend>/params.npz``; ``None`` writes nothing.
    :param resume: keep the finished records found in ``out`` (same settings) and run the rest.
    :param checkpoints: learning-curve points per method (scored on the first ``curve_points``
        test points; ``None``: all of them).
    :param train_points: score the training log-likelihood on the first N training points
        (default: all of them when exact, else as many as there are test points).
    :param estimator: ``"auto"`` (exact when the net has at most 20 hidden units, else AIS),
        ``"exact"``, ``"ais"`` or ``"is"``; ``num_particles`` is K for importance sampling
        with a method's guide, ``ais_temperatures``/``ais_chains`` set AIS.
    :param options: method options: ``{"lr": 0.01}`` goes to every method that takes
        ``lr``; ``{"rws": {"k": 10}}`` (or ``"rws:pyro"``) to one method only.
    :returns: one record (a dict) per method, in the order run; see ``report.CSV_FIELDS``,
        plus ``options`` and ``curve`` (one dict per checkpoint).
    """
    dataset = data if isinstance(data, Dataset) else load_dataset(data)
    arch = _architecture(arch, connectivity, dataset)
    if steps is None and seconds is None:
        seconds = DEFAULT_SECONDS
    check_budget(steps, seconds)
    _check_count("checkpoints", checkpoints)
    _check_count("curve_points", curve_points, none_ok=True)
    _check_count("train_points", train_points, none_ok=True)
    yardstick = Yardstick.resolve(estimator, arch, num_particles, ais_temperatures, ais_chains, seed)
    planned = plan(methods, backend)
    chosen = method_options(planned, options)
    if train_points is None and yardstick.estimator != "exact":
        train_points = len(dataset.test)  # sampling estimators on every training point: minutes a method
    curve_x = dataset.test[:curve_points] if curve_points else dataset.test
    train_x = dataset.train[:train_points] if train_points else dataset.train
    config = _normalised({
        "data": dataset.name, "arch": "-".join(map(str, arch.sizes)), "connectivity": arch.connectivity,
        "train_size": len(dataset.train), "test_size": len(dataset.test), "seed": seed, "steps": steps,
        "seconds": seconds, "checkpoints": checkpoints, "curve_points": curve_points,
        "curve_points_used": len(curve_x), "train_points_used": len(train_x), "estimator": yardstick.estimator,
        "num_particles": yardstick.num_particles, "ais_options": dict(yardstick.ais_options),
        "data_bias": data_bias,
    })
    previous = _previous_records(out, config) if resume and out else {}
    params0 = initial_params(arch, dataset.train, seed, data_bias)
    budget = _Budget(steps, seconds, checkpoints)
    done: dict[tuple[str, str], dict] = {}
    try:
        for i, m in enumerate(planned):
            key = (m.name, m.backend)
            label = f"[{i + 1}/{len(planned)}] {m.name} ({m.backend})"
            old = previous.get(key)
            if old is not None and old.get("options") == chosen[key]:
                done[key] = old
                _say(progress, f"{label}: finished in an earlier run, kept")
                continue
            method_dir = os.path.join(out, f"{m.name}-{m.backend}") if out else None
            done[key] = _run(m, params0, dataset, train_x, curve_x, chosen[key], budget, yardstick, seed,
                             method_dir, progress)
            _say(progress, f"{label}: {_summary(done[key])}")
            if out:
                kept = [r for k, r in previous.items() if k not in done]
                report.write_results(out, config, list(done.values()) + kept)
    except KeyboardInterrupt:
        if out:
            _say(True, f"interrupted: {len(done)} of {len(planned)} methods finished and saved in {out}; "
                       "run again with resume=True (sbn-ppl compare --resume) to continue")
        raise
    return [done[(m.name, m.backend)] for m in planned]


def plan(methods: Sequence[str | Method] | str | None = None, backend: str | None = None) -> list[Method]:
    """The :class:`Method` objects a comparison runs, in order (see :func:`compare`)."""
    if backend not in (None, "all") + BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS + ('all',))}")
    every = methods is None or methods == "all"
    if every:
        specs: list = method_names()
        if not specs:
            raise ValueError("no inference method is installed (sbn_ppl.inference is empty)")
    else:
        specs = [s.strip() for s in methods.split(",") if s.strip()] if isinstance(methods, str) else list(methods)
        if not specs:
            raise ValueError("no methods given")
    planned: list[Method] = []
    for spec in specs:
        if isinstance(spec, Method):
            planned.append(spec)
            continue
        name, _, pinned = str(spec).partition(":")
        if name not in method_names():
            raise ValueError(f"unknown method {name!r}; expected one of {', '.join(method_names()) or '(none installed)'}")
        available = backends_of(name)
        if pinned or backend is None:
            chosen = [pinned or None]
        elif backend == "all":
            chosen = available
        elif backend in available:
            chosen = [backend]
        elif every:
            chosen = []  # "every method that has this backend"
        else:
            raise ValueError(f"method {name!r} has no {backend!r} backend; available: {', '.join(available)}")
        planned += [get_method(name, b) for b in chosen]
    if not planned:
        raise ValueError(f"no installed method has a {backend!r} backend")
    seen: set = set()
    for m in planned:
        if (m.name, m.backend) in seen:
            raise ValueError(f"method {m.name!r} ({m.backend}) is listed twice")
        seen.add((m.name, m.backend))
    return planned


def method_options(planned: Sequence[Method], options: Mapping[str, Any] | None) -> dict[tuple[str, str], dict]:
    """Each method's full options: its defaults, then the shared options it takes, then its own."""
    shared = {k: v for k, v in (options or {}).items() if not isinstance(v, Mapping)}
    own = {k: dict(v) for k, v in (options or {}).items() if isinstance(v, Mapping)}
    labels = {m.name for m in planned} | {f"{m.name}:{m.backend}" for m in planned}
    stray = sorted(set(own) - labels)
    if stray:
        raise ValueError(f"options given for {', '.join(map(repr, stray))}, which is not among the methods compared")
    unused = sorted(k for k in shared if not any(k in m.defaults for m in planned))
    if unused:
        raise ValueError(f"no method compared takes option(s) {', '.join(unused)}")
    chosen = {}
    for m in planned:
        opts = {k: v for k, v in shared.items() if k in m.defaults}
        opts.update(own.get(m.name, {}))
        opts.update(own.get(f"{m.name}:{m.backend}", {}))
        chosen[(m.name, m.backend)] = _normalised(m.check_options(opts))
    return chosen


def initial_params(arch: Architecture, train: np.ndarray, seed: int, data_bias: bool = True) -> SBNParams:
    """The one starting point of every method: ``SBNParams.init(arch, seed)`` with both guides'
    keys, and the visible biases at ``logit`` of the add-one smoothed training mean."""
    params = SBNParams.init(arch, seed=seed, connectivity=arch.connectivity)
    if not data_bias:
        return params
    mean = (np.sum(train, axis=0, dtype=np.float64) + 1.0) / (len(train) + 2.0)
    return params.replace(b_0=np.log(mean) - np.log1p(-mean))  # logit of the mean: p(x_d = 1) matches the data


# -- one method -------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Budget:
    steps: int | None
    seconds: float | None
    checkpoints: int

    def fit_arguments(self) -> dict:
        """A pure step budget checkpoints every ``steps / checkpoints`` steps (deterministic);
        a time budget every ``seconds / checkpoints`` seconds of training."""
        every = math.ceil(self.steps / self.checkpoints) if self.steps else 1 << 62
        timed = self.seconds / self.checkpoints if self.seconds is not None else None
        return {"steps": self.steps, "seconds": self.seconds, "checkpoint_every": max(1, every),
                "checkpoint_seconds": timed}

    def scores_at(self, record: dict, last_scored: float) -> bool:
        """Whether a checkpoint gets a test score: every one under a pure step budget; under a
        time budget the first past each ``seconds / checkpoints`` mark, and the last one (so
        the scoring cost stays ``checkpoints + 1`` evaluations whatever the chunking)."""
        if self.seconds is None or record["seconds"] >= self.seconds:
            return True
        if self.steps is not None and record["step"] >= self.steps:
            return True
        spacing = self.seconds / self.checkpoints
        return math.floor(record["seconds"] / spacing) > math.floor(last_scored / spacing)


def _run(m: Method, params0: SBNParams, dataset: Dataset, train_x, curve_x, opts: dict, budget: _Budget,
         yardstick: Yardstick, seed: int, method_dir: str | None, progress: bool) -> dict:
    """Fit one method and score it; a failure is recorded (with its message), not raised."""
    record: dict[str, Any] = {"method": m.name, "backend": m.backend, "guide": m.guide, "options": opts}
    finished: dict[str, Any] = {}

    scored = [0.0]  # training seconds at the last scored checkpoint

    def on_checkpoint(params, record):
        if record is not None and not budget.scores_at(record, scored[0]):
            return {}
        scored[0] = record["seconds"] if record is not None else 0.0
        ll = yardstick.log_likelihood(params, curve_x, m.guide)
        return {} if ll is None else {"test_log_likelihood": ll.mean, "test_stderr": ll.mean_stderr}

    def on_finish(state):
        if m.bound is not None:
            with _one_blas_thread():
                value = m.bound(state, dataset.test)
            if value is not None:
                finished["bound"] = float(np.mean(np.asarray(value, dtype=np.float64)))

    try:
        start = {"step": 0, "seconds": 0.0, **on_checkpoint(params0, None)}  # the common starting point
        with _own_pyro_param_store():
            result = fit(m, params0, dataset.train, seed=seed, options=opts, out=method_dir, progress=progress,
                         on_checkpoint=on_checkpoint, on_finish=on_finish, **budget.fit_arguments())
        last = result.metrics[-1]
        record.update(steps=int(last["step"]), seconds=last["seconds"],
                      steps_per_second=last["step"] / last["seconds"] if last["seconds"] > 0 else None,
                      objective=last.get("objective"))
        record.update(_final_scores(m, result.params, dataset.test, train_x, yardstick))
        record.update(bound=finished.get("bound"),
                      params=os.path.join(method_dir, "params.npz") if method_dir else None,
                      curve=[start] + result.metrics, error=None)
    except Exception as e:  # noqa: BLE001 - one method failing must not lose the others' results
        record.update({k: None for k in report.CSV_FIELDS if k not in record}, curve=[],
                      error=f"{type(e).__name__}: {e}".splitlines()[0])
    return _normalised(record)


def _final_scores(m: Method, params: SBNParams, test, train, yardstick: Yardstick) -> dict:
    test_ll = yardstick.log_likelihood(params, test, m.guide)
    train_ll = yardstick.log_likelihood(params, train, m.guide)
    scores = {
        "test_log_likelihood": None if test_ll is None else test_ll.mean,
        "test_estimator": yardstick.estimator if test_ll is None else test_ll.estimator,
        "test_stderr": None if test_ll is None else test_ll.mean_stderr,
        "test_is_log_likelihood": None, "test_is_stderr": None,
        "train_log_likelihood": None if train_ll is None else train_ll.mean,
        "kl_q_p": None,
    }
    has_guide = m.guide is not None and params.has_guide(m.guide)
    if has_guide and yardstick.estimator == "ais":
        is_ll = yardstick.log_likelihood(params, test, m.guide, estimator="is")
        scores.update(test_is_log_likelihood=is_ll.mean, test_is_stderr=is_ll.mean_stderr)
    if has_guide and yardstick.estimator == "exact":
        with _one_blas_thread():
            scores["kl_q_p"] = float(np.mean(exact_kl(params, m.guide, test).q_p))
    return scores


# -- resuming ----------------------------------------------------------------------------------
def _previous_records(out: str, config: dict) -> dict[tuple[str, str], dict]:
    """The finished records of an earlier run in ``out`` with the same settings."""
    path = os.path.join(out, "results.json")
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            saved = json.load(f)
        old_config, records = saved["config"], saved["records"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"cannot resume from {path!r}: {e}") from None
    changed = sorted(k for k in set(config) | set(old_config) if config.get(k) != old_config.get(k))
    if changed:
        what = ", ".join(f"{k} was {old_config.get(k)!r}, now {config.get(k)!r}" for k in changed)
        raise ValueError(f"cannot resume {out!r} with other settings ({what}); use another output folder")
    return {(r["method"], r["backend"]): r for r in records if not r.get("error")}


# -- small helpers -----------------------------------------------------------------------------
def _architecture(arch, connectivity: str, dataset: Dataset) -> Architecture:
    if arch is None:
        if dataset.teacher is not None:
            return dataset.teacher.architecture
        return Architecture((dataset.visible_size,) + DEFAULT_HIDDEN, connectivity)
    arch = Architecture.parse(arch, connectivity)
    if arch.visible_size != dataset.visible_size:
        raise ValueError(f"architecture {arch} has {arch.visible_size} visible units but data "
                         f"{dataset.name!r} has {dataset.visible_size}")
    return arch


def _check_count(name: str, value, none_ok: bool = False) -> None:
    if value is None and none_ok:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _normalised(obj):
    """As it reads back from JSON (tuples become lists, NaN and infinities become None)."""
    text = json.dumps(obj, default=_jsonable)
    return json.loads(text, parse_constant=lambda _: None)


def _summary(r: dict) -> str:
    if r.get("error"):
        return f"failed: {r['error']}"
    ll = r["test_log_likelihood"]
    shown = "–" if ll is None else f"{ll:.3f}"
    return f"{r['steps']} steps in {r['seconds']:.1f} s; test log p(x) = {shown} ({r['test_estimator']})"


def _say(enabled: bool, message: str) -> None:
    if enabled:
        print(message, file=sys.stderr, flush=True)


@contextlib.contextmanager
def _own_pyro_param_store():
    """Pyro's parameter store is global: each method starts from an empty one (so that none
    starts from another's values), and the caller's parameters are put back afterwards."""
    pyro = sys.modules.get("pyro")
    saved = pyro.get_param_store().get_state() if pyro is not None else None
    if pyro is not None:
        pyro.clear_param_store()
    try:
        yield
    finally:
        pyro = sys.modules.get("pyro")  # perhaps imported by the method
        if pyro is not None:
            pyro.clear_param_store()
            if saved is not None:
                pyro.get_param_store().set_state(saved)


def _one_blas_thread():
    """Scoring makes many small matrix products, which multithreaded OpenBLAS slows down on a
    busy CPU (measured on a shared 2-core CPU, 64-12-6: exact log p(x) of the 1,438 digits
    training images took 30-38 s with OpenBLAS's threads, 5-6 s with one)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings threadpoolctl
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def _ais_installed() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("sbn_ppl.inference.ais") is not None
    except ModuleNotFoundError:
        return False
