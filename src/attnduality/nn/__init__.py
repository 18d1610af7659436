"""PyTorch modules: the non-convex twins of the convex heads, attention layers by name, and transformer builders."""

from .heads import GatedReLUMLP, ReLUMLP
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
]
