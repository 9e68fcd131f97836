"""What a comparison leaves behind, and ``sbn-ppl report``: the aggregated Markdown table
with its verdict, ``results.csv`` (one row per record), ``learning_curves.png`` and a
self-contained ``report.md``.

:func:`write_results` writes them (and ``results.json``) after every record of
:func:`sbn_ppl.compare`; :func:`report` renders them again from the ``results.json`` of
one or more output folders, merging runs of different methods or seeds. The statistics
(means over seeds, paired differences, time to quality) are :mod:`sbn_ppl.comparison.aggregate`'s.
Every file is written atomically (:mod:`sbn_ppl.base.files`).

``sbn_ppl.report(dirs)`` is :func:`report`.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import sys
from typing import Any, Mapping, Sequence

import numpy as np

from sbn_ppl.comparison.aggregate import QUALITY_GAP, Row, Summary, curve_band, label, summarize
from sbn_ppl.base.files import write_atomic, write_json
from sbn_ppl.comparison.published import published_table
from sbn_ppl.comparison.tuning import at_edge

# One row of results.csv per (method, backend, seed); results.json also holds "options",
# "test_pointwise" and "curve".
CSV_FIELDS = (
    "method", "backend", "seed", "guide", "steps", "epochs", "seconds", "steps_per_second", "cell_seconds", "objective",
    "selected_step",
    "test_log_likelihood", "test_stderr", "test_estimator", "test_guide", "guide_chosen_on",
    "own_guide_log_likelihood", "posthoc_log_likelihood", "test_is_log_likelihood", "test_is_stderr",
    "test_is_khat", "test_is_ess", "train_log_likelihood", "bound", "kl_q_p", "warnings", "params", "error",
)
OPTIONAL_CSV_FIELDS = ("guide_gradient_variance",)  # columns only where some record has them (a diagnostic's)
MERGEABLE = ("methods", "seeds", "seed")  # the settings in which merged runs may differ
RELATIVE_RANGE = (-5.0, 0.5)  # nats around the best final value shown by the relative panels
FILES = ("results.csv", "learning_curves.png", "report.md")
VERSIONS = ("numpy", "scipy", "jax", "jaxlib", "numpyro", "optax", "torch", "pyro-ppl", "matplotlib")

__all__ = ["ACROSS_FIELDS", "CSV_FIELDS", "across_data_sets", "add_report_command", "csv_text", "markdown_table",
           "merge_runs", "merge_tuning_runs", "plot_learning_curves", "ranked", "read_grid", "read_results", "report",
           "report_markdown", "write_results"]


# -- the table ---------------------------------------------------------------------------------
def ranked(records: Sequence[Mapping[str, Any]], quality_gap: float = QUALITY_GAP) -> list[Mapping[str, Any]]:
    """The records in table order: by the rank of their method over seeds (best first; methods
    without a score last), then by seed."""
    position = {row.label: i for i, row in enumerate(summarize(records, quality_gap).rows)}
    return sorted(records, key=lambda r: (position[label(r)], r.get("seed", 0)))


def markdown_table(records: Sequence[Mapping[str, Any]], quality_gap: float = QUALITY_GAP) -> str:
    """One row per (method, backend), aggregated over seeds and ranked, then the notes and
    the one-line verdict (test log-likelihoods in nats per data point)."""
    return _table(summarize(records, quality_gap))


def _table(summary: Summary) -> str:
    gap = f"{summary.quality_gap:g}"
    pct = f"{summary.level:.0%}"
    head = ("method", "backend", "steps", "seconds", "steps/s", "test log p(x) ± SE", f"Δ to best [{pct} CI]",
            "rank", "seeds", f"time to within {gap}", "estimator", "train log p(x)", "own bound", "KL(q‖p)",
            "IS k̂ / ESS")
    notes = _Notes()
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in summary.rows:
        lines.append("| " + " | ".join(_cell(c) for c in _cells(row, notes)) + " |")
    return "\n".join(lines + [""] + _legend(summary, notes) + ["", summary.verdict()])


def _cells(row: Row, notes: "_Notes") -> list[str]:
    total = len(row.seeds) + len(row.failed) + len(row.unscored)
    seeds = str(len(row.seeds)) if total == len(row.seeds) else f"{len(row.seeds)} of {total}"
    if row.test is None:  # every seed failed, or no estimate (importance sampling without a guide)
        test = f"failed: {row.failed[0][1]}" if row.failed else "–"
        for error, seeds_failed in list(_grouped(row.failed).items())[1:]:
            seeds += notes.mark("†", f"{row.label}, {_seed_list(seeds_failed)}: failed: {error}")
        seeds = seeds if total > 1 else "–"
        return [row.method, row.backend, "–", "–", "–", test, "–", "–", seeds] + ["–"] * 6
    for error, seeds_failed in _grouped(row.failed).items():
        seeds += notes.mark("†", f"{row.label}, {_seed_list(seeds_failed)}: failed: {error}")
    test = f"{row.test.mean:.3f}" + ("" if row.test.stderr is None else f" ± {row.test.stderr:.3f}")
    if len(row.seeds) == 1:
        test += " (1 seed)"
    for warning, seeds_warned in _grouped(row.warnings).items():
        test += notes.mark("⚠", f"{row.label}, {_seed_list(seeds_warned)}: {warning}")
    return [row.method, row.backend, _num(row.steps, 0), _num(row.seconds, 1), _num(row.steps_per_second, 1),
            test, _difference(row), str(row.rank), seeds, _time(row), row.estimator or "–", _num(row.train),
            _num(row.bound), _num(row.kl, 3), _is_diagnostics(row)]


def _grouped(pairs) -> dict[str, list[int]]:
    """``[(seed, text), ...]`` as ``{text: [seed, ...]}``, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for seed, text in pairs:
        groups.setdefault(text, []).append(seed)
    return groups


def _seed_list(seeds: Sequence[int]) -> str:
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"


def _difference(row: Row) -> str:
    d = row.diff
    if row.best:
        return "best"
    if d is None:
        return "– (no common seed)"
    if d.low is None:
        return f"{d.mean:+.3f} (no interval)"
    return f"{d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}]" + (" ≈" if d.contains_zero else "")


def _time(row: Row) -> str:
    t, n = row.time_to_quality, len(row.seeds) + len(row.unscored)
    if t is None:
        return "–"
    if not math.isfinite(t):
        return "not reached"
    return f"{t:.1f} s" + (f" ({row.reached}/{n} seeds)" if row.reached < n else "")


def _is_diagnostics(row: Row) -> str:
    if row.khat is None and row.ess is None:
        return "–"
    return f"{_num(row.khat)} / {_num(row.ess, 0)}"


def _legend(summary: Summary, notes: "_Notes") -> list[str]:
    """The notes under the table: what each column means here, then the marked footnotes."""
    rows = [r for r in summary.rows if r.test is not None]
    pct = f"{summary.level:.0%}"
    out = []
    if any(len(r.seeds) > 1 for r in rows):
        out.append("- test log p(x) ± SE: mean over seeds ± its standard error over seeds.")
    if any(len(r.seeds) == 1 for r in rows):
        out.append("- (1 seed): ± is the estimate's own standard error over test points; seed-to-seed "
                   "variation is not included.")
    if any(r.diff is not None and r.diff.over == "seeds" and r.diff.low is not None for r in rows):
        out.append(f"- Δ to best: the method's minus the best method's test log p(x), paired by seed: mean of the "
                   f"per-seed differences (same test points), {pct} t interval with S−1 degrees of freedom over "
                   "the S common seeds.")
    if any(r.diff is not None and r.diff.over == "test points" for r in rows):
        out.append(f"- Δ to best with one common seed: mean of the per-test-point differences, {pct} normal "
                   "interval; seed-to-seed variation is not included.")
    if any(r.diff is not None and r.diff.contains_zero for r in rows):
        out.append(f"- ≈: not significantly different from the best (the {pct} interval contains 0).")
    if summary.quality_reference is not None:
        out.append(f"- time to within {summary.quality_gap:g}: training seconds until the learning curve first "
                   f"reaches {summary.quality_threshold:.3f} nats, {summary.quality_gap:g} below the best final "
                   f"curve value ({summary.quality_reference:.3f}, {summary.quality_reference_label}; mean over "
                   "seeds); median over seeds, read at the scored checkpoints; not reached: not within the run.")
    if any(r.khat is not None or r.ess is not None for r in rows):
        out.append("- IS k̂ / ESS: importance sampling with the method's own guide: Pareto k̂ of the weights (the "
                   "worst seed's; above 0.7 the IS estimate and its standard error are not to be trusted) and "
                   "effective sample size per test point (the worst seed's).")
    return out + notes.lines()


class _Notes:
    """Numbered footnotes (⚠1, †2, ...): the same text gets the same number."""

    def __init__(self):
        self.texts: dict[str, tuple[str, int]] = {}

    def mark(self, symbol: str, text: str) -> str:
        if text not in self.texts:
            self.texts[text] = (symbol, len(self.texts) + 1)
        symbol, n = self.texts[text]
        return f" {symbol}{n}"

    def lines(self) -> list[str]:
        return [f"- {symbol}{n} {text}" for text, (symbol, n) in self.texts.items()]


def _cell(value) -> str:
    return " ".join(str(value).split()).replace("|", "/")


def _num(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


# -- results.csv -------------------------------------------------------------------------------
def csv_text(records: Sequence[Mapping[str, Any]]) -> str:
    """Long form: one row per record (method, backend, seed), the fields of ``CSV_FIELDS`` (and
    of ``OPTIONAL_CSV_FIELDS`` that some record has)."""
    fields = CSV_FIELDS + tuple(k for k in OPTIONAL_CSV_FIELDS if any(r.get(k) is not None for r in records))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in records:
        row = {k: ("" if r.get(k) is None else r.get(k)) for k in fields}
        row["warnings"] = "; ".join(map(str, r.get("warnings") or []))
        writer.writerow(row)
    return buffer.getvalue()


# -- learning_curves.png -----------------------------------------------------------------------
def plot_learning_curves(path: str, records: Sequence[Mapping[str, Any]], config: Mapping[str, Any],
                         quality_gap: float = QUALITY_GAP) -> None:
    """Test log p(x) on the curve points during training: mean ± SE band over seeds, one
    colour per method, against training seconds (left) and steps, or epochs under an epoch
    budget (right; symlog, so the shared start at 0 shows).

    The bottom row draws each curve minus the best final curve value on a symlog axis (linear
    within ±0.1 nats), clipped to ``RELATIVE_RANGE`` with the clipped points marked, so that
    methods a few hundredths of a nat apart do not merge into one line; the dashed line is the
    time-to-quality threshold.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    summary = summarize(records, quality_gap)
    ref = summary.quality_reference
    curves: dict[str, list] = {}
    for r in records:
        if not r.get("error"):
            curves.setdefault(label(r), []).append(r.get("curve") or [])
    colours = _colours(list(curves))
    along = ("epoch", "epochs") if config.get("epochs") else ("step", "steps")

    fig = Figure(figsize=(13, 8), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 2, sharex="col")
    clipped = False
    for col, (x, xlabel) in enumerate((("seconds", "training time (s)"), along)):
        top, bottom = axes[0, col], axes[1, col]
        smallest = math.inf  # the first checkpoint after 0: the linear part of a symlog x axis
        for row in summary.rows:
            grid, mean, se = curve_band(curves.get(row.label, []), x)
            if grid.size == 0:
                continue
            smallest = min(smallest, grid[grid > 0].min(initial=math.inf))
            # markers only where every seed has a checkpoint (not at interpolated points)
            aligned = all(np.array_equal(_checkpoints(c, x)[:grid.size], grid) for c in curves[row.label])
            style = dict(color=colours[row.label], marker="o" if aligned else None, markersize=3, linewidth=1.4)
            _band(top, grid, mean, se, style, label=row.label)
            if ref is not None:
                clipped |= _band(bottom, grid, mean - ref, se, style, clip=RELATIVE_RANGE)
        if x != "seconds":
            bottom.set_xscale("symlog", linthresh=smallest if math.isfinite(smallest) else 1.0)
        bottom.set_xlabel(xlabel)
        if ref is not None:
            _relative_axis(bottom, quality_gap)
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    curve_n, split = config.get("curve_points_used"), config.get("curve_split") or "test"
    axes[0, 0].set_ylabel("test log p(x), nats" + (f" ({curve_n} {split} points)" if curve_n else ""))
    if ref is not None:
        low, high = RELATIVE_RANGE
        axes[1, 0].set_ylabel(f"minus the best final value ({ref:.2f}), nats\nsymlog scale, clipped to "
                              f"[{low:+g}, {high:+g}]")
        if clipped:
            axes[1, 0].text(0.01, 0.98, "▼ ▲ clipped at the panel's edge", transform=axes[1, 0].transAxes,
                            fontsize=8, va="top")
    if axes[0, 0].lines:
        fig.legend(*axes[0, 0].get_legend_handles_labels(), loc="outside right center", fontsize=8)
    band = f"mean ± SE over {summary.num_seeds} seeds" if summary.num_seeds > 1 else "1 seed"
    fig.suptitle(f"{config.get('data')}, {config.get('arch')}: {config.get('estimator')} test log p(x) during "
                 f"training ({band}); dashed: best final − {quality_gap:g} nats", fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    write_atomic(path, buffer.getvalue())


def _band(ax, grid, mean, se, style: dict, label: str | None = None, clip: tuple | None = None) -> bool:
    """A mean curve with its ± SE band; with ``clip=(low, high)``, values beyond are drawn at
    the edge and marked ▼ / ▲. Returns whether anything was clipped."""
    low, high = clip or (-math.inf, math.inf)
    ax.plot(grid, np.clip(mean, low, high), label=label, **style)
    if se is not None:
        ax.fill_between(grid, np.clip(mean - se, low, high), np.clip(mean + se, low, high), color=style["color"],
                        alpha=0.2, linewidth=0)
    clipped = False
    for edge, marker, beyond in ((low, "v", mean < low), (high, "^", mean > high)):
        if beyond.any():
            clipped = True
            ax.plot(grid[beyond], np.full(beyond.sum(), edge), linestyle="none", marker=marker, markersize=7,
                    color=style["color"], markeredgecolor="black", markeredgewidth=0.5)
    return clipped


def _relative_axis(ax, quality_gap: float) -> None:
    """Symlog (linear within ±0.1 nats), the clip range dotted, 0 and the quality threshold drawn."""
    low, high = RELATIVE_RANGE
    ax.set_yscale("symlog", linthresh=0.1, linscale=0.5)
    ax.set_ylim(low * 1.25, high * 1.4)
    ticks = [t for t in (-5, -2, -1, -0.5, -0.2, -0.1, 0, 0.1, 0.2, 0.5) if low <= t <= high]
    ax.set_yticks(ticks, [f"{t:+g}" if t else "0" for t in ticks])
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.axhline(-quality_gap, color="black", linewidth=0.8, linestyle="--")
    for edge in (low, high):
        ax.axhline(edge, color="grey", linewidth=0.6, linestyle=":")


def _checkpoints(curve, x: str) -> list[float]:
    return [float(c[x]) for c in curve or [] if c.get("test_log_likelihood") is not None and c.get(x) is not None]


def _colours(names: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if len(names) <= 10 else "tab20"]
    return {name: cmap(i % cmap.N) for i, name in enumerate(names)}


# -- gradient_variance.png ---------------------------------------------------------------------
def has_gradient_variance(records: Sequence[Mapping[str, Any]]) -> bool:
    """Whether some run recorded the guide gradient's variance (``gradient_variance_draws``)."""
    return any(p.get("guide_gradient_variance") is not None for r in records for p in r.get("curve") or [])


def plot_gradient_variance(path: str, records: Sequence[Mapping[str, Any]], config: Mapping[str, Any]) -> None:
    """The total variance of each method's recognition-network gradient (the sum over the
    guide's coordinates of the per-coordinate variance over repeated draws on one fixed
    training batch) at the scored checkpoints, log scale, against steps (symlog, so step 0
    shows): one colour per method, one line per seed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lines: dict[str, list] = {}
    for r in records:
        points = [(float(p["step"]), float(p["guide_gradient_variance"])) for p in r.get("curve") or []
                  if p.get("guide_gradient_variance") is not None]
        if points and not r.get("error"):
            lines.setdefault(label(r), []).append(points)
    colours = _colours(list(lines))
    fig = Figure(figsize=(9, 5.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    smallest = min((s for runs in lines.values() for run in runs for s, _ in run if s > 0), default=1.0)
    for name, runs in lines.items():
        for i, run in enumerate(runs):
            steps, variance = zip(*run)
            ax.plot(steps, variance, color=colours[name], marker="o", markersize=3, linewidth=1.4,
                    label=name if i == 0 else None)
    ax.set_yscale("log")
    ax.set_xscale("symlog", linthresh=smallest)
    ax.set_xlabel("steps")
    ax.set_ylabel("total variance of the guide's gradient (sum over coordinates)")
    ax.grid(alpha=0.3, which="both")
    if lines:
        fig.legend(loc="outside right center", fontsize=8)
    fig.suptitle(f"{config.get('data')}, {config.get('arch')}: variance of the recognition network's gradient, "
                 f"{config.get('gradient_variance_draws')} draws on one fixed training batch", fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    write_atomic(path, buffer.getvalue())


# -- certified.png -----------------------------------------------------------------------------
def has_certified(records: Sequence[Mapping[str, Any]]) -> bool:
    """Whether ``sbn-ppl certify`` has scored some record (its ``certified`` field)."""
    return any(r.get("certified") for r in records)


def plot_certified(path: str, records: Sequence[Mapping[str, Any]], config: Mapping[str, Any]) -> None:
    """Each certified record's two lower bounds on the same test points, one row each, ranked
    as the report ranks them (by the higher): IS (open circle, with twice the paired standard
    error of AIS - IS as a bar) and AIS (filled), with AIS's BDMC gap (on points simulated from
    the model, at the same schedule) drawn from AIS upwards: how far above AIS the truth may lie
    on such points."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = sorted((r for r in records if r.get("certified")), key=lambda r: _tighter(r["certified"])[0])
    fig = Figure(figsize=(9, 1.2 + 0.38 * len(rows)), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    shown: set[str] = set()

    def once(name: str) -> str | None:  # each legend entry once
        return None if name in shown or shown.add(name) else name

    for y, r in enumerate(rows):
        c = r["certified"]
        ais, is_, gap = c["ais_log_likelihood"], c.get("is_log_likelihood"), c.get("bdmc_gap")
        if gap is not None and math.isfinite(gap):
            ax.plot([ais, ais + max(gap, 0.0)], [y, y], color="tab:orange", linewidth=5, alpha=0.45,
                    solid_capstyle="butt", label=once("AIS + its BDMC gap"))
        if is_ is not None:
            se = c.get("ais_minus_is_stderr")
            ax.errorbar([is_], [y], xerr=None if se is None else [[2 * se], [2 * se]], fmt="o", mfc="white",
                        color="tab:blue", capsize=3, label=once("IS, ± twice the paired SE of AIS − IS"))
        ax.plot([ais], [y], "o", color="tab:orange", label=once("AIS at the T shown"))
        ax.annotate(f"T={c.get('ais_temperatures', c.get('temperatures'))}", (ais, y), textcoords="offset points",
                    xytext=(0, 6), ha="center", fontsize=7, color="0.35")
    ax.set_yticks(range(len(rows)), [label(r) for r in rows], fontsize=8)
    ax.set_xlabel("mean log p(x) on the certified test points (nats; higher is better)")
    ax.grid(alpha=0.3, axis="x")
    if rows:
        c0 = rows[0]["certified"]
        ax.legend(fontsize=8, loc="lower right")
        fig.suptitle(f"{config.get('data')}, {config.get('arch')}: two lower bounds on {c0['points']} test points "
                     f"(AIS with C = {c0['chains']}; BDMC on {c0['bdmc_points']} simulated points)", fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    write_atomic(path, buffer.getvalue())


def _gradient_variance_section(records: Sequence[Mapping[str, Any]], config: Mapping[str, Any]) -> list[str]:
    if not has_gradient_variance(records):
        return []
    return ["## Gradient variance", "", "![gradient variance](gradient_variance.png)", "",
            f"At each scored checkpoint, {config.get('gradient_variance_draws')} draws of each method's estimate of "
            "its recognition network's gradient (the per-point average on one fixed, seeded batch of training "
            "points, the same for every method; each method's own step direction) at its current state; plotted: "
            "the sum over the guide's coordinates of each coordinate's variance over the draws, on a log scale. "
            "Methods without a recognition network have none.", ""]


# -- report.md ---------------------------------------------------------------------------------
def report_markdown(config: Mapping[str, Any], records: Sequence[Mapping[str, Any]],
                    quality_gap: float = QUALITY_GAP, plot: str = "learning_curves.png") -> str:
    """A self-contained report: the aggregated table and verdict, the learning curves (``plot``,
    a path relative to the report), every run, the settings, the package versions and the machine."""
    summary = summarize(records, quality_gap)
    seeds = sorted({r.get("seed", 0) for r in records})
    reference = published_table(config.get("data"), config.get("arch"))
    parts = [
        f"# {config.get('data')}, {config.get('arch')}: {len(summary.rows)} method(s), "
        f"{len(seeds)} seed(s)",
        "",
        _description(config, seeds),
        "",
        *[f"**Data warning:** {w}\n" for w in config.get("data_warnings") or []],
        "## Results",
        "",
        _table(summary),
        "",
        *([reference, ""] if reference else []),
        "## Learning curves",
        "",
        f"![learning curves]({plot})",
        "",
        f"Test log p(x) during training{_curve_points(config)}. Top: mean ± standard error over seeds "
        "against training time and against steps (epochs under an epoch budget; symlog axis, so the "
        "shared initial state at 0 shows). Bottom: the same curves minus the best final value, on a "
        f"symlog axis (linear within ±0.1 nats), clipped to [{RELATIVE_RANGE[0]:+g}, {RELATIVE_RANGE[1]:+g}] "
        f"nats with clipped points marked ▼ ▲; the dashed line is the time-to-quality threshold "
        f"({quality_gap:g} nats below).",
        "",
        *_gradient_variance_section(records, config),
        *_tuning_section(records),
        *_bdmc_section(records),
        *_certified_section(records),
        "## Every run",
        "",
        _runs_table(records, summary),
        "",
        "## Settings",
        "",
        _settings_table(config),
        "",
        "## Software and machine",
        "",
        "Where this report was rendered:",
        "",
        _environment(),
        "",
    ]
    return "\n".join(parts)


def _tuning_section(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Under ``tune``: each method's grid, every point's mean validation score over seeds, the
    chosen point (by validation only), and the selection's cost in training seconds."""
    tuned = {(r["method"], r["backend"]): r["tuned"] for r in records
             if r.get("tuned") and any(g["point"] for g in r["tuned"]["grid"])}  # a method that takes no grid option
    if not tuned:
        return []
    lines = ["## Tuning (chosen on the validation split)", "",
             "| method | backend | grid point | validation log p(x) | chosen |", "|---|---|---|---|---|"]
    for (method, backend), t in tuned.items():
        for g in t["grid"]:
            point = ", ".join(f"{k}={v}" for k, v in g["point"].items())
            v = g["validation_log_likelihood"]
            lines.append(f"| {method} | {backend} | {point} | {'failed' if v is None else f'{v:.3f}'} | "
                         f"{'**chosen**' if g['point'] == t['chosen'] else ''} |")
    cost = sum(t["selection_seconds"] for t in tuned.values())
    lines += ["", f"Selection cost: {cost:.1f} s of training over every grid point and seed (the test split is "
                  "read only for the chosen points' final scores).", ""]
    edges = {f"{m} ({b})": at_edge(t) for (m, b), t in tuned.items()}
    edges = {k: v for k, v in edges.items() if v}
    if edges:
        lines += ["Chosen at the edge of the grid, so the best setting may lie beyond it (extend the grid that "
                  "way to know): " + "; ".join(f"{k}: {', '.join(v)}" for k, v in edges.items()) + ".", ""]
    return lines


def _bdmc_section(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Under AIS: each method's bidirectional Monte Carlo sandwich on data simulated from its model."""
    rows = [r for r in records if r.get("bdmc_gap") is not None]
    if not rows:
        return []
    lines = ["## AIS's certified gap (bidirectional Monte Carlo)", "",
             "| method | backend | seed | simulated points | T | C | forward AIS (lower) | reverse AIS (upper) | "
             "gap | IS with the method's guide |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        is_sim = r.get("bdmc_is")
        lines.append(f"| {r['method']} | {r['backend']} | {r.get('seed', 0)} | {r['bdmc_points']} | "
                     f"{r['bdmc_temperatures']} | {r['bdmc_chains']} | {r['bdmc_lower']:.3f} | {r['bdmc_upper']:.3f} | "
                     f"{r['bdmc_gap']:.3f} | {'–' if is_sim is None else f'{is_sim:.3f}'} |")
    lines += ["", "On data simulated from each fitted model, forward AIS (prior to posterior) is a stochastic lower "
                  "bound on log p(x) and reverse AIS (from the exact posterior sample back to the prior) a stochastic "
                  "upper bound; the gap bounds the error of the table's AIS figure at its schedule on such data "
                  "(Grosse, Ghahramani & Adams 2015). The last column is importance sampling with the method's own "
                  "guide on the same points: how far below the sandwich its IS falls.", ""]
    return lines


def _certified_section(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """report.md's section on the records ``certify`` has scored (none: nothing)."""
    rows = [r for r in records if r.get("certified")]
    if not rows:
        return []
    c0 = rows[0]["certified"]
    if c0.get("max_gap") is not None:
        schedule = (f"AIS with C = {c0['chains']} chains and T temperatures chosen per model: the first of "
                    f"{c0['temperatures']}, {2 * c0['temperatures']}, ... (at most {c0['max_temperatures']}) whose "
                    f"BDMC gap is at most {c0['max_gap']:g} nats,")
    else:
        schedule = f"AIS with T = {c0['temperatures']} temperatures and C = {c0['chains']} chains"
    lines = [f"## AIS beside IS, with its certified gap (`sbn-ppl certify`)", "",
             "![AIS beside IS](certified.png)", "",
             f"{schedule} on a seeded random {c0['points']} of the scored test points; IS on the same points from "
             f"the record's per-point figures; BDMC on {c0['bdmc_points']} points simulated from each model at the "
             "same schedule.", "",
             "| method | backend | seed | T | IS (all scored points) | IS (these points) | AIS ± SE | AIS − IS ± SE | "
             "AIS within IS? | BDMC lower / upper (gap) | the test set's guide's IS on the simulated points |",
             "|---|---|---|---:|---|---|---|---|---|---|---|"]
    above, below = [], []
    ranked_rows = sorted(rows, key=lambda r: -_tighter(r["certified"])[0])
    for r in ranked_rows:
        c = r["certified"]
        d, se = c.get("ais_minus_is"), c.get("ais_minus_is_stderr")
        apart = d is not None and se is not None and abs(d) > 2 * se
        if apart:
            (above if d > 0 else below).append(f"{r['method']} ({r['backend']})")
        lines.append(f"| {r['method']} | {r['backend']} | {r.get('seed', 0)} | "
                     f"{c.get('ais_temperatures', c['temperatures'])} | {_num(r.get('test_log_likelihood'))} | "
                     f"{_num(c.get('is_log_likelihood'))} | {_num(c['ais_log_likelihood'])} ± {_num(c['ais_stderr'], 3)} | "
                     f"{'–' if d is None else f'{d:+.2f} ± {se:.2f}'} | "
                     f"{'–' if d is None else ('**no**' if apart else 'yes')} | "
                     f"{_num(c.get('bdmc_lower'))} / {_num(c.get('bdmc_upper'))} ({_num(c.get('bdmc_gap'))}) | "
                     f"{_num(c.get('bdmc_is'))}{_which_guide(c)} |")
    order = ", ".join(f"{r['method']} ({r['backend']}, {which} {value:.2f})"
                      for r, (value, which) in ((r, _tighter(r["certified"])) for r in ranked_rows))
    lines += ["", f"Ranked by the higher of the two lower bounds on these points: {order}."]
    if above:
        lines.append(f"AIS is above IS by more than twice their paired standard error for {', '.join(above)}: the "
                     "guide's IS falls short there, and AIS's error is bounded by its BDMC gap.")
    if below:
        lines.append(f"AIS is below IS by more than twice their paired standard error for {', '.join(below)}: its "
                     "schedule is too short to improve on the guide (see the BDMC gap), so IS is the tighter bound.")
    if not above and not below:
        lines.append("IS and AIS agree within twice their paired standard error for every method.")
    if any(r["certified"].get("ais_stderr") is None for r in rows):
        lines.append("AIS ± –: one chain a point, so the estimator's own spread cannot be estimated; AIS − IS's "
                     "standard error, across the points, is the one to read.")
    return lines + [""]


def _tighter(c: Mapping[str, Any]) -> tuple[float, str]:
    """A certified record's higher lower bound on its points, and which: AIS, or IS where
    higher (both are stochastic lower bounds on log p(x))."""
    ais, is_ = c["ais_log_likelihood"], c.get("is_log_likelihood")
    return (is_, "IS") if is_ is not None and is_ > ais else (ais, "AIS")


def _which_guide(c: Mapping[str, Any]) -> str:
    """Which guide made a certified record's IS on the simulated points (older records: the own)."""
    if c.get("bdmc_is") is None:
        return ""
    return " (post hoc)" if c.get("bdmc_is_guide") == "posthoc" else " (own)"


def _description(config: Mapping[str, Any], seeds: Sequence[int]) -> str:
    budget = " and ".join(x for x in (
        f"{config['steps']} steps" if config.get("steps") else "",
        f"{config['epochs']:g} epochs" if config.get("epochs") else "",
        f"{config['seconds']:g} s" if config.get("seconds") else "") if x) or "unknown"
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}"
    used, size = config.get("test_points_used"), config.get("test_size")
    test = (f" on a seeded random {used} of the {size} test points" if used and size and used < size else
            f" on {size} test points" if size else "")
    if config.get("select") == "best":
        test += "; the parameters scored are each run's checkpoint with the best learning-curve score"
    return (f"{config.get('connectivity', 'layered')} architecture {config.get('arch')}, {seed_text}, a budget of "
            f"{budget} of training per method and seed, mini-batches of {config.get('batch_size')}; test log "
            f"p(x) in nats per data point by the {config.get('estimator')} estimator{test}.")


def _curve_points(config: Mapping[str, Any]) -> str:
    n = config.get("curve_points_used")
    return f" on {n} points of the {config.get('curve_split') or 'test'} split (a fixed seeded subset)" if n else ""


def _runs_table(records: Sequence[Mapping[str, Any]], summary: Summary) -> str:
    head = ("method", "backend", "seed", "steps", "seconds", "test log p(x)", "± (test points)", "estimator",
            "notes")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in ranked(records, summary.quality_gap):
        notes = f"failed: {r['error']}" if r.get("error") else "; ".join(map(str, r.get("warnings") or [])) or ""
        cells = (r["method"], r["backend"], r.get("seed", 0), _num(r.get("steps")), _num(r.get("seconds"), 1),
                 _num(r.get("test_log_likelihood"), 3), _num(r.get("test_stderr"), 3),
                 r.get("test_estimator") or "–", notes)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def _settings_table(config: Mapping[str, Any]) -> str:
    lines = ["| setting | value |", "|---|---|"]
    for key, value in config.items():
        lines.append(f"| {key} | {_cell(json.dumps(value, separators=(', ', ': ')))} |")
    return "\n".join(lines)


def _environment() -> str:
    from importlib import metadata

    from sbn_ppl.base.version import __version__

    versions = [f"sbn-ppl {__version__}"]
    for name in VERSIONS:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return "\n".join([
        f"- packages: {', '.join(versions)}",
        f"- Python {platform.python_version()} ({platform.python_implementation()})",
        f"- {platform.platform()}, {platform.machine() or 'unknown machine'}, {os.cpu_count()} CPU(s)",
    ])


# -- writing and re-rendering ------------------------------------------------------------------
def write_results(out: str, config: Mapping[str, Any], records: Sequence[Mapping[str, Any]],
                  quality_gap: float | None = None, grid: Sequence[Mapping[str, Any]] | None = None) -> None:
    """``out/results.json``, then the files :func:`report` renders from it, each atomically.
    ``grid``: under tuning, every grid point's record (``records`` hold each method at its
    chosen point)."""
    write_json(os.path.join(out, "results.json"),
               {"config": dict(config), "records": list(records), **({"grid": list(grid)} if grid else {})})
    _render(out, config, records, _gap(config, quality_gap))


def _render(out: str, config: Mapping[str, Any], records: Sequence[Mapping[str, Any]], quality_gap: float) -> str:
    write_atomic(os.path.join(out, "results.csv"), csv_text(records))
    plot_learning_curves(os.path.join(out, "learning_curves.png"), records, config, quality_gap)
    if has_gradient_variance(records):
        plot_gradient_variance(os.path.join(out, "gradient_variance.png"), records, config)
    if has_certified(records):
        plot_certified(os.path.join(out, "certified.png"), records, config)
    text = report_markdown(config, records, quality_gap)
    write_atomic(os.path.join(out, "report.md"), text)
    return text


def _gap(config: Mapping[str, Any], quality_gap: float | None) -> float:
    if quality_gap is None:
        quality_gap = config.get("quality_gap")
    return QUALITY_GAP if quality_gap is None else float(quality_gap)


def report(dirs: str | os.PathLike | Sequence[str | os.PathLike], out: str | os.PathLike | None = None, *,
           quality_gap: float | None = None) -> str:
    """Render the report of one or more ``sbn-ppl compare`` output folders, without training.

    Reads each folder's ``results.json`` and merges the runs (:func:`merge_runs`: they may
    differ in their methods and seeds only), then writes ``results.csv`` (one row per
    record), ``learning_curves.png`` and ``report.md`` into ``out`` (default: the first
    folder). Into a folder that is not one of the runs it also writes the merged
    ``results.json``, so that ``out`` can be reported again; a run's own ``results.json`` is
    never changed.

    :param quality_gap: nats below the best final value that count as reached in "time to
        quality" (default: the runs' setting, else 0.5).
    :returns: the text of ``report.md``.
    """
    dirs = [os.fspath(dirs)] if isinstance(dirs, (str, os.PathLike)) else [os.fspath(d) for d in dirs]
    if not dirs:
        raise ValueError("report needs at least one output folder of sbn-ppl compare")
    runs = [(d, *read_results(d)) for d in dirs]
    tuning = [bool(c.get("tune")) for _, c, _ in runs]
    grid = None
    if len(runs) > 1 and any(tuning):
        if not all(tuning):
            plain = [d for (d, _, _), t in zip(runs, tuning) if not t]
            raise ValueError(f"cannot merge a tuning run (compare --tune) with {', '.join(map(repr, plain))}, "
                             "which is not one: report them separately")
        config, records, grid = merge_tuning_runs([(d, c, read_grid(d)) for d, c, _ in runs])
    else:
        config, records = merge_runs(runs)
    out = dirs[0] if out is None else os.fspath(out)
    if os.path.realpath(out) not in {os.path.realpath(d) for d in dirs}:
        write_json(os.path.join(out, "results.json"),
                   {"config": config, "records": records, **({"grid": grid} if grid else {})})
    return _render(out, config, records, _gap(config, quality_gap))


def read_grid(folder: str) -> list[dict]:
    """Every grid point's record of the tuning run in ``folder`` (``results.json``'s ``grid``),
    each checked as :func:`read_results` checks records."""
    path, saved = _read_saved(folder, "re-create it with sbn-ppl compare --tune")
    grid = saved.get("grid")
    if not isinstance(grid, list) or not grid:
        raise ValueError(f"{folder!r}: its results.json holds no tuning grid (a run of compare --tune "
                         "before the grid was kept?); re-run it with --resume")
    config = saved["config"]
    for i, r in enumerate(grid):
        problem = check_record(r)
        if problem:
            raise ValueError(f"{path}: grid record {i}: {problem}")
        if not isinstance(r.get("tuning"), dict):
            raise ValueError(f"{path}: grid record {i} has no tuning point")
        r.setdefault("seed", config.get("seed", 0))
    return [dict(r) for r in grid]


def read_results(folder: str, advice: str = "re-create it with sbn-ppl compare") -> tuple[dict, list[dict]]:
    """The settings and records in ``folder/results.json``, every field checked (:func:`check_record`);
    every record gets its ``seed``. A problem is one ``ValueError`` line that names the file, the
    record and the field, and ends with ``advice``."""
    _, saved = _read_saved(folder, advice)
    config, records = dict(saved["config"]), [dict(r) for r in saved["records"]]
    for r in records:  # results.json of a run from before seeds: its one seed
        r.setdefault("seed", config.get("seed", 0))
    return config, records


def _read_saved(folder: str, advice: str) -> tuple[str, dict]:
    """``folder/results.json``'s path and content, its settings and records checked
    (:func:`_results_problem`); a problem is one ``ValueError`` line ending with ``advice``."""
    path = os.path.join(folder, "results.json")
    if not os.path.isfile(path):
        raise ValueError(f"{folder!r} holds no results.json (is it an output folder of sbn-ppl compare?)")
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} is corrupt (not readable JSON: {e}); {advice}") from None
    problem = _results_problem(saved)
    if problem:
        raise ValueError(f"{path}: {problem}; {advice}")
    return path, saved


# The fields of a record and what each may hold (besides null): a finite number, a non-negative
# one, a count, a string, a list of strings, a list of finite numbers, a mapping.
_FINITE = ("objective", "test_log_likelihood", "own_guide_log_likelihood", "posthoc_log_likelihood",
           "test_own_guide_log_likelihood", "test_posthoc_log_likelihood",  # as written before 0.4.0
           "test_is_log_likelihood", "train_log_likelihood", "bound", "kl_q_p", "test_is_khat")
_NON_NEGATIVE = ("epochs", "seconds", "steps_per_second", "test_stderr", "test_is_stderr", "test_is_ess",
                 "guide_gradient_variance", "cell_seconds")
_COUNTS = ("steps", "selected_step", "seed")
_STRINGS = ("guide", "test_estimator", "test_guide", "guide_chosen_on", "params", "error")


def _results_problem(saved) -> str | None:
    if not isinstance(saved, dict):
        return f"holds a JSON {type(saved).__name__}: not the results of sbn-ppl compare"
    if not isinstance(saved.get("config"), dict):
        return f"its 'config' is {_kind(saved.get('config'))}: not the results of sbn-ppl compare"
    if not isinstance(saved.get("records"), list):
        return f"its 'records' is {_kind(saved.get('records'))}: not the results of sbn-ppl compare"
    for i, r in enumerate(saved["records"]):
        problem = check_record(r)
        if problem:
            name = f"{r.get('method')} ({r.get('backend')}), seed {r.get('seed', 0)}" \
                if isinstance(r, dict) and isinstance(r.get("method"), str) else "?"
            return f"record {i} [{name}]: {problem}"
    return None


def check_record(r) -> str | None:
    """What is wrong with one record of results.json (``None``: nothing): every number finite and
    of its type, every name a string, as :func:`sbn_ppl.compare` writes them."""
    if not isinstance(r, dict):
        return f"is {_kind(r)}, not a record"
    for key in ("method", "backend"):
        if not isinstance(r.get(key), str):
            return f"field {key!r} is {_kind(r.get(key))}, not a name"
    for key in _FINITE + _NON_NEGATIVE + _COUNTS:
        problem = _number_problem(r.get(key), key in _NON_NEGATIVE or key in _COUNTS, key in _COUNTS)
        if problem:
            return f"field {key!r} {problem}"
    for key in _STRINGS:
        if r.get(key) is not None and not isinstance(r[key], str):
            return f"field {key!r} is {_kind(r[key])}, not a string"
    if r.get("warnings") is not None and not (isinstance(r["warnings"], list)
                                              and all(isinstance(w, str) for w in r["warnings"])):
        return "field 'warnings' is not a list of strings"
    if r.get("options") is not None and not isinstance(r["options"], dict):
        return f"field 'options' is {_kind(r['options'])}, not a mapping"
    pointwise = r.get("test_pointwise")
    if pointwise is not None:
        if not isinstance(pointwise, list):
            return f"field 'test_pointwise' is {_kind(pointwise)}, not a list"
        for j, v in enumerate(pointwise):
            problem = _number_problem(v, False, False, allow_none=False)
            if problem:
                return f"field 'test_pointwise' value {j} {problem}"
    curve = r.get("curve")
    if curve is not None:
        if not isinstance(curve, list) or not all(isinstance(c, dict) for c in curve):
            return "field 'curve' is not a list of checkpoint records"
        for j, c in enumerate(curve):
            for key in ("step", "epoch", "seconds", "test_log_likelihood", "test_stderr", "objective"):
                problem = _number_problem(c.get(key), key != "test_log_likelihood" and key != "objective",
                                          key == "step")
                if problem:
                    return f"field 'curve' point {j}: {key!r} {problem}"
    return None


def _number_problem(v, non_negative: bool, integer: bool, allow_none: bool = True) -> str | None:
    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return f"is {_kind(v)}, not a number"
    if not math.isfinite(v):
        return f"is {v}, not a finite number"
    if integer and v != int(v):
        return f"is {v}, not an integer"
    if non_negative and v < 0:
        return f"is {v}, negative"
    return None


def _kind(v) -> str:
    return "missing (null)" if v is None else f"{v!r}" if isinstance(v, (int, float, str)) and len(repr(v)) < 40 \
        else f"a {type(v).__name__}"


def merge_runs(runs: Sequence[tuple[str, Mapping[str, Any], Sequence[Mapping[str, Any]]]], *, tuning: bool = False
               ) -> tuple[dict, list[dict]]:
    """One run from several ``(folder, config, records)``: the records of all, in the order a
    single run would have made them (by seed, then by method, then by tuning point).

    Runs may differ only in ``MERGEABLE`` settings (methods and seeds; with ``tuning``, the
    records being tuning grids, also the grid's values); a (method, backend, seed, tuning point)
    found in two runs must be the same record, and a method found in two runs must have the
    same options (but the tuned ones).
    """
    mergeable = MERGEABLE + (("tune",) if tuning else ())
    first, config = runs[0][0], dict(runs[0][1])
    for folder, other, _ in runs[1:]:
        keys = sorted((set(config) | set(other)) - set(mergeable))
        differ = [f"{k} ({config.get(k)!r} in {first}, {other.get(k)!r} in {folder})"
                  for k in keys if config.get(k) != other.get(k)]
        if differ:
            raise ValueError(f"cannot merge {first!r} and {folder!r}: their settings differ in {'; '.join(differ)}; "
                             f"only their methods{', seeds and tuning grid values' if tuning else ' and seeds'} "
                             "may differ")
    methods, seeds = [], []
    for _, c, records in runs:
        listed = c.get("methods") or []
        for m in list(listed) + [f"{r['method']}:{r['backend']}" for r in records]:
            if m not in methods:
                methods.append(m)
        for s in list(c.get("seeds") or [c.get("seed", 0)]) + [r["seed"] for r in records]:
            if s not in seeds:
                seeds.append(s)
    found: dict[tuple, tuple[str, Mapping]] = {}
    options: dict[tuple, tuple[str, Any]] = {}
    for folder, _, records in runs:
        for r in records:
            point = tuple(sorted((r.get("tuning") or {}).items()))
            key = (r["method"], r["backend"], r["seed"], point)
            name = f"{r['method']} ({r['backend']}), seed {r['seed']}" + \
                "".join(f", {k}={v}" for k, v in point)
            if key in found and _results_only(found[key][1]) != _results_only(r):
                raise ValueError(f"{name} is in both {found[key][0]!r} and {folder!r} with different results; "
                                 "report them separately")
            found.setdefault(key, (folder, r))
            if not r.get("error") and r.get("options") is not None:
                untuned = {k: v for k, v in r["options"].items() if k not in dict(point)}
                seen = options.setdefault(key[:2], (folder, untuned))
                if seen[1] != untuned:
                    raise ValueError(f"cannot merge: {r['method']} ({r['backend']}) has options {seen[1]!r} in "
                                     f"{seen[0]!r} but {untuned!r} in {folder!r}")
    config.update(methods=methods, seeds=seeds)
    order = {m: i for i, m in enumerate(methods)}
    records = sorted((r for _, r in found.values()),
                     key=lambda r: (seeds.index(r["seed"]), order[f"{r['method']}:{r['backend']}"],
                                    _point_order(r.get("tuning"))))
    return config, records


def _point_order(point: Mapping[str, Any] | None) -> tuple:
    """A tuning point's place in a merged grid: by option name, numbers by value, then text."""
    return tuple((k, 0, v, "") if isinstance(v, (int, float)) else (k, 1, 0, repr(v))
                 for k, v in sorted((point or {}).items()))


def merge_tuning_runs(runs: Sequence[tuple[str, Mapping[str, Any], Sequence[Mapping[str, Any]]]]
                      ) -> tuple[dict, list[dict], list[dict]]:
    """One tuning run from several ``(folder, config, grid)``: runs of ``compare --tune`` over the
    same options, which may differ in the grid's values, their methods and seeds (a grid
    extended by a second run, ``--tune lr=1e-2`` after ``lr=3e-4,1e-3,3e-3``). Their grid points'
    records are pooled (a point run twice must have the same results) and each method's point is
    chosen again on the validation split over the pooled grid (:func:`select_tuned`).
    :returns: the merged settings (``tune``: every option's values, in order), the chosen
    records, and the pooled grid."""
    from sbn_ppl.comparison.config import tuning_grid
    from sbn_ppl.comparison.tuning import select_tuned

    runs = [(folder, {**c, "tune": tuning_grid(c.get("tune"))}, grid) for folder, c, grid in runs]
    names = [sorted(c["tune"]) for _, c, _ in runs]
    if any(n != names[0] for n in names):
        shown = "; ".join(f"{', '.join(n) or 'none'} in {folder!r}" for n, (folder, _, _) in zip(names, runs))
        raise ValueError(f"cannot merge tuning runs over different options ({shown}): each must tune the same "
                         "options, with any values")
    config, grid = merge_runs(runs, tuning=True)
    tune: dict[str, list] = {}
    for _, c, _ in runs:
        for name, values in c["tune"].items():
            tune.setdefault(name, [])
            tune[name] += [v for v in values if v not in tune[name]]
    config["tune"] = {name: sorted(values, key=lambda v: _point_order({name: v})) for name, values in tune.items()}
    return config, select_tuned(grid, config.get("select", "last")), grid


def _results_only(record: Mapping[str, Any]) -> dict:
    """A record less what two runs of one computation may differ in: the timings (and speeds),
    and the path of its parameter file."""
    timing = ("seconds", "steps_per_second", "cell_seconds", "params")
    out = {k: v for k, v in record.items() if k not in timing}
    out["curve"] = [{k: v for k, v in c.items() if k != "seconds"} for c in record.get("curve") or []]
    return out


# -- one table across data sets ----------------------------------------------------------------
ACROSS_FILES = ("across.md", "across.csv")
ACROSS_FIELDS = ("data", "arch", "method", "backend", "seeds", "test_log_likelihood", "stderr", "over", "rank",
                 "best", "indistinguishable", "estimator", "steps", "seconds", "folder")


def across_data_sets(dirs: Sequence[str | os.PathLike], out: str | os.PathLike | None = None, *,
                     quality_gap: float | None = None) -> str:
    """One table across data sets from several ``sbn-ppl compare`` folders (one data set or
    architecture each, e.g. ``examples/uci.toml`` run once per set).

    A row per (method, backend), a column per folder. A cell is the method's test
    ``log p(x)`` in that folder, aggregated exactly as that folder's own table does
    (:func:`~sbn_ppl.comparison.aggregate.summarize`: the mean over seeds +- its standard error, or
    over test points with one seed); **bold** marks the best of the column and every method
    whose paired 95% interval to it contains 0. Rows are ordered by their mean rank over the
    columns where they were scored. With ``out``, writes ``across.md`` and ``across.csv``
    (one line per cell) there.

    :returns: the markdown (the table and a line per column saying how it was scored).
    """
    dirs = [os.fspath(d) for d in dirs]
    if not dirs:
        raise ValueError("an across-data-sets table needs at least one output folder of sbn-ppl compare")
    columns, seen = [], {}
    for d in dirs:
        config, records = read_results(d)
        key = (config.get("data"), config.get("arch"), config.get("connectivity"))
        if key in seen:
            raise ValueError(f"{seen[key]!r} and {d!r} are runs on the same data and architecture "
                             f"({key[0]}, {key[1]}); merge them with `sbn-ppl report {seen[key]} {d}` first")
        seen[key] = d
        columns.append((d, config, summarize(records, _gap(config, quality_gap))))
    rows: dict[tuple[str, str], dict[int, Row]] = {}
    for j, (_, _, summary) in enumerate(columns):
        for row in summary.rows:
            rows.setdefault((row.method, row.backend), {})[j] = row

    def mean_rank(key):
        ranks = [r.rank for r in rows[key].values() if r.rank is not None]
        return (0, sum(ranks) / len(ranks)) if ranks else (1, 0.0)

    order = sorted(rows, key=mean_rank)
    head = ["method", "backend"] + [f"{c.get('data')} ({c.get('arch')})" for _, c, _ in columns] + ["mean rank"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    table_rows = []
    for key in order:
        cells = [key[0], key[1]]
        for j, (folder, config, _) in enumerate(columns):
            row = rows[key].get(j)
            cells.append(_across_cell(row))
            if row is not None:
                table_rows.append(_across_csv_row(folder, config, row))
        rank = mean_rank(key)
        cells.append("—" if rank[0] else f"{rank[1]:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    legend = ["", "Test log p(x) in nats per data point, mean ± standard error as in each run's own table (over "
                  "seeds; with one seed the estimate's own standard error, seed-to-seed variation not included); "
                  "**bold**: the best of its column and the methods whose paired 95% interval to it contains 0; "
                  "—: not run there. Each column:"]
    for folder, config, _ in columns:
        legend.append(f"- {config.get('data')} ({config.get('arch')}): {_how_scored(config)}; "
                      f"folder `{folder}`")
    text = "\n".join(lines + legend) + "\n"
    if out is not None:
        out = os.fspath(out)
        write_atomic(os.path.join(out, "across.md"), text)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=ACROSS_FIELDS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(table_rows)
        write_atomic(os.path.join(out, "across.csv"), buf.getvalue())
    return text


def _across_cell(row: Row | None) -> str:
    if row is None:
        return "—"
    if row.test is None:
        return "failed" if row.failed else "unscored"
    text = _num(row.test.mean, 3) + (f" ± {_num(row.test.stderr, 3)}" if row.test.stderr is not None else "")
    return f"**{text}**" if row.indistinguishable else text


def _across_csv_row(folder: str, config: Mapping[str, Any], row: Row) -> dict:
    test = row.test
    return {"data": config.get("data"), "arch": config.get("arch"), "method": row.method, "backend": row.backend,
            "seeds": " ".join(str(s) for s in row.seeds), "test_log_likelihood": None if test is None else test.mean,
            "stderr": None if test is None else test.stderr, "over": None if test is None else test.over,
            "rank": row.rank, "best": row.best, "indistinguishable": row.indistinguishable if test else None,
            "estimator": row.estimator, "steps": row.steps, "seconds": row.seconds, "folder": folder}


def _how_scored(config: Mapping[str, Any]) -> str:
    budget = ", ".join(f"{k} {config[k]:g}" for k in ("steps", "epochs", "seconds") if config.get(k) is not None)
    points = config.get("test_points")
    seeds = len(config.get("seeds") or [config.get("seed", 0)])
    est = config.get("estimator")
    if est == "is":
        est = f"IS, K = {config.get('is_particles')}"
    elif est == "ais":
        est = f"AIS, {config.get('ais_temperatures')} temperatures"
    return (f"{est} on {'a seeded random ' + str(points) if points else 'all'} test points; "
            f"{budget or 'default budget'} per method; {seeds} seed{'s' if seeds > 1 else ''}"
            + (f"; selected by {config.get('select')}" if config.get("select") else ""))


# -- the command line --------------------------------------------------------------------------
def add_report_command(subparsers) -> Any:
    """Register ``sbn-ppl report DIR [DIR ...] [--out OUT] [--within NATS]`` on ``subparsers``."""
    p = subparsers.add_parser(
        "report", help="re-render the table, CSV, plots and report.md of compare runs, without training",
        description="Read results.json of one or more `sbn-ppl compare` output folders, merge them (runs that "
                    "differ only in their methods or seeds; tuning runs also in their grid's values, each method's "
                    "point then chosen again on validation over the pooled grid), and write results.csv, learning_curves.png and a "
                    "self-contained report.md (table, verdict, curves, settings, versions, machine) into --out; "
                    "print the report.",
    )
    p.add_argument("dirs", nargs="+", metavar="DIR", help="output folders of sbn-ppl compare")
    p.add_argument("--out", help="where to write (default: the first DIR); a new folder also gets the merged "
                                 "results.json")
    p.add_argument("--across", action="store_true",
                   help="one table across data sets: a column per DIR (each a run on one data set), written to "
                        "--out (default: the current folder) as across.md and across.csv")
    p.add_argument("--within", type=float, metavar="NATS", dest="quality_gap",
                   help=f"time to quality: time to get within NATS of the best final value (default {QUALITY_GAP:g})")
    p.set_defaults(func=_cmd_report)
    return p


def _cmd_report(args) -> int:
    if args.across:
        out = args.out if args.out is not None else "."
        print(across_data_sets(args.dirs, out, quality_gap=args.quality_gap), end="")
        print(f"wrote {', '.join(os.path.join(out, f) for f in ACROSS_FILES)}", file=sys.stderr)
        return 0
    out = args.out if args.out is not None else args.dirs[0]
    print(report(args.dirs, out, quality_gap=args.quality_gap))
    print(f"wrote {', '.join(os.path.join(out, f) for f in FILES)}", file=sys.stderr)
    return 0
