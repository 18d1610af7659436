"""From convex token-program solutions back to the multi-head networks of Ergen, Neyshabur & Mehta (2022).

Proposition 1 (recovery) with the **actual support indices**: the printed map puts head j on "the j-th row" (``e_j``),
which is wrong as soon as the support is not the first rows; here every nonzero group ``z_k`` becomes a
head attending to *its own* token, ``w = e_k``, ``v = z_k / √‖z_k‖``, ``b = √‖z_k‖``, so that
``½(‖v‖² + b²) = ‖z_k‖`` and the weight decay equals the convex penalty. Variants:

* eq. (12) groups (token k, output l): ``b = √‖z_kl‖ e_l`` (then ``‖b‖_1² = ‖b‖² = ‖z_kl‖``);
* per-token nuclear norm (derived here): one head per singular triple of ``Z_k`` (d × c),
  ``v = √σ u``, ``b = √σ v``;
* attention + gated-ReLU FC (§3.4, derived): the same per (token, gate) block, the head keeping gate ``g_p``;
* sequence outputs (App. A.7, corrected): each nonzero block ``C^±_ql = λ W`` (W row-stochastic) becomes the head
  ``W_j = W``, ``V_j = ±√λ e_q e_lᵀ``, ``b_j = √λ``, so ``½(‖V_j‖_1² + b_j²) = λ``.

The number of heads this needs is ``h*`` (:func:`heads_needed`); the equality "convex optimum = non-convex optimum"
holds for networks with ``h ≥ h*`` heads (Carathéodory: some optimum has ``h* ≤ N + 1`` in the scalar case), and with
fewer heads the convex value is only a lower bound. Zero groups are exact zeros of the proximal solvers; "nonzero"
means above rounding level (``size · eps`` relative to the largest group), so no thresholding changes the objective.
"""

from __future__ import annotations

import numpy as np
import torch

from ..nn.token_lasso_twins import AttentionGatedFCNet, AttentionOnlyNet, SequenceAttentionNet

__all__ = [
    "KINDS",
    "PENALTIES",
    "attention_to_module",
    "gated_fc_to_module",
    "heads_needed",
    "printed_prop1_map",
    "sequence_to_module",
    "token_norms",
    "token_support",
]

KINDS = ("attention", "gated_fc", "sequence")
PENALTIES = ("group", "nuclear")


def _tol(norms: torch.Tensor, size: int) -> float:
    return float(norms.max()) * max(size, 1) * torch.finfo(norms.dtype).eps if norms.numel() else 0.0


def _blocks(z: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The (d, c) blocks of ``z`` as (B, d, c) with the token index of each block."""
    if kind == "attention":  # (n, d, c)
        n = z.shape[0]
        return z, torch.arange(n)
    if kind == "gated_fc":  # (n, P, d, c)
        n, p = z.shape[:2]
        return z.reshape(n * p, *z.shape[2:]), torch.arange(n).repeat_interleave(p)
    raise ValueError(f"kind must be one of {KINDS[:2]} here, got {kind!r}")


def _check(kind: str, penalty: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if penalty not in PENALTIES:
        raise ValueError(f"penalty must be one of {PENALTIES}, got {penalty!r}")


def _heads(z: torch.Tensor, kind: str, penalty: str) -> list[tuple[int, int, torch.Tensor, torch.Tensor]]:
    """``(token, block index, v, b)`` for every head of a pooling solution (``kind`` attention / gated_fc)."""
    blocks, tokens = _blocks(z, kind)
    d, c = blocks.shape[1:]
    heads: list[tuple[int, int, torch.Tensor, torch.Tensor]] = []
    if penalty == "group":
        norms = torch.linalg.vector_norm(blocks, dim=1)  # (B, c)
        tol = _tol(norms, d)
        for j, l in (norms > tol).nonzero().tolist():
            r = torch.sqrt(norms[j, l])
            b = torch.zeros(c, dtype=z.dtype)
            b[l] = r
            heads.append((int(tokens[j]), j, blocks[j, :, l] / r, b))
        return heads
    u, s, vh = torch.linalg.svd(blocks, full_matrices=False)
    tol = _tol(s, max(d, c))
    for j, k in (s > tol).nonzero().tolist():
        r = torch.sqrt(s[j, k])
        heads.append((int(tokens[j]), j, r * u[j, :, k], r * vh[j, k, :]))
    return heads


def _sequence_blocks(z: torch.Tensor) -> torch.Tensor:
    """``λ`` of every block of a sequence solution (2, d, c, n, n): the mean row sum, (2, d, c)."""
    return z.sum(dim=(-2, -1)) / z.shape[-2]


def heads_needed(z: torch.Tensor, kind: str = "attention", penalty: str = "group") -> int:
    """``h*``: the number of heads the recovered network uses (nonzero groups, or nonzero singular values per token
    block for ``penalty="nuclear"``, or nonzero ``C^±_ql`` blocks for sequence outputs)."""
    _check(kind, penalty)
    z = torch.as_tensor(z)
    if kind == "sequence":
        lam = _sequence_blocks(z)
        return int((lam > _tol(lam, z.shape[-1] * z.shape[-2])).sum())
    return len(_heads(z, kind, penalty))


def token_norms(z: torch.Tensor, kind: str = "attention") -> torch.Tensor:
    """The Frobenius norm of everything attached to each token, (n,): ``‖Z_k‖_F`` over features, outputs (and
    gates); for sequence outputs, the norm of column k of every ``C^±_ql`` (how much any output reads token k)."""
    z = torch.as_tensor(z)
    if kind == "sequence":
        return torch.linalg.vector_norm(z, dim=(0, 1, 2, 3))
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return torch.linalg.vector_norm(z.reshape(z.shape[0], -1), dim=1)


def token_support(z: torch.Tensor, kind: str = "attention") -> np.ndarray:
    """The token indices used by the solution (nonzero :func:`token_norms` above rounding level), ascending."""
    norms = token_norms(z, kind)
    size = int(torch.as_tensor(z).numel() // max(norms.numel(), 1))
    return (norms > _tol(norms, size)).nonzero()[:, 0].cpu().numpy().astype(np.int64)


def _pad(count: int, n_heads: int | None) -> int:
    if n_heads is None:
        return count
    if n_heads < count:
        raise ValueError(
            f"the convex solution needs h* = {count} heads but n_heads = {n_heads}: a network this narrow cannot "
            "attain the convex value, which is only a lower bound on its objective"
        )
    return int(n_heads)


def attention_to_module(z: torch.Tensor, penalty: str = "group", n_heads: int | None = None) -> AttentionOnlyNet:
    """The attention-only network (eq. (8)/(11)) of a solution ``z`` (n, d, c) of (9)/(12) (``penalty="group"``)
    or of the per-token nuclear-norm program (``"nuclear"``, derived); ``n_heads`` pads with zero heads."""
    _check("attention", penalty)
    z = torch.as_tensor(z)
    n, d, c = z.shape
    heads = _heads(z, "attention", penalty)
    h = _pad(len(heads), n_heads)
    rows = torch.full((h, n), 1.0 / n, dtype=z.dtype)
    v, b = torch.zeros(h, d, dtype=z.dtype), torch.zeros(h, c, dtype=z.dtype)
    for j, (k, _, vj, bj) in enumerate(heads):
        rows[j] = 0.0
        rows[j, k] = 1.0  # e_k with k the support index (the printed map's e_j is wrong)
        v[j], b[j] = vj, bj
    return AttentionOnlyNet(rows, v, b, output_norm="l1" if penalty == "group" else "l2")


def gated_fc_to_module(
    z: torch.Tensor, gates: torch.Tensor, penalty: str = "group", n_heads: int | None = None
) -> AttentionGatedFCNet:
    """The attention + gated-ReLU FC network (§3.4, derived) of a solution ``z`` (n, P, d, c) with gates (d, P)."""
    _check("gated_fc", penalty)
    z, gates = torch.as_tensor(z), torch.as_tensor(gates)
    n, p, d, c = z.shape
    if tuple(gates.shape) != (d, p):
        raise ValueError(f"gates must be (d, P) = {(d, p)}, got {tuple(gates.shape)}")
    heads = _heads(z, "gated_fc", penalty)
    h = _pad(len(heads), n_heads)
    rows = torch.full((h, n), 1.0 / n, dtype=z.dtype)
    g = torch.zeros(h, d, dtype=z.dtype)
    v, b = torch.zeros(h, d, dtype=z.dtype), torch.zeros(h, c, dtype=z.dtype)
    for j, (k, blk, vj, bj) in enumerate(heads):
        rows[j] = 0.0
        rows[j, k] = 1.0
        g[j] = gates[:, blk % p].to(z.dtype)
        v[j], b[j] = vj, bj
    return AttentionGatedFCNet(rows, g, v, b, output_norm="l1" if penalty == "group" else "l2")


def sequence_to_module(z: torch.Tensor, n_heads: int | None = None) -> SequenceAttentionNet:
    """The sequence-output network (App. A.7, eq. (30)) of a solution ``z`` (2, d, c, n, n) of the corrected (33)."""
    z = torch.as_tensor(z)
    _, d, c, n, _ = z.shape
    lam = _sequence_blocks(z)
    idx = (lam > _tol(lam, n * n)).nonzero().tolist()
    h = _pad(len(idx), n_heads)
    mixing = torch.full((h, n, n), 1.0 / n, dtype=z.dtype)
    v, b = torch.zeros(h, d, c, dtype=z.dtype), torch.zeros(h, dtype=z.dtype)
    for j, (s, q, l) in enumerate(idx):
        lj = lam[s, q, l]
        r = torch.sqrt(lj)
        mixing[j] = z[s, q, l] / lj
        v[j, q, l] = r if s == 0 else -r
        b[j] = r
    return SequenceAttentionNet(mixing, v, b, flatten_output=True)


def printed_prop1_map(z: torch.Tensor) -> AttentionOnlyNet:
    """Proposition 1 **as printed** (for comparison only; wrong): head j attends to ``e_j``, the j-th token, and takes
    the j-th *nonzero* row ``z_(j)``. It reproduces the convex predictions only when the support is the first rows;
    use :func:`attention_to_module`."""
    z = torch.as_tensor(z)
    n, d, c = z.shape
    if c != 1:
        raise ValueError("the printed map is stated for scalar outputs (c = 1)")
    support = token_support(z)
    h = len(support)
    rows = torch.zeros(h, n, dtype=z.dtype)
    v, b = torch.zeros(h, d, dtype=z.dtype), torch.zeros(h, 1, dtype=z.dtype)
    for j, k in enumerate(support.tolist()):
        r = torch.sqrt(torch.linalg.vector_norm(z[k, :, 0]))
        rows[j, j] = 1.0  # the printed e_j
        v[j], b[j, 0] = z[k, :, 0] / r, r
    return AttentionOnlyNet(rows, v, b)
