"""MLP-Mixer heads with token mean pooling (Sahiner et al. 2022, §4.1).

``kind="linear"``: Thm 4.1, ``Σ_h W1_h X W2_h`` with ``W1`` (s, s) mixing tokens and ``W2`` (d, c) channels, in
convex form ``Z`` (s², d·c) with ``β‖Z‖_*``. ``kind="gated_relu"``: the gated form of Thm 4.2, gates ``U_j`` (s, s),
masks ``1{U_j X ≥ 0}`` (s, d), one block ``Z_j`` per gate with ``β Σ_j ‖Z_j‖_*``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..operators import LinearOperator
from ..operators.mixer import GatedMixerOperator, LinearMixerOperator, mixer_masks, sample_mixer_gates
from ..penalties import BlockNuclearNorm, NuclearNorm, Penalty
from ..recovery_attention import gated_mixer_to_module, linear_mixer_to_module, mixer_weights_to_z
from .base import Formulation, register_formulation

__all__ = ["MixerFormulation"]


@register_formulation
@dataclass(frozen=True)
class MixerFormulation(Formulation):
    """MLP-Mixer head ``mean_t Σ_h σ(W1_h X) W2_h`` in convex form (Thm 4.1, 4.2)."""

    kind: str = "gated_relu"

    family = "mixer"
    kinds = ("linear", "gated_relu")
    summary = "MLP-Mixer with token mean pooling (Sahiner et al. Thm 4.1 linear, Thm 4.2 gated ReLU)"

    def gate_shape(self, n_tokens: int, n_features: int) -> tuple[int, ...]:
        return (-1, n_tokens, n_tokens) if self.gated else ()

    def gate_shape_doc(self) -> str:
        return "(m, s, s) with s = n_tokens"

    def sample_gates(self, n_tokens: int, n_features: int, n_gates: int, seed: int) -> torch.Tensor:
        return sample_mixer_gates(n_tokens, n_gates, seed, torch.float64)

    def masks(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        return mixer_masks(x, gates)

    def operator(self, x: torch.Tensor, gates: torch.Tensor | None, n_outputs: int) -> LinearOperator:
        return LinearMixerOperator(x, n_outputs) if gates is None else GatedMixerOperator(x, gates, n_outputs)

    def penalty(self, x: torch.Tensor, gates: torch.Tensor | None) -> Penalty:
        return NuclearNorm() if gates is None else BlockNuclearNorm()

    def n_outputs(self, coef_shape: tuple[int, ...], n_features: int) -> int:
        return int(coef_shape[-1]) // n_features

    def to_module(
        self, z: torch.Tensor, gates: torch.Tensor | None, n_tokens: int, n_features: int, x: torch.Tensor | None = None
    ) -> torch.nn.Module:
        if gates is None:
            return linear_mixer_to_module(z, n_features)
        return gated_mixer_to_module(z, gates, n_features)

    def lift(self, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
        return mixer_weights_to_z(w1, w2)

    def twin_shapes(
        self, coef_shape: tuple[int, ...], heads: int, n_tokens: int, n_features: int, n_outputs: int
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        lead = tuple(coef_shape[:-2])
        return (*lead, heads, n_tokens, n_tokens), (*lead, heads, n_features, n_outputs)
