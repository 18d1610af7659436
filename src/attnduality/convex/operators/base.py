"""The operator half of a convex head: ``A : Z ↦ predictions`` and its adjoint ``A* : residual ↦ ∂/∂Z``.

Every convex program in the library reads ``min_Z f(A(Z)) + β R(Z)`` (:mod:`attnduality.convex.problem`);
heads differ only in the operator ``A`` and the penalty ``R``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ..penalties import TangentJacobian

__all__ = ["LinearOperator", "TangentMap"]


class TangentMap(ABC):
    """``A`` and ``A*`` restricted to the tangent factors of a
    :class:`~attnduality.convex.penalties.TangentJacobian` (blocks ``index``, bases ``L``, ``R``): ``lift`` and
    ``project`` are adjoint to each other."""

    @abstractmethod
    def lift(self, c: torch.Tensor, d: torch.Tensor | None) -> torch.Tensor:
        """``A(Z)`` for ``Z[index] = L Cᵀ + D Rᵀ`` (zero on the other blocks; ``d = None``: ``D = 0``), shape (N, c)."""

    @abstractmethod
    def project(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Hᵀ L, H R)`` of ``H = A*(y)[index]``."""

    def astype(self, dtype: torch.dtype) -> TangentMap | None:
        """The same map computing in ``dtype``, for products at lower precision; ``None`` where it has none (the
        default)."""
        return None


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

    def dual_gram(self, a: torch.Tensor, u: torch.Tensor) -> torch.Tensor | None:
        """The (N, N) matrix ``A J A*`` for a single-output operator and ``J = a_g I + u_g u_gᵀ`` on each leading
        block ``Z[g]`` (:meth:`~attnduality.convex.penalties.Penalty.block_jacobian`), or ``None`` where the operator
        cannot form it cheaply (the default). The semismooth Newton solver preconditions its dual systems with it."""
        return None

    def astype(self, dtype: torch.dtype) -> LinearOperator | None:
        """The same operator computing in ``dtype`` (the Newton solver's products at lower precision); ``None`` where
        it has none (the default)."""
        return None

    def tangent_map(self, jac: TangentJacobian) -> TangentMap | None:
        """``A`` on the tangent factors of ``jac``, where that costs at most half of ``A`` on a full ``Z``; ``None``
        otherwise (the default). The semismooth Newton solver then applies ``A J A*`` without a full ``Z``."""
        return None

    def restrict(self, index: torch.Tensor) -> LinearOperator | None:
        """The operator on the leading blocks ``index`` of ``Z`` alone (``A(Z)`` for ``Z`` zero outside them), where
        it costs in proportion to the blocks kept; ``None`` otherwise (the default). The semismooth Newton solver
        applies ``A J A*`` through it when ``J`` vanishes outside a few blocks."""
        return None

    def zeros(self) -> torch.Tensor:
        return torch.zeros(self.z_shape, dtype=self.dtype, device=self.device)

    def norm_sq(self, n_iter: int = 30, seed: int = 0) -> float:
        """An estimate of ``‖A‖₂²`` by power iteration on ``A*A`` (a lower bound that converges from below).

        Norms are accumulated in float64, and where ``A*A v`` overflows the operator's dtype (float32 data at large
        scale) the iteration continues on ``2⁻⁴⁰ v`` (``A*A`` is linear): the estimate stays finite as long as the
        products at some scale do. ``ValueError`` when they never do.
        """
        gen = torch.Generator(device="cpu").manual_seed(seed)
        v = torch.randn(self.z_shape, generator=gen, dtype=self.dtype).to(self.device)
        v /= float(torch.linalg.vector_norm(v, dtype=torch.float64))
        lam, scale = 0.0, 1.0  # A*A is applied to scale · v
        shrink, big = 2.0**-40, torch.finfo(self.dtype).max / 16
        for _ in range(n_iter):
            while True:
                w = self.adjoint(self.forward(v * scale if scale != 1.0 else v))
                norm = float(torch.linalg.vector_norm(w, dtype=torch.float64))
                if norm <= big and bool(torch.isfinite(w).all()):
                    break
                if scale * shrink < torch.finfo(self.dtype).tiny:
                    raise ValueError(
                        f"‖A‖² overflows {self.dtype} at every scale: the data are too large for this dtype"
                    )
                scale *= shrink
            if norm == 0.0:
                return 0.0
            lam = norm / scale
            v = w / norm
        return lam
