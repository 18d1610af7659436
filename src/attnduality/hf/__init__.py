"""Use the library on a local Hugging Face ``transformers`` model: token features for certified convex heads
(:mod:`.features`) and Primal-Attention or convexified attention swapped into a pre-trained model (:mod:`.swap`).

Nothing is downloaded: models are loaded by the caller (``from_pretrained(path, local_files_only=True)`` or built
from a config). ``transformers`` is an optional dependency (the ``[data]`` extra)."""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["SwapInfo", "image_features", "ksvd_loss", "swap_attention", "swapped_layers", "token_features"]

_EXPORTS = {
    "token_features": "features",
    "image_features": "features",
    "swap_attention": "swap",
    "SwapInfo": "swap",
    "swapped_layers": "swap",
    "ksvd_loss": "swap",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
