"""A second-order certified solver: proximal Newton outside, a semismooth Newton augmented Lagrangian inside.

Outer loop (proximal Newton; Lee, Sun & Saunders 2014). At ``Z_k`` with predictions ``U_k = A(Z_k)`` the loss is
replaced by its quadratic model ``⟨∇f, A Δ⟩ + ½ ⟨A Δ, Q A Δ⟩`` with ``Q = ∇²f(U_k) + μ_k I`` (block diagonal over
samples; ``μ_k`` a Levenberg–Marquardt damping that vanishes with the duality gap, zero for the squared loss).
Writing ``Q = SᵀS`` per sample turns the model into the least-squares program

    ``min_Z ½ ‖B Z − b‖² + β R(Z)``,  ``B = S∘A``,  ``b = S U_k − S⁻ᵀ ∇f(U_k)``,

whose solution gives the search direction; an Armijo line search on the true objective along it keeps the method
globally convergent. For the squared loss the model is exact and one outer step solves the problem.

Inner loop (SSNAL: Li, Sun & Toh 2018 for the Lasso; Zhang, Zhang, Sun & Toh 2020 for group penalties). The
augmented Lagrangian of the dual ``min_{y,w} ½‖y‖² + ⟨b, y⟩ + (βR)*(w)`` s.t. ``Bᵀy + w = 0`` has the primal ``Z``
as its multiplier. Eliminating ``w`` leaves the smooth, strongly convex function of ``y ∈ R^{N×c}``

    ``ψ(y) = ½‖y‖² + ⟨b, y⟩ + (‖P‖² − ‖Z‖²)/(2σ)``,  ``P = prox_{σβR}(Z − σ Bᵀy)``,  ``∇ψ(y) = y + b − B P``,

minimised by semismooth Newton: ``(I + σ B J Bᵀ) d = −∇ψ`` with ``J ∈ ∂prox_{σβR}(V)``
(:meth:`~attnduality.convex.penalties.Penalty.prox_jacobian`), solved by conjugate gradients on operator
products, so nothing lifted is ever formed. ``J`` vanishes on inactive groups and on singular directions below the
threshold, which is why the systems are cheap where the solution is sparse or of low rank. Then ``Z ← P`` and
``σ`` grows. SSNAL stops at a relative gap of ``0.1·gap^1.5`` (at least ``tol/2``) of the outer problem's, ten
times tighter after each outer step that did not lower the gap (below a relative gap of 1e-2: that neither halved it
nor lowered the objective by a tenth of it), or in which SSNAL took no Newton step: its gap is relative to
``½‖BZ − b‖²``, whose constant ``½‖S⁻¹∇f‖²`` dominates where the softmax Hessian is nearly flat, and a loose SSNAL
multiplier leaves the certificate behind a converged objective.

Every outer step is certified with the problem's own duality gap (:mod:`attnduality.convex.certificates`), so
``status``, ``max_time``, the best-iterate rule and :class:`~attnduality.convex.solvers.fista.SolveResult` mean
exactly what they mean for FISTA. A step that finds no decrease (rounding: float32 below a relative gap of about
1e-5) hands the rest of the solve to FISTA from the best iterate, within the remaining time.

Why this method (BENCHMARKS.md §7). Proximal Newton with a first-order inner solver does not help the squared loss (the
inner problem is the original one); skglm-style working sets with coordinate descent need column access to the operator,
which the token heads do not have, and screening removes nothing at the small β where FISTA is slow (most blocks are
active there); SSNAL needs only ``A``, ``A*`` and the prox Jacobian, which every head and every penalty except the
cone-constrained group norm supply. It needs a few outer steps where FISTA needs thousands of iterations (small β) and
is about as fast as FISTA where FISTA certifies early. The cost is in the conjugate-gradient products (a few thousand in
all). Single-output problems whose operator forms ``A J A*`` explicitly (the gated MLP: ``O(N²(P + d))``, no lifted
matrix) precondition CG with that N×N matrix, factored once and reused while ``J`` and ``σ`` drift
(:class:`_DualPreconditioner`): 3–7× fewer CG iterations. With several outputs that matrix is ``(N·c)²``; there a
randomized Nyström sketch of ``B J Bᵀ`` of rank 100, kept across systems (:class:`_NystromPreconditioner`), saved 1.7×
of the products on the quickstart program and was neutral to 11% worse on the token heads; a Gram matrix with the
Jacobian and ``S`` averaged saved nothing (BENCHMARKS.md §7, ``benchmarks/bench_newton_precond.py``).
Where the penalty's Jacobian has a tangent form (nuclear norms: only the active singular pairs of the active blocks
matter, :class:`~attnduality.convex.penalties.TangentJacobian`) and the operator maps such factors cheaply
(:meth:`~attnduality.convex.operators.base.LinearOperator.tangent_map`; the gated MLP), each CG product applies
``A J A*`` to the factors only: 1.73× less time on the quickstart's Newton solve, and ``J`` acting on the factors
themselves (:attr:`~attnduality.convex.penalties.TangentJacobian.apply_factors`) another 1.08× (BENCHMARKS.md §7).
The same map gives ``B P`` for the prox ``P`` itself (its active blocks lie in the tangent space). ``S`` is applied in
the loss's own factored form (:meth:`~attnduality.convex.losses.Loss.hessian_factor`; for the softmax a rank-one
correction of a diagonal, a quarter of the time of a (c, c) product per sample), and the prox and its Jacobian at a
point share one decomposition (:meth:`~attnduality.convex.penalties.Penalty.prox_point`). For a float64 problem the
conjugate-gradient products run in float32 where the operator's tangent map has that form (``mixed_precision``): the
systems are solved to 1e-1 relative, far above float32's rounding, and the Newton directions they give are line-searched
and certified in float64; a direction that is no descent direction (overflow, rounding) sends the rest of the solve
back to float64 products (quickstart: 1.1× less time, the same number of steps).

Not covered: ``ConeGroupL2`` (the convex ReLU program: its prox is an NNLS projection, with no cheap Jacobian) and the
streamed paper-scale operators (``N·c`` dual variables of the full data and a CG product per full data pass are out
of budget there) keep FISTA and the subspace solver.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..certificates import Certificate
from ..losses import HessianFactor, SquaredLoss
from ..operators.base import LinearOperator, TangentMap
from ..penalties import Penalty, ProxPoint, TangentJacobian
from ..problem import CompositeProblem
from .fista import FISTA, STALL_WINDOW, SolveMonitor, SolveResult
from .threads import solver_threads

__all__ = ["SemismoothNewton", "NewtonState"]
# Constants chosen by measurement on the gated MLP (squared loss, 3e-4..1e-1·β_max) and the quickstart program
# (digits, cross-entropy, block nuclear norm); BENCHMARKS.md §7. sigma_growth = 3 beat 2, 5 and 10 by 15–35% in
# operator products.
_DAMPING = 1e-4  # μ_k = L_f · _DAMPING · min(1, relative gap): smaller changed nothing, 1e-2 tripled the outer steps
_NEWTON_FORCING = 0.5  # stop Newton on ψ once ‖∇ψ‖ ≤ this · ‖B(P − X)‖ (the multiplier's move); 0.15–0.3 cost
# 10–35% more products, 1.0 diverged
_MAX_NEWTON = 20  # Newton steps per multiplier update
_FALLBACK_ITER = 10_000  # FISTA iterations after a stalled Newton step (and at most max_iter − Newton steps)
_MAX_STALE = 4  # multiplier updates without a better inner gap before SSNAL gives up (the rounding floor)
_PROGRESS_NEAR = 1e-2  # below this relative gap an outer step made progress only if it lowered the gap to ...
_PROGRESS_GAP = 0.5  # ... this fraction of the last one, or with the objective falling by ...
_PROGRESS_OBJECTIVE = 0.1  # ... this fraction of the last gap (one rule everywhere: 8× slower on Fashion pixels)
_SIGMA_BACK = 2  # the next outer step starts SSNAL at σ_last / growth², not at 1/‖B‖² again
_PRECOND_LIMIT = 8  # CG iterations of one system above which the dual preconditioner is (re)built for the next one
_PRECOND_MAX_COST = 50  # operator products one build may cost (Gram matrix and Cholesky, counted in flops)
_NYSTROM_RANK = 100  # sketch columns of the Nyström preconditioner (each one system product)
_NYSTROM_LIMIT = 40  # CG iterations of one system above which the sketch is (re)taken: 20 retook it too often,
# 60 and 100 kept under half of its gain on the quickstart program
_NYSTROM_MAX_BYTES = 2**28  # memory the sketch may hold (dual size × rank)
_RESTRICT_SHARE = 0.75  # CG products on the active blocks alone where they are at most this share of the blocks;
# 0.5–0.9 cost the same per CG iteration on pyscnn's problem, restricting always 7% more, never 10–20% more
_PRODUCT_DTYPE = {torch.float64: torch.float32}  # CG products of a float64 problem, where the operator has a
# float32 form: the systems are solved to 1e-1 relative, far above float32's rounding, and every step is still
# accepted and certified at the problem's precision (quickstart: 1.1× less time, BENCHMARKS.md §7)
_GRAM_FLOOR = 1e3  # squared singular values of the sketch below this × eps × the largest are rounding (the Gram
# matrix squares the condition number)

Map = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class NewtonState:
    z: torch.Tensor
    """Current iterate."""
    u: torch.Tensor
    """``A(z)``."""
    rel_gap: float = math.inf
    """Relative duality gap at ``z`` (drives the damping and the inner tolerance)."""
    n_iter: int = 0
    """Outer (proximal Newton) iterations."""
    n_newton: int = 0
    """Inner semismooth Newton steps, summed."""
    n_cg: int = 0
    """Conjugate-gradient iterations, summed."""
    n_products: int = 0
    """Operator applications (forward or adjoint), summed: the cost unit shared with FISTA."""
    n_tangent: int = 0
    """Products ``A J A*`` applied through the operator's tangent map (not counted in ``n_products``)."""
    n_restricted: int = 0
    """Products ``A J A*`` applied through the operator restricted to the active blocks (not counted in
    ``n_products``)."""
    n_precond: int = 0
    """Preconditioner builds: Cholesky factors of the explicit dual matrix, or Nyström sketches."""
    sigma: float | None = None
    """The augmented-Lagrangian parameter the next SSNAL solve starts from (``None``: ``1/‖B‖²``)."""
    dual_point: tuple[torch.Tensor, torch.Tensor] | None = None
    """``(Θ, A*Θ)`` from the last SSNAL multiplier ``y`` (``Θ = Sᵀ y`` projected into ``dom f*``; ``y/N`` for the
    squared loss), a second dual candidate of the certificate: it converges with the objective where ``∇f(AZ)``
    converges like its square root."""
    stalled: bool = False
    """Set when a step found no decrease (rounding: float32 below about 1e-5 relative gap)."""
    sigma_max: float | None = None
    """``10¹⁰/‖B‖²``, the cap on σ (set by the first SSNAL solve)."""
    test_block: torch.Tensor | None = None
    """The Nyström sketch's orthonormal test vectors, one per row (drawn at the first sketch)."""
    product_dtype: torch.dtype | None = None
    """The precision of the conjugate-gradient products where lower than the problem's (``None``: the problem's);
    cleared for the rest of the solve once a direction from them found no decrease."""


class _Counted:
    """``B = S∘A`` and ``Bᵀ = A*∘Sᵀ`` with the per-sample factor ``S`` (``None``: the identity), counting
    applications."""

    def __init__(self, problem: CompositeProblem, s: HessianFactor | None, state: NewtonState) -> None:
        self.op, self.s, self.state = problem.operator, s, state
        self._s_low: HessianFactor | None = None  # S in the products' precision (one per solve), made once

    def scale(self, v: torch.Tensor) -> torch.Tensor:
        """``S v``."""
        return v if self.s is None else self.s.apply(v)

    def scale_t(self, v: torch.Tensor) -> torch.Tensor:
        """``Sᵀ v``."""
        return v if self.s is None else self.s.apply_t(v)

    def fwd(self, z: torch.Tensor) -> torch.Tensor:
        self.state.n_products += 1
        return self.scale(self.op.forward(z))

    def adj(self, y: torch.Tensor) -> torch.Tensor:
        self.state.n_products += 1
        return self.op.adjoint(self.scale_t(y))

    def linearize(self, point: ProxPoint) -> tuple[Map, Map]:
        """``(w ↦ B J Bᵀ w, P ↦ B P)`` for ``J ∈ ∂prox_{tR}(V)`` at the point's ``V``; the second map only for the
        point's ``P = prox_{tR}(V)``.

        Through the operator's tangent map where the penalty and the operator have one
        (:class:`~attnduality.convex.penalties.TangentJacobian`): the active blocks are few and of low rank near a
        solution, and ``A*``, ``J``, ``A`` then act on their factors only, as does ``A`` on ``P``, whose active blocks
        are ``L (PᵀL)ᵀ`` (the singular pairs above the threshold). Elsewhere ``A*``, ``J`` and ``A`` on full ``Z``."""
        has_map = type(self.op).tangent_map is not LinearOperator.tangent_map
        tangent = point.tangent() if has_map else None
        if tangent is None:
            blocks = self._on_blocks(point, point.active_blocks(), None)
            if blocks is not None:
                return blocks
            jac = point.jacobian()
            return (lambda w: self.fwd(jac(self.adj(w)))), self.fwd
        restricted = self.op.tangent_map(tangent)
        if restricted is None:  # too many active pairs: J on the active blocks (one SVD, not two)
            blocks = self._on_blocks(point, tangent.index, tangent.apply)
            if blocks is not None:
                return blocks
            index, apply = tangent.index, tangent.apply

            def full(w: torch.Tensor) -> torch.Tensor:
                h = self.adj(w)
                jh = torch.zeros_like(h)
                jh[index] = apply(h[index])
                return self.fwd(jh)

            return full, self.fwd

        product = self._tangent_product(point, tangent, restricted)

        def image(p: torch.Tensor) -> torch.Tensor:
            self.state.n_tangent += 1
            return self.scale(restricted.lift(p[tangent.index].mT @ tangent.left, None))

        return product, image

    def _tangent_product(self, point: ProxPoint, tangent: TangentJacobian, restricted: TangentMap) -> Map:
        """``w ↦ B J Bᵀ w`` through the tangent map, in ``state.product_dtype`` where the map, ``J`` and ``S`` all
        have that precision (else in the problem's). Those forms are built at the first product: the last
        linearization of each SSNAL update needs only the image."""
        state = self.state
        parts: tuple[torch.dtype | None, TangentJacobian, TangentMap, HessianFactor | None] | None = None

        def build() -> tuple[torch.dtype | None, TangentJacobian, TangentMap, HessianFactor | None]:
            low = state.product_dtype
            if low is not None:
                tangent_low, restricted_low = point.tangent(low), restricted.astype(low)
                if tangent_low is not None and restricted_low is not None:
                    if self.s is not None and self._s_low is None:
                        self._s_low = self.s.astype(low)
                    return low, tangent_low, restricted_low, self._s_low
            return None, tangent, restricted, self.s

        def product(w: torch.Tensor) -> torch.Tensor:
            nonlocal parts
            if parts is None:
                parts = build()
            low, jac, tmap, s = parts
            state.n_tangent += 1
            v = w if low is None else w.to(low)
            if s is not None:
                v = s.apply_t(v)
            hl, hr = tmap.project(v)
            out = tmap.lift(*jac.apply_to_factors(hl, hr))
            if s is not None:
                out = s.apply(out)
            return out.to(w.dtype)

        return product

    def _on_blocks(self, point: ProxPoint, index: torch.Tensor | None, apply: Map | None) -> tuple[Map, Map] | None:
        """:meth:`linearize` through the operator restricted to the leading blocks ``index`` outside which ``J`` and
        the prox vanish (:meth:`~attnduality.convex.operators.base.LinearOperator.restrict`), where they are at most
        ``_RESTRICT_SHARE`` of the blocks; ``apply`` is ``J`` on them (``None``: the point's). Each product then costs
        in proportion to the active blocks."""
        if index is None or len(index) > _RESTRICT_SHARE * self.op.z_shape[0]:
            return None
        sub = self.op.restrict(index)
        if sub is None:
            return None
        jac = point.jacobian(index) if apply is None else apply
        state = self.state

        def product(w: torch.Tensor) -> torch.Tensor:
            state.n_restricted += 1
            return self.scale(sub.forward(jac(sub.adjoint(self.scale_t(w)))))

        def image(p: torch.Tensor) -> torch.Tensor:
            state.n_restricted += 1
            return self.scale(sub.forward(p[index]))

        return product, image


def _dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a * b).sum())


def _cg(
    apply: Map, rhs: torch.Tensor, rtol: float, max_iter: int, precond: Map | None = None
) -> tuple[torch.Tensor, int]:
    """(Preconditioned) conjugate gradients for ``apply(x) = rhs`` from ``x = 0`` until ``‖rhs − apply(x)‖ ≤
    rtol·‖rhs‖``; returns ``x`` and the iterations used. ``precond`` applies an SPD approximation of the inverse."""
    x = torch.zeros_like(rhs)
    r = rhs.clone()
    z = r if precond is None else precond(r)
    p = z.clone()
    rz = _dot(r, z)
    stop = (rtol**2) * _dot(r, r)
    for it in range(1, max_iter + 1):
        ap = apply(p)
        pap = _dot(p, ap)
        if not pap > 0:
            return x, it
        alpha = rz / pap
        x += alpha * p
        r -= alpha * ap
        if _dot(r, r) <= stop:
            return x, it
        z = r if precond is None else precond(r)
        rz_new = _dot(r, z)
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x, max_iter


class _DualPreconditioner:
    """``(I + σ₀ S K₀ Sᵀ)⁻¹`` for the SSNAL systems ``(I + σ S A J A* Sᵀ) d = r`` of a single-output problem.

    ``K₀ = A J₀ A*`` is formed explicitly by the operator (:meth:`~attnduality.convex.operators.base.LinearOperator.
    dual_gram`, from the penalty's :meth:`~attnduality.convex.penalties.Penalty.block_jacobian`) and factored by
    Cholesky at the ``J₀``, ``σ₀`` of one system, then reused unchanged: ``J`` and ``σ`` drift between systems but the
    dominant directions (the data's) stay, so a stale factor still cuts the CG iterations several-fold
    (BENCHMARKS.md §7). It is built only after a plain or preconditioned solve needed more than ``_PRECOND_LIMIT``
    iterations, and only where a build costs at most ``_PRECOND_MAX_COST`` operator products; elsewhere ``get``
    returns ``None`` (plain CG).
    """

    def __init__(self, ops: _Counted, pen: Penalty, z: torch.Tensor) -> None:
        op = ops.op
        self.ops, self.pen, self.chol, self.wanted = ops, pen, None, False
        n, size = op.n_samples, z.numel()
        build = 2.0 * n * n * (z.shape[0] + z[0].numel()) + n**3 / 3.0
        self.enabled = (
            op.n_outputs == 1
            and z.ndim == 3
            and build <= _PRECOND_MAX_COST * 4.0 * n * size
            and type(op).dual_gram is not LinearOperator.dual_gram
            and pen.block_jacobian(z, 1.0) is not None
        )

    def observe(self, n_cg: int) -> None:
        self.wanted = self.enabled and n_cg > _PRECOND_LIMIT

    def factor(self, v: torch.Tensor, thr: float, sigma: float) -> torch.Tensor | None:
        """The Cholesky factor of ``I + σ S A J A* Sᵀ`` at ``J ∈ ∂prox_{thr·R}(v)`` (``None`` if rounding made it
        indefinite)."""
        a, u = self.pen.block_jacobian(v, thr)  # type: ignore[misc]  # enabled implies a block form
        k = self.ops.op.dual_gram(a, u)
        assert k is not None
        s = None if self.ops.s is None else self.ops.s.scalar
        if s is not None:
            k = s[:, None] * k * s
        k.mul_(sigma).diagonal().add_(1.0)
        chol, info = torch.linalg.cholesky_ex(k)
        return chol if int(info) == 0 else None

    def get(self, v: torch.Tensor, thr: float, sigma: float, system: Map) -> Map | None:
        if self.wanted:
            self.chol = self.factor(v, thr, sigma)
            self.wanted = False
            self.ops.state.n_precond += 1
        return None if self.chol is None else self.inverse(self.chol)

    @staticmethod
    def inverse(chol: torch.Tensor) -> Map:
        """``r ↦ (L Lᵀ)⁻¹ r`` by two triangular solves: for one right-hand side 3.6–4.1× faster than
        ``torch.cholesky_solve`` (N = 1000–2000, one thread; ``benchmarks/bench_newton_trisolve.py``)."""
        tri = torch.linalg.solve_triangular
        return lambda r: tri(chol.mT, tri(chol, r, upper=False), upper=True)


class _NystromPreconditioner:
    """A randomized Nyström approximation ``U Λ Uᵀ`` of ``H = S A J A* Sᵀ`` for the systems ``(I + σH) d = r``
    (Frangella, Tropp & Udell 2023, Alg. 2.1 and eq. (5.3)): ``P⁻¹ = (σλ_ℓ + 1) U (σΛ + I)⁻¹ Uᵀ + I − UUᵀ`` at the
    current σ. The rank-``rank`` sketch costs that many system products; it is taken from the system of a
    solve that needed more than ``_NYSTROM_LIMIT`` iterations and kept until another solve does (the data's dominant
    directions persist while ``J`` drifts). Used for several outputs, where the dual matrix is ``(N·c)²``: it saved
    1.7× of the products on the quickstart program and changed the token heads' by −1% to +11% (BENCHMARKS.md §7).
    Single-output problems without a dual matrix keep plain CG (the sketch cost them up to 16% more products).
    """

    def __init__(
        self, ops: _Counted, shape: torch.Size, dtype: torch.dtype, device: torch.device, rank: int = _NYSTROM_RANK
    ) -> None:
        n = math.prod(shape)
        self.ops, self.shape, self.dtype, self.device, self.rank = ops, shape, dtype, device, rank
        self.enabled = (
            shape[-1] > 1  # one output: 0–16% more products measured (gated MLP, N = 1000 and 10,000)
            and n >= 4 * rank
            and n * rank * dtype.itemsize <= _NYSTROM_MAX_BYTES
        )
        self.basis: torch.Tensor | None = None
        self.lam: torch.Tensor | None = None
        self.wanted = False
        self.gen = torch.Generator(device="cpu").manual_seed(0)

    def observe(self, n_cg: int) -> None:
        self.wanted = self.enabled and n_cg > _NYSTROM_LIMIT

    def sketch(self, system: Map, sigma: float) -> None:
        """Take the sketch from ``system = I + σH`` (``rank`` products of it). The blocks are held transposed, one
        row per test vector, so that each product reads and writes contiguous memory."""
        n, rank = math.prod(self.shape), self.rank
        self.wanted = False
        self.ops.state.n_precond += 1
        self.basis = self.lam = None
        omega = self._test_block(n)
        if omega is None:
            return
        y = torch.empty_like(omega)
        for j in range(rank):
            y[j] = system(omega[j].view(self.shape)).reshape(-1)
        y.sub_(omega).div_(sigma)  # (H Ω)ᵀ
        nu = math.sqrt(n) * torch.finfo(self.dtype).eps * float(y.norm())
        y += nu * omega
        chol, info = torch.linalg.cholesky_ex(omega @ y.T)
        if int(info) != 0:  # rounding made ΩᵀHΩ indefinite: no preconditioner until the next sketch
            return
        b = torch.linalg.solve_triangular(chol, y, upper=False)  # (rank, n): the sketch's factor, transposed
        # the SVD of the tall factor from the eigenvectors of its Gram matrix (a tenth of the time of a tall SVD).
        # Directions whose squared singular value is at rounding level are dropped; a kept column is off by about
        # eps·σ_max²/σ_i², so the columns that P⁻¹ weights most (the largest σ) are accurate and P⁻¹ stays symmetric
        # positive definite
        ev, w = torch.linalg.eigh(b @ b.T)
        if not float(ev[-1]) > 0:
            return
        keep = ev > _GRAM_FLOOR * torch.finfo(b.dtype).eps * float(ev[-1])
        ev, w = ev[keep].flip(0), w[:, keep].flip(1)  # descending
        self.basis = (w * ev.rsqrt()).T @ b  # (kept, n): Uᵀ
        self.lam = (ev - nu).clamp_min(0.0)

    def _test_block(self, n: int) -> torch.Tensor | None:
        """The orthonormal test vectors Ωᵀ (rank, n): random signs, drawn once per solve and kept in the state (a fixed
        test block sketches each new system as well as a fresh one)."""
        state = self.ops.state
        omega = state.test_block
        if omega is None or tuple(omega.shape) != (self.rank, n) or omega.dtype != self.dtype:
            signs = torch.randint(0, 2, (self.rank, n), generator=self.gen).to(dtype=self.dtype, device=self.device)
            omega = state.test_block = _orthonormal(signs.mul_(2.0).sub_(1.0))  # Rademacher: 2.5× cheaper to draw
        return omega

    def get(self, v: torch.Tensor, thr: float, sigma: float, system: Map) -> Map | None:
        if self.wanted:
            self.sketch(system, sigma)
        return self.precond(sigma)

    def precond(self, sigma: float) -> Map | None:
        """``P⁻¹`` at ``σ`` from the last sketch (``None`` before one)."""
        if self.basis is None or self.lam is None:
            return None
        basis, ls, shape = self.basis, sigma * self.lam, self.shape

        weight = (ls[-1] + 1.0) / (ls + 1.0) - 1.0  # P⁻¹ = I + U diag(weight) Uᵀ: two passes over U

        def apply(r: torch.Tensor) -> torch.Tensor:
            flat = r.reshape(-1)
            return torch.addmv(flat, basis.T, weight * (basis @ flat)).reshape(shape)

        return apply


def _orthonormal(omega: torch.Tensor) -> torch.Tensor | None:
    """Orthonormal rows spanning those of ``omega`` (k, n), by Cholesky QR: for a random sign block with ``n ≥ 4k``
    the Gram matrix is well conditioned, so the rows are orthonormal to rounding at a fifth of Householder QR's cost
    (``None`` if rounding broke the Cholesky factorisation)."""
    chol, info = torch.linalg.cholesky_ex(omega @ omega.T)
    if int(info) != 0:
        return None
    return torch.linalg.solve_triangular(chol, omega, upper=False)


def _preconditioner(
    ops: _Counted, pen: Penalty, z: torch.Tensor, b: torch.Tensor
) -> _DualPreconditioner | _NystromPreconditioner:
    """The explicit dual matrix where the operator forms it cheaply (single output), else the Nyström sketch (several
    outputs), else none."""
    gram = _DualPreconditioner(ops, pen, z)
    return gram if gram.enabled else _NystromPreconditioner(ops, b.shape, b.dtype, b.device)


def _progress(before: Certificate, after: Certificate) -> bool:
    """Whether an outer step made progress: the gap fell, and, near a solution (relative gap below
    ``_PROGRESS_NEAR``), either to ``_PROGRESS_GAP`` of the last one or with the objective falling by
    ``_PROGRESS_OBJECTIVE`` of the last gap. There a Newton step cuts the gap superlinearly, and a step with neither
    left the objective flat while the gap lagged. Far from it the gap overestimates the distance to the optimum and
    any decrease counts (tightening there costs many inner iterations for nothing)."""
    if not after.rel_gap < before.rel_gap:
        return False
    return (
        before.rel_gap > _PROGRESS_NEAR
        or after.rel_gap <= _PROGRESS_GAP * before.rel_gap
        or before.primal - after.primal >= _PROGRESS_OBJECTIVE * before.gap
    )


class SemismoothNewton:
    """Proximal Newton + SSNAL for ``f(A Z) + β R(Z)`` (see the module docstring).

    Parameters: ``tol`` on the relative duality gap of the problem, ``max_iter`` outer (proximal Newton)
    iterations, ``max_time`` in seconds, ``max_cg`` conjugate-gradient iterations per Newton system,
    ``sigma_growth`` (factor on the augmented-Lagrangian parameter between multiplier updates), ``stall_window``
    (outer steps without progress before the solve stops as ``stalled``; see
    :class:`~attnduality.convex.solvers.fista.SolveMonitor`), ``mixed_precision`` (the conjugate-gradient products
    of a float64 problem in float32 where the operator supports it, :meth:`~attnduality.convex.operators.base.
    TangentMap.astype`; steps, line searches and certificates stay in float64).
    """

    def __init__(
        self,
        tol: float = 1e-6,
        max_iter: int = 100,
        max_time: float | None = None,
        max_cg: int = 200,
        sigma_growth: float = 3.0,
        stall_window: int | None = STALL_WINDOW,
        mixed_precision: bool = True,
    ) -> None:
        if not tol >= 0 or max_iter < 1 or max_cg < 1 or not sigma_growth >= 1:
            raise ValueError("tol must be >= 0, max_iter and max_cg >= 1, sigma_growth >= 1")
        self.mixed_precision = mixed_precision
        self.tol = tol
        self.max_iter = max_iter
        self.max_time = max_time
        self.max_cg = max_cg
        self.sigma_growth = sigma_growth
        self.stall_window = stall_window

    @staticmethod
    def supports(problem: CompositeProblem) -> bool:
        """Whether the penalty has a prox Jacobian (every penalty but the cone-constrained group norm)."""
        return problem.penalty.has_prox_jacobian

    def init(self, problem: CompositeProblem, z0: torch.Tensor | None = None) -> NewtonState:
        if not self.supports(problem):
            raise ValueError(
                f"{type(problem.penalty).__name__} has no prox Jacobian; the semismooth Newton solver does not apply "
                "(use solver='fista')"
            )
        z = problem.start_point(z0)
        low = _PRODUCT_DTYPE.get(z.dtype) if self.mixed_precision else None
        return NewtonState(z=z, u=problem.operator.forward(z), n_products=1, product_dtype=low)

    # --- the outer step -------------------------------------------------------------------------------------
    def _factor(
        self, problem: CompositeProblem, state: NewtonState, g: torch.Tensor
    ) -> tuple[HessianFactor | None, torch.Tensor]:
        """``S`` with ``SᵀS = ∇²f(U) + μI`` per sample (``None`` for the squared loss, whose ``S = I/√N`` is folded
        into ``b`` and ``β``), and ``b = S U − S⁻ᵀ ∇f(U)``; ``g = ∇f(U)``."""
        loss, u = problem.loss, state.u
        if isinstance(loss, SquaredLoss):
            return None, u - loss.n_samples * g  # = Y: the inner problem is N times the original one
        mu = loss.lipschitz() * _DAMPING * min(1.0, max(state.rel_gap, 1e-10))
        s = loss.hessian_factor(u, mu)
        return s, s.apply(u) - s.solve_t(g)

    def step(self, problem: CompositeProblem, state: NewtonState, inner_tol: float, deadline: float) -> NewtonState:
        """One proximal Newton step: solve the least-squares model by SSNAL, then an Armijo search along it."""
        loss, pen, beta = problem.loss, problem.penalty, problem.beta
        g = loss.grad(state.u)
        s, b = self._factor(problem, state, g)
        ops = _Counted(problem, s, state)
        # the squared loss is solved as N·f: the same minimiser at penalty N·β
        inner_beta = beta * loss.n_samples if s is None else beta
        z_hat, y, bty = self._ssnal(ops, pen, inner_beta, b, state.z, inner_tol, deadline)
        if s is None:
            n = loss.n_samples
            state.dual_point = (y / n, bty / n)
        else:  # Θ = Sᵀ y has A*Θ = Bᵀy; projected into dom f*, it needs one adjoint
            theta = loss.project_dual(ops.scale_t(y))
            state.dual_point = (theta, problem.operator.adjoint(theta))
            state.n_products += 1
        u_hat = problem.operator.forward(z_hat)
        state.n_products += 1
        f0 = float(loss.value(state.u))
        r0 = float(pen.value(state.z))
        r1 = float(pen.value(z_hat))
        decrease = _dot(g, u_hat - state.u) + beta * (r1 - r0)
        state.n_iter += 1
        if not decrease < 0:  # no descent left in the model: rounding, or the current point is optimal
            state.stalled = True
            return state
        t = 1.0
        z_new, u_new = z_hat, u_hat
        for _ in range(30):
            if t < 1.0:
                z_new = state.z + t * (z_hat - state.z)
                u_new = state.u + t * (u_hat - state.u)
                r1 = float(pen.value(z_new))
            f_new = float(loss.value(u_new)) + beta * r1
            if f_new <= f0 + beta * r0 + 1e-4 * t * decrease:
                break
            t *= 0.5
        else:
            state.stalled = True
            return state
        state.z, state.u = z_new, u_new
        return state

    # --- the inner SSNAL ------------------------------------------------------------------------------------
    def _ssnal(
        self,
        ops: _Counted,
        pen: Penalty,
        beta: float,
        b: torch.Tensor,
        x: torch.Tensor,
        tol: float,
        deadline: float,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``argmin_X ½‖B X − b‖² + β R(X)`` to relative duality gap ``tol``, warm-started at ``x``; returns the
        best ``X`` and the last multiplier ``y`` with ``Bᵀy``."""
        state = ops.state
        bx = ops.fwd(x)
        y = bx - b  # the dual point that the optimal x gives
        bty = ops.adj(y)
        if state.sigma_max is None:
            state.sigma_max = 1e10 * self._sigma0(ops, x)
        sigma = state.sigma if state.sigma is not None else state.sigma_max * 1e-10
        best_x, best_gap, stale = x, math.inf, 0
        b_norm = float(b.norm())
        pre = _preconditioner(ops, pen, x, b)
        for _ in range(60):
            thr = sigma * beta
            # --- semismooth Newton on ψ(y) for the fixed multiplier x -------------------------------------------
            point = None  # the prox at V = x − σBᵀy, carried over from the line search that accepted y
            for _ in range(_MAX_NEWTON):
                if point is None:
                    point = pen.prox_point(x - sigma * bty, thr)
                v, p = point.w, point.prox
                product, image = ops.linearize(point)
                bp = image(p)
                grad = y + b - bp
                gnorm = float(grad.norm())
                moved = float((bp - bx).norm())
                if gnorm <= max(_NEWTON_FORCING * moved, 1e-3 * tol * b_norm) or gnorm == 0.0:
                    break
                if time.perf_counter() > deadline:
                    break
                system = lambda w, h=product, sg=sigma: w + sg * h(w)  # noqa: E731
                d, it = _cg(system, -grad, 0.1, self.max_cg, pre.get(v, thr, sigma, system))
                pre.observe(it)
                state.n_cg += it
                state.n_newton += 1
                slope = _dot(grad, d)
                accepted = False
                if slope < 0:  # else CG broke down at once (an SPD system gives descent): rounding or overflow
                    btd = ops.adj(d)
                    psi0 = self._psi(b, y, p, sigma)
                    alpha = 1.0
                    for _ in range(30):
                        y_new, bty_new = y + alpha * d, bty + alpha * btd
                        trial = pen.prox_point(x - sigma * bty_new, thr)
                        if self._psi(b, y_new, trial.prox, sigma) <= psi0 + 1e-4 * alpha * slope:
                            accepted = True
                            break
                        alpha *= 0.5
                if not accepted:  # no descent along d, or no decrease of ψ: rounding has the last word at this σ ...
                    if state.product_dtype is not None:  # ... unless the products were of lower precision: retry
                        state.product_dtype = None
                        continue
                    break
                y, bty, point = y_new, bty_new, trial
            # --- multiplier update and the inner certificate ---------------------------------------------------
            x, bx = p, bp
            resid = bp - b  # B x − b
            primal = 0.5 * _dot(resid, resid) + beta * float(pen.value(x))
            # the dual candidate is the multiplier y, scaled into feasibility; the residual B x − b, the other natural
            # candidate, differs from it by ∇ψ(y), which the Newton steps have just made small: it never gave the
            # better bound on the quickstart program, the gated MLP family or the token heads, and cost an adjoint
            r = float(pen.dual_norm(-bty))
            th = y if r <= beta else (beta / r) * y
            dual = -(0.5 * _dot(th, th) + _dot(b, th))
            gap = max(primal - dual, 0.0) / max(abs(primal), 1e-300)

            if gap < best_gap:
                best_x, best_gap, stale = x, gap, 0
            else:
                stale += 1
            if gap <= tol or time.perf_counter() > deadline or b_norm == 0.0 or stale >= _MAX_STALE:
                break
            sigma = min(sigma * self.sigma_growth, state.sigma_max)
        state.sigma = sigma / self.sigma_growth**_SIGMA_BACK
        return best_x, y, bty

    @staticmethod
    def _psi(b: torch.Tensor, y: torch.Tensor, p: torch.Tensor, sigma: float) -> float:
        """``ψ(y)`` up to the constant ``−‖X‖²/(2σ)``: for a positively homogeneous ``R``,
        ``⟨P, V − P⟩ = σβR(P)`` turns the definition into ``½‖y‖² + ⟨b, y⟩ + ‖P‖²/(2σ)``, free of the
        cancellation between ``σ‖Bᵀy‖²`` and ``‖V − P‖²/σ`` at large ``σ``."""
        return 0.5 * _dot(y, y) + _dot(b, y) + 0.5 * _dot(p, p) / sigma

    @staticmethod
    def _sigma0(ops: _Counted, x: torch.Tensor) -> float:
        """A first σ that balances the two terms of ``I + σ B J Bᵀ``: ``1/‖B‖²`` from a few power iterations."""
        gen = torch.Generator(device="cpu").manual_seed(0)
        v = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
        lam = 0.0
        for _ in range(5):
            v = v / v.norm()
            v = ops.adj(ops.fwd(v))
            lam = float(v.norm())
        return 1.0 / lam if lam > 0 else 1.0

    def _finish_with_fista(
        self,
        problem: CompositeProblem,
        monitor: SolveMonitor,
        state: NewtonState,
        callback: Callable[[NewtonState, Certificate], None] | None,
    ) -> SolveResult:
        """Hand a stalled solve to FISTA from the best iterate, within the remaining time; the history continues
        with FISTA's iterations counted after the Newton steps."""
        assert monitor.best is not None  # a stalled step follows at least one finite certificate
        elapsed = time.perf_counter() - monitor.start
        remaining = None if self.max_time is None else max(self.max_time - elapsed, 1e-9)
        budget = max(1, min(_FALLBACK_ITER, self.max_iter - state.n_iter))
        fista = FISTA(tol=self.tol, max_iter=budget, max_time=remaining, stall_window=self.stall_window)
        res = fista.run(problem, monitor.best[0], None if callback is None else lambda _s, c: callback(state, c))
        monitor.history.extend(res.history)
        res.history = monitor.history
        res.n_iter = state.n_iter + res.n_iter
        res.time = time.perf_counter() - monitor.start
        return res

    # --- the driver -------------------------------------------------------------------------------------------
    def run(
        self,
        problem: CompositeProblem,
        z0: torch.Tensor | None = None,
        callback: Callable[[NewtonState, Certificate], None] | None = None,
    ) -> SolveResult:
        """Proximal Newton steps until the relative duality gap is ≤ ``tol`` (certified after every step)."""
        with solver_threads(problem):
            return self._solve(problem, z0, callback)

    def _solve(
        self,
        problem: CompositeProblem,
        z0: torch.Tensor | None,
        callback: Callable[[NewtonState, Certificate], None] | None,
    ) -> SolveResult:
        monitor = SolveMonitor(problem, self.tol, self.max_iter, self.max_time, self.stall_window)
        deadline = math.inf if self.max_time is None else monitor.start + self.max_time
        state = self.init(problem, z0)
        tighten, prev, n_newton = 1.0, None, -1
        while True:
            cert = problem.certificate(state.z, state.u, state.dual_point)
            state.n_products += 1
            state.rel_gap = cert.rel_gap
            on_check = None if callback is None else lambda s=state, c=cert: callback(s, c)
            if monitor.stop(state.z, state.n_iter, cert, on_check):
                return monitor.result(state.n_iter)
            if state.stalled:
                return self._finish_with_fista(problem, monitor, state, callback)
            if prev is not None and (state.n_newton == n_newton or not _progress(prev, cert)):
                # SSNAL found its model solved at Z_k, or the step lowered neither the objective nor the gap by a
                # useful amount: its tolerance, relative to ½‖BZ − b‖², is too loose (½‖S⁻¹∇f‖² is large where the
                # softmax Hessian is nearly flat, e.g. near a fit) for the multiplier, the dual candidate that lets
                # the gap follow the objective. Without this, σ shrinks at every such step and Z stops moving until
                # FISTA takes over, or the gap lags at a converged objective.
                tighten *= 0.1
            floor = 10.0 * torch.finfo(state.z.dtype).eps
            inner_tol = max(floor, tighten * max(0.5 * self.tol, 0.1 * min(1.0, cert.rel_gap) ** 1.5))
            if isinstance(problem.loss, SquaredLoss):
                inner_tol = max(floor, tighten * 0.5 * self.tol)
            prev, n_newton = cert, state.n_newton
            state = self.step(problem, state, inner_tol, deadline)
