"""ConvexAttention (a non-convex layer), the models built from it, and the non-convex twins of the token lasso.

The "convex alternative to self-attention" of Ergen, Neyshabur & Mehta (2022) and the paper's models.

The paper replaces the data-dependent matrix ``softmax(X W_Q W_Kᵀ Xᵀ)`` by a trainable row-stochastic matrix
``W ∈ Δ`` shared by all samples (§3.1, eq. (4)); ``W_Q``, ``W_K`` and their weight decay disappear. Here:

* :class:`ConvexAttention` — the layer, a drop-in for softmax self-attention inside a transformer block: per head one
  row-stochastic token-mixing matrix (``max_len × max_len``), value and output projections. Call convention of the
  library's attention layers: ``layer(x (B, N, D), key_padding_mask (B, N) bool, True = padding) -> (B, N, D)``.
* The non-convex twins of the convex programs of :mod:`attnduality.convex.estimators.token_lasso`, each with a
  ``weight_decay()`` so that ``loss + β · weight_decay()`` is the paper's regularised objective:
  :class:`AttentionOnlyNet` (eq. (8), (11); the "attention-only" model), :class:`AttentionGatedFCNet` (attention
  followed by an FC layer with gated ReLU, §3.4; its equations are not public, so the model is derived here) and
  :class:`SequenceAttentionNet` (sequence outputs, App. A.7 eq. (30)).
* Builders of the paper's three architectures from the layer (Fig. 1): :func:`attention_only_model`,
  :func:`attention_fc_model` (attention + FC with gated ReLU) and :func:`stacked_model` (a stack of such blocks). As in
  the paper there are no skip connections and no LayerNorm by default (both can be switched on).

Simplex parametrisations: ``"softmax"`` (row-wise softmax of free logits: always on the simplex, never
exactly sparse) or ``"simplex"`` (the weights themselves; :meth:`project_` puts them back on the simplex after an
optimiser step, by the sort-based Euclidean projection of Duchi et al. 2008, and reaches exact zeros; the recovered
twins use it because their attention rows are one-hot).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .checks import check_attention_input

__all__ = [
    "AttentionGatedFCNet",
    "AttentionOnlyNet",
    "ConvexAttention",
    "ConvexAttentionBlock",
    "ConvexAttentionStack",
    "GatedReLUFeedForward",
    "SequenceAttentionNet",
    "attention_fc_model",
    "attention_only_model",
    "project_rows_to_simplex",
    "stacked_model",
]

_PARAMETRIZATIONS = ("softmax", "simplex")
_OUTPUT_NORMS = ("l1", "l2")


def project_rows_to_simplex(w: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """Euclidean projection of every row (last axis) onto the probability simplex (Duchi et al. 2008).

    With a boolean ``allowed`` (broadcastable to ``w``), each row is projected onto the face of the simplex
    supported on its allowed entries (the others are set to 0); a row with no allowed entry becomes 0.
    """
    if allowed is not None:
        allowed = allowed.expand_as(w)
        w = torch.where(allowed, w, torch.full_like(w, -math.inf))
    u, _ = torch.sort(w, dim=-1, descending=True)
    finite = torch.isfinite(u)
    css = torch.where(finite, u, torch.zeros_like(u)).cumsum(-1) - 1.0
    k = torch.arange(1, w.shape[-1] + 1, device=w.device, dtype=w.dtype)
    cond = finite & (u - css / k > 0)
    rho = cond.to(w.dtype).cumsum(-1).argmax(-1, keepdim=True)  # the last index where cond holds
    theta = css.gather(-1, rho) / (rho + 1).to(w.dtype)
    out = torch.clamp(w - theta, min=0.0)
    out = torch.where(torch.isfinite(out), out, torch.zeros_like(out))
    if allowed is not None:
        out = out * cond.any(-1, keepdim=True).to(w.dtype)
    return out


class _Simplex(nn.Module):
    """Rows ``(…, n)`` on the probability simplex, as softmax logits or as the weights themselves."""

    def __init__(self, weights: torch.Tensor, parametrization: str, allowed: torch.Tensor | None = None) -> None:
        super().__init__()
        if parametrization not in _PARAMETRIZATIONS:
            raise ValueError(f"parametrization must be one of {_PARAMETRIZATIONS}, got {parametrization!r}")
        self.parametrization = parametrization
        if allowed is None:
            self.allowed = None
        else:
            self.register_buffer("allowed", allowed.clone())
        w = project_rows_to_simplex(weights.detach(), self.allowed)
        if parametrization == "softmax":  # logits log(w): zero weights become (finite) logits of weight ~1e-308
            self.param = nn.Parameter(torch.log(w.clamp_min(torch.finfo(w.dtype).tiny)))
        else:
            self.param = nn.Parameter(w)

    def logits(self) -> torch.Tensor:
        if self.allowed is None:
            return self.param
        return self.param.masked_fill(~self.allowed, -math.inf)

    def weights(self) -> torch.Tensor:
        """The rows, each on the simplex (for ``"simplex"`` after :meth:`project_`)."""
        if self.parametrization == "softmax":
            return torch.softmax(self.logits(), dim=-1)
        return self.param if self.allowed is None else self.param * self.allowed

    @torch.no_grad()
    def project_(self) -> None:
        """Put ``"simplex"`` weights back on the simplex (no-op for ``"softmax"``)."""
        if self.parametrization == "simplex":
            self.param.copy_(project_rows_to_simplex(self.param, self.allowed))


def _uniform_rows(shape: tuple[int, ...], dtype: torch.dtype | None = None) -> torch.Tensor:
    return torch.full(shape, 1.0 / shape[-1], dtype=dtype)


def _check_norm(output_norm: str) -> str:
    if output_norm not in _OUTPUT_NORMS:
        raise ValueError(f"output_norm must be one of {_OUTPUT_NORMS}, got {output_norm!r}")
    return output_norm


def _output_decay(b: torch.Tensor, output_norm: str) -> torch.Tensor:
    """``Σ_j ‖b_j‖²`` (``"l2"``) or ``Σ_j ‖b_j‖_1²`` (``"l1"``, eq. (11)) over the rows ``b_j`` of ``b``."""
    if output_norm == "l1":
        return b.abs().sum(-1).square().sum()
    return b.square().sum()


# ----------------------------------------------------------------------------------------------------------------
# The layer
# ----------------------------------------------------------------------------------------------------------------
class ConvexAttention(nn.Module):
    """Self-attention with a trainable, input-independent row-stochastic mixing matrix per head (eq. (4)).

    ``out = concat_h(W_h[:N, :N] · X W_V^{(h)}) W_O``: ``W_h ∈ Δ`` (``max_len × max_len``, rows on the simplex)
    replaces ``softmax(X W_Q W_Kᵀ Xᵀ)``. For ``N < max_len`` the top-left block is used with its rows renormalised
    (positions past ``N`` act as padding); padded keys get weight 0 and rows are renormalised over the real keys, so
    the values at padded positions never reach real tokens, and right padding gives the same outputs as the unpadded
    shorter sequence. With ``causal=True`` the matrices are lower triangular (and still row-stochastic). A row whose
    allowed keys carry no mass (possible only with ``"simplex"`` weights, which reach exact zeros) falls back to the
    uniform row over its allowed keys, so every row stays on the simplex.

    Parameters: ``embed_dim`` D (divisible by ``num_heads``), ``num_heads``, ``max_len`` (required: the mixing
    matrices are ``max_len × max_len``), ``causal``, ``bias`` (of the projections), ``parametrization``
    (``"softmax"`` or ``"simplex"``, see the module docstring), ``dropout`` on the mixing weights, ``device``,
    ``dtype``. Bad input (shapes, dtypes, NaN/inf, N > max_len, an all-padding sequence) raises ``ValueError``.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        max_len: int | None = None,
        causal: bool = False,
        bias: bool = True,
        parametrization: str = "softmax",
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, val in (("embed_dim", embed_dim), ("num_heads", num_heads)):
            if not isinstance(val, int) or isinstance(val, bool) or val < 1:
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
        if max_len is None:
            raise ValueError("ConvexAttention needs max_len: its mixing matrices are max_len × max_len")
        if not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 1:
            raise ValueError(f"max_len must be a positive int, got {max_len!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.embed_dim, self.num_heads, self.max_len = embed_dim, num_heads, max_len
        self.head_dim = embed_dim // num_heads
        self.causal = bool(causal)
        kw: dict[str, object] = {"device": device, "dtype": dtype}
        allowed = torch.ones(max_len, max_len, dtype=torch.bool).tril() if self.causal else None
        # near-uniform rows (softmax of small Gaussian logits) so that heads start apart
        init = torch.softmax(0.02 * torch.randn(num_heads, max_len, max_len), dim=-1)
        self.mixing = _Simplex(init, parametrization, allowed).to(**kw)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **kw)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **kw)
        self.dropout = nn.Dropout(dropout)

    def _check_input(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None) -> None:
        """The registry's input rules (:func:`~attnduality.nn.checks.check_attention_input`), and ``N ≤ max_len``."""
        check_attention_input(x, key_padding_mask, self.embed_dim)
        if x.shape[1] > self.max_len:
            raise ValueError(f"sequence length {x.shape[1]} exceeds max_len={self.max_len}")

    def mixing_weights(self, n: int | None = None, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The mixing matrices used for length ``n``: (H, n, n), or (B, H, n, n) with a padding mask."""
        n = self.max_len if n is None else int(n)
        if n > self.max_len:
            raise ValueError(f"sequence length {n} exceeds max_len={self.max_len}")
        allowed = None if key_padding_mask is None else (~key_padding_mask)[:, None, None, :]  # (B, 1, 1, n)
        if self.mixing.parametrization == "softmax":
            logits = self.mixing.logits()[:, :n, :n]
            if allowed is not None:
                logits = logits.masked_fill(~allowed, -math.inf)
            return torch.nan_to_num(torch.softmax(logits, dim=-1), nan=0.0)  # rows with no allowed key: 0
        w = self.mixing.weights()[:, :n, :n]
        keep = torch.ones(n, n, dtype=torch.bool, device=w.device)
        if self.causal:
            keep = keep.tril()
        if allowed is not None:
            keep = keep & allowed
            w = w * allowed
        s = w.sum(-1, keepdim=True)
        uniform = keep.to(w.dtype) / keep.sum(-1, keepdim=True).clamp_min(1).to(w.dtype)
        return torch.where(s > 0, w / torch.where(s > 0, s, torch.ones_like(s)), uniform)

    def attention_matrix(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The row-stochastic (B, H, N, N) matrices applied to ``x`` (input-independent apart from the padding)."""
        self._check_input(x, key_padding_mask)
        w = self.mixing_weights(x.shape[1], key_padding_mask).to(x.dtype)
        return w.expand(x.shape[0], *w.shape[-3:])

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        self._check_input(x, key_padding_mask)
        b, n, _ = x.shape
        w = self.dropout(self.mixing_weights(n, key_padding_mask).to(x.dtype))
        v = self.v_proj(x).view(b, n, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, N, Dh)
        out = (w @ v).transpose(1, 2).reshape(b, n, self.embed_dim)
        return self.out_proj(out)

    def project_(self) -> None:
        """Projected-gradient step for ``parametrization="simplex"``: rows back onto the simplex."""
        self.mixing.project_()


# ----------------------------------------------------------------------------------------------------------------
# Blocks and stacks: the paper's three architectures
# ----------------------------------------------------------------------------------------------------------------
class GatedReLUFeedForward(nn.Module):
    """Token-wise FC layer with gated ReLU: ``x ↦ (1{x G ≥ 0} ⊙ (x U)) W2`` with fixed random gates ``G``
    (D, hidden), drawn from N(0, I) with ``seed`` (Fiat et al. 2019; the gated-ReLU model of §3.4)."""

    def __init__(self, embed_dim: int, hidden_dim: int, out_dim: int | None = None, *, seed: int = 0) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(int(seed))
        self.register_buffer("gates", torch.randn(embed_dim, hidden_dim, generator=gen))
        self.fc1 = nn.Linear(embed_dim, hidden_dim, bias=False)
        self.fc2 = nn.Linear(hidden_dim, embed_dim if out_dim is None else out_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = (x @ self.gates.to(x.dtype) >= 0).to(x.dtype)
        return self.fc2(mask * self.fc1(x))


class ConvexAttentionBlock(nn.Module):
    """:class:`ConvexAttention`, optionally followed by a token-wise FC layer (``ffn``: ``"gated_relu"``,
    ``"relu"`` or ``None``); skip connections and LayerNorm are off by default, as in the paper."""

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        max_len: int,
        ffn: str | None = "gated_relu",
        hidden_dim: int | None = None,
        causal: bool = False,
        residual: bool = False,
        layer_norm: bool = False,
        parametrization: str = "softmax",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if ffn not in ("gated_relu", "relu", None):
            raise ValueError(f"ffn must be 'gated_relu', 'relu' or None, got {ffn!r}")
        self.attn = ConvexAttention(
            embed_dim, num_heads, max_len=max_len, causal=causal, parametrization=parametrization
        )
        hidden = 4 * embed_dim if hidden_dim is None else int(hidden_dim)
        self.ffn: nn.Module | None
        if ffn == "gated_relu":
            self.ffn = GatedReLUFeedForward(embed_dim, hidden, seed=seed)
        elif ffn == "relu":
            self.ffn = nn.Sequential(nn.Linear(embed_dim, hidden), nn.ReLU(), nn.Linear(hidden, embed_dim))
        else:
            self.ffn = None
        self.residual = bool(residual)
        self.norm1 = nn.LayerNorm(embed_dim) if layer_norm else nn.Identity()
        self.norm2 = nn.LayerNorm(embed_dim) if layer_norm and ffn is not None else nn.Identity()

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.attn(self.norm1(x), key_padding_mask)
        x = x + h if self.residual else h
        if self.ffn is not None:
            h = self.ffn(self.norm2(x))
            x = x + h if self.residual else h
        return x


class ConvexAttentionStack(nn.Module):
    """A stack of :class:`ConvexAttentionBlock` s, ``(B, N, D) -> (B, N, D)``; :meth:`project_` projects every
    ``"simplex"`` mixing matrix."""

    def __init__(self, blocks: list[ConvexAttentionBlock]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, key_padding_mask)
        return x

    def project_(self) -> None:
        for block in self.blocks:
            block.attn.project_()


def attention_only_model(embed_dim: int, num_heads: int, *, max_len: int, **kwargs: object) -> ConvexAttentionStack:
    """The paper's attention-only model (eq. (4)): one :class:`ConvexAttention` layer, no FC layer."""
    return ConvexAttentionStack([ConvexAttentionBlock(embed_dim, num_heads, max_len=max_len, ffn=None, **kwargs)])


def attention_fc_model(embed_dim: int, num_heads: int, *, max_len: int, **kwargs: object) -> ConvexAttentionStack:
    """The paper's attention + FC model with gated ReLU (§3.4): one block with a gated-ReLU FC layer."""
    kwargs.setdefault("ffn", "gated_relu")
    return ConvexAttentionStack([ConvexAttentionBlock(embed_dim, num_heads, max_len=max_len, **kwargs)])


def stacked_model(
    embed_dim: int, num_heads: int, depth: int, *, max_len: int, seed: int = 0, **kwargs: object
) -> ConvexAttentionStack:
    """A stack of ``depth`` attention (+ FC, gated ReLU by default) blocks (the one- and two-layer models of §4);
    block ``l`` draws its gates with ``seed + l``."""
    if int(depth) < 1:
        raise ValueError(f"depth must be >= 1, got {depth!r}")
    kwargs.setdefault("ffn", "gated_relu")
    return ConvexAttentionStack(
        [ConvexAttentionBlock(embed_dim, num_heads, max_len=max_len, seed=seed + i, **kwargs) for i in range(depth)]
    )


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
                f"expected rows (h, n), v (h, d), b (h, c); got {tuple(rows.shape)}, {tuple(v.shape)}, "
                f"{tuple(b.shape)}"
            )
        self.output_norm = _check_norm(output_norm)
        self.rows = _Simplex(rows, parametrization)
        self.v = nn.Parameter(v.clone())
        self.b = nn.Parameter(b.clone())

    @classmethod
    def random(
        cls, n_tokens: int, n_features: int, n_heads: int, n_outputs: int = 1, *, seed: int = 0, **kwargs: object
    ) -> AttentionOnlyNet:
        """Uniform attention rows, Gaussian ``v`` and ``b`` scaled by ``1/√d`` and ``1/√h``."""
        gen = torch.Generator().manual_seed(int(seed))
        dtype = torch.get_default_dtype()
        rows = _uniform_rows((n_heads, n_tokens), dtype)
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
        return 0.5 * (self.v.square().sum() + _output_decay(self.b, self.output_norm))

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
        self.mixing = _Simplex(mixing, parametrization)
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
