"""The ``attnduality`` command line.

* ``attnduality list``: the experiments, with the data each uses;
* ``attnduality run NAME [--quick] [--seed S] [--out DIR] [--device D] [--set KEY=VALUE ...]``: run one, resumably;
* ``attnduality fit FEATURES.npz --head KIND ...`` or ``attnduality fit --hf-model PATH --texts FILE.csv ...``: fit a
  convex head on your own token features or a local Hugging Face model's (:mod:`.cli_fit`, :mod:`.fitting`), print
  its certificate, save the model;
* ``attnduality bench NAME [--quick] [--threads T]``: run ``benchmarks/NAME.py`` of a source checkout.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from .cli_fit import add_fit_parser, cmd_fit
from .fitting import HEADS, FitError, fit_features

__all__ = ["FitError", "HEADS", "benchmarks_dir", "fit_features", "main"]


# ----------------------------------------------------------------------------------------------------------------
# bench: scripts of a source checkout
# ----------------------------------------------------------------------------------------------------------------
def benchmarks_dir() -> Path | None:
    """``benchmarks/`` of a source checkout (``$ATTNDUALITY_BENCHMARKS``, the package's repository, or the current
    directory), or ``None`` when running from an installed package without the sources."""
    env = os.environ.get("ATTNDUALITY_BENCHMARKS")
    candidates = [Path(env)] if env else []
    candidates += [Path(__file__).resolve().parents[2] / "benchmarks", Path.cwd() / "benchmarks"]
    for c in candidates:
        if (c / "_common.py").is_file():
            return c
    return None


def _benchmarks() -> dict[str, tuple[Path, str]]:
    root = benchmarks_dir()
    if root is None:
        return {}
    out = {}
    for p in sorted(root.glob("*.py")):
        if p.name.startswith("_"):
            continue
        try:
            doc = ast.get_docstring(ast.parse(p.read_text())) or ""
        except (SyntaxError, UnicodeDecodeError):
            doc = ""
        out[p.stem] = (p, doc.strip().splitlines()[0] if doc.strip() else "")
    return out


def _find_benchmark(name: str) -> Path:
    benches = _benchmarks()
    if not benches:
        raise FitError(
            "benchmarks are not available: they live in benchmarks/ of a source checkout, not in the installed "
            "package (git clone the repository and run from it, or set ATTNDUALITY_BENCHMARKS=/path/to/benchmarks)"
        )
    stem = name[:-3] if name.endswith(".py") else name
    for cand in (stem, f"bench_{stem}"):
        if cand in benches:
            return benches[cand][0]
    raise FitError(f"unknown benchmark {name!r}; available: {', '.join(benches)}")


def _cmd_bench(args: argparse.Namespace) -> int:
    import subprocess

    if args.name is None or args.list:
        benches = _benchmarks()
        if not benches:
            _find_benchmark("")  # raises the 'not available' message
        for stem, (_, doc) in benches.items():
            print(f"{stem:20s} {doc}")
        return 0
    path = _find_benchmark(args.name)
    cmd = [sys.executable, str(path)]
    if args.quick:
        cmd.append("--quick")
    if args.threads is not None:
        cmd += ["--threads", str(args.threads)]
    cmd += [a for a in args.args if a != "--"]
    print("running:", " ".join(cmd), file=sys.stderr)
    return subprocess.run(cmd, cwd=path.parent.parent, check=False).returncode


# ----------------------------------------------------------------------------------------------------------------
# list and run
# ----------------------------------------------------------------------------------------------------------------
def _wrap(text: str, indent: int) -> str:
    return textwrap.fill(text, width=110, initial_indent=" " * indent, subsequent_indent=" " * indent)


def _experiments_text() -> str:
    from .experiments import EXPERIMENTS

    lines = []
    for name, exp in EXPERIMENTS.items():
        lines.append(f"  {name}")
        lines.append(_wrap(exp.about, 6))
        lines.append(_wrap(f"data: {exp.data}", 6))
    return "\n".join(lines)


def _cmd_list(args: argparse.Namespace) -> int:
    from .experiments import DISCOVERY_ERRORS, EXPERIMENTS

    if args.json:
        print(json.dumps([{"name": n, "about": e.about, "data": e.data} for n, e in EXPERIMENTS.items()], indent=2))
    else:
        width = max((len(n) for n in EXPERIMENTS), default=4) + 2
        for name, exp in EXPERIMENTS.items():
            print(f"{name:{width}s}{exp.about}")
            print(f"{'':{width}s}data: {exp.data}")
    for mod, err in DISCOVERY_ERRORS.items():
        print(f"warning: experiment module {mod!r} failed to import: {err}", file=sys.stderr)
    return 0


def _config_text(name: str) -> str:
    from .experiments import get_experiment

    exp = get_experiment(name)
    default = exp.config()
    quick = exp.make_config(quick=True)
    lines = [f"{exp.name}: config {exp.config.__name__} (set with --set KEY=VALUE)", ""]
    lines.append(f"  {'key':24s} {'default':>14s} {'--quick':>14s}")
    for f in fields(default):
        lines.append(f"  {f.name:24s} {getattr(default, f.name)!s:>14s} {getattr(quick, f.name)!s:>14s}")
    return "\n".join(lines)


def _parse_threads(text: str) -> int | str:
    if text == "auto":
        return "auto"
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"--threads must be 'auto' or an integer >= 1, got {text!r}") from None
    if n < 1:
        raise ValueError(f"--threads must be 'auto' or an integer >= 1, got {text!r}")
    return n


def _cmd_run(args: argparse.Namespace) -> int:
    from .experiments import RunError, default_out_dir, get_experiment, parse_overrides, run_experiment
    from .experiments.runner import check_device, check_finite_config

    exp = get_experiment(args.name)
    if args.show_config:
        print(_config_text(args.name))
        return 0
    try:  # everything that can be wrong with the options, before any work starts
        overrides = parse_overrides(args.set or [])
        cfg = exp.make_config(quick=args.quick, overrides=overrides)
        check_finite_config(cfg)
        check_device(args.device)
        if args.seed < 0:
            raise ValueError(f"--seed must be >= 0, got {args.seed}")
        threads = _parse_threads(args.threads)
    except ValueError as exc:
        print(f"attnduality run: error: {exc}", file=sys.stderr)
        return 2
    out = args.out or default_out_dir(exp.name, args.seed, args.quick, overrides)
    try:
        results = run_experiment(
            exp,
            out=out,
            seed=args.seed,
            quick=args.quick,
            device=args.device,
            config=cfg,
            fresh=args.fresh,
            progress=not args.no_progress,
            threads=threads,
        )
    except RunError as exc:  # a mismatched or busy output folder, or one that cannot be created
        print(f"attnduality run: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; completed steps and training checkpoints are in {out / 'checkpoints'}: run the same "
            "command again to resume",
            file=sys.stderr,
        )
        return 130
    resumed = [k for k, v in results["steps"].items() if v["resumed"]]
    if resumed:
        print(f"resumed: {len(resumed)} of {len(results['steps'])} steps loaded from {out / 'checkpoints'}")
    print(f"wrote {out / 'results.json'} and {out / 'report.md'} ({results['total_seconds']:.1f} s)")
    if not args.no_report:
        print()
        print((out / "report.md").read_text())
    return 0


# ----------------------------------------------------------------------------------------------------------------
# the parser
# ----------------------------------------------------------------------------------------------------------------
class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilogs' line breaks; descriptions are wrapped by :func:`_para`."""


def _para(text: str) -> str:
    return textwrap.fill(" ".join(text.split()), width=100)


def _parser() -> argparse.ArgumentParser:
    from .experiments import available_experiments

    p = argparse.ArgumentParser(
        prog="attnduality",
        description=_para(
            "Convex attention heads with certified solvers: run the experiments, fit convex heads on your own "
            "features, run the benchmarks."
        ),
        epilog=_para(
            "Start with `attnduality run quickstart` (under a minute on 2 cores, even with one busy; data bundled with "
            "scikit-learn). "
            "`attnduality COMMAND --help` explains each command."
        ),
        formatter_class=_Formatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    lp = sub.add_parser(
        "list",
        help="list the experiments, what each does and the data it uses",
        description="List the registered experiments: name, one-line description and the data each one uses.",
        formatter_class=_Formatter,
    )
    lp.add_argument("--json", action="store_true", help="print the list as JSON")

    names = available_experiments()
    rp = sub.add_parser(
        "run",
        help="run an experiment; writes results.json, report.md, figures and resumable checkpoints",
        description=_para(
            "Run an experiment. Everything goes to --out: results.json (config, seed, versions, git commit, "
            "metrics, tables, step times), report.md (tables, figure links), PNG figures and checkpoints/. "
            "Re-running with the same options resumes: completed steps are loaded, interrupted training continues "
            "from its last checkpoint, and the numbers are the same as an uninterrupted run's. Different options "
            "with the same --out are refused (pass --fresh to start over)."
        ),
        epilog="experiments:\n" + _experiments_text(),
        formatter_class=_Formatter,
    )
    rp.add_argument("name", choices=names, metavar="NAME", help=f"experiment: {', '.join(names)}")
    rp.add_argument("--quick", action="store_true", help="the experiment's small configuration (a smoke test)")
    rp.add_argument("--seed", type=int, default=0, help="random seed: data split, gates, initialisations (default 0)")
    rp.add_argument(
        "--out", type=Path, default=None, help="output directory (default runs/NAME[-quick]-seedS[-HASH of --set])"
    )
    rp.add_argument("--device", default="cpu", help="torch device: cpu (default), cuda, cuda:1, mps")
    rp.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a config field (repeatable); `--show-config` lists the keys, their defaults and quick values; "
        "tuples as a,b,c; booleans as true/false",
    )
    rp.add_argument("--show-config", action="store_true", help="print the experiment's config fields and exit")
    rp.add_argument("--fresh", action="store_true", help="delete existing checkpoints in --out and start over")
    rp.add_argument(
        "--threads",
        default="auto",
        help="torch/BLAS threads: 'auto' (default) uses the cores that are idle when the run starts, measured over "
        "0.25 s, so that a busy machine is not oversubscribed (on 2 cores with one busy, two threads made the "
        "quickstart several times slower); or an integer",
    )
    rp.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    rp.add_argument("--no-report", action="store_true", help="do not print report.md at the end")

    add_fit_parser(sub, _Formatter, _para)

    benches = _benchmarks()
    bench_epilog = (
        "benchmarks:\n" + "\n".join(f"  {k:20s} {doc}" for k, (_, doc) in benches.items())
        if benches
        else "benchmarks are not available here: they live in benchmarks/ of a source checkout, not in the "
        "installed package."
    )
    bp = sub.add_parser(
        "bench",
        help="run a benchmark script of a source checkout (benchmarks/NAME.py)",
        description=_para(
            "Run benchmarks/NAME.py (NAME with or without the bench_ prefix) with this Python, from the repository "
            "root. Other arguments (after --) go to the script (`attnduality bench adam -- --help` shows its options). "
            "Results go to benchmarks/out/. Needs a source checkout (or ATTNDUALITY_BENCHMARKS=DIR)."
        ),
        epilog=bench_epilog,
        formatter_class=_Formatter,
    )
    bp.add_argument("name", nargs="?", default=None, metavar="NAME", help="benchmark to run (omit to list them)")
    bp.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    bp.add_argument("--quick", action="store_true", help="pass --quick: small sizes, a smoke test of about a minute")
    bp.add_argument("--threads", type=int, default=None, help="pass --threads T (the scripts default to 1)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``attnduality`` console script; returns the exit status."""
    from .data import MissingDataError

    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.args = extra
    commands = {"list": _cmd_list, "run": _cmd_run, "fit": cmd_fit, "bench": _cmd_bench}
    try:
        return commands[args.command](args)
    except MissingDataError as exc:
        print(f"attnduality {args.command}: missing data: {exc}", file=sys.stderr)
        return 1
    except FitError as exc:
        print(f"attnduality {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        if args.command != "fit":  # in `fit`, estimators' ValueErrors are about the user's data or options
            raise
        print(f"attnduality fit: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
