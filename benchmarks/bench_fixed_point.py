"""The fixed point at its limit (issue 22): one bare damped sweep against the method's step.

    SBN_PPL_DATA=/work/shared/data python benchmarks/bench_fixed_point.py [--seconds 6]
        [--before /tmp/fp_before.py] [--no-memory]

At 784-200-200, batch 100, side by side in one run (best of three windows each):

* **floor**: the transcendental functions one sweep cannot avoid, alone: ``e^{t w}``, ``log d``
  and ``1 / d`` for both tilts on every edge and data point (one jitted reduction each);
* **bare sweep**: ``sweep`` of ``inference/fixed_point/numpyro.py`` jitted alone, one damped
  layer-parallel sweep of the batch's ``(lambda, xi)`` at fixed weights, its pass carried from
  one call to the next (a full pass at the proposal: bound, targets, Newton's quantities, and
  the accept/reject); no gather or scatter of the rows' state, no gradient, no optimiser;
* **method**: ``mean-field-fixed-point``'s own step through its runner (``runner_for`` then
  ``run``, the path ``fit`` takes; default options: one sweep per step), steps/s;
* with ``--before FILE``: the same method from another copy of the module (e.g. the code
  before issue 22: ``git show 2e32748:inference/fixed_point/numpyro.py > /tmp/fp_before.py``),
  timed the same way in the same run, and its own bare sweep.

First (while this process is still small: a child's ``ru_maxrss`` counts the memory it was
forked with) the peak resident memory of the method in a child process of its own
(``os.wait4``'s ``ru_maxrss``, as ``bench_memory.py``) that builds the runner on all the
training rows and takes ``--memory-steps`` steps in one scan, for each module timed. (``fit``
adds its own validated float32 copy of the training set, 157 MiB here, to every method:
``bench_memory.py`` measures that path.)
The data: binarized MNIST (``load_dataset("binarized-mnist")``, with ``SBN_PPL_DATA`` set to
the folder holding ``binarized_mnist.npz``); random 0/1 data of the same shape without it
(the speed does not depend on the values).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

ARCH, BATCH = "784-200-200", 100


def load_module(path: str | None):
    """The fixed-point module: the package's, or a copy of it from ``path`` (imported as a
    sibling of the package's, so its relative imports resolve)."""
    if path is None:
        from sbn_ppl.inference.fixed_point import numpyro as fp

        return fp
    spec = importlib.util.spec_from_file_location("sbn_ppl.inference.fixed_point._bench_copy", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


OLD_PRELUDE = '''
# --- the pre-issue-18 contract, for a copy of the module from before the issue (bench_fixed_point.py) ---
import dataclasses as _dc
from typing import Callable as _Callable

import jax as _jax


@_dc.dataclass(frozen=True)
class Method:
    name: str
    backend: str
    init: _Callable
    step: _Callable
    get_params: _Callable
    guide: object = None
    bound: object = None
    options: tuple = ()
    jit: bool = True
    description: str = ""
    data_axes: object = None


class Static:
    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Static) and self.value == other.value

    def __hash__(self):
        return hash(self.value)


_jax.tree_util.register_pytree_node(Static, lambda s: ((), s.value), lambda value, _: Static(value))
'''
OLD_IMPORTS = {  # the module's imports at the base commit -> where those names live now
    "from sbn_ppl.architecture import Architecture": "from sbn_ppl.base.architecture import Architecture",
    "from sbn_ppl.data import validate_binary": "from sbn_ppl.base.arrays import validate_binary",
    "from sbn_ppl.methods import Batch, Method, Static": "from sbn_ppl.base.methods import Batch",
    "from sbn_ppl.optimizers import optax_optimizer": "from sbn_ppl.base.optimizers import optax_optimizer",
    "from sbn_ppl.params import SBNParams, generative_keys": "from sbn_ppl.base.params import SBNParams, generative_keys",
    "from sbn_ppl.resources import check_memory": "from sbn_ppl.base.resources import check_memory",
}


def before_copy(commit: str) -> str:
    """The fixed-point module at ``commit`` (before issue 18's layout), its imports pointed at
    the names' homes now and the old ``Method``/``Static`` defined beside it, written to a
    temporary file that :func:`load_module` can import: the "before" of the same run."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    source = subprocess.run(["git", "-C", root, "show", f"{commit}:inference/fixed_point/numpyro.py"],
                            check=True, capture_output=True, text=True).stdout
    for old, new in OLD_IMPORTS.items():
        if old not in source:
            raise RuntimeError(f"{commit}'s fixed-point module does not import {old!r}: adapt OLD_IMPORTS")
        source = source.replace(old, new)
    head, sep, tail = source.partition("\nfrom . import")
    path = os.path.join(tempfile.mkdtemp(prefix="fp_before_"), "fp_before.py")
    with open(path, "w") as f:
        f.write(head + OLD_PRELUDE + sep + tail)
    return path


def training_data():
    import numpy as np

    if os.environ.get("SBN_PPL_DATA"):
        from sbn_ppl.base.data import load_dataset

        return load_dataset("binarized-mnist").train, "binarized MNIST (train, 50,000 x 784)"
    x = (np.random.default_rng(0).random((50_000, 784)) < 0.13).astype(np.float32)
    return x, "random 0/1 (50,000 x 784, p = 0.13; SBN_PPL_DATA not set)"


CPU_MS = {}  # name -> this process's CPU milliseconds per call (all threads), least of the windows


def rate(run, seconds, chunk, windows=3, name=None):
    """Calls of ``run(chunk)`` per second, after a warm-up call (which compiles): the best of
    ``windows`` windows (the machine is shared; the best window is the least disturbed). With
    ``name``, also the least CPU time per call over the windows (``CPU_MS``): on a loaded
    machine the CPU time a call takes is steadier than its wall time."""
    run(chunk)
    best, cpu = 0.0, float("inf")
    for _ in range(windows):
        done, start, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds / windows:
            run(chunk)
            done += chunk
        best = max(best, done / (time.perf_counter() - start))
        cpu = min(cpu, 1000 * (time.process_time() - c0) / done)
    if name is not None:
        CPU_MS[name] = cpu
    return best


def floor_rate(params, x, seconds, name=None):
    """Sweeps/s if a sweep cost only its transcendental functions: ``e^{-xi w}`` (the other tilt
    is that times ``e^{w}``), ``log d`` and ``1 / d`` for both tilts on every edge and data point,
    one data point at a time as the method's pass runs (everything summed: nothing is kept)."""
    import jax
    import jax.numpy as jnp

    arch = params.architecture
    theta = {k: jnp.asarray(params[k], jnp.float32) for k in params if k.startswith("W_")}
    rng = jax.random.PRNGKey(0)
    mu = [jnp.asarray(x)] + [jax.random.uniform(jax.random.fold_in(rng, l), (len(x), n))
                             for l, n in enumerate(arch.hidden_sizes, 1)]
    xi = [jnp.full((len(x), n), 0.5) for n in arch.sizes]

    @jax.jit
    def floor(mu, xi):
        def row(total, r):
            mu, xi = r
            for p, k in arch.edges():
                w = theta[f"W_{p}_{k}"]
                m = mu[p][:, None]
                e_a = jnp.exp(-xi[k] * w)
                e_b = e_a * jnp.exp(w)
                d_a, d_b = 1.0 - m + m * e_a, 1.0 - m + m * e_b
                total = total + (jnp.log(d_a) + jnp.log(d_b) + 1.0 / d_a + 1.0 / d_b).sum()
            return total, None

        return jax.lax.scan(row, 0.0, (tuple(mu), tuple(xi)))[0]

    def run(n):
        for _ in range(n):
            r = floor(mu, xi)
        r.block_until_ready()

    return rate(run, seconds, 5, name=name)


def bare_sweep_rate(fp, params, x, seconds, name=None):
    """Sweeps/s of the module's ``sweep`` alone (fixed weights, the batch's state carried)."""
    import jax
    import jax.numpy as jnp

    arch = params.architecture
    theta = fp._theta(params)
    x = jnp.asarray(x)
    va = fp.initial_variational(arch, len(x))
    m = jax.jit(lambda va: fp.evaluate(arch, theta, x, va.lam, va.xi))(va)
    one = jax.jit(lambda va, m: fp.sweep(arch, theta, x, va, m)[:2])
    box = [va, m]

    def run(n):
        va, m = box
        for _ in range(n):
            va, m = one(va, m)
        m.value.block_until_ready()
        box[:] = [va, m]

    return rate(run, seconds, 5, name=name)


def as_method(fp):
    """The module's method under the current contract: ``build`` (this tree), or the base
    commit's ``method()`` record (``init(key, params, options, train)``, a config in the state)
    wrapped as a kernel factory, so both run through the same runner."""
    from sbn_ppl.base.methods import Entry, Kernel, Method

    entry = Entry("mean-field-fixed-point", "numpyro", "", "build", getattr(fp, "FIXED_POINT_OPTIONS", None) or
                  __import__("sbn_ppl.inference.fixed_point", fromlist=["x"]).FIXED_POINT_OPTIONS)
    if hasattr(fp, "build"):
        return Method(entry, fp.build)
    old = fp.method()

    def build(arch, options):
        return Kernel(lambda key, params, train: old.init(key, params, options, train), old.step, old.get_params,
                      old.bound, old.data_axes)

    return Method(entry, build)


def method_rate(fp, params, train, seconds, chunk=10, name=None):
    """steps/s of the module's method through its runner (the path ``fit`` takes)."""
    from sbn_ppl.engine.runner import runner_for

    m = as_method(fp)
    runner = runner_for(m, params, m.check_options({}), train, 0, BATCH)
    done = [0]

    def run(n):
        runner.run(done[0], n)  # returns floats: waits for JAX's asynchronous work
        done[0] += n
        runner.fix_length(chunk)  # one scan length from here on

    return rate(run, seconds, chunk, name=name)


CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import bench_fixed_point as b
from sbn_ppl import SBNParams
from sbn_ppl.engine.runner import runner_for
fp = b.load_module(sys.argv[2] or None)
steps = int(sys.argv[3])
train, _ = b.training_data()
m = b.as_method(fp)
runner = runner_for(m, SBNParams.init(b.ARCH, seed=0), m.check_options({}), train, 0, b.BATCH)
runner.run(0, steps)
print(json.dumps({"steps": steps}))
"""


def peak_memory(path: str | None, steps: int) -> float:
    """Peak resident MiB of a child process that builds the runner on all the training data and
    takes ``steps`` steps of the method (one scan, compilation included)."""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, os.path.dirname(os.path.abspath(__file__)),
                                 path or "", str(steps)], stdout=subprocess.PIPE, stderr=err, text=True,
                                cwd=tempfile.gettempdir())
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise RuntimeError(f"the memory child failed: {err.read()[-2000:]}")
    json.loads(out.strip().splitlines()[-1])
    return usage.ru_maxrss / 1024  # Linux: kilobytes


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=6.0, help="timing window per configuration")
    parser.add_argument("--before", help="a copy of the fixed-point module to time beside the package's")
    parser.add_argument("--before-commit", help="time the module of this commit beside the package's (e.g. 2e32748, "
                                                "the code before issue 22: its imports are mapped to today's layout)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory children")
    parser.add_argument("--memory-steps", type=int, default=20)
    args = parser.parse_args()
    if args.before_commit:
        if args.before:
            sys.exit("give --before or --before-commit, not both")
        args.before = before_copy(args.before_commit)
    if sys.platform != "linux" and not args.no_memory:
        sys.exit("the peak memory is read from ru_maxrss in kilobytes, as Linux reports it; use --no-memory")
    modules = [("after", None)] + ([("before", args.before)] if args.before else [])
    peaks = {}
    if not args.no_memory:  # first, while this process is small: a child's ru_maxrss counts the
        for label, path in modules:  # memory it was forked with
            peaks[label] = peak_memory(path, args.memory_steps)
    import jax

    from sbn_ppl import SBNParams

    train, what = training_data()
    params = SBNParams.init(ARCH, seed=0)
    x = train[:BATCH]
    print(f"# the fixed point at its limit: {ARCH}, batch {BATCH}, {what}; SBNParams.init(seed=0), "
          f"default options (1 sweep per step, adam)")
    print(f"# machine: {platform.node()}, {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
          f"jax {jax.__version__} on {jax.devices()[0].platform}, Python {platform.python_version()}; "
          f"best of 3 windows of {args.seconds / 3:.1f} s each")
    print(f"# load average at the start: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    rows = {}
    floor = "floor (transcendentals of one sweep only)"
    rows[floor] = floor_rate(params, x, args.seconds, name=floor)
    print(f"{floor:<48} {rows[floor]:8.1f} /s   {CPU_MS[floor]:7.1f} CPU ms a call", flush=True)
    for label, path in modules:
        fp = load_module(path)
        for name, fn in ((f"bare sweep ({label})", bare_sweep_rate), (f"method step through the runner ({label})",
                                                                      method_rate)):
            rows[name] = fn(fp, params, x if fn is bare_sweep_rate else train, args.seconds, name=name)
            print(f"{name:<48} {rows[name]:8.1f} /s   {CPU_MS[name]:7.1f} CPU ms a call", flush=True)
    print(f"# load average after timing: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    bare, step = rows["bare sweep (after)"], rows["method step through the runner (after)"]
    print(f"bare sweep / method step (after): {bare / step:.2f}x wall, "
          f"{CPU_MS['method step through the runner (after)'] / CPU_MS['bare sweep (after)']:.2f}x CPU time")
    if args.before:
        print(f"method step after / before: {step / rows['method step through the runner (before)']:.2f}x; "
              f"bare sweep after / before: {bare / rows['bare sweep (before)']:.2f}x")
    for label, peak in peaks.items():
        rows[f"peak MiB ({label})"] = peak
        print(f"peak resident memory of a child that builds the runner on all {len(train):,} rows and takes "
              f"{args.memory_steps} steps, method ({label}): {peak:.0f} MiB", flush=True)
    print(json.dumps({**{k: round(v, 2) for k, v in rows.items()},
                      **{f"CPU ms: {k}": round(v, 2) for k, v in CPU_MS.items()}}))


if __name__ == "__main__":
    main()
