"""Token features of any local Hugging Face ``transformers`` model, for the certified convex heads.

:func:`token_features` (text: a tokenizer and strings) and :func:`image_features` (vision: an image processor and
images) run a frozen ``PreTrainedModel`` with ``output_hidden_states=True`` and keep the hidden states of one
``layer`` as (N, s, d) float32 :class:`~attnduality.backbones.features.TokenFeatures` with a padding mask,
optionally channel-pooled to ``pool_dim`` (as in Sahiner et al. §5). They are written once as memory-mapped
``.npy`` files under ``$ATTNDUALITY_CACHE/features/<name>-<hash>``, like :mod:`attnduality.backbones`; the hash
covers a sha256 of the model's weights (:func:`weights_digest`), its config, the layer, the pooling, the tokenizer
or processor settings and the inputs themselves, so changing any of them computes new features and nothing stale
is ever read back.

Nothing is downloaded: load the model yourself, e.g. ``AutoModel.from_pretrained(path, local_files_only=True)``.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import math
import os
import weakref
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..backbones.features import TokenFeatures, build_cached, feature_dir, load_cached, pool_channels
from ..data import require_module

__all__ = ["SUPPORTED_IMAGE", "SUPPORTED_TEXT", "image_features", "token_features", "weights_digest"]

SUPPORTED_TEXT = (
    "transformers PreTrainedModels that take input_ids and return hidden_states: encoders (BERT, RoBERTa, "
    "DistilBERT, ELECTRA, MiniLM, ...), decoders (GPT-2, Llama, ...) and the encoder of encoder-decoder models "
    "(T5, BART, ...)"
)
SUPPORTED_IMAGE = (
    "transformers PreTrainedModels that take pixel_values and return (batch, tokens, d) hidden_states: ViT-style "
    "models (ViT, DeiT, BEiT, DINOv2, ...)"
)
_MAX_CONTEXT = 1_000_000  # tokenizers without a limit report model_max_length ≈ 1e30

CacheArg = str | os.PathLike[str] | None | bool


# ----------------------------------------------------------------------------------------------------------------
# model checks and hashing
# ----------------------------------------------------------------------------------------------------------------
_DIGESTS: weakref.WeakKeyDictionary[Any, tuple[tuple[Any, ...], str]] = weakref.WeakKeyDictionary()


def weights_digest(model: Any) -> str:
    """sha256 (hex) over the model's ``state_dict``: every tensor's name, dtype, shape and bytes.

    Hashing reads every weight once (about 0.1 s for MiniLM's 91 MB; roughly 0.5–1 s per GB), so the digest is
    remembered per model object and reused while its tensors keep the same storage and in-place version counters
    (``param.add_(...)`` under ``no_grad`` is noticed; a write through ``param.data`` is not: hash a fresh copy).
    """
    import torch

    sd = model.state_dict(keep_vars=True)
    signature = tuple((k, t.data_ptr(), t._version) for k, t in sd.items())
    memo = _DIGESTS.get(model)
    if memo is not None and memo[0] == signature:
        return memo[1]
    h = hashlib.sha256()
    for k, t in sd.items():
        t = t.detach()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}\0".encode())
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().data)
    digest = h.hexdigest()
    _DIGESTS[model] = (signature, digest)
    return digest


def _check_model(model: Any, wants: str) -> Any:
    """The module to run (the encoder of an encoder-decoder model), or a ValueError naming what is supported."""
    tf = require_module("transformers", "attnduality.hf")
    text = wants == "input_ids"
    supported = SUPPORTED_TEXT if text else SUPPORTED_IMAGE
    if not isinstance(model, tf.PreTrainedModel):
        raise ValueError(
            f"unsupported model {type(model).__name__}: expected a transformers PreTrainedModel; supported: {supported}"
        )
    takes = getattr(model, "main_input_name", None)
    if getattr(model.config, "is_encoder_decoder", False) and text and hasattr(model, "get_encoder"):
        return model.get_encoder()
    if takes != wants:
        hint = {
            "pixel_values": "it is a vision model: use image_features",
            "input_ids": "it is a text model: use token_features",
        }.get(str(takes), "")
        raise ValueError(
            f"unsupported model {type(model).__name__} (takes {takes}, not {wants})"
            f"{'; ' + hint if hint else ''}; supported: {supported}"
        )
    return model


def _n_states(model: Any) -> int | None:
    """Number of hidden states (embeddings + one per layer) if the config says, else None."""
    n = getattr(model.config, "num_hidden_layers", None)
    return n + 1 if isinstance(n, int) else None


def _check_args(
    n: int, labels: Any, layer: int, n_states: int | None, pool_dim: int | None, d: int | None, batch_size: int
) -> np.ndarray | None:
    if isinstance(layer, bool) or not isinstance(layer, int | np.integer):
        raise ValueError(f"layer must be an integer, got {layer!r}")
    if n_states is not None and not -n_states <= layer < n_states:
        raise ValueError(
            f"layer {layer} is out of range: the model has {n_states} hidden states (0 = embeddings, "
            f"{n_states - 1} = last layer), so layer must lie in {-n_states}..{n_states - 1}"
        )
    if pool_dim is not None and (
        isinstance(pool_dim, bool) or not isinstance(pool_dim, int | np.integer) or pool_dim < 1
    ):
        raise ValueError(f"pool_dim must be an integer >= 1 or None, got {pool_dim!r}")
    if pool_dim is not None and d is not None and pool_dim > d:
        raise ValueError(f"pool_dim {pool_dim} exceeds the model's hidden size d = {d}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if labels is None:
        return None
    y = np.asarray(labels)
    if y.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) (one per input), got {y.shape}")
    if y.dtype.kind not in "biu":
        raise ValueError(
            f"labels must be integers, got dtype {y.dtype} (encode them, e.g. with "
            "np.unique(labels, return_inverse=True))"
        )
    return y.astype(np.int64)


def _config_dict(model: Any) -> dict[str, Any]:
    tf = require_module("transformers", "attnduality.hf")
    cfg = {k: v for k, v in model.config.to_dict().items() if not k.startswith("_") and k != "transformers_version"}
    return {"class": type(model).__name__, "config": cfg, "transformers": tf.__version__}


@contextlib.contextmanager
def _frozen(model: Any) -> Iterator[Any]:
    """Eval mode (no dropout) and inference mode for the duration; the model's training flag is restored."""
    import torch

    was = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield model
    finally:
        model.train(was)


def _device(model: Any) -> Any:
    import torch

    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _hidden(model: Any, layer: int, supported: str, **inputs: Any) -> np.ndarray:
    """Hidden states of ``layer`` as (batch, tokens, d) float32, checked to be finite."""
    try:
        out = model(**inputs, output_hidden_states=True, return_dict=True)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(
            f"running {type(model).__name__} failed ({' '.join(str(e).split())[:300]}); supported: {supported}"
        ) from e
    hs = getattr(out, "hidden_states", None)
    if hs is None:
        raise ValueError(
            f"unsupported model {type(model).__name__}: it returns no hidden_states; supported: {supported}"
        )
    if not -len(hs) <= layer < len(hs):
        raise ValueError(
            f"layer {layer} is out of range: the model returns {len(hs)} hidden states, so layer "
            f"must lie in {-len(hs)}..{len(hs) - 1}"
        )
    h = hs[layer]
    if h.ndim != 3:
        raise ValueError(
            f"unsupported model {type(model).__name__}: hidden states of shape {tuple(h.shape)}, not "
            f"(batch, tokens, d); supported: {supported}"
        )
    h = h.float().cpu().numpy()
    if not np.isfinite(h).all():
        raise ValueError(
            f"{type(model).__name__} produced NaN or infinite hidden states at layer {layer} (broken "
            "weights, or float16 overflow: load the model in float32)"
        )
    return h


# ----------------------------------------------------------------------------------------------------------------
# the shared extraction loop
# ----------------------------------------------------------------------------------------------------------------
def _extract(
    *,
    batches: list[np.ndarray],
    run: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
    n: int,
    s: int | None,
    pool_dim: int | None,
    key: dict[str, Any],
    meta: dict[str, Any],
    name: str,
    cache: CacheArg,
    y: np.ndarray | None,
    progress: bool | None,
    what: str,
) -> TokenFeatures:
    """Run ``run(idx) -> (h (b, L, d), mask (b, L))`` over ``batches`` into an (N, s, d) array, cached under
    ``features/<name>-<hash(key)>`` unless ``cache is False``; ``s=None`` takes the first batch's token count."""
    path = None if cache is False else feature_dir(name, key, None if cache is True else cache)
    if path is not None and (hit := load_cached(path)) is not None:
        return TokenFeatures(hit.X, hit.mask, y, hit.path, hit.meta)

    from ..progress import progress as progress_bar

    def one(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, m = run(idx)
        if pool_dim is not None:
            if pool_dim > h.shape[-1]:
                raise ValueError(f"pool_dim {pool_dim} exceeds the model's hidden size d = {h.shape[-1]}")
            h = pool_channels(h, pool_dim)
        return h, m

    h0, m0 = one(batches[0])  # the first batch fixes d (and s for images)
    s = h0.shape[1] if s is None else s
    d = h0.shape[2]

    def fill(X: np.ndarray, mask: np.ndarray) -> None:
        show = progress if progress is not None else len(batches) > 1
        for b, idx in enumerate(progress_bar(batches, f"{what} features ({name})", unit="batch", enabled=show)):
            h, m = (h0, m0) if b == 0 else one(idx)
            if h.shape[2] != d or (what == "image" and h.shape[1] != s):
                raise ValueError(
                    f"inputs give hidden states of different shapes ({h.shape[1:]} vs ({s}, {d})); "
                    "give images of one size or a processor that resizes them"
                )
            L = min(h.shape[1], s)
            X[idx, :L] = h[:, :L] * m[:, :L, None]
            mask[idx, :L] = m[:, :L]

    full_meta = {**meta, **key, "name": name, "n": n, "s": s, "d": d}
    if path is None:
        X, mask = np.zeros((n, s, d), np.float32), np.zeros((n, s), np.bool_)
        fill(X, mask)
        return TokenFeatures(X, mask, y, None, full_meta)
    out = build_cached(path, (n, s, d), full_meta, fill)
    return TokenFeatures(out.X, out.mask, y, out.path, out.meta)


def _digest(chunks: Iterator[bytes]) -> str:
    h = hashlib.sha256()
    for c in chunks:
        h.update(hashlib.sha256(c).digest())
    return h.hexdigest()


# ----------------------------------------------------------------------------------------------------------------
# text
# ----------------------------------------------------------------------------------------------------------------
def _context(model: Any, tokenizer: Any) -> int | None:
    """The longest input the model takes: the tokenizer's ``model_max_length`` and the config's
    ``max_position_embeddings``, whichever is smaller (None if neither is set)."""
    limits = [getattr(tokenizer, "model_max_length", None), getattr(model.config, "max_position_embeddings", None)]
    limits = [int(v) for v in limits if isinstance(v, int | float) and 0 < v < _MAX_CONTEXT]
    return min(limits) if limits else None


def token_features(
    model: Any,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    labels: Any = None,
    layer: int = -1,
    pool_dim: int | None = None,
    max_tokens: int | None = None,
    batch_size: int = 32,
    cache: CacheArg = None,
    progress: bool | None = None,
    name: str | None = None,
) -> TokenFeatures:
    """(N, s, d) token features of ``texts`` from hidden state ``layer`` of a text model, cached on disk.

    ``model``: a transformers ``PreTrainedModel`` taking ``input_ids`` (see :data:`SUPPORTED_TEXT`; for an
    encoder-decoder model its encoder runs); ``tokenizer`` its tokenizer. ``layer`` indexes the model's
    ``hidden_states`` (0 = embeddings, −1 = last layer's output). Each text is tokenised with its special tokens
    ([CLS]/[SEP] for BERT) and run with its whole length in context (up to the model's limit, see ``meta["context"]``);
    then the first ``max_tokens`` token states are kept, so s = min(longest text, ``max_tokens``). Padded positions
    are zero and ``mask`` is False there. ``pool_dim`` average-pools the d channels to ``pool_dim`` bins
    (:func:`~attnduality.backbones.features.pool_channels`). ``labels`` (N,) integers are attached as ``y``.

    ``cache``: None for ``$ATTNDUALITY_CACHE`` (default ``~/.cache/attnduality``), a folder, or False to keep the
    arrays in memory. The cache key hashes the weights (:func:`weights_digest`), config, layer, pooling,
    ``max_tokens``, the tokenizer's class and the token ids it produced, and the texts; ``X`` comes back as a
    read-only memmap. ``progress``: a bar (or plain log lines) per batch; None shows it when there are several batches.
    ``name`` labels the cache folder (default ``hf-<model_type>-text``). The model runs in eval mode under
    ``torch.inference_mode`` on its own device; its training flag is restored.

    Raises ``ValueError`` for an unsupported model, a layer out of range, empty texts, labels of the wrong length,
    ``pool_dim`` > d, or NaN outputs.
    """
    texts = list(texts) if not isinstance(texts, str) else [texts]
    if not texts or any(not isinstance(t, str) for t in texts):
        raise ValueError("texts must be a non-empty sequence of str")
    run_model = _check_model(model, "input_ids")
    n_states = _n_states(model)
    d_cfg = getattr(model.config, "hidden_size", None)
    y = _check_args(
        len(texts), labels, layer, n_states, pool_dim, d_cfg if isinstance(d_cfg, int) else None, batch_size
    )
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int | np.integer) or max_tokens < 1
    ):
        raise ValueError(f"max_tokens must be an integer >= 1 or None, got {max_tokens!r}")
    context = _context(model, tokenizer)
    try:
        ids = tokenizer(texts, truncation=context is not None, max_length=context)["input_ids"]
    except Exception as e:  # a processor or object that is no tokenizer
        raise ValueError(f"cannot tokenise the texts with {type(tokenizer).__name__}: {e}") from e
    lengths = np.array([len(i) for i in ids])
    if lengths.min() == 0:
        raise ValueError(f"text {int(np.argmin(lengths))} tokenises to no tokens")
    s = int(lengths.max()) if max_tokens is None else min(int(lengths.max()), int(max_tokens))
    key = {
        "kind": "text",
        "weights": weights_digest(model),
        "model": _config_dict(model),
        "layer": int(layer),
        "pool_dim": pool_dim,
        "max_tokens": max_tokens,
        "context": context,
        "tokenizer": type(tokenizer).__name__,
        "texts": _digest(t.encode("utf-8") for t in texts),
        "ids": _digest(np.asarray(i, np.int64).tobytes() for i in ids),
    }
    meta = {
        "model_name": getattr(model.config, "_name_or_path", ""),
        "share_cut_by_max_tokens": float((lengths > s).mean()),
        "share_cut_by_context": float((lengths >= (context or math.inf)).mean()),
    }
    import torch

    pad = getattr(tokenizer, "pad_token_id", None)
    pad = 0 if pad is None else int(pad)
    dev = _device(run_model)
    params = inspect.signature(run_model.forward).parameters
    takes_mask = "attention_mask" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    order = np.argsort(-lengths, kind="stable")  # similar lengths per batch: little padding
    batches = [np.sort(order[b : b + batch_size]) for b in range(0, len(order), batch_size)]

    def run(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        L = int(lengths[idx].max())
        input_ids = torch.full((len(idx), L), pad, dtype=torch.long)
        attn = torch.zeros((len(idx), L), dtype=torch.long)
        for r, i in enumerate(idx):
            input_ids[r, : lengths[i]] = torch.as_tensor(ids[i])
            attn[r, : lengths[i]] = 1
        inputs = {"input_ids": input_ids.to(dev)}
        if takes_mask:
            inputs["attention_mask"] = attn.to(dev)
        with _frozen(run_model):
            h = _hidden(run_model, layer, SUPPORTED_TEXT, **inputs)
        return h, attn.numpy().astype(bool)

    return _extract(
        batches=batches,
        run=run,
        n=len(texts),
        s=s,
        pool_dim=pool_dim,
        key=key,
        meta=meta,
        name=name or f"hf-{getattr(model.config, 'model_type', 'model')}-text",
        cache=cache,
        y=y,
        progress=progress,
        what="text",
    )


# ----------------------------------------------------------------------------------------------------------------
# images
# ----------------------------------------------------------------------------------------------------------------
ImageLike = Any  # PIL.Image.Image | np.ndarray (H, W[, C]) | str | os.PathLike (an image file)


def _image_bytes(im: ImageLike) -> bytes:
    if isinstance(im, str | os.PathLike):
        return b"file:" + Path(im).read_bytes()
    if isinstance(im, np.ndarray):
        return f"array:{im.dtype}:{im.shape}:".encode() + np.ascontiguousarray(im).tobytes()
    if hasattr(im, "tobytes") and hasattr(im, "mode"):  # PIL
        return f"pil:{im.mode}:{im.size}:".encode() + im.tobytes()
    raise ValueError(f"images must be PIL images, numpy arrays or image file paths, got {type(im).__name__}")


def _open(im: ImageLike, channels: int) -> Any:
    if not isinstance(im, str | os.PathLike):
        return im
    pil = require_module("PIL.Image", "Loading image files")
    with pil.open(im) as f:
        return f.convert("L" if channels == 1 else "RGB")


def image_features(
    model: Any,
    processor: Any,
    images: Any,
    *,
    labels: Any = None,
    layer: int = -1,
    pool_dim: int | None = None,
    batch_size: int = 32,
    cache: CacheArg = None,
    progress: bool | None = None,
    name: str | None = None,
) -> TokenFeatures:
    """(N, s, d) token features of ``images`` from hidden state ``layer`` of a vision model, cached on disk.

    ``model``: a transformers ``PreTrainedModel`` taking ``pixel_values`` (ViT-style, see :data:`SUPPORTED_IMAGE`);
    ``processor`` its image processor (``AutoImageProcessor``), applied to ``images``: PIL images, (H, W[, C])
    arrays or image file paths (opened with PIL, converted to RGB, or L for one-channel models). With
    ``processor=None``, ``images`` are the model's pixel values already: an (N, C, H, W) tensor or array. The tokens
    are all tokens of hidden state ``layer`` (0 = patch embeddings, −1 = last layer's output, before any final
    layer norm the model applies to ``last_hidden_state``): the [CLS] token first (and any distillation/register
    tokens), then the patches, so s = 1 + patches for ViT and ``mask`` is all True.

    ``labels``, ``pool_dim``, ``batch_size``, ``cache``, ``progress``, ``name`` (default ``hf-<model_type>-image``)
    as in :func:`token_features`; the cache key hashes the weights, config, layer, pooling, the processor's
    settings and the images' bytes (file contents for paths).
    """
    import torch

    run_model = _check_model(model, "pixel_values")
    pixels: np.ndarray | None = None
    if processor is None:
        if not isinstance(images, torch.Tensor | np.ndarray) or np.ndim(images) != 4:
            raise ValueError(
                "without a processor, images must be the model's pixel values: an (N, C, H, W) tensor or "
                f"array, got {type(images).__name__} of {np.ndim(images)} dimensions"
            )
        pixels = np.ascontiguousarray(
            images.detach().cpu().float().numpy() if isinstance(images, torch.Tensor) else images, np.float32
        )
        items: list[Any] = []
        n = len(pixels)
    else:
        if isinstance(images, str | os.PathLike) or not isinstance(images, Sequence | np.ndarray | torch.Tensor):
            raise ValueError(f"images must be a sequence of images, got {type(images).__name__}")
        items = list(images)
        n = len(items)
    if n == 0:
        raise ValueError("images must not be empty")
    n_states = _n_states(model)
    d_cfg = getattr(model.config, "hidden_size", None)
    y = _check_args(n, labels, layer, n_states, pool_dim, d_cfg if isinstance(d_cfg, int) else None, batch_size)
    if pixels is not None:
        data = _digest(iter([f"{pixels.shape}".encode(), pixels.tobytes()]))
        proc: Any = None
    else:
        data = _digest(_image_bytes(im) for im in items)
        to_dict = getattr(processor, "to_dict", None)
        proc = {"class": type(processor).__name__, "settings": to_dict() if callable(to_dict) else repr(processor)}
    key = {
        "kind": "image",
        "weights": weights_digest(model),
        "model": _config_dict(model),
        "layer": int(layer),
        "pool_dim": pool_dim,
        "processor": json.loads(json.dumps(proc, sort_keys=True, default=str)),
        "images": data,
    }
    channels = int(getattr(model.config, "num_channels", 3))
    dev = _device(run_model)
    batches = [np.arange(b, min(b + batch_size, n)) for b in range(0, n, batch_size)]

    def run(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if pixels is not None:
            pv = torch.from_numpy(pixels[idx])
        else:
            try:
                pv = processor(images=[_open(items[i], channels) for i in idx], return_tensors="pt")["pixel_values"]
            except (OSError, ValueError, TypeError, KeyError) as e:
                raise ValueError(
                    f"cannot process images {idx[0]}..{idx[-1]} with {type(processor).__name__}: "
                    f"{' '.join(str(e).split())[:300]}"
                ) from e
        param = next(run_model.parameters(), None)
        pv = pv.to(dev, dtype=param.dtype if param is not None and param.is_floating_point() else None)
        with _frozen(run_model):
            h = _hidden(run_model, layer, SUPPORTED_IMAGE, pixel_values=pv)
        return h, np.ones(h.shape[:2], np.bool_)

    meta = {
        "model_name": getattr(model.config, "_name_or_path", ""),
        "tokens": "all tokens of the hidden state, [CLS] (and any extra tokens) first, then the patches",
    }
    return _extract(
        batches=batches,
        run=run,
        n=n,
        s=None,
        pool_dim=pool_dim,
        key=key,
        meta=meta,
        name=name or f"hf-{getattr(model.config, 'model_type', 'model')}-image",
        cache=cache,
        y=y,
        progress=progress,
        what="image",
    )
