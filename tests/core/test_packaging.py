"""The distribution's shape: one wheel holding only sbn_ppl/..., and a cheap import."""
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/").stdout


def test_import_sbn_ppl_is_cheap_and_backends_stay_apart():
    heavy = "print(sorted(m for m in ('torch', 'jax', 'pyro', 'numpyro') if m in sys.modules))"
    assert _run(f"import sys, sbn_ppl; {heavy}").strip() == "[]"
    assert "torch" not in _run(f"import sys, sbn_ppl.models.numpyro_sbn; {heavy}")
    assert "jax" not in _run(f"import sys, sbn_ppl.models.pyro_sbn; {heavy}")


def test_namespaced_subpackages_and_no_top_level_models():
    out = _run(
        "import importlib.util as u, sbn_ppl.models, sbn_ppl.inference;"
        "print(u.find_spec('models') is None, u.find_spec('inference') is None)"
    )
    assert out.split() == ["True", "True"]


def test_wheel_contains_only_sbn_ppl(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("sbn_ppl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packages = {n.split("/")[0] for n in names}
    assert packages == {"sbn_ppl", next(p for p in packages if p.endswith(".dist-info"))}
    assert "sbn_ppl/models/pyro_sbn.py" in names and "sbn_ppl/inference/__init__.py" in names
    assert "sbn_ppl/models/numpyro_sbn.py" in names
    # every algorithm folder is packaged, without a packaging edit per folder (setup.py finds them)
    folders = sorted(p.parent.name for p in (ROOT / "inference").glob("*/__init__.py"))
    assert folders and all(f"sbn_ppl/inference/{f}/__init__.py" in names for f in folders)
