"""``sbn-ppl``: the command line. Errors are one line on stderr and exit status 2."""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from . import __version__


def _cmd_info(args) -> None:
    from importlib import metadata

    info = {"sbn_ppl": __version__, "python": sys.version.split()[0]}
    for dist in ("numpy", "torch", "pyro-ppl", "jax", "jaxlib", "numpyro", "optax", "scikit-learn"):
        try:
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[dist] = None
    devices = {}
    try:
        import torch

        devices["torch"] = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    except ImportError:
        devices["torch"] = None
    try:
        import jax

        devices["jax"] = [str(d) for d in jax.devices()]
    except ImportError:
        devices["jax"] = None
    info["devices"] = devices
    from .methods import backends_of, method_names

    info["methods"] = {name: backends_of(name) for name in method_names()}
    print(json.dumps(info, indent=2))


def _cmd_sample(args) -> None:
    from . import density
    from .params import SBNParams

    if args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    params = SBNParams.load(args.params)
    x = density.sample_prior(params, args.n, np.random.default_rng(args.seed))[0].astype(np.int8)
    if args.out:
        if args.out.endswith(".npy"):
            from .files import write_atomic
            import io

            buf = io.BytesIO()
            np.save(buf, x)
            write_atomic(args.out, buf.getvalue())
        else:
            from .files import write_atomic

            write_atomic(args.out, "\n".join(" ".join(map(str, row)) for row in x) + "\n")
        print(f"wrote {args.n} samples of {x.shape[1]} units to {args.out}", file=sys.stderr)
    else:
        np.savetxt(sys.stdout, x, fmt="%d")


def _cmd_evaluate(args) -> None:
    from .data import load_dataset
    from .evaluation import score
    from .params import SBNParams

    params = SBNParams.load(args.params)
    data = load_dataset(args.data)
    x = data.test if args.split == "test" else data.train
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError(f"--limit must be at least 1, got {args.limit}")
        x = x[: args.limit]
    ais = {}
    if args.estimator == "ais":
        ais = {k: v for k, v in (("num_temperatures", args.temperatures), ("num_chains", args.chains)) if v is not None}
    result = score(params, x, args.estimator, num_particles=args.k, guide=args.guide, seed=args.seed, **ais)
    print(json.dumps({
        "log_likelihood": result.mean,
        "stderr": result.mean_stderr,
        "estimator": result.estimator,
        "n": int(len(x)),
        "data": data.name,
        "split": args.split,
        "params": os.path.abspath(args.params),
    }))


def _fit_options(args) -> dict:
    options = {}
    for flag, name in (("lr", "lr"), ("batch_size", "batch_size"), ("k", "k"), ("insomnia", "insomnia"),
                       ("sweeps", "sweeps"), ("optimizer", "optimizer"), ("chains", "chains")):
        value = getattr(args, flag)
        if value is not None:
            options[name] = value
    if args.amortised is not None:
        options["amortised"] = args.amortised
    for item in args.option or []:
        if "=" not in item:
            raise ValueError(f"--option takes name=value, got {item!r}")
        name, value = item.split("=", 1)
        options[name] = _parse_value(value)
    return options


def _parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def _cmd_fit(args) -> None:
    from .architecture import Architecture
    from .data import load_dataset
    from .fitting import fit
    from .params import SBNParams

    data = load_dataset(args.data)
    arch = Architecture.parse(args.arch, args.connectivity)
    if arch.visible_size != data.visible_size:
        raise ValueError(
            f"architecture {arch} has {arch.visible_size} visible units but data {data.name!r} has {data.visible_size}"
        )
    params = SBNParams.init(arch, seed=args.seed)
    result = fit(args.method, params, data.train, backend=args.backend, steps=args.steps, seconds=args.seconds,
                 seed=args.seed, options=_fit_options(args), checkpoint_every=args.checkpoint_every,
                 out=args.out, progress=not args.quiet)
    last = result.metrics[-1]
    print(json.dumps({"method": result.method, "backend": result.backend, "steps": last["step"],
                      "seconds": last["seconds"], "objective": last["objective"],
                      "params": os.path.join(args.out, "params.npz"),
                      "metrics": os.path.join(args.out, "metrics.json")}))


# -- compare --------------------------------------------------------------------------------------
# Every option of `compare`, as written on the command line (dashes) or in the TOML file
# (dashes or underscores), with the type its value must have and the compare() argument it sets.
_COMPARE_OPTIONS = {
    "data": (str, "data"), "arch": (str, "arch"), "connectivity": (str, "connectivity"),
    "methods": ((str, list), "methods"), "backend": (str, "backend"), "steps": (int, "steps"),
    "seconds": ((int, float), "seconds"), "seed": (int, "seed"), "out": (str, "out"), "resume": (bool, "resume"),
    "checkpoints": (int, "checkpoints"), "curve_points": (int, "curve_points"),
    "train_points": (int, "train_points"), "estimator": (str, "estimator"), "k": (int, "num_particles"),
    "temperatures": (int, "ais_temperatures"), "chains": (int, "ais_chains"), "data_bias": (bool, "data_bias"),
    "quiet": (bool, "quiet"), "lr": ((int, float), "lr"), "batch_size": (int, "batch_size"),
    "options": (dict, "options"),
}
COMPARE_DEFAULT_OUT = "runs/compare"


def load_compare_config(path: str) -> dict:
    """A TOML file of `compare` options (the command line's names; ``[options]`` and
    ``[options.<method>]`` tables for method options), checked name by name."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    if not os.path.exists(path):
        raise ValueError(f"config file {path!r} does not exist")
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"cannot read config file {path!r}: {e}") from None
    config = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in _COMPARE_OPTIONS:
            raise ValueError(f"config file {path!r}: unknown option {key!r}; "
                             f"expected some of {', '.join(sorted(_COMPARE_OPTIONS))}")
        kind = _COMPARE_OPTIONS[name][0]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise ValueError(f"config file {path!r}: {key} must be {names}, got {value!r}")
        config[name] = value
    return config


def compare_arguments(args) -> dict:
    """The keyword arguments of :func:`sbn_ppl.compare`: the config file's values, then the
    command line's (which win), then the CLI's own default output folder."""
    merged = load_compare_config(args.config) if args.config else {}
    for name in _COMPARE_OPTIONS:
        value = getattr(args, name, None)
        if value is not None and name != "options":
            merged[name] = value
    options = {k: (dict(v) if isinstance(v, dict) else v) for k, v in merged.pop("options", {}).items()}
    for name in ("lr", "batch_size"):
        if name in merged:
            options[name] = merged.pop(name)
    for item in args.option or []:
        name, value = _split_option(item)
        method, dot, option = name.rpartition(".")
        if dot:
            options.setdefault(method, {})[option] = value
        else:
            options[name] = value
    kwargs = {_COMPARE_OPTIONS[name][1]: value for name, value in merged.items()}
    kwargs["progress"] = not kwargs.pop("quiet", False)
    kwargs.setdefault("out", COMPARE_DEFAULT_OUT)
    if options:
        kwargs["options"] = options
    return kwargs


def _split_option(item: str):
    if "=" not in item:
        raise ValueError(f"--option takes name=value (or method.name=value), got {item!r}")
    name, value = item.split("=", 1)
    return name.strip(), _parse_value(value)


def _cmd_compare(args) -> int:
    from .harness import compare
    from .report import markdown_table

    kwargs = compare_arguments(args)
    records = compare(**kwargs)
    out = kwargs["out"]
    with open(os.path.join(out, "results.json")) as f:
        config = json.load(f)["config"]
    budget = " and ".join(x for x in (f"{config['steps']} steps" if config["steps"] else "",
                                      f"{config['seconds']:g} s" if config["seconds"] else "") if x)
    print(f"{config['data']}, {config['arch']}, seed {config['seed']}, budget {budget} of training per method; "
          f"test log p(x) in nats per data point ({config['estimator']}, {config['test_size']} test points)\n")
    print(markdown_table(records))
    print(f"\nwrote {os.path.join(out, 'results.json')}, results.csv, learning_curves.png and "
          f"<method>-<backend>/params.npz", file=sys.stderr)
    failed = [f"{r['method']} ({r['backend']})" for r in records if r.get("error")]
    if failed:
        print(f"sbn-ppl: {len(failed)} method(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sbn-ppl", description=__doc__)
    parser.add_argument("--version", action="version", version=f"sbn-ppl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("info", help="versions, backends, devices and methods")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("sample", help="ancestral samples of x from a parameter file")
    p.add_argument("--params", required=True, help="parameter file (.npz)")
    p.add_argument("--n", type=int, default=16, help="number of samples (default 16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write to this file (.npy, else whitespace text) instead of stdout")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("evaluate", help="estimate the mean log-likelihood of a data split")
    p.add_argument("--params", required=True, help="parameter file (.npz)")
    p.add_argument("--data", default="digits", help="digits, synthetic:<arch>:<seed>, or a file")
    p.add_argument("--split", choices=("test", "train"), default="test")
    p.add_argument("--estimator", choices=("exact", "is", "ais"), default="exact")
    p.add_argument("--k", type=int, default=1000, help="importance samples per data point (is)")
    p.add_argument("--guide", choices=("recognition", "mean_field"), default="recognition", help="guide for is")
    p.add_argument("--temperatures", type=int, help="AIS: number of intermediate temperatures")
    p.add_argument("--chains", type=int, help="AIS: independent annealing runs per data point")
    p.add_argument("--limit", type=int, help="score only the first N data points")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("fit", help="fit an SBN with one method; writes DIR/params.npz and DIR/metrics.json")
    p.add_argument("--method", required=True)
    p.add_argument("--backend", choices=("numpyro", "pyro"))
    p.add_argument("--data", default="digits")
    p.add_argument("--arch", default="64-32-16", help="bottom-up widths D-H1-...-HL (default 64-32-16)")
    p.add_argument("--connectivity", choices=("layered", "dense"), default="layered")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--seconds", type=float, help="time budget (stops at whichever of steps/seconds comes first)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/fit")
    p.add_argument("--checkpoint-every", type=int, default=100)
    p.add_argument("--lr", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--optimizer", choices=("sgd", "adam"))
    p.add_argument("--k", type=int, help="particles (rws)")
    p.add_argument("--insomnia", type=float, help="rws: weight of wake-phi against sleep-phi")
    p.add_argument("--sweeps", type=int, help="gibbs: sweeps per learning step")
    p.add_argument("--chains", type=int, help="gibbs: persistent chains per training case")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--amortised", dest="amortised", action="store_true", default=None)
    g.add_argument("--local", dest="amortised", action="store_false")
    p.add_argument("--option", action="append", metavar="NAME=VALUE", help="any other method option")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_fit)

    from .harness import DEFAULT_CHECKPOINTS, DEFAULT_CURVE_POINTS, DEFAULT_SECONDS  # NumPy only

    p = sub.add_parser(
        "compare",
        help="fit every method on the same data and score them on the same yardstick",
        description="Fit every method (or --methods) on the same data, from the same initial parameters, "
        "for the same budget, and score them by the same yardstick; print a Markdown table and write "
        "DIR/results.json, results.csv, learning_curves.png and DIR/<method>-<backend>/params.npz. "
        "Every option can be set in a TOML file (--config); the command line wins.",
    )
    p.add_argument("--config", help="TOML file of these options (see examples/compare.toml)")
    p.add_argument("--data", help="digits (default), synthetic:<arch>:<seed>, or a file")
    p.add_argument("--arch", help="bottom-up widths D-H1-...; default: the teacher's for synthetic data, else D-12-6")
    p.add_argument("--connectivity", choices=("layered", "dense"))
    p.add_argument("--methods", help="comma-separated names, NAME:BACKEND for one backend (default: all installed)")
    p.add_argument("--backend", choices=("numpyro", "pyro", "all"),
                   help="default: each method's own (NumPyro where it exists); all: every backend")
    p.add_argument("--steps", type=int, help="training steps per method")
    p.add_argument("--seconds", type=float,
                   help=f"training seconds per method (default {DEFAULT_SECONDS:g} when no budget is given)")
    p.add_argument("--seed", type=int, help="initial parameters, every method, scoring (default 0)")
    p.add_argument("--out", help=f"output folder (default {COMPARE_DEFAULT_OUT})")
    p.add_argument("--resume", action="store_true", default=None, help="keep the methods finished in --out, run the rest")
    p.add_argument("--checkpoints", type=int, help=f"learning-curve points per method (default {DEFAULT_CHECKPOINTS})")
    p.add_argument("--curve-points", dest="curve_points", type=int,
                   help=f"test points scored at each checkpoint (default {DEFAULT_CURVE_POINTS}; the final scores use all)")
    p.add_argument("--train-points", dest="train_points", type=int,
                   help="score the train log-likelihood on the first N (default: all when exact, else as many "
                   "as there are test points)")
    p.add_argument("--estimator", choices=("auto", "exact", "ais", "is"),
                   help="auto (default): exact when at most 20 hidden units, else AIS")
    p.add_argument("--k", type=int, help="importance samples per data point with a method's guide (default 1000)")
    p.add_argument("--temperatures", type=int, help="AIS: number of intermediate temperatures")
    p.add_argument("--chains", type=int, help="AIS: independent annealing runs per data point")
    p.add_argument("--lr", type=float, help="learning rate of every method that has one")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="mini-batch size of every method that has one")
    p.add_argument("--option", action="append", metavar="[METHOD.]NAME=VALUE",
                   help="a method option, for every method that takes it or for METHOD only")
    p.add_argument("--quiet", action="store_true", default=None, help="no progress bars")
    p.set_defaults(func=_cmd_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status = args.func(args)
    except (ValueError, OSError) as e:
        print(f"sbn-ppl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sbn-ppl: interrupted", file=sys.stderr)
        return 130
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
