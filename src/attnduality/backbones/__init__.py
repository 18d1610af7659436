"""Frozen backbones and their cached token features.

* ``minilm``: all-MiniLM-L6-v2, a real pre-trained 6-layer BERT (d = 384), offline from PyPI (``[data]`` extra);
  :func:`minilm_token_features` gives (N, s, 384) token features, optionally channel-pooled to d = 100.
* ``vit``: :class:`SmallViT`, pre-trained by the project on MNIST (``python -m attnduality.backbones.vit``), frozen,
  with :func:`fashion_mnist_vit_features` for the transfer target.

Features are cached once as memory-mapped ``.npy`` files under ``$ATTNDUALITY_CACHE/features``. Names are loaded on
first use, so importing this package is cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TokenFeatures": "features",
    "pool_channels": "features",
    "load_minilm": "minilm",
    "minilm_path": "minilm",
    "minilm_token_features": "minilm",
    "MINILM_DIM": "minilm",
    "SmallViT": "vit",
    "ViTConfig": "vit",
    "PretrainConfig": "vit",
    "PretrainedViT": "vit",
    "pretrain_vit_mnist": "vit",
    "load_pretrained_vit": "vit",
    "vit_token_features": "vit",
    "fashion_mnist_vit_features": "vit",
    "preprocess": "vit",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
