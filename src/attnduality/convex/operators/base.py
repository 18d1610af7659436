"""The operator half of a convex head: ``A : Z ↦ predictions`` and its adjoint ``A* : residual ↦ ∂/∂Z``.

Every convex program in the library reads ``min_Z f(A(Z)) + β R(Z)`` (:mod:`attnduality.convex.problem`);
heads differ only in the operator ``A`` and the penalty ``R``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

__all__ = ["LinearOperator"]


class LinearOperator(ABC):
    """A linear map from a weight tensor of shape :attr:`z_shape` to predictions of shape (N, c)."""

    z_shape: tuple[int, ...]
    n_samples: int
    n_outputs: int
    dtype: torch.dtype
    device: torch.device

    @abstractmethod
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``A(Z)``, shape (N, c)."""

    @abstractmethod
    def adjoint(self, g: torch.Tensor) -> torch.Tensor:
        """``A*(G)`` for ``G`` of shape (N, c); shape :attr:`z_shape`."""

    def zeros(self) -> torch.Tensor:
        return torch.zeros(self.z_shape, dtype=self.dtype, device=self.device)

    def norm_sq(self, n_iter: int = 30, seed: int = 0) -> float:
        """An estimate of ``‖A‖₂²`` by power iteration on ``A*A`` (a lower bound that converges from below)."""
        gen = torch.Generator(device="cpu").manual_seed(seed)
        v = torch.randn(self.z_shape, generator=gen, dtype=self.dtype).to(self.device)
        v /= torch.linalg.vector_norm(v)
        lam = 0.0
        for _ in range(n_iter):
            w = self.adjoint(self.forward(v))
            lam = float(torch.linalg.vector_norm(w))
            if lam == 0.0:
                return 0.0
            v = w / lam
        return lam
