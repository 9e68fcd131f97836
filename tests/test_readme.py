"""Every Python block of the README runs as written (on its own, in a fresh interpreter),
with a few documented substitutions that shrink its budgets so the suite stays fast."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
FAST = {  # budget -> test budget; nothing else of a block is changed
    "steps=200": "steps=4", "range(100)": "range(3)", "300, params": "3, params", "num_samples=1000": "num_samples=20",
    "num_warmup=100": "num_warmup=5", "is_particles=1000": "is_particles=50", "num_particles=200": "num_particles=20",
    "(4000, 10, 12)": "(80, 10, 12)",
    'load_dataset("digits").test\n': 'load_dataset("digits").test[:30]\n',  # exact scores: 2^18 states a point
    "exact_log_likelihood(fitted, data.test)": "exact_log_likelihood(fitted, data.test[:30])",
}


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 6


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, tmp_path):
    code = BLOCKS[index]
    for slow, fast in FAST.items():
        code = code.replace(slow, fast)
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"README block {index}:\n{code}\n{result.stderr[-3000:]}"
