"""Choosing a solver by name: the estimators' ``solver=`` parameter.

``"auto"`` is :class:`AutoSolver`: FISTA, then, if the problem is not yet certified and the penalty has a prox Jacobian,
:class:`~attnduality.convex.solvers.newton.SemismoothNewton` warm-started from FISTA's best point. The rule is measured
(BENCHMARKS.md §7). Where FISTA certifies within a few hundred iterations (large β, loose ``tol``) it is about as fast
as Newton, because one Newton step already costs hundreds of operator products. Where it needs thousands (small β, tight
``tol``) Newton is several times faster. So Newton takes over after ``early_switch = 100`` FISTA iterations where FISTA,
at the rate its gap fell over the second half of them, would need more than as many again (:meth:`AutoSolver.handoff`),
and after ``switch_iter = 300`` in any case. Against a fixed switch at 300 this cut the quickstart program from 3.9 to
2.7 s and the §5 token heads at ``tol = 1e-6`` by 1.3× in all, and left them unchanged at ``tol = 1e-3``. The squared
loss goes to Newton at once: its quadratic model is exact, so one outer step solves the problem from any start and
FISTA's iterations only add to it (Newton alone was as fast as FISTA-then-Newton, or faster, on 17 of 18 token-head
regressions and on every gated-MLP regression measured). The cone-constrained ReLU program has no prox Jacobian and
stays with FISTA.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from typing import Any

import torch

from ..losses import SquaredLoss
from ..problem import CompositeProblem
from .fista import FISTA, History, SolveResult
from .newton import SemismoothNewton
from .threads import solver_threads

__all__ = ["SOLVERS", "AutoSolver", "check_solver", "make_solver"]

SOLVERS = ("auto", "fista", "newton")
_EARLY_SWITCH = 100  # FISTA iterations before AutoSolver.handoff may hand over to Newton
_HANDOFF_RATIO = 1.0  # ... when FISTA would need more than this × the iterations it has done


def check_solver(name: object) -> str:
    """``name`` if it is one of :data:`SOLVERS`, else a ``ValueError`` naming the choices."""
    if not isinstance(name, str) or name not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {name!r}")
    return name


class AutoSolver:
    """FISTA, then semismooth Newton from FISTA's best point once FISTA is slow to certify the problem: after
    ``early_switch`` iterations by :meth:`handoff` (``None``: never early), after ``switch_iter`` in any case; Newton
    alone for the squared loss (see the module docstring). ``max_iter`` bounds FISTA iterations plus Newton steps;
    the result's ``n_iter`` and history count both, Newton steps after FISTA's iterations. A FISTA phase that ends
    ``stalled`` (no progress at the dtype's precision) is returned as it is: Newton steps cannot beat rounding."""

    def __init__(
        self,
        tol: float = 1e-6,
        max_iter: int = 10_000,
        max_time: float | None = None,
        switch_iter: int = 300,
        early_switch: int | None = _EARLY_SWITCH,
    ) -> None:
        if not tol >= 0 or max_iter < 1 or switch_iter < 1 or (early_switch is not None and early_switch < 1):
            raise ValueError(
                "tol must be >= 0, max_iter, switch_iter and early_switch >= 1; got "
                f"{tol!r}, {max_iter!r}, {switch_iter!r}, {early_switch!r}"
            )
        self.tol, self.max_iter, self.max_time, self.switch_iter = tol, max_iter, max_time, switch_iter
        self.early_switch = early_switch

    def handoff(self, history: History) -> bool:
        """Whether Newton should take over before ``switch_iter``: after at least ``early_switch`` FISTA iterations,
        when FISTA, at the rate its best gap fell over the second half of them, would need more than
        ``_HANDOFF_RATIO`` times the iterations it has done to reach ``tol``."""
        k = history.n_iter[-1] if history.n_iter else 0
        if self.early_switch is None or k < self.early_switch:
            return False
        best = list(itertools.accumulate(history.rel_gap, min))
        half = next(i for i, it in enumerate(history.n_iter) if it >= k // 2)
        if not (0 < best[-1] < math.inf and 0 < best[half] < math.inf and history.n_iter[half] < k):
            return False
        rate = math.log(best[-1] / best[half]) / (k - history.n_iter[half])  # log-gap per iteration
        if not rate < 0 or self.tol <= 0:  # no progress, or a gap of zero that no rate reaches
            return True
        return math.log(self.tol / best[-1]) / rate > _HANDOFF_RATIO * k

    def run(
        self,
        problem: CompositeProblem,
        z0: torch.Tensor | None = None,
        callback: Callable[[Any, Any], None] | None = None,
    ) -> SolveResult:
        start = time.perf_counter()
        with solver_threads(problem):
            newton_ok = SemismoothNewton.supports(problem)
            if newton_ok and isinstance(problem.loss, SquaredLoss):  # one exact Newton step from any start
                return SemismoothNewton(tol=self.tol, max_iter=self.max_iter, max_time=self.max_time).run(
                    problem, z0, callback
                )
            first = min(self.max_iter, self.switch_iter) if newton_ok else self.max_iter
            fista = FISTA(
                tol=self.tol, max_iter=first, max_time=self.max_time, handoff=self.handoff if newton_ok else None
            )
            res = fista.run(problem, z0, callback)
            if res.status not in ("max_iter", "handoff") or not newton_ok or res.n_iter >= self.max_iter:
                return res  # a handoff is never the status here: at max_iter the monitor stops before asking
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
