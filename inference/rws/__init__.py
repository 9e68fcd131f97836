"""Wake-sleep and reweighted wake-sleep (Hinton, Dayan, Frey & Neal 1995; Bornschein &
Bengio 2015, "Reweighted wake-sleep"; Le et al. 2019, "Revisiting reweighted wake-sleep").

The model's theta and the recognition network's phi, fitted by two objectives. For a batch
of B data points, with K particles ``h_nk ~ q(. | x_n)``, ``log w_nk = log p(x_n, h_nk) -
log q(h_nk | x_n)`` and weights normalised per data point, ``w~_nk = w_nk / sum_j w_nj``
(Bornschein & Bengio 2015, eq. 6):

    objective    (1/B) sum_n log (1/K) sum_k w_nk          (IWAE bound; K = 1: the ELBO estimate)
    wake-theta   its gradient in theta  =  (1/B) sum_n sum_k w~_nk grad log p(x_n, h_nk)
    wake-phi     (1/B) sum_n sum_k w~_nk grad log q(h_nk | x_n)
    sleep-phi    (1/(S B)) sum grad log q(h | x),  (x, h) ~ p  (S dreams per data point)
    phi step     insomnia * wake-phi + (1 - insomnia) * sleep-phi

Classic wake-sleep (``wake-sleep``) is K = 1, insomnia = 0, S = 1: wake lowers KL(q || p)
in theta, sleep KL(p || q) in phi; two objectives, no guarantee of convergence.

Pyro's stock ``pyro.infer.ReweightedWakeSleep`` (``pyro-rws``) sums every site over the
whole batch before weighting: it weights the K particles for the batch as *one*
observation, ``log (1/K) sum_k prod_n w_nk`` (its docstring: "Mini-batch training is not
supported yet"). Ours weight each data point apart.

One option schema for both backends (NumPy only): ``numpyro.py``, the jitted JAX step on
the NumPyro model's densities; ``pyro.py``, a Pyro ``ELBO`` used like
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
    Entry("rws", "numpyro", ".numpyro", "build_rws", RWS_OPTIONS, _RWS, guide="recognition"),
    Entry("rws", "pyro", ".pyro", "build_rws", RWS_OPTIONS, _RWS, guide="recognition"),
    Entry("wake-sleep", "numpyro", ".numpyro", "build_wake_sleep", WAKE_SLEEP_OPTIONS, _WS, guide="recognition"),
    Entry("wake-sleep", "pyro", ".pyro", "build_wake_sleep", WAKE_SLEEP_OPTIONS, _WS, guide="recognition"),
    Entry("pyro-rws", "pyro", ".pyro", "build_stock_rws", STOCK_OPTIONS,
          "pyro.infer.ReweightedWakeSleep, the stock class (weights a batch jointly)", guide="recognition"),
)
