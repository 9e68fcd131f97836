"""A method for the Ray executor's tests, registered in every Ray worker by the setup hook
(``ray_setup="tests.comparison.ray_toys.register"``): it trains nothing, and its first attempt
kills its own worker process when its option ``die_once`` names a marker file not yet there."""
import os

from sbn_ppl.base.methods import Entry, Kernel
from sbn_ppl.base.options import Option
from sbn_ppl.inference import add

def _text(value, name: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a path, got {value!r}")
    return value


DIE_ONCE = Option("die_once", "", _text, "a marker file: the first run that finds it missing creates it and dies")
ENTRY = Entry("ray-toy", "pyro", "tests.comparison.ray_toys", "build", (DIE_ONCE,), "a frozen SBN that may die once")


def build(arch, options) -> Kernel:
    def init(key, params, train):
        marker = options["die_once"]
        if marker and not os.path.exists(marker):
            open(marker, "w").close()
            os._exit(3)  # the worker dies mid-task, as a killed or crashed machine would
        return params

    return Kernel(init, lambda key, state, batch: (state, {"objective": 0.0}), lambda state: state)


def register() -> None:
    add(ENTRY)
