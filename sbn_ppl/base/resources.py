"""Refuse requests the machine cannot hold, before allocating: the figure and the limit.

A request that would need more memory than the machine has (``MemAvailable`` in
``/proc/meminfo``, else the physical memory) is a ``ValueError`` naming what was asked,
how many bytes it needs and how many there are, instead of a traceback or a swapping machine.
"""
from __future__ import annotations

import os

FLOAT_BYTES = 4


def available_memory() -> int:
    """Bytes of memory available for new allocations (best effort; physical memory at worst)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 1 << 62


def check_memory(num_bytes: float, what: str) -> None:
    """``ValueError`` if ``what`` needs more than the available memory."""
    limit = available_memory()
    if num_bytes > limit:
        raise ValueError(f"{what} would need about {_human(num_bytes)} of memory, more than the {_human(limit)} "
                         "available on this machine; ask for less")


def _human(num_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if num_bytes < 1024 or unit == "PiB":
            return f"{num_bytes:.3g} {unit}"
        num_bytes /= 1024
    return f"{num_bytes:.3g} PiB"  # pragma: no cover
