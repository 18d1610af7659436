"""PyTorch modules: the non-convex twins of the convex heads, attention layers by name, and transformer builders."""

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
from .heads import GatedReLUMLP, LinearMLP, ReLUMLP
from .primal import PrimalAttention, ksvd_loss, primal_layers
from .registry import (
    SoftmaxAttention,
    available_attention,
    build_attention,
    register_attention,
)
from .transformer import EncoderBlock, PrimalFormer, PrimalTransformer, TransformerClassifier, TransformerEncoder

__all__ = [
    "EncoderBlock",
    "GatedReLUMLP",
    "LinearMLP",
    "PrimalAttention",
    "PrimalFormer",
    "PrimalTransformer",
    "ReLUMLP",
    "SoftmaxAttention",
    "TransformerClassifier",
    "TransformerEncoder",
    "available_attention",
    "build_attention",
    "ksvd_loss",
    "primal_layers",
    "register_attention",
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
