"""Data preparation of the ``uea`` experiment: subsampling, the stratified holdout split, standardisation.

A UEA set (:func:`attnduality.data.load_uea`, official train/test splits) is optionally subsampled class-stratified
(smoke runs), and a stratified share of the training set is held out for the honest protocol. Inputs are
standardised per channel with the statistics of the data the model is fitted on, over the non-padding time steps
(the official ``PrimalAttention_TimeSeries`` code's ``--normalization standardization``; Chen et al. 2023).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import UEAConfig

__all__ = ["Part", "holdout_split", "load_dataset", "standardiser", "stratified_subset", "subset", "to_tensors"]


def stratified_subset(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of a class-stratified subsample of size ``n`` (every class kept when possible)."""
    if n >= y.size:
        return np.arange(y.size)
    classes, counts = np.unique(y, return_counts=True)
    take = np.maximum(np.floor(counts * n / y.size).astype(int), np.minimum(counts, 1))
    while take.sum() > n:
        take[np.argmax(take)] -= 1
    rest = n - take.sum()
    order = rng.permutation(classes.size)
    for c in order[:rest]:
        take[c] = min(take[c] + 1, counts[c])
    idx = [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, take, strict=True)]
    return np.sort(np.concatenate(idx))


def holdout_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (fit, val) index split of a training set; every class with ≥ 2 samples keeps one in each part."""
    rng = np.random.default_rng(seed)
    fit, val = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(fraction * idx.size))
        k = min(max(k, 1), idx.size - 1) if idx.size >= 2 else 0
        val.append(idx[:k])
        fit.append(idx[k:])
    fit_idx, val_idx = np.sort(np.concatenate(fit)), np.sort(np.concatenate(val))
    if val_idx.size == 0:
        raise ValueError("the validation split is empty; use more training samples or a larger val_fraction")
    return fit_idx, val_idx


@dataclass
class Part:
    """Samples of one split: inputs, padding mask and labels."""

    x: np.ndarray  # (N, T, C) float32
    pad: np.ndarray | None  # (N, T) bool, True = padding
    y: np.ndarray  # (N,) int64


def load_dataset(name: str, cfg: UEAConfig, seed: int) -> dict[str, Any]:
    """The (subsampled) train and test :class:`Part` of a UEA set, its holdout (fit, val) indices and its shape."""
    from ...data import load_uea

    split = load_uea(name)
    rng = np.random.default_rng(seed)
    keep_tr = stratified_subset(split.y_train, cfg.max_train or split.y_train.size, rng)
    keep_te = stratified_subset(split.y_test, cfg.max_test or split.y_test.size, rng)

    def part(x: np.ndarray, m: np.ndarray | None, y: np.ndarray, idx: np.ndarray) -> Part:
        return Part(x[idx], None if m is None else ~m[idx], y[idx])

    train = part(split.X_train, split.mask_train, split.y_train, keep_tr)
    test = part(split.X_test, split.mask_test, split.y_test, keep_te)
    fit_idx, val_idx = holdout_split(train.y, cfg.val_fraction, seed)
    return {
        "train": train,
        "test": test,
        "fit_idx": fit_idx,
        "val_idx": val_idx,
        "n_classes": split.n_classes,
        "length": split.X_train.shape[1],
        "channels": split.X_train.shape[2],
    }


def subset(p: Part, idx: np.ndarray) -> Part:
    """The samples ``idx`` of ``p``."""
    return Part(p.x[idx], None if p.pad is None else p.pad[idx], p.y[idx])


def standardiser(p: Part) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std over the non-padding time steps of ``p`` (std 1 where a channel is constant)."""
    steps = p.x.reshape(-1, p.x.shape[-1]) if p.pad is None else p.x[~p.pad]
    mu = steps.mean(axis=0)
    sd = steps.std(axis=0)
    return mu.astype(np.float32), np.where(sd > 1e-8, sd, 1.0).astype(np.float32)


def to_tensors(p: Part, mu: np.ndarray, sd: np.ndarray) -> tuple[Any, Any, Any]:
    """Standardised inputs (zero at padding), padding mask (None without padding) and labels as torch tensors."""
    import torch

    x = (p.x - mu) / sd
    if p.pad is not None:
        x = np.where(p.pad[:, :, None], 0.0, x).astype(np.float32)
    pad = None if p.pad is None else torch.as_tensor(p.pad)
    return torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32)), pad, torch.as_tensor(p.y)
