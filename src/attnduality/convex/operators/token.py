"""Operators of the convex token programs of Ergen, Neyshabur & Mehta (2022), "Convexifying Transformers".

Inputs are token arrays ``X`` (N, n, d). Every program reads ``min_Z (1/N) Σ_i L(A(Z)_i, y_i) + β R(Z)``:

* :class:`TokenOperator` — attention-only heads, eq. (9) (c = 1) and (12) (c outputs): ``A(Z)_i = Σ_k x_ikᵀ Z_k``,
  ``Z`` (n, d, c). With ``GroupL2(axes=(1,))`` (one group per token and output) it is (9)/(12); with
  ``BlockNuclearNorm()`` (one d×c block per token) it is the per-token nuclear norm (derived here with
  ``‖b_j‖_2²`` output decay, not in the paper).
* :class:`GatedTokenOperator` — attention + FC layer with gated ReLU (§3.4; its equations are not public, so this is
  the standard gated-ReLU convexification per token, derived here):
  ``A(Z)_i = Σ_k Σ_p D_ikp x_ikᵀ Z_kp``, ``D_ikp = 1{x_ikᵀ g_p ≥ 0}``,
  ``Z`` (n, P, d, c); groups per (token, gate[, output]).
* :class:`SequenceOperator` with :class:`RowStochasticCone` — sequence outputs (App. A.7, eq. (33), corrected):
  ``A(C)_i[r, l] = Σ_q Σ_k (C⁺_ql − C⁻_ql)[r, k] X_i[k, q]`` with ``C`` (2, d, c, n, n) ≥ 0. The printed (33)
  penalises ``‖C^±_ql‖_{1,∞}`` without constraining the row sums, which makes it a strict relaxation of (30) (a
  matrix with unequal row sums is not a multiple of a row-stochastic matrix); the exact program adds the constraint
  that every row of every block ``C^±_ql`` has the same sum ``λ^±_ql``, and then ``‖C^±_ql‖_{1,∞} = λ^±_ql``
  (derived, not in the paper; see :class:`RowStochasticCone`).
"""

from __future__ import annotations

import torch

from ..penalties import Penalty
from .base import LinearOperator
from .linear import DenseOperator

__all__ = [
    "GatedTokenOperator",
    "RowStochasticCone",
    "SequenceOperator",
    "TokenOperator",
    "project_row_stochastic_cone",
    "token_gate_masks",
]


def _check_tokens(x: torch.Tensor) -> None:
    if x.ndim != 3:
        raise ValueError(f"X must be (N, n_tokens, n_features), got shape {tuple(x.shape)}")


class TokenOperator(DenseOperator):
    """``A(Z)_i = Σ_k x_ikᵀ Z_k = vec(X_i)ᵀ vec(Z)`` (eq. (9), (12)): the dense operator on flattened tokens, with
    ``Z`` viewed as (n, d, c) so that penalties can group it by token."""

    def __init__(self, x: torch.Tensor, n_outputs: int) -> None:
        _check_tokens(x)
        self.n_tokens, self.n_features = int(x.shape[1]), int(x.shape[2])
        super().__init__(x.reshape(x.shape[0], -1), n_outputs)
        self.z_shape = (self.n_tokens, self.n_features, self.n_outputs)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.x @ z.reshape(-1, self.n_outputs)

    def adjoint(self, g: torch.Tensor) -> torch.Tensor:
        return (self.x.T @ g).reshape(self.z_shape)


def token_gate_masks(x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """``D[i, k, p] = 1{x_ikᵀ g_p ≥ 0}`` for tokens ``x`` (N, n, d) and gates (d, P), as (N, n, P) in x's dtype."""
    _check_tokens(x)
    return (x @ gates.to(dtype=x.dtype, device=x.device) >= 0).to(x.dtype)


class GatedTokenOperator(LinearOperator):
    """``A(Z)_i = Σ_k Σ_p D_ikp x_ikᵀ Z_kp`` with 0/1 masks ``D`` (N, n, P) and ``Z`` (n, P, d, c) (§3.4, derived)."""

    def __init__(self, x: torch.Tensor, masks: torch.Tensor, n_outputs: int) -> None:
        _check_tokens(x)
        if masks.shape[:2] != x.shape[:2] or masks.ndim != 3:
            raise ValueError(f"masks must be (N, n, P) with (N, n) = {tuple(x.shape[:2])}, got {tuple(masks.shape)}")
        self.n_samples, self.n_tokens, self.n_features = (int(s) for s in x.shape)
        self.n_patterns = int(masks.shape[2])
        self.n_outputs = int(n_outputs)
        self.z_shape = (self.n_tokens, self.n_patterns, self.n_features, self.n_outputs)
        self.xt = x.transpose(0, 1).contiguous()  # (n, N, d)
        self.mt = masks.to(dtype=x.dtype).permute(1, 0, 2).contiguous()  # (n, N, P)
        self.dtype, self.device = x.dtype, x.device

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n, p, d, c = self.z_shape
        xz = torch.bmm(self.xt, z.permute(0, 2, 1, 3).reshape(n, d, p * c)).view(n, -1, p, c)  # (n, N, P, c)
        return torch.einsum("knpc,knp->nc", xz, self.mt)

    def adjoint(self, g: torch.Tensor) -> torch.Tensor:
        n, p, d, c = self.z_shape
        mg = (self.mt.unsqueeze(-1) * g.unsqueeze(0).unsqueeze(2)).reshape(n, -1, p * c)  # (n, N, P·c)
        return torch.bmm(self.xt.transpose(1, 2), mg).view(n, d, p, c).permute(0, 2, 1, 3)


class SequenceOperator(LinearOperator):
    """``A(C)_i[r, l] = Σ_q Σ_k (C[0, q, l] − C[1, q, l])[r, k] X_i[k, q]`` with ``C`` (2, d, c, n, n); predictions
    are flattened row-major to (N, n·c) (App. A.7, eq. (33))."""

    def __init__(self, x: torch.Tensor, n_outputs: int) -> None:
        _check_tokens(x)
        self.x = x
        self.n_samples, self.n_tokens, self.n_features = (int(s) for s in x.shape)
        self.n_channels = int(n_outputs)
        self.n_outputs = self.n_tokens * self.n_channels
        n, d, c = self.n_tokens, self.n_features, self.n_channels
        self.z_shape = (2, d, c, n, n)
        self.dtype, self.device = x.dtype, x.device

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        m = z[0] - z[1]  # (d, c, n, n)
        return torch.einsum("qlrk,ikq->irl", m, self.x).reshape(self.n_samples, -1)

    def adjoint(self, g: torch.Tensor) -> torch.Tensor:
        gm = torch.einsum("irl,ikq->qlrk", g.view(self.n_samples, self.n_tokens, self.n_channels), self.x)
        return torch.stack([gm, -gm])


def project_row_stochastic_cone(c: torch.Tensor) -> torch.Tensor:
    """Euclidean projection of every (m, n) block (last two axes) onto ``K = {C ≥ 0 : C 1 = λ 1, λ ≥ 0}``, the cone
    over the row-stochastic matrices.

    ``P_K(C)`` has rows ``P_{λ*Δ}(c_r)`` where ``λ*`` minimises ``Σ_r dist²(c_r, λΔ)``; the derivative of that sum
    is ``−Σ_r τ_r(λ)`` with ``τ_r`` the threshold of the scaled-simplex projection, piecewise linear and
    non-increasing in λ. ``λ*`` is found exactly: a binary search over the breakpoints of ``Σ_r τ_r`` locates the
    linear piece holding its root, which is then solved in closed form.
    """
    shape = c.shape
    m, n = int(shape[-2]), int(shape[-1])
    rows = c.reshape(-1, m, n)
    nb = rows.shape[0]
    if nb == 0:
        return c.clone()
    u, _ = torch.sort(rows, dim=-1, descending=True)
    s = u.cumsum(-1)  # S_j: sum of the j largest
    j = torch.arange(1, n + 1, dtype=c.dtype, device=c.device)
    bp = (s - j * u).contiguous()  # λ at which the j-th entry becomes active (non-decreasing in j, bp[..., 0] = 0)

    def counts(lam: torch.Tensor) -> torch.Tensor:  # active entries per row at λ (B,) -> (B, m)
        return torch.searchsorted(bp, lam[:, None, None].expand(nb, m, 1).contiguous(), right=True)[..., 0]

    def g(lam: torch.Tensor) -> torch.Tensor:  # Σ_r τ_r(λ)
        k = counts(lam)
        sk = s.gather(-1, (k - 1).unsqueeze(-1))[..., 0]
        return ((sk - lam[:, None]) / k.to(c.dtype)).sum(-1)

    g0 = u[..., 0].sum(-1)  # Σ_r max_k c_rk = Σ_r τ_r(0+)
    hi_val = torch.maximum(bp[..., -1].amax(-1), s[..., -1].mean(-1)) + 1.0  # every row fully active and g < 0
    cand = torch.cat([bp.reshape(nb, -1), hi_val[:, None]], dim=1).sort(dim=1).values  # (B, m·n + 1)
    lo = torch.zeros(nb, dtype=torch.long, device=c.device)  # g(cand[lo]) ≥ 0 (cand[:, 0] = 0)
    hi = torch.full((nb,), cand.shape[1] - 1, dtype=torch.long, device=c.device)  # g(cand[hi]) < 0
    while bool((hi - lo > 1).any()):
        mid = (lo + hi) // 2
        val = g(cand.gather(1, mid[:, None])[:, 0])
        pos = val >= 0
        lo = torch.where(pos, mid, lo)
        hi = torch.where(pos, hi, mid)
    a, b = cand.gather(1, lo[:, None])[:, 0], cand.gather(1, hi[:, None])[:, 0]
    k = counts(0.5 * (a + b)).to(c.dtype)  # active counts are constant on the open piece (a, b)
    sk = s.gather(-1, (k.long() - 1).unsqueeze(-1))[..., 0]
    lam = ((sk / k).sum(-1) / (1.0 / k).sum(-1)).clamp(min=a, max=b)
    lam = torch.where(g0 > 0, lam, torch.zeros_like(lam))
    kk = counts(lam)
    tau = (s.gather(-1, (kk - 1).unsqueeze(-1))[..., 0] - lam[:, None]) / kk.to(c.dtype)
    out = torch.clamp(rows - tau.unsqueeze(-1), min=0.0)
    out = torch.where((g0 > 0)[:, None, None], out, torch.zeros_like(out))
    return out.reshape(shape)


class RowStochasticCone(Penalty):
    """``R(C) = Σ_blocks λ_b`` on ``C_b ∈ λ_b Δ`` (non-negative, every row summing to ``λ_b``), ``+inf`` elsewhere.

    The exact penalty of the sequence-output program (App. A.7, eq. (33) with the missing equal-row-sum constraint;
    derived, not in the paper): by Lemma 1's rescaling, (30) minimises ``β Σ_j |b_j| ‖V_j‖_1`` over heads
    ``b_j W_j X V_j``; splitting ``V_j`` into its entries, the cheapest way to build ``C^±_ql`` from heads costs
    exactly its common row sum. Blocks are the last two axes. ``prox`` is the projection of ``C − t/n`` onto the
    cone (:func:`project_row_stochastic_cone`); the support function of ``{R ≤ 1}`` is
    ``max(0, max_b Σ_r max_k W_b[r, k])``.
    """

    name = "row_stochastic_cone"

    def violation(self, z: torch.Tensor) -> float:
        """Negative entries and the spread of row sums, relative to the largest entry (0 inside the cone)."""
        scale = float(z.abs().max()) if z.numel() else 0.0
        if scale == 0.0:
            return 0.0
        sums = z.sum(-1)
        spread = float((sums.amax(-1) - sums.amin(-1)).max())
        return max(float((-z).clamp_min(0).max()), spread / z.shape[-1]) / scale

    def value(self, z: torch.Tensor) -> torch.Tensor:
        if self.violation(z) > 1e3 * torch.finfo(z.dtype).eps:
            return torch.tensor(float("inf"), dtype=z.dtype, device=z.device)
        return z.sum(dim=(-2, -1)).sum() / z.shape[-2]  # Σ_b mean row sum

    def prox(self, z: torch.Tensor, t: float) -> torch.Tensor:
        return project_row_stochastic_cone(z - t / z.shape[-2])

    def dual_norm(self, w: torch.Tensor) -> torch.Tensor:
        if w.numel() == 0:
            return torch.zeros((), dtype=w.dtype, device=w.device)
        return w.amax(-1).sum(-1).max().clamp_min(0.0)
