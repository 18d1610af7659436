"""The convexified attention layer of Ergen, Neyshabur & Mehta (2022) and the models built from it.

The paper replaces the data-dependent matrix ``softmax(X W_Q W_Kᵀ Xᵀ)`` by a trainable row-stochastic matrix
``W ∈ Δ`` shared by all samples (§3.1, eq. (4)); ``W_Q``, ``W_K`` and their weight decay disappear. Here:

* :class:`ConvexifiedAttention`: the layer, a drop-in for softmax self-attention inside a transformer block (a
  non-convex layer: the convexity is the paper's, of the program it leads to). Per head one row-stochastic
  token-mixing matrix (``max_len × max_len``), value and output projections. Call convention of the library's
  attention layers: ``layer(x (B, N, D), key_padding_mask (B, N) bool, True = padding) -> (B, N, D)``.
* Builders of the paper's three architectures from the layer (Fig. 1): :func:`attention_only_model`,
  :func:`attention_fc_model` (attention + FC with gated ReLU) and :func:`stacked_model` (a stack of such blocks). As in
  the paper there are no skip connections and no LayerNorm by default (both can be switched on).

Simplex parametrisations (:mod:`.simplex`): ``"softmax"`` (row-wise softmax of free logits: always on the simplex,
never exactly sparse) or ``"simplex"`` (the weights themselves; ``project_()`` puts them back on the simplex after an
optimiser step and reaches exact zeros). The non-convex twins of the token lasso are in :mod:`.token_lasso_twins`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .checks import check_attention_input
from .simplex import SimplexRows

__all__ = [
    "ConvexifiedAttention",
    "ConvexifiedAttentionBlock",
    "ConvexifiedAttentionStack",
    "GatedReLUFeedForward",
    "attention_fc_model",
    "attention_only_model",
    "stacked_model",
]


# ----------------------------------------------------------------------------------------------------------------
# The layer
# ----------------------------------------------------------------------------------------------------------------
class ConvexifiedAttention(nn.Module):
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
            raise ValueError("ConvexifiedAttention needs max_len: its mixing matrices are max_len × max_len")
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
        self.mixing = SimplexRows(init, parametrization, allowed).to(**kw)
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


class ConvexifiedAttentionBlock(nn.Module):
    """:class:`ConvexifiedAttention`, optionally followed by a token-wise FC layer (``ffn``: ``"gated_relu"``,
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
        self.attn = ConvexifiedAttention(
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


class ConvexifiedAttentionStack(nn.Module):
    """A stack of :class:`ConvexifiedAttentionBlock` s, ``(B, N, D) -> (B, N, D)``; :meth:`project_` projects every
    ``"simplex"`` mixing matrix."""

    def __init__(self, blocks: list[ConvexifiedAttentionBlock]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, key_padding_mask)
        return x

    def project_(self) -> None:
        for block in self.blocks:
            block.attn.project_()


def attention_only_model(
    embed_dim: int, num_heads: int, *, max_len: int, **kwargs: object
) -> ConvexifiedAttentionStack:
    """The paper's attention-only model (eq. (4)): one :class:`ConvexifiedAttention` layer, no FC layer."""
    return ConvexifiedAttentionStack(
        [ConvexifiedAttentionBlock(embed_dim, num_heads, max_len=max_len, ffn=None, **kwargs)]
    )


def attention_fc_model(embed_dim: int, num_heads: int, *, max_len: int, **kwargs: object) -> ConvexifiedAttentionStack:
    """The paper's attention + FC model with gated ReLU (§3.4): one block with a gated-ReLU FC layer."""
    kwargs.setdefault("ffn", "gated_relu")
    return ConvexifiedAttentionStack([ConvexifiedAttentionBlock(embed_dim, num_heads, max_len=max_len, **kwargs)])


def stacked_model(
    embed_dim: int, num_heads: int, depth: int, *, max_len: int, seed: int = 0, **kwargs: object
) -> ConvexifiedAttentionStack:
    """A stack of ``depth`` attention (+ FC, gated ReLU by default) blocks (the one- and two-layer models of §4);
    block ``l`` draws its gates with ``seed + l``."""
    if int(depth) < 1:
        raise ValueError(f"depth must be >= 1, got {depth!r}")
    kwargs.setdefault("ffn", "gated_relu")
    return ConvexifiedAttentionStack(
        [
            ConvexifiedAttentionBlock(embed_dim, num_heads, max_len=max_len, seed=seed + i, **kwargs)
            for i in range(depth)
        ]
    )
