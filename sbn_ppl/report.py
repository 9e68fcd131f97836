"""What a comparison leaves behind: the Markdown table, ``results.csv``, ``results.json``
and ``learning_curves.png``. Every file is written atomically (``sbn_ppl.files``).
"""
from __future__ import annotations

import csv
import io
import math
import os
from typing import Any, Mapping, Sequence

from .files import write_atomic, write_json

# One row of results.csv per method; results.json also holds "options" and "curve".
CSV_FIELDS = (
    "method", "backend", "guide", "steps", "seconds", "steps_per_second", "objective",
    "test_log_likelihood", "test_stderr", "test_estimator", "test_is_log_likelihood", "test_is_stderr",
    "train_log_likelihood", "bound", "kl_q_p", "params", "error",
)


def ranked(records: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Best test log-likelihood first; methods without one (failed, or no estimate) last."""
    def key(r):
        ll = r.get("test_log_likelihood")
        return (ll is None, -(ll if ll is not None else 0.0))

    return sorted(records, key=key)


def _num(value, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}f}"


def markdown_table(records: Sequence[Mapping[str, Any]]) -> str:
    """One row per method, best test log-likelihood first (nats per data point)."""
    head = ("method", "backend", "steps", "seconds", "steps/s", "test log p(x)", "estimator",
            "train log p(x)", "own bound", "KL(q‖p)")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in ranked(records):
        if r.get("error"):
            cells = [r["method"], r["backend"], "–", "–", "–", f"failed: {r['error']}", "–", "–", "–", "–"]
        else:
            test = _num(r["test_log_likelihood"])
            if r["test_log_likelihood"] is not None and r.get("test_stderr"):
                test += f" ± {_num(r['test_stderr'])}"
            cells = [r["method"], r["backend"], _num(r["steps"]), _num(r["seconds"], 1),
                     _num(r["steps_per_second"], 1), test, r.get("test_estimator") or "–",
                     _num(r["train_log_likelihood"]), _num(r["bound"]), _num(r["kl_q_p"], 3)]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def csv_text(records: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_FIELDS})
    return buffer.getvalue()


def plot_learning_curves(path: str, records: Sequence[Mapping[str, Any]], title: str, ylabel: str) -> None:
    """Test log-likelihood against training seconds and against steps, one line per method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 4.2), layout="constrained")
    FigureCanvasAgg(fig)
    by_time, by_step = fig.subplots(1, 2, sharey=True)
    for r in records:
        curve = [c for c in r.get("curve") or [] if c.get("test_log_likelihood") is not None]
        if not curve:
            continue
        label = f"{r['method']} ({r['backend']})"
        y = [c["test_log_likelihood"] for c in curve]
        by_time.plot([c["seconds"] for c in curve], y, marker="o", markersize=3, label=label)
        stepped = [(c["step"], c["test_log_likelihood"]) for c in curve if c["step"] > 0]  # log axis
        if stepped:
            by_step.plot(*zip(*stepped), marker="o", markersize=3, label=label)
    by_time.set_xlabel("training time (s)")
    by_step.set_xlabel("steps")
    by_step.set_xscale("log")
    by_time.set_ylabel(ylabel)
    for ax in (by_time, by_step):
        ax.grid(alpha=0.3)
    if by_time.lines:
        fig.legend(*by_time.get_legend_handles_labels(), loc="outside right center", fontsize=8)
    fig.suptitle(title, fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    write_atomic(path, buffer.getvalue())


def write_results(out: str, config: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> None:
    """``out/results.json``, ``out/results.csv`` and ``out/learning_curves.png``, each atomically."""
    write_json(os.path.join(out, "results.json"), {"config": dict(config), "records": list(records)})
    write_atomic(os.path.join(out, "results.csv"), csv_text(records))
    curve_n = config.get("curve_points_used")
    ylabel = "test log p(x), nats" + (f" (first {curve_n} test points)" if curve_n else "")
    title = f"{config.get('data')}, {config.get('arch')}: {config.get('estimator')} test log-likelihood during training"
    plot_learning_curves(os.path.join(out, "learning_curves.png"), records, title, ylabel)
