"""Every Python block of the README runs as written (each in a fresh namespace), with a few
documented substitutions that shrink its budgets so the suite stays fast."""
import json
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
    'load_dataset("digits").test\n': 'load_dataset("digits").test[:10]\n',  # exact scores: 2^18 states a point
    "exact_log_likelihood(fitted, data.test)": "exact_log_likelihood(fitted, data.test[:10])",
}


# One interpreter runs every block, each in a fresh namespace of its own (so a block that uses
# a name without importing it fails as it would for a reader), and reports each block's
# outcome as one JSON line: the imports of JAX, torch and Pyro are paid once, not per block.
RUNNER = """
import json, sys, traceback
blocks = json.loads(sys.stdin.read())
for i, code in enumerate(blocks):
    try:
        exec(compile(code, f"<README block {i}>", "exec"), {"__name__": "__main__"})
        print(json.dumps({"block": i, "error": None}), flush=True)
    except BaseException:
        print(json.dumps({"block": i, "error": traceback.format_exc()[-3000:]}), flush=True)
"""


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 6


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    blocks = []
    for code in BLOCKS:
        for slow, fast in FAST.items():
            code = code.replace(slow, fast)
        blocks.append(code)
    result = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(blocks),
                            cwd=tmp_path_factory.mktemp("readme"), capture_output=True, text=True, timeout=900)
    done = {}
    for line in result.stdout.splitlines():
        if line.startswith('{"block"'):
            r = json.loads(line)
            done[r["block"]] = r["error"]
    return blocks, done, result.stderr[-3000:]


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_block_runs(index, outcomes):
    blocks, done, stderr = outcomes
    assert index in done, f"README block {index} did not finish (the interpreter died?):\n{stderr}"
    assert done[index] is None, f"README block {index}:\n{blocks[index]}\n{done[index]}"
