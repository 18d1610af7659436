"""Convex attention-style solutions as non-convex multi-head networks, and back (Sahiner et al. Thm 3.1, 4.1, 4.4,
4.7 and their gated analogues; the SVD maps are derived here).

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
from dataclasses import dataclass

import torch

from ..nn.token_twins import (
    GatedAttentionHead,
    GatedFNOHead,
    GatedMixerHead,
    LinearAttentionHead,
    LinearFNOHead,
    LinearMixerHead,
    ReLUAttentionHead,
)

__all__ = [
    "attention_weights_to_z",
    "gated_attention_weights_to_z",
    "attention_heads_from_z",
    "linear_attention_to_module",
    "gated_attention_to_module",
    "AttentionFactors",
    "attention_factors",
    "cone_shift",
    "cone_split",
    "relu_attention_from_gated",
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


@dataclass(frozen=True)
class AttentionFactors:
    """Per-head query, key, value and output factors with ``W1_h = Q_h K_hᵀ`` and ``W2_h = V_h W_h`` (eq. (10)–(11)).

    ``q``, ``k`` (…, h, d, r1); ``v`` (…, h, d, r2); ``w`` (…, h, r2, c); ranks padded with zero columns.
    """

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    w: torch.Tensor

    def merged(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Q Kᵀ, V W)``: the merged weights ``(W1, W2)`` again."""
        return self.q @ self.k.mT, self.v @ self.w


def _balanced(a: torch.Tensor, tol: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``a = L Rᵀ`` with ``L = U S^{1/2}``, ``R = V S^{1/2}`` (batched; columns below ``tol`` zeroed)."""
    u, s, vh = torch.linalg.svd(a, full_matrices=False)
    top = s.amax(dim=-1, keepdim=True)
    cut = top * max(a.shape[-2:]) * torch.finfo(a.dtype).eps if tol is None else torch.full_like(top, tol)
    root = torch.where(s > cut, s, torch.zeros_like(s)).sqrt()
    return u * root.unsqueeze(-2), vh.mT * root.unsqueeze(-2)


def attention_factors(w1: torch.Tensor, w2: torch.Tensor, tol: float | None = None) -> AttentionFactors:
    """Multi-head factors ``Q, K, V, W`` of merged attention weights ``w1`` (…, h, d, d), ``w2`` (…, h, d, c).

    The paper's equivalence is on the merged weights ``W1 = QKᵀ``, ``W2 = VW`` (eq. (11)); any factorisation
    gives the same network. This one is the balanced SVD split (``Q = U√S``, ``K = V√S``), which minimises
    ``½(‖Q‖² + ‖K‖²) = ‖W1‖_*`` among all factorisations (likewise for ``V, W``).
    """
    if w1.shape[-1] != w1.shape[-2] or w2.shape[:-1] != w1.shape[:-1]:
        raise ValueError(f"expected w1 (…, h, d, d) and w2 (…, h, d, c), got {tuple(w1.shape)}, {tuple(w2.shape)}")
    q, k = _balanced(w1, tol)
    v, wt = _balanced(w2, tol)
    return AttentionFactors(q, k, v, wt.mT)


_CONE_CHUNK = 1 << 22  # score entries per chunk in the cone shift


def cone_shift(w1: torch.Tensor, gate: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The smallest ``τ_h ≥ 0`` with ``W1_h + τ_h U`` in the cone ``K_U`` of ``U`` on ``x`` (one per head).

    ``K_U = {W : (2M − 1) ⊙ (X_i W X_iᵀ) ≥ 0 ∀i}`` with ``M = 1{X_i U X_iᵀ ≥ 0}``: the weights whose ReLU scores have
    the gate's sign pattern on every training token pair (Sahiner et al. Thm 3.3's ``K_j u ≥ 0``). ``U`` lies in
    ``K_U``; with ``a = (2M − 1)(x_tᵀ W1 x_t')`` and ``b = |x_tᵀ U x_t'|`` the shift is ``max(0, max −a/b)``.
    ``w1`` is (h, d, d), ``gate`` (d, d), ``x`` (N, s, d); raises ``ValueError`` when a pair with ``b = 0`` has
    ``a < 0`` (the gate lies on that pair's boundary and no shift works).
    """
    h = w1.shape[0]
    tau = torch.zeros(h, dtype=w1.dtype, device=w1.device)
    if h == 0 or x.shape[0] == 0:
        return tau
    per = max(1, h * x.shape[1] ** 2)
    step = max(1, _CONE_CHUNK // per)
    for lo in range(0, x.shape[0], step):
        xc = x[lo : lo + step]
        g = torch.einsum("nta,ab,nub->ntu", xc, gate, xc)  # gate scores
        sign = torch.where(g >= 0, 1.0, -1.0).to(w1.dtype)
        a = sign.unsqueeze(1) * torch.einsum("nta,hab,nub->nhtu", xc, w1, xc)  # (n, h, s, s)
        b = g.abs().unsqueeze(1).expand_as(a)
        bad = a < 0
        scale = float(a.abs().max()) if a.numel() else 0.0
        stuck = bad & (b <= 1e-12 * max(scale, 1e-300)) & (a < -1e-12 * max(scale, 1e-300))
        if bool(stuck.any()):
            raise ValueError(
                "cone decomposition impossible: a gate's score is 0 on a training token pair where the head's score "
                "has the opposite sign (the gate lies on the boundary of its cone)"
            )
        ratio = torch.where(bad & (b > 0), -a / b.clamp_min(1e-300), torch.zeros_like(a))
        tau = torch.maximum(tau, ratio.amax(dim=(0, 2, 3)))
    return tau


def _balance(w1: torch.Tensor, w2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rescale each head ``(α W1, W2/α)`` so that ``½(‖W1‖² + ‖W2‖²) = ‖W1‖‖W2‖`` (ReLU is positively homogeneous)."""
    n1 = torch.linalg.vector_norm(w1.flatten(1), dim=1)
    n2 = torch.linalg.vector_norm(w2.flatten(1), dim=1)
    alpha = torch.where((n1 > 0) & (n2 > 0), torch.sqrt(n2 / n1.clamp_min(1e-300)), torch.ones_like(n1))
    return w1 * alpha[:, None, None], w2 / alpha[:, None, None]


def _pair_rows(gate: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows ``σ_{tt'} vec(x_t x_t'ᵀ)`` (N·s², d²) of the cone ``K_U`` (σ = the gate's sign) and the gate scores."""
    g = torch.einsum("nta,ab,nub->ntu", x, gate, x)
    sign = torch.where(g >= 0, 1.0, -1.0).to(x.dtype)
    rows = sign[..., None, None] * torch.einsum("nta,nub->ntuab", x, x)
    d = x.shape[2]
    return rows.reshape(-1, d * d), g.reshape(-1)


def cone_split(w1: torch.Tensor, gate: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """For every head, the minimum-norm ``B_h`` with ``B_h`` and ``W1_h + B_h`` in the cone ``K_U`` of ``U`` on ``x``.

    Then ``M ⊙ (X W1 Xᵀ) = relu(X (W1 + B) Xᵀ) − relu(X B Xᵀ)`` on the training tokens. ``B`` solves the
    least-distance program ``min ‖b‖ s.t. S b ≥ r`` with ``S`` = :func:`_pair_rows` and ``r = max(0, −S vec W1)``,
    by Lawson & Hanson's reduction to one non-negative least-squares problem (SciPy). Falls back to
    ``B = τ U`` (:func:`cone_shift`) if the NNLS solve fails. ``w1`` (h, d, d), ``gate`` (d, d), ``x`` (N, s, d).
    """
    import numpy as np
    from scipy.optimize import nnls

    h, d = w1.shape[0], w1.shape[1]
    out = torch.zeros_like(w1)
    if h == 0 or x.shape[0] == 0:
        return out
    rows, _ = _pair_rows(gate.to(x.dtype), x)
    keep = rows.abs().amax(dim=1) > 0  # pairs with a zero token constrain nothing
    s_np = rows[keep].cpu().double().numpy()  # (m, d²); vec is row-major over (a, b) of x_t x_t'ᵀ
    tau = None
    for i in range(h):
        w = w1[i].cpu().double().numpy().reshape(-1)
        r = np.maximum(0.0, -(s_np @ w))
        if not (r > 0).any():
            continue
        e = np.vstack([s_np.T, r[None, :]])  # (d² + 1, m)
        f = np.zeros(d * d + 1)
        f[-1] = 1.0
        try:
            u, _ = nnls(e, f, maxiter=50 * e.shape[1])
            res = e @ u - f
            ok = res[-1] < -1e-12
        except RuntimeError:
            ok = False
        if ok:
            b = -res[:-1] / res[-1]
            out[i] = torch.as_tensor(b.reshape(d, d), dtype=w1.dtype, device=w1.device)
        else:
            tau = cone_shift(w1, gate, x) if tau is None else tau
            out[i] = tau[i] * gate.to(w1.dtype)
    return out


def relu_attention_from_gated(
    z: torch.Tensor, gates: torch.Tensor, x: torch.Tensor, scale: float = 1.0, tol: float | None = None
) -> ReLUAttentionHead:
    """A ReLU attention head that reproduces a gated solution ``z`` (m, d², d·c) exactly on the training tokens ``x``.

    Cone decomposition (Mishkin et al. 2022, applied to Sahiner et al. Thm 3.3): every gated head ``(W1, W2)`` of
    gate ``U_j`` computes ``M_j ⊙ (X W1 Xᵀ)``; with ``B`` = :func:`cone_split` both ``A = W1 + B`` and ``B`` lie in
    the cone of ``U_j``, where ``M_j ⊙ (X W Xᵀ) = relu(X W Xᵀ)``, so ``M_j ⊙ (X W1 Xᵀ) = relu(X A Xᵀ) −
    relu(X B Xᵀ)``: the gated head becomes the ReLU heads ``(A, W2)`` and ``(B, −W2)`` (the second dropped when
    ``B = 0``), balanced so that ``½(‖W1‖² + ‖W2‖²) = ‖W1‖‖W2‖``. On ``x`` the outputs equal the gated model's; the
    weight decay is at least ``Σ_j ‖Z_j‖_*`` (equal when no head needs a split), so the ReLU head's regularised
    objective is an upper bound on the ReLU optimum over these patterns. Off the training set the two models differ
    (the ReLU head computes its own masks).
    """
    m, d = gates.shape[0], gates.shape[1]
    if z.ndim != 3 or z.shape[0] != m:
        raise ValueError(f"z must be (m, d², d·c) with m = {m}, got {tuple(z.shape)}")
    if x.ndim != 3 or x.shape[2] != d:
        raise ValueError(f"x must be (N, s, d) with d = {d}, got {tuple(x.shape)}")
    c = z.shape[2] // d
    gates = gates.to(z.dtype)
    w1s, w2s = [], []
    for j in range(m):
        w1, w2 = attention_heads_from_z(z[j], d, tol)
        if w1.shape[0] == 0:
            continue
        b = cone_split(w1, gates[j], x.to(z.dtype))
        split = torch.linalg.vector_norm(b.flatten(1), dim=1) > 0
        w1s += [w1 + b, b[split]]
        w2s += [w2, -w2[split]]
    if not w1s:
        return ReLUAttentionHead(z.new_zeros(0, d, d), z.new_zeros(0, d, c), scale=scale)
    w1, w2 = _balance(torch.cat(w1s), torch.cat(w2s))
    return ReLUAttentionHead(w1, w2, scale=scale)


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
