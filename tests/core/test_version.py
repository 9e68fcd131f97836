"""The recorded version is the running code's: a checkout's pyproject.toml, not stale metadata."""
from pathlib import Path

import sbn_ppl
from sbn_ppl.base.version import source_tree_version


def test_checkout_version_is_its_pyproject(tmp_path):
    root = Path(sbn_ppl.__file__).resolve().parents[1]
    if (root / "pyproject.toml").exists():  # a source checkout (CI, development)
        assert sbn_ppl.__version__ == source_tree_version(root)
        assert sbn_ppl.__version__ not in (None, "0+unknown")


def test_source_tree_version_reads_only_this_package(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "sbn-ppl"\nversion = "9.8.7"\n')
    assert source_tree_version(tmp_path) == "9.8.7"
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "other"\nversion = "1.0"\n')
    assert source_tree_version(tmp_path) is None  # a parent folder's project, not ours
    (tmp_path / "pyproject.toml").write_text("not [ toml")
    assert source_tree_version(tmp_path) is None
    assert source_tree_version(tmp_path / "missing") is None
