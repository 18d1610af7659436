"""PyTorch modules: the non-convex twins of the convex heads."""

from .convex_attention import (
    AttentionGatedFCNet,
    AttentionOnlyNet,
    ConvexAttention,
    ConvexAttentionBlock,
    ConvexAttentionStack,
    SequenceAttentionNet,
    attention_fc_model,
    attention_only_model,
    stacked_model,
)
from .heads import GatedReLUMLP, ReLUMLP

__all__ = [
    "GatedReLUMLP",
    "ReLUMLP",
    "AttentionGatedFCNet",
    "AttentionOnlyNet",
    "ConvexAttention",
    "ConvexAttentionBlock",
    "ConvexAttentionStack",
    "SequenceAttentionNet",
    "attention_fc_model",
    "attention_only_model",
    "stacked_model",
]
