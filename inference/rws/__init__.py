"""Wake-sleep and reweighted wake-sleep (Hinton et al. 1995; Bornschein & Bengio 2015).

One option schema for both backends (NumPy only): ``numpyro.py`` is the jitted JAX step on
the NumPyro model's densities, ``pyro.py`` a Pyro ``ELBO`` used like
``pyro.infer.ReweightedWakeSleep`` (and the stock class itself as ``pyro-rws``).
"""
from sbn_ppl.base.methods import Entry
from sbn_ppl.base.options import TRAINING, Option, optional_positive_int, positive_int, unit_interval

K = Option("k", 5, positive_int, "particles K per data point (importance samples from the recognition network)")
INSOMNIA = Option("insomnia", 1.0, unit_interval, "weight of wake-phi against sleep-phi in the guide's update")
SLEEP = Option("num_sleep_particles", None, optional_positive_int, "dreams per data point for sleep-phi (default K)")

RWS_OPTIONS = TRAINING + (K, INSOMNIA, SLEEP)
WAKE_SLEEP_OPTIONS = TRAINING
STOCK_OPTIONS = TRAINING + (K, INSOMNIA)

_RWS = "reweighted wake-sleep (Bornschein & Bengio 2015), per-data-point weights"
_WS = "wake-sleep (Hinton et al. 1995)"
METHODS = (
    Entry("rws", "numpyro", ".numpyro", "rws_method", RWS_OPTIONS, _RWS),
    Entry("rws", "pyro", ".pyro", "rws_method", RWS_OPTIONS, _RWS),
    Entry("wake-sleep", "numpyro", ".numpyro", "wake_sleep_method", WAKE_SLEEP_OPTIONS, _WS),
    Entry("wake-sleep", "pyro", ".pyro", "wake_sleep_method", WAKE_SLEEP_OPTIONS, _WS),
    Entry("pyro-rws", "pyro", ".pyro", "stock_rws_method", STOCK_OPTIONS,
          "pyro.infer.ReweightedWakeSleep, the stock class (weights a batch jointly)"),
)
