"""The ``attnduality`` command line.

* ``attnduality list``: the experiments, with the data each uses;
* ``attnduality run NAME [--quick] [--seed S] [--out DIR] [--device D] [--set KEY=VALUE ...]``: run one, resumably;
* ``attnduality fit FEATURES.npz --head KIND ...``: fit a convex head on your own token features, print its
  certificate, save the model;
* ``attnduality bench NAME [--quick] [--threads T]``: run ``benchmarks/NAME.py`` of a source checkout.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import sys
import textwrap
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FitError", "HEADS", "benchmarks_dir", "fit_features", "main"]


class FitError(ValueError):
    """Bad input to ``attnduality fit`` (the message says what is wrong)."""


# ----------------------------------------------------------------------------------------------------------------
# fit: convex heads on user features
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Head:
    classifier: str
    regressor: str
    kinds: tuple[str, ...]
    kind_param: str | None
    tokens: str  # "3d" (needs (N, s, d)), "2d" (needs (N, d), pools tokens), "any"
    about: str


def _formulation_head(family: str, note: str = "") -> _Head:
    """A head of the formulation registry, described by its formulation and estimators."""
    from .convex.estimators import estimator_classes
    from .convex.formulations import formulation_families

    form = formulation_families()[family]
    clf, reg = estimator_classes(family)
    kind_param = clf._kind_param
    return _Head(
        clf.__name__,
        reg.__name__,
        form.kinds if kind_param else (),
        kind_param,
        "3d" if form.tokens else "2d",
        form.summary + note,
    )


HEADS: dict[str, _Head] = {
    "mlp": _formulation_head("mlp"),
    "attention": _formulation_head("attention"),
    "mixer": _formulation_head("mixer"),
    "fno": _formulation_head("fno", "; --blocks B for block-diagonal B-FNO"),
    "token_lasso": _Head(
        "TokenLassoClassifier",
        "TokenLassoRegressor",
        ("attention", "gated_fc", "sequence"),
        "kind",
        "any",
        "attention-only network as a group lasso over tokens (Ergen et al. 2022)",
    ),
    "nuclear": _formulation_head("linear"),
}
_ALL_KINDS = tuple(dict.fromkeys(k for h in HEADS.values() for k in h.kinds))


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise FitError(f"features file {path} does not exist")
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise FitError(f"{path} is a single .npy array; save X and y with np.savez({path.name!r}, X=X, y=y)")
        with loaded as z:
            return {k: z[k] for k in z.files}
    except FitError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise FitError(f"cannot read {path} as an .npz archive (np.savez(path, X=X, y=y)): {exc}") from None


def _pool(x: np.ndarray, pool: str) -> np.ndarray:
    if x.ndim == 2:
        return x
    return x.mean(axis=1) if pool == "mean" else x.reshape(len(x), -1)


def _auto_task(y: np.ndarray) -> str:
    if y.ndim == 1 and (y.dtype.kind in "biuUS"):
        return "classify"
    return "regress"


def fit_features(
    features: str | Path,
    head: str,
    *,
    kind: str | None = None,
    task: str = "auto",
    beta: float = 1e-3,
    tol: float = 1e-6,
    n_gates: int | None = None,
    blocks: int | None = None,
    loss: str | None = None,
    max_iter: int = 10_000,
    seed: int = 0,
    pool: str = "mean",
    device: str = "cpu",
    dtype: str = "float64",
) -> tuple[Any, dict[str, Any]]:
    """Fit a convex head on the arrays ``X`` and ``y`` (and optional ``X_test``, ``y_test``) of an ``.npz`` file.

    Returns the fitted estimator and a JSON-able summary (status, certificate, scores). Bad input raises
    :class:`FitError` (a ``ValueError``) with a message naming what is wrong.
    """
    from . import convex

    if head not in HEADS:
        raise FitError(f"unknown head {head!r}; choose from {', '.join(HEADS)}")
    spec = HEADS[head]
    if task not in ("auto", "classify", "regress"):
        raise FitError(f"task must be auto, classify or regress, got {task!r}")
    if pool not in ("mean", "flatten"):
        raise FitError(f"pool must be mean or flatten, got {pool!r}")
    from .experiments.runner import check_device

    try:
        device = check_device(device)
    except ValueError as exc:
        raise FitError(str(exc)) from None
    path = Path(features)
    arrays = _load_npz(path)
    missing = [k for k in ("X", "y") if k not in arrays]
    if missing:
        found = ", ".join(sorted(arrays)) or "no arrays"
        raise FitError(
            f"{path} must contain arrays 'X' ((N, s, d) tokens or (N, d) features) and 'y' (N,); "
            f"missing {', '.join(repr(m) for m in missing)}; found: {found}"
        )
    x, y = arrays["X"], arrays["y"]
    has_test = "X_test" in arrays or "y_test" in arrays
    if has_test and not ("X_test" in arrays and "y_test" in arrays):
        raise FitError(f"{path} has only one of 'X_test' / 'y_test'; give both or neither")
    if x.ndim not in (2, 3):
        raise FitError(f"X must be (N, s, d) token features or (N, d) features, got shape {x.shape}")
    if len(x) != len(y):
        raise FitError(f"X and y must have the same number of samples, got {len(x)} and {len(y)}")
    if x.dtype.kind not in "biuf":
        raise FitError(f"X must be numeric, got dtype {x.dtype}")
    task = _auto_task(y) if task == "auto" else task

    if spec.tokens == "3d" and x.ndim != 3:
        raise FitError(f"--head {head} needs token features X of shape (N, s, d); got {x.shape}")
    if kind is not None and kind not in spec.kinds:
        allowed = ", ".join(spec.kinds) if spec.kinds else "none (do not pass --kind)"
        raise FitError(f"--kind {kind} is not available for --head {head}; choose from: {allowed}")
    if blocks is not None and head != "fno":
        raise FitError("--blocks applies only to --head fno")
    if kind == "sequence" and task != "regress":
        raise FitError("--kind sequence (sequence outputs) is regression only: use --task regress")

    def prep(a: np.ndarray) -> np.ndarray:
        return _pool(a, pool) if spec.tokens == "2d" else a

    params: dict[str, Any] = {"beta": beta, "tol": tol, "max_iter": max_iter, "random_state": seed}
    params.update({"device": device, "dtype": dtype})
    if kind is not None and spec.kind_param is not None:
        params[spec.kind_param] = kind
    if n_gates is not None:
        params["n_gates"] = n_gates
    if blocks is not None:
        params["blocks"] = blocks
    if loss is not None:
        params["loss"] = loss
    cls = getattr(convex, spec.classifier if task == "classify" else spec.regressor)
    try:
        est = cls(**params)
    except TypeError as exc:
        raise FitError(f"{cls.__name__} does not take these options: {exc}") from None
    xf = prep(x)
    est.fit(xf, y)
    cert = est.certificate_
    score_name = "accuracy" if task == "classify" else "R2"
    summary: dict[str, Any] = {
        "features": str(path),
        "head": head,
        "estimator": cls.__name__,
        "task": task,
        "kind": kind if kind is not None else getattr(est, spec.kind_param or "", None),
        "params": {k: v for k, v in est.get_params().items() if k != "gates"},
        "X_shape": list(x.shape),
        "fit_input_shape": list(xf.shape),
        "status": est.status_,
        "iterations": int(est.n_iter_),
        "seconds": float(getattr(est, "solve_time_", float("nan"))),
        "certificate": {
            "primal": float(cert.primal),
            "dual": float(cert.dual),
            "gap": float(cert.gap),
            "relative_gap": float(cert.rel_gap),
        },
        "score": score_name,
        "train_score": float(est.score(xf, y)),
    }
    if has_test:
        xt, yt = arrays["X_test"], arrays["y_test"]
        if xt.shape[1:] != x.shape[1:]:
            raise FitError(f"X_test must have shape (M, {', '.join(map(str, x.shape[1:]))}), got {xt.shape}")
        summary["test_score"] = float(est.score(prep(xt), yt))
    return est, summary


def _cmd_fit(args: argparse.Namespace) -> int:
    import joblib

    from . import __version__

    out = args.out or Path(f"{Path(args.features).stem}-{args.head}.joblib")
    if out.is_dir():
        raise FitError(f"--out {out} is a directory; give a file name such as {out / 'model.joblib'}")
    try:  # before the fit, so that a bad --out does not cost a solve
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FitError(f"cannot write the model to {out}: {exc.strerror or exc}") from None
    est, summary = fit_features(
        args.features,
        args.head,
        kind=args.kind,
        task=args.task,
        beta=args.beta,
        tol=args.tol,
        n_gates=args.n_gates,
        blocks=args.blocks,
        loss=args.loss,
        max_iter=args.max_iter,
        seed=args.seed,
        pool=args.pool,
        device=args.device,
        dtype=args.dtype,
    )
    joblib.dump(est, out)
    summary["model"] = str(out)
    summary["versions"] = {"attnduality": __version__, "python": platform.python_version()}
    json_path = out.with_suffix(".json")
    json_path.write_text(json.dumps(summary, indent=2, default=str))
    c = summary["certificate"]
    shape = " x ".join(map(str, summary["X_shape"][1:]))
    print(
        f"{summary['estimator']} ({args.head}, kind={summary['kind']}, task={summary['task']}) on "
        f"{summary['X_shape'][0]} samples of {shape}"
    )
    print(f"status: {summary['status']} after {summary['iterations']} iterations, {summary['seconds']:.2f} s")
    print(
        f"certificate: primal {c['primal']:.8g}  dual (lower bound) {c['dual']:.8g}  "
        f"relative gap {c['relative_gap']:.2e}"
    )
    line = f"train {summary['score']}: {summary['train_score']:.4f}"
    if "test_score" in summary:
        line += f"   test {summary['score']}: {summary['test_score']:.4f}"
    print(line)
    print(f"saved model to {out} (joblib.load) and summary to {json_path}")
    return 0


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

    kinds_help = "; ".join(f"{h}: {', '.join(s.kinds) or '-'}" for h, s in HEADS.items())
    fp = sub.add_parser(
        "fit",
        help="fit a convex head on your own features (.npz with X, y), print the certificate, save the model",
        description=_para(
            "Fit a convex head on features saved with np.savez(FEATURES.npz, X=X, y=y[, X_test=..., y_test=...]): "
            "X is (N, s, d) token features or (N, d) features, y is (N,) labels or targets. Prints the solver status, "
            "the duality-gap certificate (primal objective, dual lower bound, relative gap) and the train (and test) "
            "accuracy or R², then saves the fitted estimator with joblib (joblib.load(path).predict(X)) and a JSON "
            "summary next to it."
        ),
        epilog="heads:\n" + "\n".join(f"  {h:12s} {s.about} [X: {s.tokens}]" for h, s in HEADS.items()),
        formatter_class=_Formatter,
    )
    fp.add_argument("features", type=Path, metavar="FEATURES.npz", help="npz archive with arrays X and y")
    fp.add_argument("--head", required=True, choices=list(HEADS), help="convex head to fit (see below)")
    fp.add_argument(
        "--kind",
        choices=_ALL_KINDS,
        default=None,
        help=f"head variant (default: the head's own default, gated_relu / attention); valid per head: {kinds_help}",
    )
    fp.add_argument(
        "--task",
        choices=("auto", "classify", "regress"),
        default="auto",
        help="classify (labels; reports accuracy) or regress (reports R²); "
        "auto (default): classify for integer/string y, else regress",
    )
    fp.add_argument(
        "--beta", type=float, default=1e-3, help="regularisation β of the averaged objective (default 1e-3)"
    )
    fp.add_argument(
        "--tol", type=float, default=1e-6, help="stop at this certified relative duality gap (default 1e-6)"
    )
    fp.add_argument("--n-gates", type=int, default=None, help="sampled gates (gated heads; default: the head's)")
    fp.add_argument("--blocks", type=int, default=None, help="B of a block-diagonal B-FNO (fno only; default 1)")
    fp.add_argument(
        "--loss",
        choices=("cross_entropy", "logistic", "squared"),
        default=None,
        help="loss (default cross_entropy to classify, squared to regress)",
    )
    fp.add_argument("--max-iter", type=int, default=10_000, help="solver iteration limit (default 10000)")
    fp.add_argument("--seed", type=int, default=0, help="random_state of the gate sampling (default 0)")
    fp.add_argument(
        "--pool",
        choices=("mean", "flatten"),
        default="mean",
        help="how mlp/nuclear heads turn (N, s, d) tokens into (N, d) features: mean over tokens (default) or "
        "flatten to s·d features",
    )
    fp.add_argument("--device", default="cpu", help="torch device (default cpu)")
    fp.add_argument(
        "--dtype", choices=("float64", "float32"), default="float64", help="solver precision (default float64)"
    )
    fp.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="MODEL.joblib",
        help="where to save the model (default FEATURES-HEAD.joblib in the current directory); the summary goes "
        "to the same path with .json",
    )

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
    commands = {"list": _cmd_list, "run": _cmd_run, "fit": _cmd_fit, "bench": _cmd_bench}
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
