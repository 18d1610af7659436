"""The convex two-layer ReLU network in cone form (Sahiner et al. eq. (5); Mishkin et al. 2022).

``A(V, W) = Σ_j D_j X (V_j − W_j)`` for ``Z = (V, W)`` of shape (2, P, d, c); the cone constraints
``(2D_j − I) X V_j ≥ 0`` live in the penalty (:class:`~attnduality.convex.penalties.ConeGroupL2`).
"""

from __future__ import annotations

import torch

from .base import LinearOperator
from .mlp import GatedMLPOperator

__all__ = ["ReLUMLPOperator"]


class ReLUMLPOperator(LinearOperator):
    """``(V, W) ↦ Σ_j D_j X (V_j − W_j)``: the gated operator applied to ``V − W``."""

    def __init__(self, x: torch.Tensor, masks: torch.Tensor, n_outputs: int) -> None:
        self.gated = GatedMLPOperator(x, masks, n_outputs)
        self.n_samples, self.n_outputs = self.gated.n_samples, self.gated.n_outputs
        self.z_shape = (2, *self.gated.z_shape)
        self.dtype, self.device = x.dtype, x.device

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.gated.forward(z[0] - z[1])

    def adjoint(self, g: torch.Tensor) -> torch.Tensor:
        a = self.gated.adjoint(g)
        return torch.stack([a, -a])
