"""A subspace (column-generation) solver for block-nuclear-norm heads too large for the exact prox.

For ``min_Z f(A(Z)) + β Σ_j ‖Z_j‖_*`` with blocks ``Z_j`` (p, q) — at the paper's gated self-attention size
(d = 100, c = 100) each block is 10⁴ × 10⁴ and FISTA's prox is a full SVD of each per step — this solver restricts every
block to ``Z_j = Q_j B_jᵀ`` with an orthonormal left basis ``Q_j`` (p, k) and a free ``B_j`` (q, k). Since
``‖Q_j B_jᵀ‖_* = ‖B_j‖_*``, the restricted problem is again a block-nuclear-norm problem, on reduced features
(``H``, k per block and sample, held in memory) and small blocks (q, k), solved exactly and certified by
:class:`~attnduality.convex.solvers.fista.FISTA`. Its solution is certified for the full problem by the same
duality gap as the exact solver (:func:`~attnduality.convex.solvers.lowrank_certificate.factored_certificate`): the
dual norm ``max_j ‖A*∇f‖_2`` comes from the dense streamed adjoint and a block Krylov iteration
(:func:`~attnduality.convex.linalg.top_singular_pairs`). If the gap is too large, the top left singular
vectors of ``−A*∇f_j`` outside ``span(Q_j)`` — exactly the directions whose singular values above β certify
non-optimality (Sahiner et al.'s Burer–Monteiro follow-up: optimal iff ``‖A*∇f‖_2 ≤ β``) — join the basis, and the
restricted problem is solved again from the previous solution and FISTA's last step size (column generation, as in
active-subspace methods for trace-norm problems; the step saves the 10 power iterations that would otherwise seed it).

The expensive step is the dense adjoint (one streamed pass of ``O(s·d³)`` per sample and gate, halved by symmetry),
once per round: it gives both the certificate and the next directions. The basis grows by ``grow`` columns per block
per round; the new columns are the out-of-span parts of the top left singular vectors of the whole block ``A*∇f_j``
(not of its projection: the violating directions mix the span and its complement). Optionally the first
``direction_samples`` samples (the data should be in random order) give the first directions at a fraction of a
pass; later directions always come from the full pass, since near the restricted optimum a rescaled subsample
misestimates ``σ/β`` and its directions need not reduce the full violation.

Warm starts (``warm_samples=[n_1, n_2, …]``): the same problem on the first ``n_1``, then ``n_2``, … samples (same
``β``: every loss here is a sample average) is solved and certified first, each level starting from the previous
one's compacted bases (the solution's left singular vectors and the top left singular vectors of ``−A*∇f``). A pass
over ``n`` samples costs ``n/N`` of a full pass, so the subspaces are found on subsamples and the full data only
certify (and, if needed, extend) them; how the full problem's first gap depends on the levels is measured in
BENCHMARKS.md §6.

The head supplies its pieces through a small protocol (see
:class:`~attnduality.convex.operators.streamed_attention.StreamedGatedAttention`): ``n_samples``, ``n_outputs``,
``n_gates``, ``n_features``, ``dtype``, ``subspace_features(basis, out)`` → ``H`` (k, N, m, r) with
``A(Q Bᵀ)_i[b] = Σ_{j,q,l} H[q, i, j, l] B_j[(l, b), q]``, and the adjoint in a compact form,
``adjoint_pairs(g, stop)``, whose block ``j`` ``expand_pairs(compact, j)`` is ``(A*g)_j`` (p, r·c): one dense block
at a time is held; and ``subset(stop)``, the same head on the first samples (for warm starts).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch

from ..certificates import Certificate
from ..linalg import orthonormalize, top_singular_pairs
from ..losses import Loss
from ..operators.base import LinearOperator
from ..penalties import BlockNuclearNorm
from ..problem import CompositeProblem
from .fista import FISTA
from .lowrank_certificate import factored_certificate

__all__ = ["SubspaceHead", "SubspaceOperator", "SubspaceResult", "SubspaceSolver"]


class SubspaceHead(Protocol):
    n_samples: int
    n_outputs: int
    n_gates: int
    n_features: int
    dtype: torch.dtype

    def subspace_features(self, basis: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor: ...

    def adjoint_pairs(self, g: torch.Tensor, stop: int | None = None) -> torch.Tensor: ...

    def expand_pairs(self, pairs: torch.Tensor, j: int, out: torch.Tensor | None = None) -> torch.Tensor: ...

    def subset(self, stop: int) -> SubspaceHead: ...


class SubspaceOperator(LinearOperator):
    """``B ↦ A(Q Bᵀ)`` on reduced features ``H`` (k, N, m, r): ``Σ_{q,j,l} H[q, n, j, l] B[j, (l, b), q]``.

    ``B`` has shape (m, r·c, k) (rows ``(l, b)``, row-major), so ``BlockNuclearNorm`` on it is ``Σ_j ‖Q_j B_jᵀ‖_*``.
    """

    def __init__(self, h: torch.Tensor, n_outputs: int) -> None:
        k, n, m, r = h.shape
        self.h, self.k, self.m, self.r = h, k, m, r
        self.n_samples, self.n_outputs = n, int(n_outputs)
        self.z_shape = (m, r * self.n_outputs, k)
        self.dtype, self.device = h.dtype, h.device

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        zq = z.reshape(self.m, self.r, self.n_outputs, self.k).permute(3, 0, 1, 2)  # (k, m, r, c)
        out = torch.zeros(self.n_samples, self.n_outputs, dtype=self.dtype, device=self.device)
        for q in range(self.k):
            out.addmm_(self.h[q].reshape(self.n_samples, -1), zq[q].reshape(-1, self.n_outputs))
        return out

    def adjoint(self, g: torch.Tensor) -> torch.Tensor:
        acc = torch.stack([self.h[q].reshape(self.n_samples, -1).T @ g for q in range(self.k)])  # (k, m·r, c)
        return acc.reshape(self.k, self.m, self.r, self.n_outputs).permute(1, 2, 3, 0).reshape(self.z_shape)


@dataclass
class SubspaceResult:
    """The solution ``Z_j = basis_j @ coef_jᵀ`` and its full-problem certificate."""

    basis: torch.Tensor
    """Orthonormal left bases (m, p, k)."""
    coef: torch.Tensor
    """``B`` (m, q, k)."""
    objective: float
    certificate: Certificate | None
    status: str
    """``converged`` (full relative gap ≤ tol), ``max_rank``, ``max_rounds`` or ``max_time``."""
    n_rounds: int
    time: float
    top_directions: torch.Tensor | None = None
    """The top left singular vectors (m, p, ≤ grow) of ``−A*∇f`` at the solution, from the same scan."""
    history: dict[str, list[float]] = field(default_factory=dict)
    """Per certificate: ``time``, ``rel_gap``, ``primal``, ``dual``, ``sigma_over_beta``, ``rank`` and ``samples`` (the
    level: warm-start levels certify their own subsample problem, listed first; the last level is the full problem);
    per restricted FISTA check: ``inner_time``, ``inner_objective`` (a primal value of that level's problem) and
    ``inner_samples``; with warm starts also ``warm_time`` and ``warm_rel_gap``. Times count from this call."""

    def z(self) -> torch.Tensor:
        """The dense solution (m, p, q) (only for sizes where it fits)."""
        return self.basis @ self.coef.mT


class SubspaceSolver:
    """Column generation over left subspaces, with a full duality-gap certificate (see the module docstring)."""

    def __init__(
        self,
        tol: float = 1e-3,
        rank0: int = 8,
        grow: int = 4,
        max_rank: int = 32,
        inner_tol: float | None = None,
        inner_max_iter: int = 5000,
        max_rounds: int = 10,
        max_time: float | None = None,
        direction_samples: int | None = None,
        warm_samples: int | Sequence[int] | None = None,
        seed: int = 0,
        verbose: bool = False,
    ) -> None:
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol!r}")
        if rank0 < 1 or grow < 1 or max_rank < rank0:
            raise ValueError(f"need rank0 >= 1, grow >= 1, max_rank >= rank0; got {rank0}, {grow}, {max_rank}")
        self.tol, self.rank0, self.grow, self.max_rank = float(tol), int(rank0), int(grow), int(max_rank)
        self.inner_tol = float(inner_tol) if inner_tol is not None else 0.1 * self.tol
        self.inner_max_iter, self.max_rounds, self.max_time = int(inner_max_iter), int(max_rounds), max_time
        self.direction_samples, self.seed, self.verbose = direction_samples, int(seed), bool(verbose)
        levels = () if warm_samples is None else (warm_samples,) if isinstance(warm_samples, int) else warm_samples
        levels = tuple(int(v) for v in levels)
        if any(v < 1 for v in levels) or any(b <= a for a, b in zip(levels, levels[1:], strict=False)):
            raise ValueError(f"warm_samples must be increasing sample counts >= 1, got {warm_samples!r}")
        self.warm_samples = warm_samples
        self._levels = levels

    def _log(self, msg: str) -> None:
        if self.verbose:
            print(msg, flush=True)

    @staticmethod
    def _sigma_tol(w: torch.Tensor) -> float:
        """Residual tolerance of the spectral-norm Krylov: Ritz values are then accurate to about its square (1e-8
        relative in float64, 1e-6 in float32, where rounding in a 10⁴-long product floors the residual near 1e-5)."""
        return 1e-4 if w.dtype == torch.float32 else 1e-6

    def _scan(
        self, head: SubspaceHead, g: torch.Tensor, basis: torch.Tensor, count: int, stop: int | None = None
    ) -> tuple[float, torch.Tensor, torch.Tensor]:
        """One streamed adjoint ``−A*g`` (over samples ``0:stop``, rescaled to all), block by block: its largest
        spectral norm, new directions (m, p, count): the parts outside ``span(basis_j)`` of the top ``count ≥ 1``
        left singular vectors of each block, orthonormalised; and those top vectors themselves.

        The top singular vectors of the whole block, not of its projection: at a restricted optimum
        ``‖Q_jᵀ A*∇f_j‖ ≤ β``, yet the violating directions are usually mixtures of the span and its complement, and
        the complement's own top vectors can be far from them."""
        pairs = head.adjoint_pairs(g, stop)
        factor = head.n_samples / stop if stop is not None else 1.0
        gen = torch.Generator().manual_seed(self.seed)
        sig_all, new, top = 0.0, [], []
        w: torch.Tensor | None = None  # one dense block at a time, in one buffer
        for j in range(head.n_gates):
            w = head.expand_pairs(pairs, j, out=w).mul_(-factor)
            sigma, left, _ = top_singular_pairs(w, k=count, tol=self._sigma_tol(w), seed=self.seed)
            sig_all = max(sig_all, float(sigma[0]))
            q = basis[j]
            new.append(orthonormalize(left, q if q.shape[-1] else None, gen))
            top.append(left)
        return sig_all, torch.stack(new), torch.stack(top)

    def _compact(self, res: SubspaceResult) -> torch.Tensor:
        """Bases to carry to the next level: per block, the left singular vectors of the solution ``Q_j B_jᵀ`` and
        the top left singular vectors of ``−A*∇f_j`` there (the directions where the dual norm is attained),
        orthonormalised; ``≤ max_rank`` columns. Earlier basis directions that are neither are dropped, so the next
        level has room to grow."""
        blocks = []
        for j in range(res.basis.shape[0]):
            _, sv, vh = torch.linalg.svd(res.coef[j], full_matrices=False)
            r = int((sv > 1e-6 * float(sv[0])).sum()) if float(sv[0]) > 0 else 0
            cols = [res.basis[j] @ vh[:r].mT]
            if res.top_directions is not None:
                cols.append(res.top_directions[j])
            blocks.append(torch.cat(cols, dim=-1)[:, : self.max_rank])
        width = max(1, max(b.shape[-1] for b in blocks))
        gen = torch.Generator().manual_seed(self.seed)
        out = []
        for b in blocks:  # equal widths: pad with random directions outside the span
            q = torch.linalg.qr(b).Q if b.shape[-1] else b
            pad = torch.randn(b.shape[0], width - b.shape[-1], generator=gen, dtype=b.dtype)
            out.append(torch.cat([q, orthonormalize(pad, q, gen)], dim=-1) if pad.shape[-1] else q)
        return torch.stack(out)

    def _warm_start(
        self, head: SubspaceHead, loss: Loss, beta: float, basis0: torch.Tensor | None, levels: tuple[int, ...]
    ) -> tuple[torch.Tensor, torch.Tensor, SubspaceResult]:
        """Solve the problem on the first ``levels[-1]`` samples (itself warm-started on ``levels[:-1]``; same ``β``:
        the loss is a sample average) and return its compacted bases (:meth:`_compact`), its solution in them, and
        its result. One full pass costs ``N / levels[-1]`` subsample passes, so the subspaces are found on
        subsamples and the full data only certify (and, if needed, extend) them."""
        n_warm = levels[-1]
        sub = SubspaceSolver(
            tol=self.tol,
            rank0=self.rank0,
            grow=self.grow,
            max_rank=self.max_rank,
            inner_tol=self.inner_tol,
            inner_max_iter=self.inner_max_iter,
            max_rounds=self.max_rounds,
            max_time=self.max_time,
            direction_samples=self.direction_samples if self.direction_samples else None,
            warm_samples=levels[:-1] or None,
            seed=self.seed,
            verbose=self.verbose,
        )
        self._log(f"warm start on the first {n_warm} of {head.n_samples} samples")
        res = sub.run(head.subset(n_warm), loss.subset(n_warm), beta, basis0=basis0)
        basis = self._compact(res)
        coef = res.coef @ (res.basis.mT @ basis)  # the same Z = Q Bᵀ in the new bases
        return basis, coef, res

    def run(self, head: SubspaceHead, loss: Loss, beta: float, basis0: torch.Tensor | None = None) -> SubspaceResult:
        """Solve ``min_Z f(A(Z)) + β Σ_j ‖Z_j‖_*`` for the streamed ``head`` to a full relative gap ≤ ``tol``.

        ``basis0`` (m, p, k0): first left bases (orthonormalised here), e.g. from a scan the caller already made;
        by default the top ``rank0`` left singular vectors of ``A*∇f(0)``. With ``warm_samples``, the problem on
        that many first samples is solved first and its bases (and solution) start the full problem."""
        if not (beta > 0 and math.isfinite(beta)):
            raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
        start = time.perf_counter()
        m, n, c, dtype = head.n_gates, head.n_samples, head.n_outputs, head.dtype
        dir_stop = self.direction_samples if self.direction_samples and self.direction_samples < n else None
        keys = ("time", "rel_gap", "primal", "dual", "sigma_over_beta", "rank", "samples")
        hist: dict[str, list[float]] = {k: [] for k in (*keys, "inner_time", "inner_objective", "inner_samples")}
        p = head.n_features**2
        if basis0 is not None and (
            basis0.ndim != 3 or basis0.shape[:2] != (m, p) or not 1 <= basis0.shape[2] <= self.max_rank
        ):
            raise ValueError(f"basis0 must be (m, p, k) = ({m}, {p}, 1..{self.max_rank}), got {tuple(basis0.shape)}")
        coef0: torch.Tensor | None = None
        levels = tuple(v for v in self._levels if v < n)
        if levels:
            basis, coef0, warm = self._warm_start(head, loss, beta, basis0, levels)
            basis = basis.to(dtype)
            for key, vals in warm.history.items():  # the subsample levels' certificates come first
                hist[key] = list(vals)
            hist["warm_time"] = [warm.time]
            hist["warm_rel_gap"] = [warm.certificate.rel_gap if warm.certificate else float("nan")]
            self._log(f"warm start: {warm.status}, rank {basis.shape[-1]} per block, {warm.time:.0f}s")
        elif basis0 is not None:
            basis = torch.linalg.qr(basis0.to(dtype)).Q
        else:  # directions of the gradient at Z = 0
            g0 = loss.grad(torch.zeros(n, c, dtype=dtype)).to(dtype)
            _, basis, _ = self._scan(head, g0, torch.zeros(m, p, 0, dtype=dtype), self.rank0, dir_stop)
        h = torch.empty(self.max_rank, n, m, head.n_features, dtype=dtype)
        k = 0
        coef: torch.Tensor | None = coef0
        more: torch.Tensor | None = None
        top: torch.Tensor | None = None
        cert: Certificate | None = None
        step: float | None = None
        status, rounds = "max_rounds", 0
        while rounds < self.max_rounds:
            rounds += 1
            new = basis.shape[-1] - k
            head.subspace_features(basis[..., k:], out=h[k : k + new])
            k = basis.shape[-1]
            op = SubspaceOperator(h[:k], c)
            problem = CompositeProblem(loss, op, BlockNuclearNorm(), float(beta))
            z0 = op.zeros()
            if coef is not None:
                z0[..., : coef.shape[-1]] = coef.to(dtype)
            offset = time.perf_counter() - start
            steps: list[float] = []
            inner = FISTA(tol=self.inner_tol, max_iter=self.inner_max_iter).run(
                problem, z0=z0, callback=lambda state, _, out=steps: out.append(state.step), step=step
            )
            step = steps[-1] if steps else None  # the next round's restricted problem starts at this step size
            hist["inner_time"] += [offset + t for t in inner.history.time]
            hist["inner_objective"] += list(inner.history.objective)
            hist["inner_samples"] += [float(n)] * len(inner.history.time)
            coef = inner.z
            pred = op.forward(coef)
            g = loss.grad(pred).to(dtype)
            self._log(
                f"round {rounds}: rank {k}, restricted gap {inner.certificate.rel_gap:.2e}, restricted σ/β "
                f"{inner.certificate.grad_dual_norm / beta:.5f} ({inner.n_iter} its, {inner.status}), "
                f"{time.perf_counter() - start:.0f}s"
            )
            room = min(self.grow, self.max_rank - k)
            sigma, more, top = self._scan(head, g, basis, self.grow)  # the full norm (certificate), directions
            more = more[..., :room] if room > 0 else None
            cert = factored_certificate(problem, basis, coef, pred, sigma)
            elapsed = time.perf_counter() - start
            for key, val in zip(
                keys, (elapsed, cert.rel_gap, cert.primal, cert.dual, sigma / beta, float(k), float(n)), strict=True
            ):
                hist[key].append(val)
            self._log(f"  full certificate: rel gap {cert.rel_gap:.3e}, σ/β = {sigma / beta:.5f}, {elapsed:.0f}s")
            if cert.rel_gap <= self.tol:
                status = "converged"
                break
            if k >= self.max_rank:
                status = "max_rank"
                break
            if self.max_time is not None and elapsed >= self.max_time:
                status = "max_time"
                break
            assert more is not None
            basis = torch.cat([basis, more], dim=-1)
        assert coef is not None
        return SubspaceResult(
            basis=basis[..., : coef.shape[-1]],
            coef=coef,
            objective=cert.primal if cert is not None else float("nan"),
            certificate=cert,
            status=status,
            n_rounds=rounds,
            time=time.perf_counter() - start,
            top_directions=top,
            history=hist,
        )
