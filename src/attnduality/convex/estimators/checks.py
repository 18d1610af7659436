"""``check_formulation``: the properties every convex head must have, checked on data (like sklearn's
``check_estimator`` for estimators). The test suite runs it on every registered formulation; run it on a new one."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch

from ..formulations import Formulation, get_formulation
from ..losses import CrossEntropyLoss
from ..recovery import regularized_objective

__all__ = ["check_formulation"]


def _fail(form: Formulation, what: str) -> AssertionError:
    return AssertionError(f"{form.name}: {what}")


def check_formulation(
    formulation: Formulation | str, X: Any, y: Any, *, n_gates: int = 3, seed: int = 0, rtol: float = 1e-7
) -> None:
    """Check a formulation on classification data ``(X, y)`` (``X`` (N, s, d) tokens or (N, d) rows):

    1. adjoint: ``<A z, r> = <z, A* r>`` for random ``z``, ``r``;
    2. β_max: the certified solution is zero at ``1.01·β_max`` and not at ``0.5·β_max``;
    3. twin: at ``0.05·β_max`` the recovered non-convex twin gives the convex outputs, and its regularised
       objective ``loss + β · weight_decay()`` equals the certified optimum;
    4. lift (where it exists): ``R(lift(W1, W2)) ≤ ½(‖W1‖² + ‖W2‖²)`` for random twin weights of
       :meth:`~Formulation.twin_shapes`.

    Raises ``AssertionError`` naming the property that fails. Fits use :func:`make_estimator` (the family's
    estimator, or :class:`FormulationClassifier`)."""
    from . import make_estimator

    form = get_formulation(formulation) if isinstance(formulation, str) else formulation
    if not isinstance(form, Formulation):
        raise ValueError(f"formulation must be a registry name or a Formulation, got {formulation!r}")
    x = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    ndim = 3 if form.tokens else 2
    if x.ndim != ndim or x.size == 0:
        shape = "(N, s, d) tokens" if form.tokens else "(N, d) rows"
        raise ValueError(f"X must be non-empty {shape} for {form.name}, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("X contains NaN or inf")
    if y.shape != (len(x),):
        raise ValueError(f"y must have shape ({len(x)},), got {y.shape}")
    c = len(np.unique(y))
    if c < 2:
        raise ValueError("y must hold at least 2 classes")
    xt = torch.as_tensor(x)
    s, d = (int(x.shape[1]), int(x.shape[2])) if form.tokens else (1, int(x.shape[1]))
    gates = form.sample_gates(s, d, n_gates, seed) if form.gated else None

    op = form.operator(xt, gates, c)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(op.zeros().shape, generator=gen, dtype=torch.float64)
    r = torch.randn(len(x), c, generator=gen, dtype=torch.float64)
    lhs, rhs = float((op.forward(z) * r).sum()), float((z * op.adjoint(r)).sum())
    if abs(lhs - rhs) > 1e-10 * max(1.0, abs(lhs)):
        raise _fail(form, f"adjoint mismatch: <A z, r> = {lhs:.12g} but <z, A* r> = {rhs:.12g}")

    params: dict[str, Any] = {"n_gates": n_gates, "random_state": seed} if form.gated else {}
    bmax = make_estimator(form, beta=1.0, **params).beta_max(x, y)

    def fit(frac: float) -> Any:
        est = make_estimator(form, beta=frac * bmax, tol=rtol * 1e-2, max_iter=50_000, **params)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a fit that does not converge fails the check
            return est.fit(x, y)

    if np.any(fit(1.01).coef_):
        raise _fail(form, "the solution is not zero above β_max")
    if not np.abs(fit(0.5).coef_).max() > 0:
        raise _fail(form, "the solution is zero below β_max")

    est = fit(0.05)
    twin = est.to_module()
    with torch.no_grad():
        out, ours = twin(xt), est._raw_predict(xt)
        obj = float(
            regularized_objective(
                twin, CrossEntropyLoss(torch.as_tensor(np.searchsorted(est.classes_, y))), xt, est.beta
            )
        )
    if not torch.allclose(out, ours, rtol=1e-6, atol=1e-8):
        raise _fail(form, f"the twin's outputs differ from the convex model's by {float((out - ours).abs().max()):.3g}")
    target = getattr(est, "relu_objective_", est.objective_)
    if abs(obj - target) > rtol * abs(target):
        raise _fail(form, f"the twin's objective {obj:.12g} differs from the convex one {target:.12g}")

    if form.liftable:
        w1_shape, w2_shape = form.twin_shapes(tuple(est.coef_.shape), 2, s, d, c)
        w1 = torch.randn(w1_shape, generator=gen, dtype=torch.float64)
        w2 = torch.randn(w2_shape, generator=gen, dtype=torch.float64)
        lifted = form.lift(w1, w2)
        if tuple(lifted.shape) != tuple(est.coef_.shape):
            raise _fail(form, f"lift gives shape {tuple(lifted.shape)}, the solution has {tuple(est.coef_.shape)}")
        g = None if getattr(est, "gates_", None) is None else torch.as_tensor(est.gates_)
        pen = float(form.penalty(xt, g).value(lifted))
        bound = 0.5 * float(w1.square().sum() + w2.square().sum())
        if pen > bound * (1 + 1e-12):
            raise _fail(form, f"R(lift(W1, W2)) = {pen:.6g} exceeds ½(‖W1‖² + ‖W2‖²) = {bound:.6g}")
