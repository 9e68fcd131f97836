"""Peak memory and steps/s of every method at the benchmark's scale (issue 10): binarized
MNIST, 784-200-200, all 50,000 training images, batch 100, each method's default options.

Each method trains in a child process of its own for ``--seconds`` (compilation included),
and the parent reads the child's peak resident set size from ``os.wait4`` (the kernel's
``ru_maxrss``: the child alone, not the parent or the other children). A ``baseline``
child does everything but train (imports, the data, the parameters), so ``peak - baseline``
is what training a method adds. Steps/s are the steps after the first (compiling) chunk over
their time, from the run's own checkpoints.

Run: ``SBN_PPL_DATA=/path/to/data python benchmarks/bench_memory.py [--seconds 30]
[--methods rws,gibbs:pyro] [--data binarized-mnist] [--arch 784-200-200]``. Prints a
markdown table and the configuration; ``--json FILE`` also writes the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

METHODS = ("rws", "vimco", "nvil", "wake-sleep", "mean-field-svi", "mean-field-fixed-point", "gibbs", "pyro-rws")

CHILD = r"""
import json, sys
from sbn_ppl import SBNParams, load_dataset
from sbn_ppl.engine.fitting import Budget, fit
from sbn_ppl.inference import get_method

label, data, arch, seconds, batch = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
train = load_dataset(data).train
if label == "baseline":
    import jax, numpyro, torch, pyro  # every backend's import, as a method's child has one of them
    SBNParams.init(arch, seed=0, guide=("recognition",))
    print(json.dumps({}))
    sys.exit(0)
name, _, backend = label.partition(":")
method = get_method(name, backend or None)
params = SBNParams.init(arch, seed=0, guide=tuple(g for g in (method.guide,) if g))
result = fit(method, params, train, budget=Budget(seconds=seconds), batch_size=batch, seed=0, progress=False)
m = result.metrics
first = next(c for c in m if c["step"] > 0)
rate = (m[-1]["step"] - first["step"]) / (m[-1]["seconds"] - first["seconds"]) if m[-1] is not first else None
print(json.dumps({"backend": method.backend, "steps": m[-1]["step"], "seconds": m[-1]["seconds"],
                  "steps_per_second": rate}))
"""


def run_child(label: str, args) -> dict:
    with tempfile.TemporaryFile("w+") as err:  # a file, not a pipe: a chatty child cannot block
        proc = subprocess.Popen([sys.executable, "-c", CHILD, label, args.data, args.arch, str(args.seconds),
                                 str(args.batch_size)], stdout=subprocess.PIPE, stderr=err, text=True,
                                cwd=tempfile.gettempdir())  # not the repository root: the installed package
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        message = err.read()
    if proc.returncode != 0:
        return {"error": (message.strip().splitlines() or ["?"])[-1][:200]}
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_mib"] = usage.ru_maxrss / 1024  # Linux: kilobytes
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="training seconds per method")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated NAME or NAME:BACKEND")
    parser.add_argument("--data", default="binarized-mnist")
    parser.add_argument("--arch", default="784-200-200")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args()
    if sys.platform != "linux":
        sys.exit("bench_memory reads ru_maxrss in kilobytes, as Linux reports it; run it on Linux")
    print(f"# peak memory and steps/s: {args.data}, {args.arch}, batch {args.batch_size}, {args.seconds:g} s "
          f"of training per method (compilation included), each method's default options")
    print(f"# machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
          f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f} at the start")
    base = run_child("baseline", args)
    if "error" in base:
        sys.exit(f"the baseline child failed: {base['error']}")
    results = {"baseline": base}
    print(f"\nbaseline (imports, data, parameters; no training): {base['peak_mib']:.0f} MiB\n")
    print("| method | backend | steps | steps/s | peak MiB | peak − baseline MiB |")
    print("|---|---|---|---|---|---|")
    for label in args.methods.split(","):
        r = results[label] = run_child(label, args)
        if "error" in r:
            print(f"| {label} | – | – | – | – | failed: {r['error']} |", flush=True)
            continue
        rate = "–" if r["steps_per_second"] is None else f"{r['steps_per_second']:.1f}"
        print(f"| {label.split(':')[0]} | {r['backend']} | {r['steps']} | {rate} | {r['peak_mib']:.0f} | "
              f"{r['peak_mib'] - base['peak_mib']:.0f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": vars(args), "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
