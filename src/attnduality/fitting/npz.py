"""Fitting a convex head on the arrays of an ``.npz`` archive: :func:`fit_features`.

The archive holds ``X`` ((N, s, d) token features or (N, d) features) and ``y`` (N,), and optionally a test set
``X_test``, ``y_test``; the fit itself is :func:`~attnduality.fitting.core.fit_and_summarise`.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from .core import FitError, auto_task, check_options, fit_and_summarise, head_estimator

__all__ = ["fit_features"]


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` archive at ``path``, or a FitError saying why it cannot be read."""
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
    device = check_options(head, task, pool, device)
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
    task = auto_task(y) if task == "auto" else task
    est = head_estimator(
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
    summary = fit_and_summarise(est, head, task, kind, pool, x, y, xt, yt)
    return est, {"features": str(path), **summary}
