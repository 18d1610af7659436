"""Deprecated module path: Ergen et al.'s layer lives in :mod:`attnduality.nn.convexified` (renamed
``ConvexifiedAttention``, ``ConvexifiedAttentionBlock``, ``ConvexifiedAttentionStack``) and the token-lasso twins in
:mod:`attnduality.nn.token_lasso_twins`."""

from __future__ import annotations

import warnings

from .convexified import (
    ConvexifiedAttention,
    ConvexifiedAttentionBlock,
    ConvexifiedAttentionStack,
    GatedReLUFeedForward,
    attention_fc_model,
    attention_only_model,
    stacked_model,
)
from .simplex import project_rows_to_simplex
from .token_lasso_twins import AttentionGatedFCNet, AttentionOnlyNet, SequenceAttentionNet

warnings.warn(
    "attnduality.nn.convex_attention is deprecated; import from attnduality.nn.convexified (or attnduality.nn)",
    DeprecationWarning,
    stacklevel=2,
)
ConvexAttention = ConvexifiedAttention
ConvexAttentionBlock = ConvexifiedAttentionBlock
ConvexAttentionStack = ConvexifiedAttentionStack

__all__ = [
    "AttentionGatedFCNet",
    "AttentionOnlyNet",
    "ConvexAttention",
    "ConvexAttentionBlock",
    "ConvexAttentionStack",
    "ConvexifiedAttention",
    "ConvexifiedAttentionBlock",
    "ConvexifiedAttentionStack",
    "GatedReLUFeedForward",
    "SequenceAttentionNet",
    "attention_fc_model",
    "attention_only_model",
    "project_rows_to_simplex",
    "stacked_model",
]
