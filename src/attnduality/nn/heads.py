"""Deprecated module path: the twins of the MLP heads live in :mod:`attnduality.nn.mlp_twins`."""

from __future__ import annotations

import warnings

from .mlp_twins import (
    GatedReLUMLP,
    LinearMLP,
    ReLUMLP,
)

warnings.warn(
    "attnduality.nn.heads is deprecated; import from attnduality.nn.mlp_twins (or attnduality.nn)",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = [
    "GatedReLUMLP",
    "LinearMLP",
    "ReLUMLP",
]
