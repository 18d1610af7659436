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

Where Newton follows, FISTA's iterations before it run on the problem in float32 (for a float64 problem whose operator
has that form, :meth:`~attnduality.convex.problem.CompositeProblem.astype`): they only find Newton's starting point,
and float32 halves the cost of their matrix products. Their best point is certified again in float64, and only that
certificate can end the solve; a float32 phase that stalls or overflows hands over to Newton. The quickstart
program: 100 FISTA iterations 0.59 → 0.47 s (BENCHMARKS.md §7).
"""

from __future__ import annotations

import copy
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
_LOW_TOL = 1e-4  # the relative gap down to which FISTA's iterations before Newton may run in float32


def check_solver(name: object) -> str:
    """``name`` if it is one of :data:`SOLVERS`, else a ``ValueError`` naming the choices."""
    if not isinstance(name, str) or name not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {name!r}")
    return name


class AutoSolver:
    """FISTA, then semismooth Newton from FISTA's best point once FISTA is slow to certify the problem: after
    ``early_switch`` iterations by :meth:`handoff` (``None``: never early), after ``switch_iter`` in any case; Newton
    alone for the squared loss (see the module docstring). ``max_iter`` bounds FISTA iterations plus Newton steps;
    the result's ``n_iter`` and history count both, Newton steps after FISTA's iterations. A FISTA phase in the
    problem's own precision that ends ``stalled`` (no progress at the dtype's precision) is returned as it is: Newton
    steps cannot beat rounding.
    ``mixed_precision``: FISTA's phase in float32 where Newton follows (see the module docstring; the callback then
    sees float32 states until Newton starts, and the history one more entry, the float64 certificate of the handed-over
    point), and Newton's conjugate-gradient products in float32 (:class:`~attnduality.convex.solvers.newton.
    SemismoothNewton`)."""

    def __init__(
        self,
        tol: float = 1e-6,
        max_iter: int = 10_000,
        max_time: float | None = None,
        switch_iter: int = 300,
        early_switch: int | None = _EARLY_SWITCH,
        mixed_precision: bool = True,
    ) -> None:
        if not tol >= 0 or max_iter < 1 or switch_iter < 1 or (early_switch is not None and early_switch < 1):
            raise ValueError(
                "tol must be >= 0, max_iter, switch_iter and early_switch >= 1; got "
                f"{tol!r}, {max_iter!r}, {switch_iter!r}, {early_switch!r}"
            )
        self.tol, self.max_iter, self.max_time, self.switch_iter = tol, max_iter, max_time, switch_iter
        self.early_switch = early_switch
        self.mixed_precision = mixed_precision

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

    def _fista_phase(
        self,
        problem: CompositeProblem,
        z0: torch.Tensor | None,
        callback: Callable[[Any, Any], None] | None,
        max_iter: int,
        handoff: Callable[[History], bool] | None,
    ) -> SolveResult:
        """FISTA for at most ``max_iter`` iterations. Where Newton follows (``handoff`` given) on a float64 problem
        with a float32 form, the iterations run in float32 until its relative gap is ``_LOW_TOL`` (float32's
        certificates are sound well above that), then the best point is certified in float64
        (:meth:`_promote`) and, if that does not meet ``tol``, FISTA goes on in float64 from there: one history,
        one count of iterations, the handover rule judging both parts."""
        low = None
        if handoff is not None and self.mixed_precision and problem.operator.dtype == torch.float64:
            low = problem.astype(torch.float32)
        if low is not None and z0 is not None and problem.certificate(problem.start_point(z0)).rel_gap <= _LOW_TOL:
            low = None  # a warm start already past float32's range: rounding it to float32 would only lose it
        if low is None:
            return FISTA(tol=self.tol, max_iter=max_iter, max_time=self.max_time, handoff=handoff).run(
                problem, z0, callback
            )
        start = time.perf_counter()
        fista = FISTA(tol=max(self.tol, _LOW_TOL), max_iter=max_iter, max_time=self.max_time, handoff=handoff)
        first = fista.run(low, z0, callback)
        res = self._promote(problem, first)
        if first.status != "converged" or res.status == "converged" or res.n_iter >= max_iter:
            return res
        left = None if self.max_time is None else self.max_time - (time.perf_counter() - start)
        if left is not None and left <= 0:
            res.status = "max_time"
            return res

        def joined(history: History) -> bool:
            both = copy.deepcopy(res.history)
            both.extend(history, skip=1)  # its first entry is the promoted point's
            return handoff(both)

        fista = FISTA(tol=self.tol, max_iter=max_iter - res.n_iter, max_time=left, handoff=joined)
        more = fista.run(problem, res.z, callback)
        res.history.extend(more.history, skip=1)
        return SolveResult(
            more.z,
            more.objective,
            more.certificate,
            more.status,
            res.n_iter + more.n_iter,
            time.perf_counter() - start,
            res.history,
        )

    def _promote(self, problem: CompositeProblem, res: SolveResult) -> SolveResult:
        """FISTA's result on the float32 problem as a result of ``problem``: its best point in float64, certified
        there (one more history entry). It is ``converged`` only by that certificate; a float32 phase that ended
        otherwise than by time or iterations (at its tolerance, stalled at float32's precision, or diverged by
        overflow) reports ``handoff``."""
        t0 = time.perf_counter()
        z = res.z.to(problem.operator.dtype)
        cert = problem.certificate(z)
        res.time += time.perf_counter() - t0
        res.history.append(res.n_iter, res.time, cert.primal, cert.rel_gap)
        if cert.rel_gap <= self.tol:
            status = "converged"
        elif res.status in ("max_iter", "max_time"):
            status = res.status
        else:
            status = "handoff"
        return SolveResult(z, cert.primal, cert, status, res.n_iter, res.time, res.history)

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
                return SemismoothNewton(
                    tol=self.tol, max_iter=self.max_iter, max_time=self.max_time, mixed_precision=self.mixed_precision
                ).run(problem, z0, callback)
            first = min(self.max_iter, self.switch_iter) if newton_ok else self.max_iter
            res = self._fista_phase(problem, z0, callback, first, self.handoff if newton_ok else None)
            if res.status not in ("max_iter", "handoff") or not newton_ok or res.n_iter >= self.max_iter:
                return res  # a handoff is never the status here: at max_iter the monitor stops before asking
            left = None if self.max_time is None else self.max_time - (time.perf_counter() - start)
            if left is not None and left <= 0:
                res.status = "max_time"
                return res
            newton = SemismoothNewton(
                tol=self.tol, max_iter=self.max_iter - res.n_iter, max_time=left, mixed_precision=self.mixed_precision
            )
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
