"""The non-convex twins of the token-lasso programs of Ergen, Neyshabur & Mehta (2022)
(:mod:`attnduality.convex.estimators.token_lasso`), each with a ``weight_decay()`` so that
``loss + β · weight_decay()`` is the paper's regularised objective: :class:`AttentionOnlyNet` (eq. (8), (11); the
"attention-only" model), :class:`AttentionGatedFCNet` (attention followed by an FC layer with gated ReLU, §3.4; its
equations are not public, so the model is derived here) and :class:`SequenceAttentionNet` (sequence outputs, App. A.7
eq. (30)). Their attention rows are one-hot, so the recovered twins use the ``"simplex"`` parametrisation.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .simplex import SimplexRows, check_output_norm, output_decay, uniform_rows

__all__ = ["AttentionGatedFCNet", "AttentionOnlyNet", "SequenceAttentionNet"]


# ----------------------------------------------------------------------------------------------------------------
# Non-convex twins of the convex programs (token pooling heads)
# ----------------------------------------------------------------------------------------------------------------
class AttentionOnlyNet(nn.Module):
    """``f(X) = Σ_j (w_jᵀ X v_j) b_jᵀ`` with attention rows ``w_j ∈ Δ_n`` (eq. (8); (11) for c > 1).

    ``rows`` (h, n), ``v`` (h, d), ``b`` (h, c). :meth:`weight_decay` is ``½ Σ_j (‖v_j‖² + ‖b_j‖²)`` with
    ``output_norm="l2"`` (the twin of the per-token nuclear norm, derived here) or
    ``½ Σ_j (‖v_j‖² + ‖b_j‖_1²)`` with ``"l1"`` (eq. (11), the twin of (12)); both are eq. (8) when c = 1.
    """

    def __init__(
        self,
        rows: torch.Tensor,
        v: torch.Tensor,
        b: torch.Tensor,
        *,
        output_norm: str = "l2",
        parametrization: str = "simplex",
    ) -> None:
        super().__init__()
        if rows.ndim != 2 or v.ndim != 2 or b.ndim != 2 or not (rows.shape[0] == v.shape[0] == b.shape[0]):
            raise ValueError(
                f"expected rows (h, n), v (h, d), b (h, c); got {tuple(rows.shape)}, {tuple(v.shape)}, {tuple(b.shape)}"
            )
        self.output_norm = check_output_norm(output_norm)
        self.rows = SimplexRows(rows, parametrization)
        self.v = nn.Parameter(v.clone())
        self.b = nn.Parameter(b.clone())

    @classmethod
    def random(
        cls, n_tokens: int, n_features: int, n_heads: int, n_outputs: int = 1, *, seed: int = 0, **kwargs: object
    ) -> AttentionOnlyNet:
        """Uniform attention rows, Gaussian ``v`` and ``b`` scaled by ``1/√d`` and ``1/√h``."""
        gen = torch.Generator().manual_seed(int(seed))
        dtype = torch.get_default_dtype()
        rows = uniform_rows((n_heads, n_tokens), dtype)
        v = torch.randn(n_heads, n_features, generator=gen) / math.sqrt(n_features)
        b = torch.randn(n_heads, n_outputs, generator=gen) / math.sqrt(max(n_heads, 1))
        return cls(rows, v, b, **kwargs)

    def attention(self) -> torch.Tensor:
        """The attention rows (h, n)."""
        return self.rows.weights()

    def head_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """``w_jᵀ X v_j`` for every sample and head, (N, h)."""
        pooled = torch.einsum("hk,nkq->nhq", self.attention().to(x.dtype), x)
        return (pooled * self.v).sum(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_outputs(x) @ self.b

    def weight_decay(self) -> torch.Tensor:
        return 0.5 * (self.v.square().sum() + output_decay(self.b, self.output_norm))

    def project_(self) -> None:
        self.rows.project_()

    @property
    def n_heads(self) -> int:
        return int(self.v.shape[0])


class AttentionGatedFCNet(AttentionOnlyNet):
    """Attention followed by an FC layer with gated ReLU (§3.4; reconstructed here, its equations not being public):
    ``f(X) = Σ_j 1{a_jᵀ g_j ≥ 0} (a_jᵀ u_j) α_jᵀ`` with the pooled token ``a_j = Xᵀ w_j``, ``w_j ∈ Δ_n``, and a
    fixed gate ``g_j`` (buffer ``gates`` (h, d)). ``v`` holds ``u`` and ``b`` holds ``α``; weight decay as for
    :class:`AttentionOnlyNet`. The convex program equals this model at one-hot rows (which recovery produces) and
    lower-bounds the relaxation that gates each token before pooling."""

    def __init__(
        self,
        rows: torch.Tensor,
        gates: torch.Tensor,
        v: torch.Tensor,
        b: torch.Tensor,
        *,
        output_norm: str = "l2",
        parametrization: str = "simplex",
    ) -> None:
        super().__init__(rows, v, b, output_norm=output_norm, parametrization=parametrization)
        if gates.shape != v.shape:
            raise ValueError(f"gates {tuple(gates.shape)} and v {tuple(v.shape)} must have the same shape (h, d)")
        self.register_buffer("gates", gates.clone())

    def head_outputs(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.einsum("hk,nkq->nhq", self.attention().to(x.dtype), x)
        mask = ((pooled * self.gates.to(x.dtype)).sum(-1) >= 0).to(x.dtype)
        return mask * (pooled * self.v).sum(-1)


class SequenceAttentionNet(nn.Module):
    """Sequence outputs (App. A.7, eq. (30)): ``F(X) = Σ_j b_j W_j X V_j`` (n, c), ``W_j ∈ Δ`` (n × n).

    ``mixing`` (h, n, n) row-stochastic, ``v`` (h, d, c), ``b`` (h,); :meth:`weight_decay` is
    ``½ Σ_j (‖V_j‖_1² + b_j²)`` with the entrywise ℓ1 norm. ``flatten_output=True`` returns (N, n·c) (row-major),
    the layout of the convex operator and of the estimators' targets.
    """

    def __init__(
        self,
        mixing: torch.Tensor,
        v: torch.Tensor,
        b: torch.Tensor,
        *,
        parametrization: str = "simplex",
        flatten_output: bool = False,
    ) -> None:
        super().__init__()
        if mixing.ndim != 3 or v.ndim != 3 or b.ndim != 1 or not (mixing.shape[0] == v.shape[0] == b.shape[0]):
            raise ValueError(
                f"expected mixing (h, n, n), v (h, d, c), b (h,); got {tuple(mixing.shape)}, {tuple(v.shape)}, "
                f"{tuple(b.shape)}"
            )
        self.mixing = SimplexRows(mixing, parametrization)
        self.v = nn.Parameter(v.clone())
        self.b = nn.Parameter(b.clone())
        self.flatten_output = bool(flatten_output)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.mixing.weights().to(x.dtype)
        out = torch.einsum("h,hrk,nkq,hql->nrl", self.b, w, x, self.v)
        return out.reshape(out.shape[0], -1) if self.flatten_output else out

    def weight_decay(self) -> torch.Tensor:
        return 0.5 * (self.v.abs().sum(dim=(1, 2)).square().sum() + self.b.square().sum())

    def project_(self) -> None:
        self.mixing.project_()

    @property
    def n_heads(self) -> int:
        return int(self.b.shape[0])
