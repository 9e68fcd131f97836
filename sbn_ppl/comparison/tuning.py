"""Each method at its own settings, chosen on the validation split (``compare --tune``).

A grid (``{"lr": [3e-4, 1e-3]}``, :func:`sbn_ppl.comparison.config.tuning_grid`) gives every
method one cell per point of the options it takes; :func:`select_tuned` keeps, per method,
the point with the best mean validation-curve score over seeds. The test split is never read
to choose: the chosen point's records carry its test scores, every point's validation score
and the selection's cost.
"""
from __future__ import annotations

import itertools
import math
from typing import Mapping, Sequence

import numpy as np


def tuning_points(grid: Mapping[str, list]) -> list[tuple]:
    """Every point of a tuning grid, as sorted ``(name, value)`` tuples (``[()]`` when none)."""
    names = sorted(grid)
    return [tuple(zip(names, values)) for values in itertools.product(*(grid[n] for n in names))] or [()]


def validation_score(record: Mapping, select: str) -> float:
    """What tuning ranks a grid point's run by: its learning-curve score on the validation subset,
    the best checkpoint's (``select="best"``) or the last one's; ``-inf`` for a failed run."""
    scores = [p["test_log_likelihood"] for p in record.get("curve") or [] if p.get("test_log_likelihood") is not None]
    if record.get("error") or not scores:
        return -math.inf
    return max(scores) if select == "best" else scores[-1]


def select_tuned(records: Sequence[dict], select: str) -> list[dict]:
    """Each method at the grid point with the best mean validation score over its seeds (the
    test split is never read): its records, each with ``tuned`` (the chosen point, every point's
    validation score, and the selection's cost in training seconds)."""
    by_method: dict[tuple, dict[tuple, list[dict]]] = {}
    for r in records:
        key = tuple(sorted((r.get("tuning") or {}).items()))
        by_method.setdefault((r["method"], r["backend"]), {}).setdefault(key, []).append(r)
    chosen = []
    for points in by_method.values():
        scores = {p: float(np.mean([validation_score(r, select) for r in rs])) for p, rs in points.items()}
        best = max(scores, key=lambda p: scores[p])
        cost = sum(float(r.get("seconds") or 0.0) for rs in points.values() for r in rs)
        grid = [{"point": dict(p), "validation_log_likelihood": v if math.isfinite(v) else None}
                for p, v in scores.items()]
        tuned = {"chosen": dict(best), "grid": grid, "selection_seconds": cost}
        tuned["at_edge"] = at_edge(tuned)
        for r in points[best]:
            chosen.append({**r, "tuned": tuned})
    return chosen


def at_edge(tuned: Mapping) -> list[str]:
    """The chosen point's numeric options that sit at the end of their axis of the grid (its
    smallest or largest value, of two or more), as ``"lr=0.003 (the largest of 3)"``: the best
    setting may lie beyond the grid, which should then be extended that way."""
    edges = []
    for name, value in tuned["chosen"].items():
        axis = sorted({g["point"][name] for g in tuned["grid"] if name in g["point"]
                       and isinstance(g["point"][name], (int, float)) and not isinstance(g["point"][name], bool)})
        if len(axis) < 2 or isinstance(value, bool) or value not in axis:
            continue
        if value in (axis[0], axis[-1]):
            edges.append(f"{name}={value} (the {'smallest' if value == axis[0] else 'largest'} of {len(axis)})")
    return edges


def tuned_choices(folder: str) -> dict[str, dict]:
    """The options each method was run at in a finished tuning run (``compare --tune``), from its
    ``results.json``: ``{"method:backend": {option: value}}`` (the chosen grid point merged into
    the method's options there). A ``ValueError`` where ``folder`` holds no tuning run."""
    from sbn_ppl.comparison.reporting import read_results

    config, records = read_results(folder, advice="give the folder of a finished sbn-ppl compare --tune run")
    if not config.get("tune"):
        raise ValueError(f"tuned_from: {folder!r} is not a tuning run (its compare had no --tune)")
    chosen = {}
    for r in records:
        if r.get("error") or not r.get("tuned"):
            continue
        label = f"{r['method']}:{r['backend']}"
        point = dict(r["tuned"]["chosen"])
        if chosen.setdefault(label, point) != point:
            raise ValueError(f"tuned_from: {folder!r} chose different points for {label} over seeds")
    return chosen
