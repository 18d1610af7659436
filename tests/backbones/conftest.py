"""Backbones and their data, loaded once per session. Missing pieces skip (with the message saying how to get them)
unless ATTNDUALITY_REQUIRE_DATA=1 (as in CI), which turns the skip into a failure."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from attnduality.data import MissingDataError, load_fashion_mnist, load_pang_lee


def need(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except MissingDataError as e:
        if os.environ.get("ATTNDUALITY_REQUIRE_DATA") == "1":
            raise
        pytest.skip(f"{e} (ATTNDUALITY_REQUIRE_DATA=1 makes this a failure)")


@pytest.fixture(scope="session")
def minilm() -> Any:
    from attnduality.backbones import load_minilm

    return need(load_minilm)


@pytest.fixture(scope="session")
def sentences() -> Any:
    return need(load_pang_lee, "sentences")


@pytest.fixture(scope="session")
def fashion_mnist() -> Any:
    return need(load_fashion_mnist)


@pytest.fixture(scope="session")
def tiny_vit() -> Any:
    """A small ViT pre-trained on 6,000 MNIST images for one epoch (about 3 s; cached by its configuration)."""
    from attnduality.backbones import PretrainConfig, ViTConfig, pretrain_vit_mnist

    cfg = PretrainConfig(epochs=1, batch_size=32, lr=1e-2, n_train=6000, n_test=2000,
                         vit=ViTConfig(patch_size=7, dim=32, depth=2, heads=2))
    return need(pretrain_vit_mnist, cfg, force=True, progress=False)
