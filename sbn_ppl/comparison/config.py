"""The settings of a comparison, declared once: :class:`CompareConfig`.

One record serves the API (``sbn_ppl.compare(**settings)``), the TOML file (``--config``,
keys are the field names, dashes or underscores) and the command line (``sbn-ppl compare``:
one flag per field, generated from the field's metadata). A field's metadata holds its
help text and the types a TOML value may have. Options renamed since 0.1 (``k``,
``temperatures``, ``chains``, ``num_particles``) give a one-line error naming the new ones.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

DEFAULT_HIDDEN = (12, 6)  # 64-12-6 on digits: 18 hidden units, so the test log-likelihood is exact
DEFAULT_SECONDS = 20.0  # training seconds per method when no budget is given (compilation included)
ESTIMATORS = ("auto", "exact", "ais", "is")
SELECTIONS = ("last", "best")

# The yardstick's options were renamed so they no longer collide with method options.
RENAMED = {
    "k": "is_particles", "num_particles": "is_particles", "temperatures": "ais_temperatures",
    "chains": "ais_chains", "num_chains": "ais_chains", "num_temperatures": "ais_temperatures",
}


def _f(default, help: str, types: tuple, cli: bool = True, **kw):
    metadata = {"help": help, "types": types, "cli": cli, **kw}
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class CompareConfig:
    data: str = _f("digits", "digits (default), synthetic:<arch>:<seed>, binarized-mnist, caltech101-silhouettes, "
                             "uci:<name>, or a data file", (str,))
    arch: str | None = _f(None, "bottom-up widths D-H1-...; default: the teacher's for synthetic data, else D-12-6",
                          (str,))
    connectivity: str = _f("layered", "layered or dense", (str,), choices=("layered", "dense"))
    methods: Any = _f(None, "comma-separated names, NAME:BACKEND for one backend (default: all installed)",
                      (str, list))
    backend: str | None = _f(None, "default: each method's own (NumPyro where it exists); all: every backend",
                             (str,), choices=("numpyro", "pyro", "all"))
    steps: int | None = _f(None, "training steps per method", (int,))
    epochs: float | None = _f(None, "training epochs per method (passes over the training set)", (int, float))
    seconds: float | None = _f(None, f"training seconds per method (default {DEFAULT_SECONDS:g} when no budget is "
                                     "given); with several budgets, whichever ends first", (int, float))
    batch_size: int = _f(100, "mini-batch size, the same batches for every method", (int,))
    seed: int = _f(0, "initial parameters, batch order, every method's randomness, scoring", (int,))
    seeds: Any = _f(None, "several seeds (comma-separated, or a TOML list): every method once per seed", (str, list))
    out: str | None = _f(None, "output folder (the command line's default: runs/compare)", (str,))
    resume: bool = _f(False, "keep what finished in --out (its settings are read from results.json), run the rest",
                      (bool,), flag="store_true")
    overwrite: bool = _f(False, "replace the results that --out holds (their method folders included)", (bool,),
                         flag="store_true")
    checkpoints: int = _f(8, "learning-curve points per method", (int,))
    curve_points: int | None = _f(100, "points scored at each checkpoint: a fixed seeded random subset of the "
                                       "validation split (else the test split)", (int,))
    test_points: int | None = _f(None, "score the test log-likelihood on a seeded random subset of N test points "
                                       "(default: the whole test split, as the papers report)", (int,))
    train_points: int | None = _f(None, "score the train log-likelihood on a seeded random subset of N (default: "
                                        "all when exact, else as many as there are test points)", (int,))
    select: str = _f("last", "the parameters scored: last (the end of training) or best (the checkpoint with the best "
                             "learning-curve score on the validation subset: early stopping)", (str,),
                     choices=SELECTIONS)
    patience: int | None = _f(None, "stop a method after this many scored checkpoints without a better learning-curve "
                                    "score on the validation subset (default: never)", (int,))
    estimator: str = _f("auto", "auto (default): exact when at most 20 hidden units, else AIS", (str,),
                        choices=ESTIMATORS)
    is_particles: int = _f(1000, "importance samples per data point with a method's guide", (int,))
    curve_particles: int | None = _f(None, "is: importance samples per point on the learning curve (default: "
                                           "is-particles; fewer make frequent checkpoints affordable)", (int,))
    ais_temperatures: int | None = _f(None, "AIS: number of intermediate temperatures", (int,))
    ais_chains: int | None = _f(None, "AIS: independent annealing runs per data point", (int,))
    posthoc_steps: int = _f(10_000, "estimator is: steps of the recognition network fitted post hoc to each frozen "
                                    "model (the same for every method; 0: none, methods without a guide go unscored)",
                            (int,))
    data_bias: bool = _f(True, "start the visible biases at the logit of the training means", (bool,), cli=False)
    options: Mapping[str, Any] = _f({}, "method options: {name: value} for every method that takes it, {method: {name: value}} for one", (dict,), cli=False)
    lr: float | None = _f(None, "learning rate of every method that has one", (int, float))
    devices: int | None = _f(None, "JAX devices to split the data over (default: every device); NumPyro methods and "
                                   "the IS/AIS yardstick only, the Pyro backend runs on one", (int,))
    progress: bool = _f(True, "progress bars and messages", (bool,), cli=False)
    curve_ais_temperatures: int = _f(100, "AIS temperatures of a learning-curve point for a method without a guide "
                                          "under the is estimator (Gibbs, the fixed point, local mean field)", (int,))
    curve_ais_chains: int = _f(4, "AIS chains per point of such a learning-curve point", (int,))
    bdmc_points: int = _f(100, "ais: points simulated from each fitted model for the bidirectional Monte Carlo "
                               "sandwich that bounds AIS's gap at its schedule (0: none)", (int,))
    gradient_variance_draws: int = _f(0, "draws of each method's recognition-network gradient at every scored "
                                         "checkpoint, on one fixed training batch: their total variance goes in the "
                                         "curve, the records and gradient_variance.png (0, the default: off; else "
                                         ">= 2)", (int,))
    tune: Any = _f(None, "a grid per method, chosen on the validation split: 'lr=3e-4,1e-3,3e-3' (several options: "
                         "'lr=1e-3,3e-3;k=5,10'; in TOML a table of lists)", (str, dict))
    tuned_from: str | None = _f(None, "a finished tuning run's folder (compare --tune): each method at the options "
                                      "chosen there on the validation split (e.g. a grid at 10 epochs, then this run "
                                      "at 50); a method's own [options.<method>] still wins", (str,))
    executor: str = _f("sequential", "where the cells (method, seed, tuning point) run: sequential (here, in turn) "
                                     "or ray (one Ray task each)", (str,), choices=("sequential", "ray"))
    ray_address: str | None = _f(None, "executor ray: a running cluster ('auto', 'ray://host:10001'); default a "
                                       "local Ray on this machine", (str,))
    ray_cpus: float = _f(1, "executor ray: CPUs each task declares", (int, float))
    ray_gpus: float = _f(0, "executor ray: GPUs each task declares", (int, float))
    ray_retries: int = _f(2, "executor ray: retries of a task that failed or whose worker died", (int,))
    ray_setup: str | None = _f(None, "executor ray: 'package.module.function' every worker runs first (e.g. to "
                                     "register your own methods)", (str,))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: str = "compare") -> "CompareConfig":
        """Checked construction: unknown or renamed names and wrongly typed values are errors."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        kwargs = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name in RENAMED:
                raise ValueError(f"{where}: option {key!r} was renamed to {RENAMED[name]!r} "
                                 f"(--{RENAMED[name].replace('_', '-')})")
            if name not in known:
                raise ValueError(f"{where}: unknown option {key!r}; expected some of {', '.join(sorted(known))}")
            kwargs[name] = _typed(where, key, value, known[name])
        return cls(**kwargs)

    def replace(self, **changes) -> "CompareConfig":
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


def _typed(where: str, key: str, value, f: dataclasses.Field):
    if value is None:
        return None
    types = f.metadata["types"]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        names = " or ".join(t.__name__ for t in types)
        raise ValueError(f"{where}: {key} must be {names}, got {value!r}")
    choices = f.metadata.get("choices")
    if choices and value not in choices:
        raise ValueError(f"{where}: {key} must be one of {', '.join(choices)}, got {value!r}")
    return value


def load_toml(path: str | os.PathLike) -> dict:
    """A TOML file of comparison settings, as a plain mapping (checked by :meth:`CompareConfig.from_mapping`)."""
    from sbn_ppl.base.tomlcompat import tomllib

    path = os.fspath(path)
    if not os.path.exists(path):
        raise ValueError(f"config file {path!r} does not exist")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"cannot read config file {path!r}: {e}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"cannot read config file {path!r}: byte {e.start} is not UTF-8 text (TOML files are "
                         "UTF-8)") from None
    except OSError as e:
        raise ValueError(f"cannot read config file {path!r}: {e.strerror or e}") from None


def cli_fields() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(CompareConfig) if f.metadata.get("cli", True)]


def tuning_grid(spec) -> dict[str, list]:
    """``--tune``'s grid: ``"lr=3e-4,1e-3;k=5,10"`` or ``{"lr": [3e-4, 1e-3]}`` -> ``{name: [values]}``
    (numbers read as int or float, ``true``/``false`` as booleans, anything else as text)."""
    if spec is None or spec == "" or spec == {}:
        return {}
    if isinstance(spec, str):
        grid = {}
        for part in (p.strip() for p in spec.split(";") if p.strip()):
            name, eq, values = part.partition("=")
            if not eq or not name.strip() or not values.strip():
                raise ValueError(f"cannot read --tune {spec!r}: expected NAME=V1,V2,... (several: ';' between)")
            grid[name.strip().replace("-", "_")] = [_value(v.strip()) for v in values.split(",")]
        spec = grid
    if not isinstance(spec, Mapping):
        raise ValueError(f"tune must be NAME=V1,V2,... or a table of lists, got {spec!r}")
    out = {}
    for name, values in spec.items():
        values = list(values) if isinstance(values, (list, tuple)) else [values]
        if not values or len(set(map(repr, values))) != len(values):
            raise ValueError(f"tune {name}: give distinct values, got {values!r}")
        out[str(name).replace("-", "_")] = values
    return out


def _value(text: str):
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text

