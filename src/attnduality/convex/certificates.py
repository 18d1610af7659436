"""Optimality certificates shared by all solvers.

For ``P(Z) = f(A Z) + β R(Z)`` with ``R`` positively homogeneous, Fenchel duality gives
``D(Θ) = −f*(Θ)`` subject to ``R°(−A*Θ) ≤ β`` (``R°`` the support function of the unit ball of ``R``).
At any ``Z``, ``Θ = s ∇f(A Z)`` with ``s = min(1, β / R°(−A* ∇f(A Z)))`` is dual feasible,
so ``P(Z) − P* ≤ P(Z) − D(Θ) = gap``. The relative gap ``gap / P(Z)`` is the stopping rule of every solver.
``R°(−A*∇f)`` is also reported: over β it is the spectral-norm certificate of Sahiner et al.'s
Burer–Monteiro follow-up, ``(P̂−P*)/P* ≤ (R°/β − 1)_+`` at stationary points of the factored problem.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from .problem import CompositeProblem

__all__ = ["Certificate", "duality_gap"]


@dataclass(frozen=True)
class Certificate:
    """A primal value, a dual lower bound on the optimum and the gap between them."""

    primal: float
    dual: float
    gap: float
    rel_gap: float
    grad_dual_norm: float
    """``R°(A*∇f(AZ))``; equals ``β`` at an optimum where ``Z ≠ 0``, is ``≤ β`` when ``Z = 0`` is optimal."""

    @property
    def lower_bound(self) -> float:
        return self.dual


def _feasible_scale(r: float, beta: float) -> float:
    """The factor that brings a dual point with ``R°(−A*Θ) = r`` into ``R°(−A*Θ) ≤ β``."""
    if r <= beta:
        return 1.0
    return beta / r if beta > 0 else 0.0


def duality_gap(
    problem: CompositeProblem,
    z: torch.Tensor,
    u: torch.Tensor,
    dual_point: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Certificate:
    """The certificate at ``Z`` with predictions ``u = A(Z)``; losses are evaluated in float64.

    ``dual_point = (Θ, A*Θ)``, when a solver has a better dual estimate than ``∇f(AZ)`` (the semismooth Newton
    solver's multiplier), is scaled into ``R°(−A*Θ) ≤ β`` the same way and the larger of the two dual values is
    kept; a point outside ``dom f*`` is ignored.
    """
    g = problem.loss.grad(u)
    r = float(problem.penalty.dual_norm(-problem.operator.adjoint(g)))
    u64 = u.double()
    g = problem.loss.grad(u64)
    primal = float(problem.loss.value(u64)) + problem.beta * float(problem.penalty.value(z))
    theta = problem.loss.dual_feasible(g, _feasible_scale(r, problem.beta))
    dual = -float(problem.loss.conjugate(theta))
    if dual_point is not None:
        th, adj_th = dual_point
        scale = _feasible_scale(float(problem.penalty.dual_norm(-adj_th)), problem.beta)
        other = -float(problem.loss.conjugate(scale * th.double()))
        if math.isfinite(other) and other > dual:
            dual = other
    if not math.isfinite(primal):
        return Certificate(primal, dual, math.inf, math.inf, r)
    gap = max(primal - dual, 0.0)
    rel = gap / max(abs(primal), torch.finfo(z.dtype).tiny)
    return Certificate(primal, dual, gap, rel, r)
