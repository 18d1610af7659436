"""Token features on disk: memory-mapped ``.npy`` caches keyed by a configuration hash, and channel pooling."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data import cache_dir, cache_key


@dataclass(frozen=True, eq=False)
class TokenFeatures:
    """Frozen-backbone token features: ``X`` (N, s, d) float32 (read-only memmap when cached), ``mask`` (N, s) bool
    (True on real tokens; padded positions hold zeros), ``y`` (N,) int64 labels or None, ``path`` the cache folder
    (None if not cached), ``meta`` the configuration that produced them."""

    X: np.ndarray
    mask: np.ndarray
    y: np.ndarray | None
    path: Path | None
    meta: dict[str, Any]

    def __post_init__(self) -> None:
        if self.X.ndim != 3 or self.mask.shape != self.X.shape[:2] or self.mask.dtype != np.bool_:
            raise ValueError(f"expected X (N, s, d) and bool mask (N, s), got {self.X.shape} and "
                             f"{self.mask.dtype} {self.mask.shape}")
        if self.y is not None and self.y.shape != (self.X.shape[0],):
            raise ValueError(f"labels must have shape ({self.X.shape[0]},), got {self.y.shape}")


def pool_channels(X: np.ndarray, d_out: int) -> np.ndarray:
    """Average-pool the last axis to ``d_out`` bins exactly as ``torch.nn.AdaptiveAvgPool1d(d_out)``
    (bin i covers [floor(i·d/d_out), ceil((i+1)·d/d_out))). Sahiner et al. §5 pool the backbone's d to 100."""
    d = X.shape[-1]
    if not 1 <= d_out <= d:
        raise ValueError(f"d_out must lie in 1..{d}, got {d_out}")
    i = np.arange(d_out)
    start, end = (i * d) // d_out, -((-(i + 1) * d) // d_out)
    csum = np.concatenate([np.zeros((*X.shape[:-1], 1), np.float64), np.cumsum(X, axis=-1, dtype=np.float64)], -1)
    return ((csum[..., end] - csum[..., start]) / (end - start)).astype(np.float32)


def feature_dir(name: str, config: dict[str, Any], cache: str | os.PathLike[str] | None = None) -> Path:
    """Cache folder ``features/<name>-<hash(config)>`` (not created)."""
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    return cache_dir(cache) / "features" / f"{safe}-{cache_key({'name': name, **config})}"


def load_cached(path: Path) -> TokenFeatures | None:
    """The features stored in ``path`` (memory-mapped, read-only), or None if absent or incomplete."""
    if not (path / "meta.json").is_file():
        return None
    meta = json.loads((path / "meta.json").read_text())
    y = np.load(path / "y.npy") if (path / "y.npy").is_file() else None
    return TokenFeatures(np.load(path / "X.npy", mmap_mode="r"), np.load(path / "mask.npy"), y, path, meta)


def build_cached(path: Path, shape: tuple[int, int, int], meta: dict[str, Any],
                 fill: Callable[[np.ndarray, np.ndarray], None], y: np.ndarray | None = None) -> TokenFeatures:
    """Create features in ``path`` unless present: ``fill(X, mask)`` writes into a fresh (N, s, d) float32 memmap
    and (N, s) bool mask. Written to a temporary folder and renamed, so readers never see a partial cache."""
    done = load_cached(path)
    if done is not None:
        return done
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}-"))
    try:
        X = np.lib.format.open_memmap(tmp / "X.npy", mode="w+", dtype=np.float32, shape=shape)
        mask = np.zeros(shape[:2], np.bool_)
        fill(X, mask)
        X.flush()
        del X
        np.save(tmp / "mask.npy", mask)
        if y is not None:
            np.save(tmp / "y.npy", np.asarray(y, np.int64))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
        try:
            os.rename(tmp, path)
        except OSError:  # another process finished first; keep its copy
            if load_cached(path) is None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out = load_cached(path)
    assert out is not None
    return out
