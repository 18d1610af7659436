"""The heads that ``attnduality fit`` can fit and the fit they share.

:data:`HEADS` maps each head name to its classifier and regressor, the variants (``kind``) it takes and the token
shape it needs. :func:`check_options` checks the options every input shares, :func:`head_estimator` builds the
unfitted estimator of a head, and :func:`fit_and_summarise` fits it and returns the JSON-able summary (status,
duality-gap certificate, scores, the recovered twin's size). Bad input raises :class:`FitError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "HEADS",
    "FitError",
    "Head",
    "auto_task",
    "check_options",
    "fit_and_summarise",
    "head_estimator",
    "one_line",
]


class FitError(ValueError):
    """Bad input to ``attnduality fit`` (the message says what is wrong)."""


@dataclass(frozen=True)
class Head:
    """One fittable head: its estimator classes (names in :mod:`attnduality.convex`), the variants it takes, the
    estimator parameter that selects one (``None`` when it has none), the features it needs (``"3d"``: (N, s, d)
    tokens; ``"2d"``: (N, d) features, tokens are pooled; ``"any"``) and a one-line description."""

    classifier: str
    regressor: str
    kinds: tuple[str, ...]
    kind_param: str | None
    tokens: str  # "3d" (needs (N, s, d)), "2d" (needs (N, d), pools tokens), "any"
    about: str


def _formulation_head(family: str, note: str = "") -> Head:
    """A head of the formulation registry, described by its formulation and estimators."""
    from ..convex.estimators import estimator_classes
    from ..convex.formulations import formulation_families

    form = formulation_families()[family]
    clf, reg = estimator_classes(family)
    kind_param = clf.kind_param
    return Head(
        clf.__name__,
        reg.__name__,
        form.kinds if kind_param else (),
        kind_param,
        "3d" if form.tokens else "2d",
        form.summary + note,
    )


HEADS: dict[str, Head] = {
    "mlp": _formulation_head("mlp"),
    "attention": _formulation_head("attention"),
    "mixer": _formulation_head("mixer"),
    "fno": _formulation_head("fno", "; --blocks B for block-diagonal B-FNO"),
    "token_lasso": Head(
        "TokenLassoClassifier",
        "TokenLassoRegressor",
        ("attention", "gated_fc", "sequence"),
        "kind",
        "any",
        "attention-only network as a group lasso over tokens (Ergen et al. 2022)",
    ),
    "nuclear": _formulation_head("linear"),
}


def one_line(exc: BaseException, limit: int = 300) -> str:
    """The message of ``exc`` on one line, cut to ``limit`` characters."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


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


def auto_task(y: np.ndarray) -> str:
    """``"classify"`` for (N,) integer or string labels, else ``"regress"``."""
    if y.ndim == 1 and (y.dtype.kind in "biuUS"):
        return "classify"
    return "regress"


def check_options(head: str, task: str, pool: str, device: str) -> str:
    """Options checked before any data is read; returns the checked device."""
    if head not in HEADS:
        raise FitError(f"unknown head {head!r}; choose from {', '.join(HEADS)}")
    if task not in ("auto", "classify", "regress"):
        raise FitError(f"task must be auto, classify or regress, got {task!r}")
    if pool not in ("mean", "flatten"):
        raise FitError(f"pool must be mean or flatten, got {pool!r}")
    from ..experiments.runner import check_device

    try:
        return check_device(device)
    except ValueError as exc:
        raise FitError(str(exc)) from None


def head_estimator(
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
    from .. import convex

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
        return {"error": one_line(exc)}
    return {"class": type(module).__name__, "parameters": int(sum(p.numel() for p in module.parameters()))}


def fit_and_summarise(
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
