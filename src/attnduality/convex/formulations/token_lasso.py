"""The token-lasso programs of Ergen, Neyshabur & Mehta (2022): attention-only networks as group lassos over tokens.

``kind="attention"``: eq. (9) (one output) and (12) (c outputs), ``Z`` (n, d, c); ``penalty="group"``: one group
per token and output, ``"nuclear"``: ``Σ_k ‖Z_k‖_*`` per token (the joint multi-class variant, derived).
``kind="gated_fc"``: attention followed by an FC layer with gated ReLU (§3.4, reconstructed), gates ``g_p`` (d, P)
with masks ``1{x_ikᵀ g_p ≥ 0}`` over every token, ``Z`` (n, P, d, c), groups per (token, gate[, output]).
``kind="sequence"``: sequence outputs (App. A.7, eq. (33)) with the equal-row-sum cone that makes it exact (regression
only; its targets are ``Y_i`` (n, c) flattened, so ``n_outputs`` is n·c). The twins
(:mod:`attnduality.nn.token_lasso_twins`) are recovered from the support (Prop. 1, corrected); they are not a
bilinear image of ``Z``, so there is no ``lift``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..arrangements import sample_gates
from ..operators import LinearOperator
from ..operators.token import GatedTokenOperator, RowStochasticCone, SequenceOperator, TokenOperator, token_gate_masks
from ..penalties import BlockNuclearNorm, GroupL2, Penalty
from ..recovery_token import PENALTIES, attention_to_module, gated_fc_to_module, sequence_to_module
from .base import Formulation, register_formulation

__all__ = ["TokenLassoFormulation"]


@register_formulation
@dataclass(frozen=True)
class TokenLassoFormulation(Formulation):
    """Ergen et al.'s attention-only network (and its gated-FC and sequence-output variants) as a token lasso."""

    kind: str = "attention"
    penalty_kind: str = "group"
    """``"group"`` (the paper's group lasso) or ``"nuclear"`` (per-token nuclear norm, derived)"""
    n_heads: int | None = None
    """heads of the recovered twin (None: as many as the solution needs)"""

    family = "token_lasso"
    kinds = ("attention", "gated_fc", "sequence")
    gate_axis = 1
    summary = "attention-only network as a group lasso over tokens (Ergen et al. 2022, eqs. (9)/(12))"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.penalty_kind not in PENALTIES:
            raise ValueError(f"penalty must be one of {PENALTIES}, got {self.penalty_kind!r}")
        if self.kind == "sequence" and self.penalty_kind != "group":
            raise ValueError("kind='sequence' has its own penalty (App. A.7); use penalty='group' (the default)")

    @property
    def gated(self) -> bool:
        return self.kind == "gated_fc"

    @property
    def liftable(self) -> bool:
        return False

    def n_channels(self, n_tokens: int, n_outputs: int) -> int:
        """The outputs per token of the operator: c, or n·c / n for sequence outputs."""
        if self.kind != "sequence":
            return n_outputs
        if n_outputs % n_tokens:
            raise ValueError(
                f"kind='sequence' needs targets of shape (n_samples, n_tokens * c) (Y_i flattened row-major); "
                f"got {n_outputs} target column(s) for n_tokens={n_tokens}"
            )
        return n_outputs // n_tokens

    def bind(self, n_tokens: int, n_features: int, n_outputs: int) -> TokenLassoFormulation:
        self.n_channels(n_tokens, n_outputs)
        return self

    def gate_shape(self, n_tokens: int, n_features: int) -> tuple[int, ...]:
        return (n_features, -1) if self.gated else ()

    def gate_shape_doc(self) -> str:
        return "(d, P) with d = features per token"

    def sample_gates(self, n_tokens: int, n_features: int, n_gates: int, seed: int) -> torch.Tensor:
        return sample_gates(n_features, n_gates, seed, torch.float64)

    def masks(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        return token_gate_masks(x, gates).transpose(1, 2)  # (N, P, n): the gate axis second

    def operator(self, x: torch.Tensor, gates: torch.Tensor | None, n_outputs: int) -> LinearOperator:
        if self.kind == "attention":
            return TokenOperator(x, n_outputs)
        if self.kind == "gated_fc":
            if gates is None:
                raise ValueError("the gated-FC token lasso needs its gates")
            return GatedTokenOperator(x, token_gate_masks(x, gates), n_outputs)
        return SequenceOperator(x, self.n_channels(int(x.shape[1]), n_outputs))

    def penalty(self, x: torch.Tensor, gates: torch.Tensor | None) -> Penalty:
        if self.kind == "sequence":
            return RowStochasticCone()
        if self.penalty_kind == "nuclear":
            return BlockNuclearNorm()
        return GroupL2(axes=(1 if self.kind == "attention" else 2,))

    def n_outputs(self, coef_shape: tuple[int, ...], n_features: int) -> int:
        if self.kind == "sequence":  # Z (2, d, c, n, n); the targets are Y_i (n, c) flattened
            return int(coef_shape[2]) * int(coef_shape[3])
        return int(coef_shape[-1])

    def to_module(
        self, z: torch.Tensor, gates: torch.Tensor | None, n_tokens: int, n_features: int, x: torch.Tensor | None = None
    ) -> torch.nn.Module:
        if self.kind == "attention":
            return attention_to_module(z, self.penalty_kind, self.n_heads)
        if self.kind == "gated_fc":
            if gates is None:
                raise ValueError("the gated-FC twin needs its gates")
            return gated_fc_to_module(z, gates, self.penalty_kind, self.n_heads)
        return sequence_to_module(z, self.n_heads)
