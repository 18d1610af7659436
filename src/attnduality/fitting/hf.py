"""Fitting a convex head on token features of a local Hugging Face model: :func:`fit_hf`.

The inputs are a CSV of texts and labels (:func:`read_texts_csv`) or a folder of images with one subfolder per
label (:func:`read_image_folder`). The model is loaded offline from a local folder, its token features come from
:mod:`attnduality.hf` (cached), and a stratified held-out share is split off before the fit, which is
:func:`~attnduality.fitting.core.fit_and_summarise`.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np

from .core import FitError, auto_task, check_options, fit_and_summarise, head_estimator, one_line

__all__ = ["IMAGE_SUFFIXES", "fit_hf", "read_image_folder", "read_texts_csv"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def _labels_array(values: list[str]) -> np.ndarray:
    """CSV labels as int64 if all are integers, float64 if all are numbers, else strings."""
    for cast, dtype in ((int, np.int64), (float, np.float64)):
        try:
            return np.array([cast(v) for v in values], dtype)
        except ValueError:
            pass
    return np.array(values)


def read_texts_csv(path: str | Path, text_column: str, label_column: str) -> tuple[list[str], np.ndarray]:
    """Texts and labels of a comma-separated UTF-8 CSV file with a header row (a byte-order mark is skipped)."""
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
        raise FitError(f"cannot read {path} as a UTF-8 CSV file: {one_line(exc)}") from None
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
    """Sorted training and held-out indices, a ``test_size`` share held out (stratified by class to classify)."""
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
        raise FitError(f"cannot split {len(y)} samples with --test-size {test_size}: {one_line(exc)}") from None
    return np.sort(tr), np.sort(te)


def _load_hf(model_path: Path, images: bool) -> tuple[Any, Any]:
    """``(model, tokenizer or image processor)`` from a local folder; nothing is downloaded."""
    from ..data import require_module
    from ..hf.features import SUPPORTED_IMAGE, SUPPORTED_TEXT

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
            f"cannot load a transformers model from {model_path}: {one_line(exc)}; supported: with "
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
            f"cannot load {what} from {model_path} (save it there with save_pretrained): {one_line(exc)}"
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
    ``<label>/*.png|jpg``. Features come from :func:`attnduality.hf.token_features` /
    :func:`attnduality.hf.image_features` (``layer``, ``pool_dim``, ``max_tokens``; cached under ``cache``); a
    held-out share ``test_size`` (stratified for classification) is split off with ``seed``, which also seeds the
    gates. Returns the fitted estimator and the summary of :func:`~attnduality.fitting.npz.fit_features` plus the
    feature and split details.
    """
    from ..hf.features import image_features, token_features

    device = check_options(head, task, pool, device)
    if (texts is None) == (images is None):
        raise FitError("give exactly one of --texts FILE.csv and --images FOLDER with --hf-model")
    if not 0 < test_size < 1:
        raise FitError(f"--test-size must lie strictly between 0 and 1, got {test_size}")
    if texts is not None:
        inputs, y = read_texts_csv(texts, text_column, label_column)
    else:
        inputs, y = read_image_folder(images)  # type: ignore[arg-type]
    task = auto_task(y) if task == "auto" else task
    tr, te = _split(y, task, test_size, seed)
    # head and options are checked before the model is loaded (features are always (N, s, d))
    est = head_estimator(
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
    summary = fit_and_summarise(est, head, task, kind, pool, x[tr], y[tr], x[te], y[te], mask[tr], mask[te])
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
