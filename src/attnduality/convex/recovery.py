"""Maps from convex solutions back to the non-convex networks they are equivalent to.

Gated ReLU (Sahiner et al. eq. (8)): each block ``Z_j = Σ_k σ_k u_k v_kᵀ`` becomes neurons with gate ``g_j``,
``w1 = √σ_k u_k``, ``w2 = √σ_k v_k``, so ``½(‖w1‖² + ‖w2‖²) = σ_k`` and the weight decay equals ``‖Z_j‖_*``.
ReLU (eq. (5), column groups): each column ``v`` of ``V_j`` (resp. ``W_j``) becomes a neuron
``w1 = v/√‖v‖`` with output weight ``±√‖v‖ e_k``; the cone constraint makes ``D_j X v = (X v)_+``.
"""

from __future__ import annotations

import torch

from ..nn.mlp_twins import GatedReLUMLP, LinearMLP, ReLUMLP
from .losses import Loss

__all__ = ["gated_mlp_to_module", "linear_to_module", "regularized_objective", "relu_mlp_to_module"]


def _rank_tol(s: torch.Tensor) -> float:
    return float(s.max()) * s.shape[-1] * torch.finfo(s.dtype).eps if s.numel() else 0.0


def linear_to_module(z: torch.Tensor, bias: bool = False) -> LinearMLP:
    """The two-layer linear network of a nuclear-norm solution ``z`` (d, c): ``W1 = U√Σ``, ``W2 = √Σ Vᵀ`` over the
    nonzero singular values, so ``W1 W2 = Z`` and ``½(‖W1‖² + ‖W2‖²) = ‖Z‖_*``."""
    u, s, vh = torch.linalg.svd(z, full_matrices=False)
    keep = s > _rank_tol(s)
    r = torch.sqrt(s[keep])
    return LinearMLP(u[:, keep] * r, r[:, None] * vh[keep], bias)


def gated_mlp_to_module(z: torch.Tensor, gates: torch.Tensor, bias: bool = False) -> GatedReLUMLP:
    """The gated-ReLU network of a convex solution ``z`` (P, d̃, c) with gates (d̃, P); dead neurons pruned."""
    u, s, vh = torch.linalg.svd(z, full_matrices=False)
    tol = _rank_tol(s)
    w1, w2, g = [], [], []
    for j in range(z.shape[0]):
        for k in range(s.shape[1]):
            if float(s[j, k]) > tol and float(s[j, k]) > 0:
                r = torch.sqrt(s[j, k])
                w1.append(r * u[j, :, k])
                w2.append(r * vh[j, k, :])
                g.append(gates[:, j].to(z.dtype))
    d, c = z.shape[1], z.shape[2]
    if not w1:
        empty = torch.zeros(d, 0, dtype=z.dtype)
        return GatedReLUMLP(empty, empty, torch.zeros(0, c, dtype=z.dtype), bias)
    return GatedReLUMLP(torch.stack(g, 1), torch.stack(w1, 1), torch.stack(w2, 0), bias)


def relu_mlp_to_module(v: torch.Tensor, w: torch.Tensor, bias: bool = False) -> ReLUMLP:
    """The ReLU network of a cone-constrained convex solution ``(V, W)``, each (P, d̃, c), column groups."""
    d, c = v.shape[1], v.shape[2]
    w1, w2 = [], []
    for block, sign in ((v, 1.0), (w, -1.0)):
        norms = torch.linalg.vector_norm(block, dim=1)  # (P, c)
        tol = float(norms.max()) * torch.finfo(block.dtype).eps if norms.numel() else 0.0
        for j, k in (norms > max(tol, 0.0)).nonzero().tolist():
            r = torch.sqrt(norms[j, k])
            w1.append(block[j, :, k] / r)
            out = torch.zeros(c, dtype=block.dtype)
            out[k] = sign * r
            w2.append(out)
    if not w1:
        return ReLUMLP(torch.zeros(d, 0, dtype=v.dtype), torch.zeros(0, c, dtype=v.dtype), bias)
    return ReLUMLP(torch.stack(w1, 1), torch.stack(w2, 0), bias)


def regularized_objective(module: torch.nn.Module, loss: Loss, x: torch.Tensor, beta: float) -> torch.Tensor:
    """``f(module(x)) + β · module.weight_decay()``: the non-convex training objective (differentiable)."""
    return loss.value(module(x)) + beta * module.weight_decay()
