"""The version of the code that is running, stated once, in pyproject.toml.

From a source checkout (an editable install, or the tree on ``sys.path``) it is read from the
checkout's own pyproject.toml, because an editable install's metadata keeps the version it was
installed with: a version bumped later would otherwise be recorded wrongly in run manifests and
reports. Elsewhere (a wheel) it is the installed distribution's metadata.
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def source_tree_version(root: Path) -> str | None:
    """``[project].version`` of ``root/pyproject.toml`` if that file declares this package, else None."""
    try:
        from sbn_ppl.base.tomlcompat import tomllib

        with open(root / "pyproject.toml", "rb") as f:
            project = tomllib.load(f).get("project", {})
    except (OSError, ValueError):
        return None
    if project.get("name") != "sbn-ppl" or not isinstance(project.get("version"), str):
        return None
    return project["version"]


def _version() -> str:
    here = source_tree_version(Path(__file__).resolve().parents[2])
    if here is not None:
        return here
    try:
        return version("sbn-ppl")
    except PackageNotFoundError:  # neither a checkout nor installed
        return "0+unknown"


__version__ = _version()
