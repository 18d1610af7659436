"""``attnduality fit``: a certified convex head on your own features.

Two inputs share one fit: an ``.npz`` archive of arrays (:func:`fit_features`), or a local Hugging Face model and
a CSV of texts or a folder of images (:func:`fit_hf`), whose token features come from :mod:`attnduality.hf`
(cached) and are split into a stratified training and held-out set.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["HEADS", "FitError", "add_fit_parser", "cmd_fit", "fit_features", "fit_hf"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class FitError(ValueError):
    """Bad input to ``attnduality fit`` (the message says what is wrong)."""


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
    kind_param = clf.kind_param
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


def _one_line(exc: BaseException, limit: int = 300) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ----------------------------------------------------------------------------------------------------------------
# the shared fit
# ----------------------------------------------------------------------------------------------------------------
def _pool(x: np.ndarray, pool: str, mask: np.ndarray | None = None) -> np.ndarray:
    """(N, d) features of (N, s, d) tokens: their mean (over real tokens when ``mask`` is given) or all of them."""
    if x.ndim == 2:
        return x
    if pool == "flatten":
        return x.reshape(len(x), -1)
    if mask is None:
        return x.mean(axis=1)
    m = mask[..., None].astype(x.dtype)
    return (x * m).sum(1) / np.maximum(m.sum(1), 1)


def _auto_task(y: np.ndarray) -> str:
    if y.ndim == 1 and (y.dtype.kind in "biuUS"):
        return "classify"
    return "regress"


def _check_common(head: str, task: str, pool: str, device: str) -> str:
    """Options checked before any data is read; returns the checked device."""
    if head not in HEADS:
        raise FitError(f"unknown head {head!r}; choose from {', '.join(HEADS)}")
    if task not in ("auto", "classify", "regress"):
        raise FitError(f"task must be auto, classify or regress, got {task!r}")
    if pool not in ("mean", "flatten"):
        raise FitError(f"pool must be mean or flatten, got {pool!r}")
    from .experiments.runner import check_device

    try:
        return check_device(device)
    except ValueError as exc:
        raise FitError(str(exc)) from None


def _estimator(
    head: str,
    x_shape: tuple[int, ...],
    task: str,
    *,
    kind: str | None,
    beta: float,
    tol: float,
    n_gates: int | None,
    blocks: int | None,
    loss: str | None,
    max_iter: int,
    seed: int,
    device: str,
    dtype: str,
) -> Any:
    """The unfitted estimator of ``head`` for features of ``x_shape``, or a FitError naming the bad option."""
    from . import convex

    spec = HEADS[head]
    if spec.tokens == "3d" and len(x_shape) != 3:
        raise FitError(f"--head {head} needs token features X of shape (N, s, d); got {x_shape}")
    if kind is not None and kind not in spec.kinds:
        allowed = ", ".join(spec.kinds) if spec.kinds else "none (do not pass --kind)"
        raise FitError(f"--kind {kind} is not available for --head {head}; choose from: {allowed}")
    if blocks is not None and head != "fno":
        raise FitError("--blocks applies only to --head fno")
    if kind == "sequence" and task != "regress":
        raise FitError("--kind sequence (sequence outputs) is regression only: use --task regress")
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
        return cls(**params)
    except TypeError as exc:
        raise FitError(f"{cls.__name__} does not take these options: {exc}") from None


def _twin(est: Any) -> dict[str, Any]:
    """Class and parameter count of ``est.to_module()``, the recovered non-convex network."""
    try:
        module = est.to_module()
    except (ValueError, NotImplementedError, AttributeError) as exc:
        return {"error": _one_line(exc)}
    return {"class": type(module).__name__, "parameters": int(sum(p.numel() for p in module.parameters()))}


def _fit(
    est: Any,
    head: str,
    task: str,
    kind: str | None,
    pool: str,
    x: np.ndarray,
    y: np.ndarray,
    x_test: np.ndarray | None,
    y_test: np.ndarray | None,
    mask: np.ndarray | None = None,
    mask_test: np.ndarray | None = None,
) -> dict[str, Any]:
    """Fit ``est`` and return the JSON-able summary (status, certificate, scores, recovered twin)."""
    spec = HEADS[head]
    xf = _pool(x, pool, mask) if spec.tokens == "2d" else x
    est.fit(xf, y)
    cert = est.certificate_
    summary: dict[str, Any] = {
        "head": head,
        "estimator": type(est).__name__,
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
        "score": "accuracy" if task == "classify" else "R2",
        "train_score": float(est.score(xf, y)),
    }
    if x_test is not None and y_test is not None:
        xt = _pool(x_test, pool, mask_test) if spec.tokens == "2d" else x_test
        summary["test_score"] = float(est.score(xt, y_test))
    summary["twin"] = _twin(est)
    return summary


# ----------------------------------------------------------------------------------------------------------------
# input 1: arrays in an .npz archive
# ----------------------------------------------------------------------------------------------------------------
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

    Returns the fitted estimator and a JSON-able summary (status, certificate, scores, the recovered twin's size).
    Bad input raises :class:`FitError` (a ``ValueError``) with a message naming what is wrong.
    """
    device = _check_common(head, task, pool, device)
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
    est = _estimator(
        head,
        x.shape,
        task,
        kind=kind,
        beta=beta,
        tol=tol,
        n_gates=n_gates,
        blocks=blocks,
        loss=loss,
        max_iter=max_iter,
        seed=seed,
        device=device,
        dtype=dtype,
    )
    xt, yt = (arrays["X_test"], arrays["y_test"]) if has_test else (None, None)
    if xt is not None and xt.shape[1:] != x.shape[1:]:
        raise FitError(f"X_test must have shape (M, {', '.join(map(str, x.shape[1:]))}), got {xt.shape}")
    summary = _fit(est, head, task, kind, pool, x, y, xt, yt)
    return est, {"features": str(path), **summary}


# ----------------------------------------------------------------------------------------------------------------
# input 2: a local Hugging Face model with texts or images
# ----------------------------------------------------------------------------------------------------------------
def _labels_array(values: list[str]) -> np.ndarray:
    """CSV labels as int64 if all are integers, float64 if all are numbers, else strings."""
    for cast, dtype in ((int, np.int64), (float, np.float64)):
        try:
            return np.array([cast(v) for v in values], dtype)
        except ValueError:
            pass
    return np.array(values)


def read_texts_csv(path: str | Path, text_column: str, label_column: str) -> tuple[list[str], np.ndarray]:
    """Texts and labels of a CSV file with a header row (UTF-8, any dialect ``csv.Sniffer`` recognises)."""
    path = Path(path)
    if not path.is_file():
        raise FitError(
            f"--texts {path} is not a file (a CSV with a header row and columns {text_column!r}, {label_column!r})"
        )
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
            columns = list(rows[0].keys()) if rows else []
    except (UnicodeDecodeError, csv.Error) as exc:
        raise FitError(f"cannot read {path} as a UTF-8 CSV file: {_one_line(exc)}") from None
    if not rows:
        raise FitError(f"{path} has no data rows (a header row, then one row per text)")
    for col, opt in ((text_column, "--text-column"), (label_column, "--label-column")):
        if col not in columns:
            raise FitError(f"{path} has no column {col!r} ({opt}); its columns: {', '.join(map(str, columns))}")
    texts, labels = [], []
    for i, row in enumerate(rows):
        text, label = row[text_column], row[label_column]
        if text is None or label is None or not label.strip():
            raise FitError(f"{path}: data row {i + 1} has no {'text' if text is None else 'label'}")
        texts.append(text)
        labels.append(label.strip())
    return texts, _labels_array(labels)


def read_image_folder(folder: str | Path) -> tuple[list[Path], np.ndarray]:
    """Image paths and labels of ``FOLDER/<label>/*.png|jpg|jpeg`` (labels = subfolder names, sorted)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FitError(f"--images {folder} is not a folder (expected FOLDER/<label>/*.png|jpg)")
    paths, labels = [], []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(p for p in sub.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [sub.name] * len(files)
    if not paths:
        raise FitError(f"--images {folder} has no images: expected FOLDER/<label>/*.png|jpg (one subfolder per label)")
    return paths, _labels_array(labels)


def _split(y: np.ndarray, task: str, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    stratify = y if task == "classify" else None
    if task == "classify":
        classes, counts = np.unique(y, return_counts=True)
        if len(classes) < 2:
            raise FitError(f"the labels have a single class ({classes[0]!r}); a classifier needs at least two")
        if counts.min() < 2:
            raise FitError(
                f"class {classes[np.argmin(counts)]!r} has only {counts.min()} sample; a stratified "
                "held-out split needs at least 2 per class"
            )
    try:
        tr, te = train_test_split(idx, test_size=test_size, random_state=seed, stratify=stratify)
    except ValueError as exc:
        raise FitError(f"cannot split {len(y)} samples with --test-size {test_size}: {_one_line(exc)}") from None
    return np.sort(tr), np.sort(te)


def _load_hf(model_path: Path, images: bool) -> tuple[Any, Any]:
    """``(model, tokenizer or image processor)`` from a local folder; nothing is downloaded."""
    from .data import require_module
    from .hf.features import SUPPORTED_IMAGE, SUPPORTED_TEXT

    os.environ["HF_HUB_OFFLINE"] = "1"  # never reach the hub, even by accident
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    tf = require_module("transformers", "attnduality fit --hf-model")
    tf.logging.set_verbosity_error()
    tf.logging.disable_progress_bar()
    if not model_path.is_dir():
        raise FitError(
            f"--hf-model {model_path} is not a folder: give a model saved locally with "
            "save_pretrained (config.json and weights); nothing is downloaded"
        )
    try:
        model = tf.AutoModel.from_pretrained(str(model_path), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise FitError(
            f"cannot load a transformers model from {model_path}: {_one_line(exc)}; supported: with "
            f"--texts, {SUPPORTED_TEXT}; with --images, {SUPPORTED_IMAGE}"
        ) from None
    takes = getattr(model, "main_input_name", None)
    if images and takes == "input_ids":
        raise FitError(
            f"--hf-model {model_path} is a text model ({type(model).__name__} takes input_ids): use --texts FILE.csv"
        )
    if not images and takes == "pixel_values":
        raise FitError(
            f"--hf-model {model_path} is a vision model ({type(model).__name__} takes pixel_values): use "
            "--images FOLDER"
        )
    what, auto = ("an image processor", tf.AutoImageProcessor) if images else ("a tokenizer", tf.AutoTokenizer)
    try:
        prep = auto.from_pretrained(str(model_path), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise FitError(
            f"cannot load {what} from {model_path} (save it there with save_pretrained): {_one_line(exc)}"
        ) from None
    return model, prep


def fit_hf(
    model_path: str | Path,
    head: str,
    *,
    texts: str | Path | None = None,
    images: str | Path | None = None,
    text_column: str = "text",
    label_column: str = "label",
    layer: int = -1,
    pool_dim: int | None = None,
    max_tokens: int | None = None,
    test_size: float = 0.25,
    batch_size: int = 32,
    cache: str | Path | None = None,
    progress: bool | None = None,
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
    """Fit a convex head on token features of a local transformers model (``model_path``, loaded offline).

    Exactly one input: ``texts``, a CSV with columns ``text_column`` and ``label_column``, or ``images``, a folder
    ``<label>/*.png|jpg``. Features come from :func:`attnduality.hf.token_features` / :func:`~attnduality.hf.
    image_features` (``layer``, ``pool_dim``, ``max_tokens``; cached under ``cache``); a held-out share
    ``test_size`` (stratified for classification) is split off with ``seed``, which also seeds the gates. Returns
    the fitted estimator and the summary of :func:`fit_features` plus the feature and split details.
    """
    from .hf.features import image_features, token_features

    device = _check_common(head, task, pool, device)
    if (texts is None) == (images is None):
        raise FitError("give exactly one of --texts FILE.csv and --images FOLDER with --hf-model")
    if not 0 < test_size < 1:
        raise FitError(f"--test-size must lie strictly between 0 and 1, got {test_size}")
    if texts is not None:
        inputs, y = read_texts_csv(texts, text_column, label_column)
    else:
        inputs, y = read_image_folder(images)  # type: ignore[arg-type]
    task = _auto_task(y) if task == "auto" else task
    tr, te = _split(y, task, test_size, seed)
    # head and options are checked before the model is loaded (features are always (N, s, d))
    est = _estimator(
        head,
        (len(y), 1, 1),
        task,
        kind=kind,
        beta=beta,
        tol=tol,
        n_gates=n_gates,
        blocks=blocks,
        loss=loss,
        max_iter=max_iter,
        seed=seed,
        device=device,
        dtype=dtype,
    )
    model_path = Path(model_path)
    model, prep = _load_hf(model_path, images is not None)
    import time

    t0 = time.perf_counter()
    common = {
        "layer": layer,
        "pool_dim": pool_dim,
        "batch_size": batch_size,
        "cache": cache,
        "progress": progress,
        "name": f"hf-{getattr(model.config, 'model_type', 'model')}-{model_path.resolve().name}",
    }
    if texts is not None:
        feats = token_features(model, prep, inputs, max_tokens=max_tokens, **common)
    else:
        feats = image_features(model, prep, inputs, **common)
    seconds = time.perf_counter() - t0
    x, mask = np.asarray(feats.X), np.asarray(feats.mask)
    summary = _fit(est, head, task, kind, pool, x[tr], y[tr], x[te], y[te], mask[tr], mask[te])
    summary["X_shape"] = list(x.shape)
    source = {
        "hf_model": str(model_path),
        "model_class": type(model).__name__,
        "input": {"texts": str(texts), "text_column": text_column} if texts is not None else {"images": str(images)},
        "label_column": label_column if texts is not None else "<subfolder>",
        "layer": layer,
        "pool_dim": pool_dim,
        "max_tokens": max_tokens,
        "weights_sha256": feats.meta.get("weights"),
        "feature_cache": None if feats.path is None else str(feats.path),
        "feature_seconds": seconds,
    }
    split = {
        "n_train": len(tr),
        "n_test": len(te),
        "test_size": test_size,
        "seed": seed,
        "stratified": task == "classify",
    }
    if task == "classify":
        split["classes"] = [str(c) for c in np.unique(y)]
    return est, {"features": source["feature_cache"], "hf": source, "split": split, **summary}


# ----------------------------------------------------------------------------------------------------------------
# the command
# ----------------------------------------------------------------------------------------------------------------
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
