"""The composite convex program ``min_Z F(Z) = f(A(Z)) + β R(Z)`` shared by every convex head.

``f`` is a :class:`~attnduality.convex.losses.Loss` averaged over samples (so the objective reads
``(1/N) Σ_i L(A(Z)_i, y_i) + β R(Z)``), ``A`` a :class:`~attnduality.convex.operators.LinearOperator` and ``R`` a
:class:`~attnduality.convex.penalties.Penalty`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from .certificates import Certificate, duality_gap
from .losses import Loss
from .operators.base import LinearOperator
from .penalties import Penalty

__all__ = ["CompositeProblem"]


@dataclass(frozen=True)
class CompositeProblem:
    """``f(A(Z)) + β R(Z)``: the data of one convex fit."""

    loss: Loss
    operator: LinearOperator
    penalty: Penalty
    beta: float

    def __post_init__(self) -> None:
        if not (self.beta >= 0.0) or self.beta != self.beta or self.beta == float("inf"):
            raise ValueError(f"beta must be a finite number >= 0, got {self.beta!r}")

    def with_beta(self, beta: float) -> CompositeProblem:
        return replace(self, beta=float(beta))

    def astype(self, dtype: torch.dtype) -> CompositeProblem | None:
        """The same program computed in ``dtype``, where the operator has that form
        (:meth:`~attnduality.convex.operators.base.LinearOperator.astype`) and the penalty holds no arrays of its own
        (the cone-constrained group norm does); ``None`` otherwise."""
        if not dtype.is_floating_point:
            raise ValueError(f"astype needs a floating-point dtype, got {dtype}")
        if dtype == self.operator.dtype:
            return self
        op = self.operator.astype(dtype)
        if op is None or any(isinstance(v, torch.Tensor) for v in vars(self.penalty).values()):
            return None
        return replace(self, loss=self.loss.astype(dtype), operator=op)

    def start_point(self, z0: torch.Tensor | None) -> torch.Tensor:
        """A solver's first iterate: zeros, or a copy of the warm start ``z0`` in the operator's dtype and device
        (``ValueError`` when its shape is not the operator's ``z_shape``)."""
        op = self.operator
        z = op.zeros() if z0 is None else z0.to(dtype=op.dtype, device=op.device).clone()
        if tuple(z.shape) != tuple(op.z_shape):
            raise ValueError(f"warm start has shape {tuple(z.shape)}, expected {op.z_shape}")
        return z

    def objective(self, z: torch.Tensor) -> float:
        return float(self.loss.value(self.operator.forward(z)) + self.beta * self.penalty.value(z))

    def lipschitz(self) -> float:
        """An estimate of the Lipschitz constant of ``∇(f∘A)``: ``L_f · ‖A‖²`` (10 power iterations: it only seeds
        the step size, which backtracking corrects)."""
        return self.loss.lipschitz() * self.operator.norm_sq(n_iter=10)

    def certificate(
        self,
        z: torch.Tensor,
        u: torch.Tensor | None = None,
        dual_point: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> Certificate:
        """The duality-gap certificate at ``Z`` (``u = A(Z)`` may be passed to save a forward; ``dual_point =
        (Θ, A*Θ)`` is a second dual candidate, see :func:`~attnduality.convex.certificates.duality_gap`)."""
        if u is None:
            u = self.operator.forward(z)
        return duality_gap(self, z, u, dual_point)
