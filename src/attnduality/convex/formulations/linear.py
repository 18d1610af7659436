"""The linear head with a nuclear-norm penalty (Sahiner et al. 2022, eq. (6)): ``min_Z L(XZ) + β‖Z‖_*``, ``Z`` (d, c),
the convex form of a two-layer linear network with weight decay (the paper's logistic-regression baseline)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..operators import DenseOperator, LinearOperator
from ..penalties import NuclearNorm, Penalty
from ..recovery import linear_to_module
from .base import Formulation, register_formulation

__all__ = ["LinearFormulation"]


@register_formulation
@dataclass(frozen=True)
class LinearFormulation(Formulation):
    """Linear head on feature rows, nuclear norm of its (d, c) weight matrix (eq. (6))."""

    kind: str = "linear"
    bias: bool = False
    """the last input column is the constant 1 (the twin appends it itself)"""

    family = "linear"
    kinds = ("linear",)
    tokens = False
    summary = "linear head with a nuclear-norm penalty on (N, d) features (Sahiner et al. eq. (6))"

    def gate_shape(self, n_tokens: int, n_features: int) -> tuple[int, ...]:
        return ()

    def gate_shape_doc(self) -> str:
        return "none (a linear head has no gates)"

    def operator(self, x: torch.Tensor, gates: torch.Tensor | None, n_outputs: int) -> LinearOperator:
        return DenseOperator(x, n_outputs)

    def penalty(self, x: torch.Tensor, gates: torch.Tensor | None) -> Penalty:
        return NuclearNorm()

    def n_outputs(self, coef_shape: tuple[int, ...], n_features: int) -> int:
        return int(coef_shape[-1])

    def to_module(
        self, z: torch.Tensor, gates: torch.Tensor | None, n_tokens: int, n_features: int, x: torch.Tensor | None = None
    ) -> torch.nn.Module:
        return linear_to_module(z, bias=self.bias)

    def lift(self, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
        return torch.einsum("hd,hc->dc", w1, w2)  # w1 (h, d), w2 (h, c): Z = W1ᵀ W2

    def twin_shapes(
        self, coef_shape: tuple[int, ...], heads: int, n_tokens: int, n_features: int, n_outputs: int
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (heads, n_features), (heads, n_outputs)
