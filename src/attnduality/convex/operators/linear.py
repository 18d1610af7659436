"""The linear model ``A(Z) = X Z`` (Sahiner et al. eq. (6); the nuclear-norm "linear head" baseline)."""

from __future__ import annotations

import torch

from .base import LinearOperator

__all__ = ["DenseOperator"]


class DenseOperator(LinearOperator):
    """``A(Z) = X Z`` with ``X`` (N, d) and ``Z`` (d, c)."""

    def __init__(self, x: torch.Tensor, n_outputs: int) -> None:
        self.x = x
        self.n_samples, d = x.shape
        self.n_outputs = int(n_outputs)
        self.z_shape = (d, self.n_outputs)
        self.dtype, self.device = x.dtype, x.device

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.x @ z

    def adjoint(self, g: torch.Tensor) -> torch.Tensor:
        return self.x.T @ g
