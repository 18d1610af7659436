"""A small vision transformer that the project pre-trains on MNIST, then freezes as the backbone for Fashion-MNIST.

No pre-trained ViT can be had offline, so this one is ours: patches of 4×4 pixels give s = 49 tokens of width
``dim``. ``python -m attnduality.backbones.vit`` pre-trains it (a few minutes on 2 CPU cores with the defaults)
and stores the checkpoint in the cache (``vit/``), never in git; :func:`load_pretrained_vit` reads it back and
:func:`vit_token_features` extracts (N, s, dim) token features with an on-disk cache.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..data import MissingDataError, cache_dir, cache_key
from .features import TokenFeatures, build_cached, feature_dir, load_cached, pool_channels

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
PRETRAIN_COMMAND = "python -m attnduality.backbones.vit"


@dataclass(frozen=True)
class ViTConfig:
    """Architecture: ``image_size`` must be a multiple of ``patch_size``; s = (image_size / patch_size)²."""

    image_size: int = 28
    patch_size: int = 4
    dim: int = 64
    depth: int = 4
    heads: int = 4
    mlp_ratio: int = 2
    n_classes: int = 10

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size or min(asdict(self).values()) < 1:
            raise ValueError(f"invalid ViT config {self}: sizes must be positive, image_size a multiple of patch_size")
        if self.dim % self.heads:
            raise ValueError(f"dim={self.dim} must be divisible by heads={self.heads}")

    @property
    def n_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2


class SmallViT(nn.Module):
    """Patch embedding + learned positions, pre-norm transformer blocks, final LayerNorm; the classifier averages the
    tokens (no [CLS] token, matching the token-averaging convex heads)."""

    def __init__(self, config: ViTConfig = ViTConfig()) -> None:
        super().__init__()
        self.config = config
        c = config
        self.patch = nn.Conv2d(1, c.dim, kernel_size=c.patch_size, stride=c.patch_size)
        self.pos = nn.Parameter(torch.randn(1, c.n_tokens, c.dim) * 0.02)
        layer = nn.TransformerEncoderLayer(c.dim, c.heads, c.mlp_ratio * c.dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, c.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(c.dim)
        self.head = nn.Linear(c.dim, c.n_classes)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, H, W), normalised (see :func:`preprocess`) -> token features (B, s, dim)."""
        t = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        return self.norm(self.blocks(t))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.tokens(x).mean(1))


def preprocess(images: np.ndarray) -> torch.Tensor:
    """uint8 images (N, H, W) -> float32 tensor (N, 1, H, W) normalised with the MNIST mean and std."""
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images of shape (N, H, W), got {images.dtype} {images.shape}")
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    return x.sub_(MNIST_MEAN).div_(MNIST_STD).unsqueeze(1)


@dataclass(frozen=True)
class PretrainConfig:
    """Pre-training on MNIST: AdamW with a one-cycle schedule, cross-entropy. ``n_train`` limits the training images
    (None: all 60,000); ``n_test`` the images used to report accuracy (None: all 10,000)."""

    seed: int = 0
    epochs: int = 2
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.05
    n_train: int | None = None
    n_test: int | None = None
    vit: ViTConfig = field(default_factory=ViTConfig)

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"invalid pre-training config {self}")
        for n in (self.n_train, self.n_test):
            if n is not None and n < 1:
                raise ValueError(f"n_train/n_test must be >= 1 or None, got {n}")

    def key(self) -> str:
        return cache_key({**asdict(self), "v": 1})


@dataclass(frozen=True, eq=False)
class PretrainedViT:
    """A frozen pre-trained ViT (eval mode, no gradients), its checkpoint path and MNIST test accuracy."""

    model: SmallViT
    config: PretrainConfig
    path: Path
    test_accuracy: float
    meta: dict[str, Any]


def _checkpoint(config: PretrainConfig, cache: str | os.PathLike[str] | None) -> Path:
    return cache_dir(cache) / "vit" / f"mnist-vit-{config.key()}.pt"


def _freeze(model: SmallViT) -> SmallViT:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@torch.no_grad()
def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, batch_size: int = 1000) -> float:
    """Top-1 accuracy of ``model`` on uint8 images."""
    model.eval()
    correct = 0
    for i in range(0, len(images), batch_size):
        pred = model(preprocess(images[i:i + batch_size])).argmax(1).numpy()
        correct += int((pred == labels[i:i + batch_size]).sum())
    return correct / len(images)


def load_pretrained_vit(config: PretrainConfig = PretrainConfig(),
                        cache: str | os.PathLike[str] | None = None) -> PretrainedViT:
    """The checkpoint pre-trained with ``config``; :class:`MissingDataError` with the command if it is not there."""
    path = _checkpoint(config, cache)
    if not path.is_file():
        raise MissingDataError(f"no pre-trained ViT for {config} in {path}. Pre-train it with: {PRETRAIN_COMMAND}"
                               f" --seed {config.seed} --epochs {config.epochs}"
                               + (f" --n-train {config.n_train}" if config.n_train else "")
                               + " (or call attnduality.backbones.pretrain_vit_mnist with the same config)")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt.get("key") != config.key():
        raise ValueError(f"{path} was written for another configuration; delete it and pre-train again")
    model = SmallViT(config.vit)
    model.load_state_dict(ckpt["state_dict"])
    meta = json.loads(ckpt["meta"])
    return PretrainedViT(_freeze(model), config, path, float(meta["test_accuracy"]), meta)


def pretrain_vit_mnist(config: PretrainConfig = PretrainConfig(), cache: str | os.PathLike[str] | None = None,
                       force: bool = False, progress: bool = True) -> PretrainedViT:
    """Pre-train :class:`SmallViT` on MNIST (``load_mnist``; needs ``python -m attnduality.data.setup mnist``), or
    load the cached checkpoint for the same config. Deterministic in ``config.seed`` for a fixed thread count."""
    from ..data import load_mnist
    from ..progress import progress as progress_bar
    from ..training import Step, train

    path = _checkpoint(config, cache)
    if path.is_file() and not force:
        return load_pretrained_vit(config, cache)
    mnist = load_mnist(cache)
    Xtr, ytr = mnist.X_train[: config.n_train], mnist.y_train[: config.n_train]
    Xte, yte = mnist.X_test[: config.n_test], mnist.y_test[: config.n_test]
    torch.manual_seed(config.seed)
    model = SmallViT(config.vit)
    gen = torch.Generator().manual_seed(config.seed)
    steps = config.epochs * -(-len(Xtr) // config.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=steps, pct_start=0.1)
    x_all, y_all = preprocess(Xtr), torch.from_numpy(ytr)
    t0, losses = time.perf_counter(), []
    bar = progress_bar(desc="pre-train ViT on MNIST", total=steps, unit="step", enabled=progress)

    def epoch(_: int) -> Any:
        perm = torch.randperm(len(Xtr), generator=gen)
        return (perm[i:i + config.batch_size] for i in range(0, len(Xtr), config.batch_size))

    def logged(step: Step) -> None:
        losses.append(float(step.loss))
        bar.update()
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")

    model.train()
    train(model, lambda net, b: nn.functional.cross_entropy(net(x_all[b]), y_all[b]), opt, config.epochs, epoch,
          scheduler=sched, on_step=logged)
    bar.close()
    train_s = time.perf_counter() - t0
    acc = accuracy(model, Xte, yte)
    meta = {"test_accuracy": acc, "n_test": len(Xte), "n_train": len(Xtr), "train_seconds": train_s,
            "final_loss": float(np.mean(losses[-50:])), "threads": torch.get_num_threads(), "config": asdict(config)}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}-{os.getpid()}")
    torch.save({"state_dict": model.state_dict(), "key": config.key(), "meta": json.dumps(meta)}, tmp)
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    return PretrainedViT(_freeze(model), config, path, acc, meta)


def vit_token_features(backbone: PretrainedViT, images: np.ndarray, *, name: str,
                       y: np.ndarray | None = None, pool_dim: int | None = None, batch_size: int = 500,
                       cache: str | os.PathLike[str] | None = None, use_cache: bool = True,
                       progress: bool = True) -> TokenFeatures:
    """Frozen-ViT token features (N, s, dim) of uint8 images (N, 28, 28), optionally channel-pooled to ``pool_dim``,
    cached as a memory-mapped ``.npy`` under ``features/<name>-<hash>`` (hash of the checkpoint config, the images,
    ``pool_dim``). Every token is real, so ``mask`` is all True."""
    from ..progress import progress as progress_bar

    dim = backbone.config.vit.dim
    if pool_dim is not None and not 1 <= pool_dim <= dim:
        raise ValueError(f"pool_dim must lie in 1..{dim} or be None, got {pool_dim}")
    if images.ndim != 3 or images.dtype != np.uint8 or images.shape[1:] != (backbone.config.vit.image_size,) * 2:
        raise ValueError(f"expected uint8 images (N, {backbone.config.vit.image_size}, "
                         f"{backbone.config.vit.image_size}), got {images.dtype} {images.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    import hashlib

    config = {"backbone": f"mnist-vit-{backbone.config.key()}", "pool_dim": pool_dim, "n": len(images),
              "images": hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()[:16]}
    path = feature_dir(name, config, cache)
    if use_cache and (hit := load_cached(path)) is not None:
        return hit
    s, d = backbone.config.vit.n_tokens, pool_dim or dim

    def fill(X: np.ndarray, mask: np.ndarray) -> None:
        for i in progress_bar(range(0, len(images), batch_size), f"ViT features ({name})", unit="batch",
                              enabled=progress):
            with torch.inference_mode():
                h = backbone.model.tokens(preprocess(images[i:i + batch_size])).numpy()
            X[i:i + batch_size] = h if pool_dim is None else pool_channels(h, pool_dim)
        mask[:] = True

    meta = {**config, "name": name, "s": s, "d": d}
    if use_cache:
        return build_cached(path, (len(images), s, d), meta, fill, y)
    X, mask = np.zeros((len(images), s, d), np.float32), np.zeros((len(images), s), np.bool_)
    fill(X, mask)
    return TokenFeatures(X, mask, None if y is None else np.asarray(y, np.int64), None, meta)


def fashion_mnist_vit_features(backbone: PretrainedViT, part: str = "train", n: int | None = None,
                               **kwargs: Any) -> TokenFeatures:
    """Token features of the first ``n`` Fashion-MNIST ``part`` ("train" / "test") images, with labels."""
    from ..data import load_fashion_mnist

    if part not in ("train", "test"):
        raise ValueError(f"part must be 'train' or 'test', got {part!r}")
    fm = load_fashion_mnist()
    X, y = getattr(fm, f"X_{part}")[:n], getattr(fm, f"y_{part}")[:n]
    return vit_token_features(backbone, X, name=f"fashion_mnist-{part}", y=y, **kwargs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=PRETRAIN_COMMAND, description="Pre-train the small ViT on MNIST (cached).")
    d = PretrainConfig()
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--n-train", type=int, default=None, help="training images (default: all 60,000)")
    p.add_argument("--cache", default=None,
                   help="cache directory (default: $ATTNDUALITY_CACHE or ~/.cache/attnduality)")
    p.add_argument("--force", action="store_true", help="train again even if the checkpoint exists")
    p.add_argument("--features", action="store_true", help="also extract Fashion-MNIST token features")
    a = p.parse_args(argv)
    cfg = PretrainConfig(seed=a.seed, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, n_train=a.n_train)
    vit = pretrain_vit_mnist(cfg, a.cache, force=a.force)
    print(f"ViT {cfg.vit}: MNIST test accuracy {vit.test_accuracy:.4f} "
          f"(trained in {vit.meta['train_seconds']:.0f} s) -> {vit.path}")
    if a.features:
        for part in ("train", "test"):
            f = fashion_mnist_vit_features(vit, part, cache=a.cache)
            print(f"Fashion-MNIST {part}: {f.X.shape} -> {f.path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
