"""Non-convex twins of the convex MLP heads: :class:`LinearMLP`, :class:`ReLUMLP` and :class:`GatedReLUMLP`.

Trained with weight decay ``(β/2) Σ ‖θ‖²``; the attention-, Mixer- and FNO-style twins are in :mod:`.token_twins`.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["GatedReLUMLP", "LinearMLP", "ReLUMLP"]


def _append_ones(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([x, torch.ones(*x.shape[:-1], 1, dtype=x.dtype, device=x.device)], dim=-1)


class LinearMLP(nn.Module):
    """``f(x) = x̃ W1 W2`` (``x̃ = [x, 1]`` when ``bias``) with ``w1`` (d̃, m) and ``w2`` (m, c): the two-layer
    linear network whose weight decay ``½(‖W1‖² + ‖W2‖²)``, minimised over factorisations of ``Z = W1 W2``, is
    ``‖Z‖_*`` (Sahiner et al. eq. (6))."""

    def __init__(self, w1: torch.Tensor, w2: torch.Tensor, bias: bool = False) -> None:
        super().__init__()
        self.bias = bias
        if w1.ndim != 2 or w2.ndim != 2 or w1.shape[1] != w2.shape[0]:
            raise ValueError(f"expected w1 (d, m) and w2 (m, c), got {tuple(w1.shape)} and {tuple(w2.shape)}")
        self.w1 = nn.Parameter(w1.clone())
        self.w2 = nn.Parameter(w2.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (_append_ones(x) if self.bias else x) @ self.w1 @ self.w2

    def weight_decay(self) -> torch.Tensor:
        """``½ (‖w1‖² + ‖w2‖²)``."""
        return 0.5 * (self.w1.square().sum() + self.w2.square().sum())

    @property
    def n_neurons(self) -> int:
        return int(self.w1.shape[1])


class ReLUMLP(nn.Module):
    """``f(x) = Σ_k (x̃ᵀ w1_k)_+ w2_k`` with ``x̃ = [x, 1]`` when ``bias`` (Sahiner et al. eq. (2)).

    ``w1`` is (d̃, m) and ``w2`` (m, c); the bias is the last row of ``w1`` and is weight-decayed with it.
    """

    def __init__(self, w1: torch.Tensor, w2: torch.Tensor, bias: bool = False) -> None:
        super().__init__()
        self.bias = bias
        self.w1 = nn.Parameter(w1.clone())
        self.w2 = nn.Parameter(w2.clone())

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        return _append_ones(x) if self.bias else x

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self._inputs(x) @ self.w1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hidden(x) @ self.w2

    def weight_decay(self) -> torch.Tensor:
        """``½ Σ (‖w1‖² + ‖w2‖²)``."""
        return 0.5 * (self.w1.square().sum() + self.w2.square().sum())

    @property
    def n_neurons(self) -> int:
        return int(self.w1.shape[1])


class GatedReLUMLP(ReLUMLP):
    """``f(x) = Σ_k 1{x̃ᵀ g_k ≥ 0} (x̃ᵀ w1_k) w2_k`` with fixed gates ``g`` (d̃, m) (Sahiner et al. eq. (7))."""

    def __init__(self, gates: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, bias: bool = False) -> None:
        super().__init__(w1, w2, bias)
        if gates.shape != w1.shape:
            raise ValueError(f"gates {tuple(gates.shape)} and w1 {tuple(w1.shape)} must have the same shape")
        self.register_buffer("gates", gates.clone())

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        xt = self._inputs(x)
        return (xt @ self.gates >= 0).to(xt.dtype) * (xt @ self.w1)
