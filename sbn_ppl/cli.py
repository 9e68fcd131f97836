"""``sbn-ppl``: the command line. Errors are one line on stderr and exit status 2.

The flags of ``fit`` come from the registered methods' option schemas, and those of
``compare`` from :class:`~sbn_ppl.comparison.config.CompareConfig`: nothing here is kept in sync by hand.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

import numpy as np

from sbn_ppl.base.version import __version__

COMPARE_DEFAULT_OUT = "runs/compare"
FIT_DEFAULT_OUT = "runs/fit"
SPLITS = ("train", "valid", "test", "all")


# -- info, sample ---------------------------------------------------------------------------------
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
    from sbn_ppl.inference import backends_of, method_names

    info["methods"] = {name: backends_of(name) for name in method_names()}
    print(json.dumps(info, indent=2))


def _cmd_sample(args) -> None:
    import sbn_ppl.base.density as density
    from sbn_ppl.base.files import write_atomic
    from sbn_ppl.base.params import SBNParams
    from sbn_ppl.base.resources import check_memory

    if args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    params = SBNParams.load(args.params)
    check_memory(args.n * sum(params.architecture.sizes) * 8.0 * 2, f"--n {args.n} samples")
    x = density.sample_prior(params, args.n, np.random.default_rng(args.seed))[0].astype(np.int8)
    if args.out:
        if args.out.endswith(".npy"):
            import io

            buf = io.BytesIO()
            np.save(buf, x)
            write_atomic(args.out, buf.getvalue())
        else:
            write_atomic(args.out, "\n".join(" ".join(map(str, row)) for row in x) + "\n")
        print(f"wrote {args.n} samples of {x.shape[1]} units to {args.out}", file=sys.stderr)
    else:
        np.savetxt(sys.stdout, x, fmt="%d")


# -- evaluate ------------------------------------------------------------------------------------
def _cmd_evaluate(args) -> None:
    from sbn_ppl.base.data import load_dataset
    from sbn_ppl.base.arrays import random_subset
    from sbn_ppl.base.params import SBNParams
    from sbn_ppl.yardstick import score

    params = SBNParams.load(args.params)
    data = load_dataset(args.data, width=params.architecture.visible_size)
    split = args.split or ("all" if data.split_from_one_array else "test")
    if data.split_from_one_array and args.split is None:
        print(f"sbn-ppl: {data.name} is one array without splits: scoring all of it (--split to choose)",
              file=sys.stderr)
    x = data.split(split)
    total = len(x)
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError(f"--limit must be at least 1, got {args.limit}")
        x = random_subset(x, min(args.limit, total), args.seed)
    options = _estimator_options(args, params)
    result = score(params, x, args.estimator, seed=args.seed, progress=not args.quiet, devices=args.devices,
                   **options)
    out = {
        "log_likelihood": _finite(result.mean),
        "stderr": _finite(result.mean_stderr),
        "estimator": result.estimator,
        "n": int(len(x)),
        "of": int(total),
        "data": data.name,
        "split": split,
        "params": os.path.abspath(args.params),
    }
    if result.ess is not None:
        out.update({k: _finite(v) for k, v in result.summary().items()})
    warnings = list(getattr(result, "warnings", []) or [])
    if warnings:
        out["warnings"] = warnings
        for w in warnings:
            print(f"sbn-ppl: warning: {w}", file=sys.stderr)
    if len(x) < total:
        print(f"sbn-ppl: scored a seeded random {len(x)} of the {total} points of split {split!r}", file=sys.stderr)
    print(json.dumps(out))


def _estimator_options(args, params) -> dict:
    """The options of the chosen estimator; options of another estimator are refused, not dropped."""
    given = {"--guide": args.guide, "--is-particles": args.is_particles,
             "--ais-temperatures": args.ais_temperatures, "--ais-chains": args.ais_chains}
    applies = {"exact": (), "is": ("--guide", "--is-particles"), "ais": ("--ais-temperatures", "--ais-chains")}
    stray = [flag for flag, value in given.items() if value is not None and flag not in applies[args.estimator]]
    if stray:
        raise ValueError(f"{', '.join(stray)} do(es) not apply to --estimator {args.estimator}")
    if args.estimator == "is":
        return {"guide": args.guide or _trained_guide(params), "is_particles": args.is_particles or 1000}
    if args.estimator == "ais":
        return {k: v for k, v in (("ais_temperatures", args.ais_temperatures), ("ais_chains", args.ais_chains))
                if v is not None}
    return {}


def _trained_guide(params) -> str:
    """The guide a parameter file was trained with (a fitted file holds only that one)."""
    present = [g for g in ("recognition", "mean_field") if params.has_guide(g)]
    if len(present) == 1:
        return present[0]
    if not present:
        raise ValueError("the parameter file holds no guide to importance-sample with; use --estimator exact or "
                         "ais (or fit a guide post hoc)")
    raise ValueError("the parameter file holds both guides (an untrained one may be among them); "
                     "say which one to use with --guide recognition|mean_field")


def _finite(value):
    return value if value is not None and math.isfinite(value) else None


# -- fit -----------------------------------------------------------------------------------------
def _cmd_fit(args) -> None:
    from sbn_ppl.base.architecture import Architecture
    from sbn_ppl.comparison.config import DEFAULT_HIDDEN
    from sbn_ppl.base.data import load_dataset
    from sbn_ppl.engine.fitting import Budget, Checkpointing, fit
    from sbn_ppl.inference import get_method
    from sbn_ppl.base.params import SBNParams

    method = get_method(args.method, args.backend)
    data = load_dataset(args.data)
    arch = Architecture.parse(args.arch or (data.visible_size,) + DEFAULT_HIDDEN, args.connectivity)
    if arch.visible_size != data.visible_size:
        raise ValueError(
            f"architecture {arch} has {arch.visible_size} visible units but data {data.name!r} has {data.visible_size}"
        )
    options = _fit_options(args, method)
    guides = tuple(g for g in (method.guide,) if g in ("recognition", "mean_field"))
    params = SBNParams.init(arch, seed=args.seed, guide=guides, connectivity=arch.connectivity)
    result = fit(method, params, data.train, budget=Budget(args.steps, args.seconds, args.epochs),
                 checkpointing=Checkpointing(args.checkpoint_every, out=args.out, overwrite=args.overwrite,
                                             resume=args.resume),
                 batch_size=args.batch_size, seed=args.seed, options=options, progress=not args.quiet,
                 devices=args.devices, data=data.name)
    last = result.metrics[-1]
    print(json.dumps({"method": result.method, "backend": result.backend, "steps": last["step"],
                      "epochs": last.get("epoch"), "seconds": last["seconds"], "objective": last["objective"],
                      "guide": method.guide, "params": os.path.join(args.out, "params.npz"),
                      "metrics": os.path.join(args.out, "metrics.json")}))


def _fit_options(args, method) -> dict:
    options = {}
    for option in _method_schema().values():
        value = getattr(args, "opt_" + option.name, None)
        if value is not None:
            if option.name not in method.defaults:
                raise ValueError(f"method {method.name!r} ({method.backend}) has no option {option.flag}; its "
                                 f"options are: {', '.join('--' + n.replace('_', '-') for n in method.defaults)}")
            options[option.name] = value
    for item in args.option or []:
        name, value = _split_option(item)
        options[name] = value
    return options


def _method_schema():
    from sbn_ppl.inference import option_schema

    return option_schema()


def _option_type(option):
    default = option.default
    if isinstance(default, bool):
        return None
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return float
    if default is None:
        return _parse_value
    return str


def _add_method_flags(p) -> None:
    g = p.add_argument_group("method options (each method takes some; `sbn-ppl info` lists the methods)")
    for option in _method_schema().values():
        help_ = f"{option.help} (default {option.default!r})"
        choices = getattr(option.check, "choices", None)
        if isinstance(option.default, bool):
            g.add_argument(option.flag, dest="opt_" + option.name, action=argparse.BooleanOptionalAction,
                           default=None, help=help_)
        else:
            g.add_argument(option.flag, dest="opt_" + option.name, type=_option_type(option), choices=choices,
                           metavar=option.name.upper(),
                           default=None, help=help_)


def _split_option(item: str):
    if "=" not in item:
        raise ValueError(f"--option takes name=value (or method.name=value), got {item!r}")
    name, value = item.split("=", 1)
    return name.strip(), _parse_value(value)


def _parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(text.lower(), text)


# -- compare -------------------------------------------------------------------------------------
def compare_arguments(args) -> dict:
    """The keyword arguments of :func:`sbn_ppl.compare`: the config file's values, then the
    command line's (which win), then the CLI's own default output folder."""
    from sbn_ppl.comparison.config import CompareConfig, cli_fields, load_toml

    merged = dict(load_toml(args.config)) if args.config else {}
    CompareConfig.from_mapping(merged, where=f"config file {args.config!r}")  # names and types, early
    merged = {k.replace("-", "_"): v for k, v in merged.items()}
    for f in cli_fields():
        value = getattr(args, f.name, None)
        if value is not None:
            merged[f.name] = value
    options = {k: (dict(v) if isinstance(v, dict) else v) for k, v in merged.pop("options", {}).items()}
    for item in args.option or []:
        name, value = _split_option(item)
        method, dot, option = name.rpartition(".")
        if dot:
            options.setdefault(method, {})[option] = value
        else:
            options[name] = value
    if args.quiet:
        merged["progress"] = False
    merged.pop("quiet", None)
    merged.setdefault("out", COMPARE_DEFAULT_OUT)
    if options:
        merged["options"] = options
    return merged


def _cmd_compare(args) -> int:
    from sbn_ppl.comparison.harness import compare
    from sbn_ppl.comparison.published import published_table
    from sbn_ppl.comparison.reporting import markdown_table

    kwargs = compare_arguments(args)
    records = compare(**kwargs)
    out = kwargs["out"]
    with open(os.path.join(out, "results.json")) as f:
        config = json.load(f)["config"]
    budget = " and ".join(x for x in (f"{config['steps']} steps" if config.get("steps") else "",
                                      f"{config['epochs']:g} epochs" if config.get("epochs") else "",
                                      f"{config['seconds']:g} s" if config.get("seconds") else "") if x)
    seeds = config.get("seeds") or [config["seed"]]
    seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {','.join(map(str, seeds))}"
    print(f"{config['data']}, {config['arch']}, {seed_text}, budget {budget} of training per method; "
          f"test log p(x) in nats per data point ({config['estimator']}, "
          f"{config.get('test_points_used') or config['test_size']} test points)\n")
    print(markdown_table(records))
    reference = published_table(config.get("data"), config.get("arch"))
    if reference:
        print("\n" + reference)
    print(f"\nwrote {os.path.join(out, 'results.json')}, results.csv, learning_curves.png, report.md and "
          f"<method>-<backend>/params.npz", file=sys.stderr)
    failed = [f"{r['method']} ({r['backend']})" for r in records if r.get("error")]
    if failed:
        print(f"sbn-ppl: {len(failed)} method(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


class _Renamed(argparse.Action):
    """An option spelled as before 0.2: a one-line error naming the new spelling."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} was renamed to {self.new}")


def _add_renamed(p, old_to_new: dict) -> None:
    for old, new in old_to_new.items():
        p.add_argument(old, action=_Renamed, new=new, dest="renamed_" + old.strip("-"))


def _add_compare_flags(p) -> None:
    from sbn_ppl.comparison.config import cli_fields

    for f in cli_fields():
        flag = "--" + f.name.replace("_", "-")
        kind = f.metadata["types"][0]
        if f.metadata.get("flag") == "store_true":
            p.add_argument(flag, dest=f.name, action="store_true", default=None, help=f.metadata["help"])
        else:
            p.add_argument(flag, dest=f.name, type=float if kind is float or f.metadata["types"] == (int, float)
                           else kind, choices=f.metadata.get("choices"), default=None, help=f.metadata["help"])


def _add_devices_flag(p, help_: str) -> None:
    from sbn_ppl.comparison.config import CompareConfig

    f = CompareConfig.__dataclass_fields__["devices"]
    p.add_argument("--devices", type=f.metadata["types"][0], default=None, help=help_)


def _seed(text: str) -> int:
    """A ``--seed``: a non-negative integer (NumPy's generators refuse others, late and unnamed)."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"a seed is a non-negative integer, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line on stderr, exit status 2 (argparse's own status)
        self.exit(2, f"sbn-ppl: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sbn-ppl", description=__doc__)
    parser.add_argument("--version", action="version", version=f"sbn-ppl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("info", help="versions, backends, devices and methods")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("sample", help="ancestral samples of x from a parameter file")
    p.add_argument("--params", required=True, help="parameter file (.npz)")
    p.add_argument("--n", type=int, default=16, help="number of samples (default 16)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--out", help="write to this file (.npy, else whitespace text) instead of stdout")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("evaluate", help="estimate the mean log-likelihood of a data split")
    p.add_argument("--params", required=True, help="parameter file (.npz)")
    p.add_argument("--data", default="digits", help="digits, synthetic:<arch>:<seed>, a named benchmark, or a file")
    p.add_argument("--split", choices=SPLITS,
                   help="default: test (all of a one-array file, which has no real split)")
    p.add_argument("--estimator", choices=("exact", "is", "ais"), default="exact")
    p.add_argument("--is-particles", type=int, help="is: importance samples per data point (default 1000)")
    p.add_argument("--guide", choices=("recognition", "mean_field"), help="is: the guide (default: the one the "
                                                                          "file was trained with)")
    p.add_argument("--ais-temperatures", type=int, help="ais: number of intermediate temperatures")
    p.add_argument("--ais-chains", type=int, help="ais: independent annealing runs per data point")
    p.add_argument("--limit", type=int, help="score a seeded random subset of N data points")
    p.add_argument("--seed", type=_seed, default=0)
    _add_devices_flag(p, "is and ais: JAX devices to split the data points over (default: every device)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_renamed(p, {"--k": "--is-particles", "--temperatures": "--ais-temperatures", "--chains": "--ais-chains"})
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "fit", help="fit an SBN with one method; writes DIR/params.npz and DIR/metrics.json",
        description="Fit an SBN with one method. Budgets: --steps, --epochs and --seconds; training stops at "
                    "whichever ends first; with none, 1000 steps; --seconds alone has no step cap. Methods: "
                    + "; ".join(f"{e.name} ({e.backend}): {e.description}" for e in _entries()),
    )
    p.add_argument("--method", required=True, help="a registered method (see above, or `sbn-ppl info`)")
    p.add_argument("--backend", choices=("numpyro", "pyro"), help="default: NumPyro where the method has it")
    p.add_argument("--data", default="digits", help="digits (default), synthetic:<arch>:<seed>, a named "
                                                    "benchmark, or a file")
    p.add_argument("--arch", help="bottom-up widths D-H1-...-HL (default D-12-6: 18 hidden units, exact to score)")
    p.add_argument("--connectivity", choices=("layered", "dense"), default="layered")
    p.add_argument("--steps", type=int, help="training steps")
    p.add_argument("--epochs", type=float, help="passes over the training set")
    p.add_argument("--seconds", type=float, help="training time")
    p.add_argument("--batch-size", type=int, default=100, help="mini-batch size (default 100)")
    p.add_argument("--seed", type=_seed, default=0)
    p.add_argument("--out", default=FIT_DEFAULT_OUT, help=f"output folder (default {FIT_DEFAULT_OUT})")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints (default 100)")
    p.add_argument("--option", action="append", metavar="NAME=VALUE", help="a method option by name")
    _add_devices_flag(p, "NumPyro methods: JAX devices to split each batch over (default: every device; the "
                         "batch size must divide over them); the Pyro backend runs on one device")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_method_flags(p)
    _add_renamed(p, {"--local": "--no-amortised"})
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser(
        "compare",
        help="fit every method on the same data and score them on the same yardstick",
        description="Fit every method (or --methods) on the same data, from the same initial parameters, on "
        "the same batches, for the same budget, and score them by the same yardstick; print a Markdown table "
        "and write DIR/results.json, results.csv, learning_curves.png and DIR/<method>-<backend>/params.npz. "
        "Every option can be set in a TOML file (--config); the command line wins.",
    )
    p.add_argument("--config", help="TOML file of these options (see examples/compare.toml)")
    _add_compare_flags(p)
    p.add_argument("--option", action="append", metavar="[METHOD.]NAME=VALUE",
                   help="a method option, for every method that takes it or for METHOD only")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_renamed(p, {"--k": "--is-particles", "--temperatures": "--ais-temperatures", "--chains": "--ais-chains"})
    p.set_defaults(func=_cmd_compare)

    from sbn_ppl.comparison.certify import add_certify_command
    from sbn_ppl.comparison.reporting import add_report_command

    add_report_command(sub)
    add_certify_command(sub)
    return parser


def _entries():
    from sbn_ppl.inference import entries

    return entries()


def main(argv: list[str] | None = None) -> int:
    """The command: its exit status (2: an error, one line on stderr; 130: Ctrl-C).

    Run as the command (``argv`` is ``None``), a Ctrl-C ends the process at once with status
    130 once the run has saved what it keeps: the interpreter's usual exit can crash while
    XLA threads are still compiling (a segmentation fault, status 139)."""
    from sbn_ppl.engine.fitting import interrupts_noticed

    try:
        with interrupts_noticed():
            args = build_parser().parse_args(argv)
            status = args.func(args)
    except (ValueError, OSError, RuntimeError) as e:
        print(f"sbn-ppl: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except MemoryError:
        print("sbn-ppl: error: out of memory; ask for less (a smaller net, batch, K or data set)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sbn-ppl: interrupted", file=sys.stderr)
        if argv is None:
            _exit_now(130)
        return 130
    return status or 0


def _exit_now(status: int) -> None:
    """Flush and end the process without the interpreter's teardown (see :func:`main`)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    first = text[0] if text else type(e).__name__
    if "RESOURCE_EXHAUSTED" in str(e) or "Out of memory" in str(e):
        return "out of memory: " + first[:200] + "; ask for less (a smaller net, batch or K)"
    return first


if __name__ == "__main__":
    sys.exit(main())

