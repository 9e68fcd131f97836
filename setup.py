"""The package list, computed: ``sbn_ppl``, ``sbn_ppl.models`` and every folder of
``inference/`` as ``sbn_ppl.inference.<folder>`` (pyproject.toml's package-dir maps them),
so adding a method folder needs no packaging edit. Everything else is in pyproject.toml."""
from setuptools import find_packages, setup

setup(packages=["sbn_ppl"] + [f"sbn_ppl.{name}" for name in find_packages("sbn_ppl")]
      + ["sbn_ppl.models", "sbn_ppl.inference"]
      + [f"sbn_ppl.inference.{name}" for name in find_packages("inference")])
