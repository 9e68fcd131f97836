"""Published test log-likelihoods to print beside a comparison on the same benchmark.

Each entry names the data set (this package's name for it), the architecture, the method,
the figure (test log p(x), nats per image), how the authors trained and scored it, and the
source table. Only figures read in the paper's own table are entries:

* 784-200-200 (wake-sleep, NVIL, REBAR, ARM): Yin & Zhou (ARM), Table 2(a), column "Two
  layers", read in the text of the ICLR 2019 submission (OpenReview S1lg0jAcYm; the
  camera-ready may differ). That table is of "discrete VAEs": an SBN 784-200-200 with a
  linear two-layer recognition network, trained on the single-sample ELBO with each gradient
  estimator (batch 50); wake-sleep and NVIL are credited there to Mnih & Gregor (2014),
  REBAR to Tucker et al. (2017); ARM is the mean ± sd of five trials. The table does not say
  how many importance samples scored the test set.
* 784-200-200, Concrete and VIMCO (Maddison et al. 2017, Table 1): the figures issue 19 lists could
  not be checked in the paper's table; :data:`UNCHECKED` says so beside the table.
* 784-200-200-200, VIMCO (Mnih & Rezende 2016): issue 10 lists -93.6 at K = 50, which we could
  not check in the paper; a second-hand copy of the paper's table (thu-ml/zhusuan, pull request
  21) gives -91.9 at K = 50 and -92.8 at K = 5. Until one of them is read in the paper, no
  figure is printed: :data:`UNCHECKED` says why instead.
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


_ARM = "Yin & Zhou 2019 (ARM), Table 2(a), \"Two layers\""
_SETTING = "single-sample-ELBO training, batch 50; test NLL (K not stated)"
PUBLISHED = (
    Published("binarized-mnist", "784-200-200", "wake-sleep", -107.7, None, _SETTING,
              f"Mnih & Gregor 2014, as in {_ARM}"),
    Published("binarized-mnist", "784-200-200", "NVIL", -99.8, None, _SETTING, f"Mnih & Gregor 2014, as in {_ARM}"),
    Published("binarized-mnist", "784-200-200", "ARM", -96.7, 0.3, _SETTING + "; sd of 5 trials", _ARM),
    Published("binarized-mnist", "784-200-200", "REBAR", -95.4, None, _SETTING, f"Tucker et al. 2017, as in {_ARM}"),
)

# (data, arch) -> why a figure for that benchmark is not printed
UNCHECKED = {
    ("binarized-mnist", "784-200-200"): (
        "Concrete and VIMCO/NVIL (Maddison, Mnih & Teh 2017, Table 1; 10^7 steps of batch 64, a 50,000-sample "
        "importance-weighted bound on the test set): issue 19 lists figures for the linear 784-200-200 that we "
        "could not check in the paper's table (only its text up to the introduction was readable here), so none "
        "is printed until one is read there."),
    ("binarized-mnist", "784-200-200-200"): (
        "VIMCO (Mnih & Rezende 2016): issue 10 lists -93.6 at K = 50, which we could not check in the paper; "
        "a second-hand copy of its table (thu-ml/zhusuan PR 21) gives -91.9 at K = 50 and -92.8 at K = 5. "
        "No figure is printed until one is read in the paper."),
}


def published_for(data: str | None, arch: str | None) -> list[Published]:
    """The published figures for this data set and architecture (none for other pairs)."""
    return [p for p in PUBLISHED if p.data == data and p.arch == arch]


def published_table(data: str | None, arch: str | None) -> str:
    """A Markdown table of :func:`published_for`, or ``""`` when there is none."""
    rows = published_for(data, arch)
    unchecked = UNCHECKED.get((data, arch))
    if not rows:
        return f"Published figures for {data}, {arch}: {unchecked}" if unchecked else ""
    lines = [f"Published test log p(x) for {data}, {arch} (nats per image, read in the source table; "
             "other code, budgets and hardware):", "",
             "| method | test log p(x) | how trained and scored | source |", "|---|---|---|---|"]
    for p in rows:
        figure = f"{p.figure:.1f}" + (f" ± {p.stderr:.1f}" if p.stderr is not None else "")
        lines.append(f"| {p.method} | {figure} | {p.estimator} | {p.source} |")
    if unchecked:
        lines += ["", unchecked]
    return "\n".join(lines)
