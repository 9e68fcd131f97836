"""``sbn-ppl certify DIR``: annealed importance sampling, with its bidirectional Monte Carlo gap,
beside a finished comparison's importance-sampling figures.

A comparison at the benchmarks' scale is scored by importance sampling with each method's guide
(or one fitted post hoc): a stochastic lower bound whose gap depends on the guide, so two methods
1 nat apart may rank their guides, not their models. ``certify`` takes the parameters each record
was scored with and adds, per record:

* AIS (``temperatures`` x ``chains``, the sigmoid schedule) on a seeded random ``points`` of the
  same test points (the record's ``test_pointwise`` gives its IS figure on exactly those points,
  so AIS - IS is a paired difference with its standard error);
* BDMC on ``bdmc_points`` points simulated from the model at the same schedule: forward AIS below,
  reverse AIS above; their gap bounds AIS's error on data like the model's (Grosse et al. 2015);
  and IS with the guide that scored the test set (the comparison's K; the post-hoc guide where it
  was chosen and saved, else the method's own) on the same simulated points, which says how far
  below the sandwich the guide's IS falls.

With ``max_gap`` the schedule is chosen per model, by BDMC first: ``temperatures``, then twice as
many, and so on (up to ``max_temperatures``), until the sandwich's gap is at most ``max_gap``
nats; AIS on the test points then runs at that schedule. An easy model costs a short schedule,
and a hard one gets the schedule its stated gap needs (or the longest allowed, with its gap).

Both are stochastic lower bounds, so the report ranks by the higher of the two per record and
says where they disagree by more than twice the paired standard error: AIS above IS (the guide's
IS falls short; AIS's error is bounded by its BDMC gap) or below it (the schedule too short to
improve on the guide). Each record's result is written to
``results.json`` (atomically) as soon as it is made, so an interrupted ``certify`` resumes where it
stopped; a record certified at other settings is certified again.
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Sequence

import numpy as np

from sbn_ppl.base.arrays import random_subset, subset_indices
from sbn_ppl.base.files import json_normalised
from sbn_ppl.base.params import SBNParams
from sbn_ppl.comparison import reporting

CERTIFY_SEED = 1  # the AIS points: one fixed subset of the scored test points, apart from the curve's


def certify(out: str | os.PathLike, *, points: int = 1000, temperatures: int = 1000, chains: int = 4,
            bdmc_points: int = 50, seed: int = 0, methods: Sequence[str] | None = None, progress: bool = True,
            devices: int | None = None, max_gap: float | None = None, max_temperatures: int = 8000) -> list[dict]:
    """Add AIS and its BDMC gap to every scored record of the comparison in ``out`` (see the
    module); returns the records. ``methods``: only these, in this order (default: every scored
    record, in the records' order).
    ``max_gap``: choose each model's schedule by BDMC, doubling ``temperatures`` until the gap is
    at most this many nats or the next would pass ``max_temperatures``."""
    from sbn_ppl.comparison.harness import CURVE_SUBSET_SEED, _load
    from sbn_ppl.yardstick import score
    from sbn_ppl.yardstick.bdmc import bdmc

    for name, value in (("points", points), ("temperatures", temperatures), ("chains", chains),
                        ("bdmc_points", bdmc_points)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < (0 if name == "bdmc_points"
                                                                                        else 1):
            raise ValueError(f"certify: {name} must be a whole number >= {0 if name == 'bdmc_points' else 1}, "
                             f"got {value!r}")
    if max_gap is not None:
        if isinstance(max_gap, bool) or not isinstance(max_gap, (int, float)) or not max_gap > 0 \
                or not math.isfinite(max_gap):
            raise ValueError(f"certify: max_gap must be a positive number of nats, got {max_gap!r}")
        if not bdmc_points:
            raise ValueError("certify: max_gap chooses the schedule by BDMC, which needs bdmc_points >= 1")
        if isinstance(max_temperatures, bool) or not isinstance(max_temperatures, (int, np.integer)) \
                or max_temperatures < temperatures:
            raise ValueError(f"certify: max_temperatures must be a whole number >= temperatures ({temperatures}), "
                             f"got {max_temperatures!r}")
    out = os.fspath(out)
    config, records = reporting.read_results(out)
    dataset, _ = _load(config["data"])
    test = random_subset(dataset.test, config.get("test_points"), CURVE_SUBSET_SEED)
    idx = subset_indices(len(test), points, CERTIFY_SEED) if points < len(test) else np.arange(len(test))
    x = test[idx]
    settings = {"points": int(len(idx)), "temperatures": int(temperatures), "chains": int(chains),
                "bdmc_points": int(bdmc_points), "seed": int(seed),
                "max_gap": None if max_gap is None else float(max_gap),
                "max_temperatures": None if max_gap is None else int(max_temperatures)}
    chosen = [r for r in records if not r.get("error") and r.get("params")
              and (methods is None or r["method"] in methods)]
    if methods is not None:
        names = {r["method"] for r in records}
        unknown = [m for m in methods if m not in names]
        if unknown:  # a misspelt name is an error, never silently nothing done for it
            raise ValueError(f"certify: {out!r} has no record of {', '.join(map(repr, unknown))} (it has "
                             f"{', '.join(sorted(names))})")
        order = list(methods)  # in the order given: the ones wanted first, should the run be cut short
        chosen.sort(key=lambda r: order.index(r["method"]))
    if not chosen:
        raise ValueError(f"certify: {out!r} has no scored record with parameters"
                         + (f" among {', '.join(methods)}" if methods else ""))
    for r in chosen:
        done = r.get("certified")
        if done and all(done.get(k) == v for k, v in settings.items()):
            continue
        params = SBNParams.load(_params_path(out, r["params"]))
        t0 = time.perf_counter()
        name = f"{r['method']} ({r['backend']}, seed {r.get('seed', 0)})"
        sandwich, search, steps = None, [], int(temperatures)
        if max_gap is not None:  # the schedule first: the shortest whose BDMC gap is within max_gap
            while True:
                t1 = time.perf_counter()
                sandwich = bdmc(params, bdmc_points, seed, steps, chains, devices=devices)
                search.append({"temperatures": steps, "bdmc_gap": sandwich.gap,
                               "seconds": time.perf_counter() - t1})
                if progress:
                    print(f"certify {name}: BDMC gap {sandwich.gap:.3f} nats at T={steps}", flush=True)
                if sandwich.gap <= max_gap or 2 * steps > max_temperatures:
                    break
                steps *= 2
        if progress:
            print(f"certify {name}: AIS T={steps}, C={chains} on {len(idx)} test points", flush=True)
        ais = score(params, x, "ais", ais_temperatures=steps, ais_chains=chains, seed=seed,
                    progress=progress, devices=devices)
        result: dict[str, Any] = {**settings, "ais_temperatures": steps, "ais_log_likelihood": ais.mean,
                                  "ais_stderr": ais.mean_stderr, "ais_estimator": ais.estimator}
        if search:
            result["schedule_search"] = search
        pointwise = r.get("test_pointwise")
        if pointwise is not None and len(pointwise) == len(test) and r.get("test_estimator", "").startswith("is"):
            diff = np.asarray(ais.per_point, np.float64) - np.asarray(pointwise, np.float64)[idx]
            se = float(diff.std(ddof=1) / math.sqrt(len(diff))) if len(diff) > 1 else None
            result.update(is_log_likelihood=float(np.mean(np.asarray(pointwise, np.float64)[idx])),
                          ais_minus_is=float(diff.mean()), ais_minus_is_stderr=se)
        if bdmc_points:
            if sandwich is None:
                sandwich = bdmc(params, bdmc_points, seed, steps, chains, devices=devices)
            result.update(sandwich.summary(), bdmc_is=None, bdmc_is_guide=None)
            scoring = _scoring_guide(out, r, params)
            if scoring is not None:  # the test set's guide's IS on the simulated points
                guide_params, guide, result["bdmc_is_guide"] = scoring
                result["bdmc_is"] = score(guide_params, sandwich.x, "is", guide=guide, seed=seed,
                                          is_particles=int(config.get("is_particles") or 1000)).mean
        result["seconds"] = time.perf_counter() - t0
        r["certified"] = json_normalised(result)  # as it reads back: a one-chain AIS's NaN standard error is None
        reporting.write_results(out, config, records)  # each record as it is made: an interruption loses none
    return records


def _scoring_guide(out: str, r: dict, params: SBNParams) -> tuple[SBNParams, str, str] | None:
    """The guide whose IS scored the record's test set: the post-hoc one where it did and was
    saved (``posthoc_params``), else the method's own; ``(parameters, guide name, "posthoc" or
    "own")``, or ``None`` where neither is at hand (a method without a guide, in a run that did
    not save its post-hoc one)."""
    saved = r.get("posthoc_params")
    if r.get("test_guide") == "posthoc" and saved:
        path = _params_path(out, saved)
        if os.path.isfile(path):
            return SBNParams.load(path), "recognition", "posthoc"
    guide = r.get("guide")
    if guide and params.has_guide(guide):
        return params, guide, "own"
    return None


def _params_path(out: str, saved: str) -> str:
    """The record's parameter file: where it says, else in its method folder under ``out`` (a
    folder moved, or a relative ``--out``)."""
    if os.path.isfile(saved):
        return saved
    return os.path.join(out, os.path.basename(os.path.dirname(saved)), os.path.basename(saved))


def add_certify_command(subparsers) -> Any:
    """Register ``sbn-ppl certify DIR [--points N] [--temperatures T] [--chains C] [--bdmc-points M]
    [--max-gap NATS] [--max-temperatures T]``."""
    p = subparsers.add_parser(
        "certify", help="AIS with its BDMC gap beside a finished comparison's IS figures",
        description="For every scored record of a `sbn-ppl compare` folder: AIS on a seeded random N of its test "
                    "points (paired with the record's IS figures on the same points) and bidirectional Monte Carlo "
                    "on points simulated from the model; written into results.json and report.md as each record "
                    "finishes (an interrupted run resumes).")
    p.add_argument("out", metavar="DIR", help="the output folder of sbn-ppl compare")
    p.add_argument("--points", type=int, default=1000, help="test points scored by AIS (default 1000)")
    p.add_argument("--temperatures", type=int, default=1000, help="AIS temperatures T (default 1000)")
    p.add_argument("--chains", type=int, default=4, help="AIS chains C per point (default 4)")
    p.add_argument("--bdmc-points", type=int, default=50, help="simulated points for BDMC (0: none; default 50)")
    p.add_argument("--max-gap", type=float, metavar="NATS",
                   help="choose each model's schedule by BDMC: --temperatures, then doubled until the gap is at most "
                        "NATS (or the next would pass --max-temperatures); AIS then runs at that schedule")
    p.add_argument("--max-temperatures", type=int, default=8000, help="with --max-gap: the longest schedule tried "
                                                                      "(default 8000)")
    p.add_argument("--methods", help="comma-separated: only these methods, certified in this order (default: all, "
                                     "in the run's order)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--devices", type=int)
    p.add_argument("--quiet", action="store_true", help="no progress")
    p.set_defaults(func=_cmd_certify)
    return p


def _cmd_certify(args) -> int:
    methods = None if args.methods is None else [m.strip() for m in args.methods.split(",") if m.strip()]
    certify(args.out, points=args.points, temperatures=args.temperatures, chains=args.chains,
            bdmc_points=args.bdmc_points, seed=args.seed, methods=methods, progress=not args.quiet,
            devices=args.devices, max_gap=args.max_gap, max_temperatures=args.max_temperatures)
    with open(os.path.join(args.out, "report.md")) as f:
        text = f.read()
    start = text.find("## AIS beside IS")
    print(text[start:text.find("\n## ", start + 3)] if start >= 0 else text)
    return 0
