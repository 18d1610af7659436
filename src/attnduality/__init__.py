"""attnduality: convex attention heads, convexified transformers and Primal-Attention."""

from __future__ import annotations

import importlib
from typing import Any

from . import convex, nn

__version__ = "0.1.0"
__all__ = ["backbones", "convex", "data", "nn", "__version__"]

_LAZY = ("data", "backbones")  # imported on first access: ``attnduality.data``, ``attnduality.backbones``


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
