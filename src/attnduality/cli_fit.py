"""The ``attnduality fit`` command: its parser (:func:`add_fit_parser`) and what it runs (:func:`cmd_fit`).

The command checks which input it was given (an ``.npz`` archive or a local Hugging Face model with texts or
images), fits the head with :mod:`attnduality.fitting`, saves the model with joblib and a JSON summary next to it,
and prints the certificate. The fitting names it uses are re-exported here.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path
from typing import Any

from .fitting import HEADS, IMAGE_SUFFIXES, FitError, fit_features, fit_hf, read_image_folder, read_texts_csv

__all__ = [
    "HEADS",
    "IMAGE_SUFFIXES",
    "FitError",
    "add_fit_parser",
    "cmd_fit",
    "fit_features",
    "fit_hf",
    "read_image_folder",
    "read_texts_csv",
]

_ALL_KINDS = tuple(dict.fromkeys(k for h in HEADS.values() for k in h.kinds))
_HF_ONLY = ("texts", "images", "layer", "pool_dim", "max_tokens", "test_size", "cache", "batch_size")


def _inputs(args: argparse.Namespace) -> Path | None:
    """The ``.npz`` path, or None with --hf-model; one-line errors for both/neither/misplaced options."""
    if args.features is not None and args.features_opt is not None:
        raise FitError("give the features file once: FEATURES.npz or --features FEATURES.npz")
    npz = args.features if args.features is not None else args.features_opt
    if npz is not None and args.hf_model is not None:
        raise FitError("give either FEATURES.npz or --hf-model PATH, not both")
    if npz is None and args.hf_model is None:
        raise FitError(
            "no input: give FEATURES.npz (arrays X, y), or --hf-model PATH with --texts FILE.csv or --images FOLDER"
        )
    if npz is not None:
        for name in _HF_ONLY:
            if getattr(args, name) is not None:
                raise FitError(f"--{name.replace('_', '-')} applies only with --hf-model")
    elif (args.texts is None) == (args.images is None):
        raise FitError("give exactly one of --texts FILE.csv and --images FOLDER with --hf-model")
    return npz


def cmd_fit(args: argparse.Namespace) -> int:
    """Run ``attnduality fit``: fit, save the model with joblib and the summary as JSON next to it, print both."""
    import joblib

    from . import __version__

    npz = _inputs(args)
    stem = Path(npz).stem if npz is not None else Path(args.hf_model).name
    out = args.out or Path(f"{stem}-{args.head}.joblib")
    if out.is_dir():
        raise FitError(f"--out {out} is a directory; give a file name such as {out / 'model.joblib'}")
    try:  # before the fit, so that a bad --out does not cost a solve
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FitError(f"cannot write the model to {out}: {exc.strerror or exc}") from None
    options = {
        k: getattr(args, k)
        for k in (
            "kind",
            "task",
            "beta",
            "tol",
            "n_gates",
            "blocks",
            "loss",
            "max_iter",
            "seed",
            "pool",
            "device",
            "dtype",
        )
    }
    if npz is not None:
        est, summary = fit_features(npz, args.head, **options)
    else:
        hf = {
            k: getattr(args, k)
            for k in ("texts", "images", "text_column", "label_column", "layer", "pool_dim", "max_tokens", "cache")
        }
        hf = {k: v for k, v in hf.items() if v is not None}
        est, summary = fit_hf(
            args.hf_model,
            args.head,
            test_size=args.test_size or 0.25,
            batch_size=args.batch_size or 32,
            progress=False if args.no_progress else None,
            **hf,
            **options,
        )
    joblib.dump(est, out)
    summary["model"] = str(out)
    summary["versions"] = {"attnduality": __version__, "python": platform.python_version()}
    json_path = out.with_suffix(".json")
    json_path.write_text(json.dumps(summary, indent=2, default=str))
    _print_summary(summary, args.head, out, json_path)
    return 0


def _print_summary(summary: dict[str, Any], head: str, out: Path, json_path: Path) -> None:
    c = summary["certificate"]
    if "hf" in summary:
        hf, sp = summary["hf"], summary["split"]
        print(
            f"features: {hf['model_class']} from {hf['hf_model']}, layer {hf['layer']}: "
            f"{' x '.join(map(str, summary['X_shape']))} ({hf['feature_seconds']:.1f} s; cache {hf['feature_cache']})"
        )
        print(
            f"split: {sp['n_train']} train / {sp['n_test']} held out"
            f"{' (stratified)' if sp['stratified'] else ''}, seed {sp['seed']}"
        )
        n, shape = sp["n_train"], summary["fit_input_shape"][1:]
    else:
        n, shape = summary["X_shape"][0], summary["X_shape"][1:]
    print(
        f"{summary['estimator']} ({head}, kind={summary['kind']}, task={summary['task']}) on "
        f"{n} samples of {' x '.join(map(str, shape))}"
    )
    print(f"status: {summary['status']} after {summary['iterations']} iterations, {summary['seconds']:.2f} s")
    print(
        f"certificate: primal {c['primal']:.8g}  dual (lower bound) {c['dual']:.8g}  "
        f"relative gap {c['relative_gap']:.2e}"
    )
    line = f"train {summary['score']}: {summary['train_score']:.4f}"
    if "test_score" in summary:
        line += f"   {'held-out' if 'hf' in summary else 'test'} {summary['score']}: {summary['test_score']:.4f}"
    print(line)
    twin = summary["twin"]
    if "parameters" in twin:
        print(f"recovered twin: {twin['class']} with {twin['parameters']:,} parameters (est.to_module())")
    else:
        print(f"recovered twin: not available ({twin['error']})")
    print(f"saved model to {out} (joblib.load) and summary to {json_path}")


def add_fit_parser(sub: Any, formatter: type[argparse.HelpFormatter], para: Any) -> argparse.ArgumentParser:
    """The ``fit`` subcommand's parser, added to ``sub``."""
    kinds_help = "; ".join(f"{h}: {', '.join(s.kinds) or '-'}" for h, s in HEADS.items())
    fp = sub.add_parser(
        "fit",
        help="fit a convex head on your own features (.npz with X, y, or a local Hugging Face model with texts or "
        "images), print the certificate, save the model",
        description=para(
            "Fit a convex head on your own features, from one of two inputs. (1) FEATURES.npz, saved with "
            "np.savez(FEATURES.npz, X=X, y=y[, X_test=..., y_test=...]): X is (N, s, d) token features or (N, d) "
            "features, y is (N,) labels or targets. (2) --hf-model PATH, a local transformers model folder "
            "(save_pretrained; loaded offline, nothing is downloaded) with --texts FILE.csv (columns --text-column "
            "and --label-column) or --images FOLDER (FOLDER/<label>/*.png|jpg): token features of --layer are "
            "extracted and cached, and a stratified --test-size share is held out (--seed). Prints the solver "
            "status, the duality-gap certificate (primal objective, dual lower bound, relative gap), the train and "
            "test/held-out accuracy or R² and the size of the recovered non-convex twin, then saves the fitted "
            "estimator with joblib (joblib.load(path).predict(X)) and a JSON summary next to it."
        ),
        epilog="heads:\n"
        + "\n".join(f"  {h:12s} {s.about} [X: {s.tokens}]" for h, s in HEADS.items())
        + "\n\nexample:\n  attnduality fit --hf-model ./my-bert --texts reviews.csv --label-column y --head attention "
        "--kind gated_relu --pool-dim 32 --max-tokens 16",
        formatter_class=formatter,
    )
    fp.add_argument(
        "features", nargs="?", type=Path, default=None, metavar="FEATURES.npz", help="npz archive with arrays X and y"
    )
    fp.add_argument(
        "--features",
        dest="features_opt",
        type=Path,
        default=None,
        metavar="FEATURES.npz",
        help="the same, as an option",
    )
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
    fp.add_argument(
        "--seed", type=int, default=0, help="random_state of the gate sampling and the held-out split (default 0)"
    )
    fp.add_argument(
        "--pool",
        choices=("mean", "flatten"),
        default="mean",
        help="how mlp/nuclear heads turn (N, s, d) tokens into (N, d) features: mean over tokens (default; real "
        "tokens only with --hf-model) or flatten to s·d features",
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
        help="where to save the model (default FEATURES-HEAD.joblib, or MODELFOLDER-HEAD.joblib with --hf-model, in "
        "the current directory); the summary goes to the same path with .json",
    )
    hf = fp.add_argument_group("a local Hugging Face model (instead of FEATURES.npz)")
    hf.add_argument(
        "--hf-model",
        type=Path,
        default=None,
        metavar="PATH",
        help="folder of a transformers model saved with save_pretrained, with its tokenizer or image "
        "processor (loaded with local_files_only=True)",
    )
    hf.add_argument("--texts", type=Path, default=None, metavar="FILE.csv", help="CSV of texts and labels")
    hf.add_argument("--text-column", default="text", help="the CSV's text column (default text)")
    hf.add_argument("--label-column", default="label", help="the CSV's label column (default label)")
    hf.add_argument(
        "--images",
        type=Path,
        default=None,
        metavar="FOLDER",
        help="images in FOLDER/<label>/*.png|jpg (labels = subfolder names)",
    )
    hf.add_argument(
        "--layer", type=int, default=None, help="hidden state to use: 0 = embeddings, -1 = last layer (default -1)"
    )
    hf.add_argument(
        "--pool-dim", type=int, default=None, metavar="D", help="average-pool the d channels to D (default: keep d)"
    )
    hf.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        metavar="S",
        help="keep the first S tokens of each text (computed with the whole text in context)",
    )
    hf.add_argument("--test-size", type=float, default=None, help="held-out share (default 0.25)")
    hf.add_argument("--batch-size", type=int, default=None, help="inputs per forward pass (default 32)")
    hf.add_argument(
        "--cache",
        type=Path,
        default=None,
        metavar="DIR",
        help="feature cache root (default $ATTNDUALITY_CACHE or ~/.cache/attnduality)",
    )
    hf.add_argument("--no-progress", action="store_true", help="hide the feature-extraction progress")
    return fp
