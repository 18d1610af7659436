"""PyTorch modules: the non-convex twins of the convex heads, attention layers by name, and transformer builders.

Modules: :mod:`.mlp_twins` and :mod:`.token_twins` (twins of Sahiner et al.'s MLP and token heads),
:mod:`.token_lasso_twins` (twins of Ergen et al.'s token lasso), :mod:`.convexified` (Ergen et al.'s convexified
attention layer and models), :mod:`.primal` (Primal-Attention), :mod:`.softmax`, :mod:`.registry` (attention layers by
name) and :mod:`.transformer`.
"""

from __future__ import annotations

import warnings
from typing import Any

from .convexified import (
    ConvexifiedAttention,
    ConvexifiedAttentionBlock,
    ConvexifiedAttentionStack,
    attention_fc_model,
    attention_only_model,
    stacked_model,
)
from .mlp_twins import GatedReLUMLP, LinearMLP, ReLUMLP
from .primal import PrimalAttention, ksvd_loss, primal_layers
from .registry import (
    SoftmaxAttention,
    available_attention,
    build_attention,
    register_attention,
)
from .token_lasso_twins import AttentionGatedFCNet, AttentionOnlyNet, SequenceAttentionNet
from .transformer import EncoderBlock, PrimalFormer, PrimalTransformer, TransformerClassifier, TransformerEncoder

__all__ = [
    "AttentionGatedFCNet",
    "AttentionOnlyNet",
    "ConvexifiedAttention",
    "ConvexifiedAttentionBlock",
    "ConvexifiedAttentionStack",
    "EncoderBlock",
    "GatedReLUMLP",
    "LinearMLP",
    "PrimalAttention",
    "PrimalFormer",
    "PrimalTransformer",
    "ReLUMLP",
    "SequenceAttentionNet",
    "SoftmaxAttention",
    "TransformerClassifier",
    "TransformerEncoder",
    "attention_fc_model",
    "attention_only_model",
    "available_attention",
    "build_attention",
    "ksvd_loss",
    "primal_layers",
    "register_attention",
    "stacked_model",
]

_DEPRECATED = {
    "ConvexAttention": "ConvexifiedAttention",
    "ConvexAttentionBlock": "ConvexifiedAttentionBlock",
    "ConvexAttentionStack": "ConvexifiedAttentionStack",
}


def __getattr__(name: str) -> Any:
    """Deprecated names: Ergen et al.'s layer was ``ConvexAttention``, a name that read as Sahiner et al.'s convex
    self-attention program (``ConvexAttentionClassifier``)."""
    if name in _DEPRECATED:
        warnings.warn(
            f"attnduality.nn.{name} is deprecated; use {_DEPRECATED[name]} (Ergen et al.'s convexified attention)",
            DeprecationWarning,
            stacklevel=2,
        )
        return globals()[_DEPRECATED[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
