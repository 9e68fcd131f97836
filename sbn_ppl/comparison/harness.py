"""The comparison: every method fitted on the same data, from the same start, on the same
batches, for the same budget, and scored by the same yardstick.

:func:`compare` is the whole job. For every seed and every method it runs
:func:`sbn_ppl.engine.fitting.fit` (the harness knows an algorithm only as a
:class:`~sbn_ppl.base.methods.Method`) with

* the same data split, architecture and initial parameters: one ``SBNParams.init(arch,
  seed)``, guide keys included, with the visible biases at the logit of the training
  mean (Hinton 2010, "A practical guide to training RBMs", section 8.1) unless
  ``data_bias=False``;
* the same batches: the runner's batch sequence depends only on the seed, the training
  set and the batch size, so every method of one seed sees the same batches in the same order;
* the same budget (``steps``, ``epochs`` and/or training ``seconds``; scoring is not counted);
* the same yardstick (:class:`Yardstick`): exact ``log p(x)`` when the net has at most
  ``MAX_EXACT_HIDDEN`` hidden units, otherwise AIS (guide-free) plus importance sampling
  with the method's own guide; the method's own bound; ``KL(q||p)`` when exact.

The learning curve is scored at ``checkpoints`` points on a fixed seeded random subset of
the validation split (else the test split), the same points for every method and seed,
starting from the shared initial state (step 0). With ``out``, each finished record is
saved at once (``results.json``, ``results.csv``, ``learning_curves.png``,
``<method>-<backend>[-seed<s>]/params.npz``): an interrupted run keeps what finished, and
``resume=True`` continues it with the settings saved in ``results.json``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

import sbn_ppl.comparison.reporting as reporting
from sbn_ppl.base.architecture import Architecture
from sbn_ppl.comparison.config import DEFAULT_HIDDEN, DEFAULT_SECONDS, ESTIMATORS, CompareConfig
from sbn_ppl.base.data import load_dataset
from sbn_ppl.base.arrays import Dataset, random_subset
from sbn_ppl.yardstick.exact import MAX_EXACT_HIDDEN, exact_kl
from sbn_ppl.base.files import _jsonable
from sbn_ppl.engine.fitting import check_budget, fit, step_budget
from sbn_ppl.inference import backends_of, get_method, method_names
from sbn_ppl.base.methods import BACKENDS, Method
from sbn_ppl.base.params import SBNParams
from sbn_ppl.yardstick import LogLikelihood, posthoc_guide, score

CURVE_SUBSET_SEED = 0  # the learning-curve points are one fixed subset, whatever the run's seed

__all__ = ["Yardstick", "compare", "initial_params", "method_options", "plan"]


@dataclass(frozen=True)
class Yardstick:
    """How every method is scored: one estimator of ``log p(x)``, fixed settings, one seed.

    ``estimator`` is ``"exact"`` (enumeration), ``"ais"`` (annealed importance sampling,
    guide-free) or ``"is"`` (importance sampling with the method's own guide, ``K =
    is_particles``); ``ais_options`` go to the AIS scorer.
    """

    estimator: str
    is_particles: int = 1000
    ais_options: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0
    devices: int | None = None  # JAX devices the IS and AIS scorers split the points over
    progress: bool = False  # a progress bar (with an ETA) while IS or AIS scores

    @classmethod
    def resolve(cls, estimator: str, arch: Architecture, is_particles: int = 1000,
                ais_temperatures: int | None = None, ais_chains: int | None = None, seed: int = 0) -> "Yardstick":
        if estimator not in ESTIMATORS:
            raise ValueError(f"unknown estimator {estimator!r}; expected one of {', '.join(ESTIMATORS)}")
        exact_ok = arch.num_hidden <= MAX_EXACT_HIDDEN
        if estimator == "auto":
            estimator = "exact" if exact_ok else "ais"
        if estimator == "exact" and not exact_ok:
            raise ValueError(f"exact scoring needs at most {MAX_EXACT_HIDDEN} hidden units; architecture {arch} "
                             f"has {arch.num_hidden} (use estimator 'ais' or 'is')")
        _check_count("is_particles", is_particles)
        _check_count("ais_temperatures", ais_temperatures, none_ok=True)
        _check_count("ais_chains", ais_chains, none_ok=True)
        ais = {k: int(v) for k, v in (("ais_temperatures", ais_temperatures), ("ais_chains", ais_chains))
               if v is not None}
        return cls(estimator, int(is_particles), ais, seed)

    def log_likelihood(self, params: SBNParams, x: np.ndarray, guide: str | None,
                       estimator: str | None = None) -> LogLikelihood | None:
        """``log p(x_n)`` per data point; ``None`` for importance sampling without a guide."""
        estimator = estimator or self.estimator
        with _one_blas_thread():
            if estimator == "exact":
                return score(params, x, "exact")
            if estimator == "ais":
                return score(params, x, "ais", seed=self.seed, devices=self.devices, progress=self.progress,
                             **self.ais_options)
            if guide is None or not params.has_guide(guide):
                return None
            return score(params, x, "is", guide=guide, is_particles=self.is_particles, seed=self.seed,
                         devices=self.devices, progress=self.progress)


def compare(data: str | Dataset | None = None, arch: str | Architecture | None = None, *,
            methods: Sequence[str | Method] | str | None = None, **settings) -> list[dict]:
    """Fit every method on the same data and batches, and score them on the same yardstick.

    :param data: a data set name (default ``"digits"``, ``"synthetic:<arch>:<seed>"``,
        ``"binarized-mnist"``, ...), a data file, or a :class:`Dataset`.
    :param arch: bottom-up widths ``"D-H1-..."``; default: a synthetic set's teacher
        architecture, else ``D-12-6``.
    :param methods: method names (``"rws"``, or ``"rws:pyro"`` for one backend), a
        comma-separated string, or :class:`Method` objects; default: every registered method.
    :param settings: the fields of :class:`~sbn_ppl.comparison.config.CompareConfig` (``steps``,
        ``epochs``, ``seconds``, ``batch_size``, ``seed``/``seeds``, ``out``, ``resume``,
        ``estimator``, ``is_particles``, ``ais_temperatures``, ``ais_chains``, ``options``, ...).
        With ``resume=True`` the settings saved in ``out/results.json`` are used, and a
        setting given here that conflicts with them is an error.
    :returns: one record (a dict) per (method, seed), in the order run; see
        ``reporting.CSV_FIELDS``, plus ``options`` and ``curve`` (one dict per checkpoint).
    """
    given = dict(settings)
    dataset = data if isinstance(data, Dataset) else None
    if data is not None:
        given["data"] = dataset.name if dataset is not None else data
    if arch is not None:
        given["arch"] = "-".join(map(str, arch.sizes)) if isinstance(arch, Architecture) else arch
    objects = [m for m in (methods or []) if isinstance(m, Method)] if not isinstance(methods, str) else []
    if methods is not None:
        given["methods"] = methods if isinstance(methods, str) else [
            m.label if isinstance(m, Method) else m for m in methods]
    if given.get("resume") and given.get("out"):
        given = _resumed_settings(given["out"], given)
    config = CompareConfig.from_mapping(given)
    return _Comparison(config, dataset, objects).run()


class _Comparison:
    def __init__(self, config: CompareConfig, dataset: Dataset | None, objects: list[Method]):
        self.c = config
        self.dataset = dataset if dataset is not None else load_dataset(config.data)
        self.arch = _architecture(config.arch, config.connectivity, self.dataset)
        steps, epochs, seconds = config.steps, config.epochs, config.seconds
        if steps is None and seconds is None and epochs is None:
            seconds = DEFAULT_SECONDS
        check_budget(steps, seconds, epochs)
        self.budget = _Budget(steps, epochs, seconds, config.checkpoints)
        _check_count("checkpoints", config.checkpoints)
        _check_count("batch_size", config.batch_size)
        _check_count("curve_points", config.curve_points, none_ok=True)
        _check_count("train_points", config.train_points, none_ok=True)
        _check_count("patience", config.patience, none_ok=True)
        if (config.select == "best" or config.patience is not None) and self.dataset.valid is None:
            raise ValueError(f"select='best' and patience choose by the validation split, and {config.data!r} has "
                             "none; give a data set with one (e.g. binarized-mnist) or use select='last'")
        self.seeds = _seeds(config)
        self.yardstick = Yardstick.resolve(config.estimator, self.arch, config.is_particles,
                                           config.ais_temperatures, config.ais_chains, config.seed)
        _check_count("curve_particles", config.curve_particles, none_ok=True)
        self.curve_yardstick = dataclasses.replace(self.yardstick,
                                                   is_particles=config.curve_particles or self.yardstick.is_particles)
        self.yardstick = dataclasses.replace(self.yardstick, progress=bool(config.progress))  # final scores only
        self.planned = plan(objects or config.methods, config.backend)
        self._check_devices(config.devices)
        options = dict(config.options)
        if config.lr is not None:
            options.setdefault("lr", config.lr)
        self.chosen = method_options(self.planned, options)  # every method's options, checked before any trains
        curve_split = self.dataset.valid if self.dataset.valid is not None else self.dataset.test
        self.curve_split_name = "valid" if self.dataset.valid is not None else "test"
        self.curve_x = (random_subset(curve_split, config.curve_points, CURVE_SUBSET_SEED)
                        if config.curve_points else curve_split)
        _check_count("test_points", config.test_points, none_ok=True)
        self.test_x = (random_subset(self.dataset.test, config.test_points, CURVE_SUBSET_SEED)
                       if config.test_points else self.dataset.test)
        train_points = config.train_points
        if train_points is None and self.yardstick.estimator != "exact":
            train_points = len(self.test_x)  # sampling estimators on every training point: minutes a method
        self.train_x = (random_subset(self.dataset.train, train_points, CURVE_SUBSET_SEED)
                        if train_points else self.dataset.train)
        self.out = config.out if _is_writer() else None  # a multi-process run: only process 0 writes files

    def _check_devices(self, devices) -> None:
        """``devices`` checked before any method trains; the yardstick uses them too."""
        from sbn_ppl.engine.sharding import check_devices

        check_devices(devices)
        pyro = [m.label for m in self.planned if m.backend != "numpyro"]
        if devices is not None and devices > 1 and pyro:
            raise ValueError(f"devices={devices}: {', '.join(pyro)} run(s) on one device (the Pyro backend is not "
                             "sharded); leave devices unset (every device for NumPyro, one for Pyro) or drop them")
        self.yardstick = dataclasses.replace(self.yardstick, devices=devices)
        self.curve_yardstick = dataclasses.replace(self.curve_yardstick, devices=devices)

    def settings(self) -> dict:
        """What results.json records (and --resume reads back)."""
        c = self.c
        return _normalised({
            **{k: v for k, v in c.as_dict().items() if k not in ("progress", "resume", "out")},
            "arch": "-".join(map(str, self.arch.sizes)), "connectivity": self.arch.connectivity,
            "methods": [m.label for m in self.planned], "seeds": self.seeds,
            "train_size": len(self.dataset.train), "test_size": len(self.dataset.test),
            "test_points_used": len(self.test_x),
            "curve_split": self.curve_split_name, "curve_points_used": len(self.curve_x),
            "train_points_used": len(self.train_x), "estimator": self.yardstick.estimator,
            "seconds": self.budget.seconds,
        })

    def run(self) -> list[dict]:
        settings = self.settings()
        previous = _previous_records(self.out, settings) if self.c.resume and self.out else {}
        done: dict[tuple, dict] = {}
        total = len(self.planned) * len(self.seeds)
        try:
            for s, seed in enumerate(self.seeds):
                params0 = initial_params(self.arch, self.dataset.train, seed, self.c.data_bias)
                for i, m in enumerate(self.planned):
                    key = (m.name, m.backend, seed)
                    label = f"[{s * len(self.planned) + i + 1}/{total}] {m.name} ({m.backend}), seed {seed}"
                    old = previous.get(key)
                    if old is not None and old.get("options") == self.chosen[(m.name, m.backend)]:
                        done[key] = old
                        _say(self.c.progress, f"{label}: finished in an earlier run, kept")
                        continue
                    done[key] = self._run_one(m, params0, seed)
                    _say(self.c.progress, f"{label}: {_summary(done[key])}")
                    if self.out:
                        kept = [r for k, r in previous.items() if k not in done]
                        reporting.write_results(self.out, settings, list(done.values()) + kept)
        except KeyboardInterrupt:
            if self.out:
                _say(True, f"interrupted: {len(done)} of {total} runs finished and saved in {self.out}; "
                           "run again with resume=True (sbn-ppl compare --out DIR --resume) to continue")
            raise
        return [done[(m.name, m.backend, seed)] for seed in self.seeds for m in self.planned]

    def _posthoc(self, params: SBNParams, seed: int):
        """Under the ``is`` yardstick, a recognition network fitted to the frozen model with the
        same settings for every method (``posthoc_steps``); else ``None``."""
        if self.yardstick.estimator != "is" or not self.c.posthoc_steps:
            return None
        return lambda: posthoc_guide(params, self.dataset.train, steps=self.c.posthoc_steps, seed=seed,
                                     batch_size=self.c.batch_size, progress=self.c.progress)

    def _devices(self, m: Method) -> int | None:
        return self.c.devices if m.backend == "numpyro" else None  # Pyro: one device

    def _method_dir(self, m: Method, seed: int) -> str | None:
        if not self.out:
            return None
        suffix = f"-seed{seed}" if len(self.seeds) > 1 else ""
        return os.path.join(self.out, f"{m.name}-{m.backend}{suffix}")

    def _run_one(self, m: Method, params0: SBNParams, seed: int) -> dict:
        """Fit one method for one seed and score it; a failure is recorded (with its message), not raised."""
        opts = self.chosen[(m.name, m.backend)]
        record: dict[str, Any] = {"method": m.name, "backend": m.backend, "seed": seed, "guide": m.guide,
                                  "options": opts}
        finished: dict[str, Any] = {}
        scored = [0.0]  # training seconds at the last scored checkpoint
        budget, yardstick = self.budget, dataclasses.replace(self.yardstick, seed=seed)
        curve_yardstick = dataclasses.replace(self.curve_yardstick, seed=seed)
        best = _Best(self.c.patience)  # the best curve point so far: early stopping and select="best"

        def curve_point(params, step: int) -> dict:
            ll = curve_yardstick.log_likelihood(params, self.curve_x, m.guide)
            if ll is None:
                return {}
            stop = best.offer(ll.mean, params, step)
            return {"test_log_likelihood": ll.mean, "test_stderr": ll.mean_stderr, **({"stop": True} if stop else {})}

        def on_checkpoint(params, rec):
            if not budget.scores_at(rec, scored[0]):
                return {}
            scored[0] = rec["seconds"]
            return curve_point(params, rec["step"])

        def on_finish(runner):
            with _one_blas_thread():
                value = runner.bound(self.test_x)
            if value is not None:
                finished["bound"] = float(np.mean(np.asarray(value, dtype=np.float64)))

        method_dir = self._method_dir(m, seed)
        try:
            start = {"step": 0, "epoch": 0.0, "seconds": 0.0, **curve_point(params0, 0)}
            start.pop("stop", None)
            result = fit(m, params0, self.dataset.train, seed=seed, options=opts, out=method_dir,
                         overwrite=True, batch_size=self.c.batch_size, progress=self.c.progress,
                         on_checkpoint=on_checkpoint, on_finish=on_finish, devices=self._devices(m),
                         **budget.fit_arguments(len(self.dataset.train), self.c.batch_size))
            last = result.metrics[-1]
            if "test_log_likelihood" not in last:  # the curve always ends with a scored point
                last.update({k: v for k, v in curve_point(result.params, int(last["step"])).items() if k != "stop"})
            record.update(steps=int(last["step"]), epochs=last["epoch"], seconds=last["seconds"],
                          steps_per_second=last["step"] / last["seconds"] if last["seconds"] > 0 else None,
                          objective=last.get("objective"))
            chosen = result.params
            if self.c.select == "best" and best.params is not None:
                chosen = best.params
            record.update(selected_step=best.step if self.c.select == "best" and best.params is not None
                          else int(last["step"]))
            record.update(_final_scores(m, chosen, self.test_x, self.train_x, yardstick,
                                        self._posthoc(chosen, seed)))
            saved = os.path.join(method_dir, "params.npz") if method_dir else None
            if saved and chosen is not result.params:  # select="best": the scored parameters beside the last
                saved = os.path.join(method_dir, "selected_params.npz")
                chosen.save(saved)
            bound = finished.get("bound")
            if bound is not None and record["selected_step"] != int(last["step"]):
                # the bound is the final state's (e.g. the fixed point's per-point variational
                # state), not the selected checkpoint's: reported, it would describe other parameters
                record["warnings"] = list(record.get("warnings") or []) + [
                    f"own bound not reported: it belongs to the last step ({int(last['step'])}), not to the "
                    f"selected checkpoint (step {record['selected_step']})"]
                bound = None
            record.update(bound=bound, params=saved, curve=[start] + result.metrics, error=None)
        except Exception as e:  # noqa: BLE001 - one method failing must not lose the others' results
            record.update({k: None for k in reporting.CSV_FIELDS if k not in record}, curve=[],
                          error=f"{type(e).__name__}: {e}".splitlines()[0])
        return _normalised(record)


def plan(methods: Sequence[str | Method] | str | None = None, backend: str | None = None) -> list[Method]:
    """The :class:`Method` objects a comparison runs, in order (see :func:`compare`)."""
    if backend not in (None, "all") + BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS + ('all',))}")
    every = methods is None or methods == "all"
    if every:
        specs: list = method_names()
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
            raise ValueError(f"unknown method {name!r}; expected one of {', '.join(method_names())}")
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
        raise ValueError(f"no registered method has a {backend!r} backend")
    seen: set = set()
    for m in planned:
        if (m.name, m.backend) in seen:
            raise ValueError(f"method {m.name!r} ({m.backend}) is listed twice")
        seen.add((m.name, m.backend))
    return planned


def method_options(planned: Sequence[Method], options: Mapping[str, Any] | None) -> dict[tuple[str, str], dict]:
    """Each method's full options, checked: its defaults, then the shared options it takes, then its own."""
    shared = {k: v for k, v in (options or {}).items() if not isinstance(v, Mapping)}
    own = {k: dict(v) for k, v in (options or {}).items() if isinstance(v, Mapping)}
    labels = {m.name for m in planned} | {m.label for m in planned}
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
        opts.update(own.get(m.label, {}))
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
class _Best:
    """The best learning-curve point so far (its score, step and parameters), and early
    stopping: ``offer`` says stop once ``patience`` scored points in a row were no better."""

    def __init__(self, patience: int | None):
        self.patience, self.value, self.step, self.params, self.worse = patience, -math.inf, None, None, 0

    def offer(self, value: float, params: SBNParams, step: int) -> bool:
        if value > self.value:
            copied = {k: np.array(params[k]) for k in params if k != "sizes"}  # torch may update arrays in place
            self.value, self.step, self.worse = value, int(step), 0
            self.params = SBNParams.from_arrays(params.architecture, copied)
        else:
            self.worse += 1
        return self.patience is not None and self.worse >= self.patience


@dataclass(frozen=True)
class _Budget:
    steps: int | None
    epochs: float | None
    seconds: float | None
    checkpoints: int

    def fit_arguments(self, num_data: int, batch_size: int) -> dict:
        """A pure step or epoch budget checkpoints every ``1/checkpoints`` of it (deterministic);
        a time budget about every ``seconds / checkpoints`` seconds of training."""
        args: dict[str, Any] = {"steps": self.steps, "epochs": self.epochs, "seconds": self.seconds}
        if self.seconds is None:
            total = step_budget(self.steps, self.epochs, num_data, batch_size)
            args["checkpoint_every"] = max(1, math.ceil(total / self.checkpoints))
        else:
            args["checkpoint_every"] = None
            args["checkpoint_seconds"] = self.seconds / self.checkpoints
        return args

    def scores_at(self, record: dict, last_scored: float) -> bool:
        """Whether a checkpoint gets a test score: every one under a step or epoch budget; under a
        time budget the first past each ``seconds / checkpoints`` mark, and the last one."""
        if self.seconds is None or record["seconds"] >= self.seconds * 0.98:
            return True
        spacing = self.seconds / self.checkpoints
        return math.floor(record["seconds"] / spacing) > math.floor(last_scored / spacing)


def _final_scores(m: Method, params: SBNParams, test, train, yardstick: Yardstick, posthoc=None) -> dict:
    """The final scores. Under the ``is`` yardstick a method is scored with its own guide and with a
    guide fitted post hoc to its frozen model (``posthoc()``); the figure is the higher of the two
    (both are stochastic lower bounds), and ``test_guide`` says which gave it."""
    own = yardstick.log_likelihood(params, test, m.guide)
    candidates = [("own", params, own)] if own is not None else []
    if posthoc is not None:
        fitted = posthoc()
        candidates.append(("posthoc", fitted, yardstick.log_likelihood(fitted, test, "recognition")))
    label, scored_params, test_ll = max(candidates, key=lambda c: c[2].mean) if candidates else ("", params, None)
    train_ll = None if test_ll is None else yardstick.log_likelihood(
        scored_params, train, m.guide if label == "own" else "recognition")
    scores = {
        "test_log_likelihood": None if test_ll is None else test_ll.mean,
        "test_estimator": yardstick.estimator if test_ll is None else test_ll.estimator,
        "test_stderr": None if test_ll is None else test_ll.mean_stderr,
        "test_guide": label if yardstick.estimator == "is" and test_ll is not None else None,
        "test_own_guide_log_likelihood": None if own is None or posthoc is None else own.mean,
        "test_posthoc_log_likelihood": next((c[2].mean for c in candidates if c[0] == "posthoc"), None),
        "test_is_log_likelihood": None, "test_is_stderr": None, "test_is_khat": None, "test_is_ess": None,
        "train_log_likelihood": None if train_ll is None else train_ll.mean,
        "kl_q_p": None, "warnings": list(getattr(test_ll, "warnings", ()) or ()),
        # per test point, for paired comparisons across methods (the same points for every method)
        "test_pointwise": None if test_ll is None else [round(float(v), 5) for v in test_ll.per_point],
    }
    if test_ll is not None and test_ll.ess is not None:
        summary = test_ll.summary()
        scores.update(test_is_khat=summary["khat_max"], test_is_ess=summary["ess_mean"])
    has_guide = m.guide is not None and params.has_guide(m.guide)
    if has_guide and yardstick.estimator == "ais":
        is_ll = yardstick.log_likelihood(params, test, m.guide, estimator="is")
        summary = is_ll.summary()
        scores.update(test_is_log_likelihood=is_ll.mean, test_is_stderr=is_ll.mean_stderr,
                      test_is_khat=summary["khat_max"], test_is_ess=summary["ess_mean"])
        scores["warnings"] += list(is_ll.warnings or ())
    if has_guide and yardstick.estimator == "exact":
        with _one_blas_thread():
            scores["kl_q_p"] = float(np.mean(exact_kl(params, m.guide, test).q_p))
    return scores


# -- resuming ----------------------------------------------------------------------------------
def _resumed_settings(out: str, given: dict) -> dict:
    """The settings saved in ``out/results.json``, with those given checked against them."""
    saved = _read_results(out)
    if saved is None:
        return given
    old = saved["config"]
    fields = set(CompareConfig.__dataclass_fields__)
    merged = {k: v for k, v in old.items() if k in fields}
    conflicts = []
    for k, v in given.items():
        if k in ("resume", "out", "progress") or v is None:
            continue
        if k in merged and _normalised(v) != merged[k] and not (k == "methods" and _same_methods(v, merged[k])):
            conflicts.append(f"{k} was {merged[k]!r}, now {v!r}")
        merged[k] = v
    if conflicts:
        raise ValueError(f"cannot resume {out!r} with other settings ({'; '.join(conflicts)}); "
                         "leave them out to use the saved ones, or choose another --out")
    merged.update(resume=True, out=out)
    if "progress" in given:
        merged["progress"] = given["progress"]
    return merged


def _same_methods(given, saved) -> bool:
    names = [s.strip() for s in given.split(",")] if isinstance(given, str) else list(given)
    return all(n in saved or any(s.startswith(n + ":") for s in saved) for n in names)


def _read_results(out: str) -> dict | None:
    path = os.path.join(out, "results.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            saved = json.load(f)
        saved["config"], saved["records"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"cannot resume from {path!r}: {e}") from None
    return saved


def _previous_records(out: str, config: dict) -> dict[tuple, dict]:
    """The finished records of an earlier run in ``out`` with the same settings."""
    saved = _read_results(out)
    if saved is None:
        return {}
    old_config = saved["config"]
    ignore = {"methods", "seeds", "seed"}  # adding methods or seeds to a run is what resuming is for
    changed = sorted(k for k in (set(config) | set(old_config)) - ignore if config.get(k) != old_config.get(k))
    if changed:
        what = ", ".join(f"{k} was {old_config.get(k)!r}, now {config.get(k)!r}" for k in changed)
        raise ValueError(f"cannot resume {out!r} with other settings ({what}); use another output folder")
    return {(r["method"], r["backend"], r.get("seed", old_config.get("seed", 0))): r
            for r in saved["records"] if not r.get("error")}


# -- small helpers -----------------------------------------------------------------------------
def _seeds(config: CompareConfig) -> list[int]:
    seeds = config.seeds
    if seeds is None:
        return [int(config.seed)]
    if isinstance(seeds, str):
        try:
            seeds = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"seeds must be comma-separated integers, got {config.seeds!r}") from None
    if not seeds or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in seeds):
        raise ValueError(f"seeds must be a non-empty list of integers, got {config.seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds are repeated: {seeds}")
    return [int(s) for s in seeds]


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


def _is_writer() -> bool:
    from sbn_ppl.engine.sharding import is_writer

    return is_writer()


def _say(enabled: bool, message: str) -> None:
    if enabled:
        print(message, file=sys.stderr, flush=True)


def _one_blas_thread():
    """Scoring makes many small matrix products, which multithreaded OpenBLAS slows down on a
    busy CPU (measured on a shared 2-core CPU, 64-12-6: exact log p(x) of the 1,438 digits
    training images took 30-38 s with OpenBLAS's threads, 5-6 s with one)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - scikit-learn brings threadpoolctl
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")
