"""Choosing a solver by name: the estimators' ``solver=`` parameter.

``"auto"`` is :class:`AutoSolver`: FISTA for its first ``switch_iter`` iterations, then, if the problem is not yet
certified and the penalty has a prox Jacobian, :class:`~attnduality.convex.solvers.newton.SemismoothNewton` warm-started
from FISTA's best point. The rule is measured (BENCHMARKS.md §7). Where FISTA certifies within a few hundred iterations
(large β, small token heads) it is about as fast as Newton, because one Newton step already costs hundreds of operator
products. Where it needs thousands (small β) Newton is several times faster. ``switch_iter = 300`` bounds what
``"auto"`` loses against the better of the two at about 300 FISTA iterations. The cone-constrained ReLU program has no
prox Jacobian and stays with FISTA.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from ..problem import CompositeProblem
from .fista import FISTA, SolveResult
from .newton import SemismoothNewton
from .threads import solver_threads

__all__ = ["SOLVERS", "AutoSolver", "check_solver", "make_solver"]

SOLVERS = ("auto", "fista", "newton")


def check_solver(name: object) -> str:
    """``name`` if it is one of :data:`SOLVERS`, else a ``ValueError`` naming the choices."""
    if not isinstance(name, str) or name not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {name!r}")
    return name


class AutoSolver:
    """FISTA, then semismooth Newton from FISTA's best point once ``switch_iter`` iterations have not certified the
    problem (see the module docstring). ``max_iter`` bounds FISTA iterations plus Newton steps; the result's
    ``n_iter`` and history count both, Newton steps after FISTA's iterations. A FISTA phase that ends
    ``stalled`` (no progress at the dtype's precision) is returned as it is: Newton steps cannot beat rounding."""

    def __init__(
        self, tol: float = 1e-6, max_iter: int = 10_000, max_time: float | None = None, switch_iter: int = 300
    ) -> None:
        if not tol >= 0 or max_iter < 1 or switch_iter < 1:
            raise ValueError(
                f"tol must be >= 0, max_iter and switch_iter >= 1; got {tol!r}, {max_iter!r}, {switch_iter!r}"
            )
        self.tol, self.max_iter, self.max_time, self.switch_iter = tol, max_iter, max_time, switch_iter

    def run(
        self,
        problem: CompositeProblem,
        z0: torch.Tensor | None = None,
        callback: Callable[[Any, Any], None] | None = None,
    ) -> SolveResult:
        start = time.perf_counter()
        with solver_threads(problem):
            newton_ok = SemismoothNewton.supports(problem)
            first = min(self.max_iter, self.switch_iter) if newton_ok else self.max_iter
            res = FISTA(tol=self.tol, max_iter=first, max_time=self.max_time).run(problem, z0, callback)
            if res.status != "max_iter" or not newton_ok or first >= self.max_iter:
                return res
            left = None if self.max_time is None else self.max_time - (time.perf_counter() - start)
            if left is not None and left <= 0:
                res.status = "max_time"
                return res
            newton = SemismoothNewton(tol=self.tol, max_iter=self.max_iter - res.n_iter, max_time=left)
            more = newton.run(problem, res.z, callback)
        history = res.history
        history.extend(more.history, skip=1)  # Newton's first entry is FISTA's last point
        best = more if more.objective <= res.objective or more.converged else res
        return SolveResult(
            z=best.z,
            objective=best.objective,
            certificate=best.certificate,
            status=more.status,
            n_iter=res.n_iter + more.n_iter,
            time=time.perf_counter() - start,
            history=history,
        )


def make_solver(
    name: str, problem: CompositeProblem, tol: float, max_iter: int, max_time: float | None
) -> FISTA | SemismoothNewton | AutoSolver:
    """The solver ``name`` (``"auto"``, ``"fista"`` or ``"newton"``) for ``problem``.

    ``max_iter`` counts FISTA iterations and proximal Newton steps. Asking for ``"newton"`` where it does not apply
    raises ``ValueError``.
    """
    check_solver(name)
    if name == "auto":
        return AutoSolver(tol=tol, max_iter=max_iter, max_time=max_time)
    if name == "newton":
        if not SemismoothNewton.supports(problem):
            raise ValueError(
                f"solver='newton' needs a penalty with a prox Jacobian; {type(problem.penalty).__name__} has none "
                "(use solver='fista' or 'auto')"
            )
        return SemismoothNewton(tol=tol, max_iter=max_iter, max_time=max_time)
    return FISTA(tol=tol, max_iter=max_iter, max_time=max_time)
