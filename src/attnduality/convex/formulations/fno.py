"""(B-)FNO heads with token mean pooling (Sahiner et al. 2022, §4.2).

``kind="linear"``: Thm 4.4 (B = 1) and 4.7, ``Z_b`` (s·d/B, c/B) per group with ``β Σ_b ‖Z_b‖_*`` (the nuclear
norm when B = 1). ``kind="gated_relu"``: the gated form of Thm 4.5/4.8, gates ``u_bj`` (s, d/B), token masks
``1{circ(X^{(b)}) u_bj ≥ 0}``, one block per group and gate with ``β Σ_{b,j} ‖Z_bj‖_*``. ``blocks`` is B (output
group b sees feature group b only); ``grid`` is the token grid of the circular convolutions (default ``(s,)``).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace

import numpy as np
import torch

from ..operators import LinearOperator
from ..operators.fno import FNOOperator, GatedFNOOperator, fno_masks, sample_fno_gates
from ..penalties import BlockNuclearNorm, Penalty
from ..recovery_attention import fno_weights_to_z, gated_fno_to_module, linear_fno_to_module
from .base import Formulation, register_formulation

__all__ = ["FNOFormulation"]


@register_formulation
@dataclass(frozen=True)
class FNOFormulation(Formulation):
    """(B-)FNO head ``mean_t Σ_h σ(circ(X^{(b)}) w1_h) w2_hᵀ`` per group b in convex form (Thm 4.4–4.8)."""

    kind: str = "gated_relu"
    blocks: int = 1
    """B of B-FNO (1: the plain FNO); must divide d and c"""
    grid: tuple[int, ...] | None = None
    """token grid (row-major, product s) of the circular convolutions; None: ``(s,)``"""

    family = "fno"
    kinds = ("linear", "gated_relu")
    gate_axis = 1
    summary = "(B-)FNO with token mean pooling (Sahiner et al. Thm 4.4/4.7 linear, Thm 4.5/4.8 gated ReLU)"

    def __post_init__(self) -> None:
        super().__post_init__()
        b = self.blocks
        if not isinstance(b, numbers.Integral) or isinstance(b, bool) or b < 1:
            raise ValueError(f"blocks must be an integer >= 1, got {b!r}")
        if self.grid is not None:
            grid = np.asarray(self.grid)
            if (
                grid.ndim != 1
                or grid.size < 1
                or grid.dtype.kind not in "iu"
                or bool((grid < 1).any())
                or any(isinstance(v, bool) for v in np.ravel(self.grid))
            ):
                raise ValueError(f"grid must be None or a sequence of positive integers, got {self.grid!r}")
            object.__setattr__(self, "grid", tuple(int(v) for v in self.grid))

    def bind(self, n_tokens: int, n_features: int, n_outputs: int) -> FNOFormulation:
        grid = (n_tokens,) if self.grid is None else self.grid
        if math.prod(grid) != n_tokens:
            raise ValueError(f"grid {grid} has {math.prod(grid)} tokens but X has n_tokens = {n_tokens}")
        b = int(self.blocks)
        if n_features % b or n_outputs % b:
            raise ValueError(
                f"blocks={b} must divide both the number of features d = {n_features} and the number of outputs "
                f"c = {n_outputs} (c = the number of target columns for regression, the number of classes for "
                "classification, 1 with loss='logistic')"
            )
        return replace(self, grid=grid)

    def _grid(self, n_tokens: int) -> tuple[int, ...]:
        return (n_tokens,) if self.grid is None else self.grid

    def gate_shape(self, n_tokens: int, n_features: int) -> tuple[int, ...]:
        return (self.blocks, -1, n_tokens, n_features // self.blocks) if self.gated else ()

    def gate_shape_doc(self) -> str:
        return "(B, m, s, d/B) with B = blocks, s = n_tokens, d = n_features"

    def sample_gates(self, n_tokens: int, n_features: int, n_gates: int, seed: int) -> torch.Tensor:
        return sample_fno_gates(n_tokens, n_features, n_gates, seed, groups=self.blocks, dtype=torch.float64)

    def masks(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        return fno_masks(x, gates, self._grid(int(x.shape[1]))).transpose(1, 2)  # (N, m, B, s)

    def operator(self, x: torch.Tensor, gates: torch.Tensor | None, n_outputs: int) -> LinearOperator:
        grid = self._grid(int(x.shape[1]))
        if gates is None:
            return FNOOperator(x, n_outputs, groups=self.blocks, grid=grid)
        return GatedFNOOperator(x, gates, n_outputs, grid=grid)

    def penalty(self, x: torch.Tensor, gates: torch.Tensor | None) -> Penalty:
        return BlockNuclearNorm()  # Σ over groups (and gates) of nuclear norms; the nuclear norm when B = 1, linear

    def n_outputs(self, coef_shape: tuple[int, ...], n_features: int) -> int:
        return int(coef_shape[0]) * int(coef_shape[-1])

    def to_module(
        self, z: torch.Tensor, gates: torch.Tensor | None, n_tokens: int, n_features: int, x: torch.Tensor | None = None
    ) -> torch.nn.Module:
        if gates is None:
            return linear_fno_to_module(z, n_tokens, self._grid(n_tokens))
        return gated_fno_to_module(z, gates, self._grid(n_tokens))

    def lift(self, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
        return fno_weights_to_z(w1, w2)

    def twin_shapes(
        self, coef_shape: tuple[int, ...], heads: int, n_tokens: int, n_features: int, n_outputs: int
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        lead, b = tuple(coef_shape[:-2]), self.blocks
        return (*lead, heads, n_tokens, n_features // b), (*lead, heads, n_outputs // b)
