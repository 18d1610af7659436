"""Accelerated proximal gradient (FISTA, Beck & Teboulle 2009) with backtracking, adaptive restart
(O'Donoghue & Candès 2015) and warm starts, stopping on the relative duality gap.

The solver is a plain object with explicit state (``init`` / ``step``), in the style of optax, so warm starts,
paths and device placement need nothing special. Each iteration costs one forward and one adjoint of the
operator: predictions at the extrapolated point are combined linearly from those of the last two iterates.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..certificates import Certificate
from ..problem import CompositeProblem
from .threads import solver_threads

__all__ = ["FISTA", "FISTAState", "SolveResult", "History", "SolveMonitor", "STALL_WINDOW"]


@dataclass
class History:
    """Values recorded at each certificate check."""

    n_iter: list[int] = field(default_factory=list)
    time: list[float] = field(default_factory=list)
    objective: list[float] = field(default_factory=list)
    rel_gap: list[float] = field(default_factory=list)

    def append(self, n_iter: int, t: float, objective: float, rel_gap: float) -> None:
        self.n_iter.append(n_iter)
        self.time.append(t)
        self.objective.append(objective)
        self.rel_gap.append(rel_gap)

    def extend(self, other: History, skip: int = 0) -> None:
        """Continue with ``other`` (a later solve from this one's last point), its iterations and times counted after
        this history's last entry; its first ``skip`` entries are left out."""
        it0 = self.n_iter[-1] if self.n_iter else 0
        t0 = self.time[-1] if self.time else 0.0
        rows = zip(other.n_iter, other.time, other.objective, other.rel_gap, strict=True)
        for it, t, obj, gap in list(rows)[skip:]:
            self.append(it0 + it, t0 + t, obj, gap)


@dataclass
class SolveResult:
    """What a solve returns: the solution and how far it is certified to be from optimal."""

    z: torch.Tensor
    objective: float
    certificate: Certificate
    status: str
    """``converged`` (relative gap ≤ tol), ``max_iter``, ``max_time``, ``stalled`` (no progress at the dtype's
    precision, see :class:`SolveMonitor`) or ``diverged``; ``handoff`` only inside a solver that hands over to another
    (:class:`~attnduality.convex.solvers.select.AutoSolver`)."""
    n_iter: int
    time: float
    history: History

    @property
    def converged(self) -> bool:
        return self.status == "converged"


STALL_WINDOW = 20
"""The fewest certificate checks without progress after which a solve is ``stalled`` (200 FISTA iterations)."""
STALL_ULPS = 100.0
"""Progress below ``STALL_ULPS · eps(dtype)`` of the objective's magnitude counts as none."""


class SolveMonitor:
    """The certificate checks every solver's loop shares: divergence, history, the best iterate, the callback and
    the stopping rules (``tol`` on the relative gap, ``max_iter``, ``max_time``, stagnation), and the final
    :class:`SolveResult`.

    Stagnation: when over the last half of the checks (at least ``stall_window`` of them) neither the best primal
    value fell nor the best dual bound rose by more than ``STALL_ULPS · eps`` of their magnitude (``eps`` of the
    operator's dtype), the gap can no longer close at this precision (typically float32 on badly scaled data) and
    the solve stops with status ``stalled``, keeping its best iterate. Slow solves that still move either bound by
    more than rounding go on, including non-monotone ones whose best dual bound improves at ever longer intervals
    (the window grows with the run). ``stall_window=None`` disables the rule.

    ``handoff`` (optional) is asked after every check that did not stop the solve whether another solver should take
    over from here (:class:`~attnduality.convex.solvers.select.AutoSolver`); if so the status is ``handoff``.
    """

    def __init__(
        self,
        problem: CompositeProblem,
        tol: float,
        max_iter: int,
        max_time: float | None,
        stall_window: int | None = STALL_WINDOW,
        handoff: Callable[[History], bool] | None = None,
    ) -> None:
        if stall_window is not None and (not isinstance(stall_window, int) or stall_window < 1):
            raise ValueError(f"stall_window must be None or an int >= 1, got {stall_window!r}")
        if handoff is not None and not callable(handoff):
            raise ValueError(f"handoff must be None or a callable taking the History, got {handoff!r}")
        self.problem, self.tol, self.max_iter, self.max_time = problem, tol, max_iter, max_time
        self.stall_window, self.handoff = stall_window, handoff
        self.start = time.perf_counter()
        self.history = History()
        self.best: tuple[torch.Tensor, Certificate] | None = None
        self.status = "max_iter"
        self._bounds: list[tuple[float, float]] = []  # (best primal, best dual) after each check

    def _record_bounds(self, cert: Certificate) -> None:
        primal, dual = cert.primal, cert.dual if math.isfinite(cert.dual) else -math.inf
        if self._bounds:
            primal, dual = min(primal, self._bounds[-1][0]), max(dual, self._bounds[-1][1])
        self._bounds.append((primal, dual))

    def stalled(self) -> bool:
        """Whether neither bound has moved by more than rounding over the last ``stall_window`` checks."""
        if self.stall_window is None:
            return False
        w = max(self.stall_window, (len(self._bounds) - 1) // 2)
        if len(self._bounds) <= w:
            return False
        (p_then, d_then), (p_now, d_now) = self._bounds[-1 - w], self._bounds[-1]
        if not math.isfinite(d_now):
            d_now = d_then = 0.0
        scale = max(abs(p_now), abs(d_now), torch.finfo(self.problem.operator.dtype).tiny)
        noise = STALL_ULPS * torch.finfo(self.problem.operator.dtype).eps * scale
        return p_then - p_now <= noise and d_now - d_then <= noise

    def stop(self, z: torch.Tensor, n_iter: int, cert: Certificate, on_check: Callable[[], None] | None) -> bool:
        """Record the certificate ``cert`` of ``z`` after ``n_iter`` iterations; ``True`` when the solve is over."""
        elapsed = time.perf_counter() - self.start
        if not math.isfinite(cert.primal) or not bool(torch.isfinite(z).all()):
            self.status = "diverged"
            return True
        self.history.append(n_iter, elapsed, cert.primal, cert.rel_gap)
        self._record_bounds(cert)
        if self.best is None or cert.primal <= self.best[1].primal:
            self.best = (z, cert)
        if on_check is not None:
            on_check()
        if cert.rel_gap <= self.tol:
            self.status = "converged"
            self.best = (z, cert)
            return True
        if n_iter >= self.max_iter:
            return True
        if self.max_time is not None and elapsed >= self.max_time:
            self.status = "max_time"
            return True
        if self.stalled():
            self.status = "stalled"
            return True
        if self.handoff is not None and self.handoff(self.history):
            self.status = "handoff"
            return True
        return False

    def result(self, n_iter: int) -> SolveResult:
        """The best iterate (``Z = 0`` when the solve diverged before its first finite certificate)."""
        if self.best is None:
            z = self.problem.operator.zeros()
            self.best = (z, self.problem.certificate(z))
        z, cert = self.best
        return SolveResult(
            z=z,
            objective=cert.primal,
            certificate=cert,
            status=self.status,
            n_iter=n_iter,
            time=time.perf_counter() - self.start,
            history=self.history,
        )


@dataclass
class FISTAState:
    z: torch.Tensor
    """Current iterate."""
    u: torch.Tensor
    """``A(z)``."""
    z_prev: torch.Tensor
    u_prev: torch.Tensor
    t: float
    """Momentum parameter."""
    step: float
    """Current step size (an estimate of ``1/L``)."""
    step0: float = 1.0
    """The initial step ``1/L̂``, the fallback when backtracking fails."""
    n_iter: int = 0
    n_restarts: int = 0


class FISTA:
    """FISTA for ``f(A Z) + β R(Z)``.

    Parameters: ``tol`` on the relative duality gap, ``max_iter``, ``check_every`` (iterations between
    certificate evaluations, each costing one extra adjoint), ``restart`` (``"gradient"``, ``"function"`` or
    ``None``), ``step_growth`` (factor tried on the step before each backtracking search; 1 disables growth),
    ``max_time`` in seconds, ``stall_window`` (certificate checks without progress before the solve stops as
    ``stalled``; ``None`` never stops for that, see :class:`SolveMonitor`), ``handoff`` (asked at each check whether
    to stop and hand the iterate to another solver, see :class:`SolveMonitor`).
    """

    def __init__(
        self,
        tol: float = 1e-6,
        max_iter: int = 10_000,
        check_every: int = 10,
        restart: str | None = "gradient",
        step_growth: float = 1.1,
        backtrack_factor: float = 0.5,
        max_time: float | None = None,
        stall_window: int | None = STALL_WINDOW,
        handoff: Callable[[History], bool] | None = None,
    ) -> None:
        if tol < 0 or max_iter < 1 or check_every < 1:
            raise ValueError("tol must be >= 0, max_iter and check_every >= 1")
        if restart not in ("gradient", "function", None):
            raise ValueError(f"restart must be 'gradient', 'function' or None, got {restart!r}")
        self.tol = tol
        self.max_iter = max_iter
        self.check_every = check_every
        self.restart = restart
        self.step_growth = step_growth
        self.backtrack_factor = backtrack_factor
        self.max_time = max_time
        self.stall_window = stall_window
        self.handoff = handoff

    def init(self, problem: CompositeProblem, z0: torch.Tensor | None = None, step: float | None = None) -> FISTAState:
        op = problem.operator
        z = problem.start_point(z0)
        if z0 is not None:  # a warm start outside the penalty's domain (e.g. a cone) is projected into it
            z = problem.penalty.prox(z, 0.0)
        if step is None:
            lip = problem.lipschitz()
            step = 1.0 / lip if lip > 0 else 1.0
        u = op.forward(z)
        return FISTAState(z=z, u=u, z_prev=z, u_prev=u, t=1.0, step=step, step0=step)

    def step(self, problem: CompositeProblem, state: FISTAState) -> FISTAState:
        """One accelerated proximal-gradient iteration with backtracking on the step size."""
        loss, op, pen, beta = problem.loss, problem.operator, problem.penalty, problem.beta
        t_next = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * state.t * state.t))
        mom = (state.t - 1.0) / t_next
        y = state.z + mom * (state.z - state.z_prev) if mom > 0 else state.z
        uy = state.u + mom * (state.u - state.u_prev) if mom > 0 else state.u
        fy, gy_u = loss.value_grad(uy)
        gy = op.adjoint(gy_u)
        fy = float(fy)
        step = state.step * self.step_growth
        # Below this size the decrease f(z) − f(y) − ⟨∇f(y), z − y⟩ is lost in rounding.
        rounding = 1e3 * torch.finfo(op.dtype).eps * max(abs(fy), 1.0)
        for _ in range(60):
            z_new = pen.prox(y - step * gy, step * beta)
            u_new = op.forward(z_new)
            diff = z_new - y
            f_new = float(loss.value(u_new))
            quad = float(diff.square().sum()) / (2.0 * step)
            lin = f_new - fy - float((gy * diff).sum())
            if not (math.isfinite(f_new) and math.isfinite(lin)):  # overflow: the step is far too long
                step *= self.backtrack_factor
                continue
            if abs(lin) <= rounding:
                # Curvature test on gradients instead, exact for quadratics: ⟨Δ∇f, Δu⟩ = ⟨Δ∇(f∘A), Δz⟩ ≤ ‖Δz‖²/step.
                if float(((loss.grad(u_new) - gy_u) * (u_new - uy)).sum()) <= 2.0 * quad:
                    break
            elif lin <= quad:
                break
            step *= self.backtrack_factor
        else:  # backtracking exhausted: take the conservative step 1/L̂
            step = state.step0
            z_new = pen.prox(y - step * gy, step * beta)
            u_new = op.forward(z_new)
            f_new = float(loss.value(u_new))
        restart = False
        if self.restart == "gradient":
            restart = float(((y - z_new) * (z_new - state.z)).sum()) > 0.0
        elif self.restart == "function":
            f_old = float(loss.value(state.u)) + beta * float(pen.value(state.z))
            restart = f_new + beta * float(pen.value(z_new)) > f_old
        if restart:
            return FISTAState(
                z_new, u_new, z_new, u_new, 1.0, step, state.step0, state.n_iter + 1, state.n_restarts + 1
            )
        return FISTAState(z_new, u_new, state.z, state.u, t_next, step, state.step0, state.n_iter + 1, state.n_restarts)

    def run(
        self,
        problem: CompositeProblem,
        z0: torch.Tensor | None = None,
        callback: Callable[[FISTAState, Certificate], None] | None = None,
        step: float | None = None,
    ) -> SolveResult:
        """Iterate until the relative duality gap is ≤ ``tol`` (checked every ``check_every`` iterations).

        ``step``: the first step size (e.g. a previous solve's last ``FISTAState.step`` on a nearby problem); by
        default ``1/L̂`` from 10 power iterations, which cost as much as 10 iterations."""
        if step is not None and not (step > 0 and math.isfinite(step)):
            raise ValueError(f"step must be a finite number > 0, got {step!r}")
        with solver_threads(problem):
            monitor = SolveMonitor(problem, self.tol, self.max_iter, self.max_time, self.stall_window, self.handoff)
            state = self.init(problem, z0, step)
            while True:
                if state.n_iter % self.check_every == 0 or state.n_iter >= self.max_iter:
                    cert = problem.certificate(state.z, state.u)
                    on_check = None if callback is None else lambda s=state, c=cert: callback(s, c)
                    if monitor.stop(state.z, state.n_iter, cert, on_check):
                        break
                state = self.step(problem, state)
            return monitor.result(state.n_iter)
