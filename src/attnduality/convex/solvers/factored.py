"""A factored (Burer–Monteiro) solver for nuclear-norm problems that never forms an SVD of ``Z``.

For ``min_Z f(A(Z)) + β Σ_j ‖Z_j‖_*`` (:class:`~attnduality.convex.penalties.NuclearNorm` on one matrix or
:class:`~attnduality.convex.penalties.BlockNuclearNorm` on a batch of blocks), each block is parametrised as
``Z_j = U_j V_jᵀ`` with ``U_j`` (p, r) and ``V_j`` (q, r), and the smooth non-convex problem

    φ(U, V) = f(A(U Vᵀ)) + (β/2)(‖U‖_F² + ‖V‖_F²)

is minimised by L-BFGS. Since ``‖Z‖_* = min_{UVᵀ=Z} ½(‖U‖² + ‖V‖²)``, ``min φ`` is the convex optimum whenever
``r ≥ rank(Z*)`` (Sahiner et al.'s Burer–Monteiro follow-up, ICLR 2024; Burer & Monteiro 2003; Bach et al. 2008).

Optimiser: L-BFGS (10 pairs) with a column-scaled initial metric. The unit quasi-Newton step is tried first (one
forward; accepted under Armijo + weak Wolfe, which keeps ``sᵀy > 0``), so a typical iteration costs one forward and
one adjoint of ``A`` plus O((p + q)·q·r) matrix products, like a FISTA iteration without its SVD. When the unit step is
refused, ``A`` being linear makes the predictions along the direction a quadratic in the step ``a``:
``A((U + a dU)(V + a dV)ᵀ) = A(Z) + a·A(dU Vᵀ + U dVᵀ) + a²·A(dU dVᵀ)``; one more forward gives the whole line, and a
strong-Wolfe search (``c2 = 0.1``) then costs only loss evaluations on the (N, c) predictions. The initial inverse
Hessian is the scaled-gradient metric of Tong, Ma & Chi (2021): column ``i`` scaled by ``1/(s_i + 0.1·s_max)``
(``s_i = ‖U_i‖‖V_i‖``), since the spread of the singular values of ``Z`` otherwise sets the conditioning of ``φ``.
Why L-BFGS: no step size to tune, and it reaches 1e-8 gaps. The L-BFGS recursion and the line searches are in
:mod:`~attnduality.convex.solvers.lbfgs`, the objective ``φ``, its gradient and the solver's state in
:mod:`~attnduality.convex.solvers.factored_state`.

Certificate. At any ``(U, V)`` the duality gap of the convex problem is that of
:func:`~attnduality.convex.certificates.duality_gap` (FISTA's), computed by
:func:`~attnduality.convex.solvers.lowrank_certificate.factored_certificate` without SVDs: the dual norm
``max_j ‖A*∇f‖_2`` by block Krylov iteration (:func:`~attnduality.convex.linalg.top_singular_pairs`, warm-started
from the columns of ``V``, relative residual ``spectral_tol``), ``‖Z_j‖_*`` from the r×r core of ``U_j V_jᵀ``. At a
stationary point it reduces to Sahiner et al.'s bound ``(p̂ − p*)/p* ≤ (‖∇_Z F‖_2/β − 1)_+``.

Rank adaptation (the standard Burer–Monteiro escape). When the certificate reports ``‖A*∇f_j‖_2 > β``, the top
singular pairs ``(u, v)`` of ``−A*∇f_j`` above β are descent directions for the convex objective:
``Z_j ← Z_j + t·u vᵀ`` lowers ``F`` to first order by ``t(σ − β)``. Up to ``escape_pairs`` of them per block are
added as new columns ``√(t w)·(u, v)`` with weights ``w ∝ σ − β`` (the singular-value-thresholding direction;
all-zero columns are re-used first), ``t`` from an exact convex line search on ``t ↦ f(A(Z) + t A(W)) + β t Σw``.
Escapes happen at a certificate check when the pair is a new direction (at least half of it outside the column
spaces of ``U`` or ``V``: the violation cannot be fixed by the existing columns) or when the factored problem is
nearly stationary (relative gradient residual below ``escape_ratio`` times the violation ``σ/β − 1``, or no decrease
over a check window). Before each growth the factors are rebalanced to the SVD form ``U_j = Q_U P S^{1/2}``,
``V_j = Q_V W S^{1/2}`` of the r×r core, which minimises ``½(‖U‖² + ‖V‖²)`` for the current ``Z`` and drops
numerically zero singular values (rank reduction). The start is the same step from ``Z = 0`` with the top ``rank``
singular pairs of ``−A*∇f(0)`` (spectral initialisation), so ``Z = 0`` — a saddle of ``φ`` — is never an iterate.

Cost versus FISTA. FISTA needs one SVD of every (p, q) block per iteration (``O(p q min(p, q))``, with QR reduction);
this solver needs ``O(p q r)`` per iteration plus a block Krylov spectral norm of the explicit (p, q) gradient per
certificate check. It wins when the SVD dominates the operator calls (large blocks, low rank). It does not win when the
operator calls dominate (each solver then pays about the same per iteration and L-BFGS on ``φ`` needs about as many
iterations as FISTA: ill-conditioning of ``φ`` from small singular values of ``Z``, restarts of the memory at each
escape), when the optimal rank is a sizeable fraction of ``min(p, q)``, and on tiny problems. ``Z`` and ``A*∇f``
are still formed as dense (p, q) blocks because the operators take ``Z``; the factors only remove the SVDs.

Limits: the operator holds all samples (no mini-batches); it is applied to ``Z``, not to the factors (``A(UVᵀ)``
forms ``Z``); all blocks share the factor width ``r`` (unused columns are zero).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from ..certificates import Certificate
from ..linalg import balanced_factors, factor_svd, span_distance, spectral_norm_power, top_singular_pairs
from ..problem import CompositeProblem
from .factored_state import (
    FactoredResult,
    FactoredState,
    evaluate_state,
    factor_blocks,
    factors_to_z,
    phi_value,
    state_counts,
    with_factors,
)
from .fista import History
from .lbfgs import MemoryPair, convex_line_search, pair_dot, strong_wolfe_search, two_loop, update_memory
from .lowrank_certificate import factored_certificate

__all__ = [
    "FactoredResult",
    "FactoredSolver",
    "FactoredState",
    "factored_certificate",
    "spectral_norm_power",
    "top_singular_pairs",
]


class FactoredSolver:
    """Burer–Monteiro L-BFGS for ``f(A Z) + β Σ_j ‖Z_j‖_*`` with rank escape and the duality-gap certificate.

    Parameters: ``tol`` on the relative duality gap (the same certificate as :class:`FISTA`), ``max_iter`` (L-BFGS
    iterations; an escape counts as one), ``check_every`` (iterations between certificates: each costs a block Krylov
    spectral norm of ``A*∇f``, no operator call), ``memory`` (L-BFGS pairs), ``max_time`` in seconds,
    ``escape_ratio`` (grow the rank when the relative stationarity residual of the factored problem is below this
    fraction of the certificate's violation ``‖A*∇f‖_2/β − 1``), ``max_rank`` (cap on the factor width; default
    ``min(p, q)``), ``spectral_tol`` (relative residual of the Krylov iteration), ``escape_pairs`` (singular pairs of
    ``−A*∇f`` computed at an escape; those above ``β`` are added together), ``precondition`` (``λ/s_max`` of the
    column metric ``1/(s_i + λ)`` used as the initial inverse Hessian; None: identity), ``escape_angle`` (a singular
    pair counts as a new direction when this fraction of it lies outside the factors' column spaces; None: escape only
    at near-stationary points), ``seed`` (random start vectors).

    The operator must hold all samples in memory.
    """

    def __init__(
        self,
        tol: float = 1e-6,
        max_iter: int = 5_000,
        check_every: int = 10,
        memory: int = 10,
        max_time: float | None = None,
        escape_ratio: float = 0.1,
        max_rank: int | None = None,
        spectral_tol: float = 1e-10,
        escape_pairs: int = 4,
        precondition: float | None = 0.1,
        escape_angle: float | None = 0.5,
        seed: int = 0,
    ) -> None:
        if tol < 0 or max_iter < 1 or check_every < 1 or memory < 1:
            raise ValueError("tol must be >= 0, max_iter, check_every and memory >= 1")
        self.tol = tol
        self.max_iter = max_iter
        self.check_every = check_every
        self.memory = memory
        self.max_time = max_time
        self.escape_ratio = escape_ratio
        self.max_rank = max_rank
        self.spectral_tol = spectral_tol
        self.escape_pairs = int(escape_pairs)
        self.precondition = precondition
        self.escape_angle = math.inf if escape_angle is None else float(escape_angle)
        self.seed = seed

    @staticmethod
    def z(problem: CompositeProblem, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
        """``Z = UVᵀ`` in the operator's shape."""
        return factors_to_z(problem, left, right)

    # -- spectral information and certificate --------------------------------------------------------------------
    def spectral(
        self, problem: CompositeProblem, state: FactoredState, k: int = 1, v0: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Top ``k`` singular triples of ``−A*∇f`` per block, ``(σ (B, k), u (B, p, k), v (B, q, k))`` with
        ``−G v = σ u``, by block Krylov iteration warm-started from ``v0`` and the columns of ``V``."""
        starts = [t for t in (v0, state.right if state.rank > 0 else None) if t is not None and t.shape[-1] > 0]
        start = torch.cat(starts, -1) if starts else None
        sigma, lvec, rvec = top_singular_pairs(
            state.grad_z, k, tol=self.spectral_tol, v0=start, seed=self.seed + state.n_iter
        )
        return sigma, -lvec, rvec

    def certificate(
        self, problem: CompositeProblem, state: FactoredState, sigma: torch.Tensor | None = None
    ) -> Certificate:
        """The duality-gap certificate at ``Z = UVᵀ`` (power-iteration dual norm, nuclear norm from the factors)."""
        if sigma is None:
            sigma = self.spectral(problem, state)[0][:, 0]
        r = float(sigma.max()) if sigma.numel() else 0.0
        return factored_certificate(problem, state.left, state.right, state.pred, r)

    # -- rank growth ------------------------------------------------------------------------------------------
    def _line_search_t(self, problem: CompositeProblem, pred: torch.Tensor, w: torch.Tensor, cost: float) -> float:
        """``argmin_{t ≥ 0} f(pred + t w) + β·cost·t`` (convex), by :func:`~.lbfgs.convex_line_search`."""
        loss, beta = problem.loss, problem.beta

        def slope(t: float) -> float:
            return float((loss.grad(pred + t * w) * w).sum()) + beta * cost

        return convex_line_search(slope, loss.lipschitz() * float(w.square().sum()))

    def grow(
        self,
        problem: CompositeProblem,
        state: FactoredState,
        pairs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        mask: torch.Tensor,
        rebalance: bool = True,
    ) -> FactoredState:
        """Rank escape: add the singular pairs ``(u_ji, v_ji)`` of ``−A*∇f`` selected by ``mask`` (B, k) as new columns
        ``√(t w_ji)·(u_ji, v_ji)`` with weights ``w ∝ σ_ji − β`` (the singular-value-thresholding direction) and
        ``t`` from an exact line search; one forward and one adjoint. All-zero columns are re-used first; the width
        never exceeds ``max_rank``. With ``rebalance`` the factors are first put in balanced SVD form (truncated).
        ``n_escapes`` of the result is one more than the input's iff columns were added."""
        sigma, uvec, vvec = pairs
        beta = problem.beta
        nb, p, q = factor_blocks(problem)
        sigma, uvec, vvec = sigma.reshape(nb, -1), uvec.reshape(nb, p, -1), vvec.reshape(nb, q, -1)
        mask = mask.reshape(nb, -1) & (sigma > beta)
        if rebalance:
            state = with_factors(problem, state, *balanced_factors(state.left, state.right))
        left, right = state.left, state.right
        r = left.shape[-1]
        cap = min(p, q) if self.max_rank is None else max(min(self.max_rank, p, q), 1)
        free = (left.square().sum(-2) + right.square().sum(-2)) == 0  # (B, r)
        extra = int((mask.sum(1) - free.sum(1)).clamp_min(0).max())
        extra = min(extra, max(cap - r, 0))
        if extra:
            left = torch.cat([left, left.new_zeros(nb, p, extra)], -1)
            right = torch.cat([right, right.new_zeros(nb, q, extra)], -1)
            free = torch.cat([free, free.new_ones(nb, extra)], -1)
        placements: list[tuple[int, int, int]] = []
        for j in range(nb):
            cols = torch.nonzero(free[j]).flatten().tolist()
            for i in torch.nonzero(mask[j]).flatten().tolist():
                if not cols:
                    break
                placements.append((j, i, cols.pop(0)))
        if not placements:
            return state if not extra else with_factors(problem, state, left, right)
        viol = torch.stack([sigma[j, i] - beta for j, i, _ in placements])
        weights = viol / viol.max()
        du = torch.zeros_like(uvec)
        dv = torch.zeros_like(vvec)
        for (j, i, _), wt in zip(placements, weights.sqrt().tolist(), strict=True):
            du[j, :, i] = wt * uvec[j, :, i]
            dv[j, :, i] = wt * vvec[j, :, i]
        w_pred = problem.operator.forward(factors_to_z(problem, du, dv))
        t = self._line_search_t(problem, state.pred, w_pred, float(weights.sum()))
        counts = state_counts(state)
        counts["n_forward"] += 1
        if not t > 0:
            new = with_factors(problem, state, left, right)
            new.n_forward += 1
            return new
        counts["n_escapes"] += 1
        st = math.sqrt(t)
        left, right = left.clone(), right.clone()
        for j, i, c in placements:
            left[j, :, c] = st * du[j, :, i]
            right[j, :, c] = st * dv[j, :, i]
        return evaluate_state(problem, left, right, state.pred + t * w_pred, **counts)

    # -- init / step / run -------------------------------------------------------------------------------------
    def init(
        self,
        problem: CompositeProblem,
        rank: int = 1,
        factors: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> FactoredState:
        """The start: given ``factors`` (U, V) (blocks (B, p, r) or, for one matrix, (p, r)), or the spectral start
        from ``Z = 0`` with the top ``rank`` singular pairs of ``−A*∇f(0)`` whose values exceed β."""
        op = problem.operator
        nb, p, q = factor_blocks(problem)
        if factors is not None:
            left = factors[0].to(dtype=op.dtype, device=op.device).reshape(nb, p, -1).clone()
            right = factors[1].to(dtype=op.dtype, device=op.device).reshape(nb, q, -1).clone()
            if left.shape[-1] != right.shape[-1]:
                raise ValueError(f"factors have widths {left.shape[-1]} and {right.shape[-1]}")
            left, right = balanced_factors(left, right)
            pred = op.forward(factors_to_z(problem, left, right))
            return evaluate_state(problem, left, right, pred, n_forward=1)
        rank = int(rank)
        if rank < 0:
            raise ValueError(f"rank must be >= 0, got {rank}")
        left = torch.zeros(nb, p, 0, dtype=op.dtype, device=op.device)
        right = torch.zeros(nb, q, 0, dtype=op.dtype, device=op.device)
        state = evaluate_state(problem, left, right, op.forward(op.zeros()), n_forward=1)
        rank = min(rank, p, q)
        if rank == 0:
            return state
        pairs = top_singular_pairs(state.grad_z, rank, tol=self.spectral_tol, seed=self.seed)
        sigma, lvec, rvec = pairs
        state = self.grow(problem, state, (sigma, -lvec, rvec), sigma > problem.beta, rebalance=False)
        state.n_escapes = 0
        return state

    def _preconditioner(self, state: FactoredState) -> torch.Tensor | None:
        """Column scaling ``1/(s_i + λ)`` with ``s_i = ‖U_i‖‖V_i‖`` (the singular values for balanced factors) and
        ``λ = precondition · max s``: the scaled-gradient metric of Tong, Ma & Chi (2021), which removes the
        dependence of the factored problem's conditioning on the spread of the singular values of ``Z``."""
        if self.precondition is None or state.rank == 0:
            return None
        s = torch.linalg.vector_norm(state.left, dim=-2) * torch.linalg.vector_norm(state.right, dim=-2)  # (B, r)
        smax = float(s.max())
        if not smax > 0:
            return None
        return (1.0 / (s + self.precondition * smax)).unsqueeze(-2) * smax

    def step(self, problem: CompositeProblem, state: FactoredState) -> FactoredState:
        """One L-BFGS iteration: the unit step if it satisfies Armijo and weak Wolfe, else a strong-Wolfe line search
        on the exact quadratic-in-step predictions. Sets ``stalled`` when no decrease can be found."""
        loss, op, beta = problem.loss, problem.operator, problem.beta
        left, right = state.left, state.right
        counts = state_counts(state)
        counts["n_iter"] += 1
        if state.rank == 0:  # Z = 0 has no factor to move: only an escape can make progress
            return FactoredState(**{**state.__dict__, "n_iter": counts["n_iter"], "stalled": True})
        g = (state.g_left, state.g_right)
        precond = state.precond if state.memory else self._preconditioner(state)
        d = two_loop(g, state.memory, precond)
        dphi0 = pair_dot(g, d)
        gnorm2 = pair_dot(g, g)
        memory = list(state.memory)
        if not (dphi0 < -1e-12 * math.sqrt(gnorm2 * pair_dot(d, d))):  # not a descent direction: steepest descent
            memory = []
            precond = self._preconditioner(state)
            d = (-g[0] * precond, -g[1] * precond) if precond is not None else (-g[0], -g[1])
            dphi0 = pair_dot(g, d)
        if gnorm2 == 0.0 or not math.isfinite(dphi0):
            new = FactoredState(**{**state.__dict__, "n_iter": counts["n_iter"], "stalled": True})
            return new
        dl, dr = d
        ud, dd = pair_dot((left, right), d), pair_dot(d, d)
        sq0 = float(left.square().sum() + right.square().sum())
        phi0 = state.fval + 0.5 * beta * sq0
        slack = 1e2 * torch.finfo(op.dtype).eps * max(abs(phi0), 1.0)
        p1: torch.Tensor | None = None
        if memory:  # the unit quasi-Newton step first: one forward, plus the adjoint that the next step needs anyway
            p1 = op.forward(factors_to_z(problem, left + dl, right + dr))
            counts["n_forward"] += 1
            phi1 = float(loss.value(p1)) + 0.5 * beta * (sq0 + 2 * ud + dd)
            if math.isfinite(phi1) and phi1 <= phi0 + 1e-4 * dphi0 + slack:
                new = evaluate_state(problem, left + dl, right + dr, p1, **counts)
                if pair_dot((new.g_left, new.g_right), d) >= 0.9 * dphi0:  # weak Wolfe: sᵀy > 0 is guaranteed
                    return self._remember(new, state, dl, dr, memory, precond)
                counts["n_adjoint"] += 1  # wasted: the step is accepted by the line search below instead
        # line search on the exact predictions A(Z(a)) = A(Z) + a·u1 + a²·u2 (loss evaluations only)
        u2 = op.forward(factors_to_z(problem, dl, dr))
        if p1 is not None and bool(torch.isfinite(p1).all()):
            u1 = p1 - state.pred - u2
            counts["n_forward"] += 1
        else:
            u1 = op.forward(factors_to_z(problem, dl, right) + factors_to_z(problem, left, dr))
            counts["n_forward"] += 2

        def line(a: float) -> tuple[float, float, torch.Tensor]:
            pa = state.pred + a * u1 + (a * a) * u2
            fa, ga = loss.value_grad(pa)
            val = float(fa) + 0.5 * beta * (sq0 + 2 * a * ud + a * a * dd)
            der = float((ga * (u1 + (2 * a) * u2)).sum()) + beta * (ud + a * dd)
            return val, der, pa

        if memory:
            a = 1.0
        else:  # first or restarted iteration: step from a curvature estimate of the model along d
            curv = loss.lipschitz() * float(u1.square().sum()) + beta * dd
            a = -dphi0 / curv if curv > 0 else 1.0
        accepted = strong_wolfe_search(line, phi0, dphi0, a, slack, c1=1e-4, c2=0.1)
        if accepted is None:  # at the rounding level of φ with no descent point: stationary
            return FactoredState(**{**state.__dict__, **counts, "stalled": True, "memory": []})
        a, _, pa = accepted
        new = evaluate_state(problem, left + a * dl, right + a * dr, pa, **counts)
        return self._remember(new, state, a * dl, a * dr, memory, precond)

    def _remember(
        self,
        new: FactoredState,
        old: FactoredState,
        sl: torch.Tensor,
        sr: torch.Tensor,
        memory: list[MemoryPair],
        precond: torch.Tensor | None,
    ) -> FactoredState:
        """``new`` with the L-BFGS memory updated by the pair ``(s, y)`` of the step from ``old`` (if ``sᵀy > 0``)."""
        change = (new.g_left - old.g_left, new.g_right - old.g_right)
        new.memory = update_memory(memory, (sl, sr), change, self.memory)
        new.precond = precond
        return new

    def run(
        self,
        problem: CompositeProblem,
        rank: int = 1,
        factors: tuple[torch.Tensor, torch.Tensor] | None = None,
        callback: Callable[[FactoredState, Certificate], None] | None = None,
    ) -> FactoredResult:
        """Iterate (L-BFGS, rank escapes) until the relative duality gap is ≤ ``tol``."""
        start = time.perf_counter()
        history = History()
        state = self.init(problem, rank, factors)
        beta = problem.beta
        best: tuple[torch.Tensor, torch.Tensor, Certificate] | None = None
        status = "max_iter"
        since_check = self.check_every
        retried = False
        phi_check = gap_check = math.inf  # no decrease of φ nor of the best gap over a check window: a stall
        while True:
            finite = bool(torch.isfinite(state.left).all() and torch.isfinite(state.right).all())
            finite = finite and math.isfinite(state.fval)
            if not finite:
                status = "diverged"
                break
            if since_check >= self.check_every or state.stalled or state.n_iter >= self.max_iter:
                since_check = 0
                top = self.spectral(problem, state)
                sigma = top[0][:, 0]
                cert = self.certificate(problem, state, sigma)
                elapsed = time.perf_counter() - start
                if not math.isfinite(cert.primal):
                    status = "diverged"
                    break
                history.append(state.n_iter, elapsed, cert.primal, cert.rel_gap)
                if best is None or cert.primal <= best[2].primal:
                    best = (state.left, state.right, cert)
                if callback is not None:
                    callback(state, cert)
                if cert.rel_gap <= self.tol:
                    status = "converged"
                    best = (state.left, state.right, cert)
                    break
                if state.n_iter >= self.max_iter:
                    break
                if self.max_time is not None and elapsed >= self.max_time:
                    status = "max_time"
                    break
                phi = phi_value(problem, state)
                no_decrease = phi_check - phi <= 1e2 * torch.finfo(state.left.dtype).eps * max(abs(phi), 1.0)
                if no_decrease and cert.rel_gap >= gap_check:  # neither φ nor the gap improved over a window
                    state.stalled = True
                phi_check, gap_check = phi, min(gap_check, cert.rel_gap)
                # Rank escape: grow along singular pairs of −A*∇f above β that are new directions (mostly outside the
                # span of the factors), or along any pair above β once the factored problem is nearly stationary.
                violation = float(sigma.max()) / beta - 1.0 if beta > 0 else math.inf
                sq = float(state.left.square().sum() + state.right.square().sum())
                res = math.sqrt(pair_dot((state.g_left, state.g_right), (state.g_left, state.g_right)))
                rho = res / (beta * math.sqrt(sq)) if sq > 0 and beta > 0 else 0.0
                stationary = state.stalled or rho <= self.escape_ratio * violation
                thresh = max(rho / self.escape_ratio, self.tol) if stationary else self.tol
                new_dir = span_distance(state.left, state.right, top[1], top[2]) >= self.escape_angle
                blocks = (sigma > beta * (1.0 + thresh)) & (new_dir | stationary)
                if bool(blocks.any()):
                    pairs = top
                    if self.escape_pairs > 1:
                        pairs = self.spectral(problem, state, self.escape_pairs, v0=top[2])
                    new_dir = span_distance(state.left, state.right, pairs[1], pairs[2]) >= self.escape_angle
                    mask = (pairs[0] > beta * (1.0 + thresh)) & (new_dir | stationary)
                    grown = self.grow(problem, state, pairs, mask)
                    if grown.n_escapes > state.n_escapes:  # columns were added (not at max_rank, and t > 0)
                        state = grown
                        state.n_iter += 1
                        retried = False
                        continue
                    grown.stalled = state.stalled  # nothing added: the factors were only rebalanced
                    state = grown
                if state.stalled:
                    if retried:
                        status = "stalled"
                        break
                    retried = True
                    state.stalled = False
                    state.memory = []
            state = self.step(problem, state)
            since_check += 1
            if not state.stalled:
                retried = False
        if best is None:  # diverged before the first finite certificate: fall back to Z = 0
            state = self.init(problem, rank=0)
            best = (state.left, state.right, self.certificate(problem, state))
        left, right, cert = best
        left, right = balanced_factors(left, right)
        if left.shape[-1]:
            svals = factor_svd(left, right)[1]
        else:
            svals = torch.zeros(left.shape[0], 0, dtype=left.dtype, device=left.device)
        smax = float(svals.max()) if svals.numel() else 0.0
        num_rank = int((svals > 1e-6 * smax).sum(-1).max()) if smax > 0 else 0
        return FactoredResult(
            z=factors_to_z(problem, left, right),
            objective=cert.primal,
            certificate=cert,
            status=status,
            n_iter=state.n_iter,
            time=time.perf_counter() - start,
            history=history,
            left=left,
            right=right,
            singular_values=svals,
            rank=num_rank,
            n_escapes=state.n_escapes,
            n_forward=state.n_forward,
            n_adjoint=state.n_adjoint,
        )
