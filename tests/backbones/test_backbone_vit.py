"""The small ViT: pre-training on MNIST (cached checkpoint), freezing, Fashion-MNIST token features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from attnduality.backbones import (
    PretrainConfig,
    SmallViT,
    ViTConfig,
    fashion_mnist_vit_features,
    load_pretrained_vit,
    preprocess,
    pretrain_vit_mnist,
    vit_token_features,
)
from attnduality.data import MissingDataError


def test_architecture_and_config() -> None:
    model = SmallViT()
    x = torch.zeros(2, 1, 28, 28)
    assert model.tokens(x).shape == (2, 49, 64) and model(x).shape == (2, 10) and ViTConfig().n_tokens == 49
    assert ViTConfig(patch_size=7).n_tokens == 16
    with pytest.raises(ValueError, match="multiple of patch_size"):
        ViTConfig(patch_size=5)
    with pytest.raises(ValueError, match="divisible by heads"):
        ViTConfig(dim=30, heads=4)
    with pytest.raises(ValueError, match="invalid pre-training config"):
        PretrainConfig(epochs=0)


def test_pretraining_learns_and_the_checkpoint_reloads(tiny_vit) -> None:
    assert tiny_vit.test_accuracy > 0.4  # 10 classes: chance is 0.1; 190 steps of training
    assert tiny_vit.meta["n_train"] == 6000 and tiny_vit.path.is_file() and tiny_vit.path.suffix == ".pt"
    assert not tiny_vit.model.training and not any(p.requires_grad for p in tiny_vit.model.parameters())
    again = load_pretrained_vit(tiny_vit.config)
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(again.model(x), tiny_vit.model(x)) and again.test_accuracy == tiny_vit.test_accuracy


def test_pretraining_is_deterministic_in_the_seed() -> None:
    def run(seed: int) -> dict[str, torch.Tensor]:
        cfg = PretrainConfig(seed=seed, epochs=1, batch_size=64, n_train=256, n_test=64,
                             vit=ViTConfig(patch_size=7, dim=16, depth=1, heads=2))
        try:
            return pretrain_vit_mnist(cfg, force=True, progress=False).model.state_dict()
        except MissingDataError as e:
            pytest.skip(str(e))

    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(a[k], b[k]) for k in a) and not torch.equal(a["head.weight"], c["head.weight"])


def test_missing_checkpoint_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError, match=r"python -m attnduality.backbones.vit --seed 12345 --epochs 2"):
        load_pretrained_vit(PretrainConfig(seed=12345), cache=tmp_path)


def test_fashion_mnist_features_and_a_linear_probe(tiny_vit, fashion_mnist, tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    f = fashion_mnist_vit_features(tiny_vit, "test", n=1500, cache=tmp_path, progress=False)
    assert f.X.shape == (1500, 16, 32) and f.mask.all() and np.array_equal(f.y, fashion_mnist.y_test[:1500])
    with torch.no_grad():
        ref = tiny_vit.model.tokens(preprocess(fashion_mnist.X_test[:4])).numpy()
    np.testing.assert_allclose(f.X[:4], ref, atol=1e-5)
    again = fashion_mnist_vit_features(tiny_vit, "test", n=1500, cache=tmp_path, progress=False)
    assert isinstance(again.X, np.memmap) and again.path == f.path
    pooled = vit_token_features(tiny_vit, fashion_mnist.X_test[:10], name="fm", pool_dim=8, use_cache=False)
    assert pooled.X.shape == (10, 16, 8) and pooled.path is None
    # transfer: a linear probe on frozen MNIST-ViT tokens (mean over tokens) beats chance (0.1) on Fashion-MNIST
    Z = np.asarray(f.X).mean(1)
    probe = LogisticRegression(max_iter=500).fit(Z[:1000], f.y[:1000])
    assert probe.score(Z[1000:], f.y[1000:]) > 0.4  # 0.55 measured
    with pytest.raises(ValueError, match="part must be"):
        fashion_mnist_vit_features(tiny_vit, "val")
    with pytest.raises(ValueError, match="uint8 images"):
        vit_token_features(tiny_vit, fashion_mnist.X_test[:2].astype(float), name="x")
