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
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError) as e:
        print(f"sbn-ppl: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sbn-ppl: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
