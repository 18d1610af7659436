"""Primal-Attention (Chen et al. 2023) or convexified attention (Ergen et al. 2022) inside a pre-trained
``transformers`` model: "Primal.+Trans." on a model one already has.

:func:`swap_attention` replaces the self-attention of chosen layers of BERT-, ViT- and GPT-2-style models by the
library's layers, in place, keeping the model's forward signature and masks. Supported self-attention modules (the
three layouts ``transformers`` uses for these families):

* ``query``/``key``/``value`` linears, output projection in the parent (``BertSelfAttention`` and its copies:
  RoBERTa, MiniLM, …): the parent's output projection, residual and LayerNorm stay; the new layer's own output
  projection starts as the identity;
* ``q_proj``/``k_proj``/``v_proj``/``o_proj`` linears (``ViTAttention`` and other recent encoders);
* a fused ``c_attn`` and a ``c_proj`` ``Conv1D`` (``GPT2Attention``; causal).

What is copied (shapes always allow it): ``"primal"`` takes ``[W_q; W_k]`` and their biases into its query/key
projection and the output projection where the module has one. It has no value projection (its scores
``[e; r]`` are mapped by its own concat layer), so ``W_v`` is not used, and its ``W_e, W_r, Λ`` and concat map start
from the layer's own initialisation. ``"convex"`` (:class:`~attnduality.nn.ConvexifiedAttention`) copies ``W_v`` and
the output projection; its mixing matrices start uniform (every row ``1/N`` over the allowed keys), so it reproduces
the original layer exactly when the original's attention is uniform (e.g. ``W_q = W_k = 0``) and not otherwise.
Primal-Attention never reproduces softmax attention (another kernel, no values); what carries over is its kernel's
queries and keys: its ``attention_matrix`` is ``cos(q_i, k_j)`` of the original projections.

Masks: the padding mask the model passes to its attention (2-D, or the 4-D additive/boolean masks of eager and
SDPA attention) becomes the layer's ``key_padding_mask``; the layer's own ``causal`` comes from the module
(``is_causal``). Not supported, with a clear error: cross-attention and incremental decoding with a key/value cache
(call the model with ``use_cache=False``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..nn import ConvexifiedAttention, PrimalAttention
from ..nn import ksvd_loss as _nn_ksvd_loss

__all__ = ["SwapInfo", "ksvd_loss", "swap_attention", "swapped_layers"]

SUPPORTED = (
    "query/key/value linears with the output projection in the parent (BERT, RoBERTa, MiniLM)",
    "q_proj/k_proj/v_proj/o_proj linears (ViT and recent encoders)",
    "fused c_attn/c_proj Conv1D (GPT-2)",
)
KINDS = ("primal", "convex")


@dataclass(frozen=True)
class SwapInfo:
    """What one swap did: the module path, its layout, the new layer kind, causality, and which original weights were
    copied (and which could not be)."""

    path: str
    layout: str
    kind: str
    causal: bool
    copied: tuple[str, ...]
    not_copied: tuple[str, ...]


def _layout(module: nn.Module) -> str | None:
    children = dict(module.named_children())
    if all(isinstance(children.get(k), nn.Linear) for k in ("query", "key", "value")):
        return "qkv"
    if all(isinstance(children.get(k), nn.Linear) for k in ("q_proj", "k_proj", "v_proj", "o_proj")):
        return "qkvo"
    if {"c_attn", "c_proj"} <= set(children) and type(children["c_attn"]).__name__ == "Conv1D":
        return "gpt2"
    return None


def _attention_modules(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """Every supported self-attention module, in module order (nested matches skipped)."""
    found: list[tuple[str, nn.Module, str]] = []
    for name, module in model.named_modules():
        if isinstance(module, _SwappedAttention):
            found.append((name, module, module.info.layout))
            continue
        if any(name.startswith(p + ".") for p, _, _ in found):
            continue
        layout = _layout(module)
        if layout is not None:
            found.append((name, module, layout))
    return found


def _projections(module: nn.Module, layout: str) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """``{"q", "k", "v"[, "o"]}`` → (weight (out, in) as a Linear's, bias or None)."""

    def lin(m: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
        return m.weight.detach(), None if m.bias is None else m.bias.detach()

    if layout == "qkv":
        return {"q": lin(module.query), "k": lin(module.key), "v": lin(module.value)}
    if layout == "qkvo":
        return {"q": lin(module.q_proj), "k": lin(module.k_proj), "v": lin(module.v_proj), "o": lin(module.o_proj)}
    w, b = module.c_attn.weight.detach(), module.c_attn.bias.detach()  # Conv1D: x @ w + b, w (D, 3D)
    d = w.shape[0]
    out = {name: (w[:, i * d : (i + 1) * d].T, b[i * d : (i + 1) * d]) for i, name in enumerate("qkv")}
    out["o"] = (module.c_proj.weight.detach().T, module.c_proj.bias.detach())
    return out


def _copy_linear(dst: nn.Linear, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    with torch.no_grad():
        dst.weight.copy_(weight)
        if dst.bias is not None:
            dst.bias.copy_(bias if bias is not None else torch.zeros_like(dst.bias))


def _key_padding_mask(mask: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """The (B, N) padding mask (True = padding) of the attention mask a model passes to its attention layers."""
    if mask is None:
        return None
    if mask.dim() == 4:
        allowed = mask if mask.dtype == torch.bool else mask > torch.finfo(mask.dtype).min / 2
        allowed = allowed.any(dim=-2)[:, 0]  # a key that no query may see is padding
    elif mask.dim() == 2:
        allowed = mask.bool() if mask.dtype == torch.bool else mask != 0
    else:
        raise ValueError(f"unsupported attention mask of shape {tuple(mask.shape)}")
    if allowed.shape[-1] != n:
        raise ValueError(
            f"the attention mask covers {allowed.shape[-1]} keys for {n} tokens: incremental decoding with a "
            "key/value cache is not supported by a swapped layer; call the model with use_cache=False"
        )
    return None if bool(allowed.all()) else ~allowed


class _SwappedAttention(nn.Module):
    """A library layer behind the calling convention of the ``transformers`` module it replaces."""

    def __init__(self, layer: nn.Module, info: SwapInfo, layer_idx: int | None) -> None:
        super().__init__()
        self.layer = layer
        self.info = info
        self.is_causal = info.causal
        self.layer_idx = layer_idx

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        if kwargs.get("encoder_hidden_states") is not None:
            raise ValueError(f"{self.info.path}: cross-attention is not supported by a swapped layer")
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None and hasattr(cache, "get_seq_length"):
            cache = getattr(cache, "self_attention_cache", cache)
            idx = 0 if self.layer_idx is None else self.layer_idx
            if cache.get_seq_length(idx) > 0:
                raise ValueError(
                    f"{self.info.path}: incremental decoding with a key/value cache is not supported by a swapped "
                    "layer; call the model with use_cache=False"
                )
            # placeholder keys/values, so that a later call continuing this cache is detected as one
            b, n = hidden_states.shape[:2]
            blank = hidden_states.new_zeros(b, 1, n, 1)
            cache.update(blank, blank, idx)
        mask = kwargs.get("attention_mask")
        if mask is None:
            mask = next((a for a in args if isinstance(a, torch.Tensor)), None)
        pad = _key_padding_mask(mask, hidden_states.shape[1])
        return self.layer(hidden_states, key_padding_mask=pad), None


def _resolve_layers(layers: int | Sequence[int] | str, count: int) -> list[int]:
    if isinstance(layers, str):
        if layers != "all":
            raise ValueError(f"layers must be an index, a list of indices or 'all', got {layers!r}")
        return list(range(count))
    idx = [layers] if isinstance(layers, int) else list(layers)
    if not idx:
        raise ValueError("layers is empty")
    out = []
    for i in idx:
        if not isinstance(i, int) or isinstance(i, bool) or not -count <= i < count:
            raise ValueError(f"layer index {i!r} out of range for {count} attention layers")
        out.append(i % count)
    return sorted(set(out))


def swap_attention(
    model: nn.Module,
    kind: str = "primal",
    layers: int | Sequence[int] | str = -1,
    *,
    rank: int = 20,
    rank_multi: int = 10,
    max_len: int | None = None,
    **layer_options: Any,
) -> nn.Module:
    """Replace the self-attention of ``layers`` (indices into the model's attention layers in module order, or
    ``"all"``) by :class:`~attnduality.nn.PrimalAttention` (``kind="primal"``, with ``rank`` s and ``rank_multi``)
    or :class:`~attnduality.nn.ConvexifiedAttention` (``kind="convex"``, ``max_len`` default: the model's
    ``max_position_embeddings``), initialised from the original weights as the module docstring says. In place;
    returns ``model``. :func:`swapped_layers` reports what was copied; :func:`ksvd_loss` is the KSVD regulariser of
    the result. ``layer_options`` go to the new layers (e.g. ``dropout``)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module (a transformers model), got {type(model).__name__}")
    found = _attention_modules(model)
    if not found:
        raise ValueError(
            f"{type(model).__name__} has no supported self-attention module; supported layouts: " + "; ".join(SUPPORTED)
        )
    config = getattr(model, "config", None)
    for i in _resolve_layers(layers, len(found)):
        path, module, layout = found[i]
        if isinstance(module, _SwappedAttention):
            raise ValueError(f"{path} is already swapped ({module.info.kind})")
        proj = _projections(module, layout)
        d = proj["q"][0].shape[1]
        heads = int(getattr(module, "num_attention_heads", getattr(module, "num_heads", 0)) or 0)
        if not heads and config is not None:
            heads = int(config.num_attention_heads)
        causal = bool(getattr(module, "is_causal", False))
        factory = {"dtype": proj["q"][0].dtype, "device": proj["q"][0].device}
        has_bias = proj["q"][1] is not None
        copied: list[str] = []
        not_copied: list[str] = []
        if kind == "primal":
            layer: nn.Module = PrimalAttention(
                d, heads, rank, rank_multi=rank_multi, causal=causal, bias=True, **factory, **layer_options
            )
            qw = torch.cat([proj["q"][0], proj["k"][0]])
            qb = None if not has_bias else torch.cat([proj["q"][1], proj["k"][1]])
            _copy_linear(layer.qk_proj, qw, qb)
            copied += ["W_q, W_k (and biases) → qk_proj"]
            not_copied += ["W_v: Primal-Attention has no value projection"]
        else:
            n_max = max_len
            if n_max is None and config is not None:
                n_max = getattr(config, "max_position_embeddings", None)
                if n_max is None and hasattr(config, "image_size") and hasattr(config, "patch_size"):
                    n_max = (config.image_size // config.patch_size) ** 2 + 1
            if n_max is None:
                raise ValueError("kind='convex' needs max_len (the model's config does not give it)")
            layer = ConvexifiedAttention(d, heads, max_len=int(n_max), causal=causal, **factory, **layer_options)
            with torch.no_grad():
                layer.mixing.param.zero_()  # uniform rows (softmax of equal logits)
            _copy_linear(layer.v_proj, *proj["v"])
            copied += ["W_v (and bias) → v_proj"]
            not_copied += ["W_q, W_k: the convexified layer's mixing matrices do not depend on the input"]
        if "o" in proj:
            _copy_linear(layer.out_proj, *proj["o"])
            copied += ["W_o (and bias) → out_proj"]
        else:
            _copy_linear(layer.out_proj, torch.eye(d, **factory), None)
            copied += ["out_proj = identity (the parent's output projection, residual and LayerNorm stay)"]
        info = SwapInfo(path, layout, kind, causal, tuple(copied), tuple(not_copied))
        parent_path, _, attr = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        if not path:
            raise ValueError("the model itself is an attention module; wrap it in a model first")
        setattr(parent, attr, _SwappedAttention(layer, info, getattr(module, "layer_idx", None)))
    return model


def swapped_layers(model: nn.Module) -> list[SwapInfo]:
    """What :func:`swap_attention` did to ``model``, one entry per swapped layer, in module order."""
    return [m.info for m in model.modules() if isinstance(m, _SwappedAttention)]


def ksvd_loss(model: nn.Module, **kwargs: Any) -> torch.Tensor:
    """The KSVD regulariser of every Primal-Attention layer of a swapped model, from its last forward pass
    (:func:`attnduality.nn.ksvd_loss`; add ``η · ksvd_loss(model)`` to the task loss)."""
    return _nn_ksvd_loss(model, **kwargs)
