"""Published test log-likelihoods to print beside a comparison on the same benchmark.

Each entry names the data set (this package's name for it), the architecture, the method,
the figure (test log p(x), nats per image), the estimator the authors used and the source
table. The figures are the ones issue 10 lists; we took them from that list and did not
re-read the papers' tables ourselves, and every report that prints them says so.
"""
from __future__ import annotations

from typing import NamedTuple


class Published(NamedTuple):
    data: str
    arch: str
    method: str
    figure: float
    stderr: float | None
    estimator: str
    source: str


_ARM = "Mnih & Gregor 2014 via Yin & Zhou 2019 (ARM), Table 2a"
PUBLISHED = (
    Published("binarized-mnist", "784-200-200", "wake-sleep", -107.7, None, "IS", _ARM),
    Published("binarized-mnist", "784-200-200", "NVIL", -99.8, None, "IS", _ARM),
    Published("binarized-mnist", "784-200-200", "ARM", -96.7, 0.3, "IS", "Yin & Zhou 2019 (ARM), Table 2a"),
    Published("binarized-mnist", "784-200-200", "REBAR", -95.4, None, "IS", "Yin & Zhou 2019 (ARM), Table 2a"),
    Published("binarized-mnist", "784-200-200-200", "VIMCO (K = 50)", -93.6, None, "IS",
              "Mnih & Rezende 2016, VIMCO"),
)


def published_for(data: str | None, arch: str | None) -> list[Published]:
    """The published figures for this data set and architecture (none for other pairs)."""
    return [p for p in PUBLISHED if p.data == data and p.arch == arch]


def published_table(data: str | None, arch: str | None) -> str:
    """A Markdown table of :func:`published_for`, or ``""`` when there is none."""
    rows = published_for(data, arch)
    if not rows:
        return ""
    lines = [f"Published test log p(x) for {data}, {arch} (nats per image; figures as listed in issue 10, "
             "not re-checked against the papers by us; other code, budgets and hardware):", "",
             "| method | test log p(x) | estimator | source |", "|---|---|---|---|"]
    for p in rows:
        figure = f"{p.figure:.1f}" + (f" ± {p.stderr:.1f}" if p.stderr is not None else "")
        lines.append(f"| {p.method} | {figure} | {p.estimator} | {p.source} |")
    return "\n".join(lines)
