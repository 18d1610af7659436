"""Self-attention heads with token mean pooling (Sahiner et al. 2022, §3).

``kind="linear"``: Thm 3.1, ``Z`` (d², d·c) with ``β‖Z‖_*``. ``kind="gated_relu"``: fixed gates ``U_j`` (d, d),
token-pair masks ``1{x_tᵀ U_j x_t' ≥ 0}``, one block ``Z_j`` (d², d·c) per gate with ``β Σ_j ‖Z_j‖_*``.
``kind="relu"``: ReLU attention (Thm 3.3) through the gated program and a cone decomposition of its solution
(Mishkin et al. 2022), so its operator and penalty are the gated ones and its twin needs the training tokens.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from ..operators import LinearOperator
from ..operators.attention import (
    GatedAttentionOperator,
    LinearAttentionOperator,
    attention_masks,
    sample_attention_gates,
)
from ..penalties import BlockNuclearNorm, NuclearNorm, Penalty
from ..recovery_attention import (
    attention_weights_to_z,
    gated_attention_to_module,
    gated_attention_weights_to_z,
    linear_attention_to_module,
    relu_attention_from_gated,
)
from .base import Formulation, register_formulation

__all__ = ["AttentionFormulation"]


@register_formulation
@dataclass(frozen=True)
class AttentionFormulation(Formulation):
    """Self-attention head ``mean_t Σ_h σ(scale · X W1_h Xᵀ) X W2_h`` in convex form (Thm 3.1, 3.3)."""

    kind: str = "gated_relu"
    scale: float = 1.0
    """multiplies the attention scores ``scale · X W1 Xᵀ``"""

    family = "attention"
    kinds = ("linear", "gated_relu", "relu")
    summary = "self-attention with token mean pooling (Sahiner et al. Thm 3.1 linear, Thm 3.3 ReLU)"

    def __post_init__(self) -> None:
        super().__post_init__()
        s = self.scale
        if not isinstance(s, numbers.Real) or isinstance(s, bool) or not math.isfinite(s) or s <= 0:
            raise ValueError(f"scale must be a finite number > 0, got {s!r}")

    @property
    def liftable(self) -> bool:
        return self.kind != "relu"

    def gate_shape(self, n_tokens: int, n_features: int) -> tuple[int, ...]:
        return (-1, n_features, n_features) if self.gated else ()

    def gate_shape_doc(self) -> str:
        return "(m, d, d) with d = n_features"

    def sample_gates(self, n_tokens: int, n_features: int, n_gates: int, seed: int) -> torch.Tensor:
        return sample_attention_gates(n_features, n_gates, seed, torch.float64)

    def masks(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        return attention_masks(x, gates)

    def operator(self, x: torch.Tensor, gates: torch.Tensor | None, n_outputs: int) -> LinearOperator:
        if gates is None:
            return LinearAttentionOperator(x, n_outputs, scale=float(self.scale))
        return GatedAttentionOperator(x, gates, n_outputs, scale=float(self.scale))

    def penalty(self, x: torch.Tensor, gates: torch.Tensor | None) -> Penalty:
        return NuclearNorm() if gates is None else BlockNuclearNorm()

    def n_outputs(self, coef_shape: tuple[int, ...], n_features: int) -> int:
        return int(coef_shape[-1]) // n_features

    def to_module(
        self, z: torch.Tensor, gates: torch.Tensor | None, n_tokens: int, n_features: int, x: torch.Tensor | None = None
    ) -> torch.nn.Module:
        if gates is None:
            return linear_attention_to_module(z, scale=float(self.scale))
        if self.kind == "relu":
            if x is None:
                raise ValueError("the ReLU attention twin is a cone decomposition on the training tokens: pass x")
            return relu_attention_from_gated(z, gates.to(z.dtype), x.to(z.dtype), scale=float(self.scale))
        return gated_attention_to_module(z, gates, scale=float(self.scale))

    def lift(self, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
        if self.kind == "relu":
            raise NotImplementedError("the ReLU attention twin is not a bilinear image of the gated solution")
        return gated_attention_weights_to_z(w1, w2) if self.gated else attention_weights_to_z(w1, w2)

    def twin_shapes(
        self, coef_shape: tuple[int, ...], heads: int, n_tokens: int, n_features: int, n_outputs: int
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        lead, d = tuple(coef_shape[:-2]), n_features
        return (*lead, heads, d, d), (*lead, heads, d, n_outputs)
