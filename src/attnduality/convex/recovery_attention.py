"""Convex attention-style solutions as non-convex multi-head networks, and back (Sahiner et al. Thm 3.1, 4.1, 4.4,
4.7 and their gated analogues; digest §2.2, §3.2, §4.2).

Every lifted block is a sum of rank-one terms ``Z = Σ_h a_h b_hᵀ``; recovery takes the SVD ``Z = Σ_r σ_r u_r v_rᵀ``
and sets ``a_r = √σ_r u_r``, ``b_r = √σ_r v_r``, so ``½(‖a_r‖² + ‖b_r‖²) = σ_r`` and the recovered weight decay
equals the (block) nuclear norm. Zero singular values are pruned; for gated (or grouped) heads each block is
factored on its own and blocks with fewer heads are padded with zero heads (which change neither the output nor the
weight decay). The vectors map to weights as follows:

* attention: ``Z = Σ_h vec_F(W1_h) vec_F(W2_hᵀ)ᵀ`` (d², d·c): ``W1 = reshape_F(a, (d, d))``,
  ``W2 = reshape_F(b, (c, d))ᵀ``;
* MLP-Mixer: ``Z = Σ_h vec_F(W1_h) vec_F(W2_h)ᵀ`` (s², d·c): ``W1 = reshape_F(a, (s, s))``,
  ``W2 = reshape_F(b, (d, c))``;
* (B-)FNO: ``Z_b = Σ_h w1_{bh} w2_{bh}ᵀ`` (s·d_b, c_b) with ``w1`` read row-major as (s, d_b) (``[δ, k]``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..nn.attention_heads import (
    GatedAttentionHead,
    GatedFNOHead,
    GatedMixerHead,
    LinearAttentionHead,
    LinearFNOHead,
    LinearMixerHead,
)

__all__ = [
    "attention_weights_to_z",
    "gated_attention_weights_to_z",
    "attention_heads_from_z",
    "linear_attention_to_module",
    "gated_attention_to_module",
    "mixer_weights_to_z",
    "mixer_heads_from_z",
    "linear_mixer_to_module",
    "gated_mixer_to_module",
    "fno_weights_to_z",
    "linear_fno_to_module",
    "gated_fno_to_module",
]


def _factor(z: torch.Tensor, tol: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(√σ u, √σ v)`` as (r, p) and (r, q) for the singular values of ``z`` (p, q) above ``tol``.

    Default ``tol``: ``σ_max · min(p, q) · eps``.
    """
    u, s, vh = torch.linalg.svd(z, full_matrices=False)
    cut = (
        (float(s.max()) * max(s.shape[-1], 1) * torch.finfo(s.dtype).eps if s.numel() else 0.0) if tol is None else tol
    )
    keep = s > cut
    root = torch.sqrt(s[keep])
    return (u[:, keep] * root).T, vh[keep] * root[:, None]


def _stack_padded(blocks: list[tuple[torch.Tensor, ...]], lead: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    """Stack per-block head tensors (r_i, ...) into (*lead, max r_i, ...), padding with zero heads."""
    h = max(t[0].shape[0] for t in blocks)
    out = []
    for pos in range(len(blocks[0])):
        ref = blocks[0][pos]
        buf = torch.zeros(len(blocks), h, *ref.shape[1:], dtype=ref.dtype, device=ref.device)
        for i, tensors in enumerate(blocks):
            buf[i, : tensors[pos].shape[0]] = tensors[pos]
        out.append(buf.reshape(*lead, h, *ref.shape[1:]))
    return tuple(out)


# ---------------------------------------------------------------------------------------------------------------
# Self-attention (Thm 3.1)
# ---------------------------------------------------------------------------------------------------------------
def attention_weights_to_z(w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """``Z = Σ_h vec_F(W1_h) vec_F(W2_hᵀ)ᵀ`` (d², d·c) for ``w1`` (h, d, d) and ``w2`` (h, d, c)."""
    d, c = w1.shape[-1], w2.shape[-1]
    return torch.einsum("hak,hlb->kalb", w1, w2).reshape(d * d, d * c)


def gated_attention_weights_to_z(w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """One lifted block per gate: (m, d², d·c) for ``w1`` (m, h, d, d) and ``w2`` (m, h, d, c)."""
    m, d, c = w1.shape[0], w1.shape[-1], w2.shape[-1]
    return torch.einsum("jhak,jhlb->jkalb", w1, w2).reshape(m, d * d, d * c)


def attention_heads_from_z(
    z: torch.Tensor, n_features: int, tol: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Heads ``(w1 (r, d, d), w2 (r, d, c))`` of one lifted block ``z`` (d², d·c), ``r`` = numerical rank."""
    d = int(n_features)
    if z.ndim != 2 or z.shape[0] != d * d or z.shape[1] % d:
        raise ValueError(f"z must be (d², d·c) with d = {d}, got {tuple(z.shape)}")
    c = z.shape[1] // d
    a, b = _factor(z, tol)
    # reshape_F(a, (d, d)) = a.reshape(d, d).T ; reshape_F(b, (c, d))ᵀ = b.reshape(d, c)
    return a.reshape(-1, d, d).transpose(1, 2), b.reshape(-1, d, c)


def linear_attention_to_module(z: torch.Tensor, scale: float = 1.0, tol: float | None = None) -> LinearAttentionHead:
    """The multi-head linear attention twin of a solution ``z`` (d², d·c) of Thm 3.1 (one head per singular value)."""
    d = round(z.shape[0] ** 0.5)
    w1, w2 = attention_heads_from_z(z, d, tol)
    return LinearAttentionHead(w1, w2, scale=scale)


def gated_attention_to_module(
    z: torch.Tensor, gates: torch.Tensor, scale: float = 1.0, tol: float | None = None
) -> GatedAttentionHead:
    """The gated attention twin of a solution ``z`` (m, d², d·c) with gates (m, d, d)."""
    m, d = gates.shape[0], gates.shape[1]
    if z.ndim != 3 or z.shape[0] != m:
        raise ValueError(f"z must be (m, d², d·c) with m = {m}, got {tuple(z.shape)}")
    w1, w2 = _stack_padded([attention_heads_from_z(z[j], d, tol) for j in range(m)], (m,))
    return GatedAttentionHead(gates.to(z.dtype), w1, w2, scale=scale)


# ---------------------------------------------------------------------------------------------------------------
# MLP-Mixer (Thm 4.1)
# ---------------------------------------------------------------------------------------------------------------
def mixer_weights_to_z(w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """``Z = Σ_h vec_F(W1_h) vec_F(W2_h)ᵀ`` (s², d·c) for ``w1`` (…, h, s, s), ``w2`` (…, h, d, c); batched."""
    s, d, c = w1.shape[-1], w2.shape[-2], w2.shape[-1]
    z = torch.einsum("...hrt,...hkp->...trpk", w1, w2)
    return z.reshape(*z.shape[:-4], s * s, d * c)


def mixer_heads_from_z(
    z: torch.Tensor, n_tokens: int, n_features: int, tol: float | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Heads ``(w1 (r, s, s), w2 (r, d, c))`` of one lifted Mixer block ``z`` (s², d·c), ``r`` = numerical rank."""
    return _mixer_heads(z, int(n_tokens), int(n_features), tol)


def linear_mixer_to_module(z: torch.Tensor, n_features: int, tol: float | None = None) -> LinearMixerHead:
    """The linear Mixer twin of a solution ``z`` (s², d·c) of Thm 4.1."""
    s = round(z.shape[0] ** 0.5)
    w1, w2 = _mixer_heads(z, s, int(n_features), tol)
    return LinearMixerHead(w1, w2)


def _mixer_heads(z: torch.Tensor, s: int, d: int, tol: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    if z.ndim != 2 or z.shape[0] != s * s or z.shape[1] % d:
        raise ValueError(f"z must be (s², d·c) with s = {s}, d = {d}, got {tuple(z.shape)}")
    c = z.shape[1] // d
    a, b = _factor(z, tol)
    # reshape_F(a, (s, s)) = a.reshape(s, s).T ; reshape_F(b, (d, c)) = b.reshape(c, d).T
    return a.reshape(-1, s, s).transpose(1, 2), b.reshape(-1, c, d).transpose(1, 2)


def gated_mixer_to_module(
    z: torch.Tensor, gates: torch.Tensor, n_features: int, tol: float | None = None
) -> GatedMixerHead:
    """The gated Mixer twin of a solution ``z`` (m, s², d·c) with gates (m, s, s)."""
    m, s = gates.shape[0], gates.shape[1]
    if z.ndim != 3 or z.shape[0] != m:
        raise ValueError(f"z must be (m, s², d·c) with m = {m}, got {tuple(z.shape)}")
    w1, w2 = _stack_padded([_mixer_heads(z[j], s, int(n_features), tol) for j in range(m)], (m,))
    return GatedMixerHead(gates.to(z.dtype), w1, w2)


# ---------------------------------------------------------------------------------------------------------------
# (B-)FNO (Thm 4.4, 4.7)
# ---------------------------------------------------------------------------------------------------------------
def fno_weights_to_z(w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """``Z_{b(,j)} = Σ_h w1_h w2_hᵀ`` for ``w1`` (…, h, s, d_b), ``w2`` (…, h, c_b): (…, s·d_b, c_b)."""
    z = torch.einsum("...hek,...hp->...ekp", w1, w2)
    return z.reshape(*z.shape[:-3], z.shape[-3] * z.shape[-2], z.shape[-1])


def _fno_heads(z: torch.Tensor, s: int, tol: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _factor(z, tol)
    return a.reshape(-1, s, z.shape[0] // s), b


def linear_fno_to_module(
    z: torch.Tensor, n_tokens: int, grid: Sequence[int] | None = None, tol: float | None = None
) -> LinearFNOHead:
    """The linear (B-)FNO twin of a solution ``z`` (B, s·d_b, c_b) of Thm 4.4/4.7."""
    if z.ndim != 3 or z.shape[1] % n_tokens:
        raise ValueError(f"z must be (B, s·d_b, c_b) with s = {n_tokens}, got {tuple(z.shape)}")
    bb = z.shape[0]
    w1, w2 = _stack_padded([_fno_heads(z[b], n_tokens, tol) for b in range(bb)], (bb,))
    return LinearFNOHead(w1, w2, grid=grid)


def gated_fno_to_module(
    z: torch.Tensor, gates: torch.Tensor, grid: Sequence[int] | None = None, tol: float | None = None
) -> GatedFNOHead:
    """The gated (B-)FNO twin of a solution ``z`` (B, m, s·d_b, c_b) with gates (B, m, s, d_b)."""
    bb, m, s = gates.shape[0], gates.shape[1], gates.shape[2]
    if z.ndim != 4 or z.shape[:2] != (bb, m):
        raise ValueError(f"z must be (B, m, s·d_b, c_b) with B, m = {bb}, {m}, got {tuple(z.shape)}")
    blocks = [_fno_heads(z[b, j], s, tol) for b in range(bb) for j in range(m)]
    w1, w2 = _stack_padded(blocks, (bb, m))
    return GatedFNOHead(gates.to(z.dtype), w1, w2, grid=grid)
