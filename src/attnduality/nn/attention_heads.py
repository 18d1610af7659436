"""Deprecated module path: the twins of the attention, Mixer and FNO heads live in
:mod:`attnduality.nn.token_twins`."""

from __future__ import annotations

import warnings

from .token_twins import (
    GatedAttentionHead,
    GatedFNOHead,
    GatedMixerHead,
    LinearAttentionHead,
    LinearFNOHead,
    LinearMixerHead,
    ReLUAttentionHead,
)

warnings.warn(
    "attnduality.nn.attention_heads is deprecated; import from attnduality.nn.token_twins (or attnduality.nn)",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "GatedAttentionHead",
    "GatedFNOHead",
    "GatedMixerHead",
    "LinearAttentionHead",
    "LinearFNOHead",
    "LinearMixerHead",
    "ReLUAttentionHead",
]
