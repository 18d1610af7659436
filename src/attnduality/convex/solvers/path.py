"""Regularisation paths with warm starts, and the smallest β for which ``Z = 0`` is optimal."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..problem import CompositeProblem
from .fista import FISTA, SolveResult
from .newton import SemismoothNewton
from .progress import SolveProgress

if TYPE_CHECKING:
    from .select import AutoSolver

__all__ = ["beta_max", "solve_path"]


def beta_max(problem: CompositeProblem) -> float:
    """``R°(A* ∇f(0))``: for every ``β ≥ beta_max`` the solution is ``Z = 0``."""
    z = problem.operator.zeros()
    g = problem.loss.grad(problem.operator.forward(z))
    return float(problem.penalty.dual_norm(problem.operator.adjoint(g)))


def solve_path(
    problem: CompositeProblem,
    betas: Sequence[float],
    solver: FISTA | SemismoothNewton | AutoSolver | None = None,
    *,
    verbose: bool = False,
    label: str = "path",
) -> list[SolveResult]:
    """Solve for every β in ``betas``, from the largest to the smallest, each warm-started from the previous
    solution. Results are returned in the order of ``betas``. ``verbose``: print each solve's certified gap as it
    goes (:class:`~attnduality.convex.solvers.progress.SolveProgress`, labelled ``label β=…``)."""
    if len(betas) == 0:
        raise ValueError("betas is empty")
    if any(not (b >= 0) for b in betas):
        raise ValueError("every beta must be >= 0")
    solver = solver or FISTA()
    order = sorted(range(len(betas)), key=lambda i: -betas[i])
    results: dict[int, SolveResult] = {}
    z = None
    for i in order:
        callback = SolveProgress(solver.tol, label=f"{label} β={betas[i]:.3g}") if verbose else None
        res = solver.run(problem.with_beta(betas[i]), z0=z, callback=callback)
        results[i] = res
        z = res.z
    return [results[i] for i in range(len(betas))]
