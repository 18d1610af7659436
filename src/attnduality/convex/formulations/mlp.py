"""Two-layer (gated) ReLU networks (Sahiner et al. 2022, eq. (5), (8)).

``kind="gated_relu"``: fixed gates ``g_j`` (columns of a (d, P) matrix), masks ``D_j = 1{X g_j ≥ 0}``,
``min_Z L(Σ_j D_j X Z_j) + β Σ_j ‖Z_j‖_*`` with ``Z`` (P, d, c) (eq. (8)). ``kind="relu"``: eq. (5), ``Z = (V, W)``
(2, P, d, c) under the cone constraints ``(2D_j − I) X V_j ≥ 0`` (and the same for ``W_j``) with a group norm per
neuron and output column. ``bias``: ``x`` carries an appended constant column (the estimators' ``fit_intercept``)
that the twin appends itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..arrangements import gate_masks, sample_gates
from ..operators import GatedMLPOperator, LinearOperator, ReLUMLPOperator
from ..penalties import BlockNuclearNorm, ConeGroupL2, Penalty
from ..recovery import gated_mlp_to_module, relu_mlp_to_module
from .base import Formulation, register_formulation

__all__ = ["MLPFormulation"]


@register_formulation
@dataclass(frozen=True)
class MLPFormulation(Formulation):
    """Two-layer gated-ReLU (eq. (8)) or ReLU (eq. (5)) network on (N, d) feature rows."""

    kind: str = "gated_relu"
    bias: bool = False
    """the last input column is the constant 1 (the twin appends it itself)"""

    family = "mlp"
    kinds = ("gated_relu", "relu")
    tokens = False
    gate_axis = 1
    summary = "two-layer gated-ReLU (eq. (8)) or ReLU (eq. (5)) network on (N, d) features (Sahiner et al.)"

    @property
    def liftable(self) -> bool:
        return self.kind == "gated_relu"

    def gate_shape(self, n_tokens: int, n_features: int) -> tuple[int, ...]:
        return (n_features, -1)

    def gate_shape_doc(self) -> str:
        return "(d, P) with d = n_features + 1 for the intercept" if self.bias else "(d, P) with d = n_features"

    def sample_gates(self, n_tokens: int, n_features: int, n_gates: int, seed: int) -> torch.Tensor:
        return sample_gates(n_features, n_gates, seed, torch.float64)

    def masks(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        return gate_masks(x, gates)

    def operator(self, x: torch.Tensor, gates: torch.Tensor | None, n_outputs: int) -> LinearOperator:
        if gates is None:
            raise ValueError("the MLP heads need gates")
        masks = gate_masks(x, gates)
        return ReLUMLPOperator(x, masks, n_outputs) if self.kind == "relu" else GatedMLPOperator(x, masks, n_outputs)

    def penalty(self, x: torch.Tensor, gates: torch.Tensor | None) -> Penalty:
        if self.kind == "relu":
            if gates is None:
                raise ValueError("the ReLU MLP's cone constraints need gates")
            return ConeGroupL2(x, gate_masks(x, gates))
        return BlockNuclearNorm()

    def n_outputs(self, coef_shape: tuple[int, ...], n_features: int) -> int:
        return int(coef_shape[-1])

    def to_module(
        self, z: torch.Tensor, gates: torch.Tensor | None, n_tokens: int, n_features: int, x: torch.Tensor | None = None
    ) -> torch.nn.Module:
        if self.kind == "relu":
            return relu_mlp_to_module(z[0], z[1], bias=self.bias)
        if gates is None:
            raise ValueError("the gated MLP twin needs its gates")
        return gated_mlp_to_module(z, gates, bias=self.bias)

    def lift(self, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
        if self.kind == "relu":
            raise NotImplementedError("the ReLU MLP's twin is not a bilinear image of the cone solution")
        return torch.einsum("phd,phc->pdc", w1, w2)  # per gate: w1 (P, h, d), w2 (P, h, c) → Z_j = W1_jᵀ W2_j

    def twin_shapes(
        self, coef_shape: tuple[int, ...], heads: int, n_tokens: int, n_features: int, n_outputs: int
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        p = int(coef_shape[-3])
        return (p, heads, n_features), (p, heads, n_outputs)
