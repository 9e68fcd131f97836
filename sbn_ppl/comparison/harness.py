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
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from sbn_ppl.base.architecture import Architecture
from sbn_ppl.base.arrays import Dataset, random_subset
from sbn_ppl.base.data import load_dataset
from sbn_ppl.base.files import json_normalised as _normalised
from sbn_ppl.base.methods import BACKENDS, Method
from sbn_ppl.base.params import SBNParams
from sbn_ppl.comparison.config import DEFAULT_HIDDEN, DEFAULT_SECONDS, ESTIMATORS, CompareConfig, tuning_grid
import sbn_ppl.comparison.executors as executors
from sbn_ppl.comparison.executors import Cell
from sbn_ppl.comparison.tuning import select_tuned, tuning_points
from sbn_ppl.comparison.gradient_variance import GRADIENT_SUBSET_SEED, guide_gradient_variance
import sbn_ppl.comparison.reporting as reporting
from sbn_ppl.engine.fitting import Budget, Checkpointing, check_budget, check_seed, fit, interrupts_noticed
from sbn_ppl.engine.rundir import (MANIFEST, FolderLock, _check_writable, check_resumable, code_version,
                                   own_path, read_checkpoint, read_manifest, remove_inside, write_manifest)
from sbn_ppl.inference import backends_of, get_method, method_names
from sbn_ppl.yardstick import LogLikelihood, posthoc_guide, score
from sbn_ppl.yardstick.exact import MAX_EXACT_HIDDEN, exact_kl

CURVE_SUBSET_SEED = 0  # the learning-curve points are one fixed subset, whatever the run's seed
POSTHOC_FILE = "posthoc_params.npz"  # a cell's post-hoc guide (with its model), where it scored the test set
RUNTIME_SETTINGS = ("executor", "ray_address", "ray_cpus", "ray_gpus", "ray_retries", "ray_setup")

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
    _check_arguments(data, arch, methods)
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
        given = _resumed_settings(os.fspath(given["out"]), given)
    config = CompareConfig.from_mapping(given)
    return _Comparison(config, dataset, objects).run()


class _Comparison:
    def __init__(self, config: CompareConfig, dataset: Dataset | None, objects: list[Method]):
        self.c = config
        self.dataset, self.data_warnings = (dataset, []) if dataset is not None else _load(config.data)
        self.arch = _architecture(config.arch, config.connectivity, self.dataset)
        steps, epochs, seconds = config.steps, config.epochs, config.seconds
        if steps is None and seconds is None and epochs is None:
            seconds = DEFAULT_SECONDS
        check_budget(steps, seconds, epochs)
        self.budget = _Budget(steps, epochs, seconds, config.checkpoints)
        check_seed(config.seed)
        if isinstance(config.posthoc_steps, bool) or not isinstance(config.posthoc_steps, int) \
                or config.posthoc_steps < 0:
            raise ValueError(f"posthoc_steps must be a non-negative integer, got {config.posthoc_steps!r}")
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
        _tuned_from(config.tuned_from, self.planned, options)
        self.chosen = method_options(self.planned, options)  # every method's options, checked before any trains
        self.methods = {(m.name, m.backend): m for m in self.planned}
        self.grid = tuning_grid(config.tune)
        unused = sorted(k for k in self.grid if not any(k in m.defaults for m in self.planned))
        if unused:
            raise ValueError(f"tune: no method compared takes option(s) {', '.join(unused)}")
        # each method's grid: the tuned options it takes (one point, (), when it takes none)
        self.points = {key: tuning_points({k: v for k, v in self.grid.items() if k in m.defaults})
                       for key, m in self.methods.items()}
        if self.grid and self.dataset.valid is None:
            raise ValueError(f"tune chooses by the validation split, and {config.data!r} has none; give a data set "
                             "with one (e.g. binarized-mnist), never the test split")
        for m in self.planned:  # every grid point's options checked before any method trains
            for point in self.points[(m.name, m.backend)]:
                self._options(m, point)
        _check_count("curve_ais_temperatures", config.curve_ais_temperatures)
        _check_count("curve_ais_chains", config.curve_ais_chains)
        if isinstance(config.bdmc_points, bool) or not isinstance(config.bdmc_points, int) or config.bdmc_points < 0:
            raise ValueError(f"bdmc_points must be a whole number >= 0 (0: no BDMC), got {config.bdmc_points!r}")
        self.curve_ais = None if self.yardstick.estimator != "is" else dataclasses.replace(
            self.curve_yardstick, estimator="ais",
            ais_options={"ais_temperatures": config.curve_ais_temperatures, "ais_chains": config.curve_ais_chains})
        self.ray = executors.RaySettings(config.ray_address, config.ray_cpus, config.ray_gpus, config.ray_retries,
                                         config.ray_setup)
        if config.executor == "ray":  # checked before any cell runs
            executors.check_settings(self.ray)
            executors.import_ray()
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
        draws = config.gradient_variance_draws
        if isinstance(draws, bool) or not isinstance(draws, (int, np.integer)) or draws < 0 or draws == 1:
            raise ValueError(f"gradient_variance_draws must be 0 (off) or a whole number >= 2, got {draws!r}")
        # the gradient-variance diagnostic's batch: one seeded subset of the training set, every method's
        self.gradient_x = (random_subset(self.dataset.train, min(config.batch_size, len(self.dataset.train)),
                                         GRADIENT_SUBSET_SEED) if draws else None)
        self.out = config.out if _is_writer() else None  # a multi-process run: only process 0 writes files

    def _check_devices(self, devices) -> None:
        """``devices`` checked before any method trains; the yardstick uses them too."""
        from sbn_ppl.engine.sharding import check_devices

        check_devices(devices)
        pyro = [m.label for m in self.planned if m.backend != "numpyro"]
        if devices is not None and devices > 1 and pyro:
            raise ValueError(f"devices={devices}: {', '.join(pyro)} run(s) on one device (the Pyro backend is not "
                             "sharded); leave devices unset (every device for NumPyro, one for Pyro) or drop them")
        if devices is not None and devices > 1:
            from sbn_ppl.engine.sharding import device_list

            device_list(devices)  # more devices than there are: refused before any method trains
        self.yardstick = dataclasses.replace(self.yardstick, devices=devices)
        self.curve_yardstick = dataclasses.replace(self.curve_yardstick, devices=devices)

    def settings(self) -> dict:
        """What results.json records (and --resume reads back)."""
        c = self.c
        return _normalised({
            **{k: v for k, v in c.as_dict().items() if k not in ("progress", "resume", "out", "overwrite")
               and not (k == "gradient_variance_draws" and not v)},  # off: the settings as before the option
            "arch": "-".join(map(str, self.arch.sizes)), "connectivity": self.arch.connectivity,
            "methods": [m.label for m in self.planned], "seeds": self.seeds,
            "train_size": len(self.dataset.train), "test_size": len(self.dataset.test),
            "test_points_used": len(self.test_x),
            "curve_split": self.curve_split_name, "curve_points_used": len(self.curve_x),
            "train_points_used": len(self.train_x), "estimator": self.yardstick.estimator,
            "seconds": self.budget.seconds,
            **({"data_warnings": self.data_warnings} if self.data_warnings else {}),
        })

    def manifest(self) -> dict:
        """What the comparison folder holds (``manifest.json``; :mod:`sbn_ppl.engine.rundir`): the
        settings, the data's name and the content hash of each split, the architecture, the code."""
        from sbn_ppl.base.datasets import content_sha256

        splits = {s: getattr(self.dataset, s) for s in self.dataset.splits}
        return {"kind": "compare", "settings": self.settings(),
                "data": {"name": self.dataset.name, "sha256": {s: content_sha256(x) for s, x in splits.items()}},
                "architecture": {"sizes": list(self.arch.sizes), "connectivity": self.arch.connectivity},
                "code": code_version()}

    def run(self) -> list[dict]:
        if not self.out:
            return self._run({})
        _check_writable(self.out)
        with FolderLock(self.out, "comparison"), interrupts_noticed():
            previous = self._claim()
            return self._run(previous)

    def _claim(self) -> dict[tuple, dict]:
        """Under the folder's lock: refuse a folder that holds results unless resuming (its manifest
        checked, data hashes included) or overwriting; write this run's manifest; the earlier
        records to keep."""
        out, settings = self.out, self.settings()
        holds = any(os.path.lexists(os.path.join(out, n)) for n in ("results.json", MANIFEST))
        if holds and not (self.c.resume or self.c.overwrite):
            raise ValueError(f"{out!r} holds the results of a comparison; use --resume to continue it or "
                             "--overwrite to replace it (or choose another --out)")
        for m in self.planned:
            for seed in self.seeds:
                for point in self.points[(m.name, m.backend)]:  # a link out of the folder: refused
                    own_path(out, os.path.basename(self._method_dir(m, seed, point)))
        if self.c.overwrite and not self.c.resume:
            _clear(out)
        previous = {}
        if self.c.resume:
            check_resumable_comparison(out, self.manifest())
            previous = _previous_records(out, settings)
        write_manifest(out, self.manifest())
        return previous

    def cells(self) -> list[Cell]:
        """Every (method, backend, seed, tuning point) this comparison runs, in order."""
        return [Cell(m.name, m.backend, seed, point) for seed in self.seeds for m in self.planned
                for point in self.points[(m.name, m.backend)]]

    def _run(self, previous: dict[tuple, dict]) -> list[dict]:
        settings = self.settings()
        done: dict[tuple, dict] = {}
        cells = self.cells()
        todo = []
        for n, cell in enumerate(cells):
            m = self.methods[(cell.method, cell.backend)]
            label = self._label(cell, n, len(cells))
            old = previous.get(cell.key)
            if old is not None and old.get("options") == self._options(m, cell.tuning):
                missing = self._missing_files(m, cell.seed, old, cell.tuning)
                if not missing:
                    done[cell.key] = old
                    _say(self.c.progress, f"{label}: finished in an earlier run, kept")
                    continue
                _say(self.c.progress, f"{label}: finished in an earlier run, but {missing} is gone: run again")
                previous.pop(cell.key)
            todo.append(cell)
        try:
            for cell, result in self._execute(todo):
                done[cell.key] = self._finished(cell, result)
                _say(self.c.progress, f"{self._label(cell, cells.index(cell), len(cells))}: "
                                      f"{_summary(done[cell.key])}")
                if self.out:
                    kept = [r for k, r in previous.items() if k not in done]
                    self._write(settings, list(done.values()) + kept)
        except KeyboardInterrupt:
            if self.out:
                _say(True, f"interrupted: {len(done)} of {len(cells)} runs finished and saved in {self.out}; "
                           "run again with resume=True (sbn-ppl compare --out DIR --resume) to continue")
            raise
        ordered = [done[cell.key] for cell in cells]
        return select_tuned(ordered, self.c.select) if self.grid else ordered

    def _label(self, cell: Cell, n: int, total: int) -> str:
        point = "".join(f", {k}={v:g}" if isinstance(v, float) else f", {k}={v}" for k, v in cell.tuning)
        return f"[{n + 1}/{total}] {cell.method} ({cell.backend}), seed {cell.seed}{point}"

    def _write(self, settings: dict, records: list[dict]) -> None:
        """results.json and the report; a tuned run reports each method at its chosen point and
        keeps every grid point's record in ``grid``."""
        if not self.grid:
            reporting.write_results(self.out, settings, records)
            return
        reporting.write_results(self.out, settings, select_tuned(records, self.c.select), grid=records)

    def _execute(self, cells: list[Cell]):
        """``(cell, record or exception)`` as each cell ends: here, in turn, or as Ray tasks."""
        if self.c.executor != "ray":
            return executors.sequential(cells, lambda _, cell: self._run_cell(cell), None)
        payload = (self.c.replace(out=None, progress=False, resume=False, overwrite=False, executor="sequential"),
                   self.dataset)
        return _progress_bar(executors.ray_tasks(cells, run_cell, payload, self.ray), len(cells), self.c.progress)

    def _run_cell(self, cell: Cell) -> dict:
        m = self.methods[(cell.method, cell.backend)]
        params0 = initial_params(self.arch, self.dataset.train, cell.seed, self.c.data_bias)
        record, _ = self._run_one(m, params0, cell.seed, cell.tuning)
        return record

    def _finished(self, cell: Cell, result) -> dict:
        """A cell's record: a task's (its parameters written here: only the driver writes the
        folder), or a failure record when its task raised or its worker died for good."""
        m = self.methods[(cell.method, cell.backend)]
        if isinstance(result, Exception):
            record = {"method": m.name, "backend": m.backend, "seed": cell.seed, "guide": m.guide,
                      "options": self._options(m, cell.tuning), **self._tuning(cell.tuning)}
            record.update({k: None for k in reporting.CSV_FIELDS if k not in record}, curve=[],
                          error=f"{type(result).__name__}: {result}".splitlines()[0])
            return _normalised(record)
        if isinstance(result, dict):
            return result
        record, arrays = result  # from a Ray task: the parameters travel back as arrays
        method_dir = self._method_dir(m, cell.seed, cell.tuning)
        if method_dir and arrays:
            os.makedirs(method_dir, exist_ok=True)
            for name, params in arrays.items():
                params.save(os.path.join(method_dir, name))
            record = {**record, "params": os.path.join(method_dir, "selected_params.npz" if "selected_params.npz"
                                                       in arrays else "params.npz"),
                      "posthoc_params": os.path.join(method_dir, POSTHOC_FILE) if POSTHOC_FILE in arrays else None}
        return record

    def _posthoc(self, params: SBNParams, seed: int):
        """Under the ``is`` yardstick, a recognition network fitted to the frozen model with the
        same settings for every method (``posthoc_steps``); else ``None``."""
        if self.yardstick.estimator != "is" or not self.c.posthoc_steps:
            return None
        return lambda: posthoc_guide(params, self.dataset.train, steps=self.c.posthoc_steps, seed=seed,
                                     batch_size=self.c.batch_size, progress=self.c.progress)

    def _devices(self, m: Method) -> int | None:
        return self.c.devices if m.backend == "numpyro" else None  # Pyro: one device

    def _missing_files(self, m: Method, seed: int, record: dict, tuning: tuple = ()) -> str | None:
        """The file an earlier record cites that is no longer in its method folder, if any."""
        folder = self._method_dir(m, seed, tuning)
        if folder is None or not record.get("params"):
            return None
        path = os.path.join(folder, os.path.basename(record["params"]))
        return None if os.path.isfile(path) else path

    def _method_dir(self, m: Method, seed: int, tuning: tuple = ()) -> str | None:
        if not self.out:
            return None
        suffix = f"-seed{seed}" if len(self.seeds) > 1 else ""
        point = "".join(f"-{k}{v:g}" if isinstance(v, float) else f"-{k}{v}" for k, v in tuning)
        return os.path.join(self.out, f"{m.name}-{m.backend}{suffix}{point}")

    def _options(self, m: Method, tuning: tuple = ()) -> dict:
        return self.chosen[(m.name, m.backend)] if not tuning else _normalised(
            m.check_options({**self.chosen[(m.name, m.backend)], **dict(tuning)}))

    @staticmethod
    def _tuning(tuning: tuple) -> dict:
        return {"tuning": dict(tuning)} if tuning else {}

    def _run_one(self, m: Method, params0: SBNParams, seed: int, tuning: tuple = ()) -> tuple[dict, dict]:
        """Fit one method for one seed (at one tuning point) and score it; a failure is recorded
        (with its message), not raised. Also returns the parameters to save by file name (none
        where this run saved them itself, or failed)."""
        opts = self._options(m, tuning)
        began = time.perf_counter()
        record: dict[str, Any] = {"method": m.name, "backend": m.backend, "seed": seed, "guide": m.guide,
                                  "options": opts, **self._tuning(tuning)}
        arrays: dict[str, SBNParams] = {}
        finished: dict[str, Any] = {}
        scored = [0.0]  # training seconds at the last scored checkpoint
        budget, yardstick = self.budget, dataclasses.replace(self.yardstick, seed=seed)
        curve_yardstick = dataclasses.replace(self.curve_yardstick, seed=seed)
        method_dir = self._method_dir(m, seed, tuning)
        best = _Best(self.c.patience, method_dir)  # the best curve point so far: early stopping and select="best"

        def curve_point(params, step: int) -> dict:
            ll = curve_yardstick.log_likelihood(params, self.curve_x, m.guide)
            extra = {}
            if ll is None and self.curve_ais is not None:  # no guide to importance-sample with: cheap AIS
                ll = dataclasses.replace(self.curve_ais, seed=seed).log_likelihood(params, self.curve_x, None)
                extra = {"curve_estimator": ll.estimator}
            if ll is None:
                return {}
            stop = best.offer(ll.mean, params, step)
            return {"test_log_likelihood": ll.mean, "test_stderr": ll.mean_stderr, **extra,
                    **({"stop": True} if stop else {})}

        running: dict[str, Any] = {}  # the runner (fit's on_start): its current state at each checkpoint

        def gradient_point(step: int) -> dict:
            """The guide gradient's total variance at the runner's current state (if asked for)."""
            if self.gradient_x is None or "runner" not in running:
                return {}
            return guide_gradient_variance(running["runner"], self.gradient_x, self.c.gradient_variance_draws,
                                           seed, step)

        def on_start(runner):
            running["runner"] = runner
            start.update(gradient_point(0))

        def on_checkpoint(params, rec):
            if not budget.scores_at(rec, scored[0]):
                return {}
            scored[0] = rec["seconds"]
            return {**curve_point(params, rec["step"]), **gradient_point(rec["step"])}

        def on_finish(runner):
            with _one_blas_thread():
                value = runner.bound(self.test_x)
            if value is not None:
                finished["bound"] = float(np.mean(np.asarray(value, dtype=np.float64)))

        try:
            start = {"step": 0, "epoch": 0.0, "seconds": 0.0, **curve_point(params0, 0)}
            start.pop("stop", None)
            fit_budget, every, every_seconds = budget.fit_arguments(len(self.dataset.train), self.c.batch_size)

            def fit_cell(resume: bool):
                return fit(m, params0, self.dataset.train, budget=fit_budget,
                           checkpointing=Checkpointing(every, every_seconds, out=method_dir, overwrite=not resume,
                                                       resume=resume, on_checkpoint=on_checkpoint,
                                                       on_start=on_start),
                           seed=seed, options=opts, batch_size=self.c.batch_size, progress=self.c.progress,
                           on_finish=on_finish, devices=self._devices(m), data=self.dataset.name)

            resume = self.c.resume and method_dir is not None and _resume_cell(method_dir, best, scored)
            try:
                result = fit_cell(resume)
            except ValueError as e:
                if not resume or "resume" not in str(e):
                    raise
                best, scored[0] = _Best(self.c.patience, method_dir), 0.0  # a folder that cannot be resumed: afresh
                start = {"step": 0, "epoch": 0.0, "seconds": 0.0, **curve_point(params0, 0)}
                start.pop("stop", None)
                result = fit_cell(False)
            last = result.metrics[-1]
            if "test_log_likelihood" not in last:  # the curve always ends with a scored point
                last.update({k: v for k, v in curve_point(result.params, int(last["step"])).items() if k != "stop"})
                last.update(gradient_point(int(last["step"])))  # the runner holds the last step's state
            record.update(steps=int(last["step"]), epochs=last["epoch"], seconds=last["seconds"],
                          steps_per_second=last["step"] / last["seconds"] if last["seconds"] > 0 else None,
                          objective=last.get("objective"))
            chosen = result.params
            if self.c.select == "best" and best.params is not None and best.step != int(last["step"]):
                chosen = best.params  # an earlier checkpoint (the last one's parameters are result.params)
            record.update(selected_step=best.step if self.c.select == "best" and best.params is not None
                          else int(last["step"]))
            scores, posthoc = _final_scores(m, chosen, self.test_x, self.train_x, yardstick,
                                            self._posthoc(chosen, seed), self.c.bdmc_points,
                                            self.curve_x if self.curve_split_name == "valid" else None)
            record.update(scores)
            saved = os.path.join(method_dir, "params.npz") if method_dir else None
            if saved and chosen is not result.params:  # select="best": the scored parameters beside the last
                saved = os.path.join(method_dir, "selected_params.npz")
                chosen.save(saved)
            record["posthoc_params"] = None  # the post-hoc guide, where it scored the test set (certify uses it)
            if method_dir and posthoc is not None:
                record["posthoc_params"] = os.path.join(method_dir, POSTHOC_FILE)
                posthoc.save(record["posthoc_params"])
            if not method_dir:  # nothing written here: the caller (a Ray task's driver) saves them
                arrays = {"params.npz": result.params,
                          **({"selected_params.npz": chosen} if chosen is not result.params else {}),
                          **({POSTHOC_FILE: posthoc} if posthoc is not None else {})}
            bound = finished.get("bound")
            if bound is not None and record["selected_step"] != int(last["step"]):
                # the bound is the final state's (e.g. the fixed point's per-point variational
                # state), not the selected checkpoint's: reported, it would describe other parameters
                record["warnings"] = list(record.get("warnings") or []) + [
                    f"own bound not reported: it belongs to the last step ({int(last['step'])}), not to the "
                    f"selected checkpoint (step {record['selected_step']})"]
                bound = None
            record.update(bound=bound, params=saved, curve=[start] + result.metrics, error=None)
            if method_dir:  # the cell is done: its best-so-far file served a resume only
                remove_inside(method_dir, _Best.FILE)
            if "guide_gradient_variance" in last:
                record["guide_gradient_variance"] = last["guide_gradient_variance"]
        except Exception as e:  # noqa: BLE001 - one method failing must not lose the others' results
            record.update({k: None for k in reporting.CSV_FIELDS if k not in record}, curve=[],
                          error=f"{type(e).__name__}: {e}".splitlines()[0])
            arrays = {}
        record["cell_seconds"] = time.perf_counter() - began  # the whole cell: training, curve, final scores
        return _normalised(record), arrays


def _resume_cell(method_dir: str, best: "_Best", scored: list) -> bool:
    """Whether an interrupted cell's fit continues from its last checkpoint in ``method_dir``
    (``--resume``): its curve replayed into ``best`` and ``scored``. A cell killed while scoring
    has a finished fit: it is scored again without training (its own bound, made at the end of
    training, is then not reported)."""
    try:
        found = read_checkpoint(method_dir, state=False)
    except (ValueError, OSError):
        return False
    if found is None:
        return False
    curve = found.metrics.get("curve") or []
    if not best.restore(curve, found.step, found.params):
        return False
    points = [c for c in curve if c.get("test_log_likelihood") is not None]
    scored[0] = float(points[-1]["seconds"]) if points else 0.0
    return True


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


def _tuned_from(folder: str | None, planned: Sequence[Method], options: dict) -> None:
    """Each planned method's point chosen in the tuning run ``folder``, merged into ``options`` as
    the method's own options (under those the user gave for it, which win); every planned method
    must have been tuned there."""
    if folder is None:
        return
    from sbn_ppl.comparison.tuning import tuned_choices

    choices = tuned_choices(os.fspath(folder))
    missing = [m.label for m in planned if m.label not in choices]
    if missing:
        raise ValueError(f"tuned_from: {folder!r} did not tune {', '.join(missing)} (it tuned "
                         f"{', '.join(sorted(choices)) or 'nothing'})")
    for m in planned:
        given = {**dict(options.get(m.name) or {}), **dict(options.get(m.label) or {})}
        options[m.label] = {**choices[m.label], **given}


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
    stopping: ``offer`` says stop once ``patience`` scored points in a row were no better.
    With ``folder``, each new best is also written there (``best_params.npz``, with its step), so
    that a cell interrupted mid-run resumes with it (:meth:`restore`)."""

    FILE = "best_params.npz"

    def __init__(self, patience: int | None, folder: str | None = None):
        self.patience, self.value, self.step, self.params, self.worse = patience, -math.inf, None, None, 0
        self.folder = folder

    def offer(self, value: float, params: SBNParams, step: int) -> bool:
        if value > self.value:
            copied = {k: np.array(params[k]) for k in params if k != "sizes"}  # torch may update arrays in place
            self.value, self.step, self.worse = value, int(step), 0
            self.params = SBNParams.from_arrays(params.architecture, copied)
            if self.folder is not None and step > 0:
                self._save(copied, params.architecture)
        else:
            self.worse += 1
        return self.patience is not None and self.worse >= self.patience

    def _save(self, arrays: dict, arch) -> None:
        from sbn_ppl.base.files import write_npz

        write_npz(os.path.join(self.folder, self.FILE),
                  {**arrays, "best_step": np.int64(self.step), "sizes": np.asarray(arch.sizes)})

    def restore(self, curve: Sequence[Mapping[str, Any]], at_step: int, at_params: SBNParams) -> bool:
        """Replay the scored points of a saved ``curve`` (after the start point's ``offer``):
        the best value, its step and the patience count as they were, and the best step's
        parameters (``at_params`` if it is the checkpoint's step ``at_step``, else the saved
        best file). ``False``, with nothing changed, where those parameters cannot be had."""
        value, step, worse = self.value, self.step, self.worse
        for point in curve:
            if point.get("test_log_likelihood") is None:
                continue
            if point["test_log_likelihood"] > value:
                value, step, worse = point["test_log_likelihood"], int(point["step"]), 0
            else:
                worse += 1
        params = self.params
        if step != self.step:
            params = at_params if step == at_step else self._load(step, at_params.architecture)
            if params is None:
                return False
        self.value, self.step, self.worse, self.params = value, step, worse, params
        return True

    def _load(self, step: int, arch) -> SBNParams | None:
        path = None if self.folder is None else os.path.join(self.folder, self.FILE)
        if path is None or not os.path.isfile(path):
            return None
        try:
            with np.load(path) as f:
                if int(f["best_step"]) != step:
                    return None
                return SBNParams.from_arrays(arch, {k: f[k] for k in f.files if k not in ("best_step", "sizes")})
        except (OSError, ValueError, KeyError):
            return None


@dataclass(frozen=True)
class _Budget:
    steps: int | None
    epochs: float | None
    seconds: float | None
    checkpoints: int

    def fit_arguments(self, num_data: int, batch_size: int) -> tuple[Budget, int | None, float | None]:
        """``fit``'s budget, and its checkpoints: a pure step or epoch budget every ``1/checkpoints``
        of it (steps: deterministic), a time budget about every ``seconds / checkpoints`` seconds."""
        budget = Budget(self.steps, self.seconds, self.epochs)
        if self.seconds is None:
            return budget, max(1, math.ceil(budget.step_cap(num_data, batch_size) / self.checkpoints)), None
        return budget, None, self.seconds / self.checkpoints

    def scores_at(self, record: dict, last_scored: float) -> bool:
        """Whether a checkpoint gets a test score: every one under a step or epoch budget; under a
        time budget the first past each ``seconds / checkpoints`` mark, and the last one."""
        if self.seconds is None or record["seconds"] >= self.seconds * 0.98:
            return True
        spacing = self.seconds / self.checkpoints
        return math.floor(record["seconds"] / spacing) > math.floor(last_scored / spacing)


def _bdmc_scores(m: Method, params: SBNParams, yardstick: Yardstick, points: int) -> dict:
    """BDMC at the yardstick's own AIS schedule on ``points`` simulated from ``params``, and IS
    with the method's guide on the same points (where it has one)."""
    from sbn_ppl.yardstick.bdmc import bdmc
    from sbn_ppl.yardstick.defaults import AIS_CHAINS, AIS_TEMPERATURES

    options = yardstick.ais_options
    with _one_blas_thread():
        sandwich = bdmc(params, points, yardstick.seed, options.get("ais_temperatures", AIS_TEMPERATURES),
                        options.get("ais_chains", AIS_CHAINS), devices=yardstick.devices)
    out = {**sandwich.summary(), "bdmc_is": None}
    if m.guide is not None and params.has_guide(m.guide):
        out["bdmc_is"] = yardstick.log_likelihood(params, sandwich.x, m.guide, estimator="is").mean
    return out


def _final_scores(m: Method, params: SBNParams, test, train, yardstick: Yardstick, posthoc=None,
                  bdmc_points: int = 0, choose_x=None) -> tuple[dict, SBNParams | None]:
    """The final scores, and the post-hoc guide's parameters where they scored the test set
    (else ``None``). Under the ``is`` yardstick a method has two guides to importance-sample
    with: its own, and one fitted post hoc to its frozen model (``posthoc()``). Both give
    stochastic lower bounds, so the better one is wanted; it is chosen on ``choose_x`` (the
    curve's fixed subset of the validation split) with the final yardstick, and only the chosen
    one scores the test set (``test_guide`` says which). Without ``choose_x`` both score the test
    set and the higher is kept."""
    candidates = []  # (label, params, guide)
    if m.guide is not None and params.has_guide(m.guide):
        candidates.append(("own", params, m.guide))
    if posthoc is not None:
        candidates.append(("posthoc", posthoc(), "recognition"))
    chosen_on = {}
    if len(candidates) > 1 and choose_x is not None:
        for label, p, guide in candidates:
            chosen_on[label] = yardstick.log_likelihood(p, choose_x, guide).mean
        best = max(candidates, key=lambda c: chosen_on[c[0]])
        label, scored_params, guide = best
        test_ll = yardstick.log_likelihood(scored_params, test, guide)
    else:
        scored = [(c, yardstick.log_likelihood(c[1], test, c[2])) for c in candidates]
        if len(scored) > 1:
            chosen_on = {c[0]: ll.mean for c, ll in scored}
        if scored:
            (label, scored_params, guide), test_ll = max(scored, key=lambda s: s[1].mean)
        else:
            label, scored_params, guide = "", params, m.guide
            test_ll = yardstick.log_likelihood(params, test, m.guide)  # e.g. exact or AIS: no guide needed
    on = "valid" if choose_x is not None else "test"
    train_ll = None if test_ll is None else yardstick.log_likelihood(scored_params, train, guide)
    scores = {
        "test_log_likelihood": None if test_ll is None else test_ll.mean,
        "test_estimator": yardstick.estimator if test_ll is None else test_ll.estimator,
        "test_stderr": None if test_ll is None else test_ll.mean_stderr,
        "test_guide": label if yardstick.estimator == "is" and test_ll is not None else None,
        "guide_chosen_on": on if chosen_on else None,  # the split the two guides were compared on
        "own_guide_log_likelihood": chosen_on.get("own"), "posthoc_log_likelihood": chosen_on.get("posthoc"),
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
    if yardstick.estimator == "ais" and bdmc_points:
        scores.update(_bdmc_scores(m, params, yardstick, bdmc_points))
    if has_guide and yardstick.estimator == "exact":
        with _one_blas_thread():
            scores["kl_q_p"] = float(np.mean(exact_kl(params, m.guide, test).q_p))
    return scores, (scored_params if label == "posthoc" else None)


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
        if k in ("resume", "out", "progress", "overwrite") or v is None:
            continue
        if k in merged and _normalised(v) != merged[k] and not (k == "methods" and _same_methods(v, merged[k])):
            conflicts.append(f"{k} was {merged[k]!r}, now {v!r}")
        merged[k] = v
    if conflicts:
        raise ValueError(f"cannot resume {out!r} with other settings ({'; '.join(conflicts)}); "
                         "leave them out to use the saved ones, or choose another --out")
    merged.update(resume=True, out=out)
    for k in ("progress", "overwrite"):
        if k in given:
            merged[k] = given[k]
    return merged


def _same_methods(given, saved) -> bool:
    names = [s.strip() for s in given.split(",")] if isinstance(given, str) else list(given)
    return all(n in saved or any(s.startswith(n + ":") for s in saved) for n in names)


def _read_results(out: str) -> dict | None:
    """``out/results.json``, every record checked (:func:`reporting.read_results`), or ``None``."""
    if not os.path.exists(os.path.join(out, "results.json")):
        return None
    advice = "start afresh with --overwrite (or choose another --out)"
    config, records = reporting.read_results(out, advice=advice)
    with open(os.path.join(out, "results.json"), encoding="utf-8") as f:
        grid = json.load(f).get("grid") or []  # a tuned run: every grid point's record, the unchosen too
    for i, r in enumerate(grid):
        problem = reporting.check_record(r)
        if problem:
            raise ValueError(f"{os.path.join(out, 'results.json')}: grid record {i} {problem}; {advice}")
    return {"config": config, "records": records, **({"grid": grid} if grid else {})}


def _previous_records(out: str, config: dict) -> dict[tuple, dict]:
    """The finished records of an earlier run in ``out`` with the same settings."""
    saved = _read_results(out)
    if saved is None:
        return {}
    old_config = saved["config"]
    # adding methods or seeds to a run is what resuming is for; where it runs does not change a cell
    ignore = {"methods", "seeds", "seed"} | set(RUNTIME_SETTINGS)
    changed = sorted(k for k in (set(config) | set(old_config)) - ignore if config.get(k) != old_config.get(k))
    if changed:
        what = ", ".join(f"{k} was {old_config.get(k)!r}, now {config.get(k)!r}" for k in changed)
        raise ValueError(f"cannot resume {out!r} with other settings ({what}); use another output folder")
    records = saved.get("grid") or saved["records"]  # a tuned run keeps every grid point's record
    return {_record_key(r): r for r in records if not r.get("error")}


def _record_key(r: Mapping) -> tuple:
    """A record's cell: (method, backend, seed, tuning point)."""
    return (r["method"], r["backend"], r["seed"], tuple(sorted((r.get("tuning") or {}).items())))


def check_resumable_comparison(out: str, manifest: dict) -> None:
    """Refuse ``--resume`` of ``out`` unless its manifest matches this comparison's: the data's
    name and the content hash of every split, the architecture, the code and the settings
    (but the methods and seeds, which a resume may add to)."""
    if read_manifest(out) is None and os.path.lexists(os.path.join(out, "results.json")):
        raise ValueError(f"{out!r} holds results but no {MANIFEST} (written by an older sbn-ppl, or removed), so its "
                         "data cannot be checked; start afresh with --overwrite (or choose another --out)")
    check_resumable(out, manifest, ignore=("settings.methods", "settings.seeds", "settings.seed")
                    + tuple(f"settings.{k}" for k in RUNTIME_SETTINGS))


def _clear(out: str) -> None:
    """``--overwrite``: remove the results in ``out`` and the method folders its records name (only
    folders directly inside ``out``; a link is unlinked, never followed)."""
    path = os.path.join(out, "results.json")
    folders = set()
    if os.path.isfile(path) and not os.path.islink(path):
        try:
            with open(path, encoding="utf-8") as f:
                records = json.load(f).get("records") or []
            folders = {os.path.basename(os.path.dirname(r["params"])) for r in records
                       if isinstance(r, dict) and isinstance(r.get("params"), str)}
        except (OSError, ValueError, AttributeError):
            pass  # unreadable results: the folders go with the next runs' overwrite
    for name in ("results.json", "results.csv", "learning_curves.png", "report.md", MANIFEST, *sorted(folders)):
        if name and name not in (".", ".."):
            remove_inside(out, name)


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
    for s in seeds:
        check_seed(s, f"every seed in seeds={config.seeds!r}")
    return [int(s) for s in seeds]


def _check_arguments(data, arch, methods) -> None:
    """The arguments of :func:`compare` that are not settings, by type, before anything runs."""
    if data is not None and not isinstance(data, (str, os.PathLike, Dataset)):
        raise TypeError(f"compare: data must be a data set name, a file path or a Dataset, got {type(data).__name__}")
    if arch is not None and not isinstance(arch, (str, Architecture)):
        raise TypeError(f"compare: arch must be a string such as '64-12-6' or an Architecture, got "
                        f"{type(arch).__name__}")
    if methods is None or isinstance(methods, str):
        return
    if not isinstance(methods, (list, tuple)) or not all(isinstance(m, (str, Method)) for m in methods):
        raise TypeError(f"compare: methods must be a comma-separated string or a list of method names or Method "
                        f"objects, got {methods!r}")


def _load(spec) -> tuple[Dataset, list[str]]:
    """The data set, and the content-hash warnings its loading gave (re-issued, and recorded
    with the results)."""
    import warnings

    from sbn_ppl.base.datasets import ContentHashWarning

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ContentHashWarning)
        dataset = load_dataset(spec)
    notes = []
    for w in caught:
        if issubclass(w.category, ContentHashWarning):
            notes.append(str(w.message))
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return dataset, notes


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


def run_cell(payload, cell: Cell):
    """A Ray task: one cell of the comparison ``payload = (config, dataset)``, run with no output
    folder; returns the record and the parameters to save (the driver writes the folder)."""
    config, dataset = payload
    comparison = _Comparison(config, dataset, [])
    m = comparison.methods[(cell.method, cell.backend)]
    params0 = initial_params(comparison.arch, dataset.train, cell.seed, config.data_bias)
    return comparison._run_one(m, params0, cell.seed, cell.tuning)


def _progress_bar(results, total: int, enabled: bool):
    """One bar over the cells, advanced as each ends."""
    if not enabled:
        yield from results
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, unit="run", desc="cells") as bar:
        for item in results:
            bar.update(1)
            yield item

