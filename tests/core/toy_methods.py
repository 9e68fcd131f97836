"""Toy methods for the run-folder tests (tests/core/test_run_integrity.py): cheap, registered
with ``sbn_ppl.inference.add``, a jitted JAX one with state arrays (an exact resume) and a
Python-looped one whose step can play a library that swallows a Ctrl-C.

``python -m tests.core.toy_methods ARGS`` is ``sbn-ppl ARGS`` with them registered."""
import os
import signal
import sys

import numpy as np

from sbn_ppl.base.methods import Entry, Kernel
from sbn_ppl.base.options import Option, positive_int
from sbn_ppl.base.params import SBNParams


def visible_mean(arch, options):
    """The visible biases moved towards the logit of each batch's mean; the state is the
    parameters as JAX arrays. ``unroll`` repeats a matrix product in the step (compilation time)."""
    import jax.numpy as jnp

    def init(key, params, train):
        return {k: jnp.asarray(v) for k, v in params.items() if k != "sizes"}

    def step(key, state, batch):
        mean = jnp.clip(batch.x.mean(0), 0.05, 0.95)
        b = state["b_0"] + 0.1 * (jnp.log(mean) - jnp.log1p(-mean) - state["b_0"])
        if options["unroll"] > 1:
            print("tracing the step", file=sys.stderr, flush=True)  # compilation follows
        m = jnp.eye(arch.sizes[0])
        for i in range(options["unroll"] - 1):  # a long graph for XLA to compile
            m = jnp.tanh(m @ m + i * 1e-3)
        b = b + 0.0 * m.sum()
        objective = jnp.mean(batch.x @ b - jnp.sum(jnp.logaddexp(0.0, b)))
        return {**state, "b_0": b}, {"objective": objective}

    def get_params(state):
        return SBNParams.from_arrays(arch, {k: np.asarray(v) for k, v in state.items()})

    return Kernel(init, step, get_params)


def swallowing(arch, options):
    """A Python-looped step that receives a Ctrl-C at step ``interrupt_at`` and swallows it, as
    JAX's garbage-collection callback does when one lands while XLA compiles."""
    def step(key, state, batch):
        params, n = state
        if n + 1 == options["interrupt_at"]:
            try:
                os.kill(os.getpid(), signal.SIGINT)
            except KeyboardInterrupt:
                pass  # "Exception ignored in ..."
        return (params, n + 1), {"objective": -1.0}

    return Kernel(lambda key, params, train: (params, 0), step, lambda state: state[0])


TOY = Entry("toy-mean", "numpyro", __name__, "visible_mean",
            (Option("unroll", 1, positive_int, "matrix products in a step"),), "toy: visible biases only")
SWALLOW = Entry("toy-swallow", "numpyro", __name__, "swallowing",
                (Option("interrupt_at", 3, positive_int, "the step that gets a Ctrl-C"),), "toy", jit=False)


def register() -> None:
    from sbn_ppl.inference import add

    add(TOY)
    add(SWALLOW)


if __name__ == "__main__":
    register()
    from sbn_ppl.cli import main

    sys.exit(main())
