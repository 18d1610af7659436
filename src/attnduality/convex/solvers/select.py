"""Choosing a solver by name (the estimators' ``solver=`` parameter) and a thread count by problem size.

``"auto"`` picks :class:`~attnduality.convex.solvers.newton.SemismoothNewton` wherever it applies (the penalty has a
prox Jacobian: every penalty but the cone-constrained group norm of the convex ReLU network) and FISTA otherwise.
The rule is measured (BENCHMARKS.md §7): the Newton solver was faster than FISTA on every estimator problem we
timed, by the most at small β, where heads fit data; at β ≥ 0.1·β_max the two are within a few per cent."""

from __future__ import annotations

from ..problem import CompositeProblem
from .fista import FISTA
from .newton import SemismoothNewton

__all__ = ["SOLVERS", "check_solver", "make_solver"]

SOLVERS = ("auto", "fista", "newton")


def check_solver(name: object) -> str:
    """``name`` if it is one of :data:`SOLVERS`, else a ``ValueError`` naming the choices."""
    if not isinstance(name, str) or name not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {name!r}")
    return name


def make_solver(
    name: str, problem: CompositeProblem, tol: float, max_iter: int, max_time: float | None
) -> FISTA | SemismoothNewton:
    """The solver ``name`` (``"auto"``, ``"fista"`` or ``"newton"``) for ``problem``.

    ``max_iter`` counts FISTA iterations or proximal Newton steps. Asking for ``"newton"`` where it does not apply
    raises ``ValueError``.
    """
    check_solver(name)
    if name == "auto":
        name = "newton" if SemismoothNewton.supports(problem) else "fista"
    if name == "newton":
        if not SemismoothNewton.supports(problem):
            raise ValueError(
                f"solver='newton' needs a penalty with a prox Jacobian; {type(problem.penalty).__name__} has none "
                "(use solver='fista' or 'auto')"
            )
        return SemismoothNewton(tol=tol, max_iter=max_iter, max_time=max_time)
    return FISTA(tol=tol, max_iter=max_iter, max_time=max_time)
