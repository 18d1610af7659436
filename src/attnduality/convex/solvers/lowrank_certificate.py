"""The duality-gap certificate of a factored iterate ``Z_j = U_j V_jᵀ`` of a nuclear-norm problem, without SVDs.

For ``min_Z f(A(Z)) + β Σ_j ‖Z_j‖_*`` the certificate is the one of
:func:`~attnduality.convex.certificates.duality_gap` (the certificate of
:class:`~attnduality.convex.solvers.fista.FISTA`), with the same formula — dual point
``Θ = min(1, β/r)·∇f(A Z)``, losses in float64 — but with its two SVD-based pieces replaced:

* the dual norm ``r = max_j ‖A*∇f_j‖_2`` is supplied by the caller, from a block Krylov iteration
  (:func:`~attnduality.convex.linalg.top_singular_pairs`, e.g. warm-started from the columns of ``V``) instead of a
  full SVD of each block of ``A*∇f``;
* ``‖Z_j‖_*`` in the primal value comes from the r×r core of ``U_j V_jᵀ``
  (:func:`~attnduality.convex.linalg.factor_svd`: QR of ``U_j`` and ``V_j``, SVD of ``R_U R_Vᵀ``).

Both are exact up to the Krylov tolerance, so the relative gap is the same quantity as FISTA's. At a stationary point
of the Burer–Monteiro problem it reduces to the bound of Sahiner et al.'s Burer–Monteiro follow-up (ICLR 2024),
``(p̂ − p*)/p* ≤ (‖∇_Z F‖_2/β − 1)_+``: the gap vanishes iff ``‖A*∇f‖_2 ≤ β``. Caveat: Krylov (Ritz) values approach
``‖A*∇f‖_2`` from below, so an unconverged estimate makes the dual point slightly infeasible and the gap slightly
optimistic; the callers' Krylov tolerances keep this far below their gap tolerances.

Used by :class:`~attnduality.convex.solvers.factored.FactoredSolver` (``Z = U Vᵀ``) and
:class:`~attnduality.convex.solvers.subspace.SubspaceSolver` (``Z = Q Bᵀ``).
"""

from __future__ import annotations

import math

import torch

from ..certificates import Certificate
from ..linalg import factor_svd
from ..problem import CompositeProblem

__all__ = ["factored_certificate", "factored_nuclear_norm"]


def factored_nuclear_norm(left: torch.Tensor, right: torch.Tensor) -> float:
    """``Σ_j ‖U_j V_jᵀ‖_*`` for factors ``U`` (B, p, r) and ``V`` (B, q, r), in float64, from the r×r core
    (:func:`~attnduality.convex.linalg.factor_svd`); 0 for factors of width 0."""
    if left.shape[-1] == 0:
        return 0.0
    return float(factor_svd(left.double(), right.double())[1].sum())


def factored_certificate(
    problem: CompositeProblem, left: torch.Tensor, right: torch.Tensor, pred: torch.Tensor, r: float
) -> Certificate:
    """The duality-gap certificate of :func:`~attnduality.convex.certificates.duality_gap` at ``Z = UVᵀ``.

    Same formula (dual point ``Θ = min(1, β/r)·∇f(A Z)``, losses in float64), with the dual norm ``r`` (e.g. from
    :func:`~attnduality.convex.linalg.spectral_norm_power`) and ``‖Z‖_*`` from the factors' r×r core
    (:func:`factored_nuclear_norm`) instead of SVDs of ``Z`` and ``A*∇f``. ``pred`` is ``A(Z)`` (N, c)."""
    loss, beta = problem.loss, problem.beta
    u64 = pred.double()
    g = loss.grad(u64)
    primal = float(loss.value(u64)) + beta * factored_nuclear_norm(left, right)
    if r <= beta:
        scale = 1.0
    elif beta > 0:
        scale = beta / r
    else:
        scale = 0.0
    dual = -float(loss.conjugate(loss.dual_feasible(g, scale)))
    if not math.isfinite(primal):
        return Certificate(primal, dual, math.inf, math.inf, r)
    gap = max(primal - dual, 0.0)
    rel = gap / max(abs(primal), torch.finfo(pred.dtype).tiny)
    return Certificate(primal, dual, gap, rel, r)
