"""The import rules of pyproject.toml's [tool.importlinter], checked by import-linter.

import-linter (grimp) finds a package's modules by walking its folder, and here
``sbn_ppl.models`` and ``sbn_ppl.inference`` live in folders of their own (setuptools'
package-dir). So the check runs on a copy of the package laid out as installed
(``sbn_ppl/models``, ``sbn_ppl/inference``), exactly what the wheel holds. Imports made
through ``importlib`` strings are invisible to grimp: a second check reads every string a
base module passes to ``importlib.import_module`` or ``__import__``.
"""
import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
LINT = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))


def installed_layout(dest: Path) -> Path:
    """``dest/sbn_ppl`` with the models and the algorithms inside it, as the wheel has them."""
    pkg = dest / "sbn_ppl"
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "sbn_ppl", pkg, ignore=ignore)
    shutil.copytree(ROOT / "models", pkg / "models", ignore=ignore)
    shutil.copytree(ROOT / "inference", pkg / "inference", ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    return pkg


def lint(dest: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(dest)}
    return subprocess.run([LINT, str(dest / "pyproject.toml"), "--no-cache"], cwd=dest, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    if not os.path.exists(LINT):
        pytest.fail("import-linter is not installed: pip install -e '.[dev]'")
    dest = tmp_path_factory.mktemp("installed")
    installed_layout(dest)
    return dest


def test_the_import_contracts_hold(layout):
    result = lint(layout)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 3 kept, 0 broken" in result.stdout


def test_a_base_module_importing_an_algorithm_breaks_a_contract(layout, tmp_path):
    dest = tmp_path / "broken"
    shutil.copytree(layout, dest)
    params = dest / "sbn_ppl" / "base" / "params.py"
    params.write_text(params.read_text() + "\nfrom sbn_ppl.inference.rws import K  # a base module reaching up\n")
    result = lint(dest)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout and "sbn_ppl.base.params -> sbn_ppl.inference.rws" in result.stdout


def _importlib_strings(path: Path) -> list[str]:
    """String literals passed to importlib.import_module / __import__ in one file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            name = getattr(node.func, "attr", None) or getattr(node.func, "id", None)
            if name in ("import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
                found.append(str(node.args[0].value))
    return found


def test_the_layers_are_folders():
    """Every layer the contract names is a folder of the source tree (or the CLI module)."""
    folders = {"sbn_ppl.models": ROOT / "models", "sbn_ppl.inference": ROOT / "inference"}
    for level in CONFIG["contracts"][0]["layers"]:
        for layer in (name.strip() for name in level.split("|")):
            path = folders.get(layer, ROOT / layer.replace(".", "/"))
            assert (path / "__init__.py").exists() or path.with_suffix(".py").exists(), layer


def test_base_modules_import_no_algorithm_through_importlib_strings():
    forbidden = tuple(m.split(".", 1)[1] for m in CONFIG["contracts"][1]["forbidden_modules"])
    for path in (ROOT / "sbn_ppl" / "base").glob("*.py"):
        for target in _importlib_strings(path):
            name = target.lstrip(".").removeprefix("sbn_ppl.")
            assert not name.startswith(forbidden), f"{path.name} imports {target} through importlib"
