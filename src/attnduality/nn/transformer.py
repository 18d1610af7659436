"""Transformer encoders and sequence classifiers with attention chosen by name (Chen et al. 2023).

* :class:`EncoderBlock`: attention + feed-forward with residuals, pre-LN (``norm_first=True``, the official LRA
  code) or post-LN (the official UEA time-series code); the attention is any name of
  :func:`~attnduality.nn.registry.available_attention`.
* :class:`TransformerEncoder`: a stack of blocks, one attention name per layer, optional final LayerNorm.
* :class:`TransformerClassifier`: token ids (``vocab_size``, e.g. ListOps) or continuous features (``input_dim``,
  e.g. UEA time series) → embedding + positional encoding → encoder → pooling (``"mean"``, ``"cls"`` or
  ``"flatten"``) → linear or MLP head.
* :class:`PrimalFormer` (every layer Primal-Attention) and :class:`PrimalTransformer` ("Primal.+Trans.": softmax
  layers with the last ``num_primal_layers`` replaced by Primal-Attention).

The KSVD regulariser needs no tuple returns: after ``logits = model(x, mask)`` call
``loss = task_loss + eta * ksvd_loss(model)`` (:func:`attnduality.nn.primal.ksvd_loss`).

Padding (``key_padding_mask``, True = padding) never changes the logits: the attention layers ignore padding, mean
pooling averages the non-padding tokens and flatten pooling zeroes them. (The official LRA mean pooling divides by
the padded length N; the official TS classifier flattens the zeroed padded sequence, as here.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .registry import available_attention, build_attention

__all__ = ["EncoderBlock", "PrimalFormer", "PrimalTransformer", "TransformerClassifier", "TransformerEncoder"]

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU}
_POOLING = ("mean", "cls", "flatten")
_POS = ("learned", "sinusoidal", "none")


def _check_dropout(p: float) -> float:
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {p}")
    return float(p)


class EncoderBlock(nn.Module):
    """One transformer encoder layer: ``x + Attn(LN(x))``, ``x + FFN(LN(x))`` (pre-LN) or the post-LN order.

    ``attention`` is a registry name; ``attention_kwargs`` go to its constructor (with ``max_len`` and ``causal``).
    The feed-forward map is Linear(D → ffn_dim) → activation → dropout → Linear(ffn_dim → D) → dropout.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        attention: str = "softmax",
        *,
        ffn_dim: int | None = None,
        dropout: float = 0.1,
        activation: str = "gelu",
        norm_first: bool = True,
        causal: bool = False,
        max_len: int | None = None,
        attention_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        ffn_dim = 4 * embed_dim if ffn_dim is None else ffn_dim
        if not isinstance(ffn_dim, int) or ffn_dim < 1:
            raise ValueError(f"ffn_dim must be a positive int, got {ffn_dim!r}")
        p = _check_dropout(dropout)
        self.attention_name, self.norm_first = attention, bool(norm_first)
        self.attn = build_attention(
            attention, embed_dim, num_heads, max_len=max_len, causal=causal, **dict(attention_kwargs or {})
        )
        self.norm1, self.norm2 = nn.LayerNorm(embed_dim), nn.LayerNorm(embed_dim)
        self.ffn = nn.Sequential(
            nn.Linear(embed_dim, ffn_dim), _ACTIVATIONS[activation](), nn.Dropout(p), nn.Linear(ffn_dim, embed_dim)
        )
        self.dropout1, self.dropout2 = nn.Dropout(p), nn.Dropout(p)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.norm_first:
            x = x + self.dropout1(self.attn(self.norm1(x), key_padding_mask))
            return x + self.dropout2(self.ffn(self.norm2(x)))
        x = self.norm1(x + self.dropout1(self.attn(x, key_padding_mask)))
        return self.norm2(x + self.dropout2(self.ffn(x)))


def _layer_names(attention: str | Sequence[str], num_layers: int | None) -> list[str]:
    if isinstance(attention, str):
        if num_layers is None or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive int when attention is one name, got {num_layers!r}")
        names = [attention] * num_layers
    else:
        names = list(attention)
        if not names:
            raise ValueError("attention must name at least one layer")
        if num_layers is not None and num_layers != len(names):
            raise ValueError(f"num_layers={num_layers} but {len(names)} attention names were given")
    unknown = sorted(set(names) - set(available_attention()))
    if unknown:
        raise ValueError(f"unknown attention {unknown}; available: {', '.join(available_attention())}")
    return names


class TransformerEncoder(nn.Module):
    """A stack of :class:`EncoderBlock`, one attention name per layer (``attention`` a name or a sequence of names).

    ``attention_kwargs`` maps an attention name to its constructor options (e.g. ``{"primal": {"rank": 20}}``).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        attention: str | Sequence[str],
        num_layers: int | None = None,
        *,
        ffn_dim: int | None = None,
        dropout: float = 0.1,
        activation: str = "gelu",
        norm_first: bool = True,
        final_norm: bool = True,
        causal: bool = False,
        max_len: int | None = None,
        attention_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        names = _layer_names(attention, num_layers)
        kwargs = dict(attention_kwargs or {})
        self.layers = nn.ModuleList(
            EncoderBlock(
                embed_dim,
                num_heads,
                name,
                ffn_dim=ffn_dim,
                dropout=dropout,
                activation=activation,
                norm_first=norm_first,
                causal=causal,
                max_len=max_len,
                attention_kwargs=kwargs.get(name),
            )
            for name in names
        )
        self.norm = nn.LayerNorm(embed_dim) if final_norm else nn.Identity()

    @property
    def attention_names(self) -> list[str]:
        return [str(layer.attention_name) for layer in self.layers]

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, key_padding_mask)
        return self.norm(x)


def sinusoidal_positions(
    n: int, dim: int, device: torch.device | None = None, dtype: torch.dtype | None = None
) -> torch.Tensor:
    """Fixed sine/cosine positional encodings (Vaswani et al. §3.5), (n, dim)."""
    pos = torch.arange(n, dtype=torch.float32, device=device)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    pe = torch.zeros(n, dim, device=device)
    pe[:, 0::2] = torch.sin(pos * div)
    pe[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
    return pe.to(dtype or torch.float32)


class TransformerClassifier(nn.Module):
    """Sequence classifier: embedding → positional encoding → :class:`TransformerEncoder` → pooling → head.

    Inputs: token ids (B, N) with ``vocab_size`` (embedding; ``padding_idx`` derives the padding mask when none
    is given), or continuous features (B, N, input_dim) with ``input_dim`` (linear map times ``input_scale``,
    default √D as the official UEA code; 1 for tokens). ``forward(x, key_padding_mask=None) -> logits (B, C)``.

    Args:
        pos_encoding: ``"learned"`` (a (max_len, D) table, N(0, 0.02²) init; needs ``max_len``), ``"sinusoidal"``
            or ``"none"``.
        pooling: ``"mean"`` over non-padding tokens (official LRA), ``"cls"`` (a learned vector prepended to the
            sequence, its output classifies) or ``"flatten"`` (zeroed padding, then the (max_len·D) vector; official
            UEA; needs ``max_len``, shorter sequences are zero-padded).
        head_hidden: ``None``: a linear head; an int: Linear → ReLU → Linear (official LRA, 128 hidden).
        output_activation: ``"gelu"``/``"relu"`` applied to the encoder output before pooling (official UEA: gelu).
        max_len: longest sequence (without the CLS token); also passed to the attention layers.
        Encoder options (``num_layers``, ``ffn_dim``, ``dropout``, ``activation``, ``norm_first``, ``final_norm``,
        ``causal``, ``attention_kwargs``) as in :class:`TransformerEncoder`; ``dropout`` also follows the embedding.
    """

    def __init__(
        self,
        num_classes: int,
        embed_dim: int,
        num_heads: int,
        attention: str | Sequence[str],
        num_layers: int | None = None,
        *,
        vocab_size: int | None = None,
        input_dim: int | None = None,
        padding_idx: int | None = None,
        max_len: int | None = None,
        pos_encoding: str = "learned",
        pooling: str = "mean",
        input_scale: float | None = None,
        ffn_dim: int | None = None,
        dropout: float = 0.1,
        activation: str = "gelu",
        norm_first: bool = True,
        final_norm: bool = True,
        output_activation: str | None = None,
        head_hidden: int | None = None,
        causal: bool = False,
        attention_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if (vocab_size is None) == (input_dim is None):
            raise ValueError("give exactly one of vocab_size (token ids) or input_dim (continuous features)")
        if pooling not in _POOLING:
            raise ValueError(f"pooling must be one of {_POOLING}, got {pooling!r}")
        if pos_encoding not in _POS:
            raise ValueError(f"pos_encoding must be one of {_POS}, got {pos_encoding!r}")
        if max_len is not None and (not isinstance(max_len, int) or max_len < 1):
            raise ValueError(f"max_len must be a positive int or None, got {max_len!r}")
        if max_len is None and (pos_encoding == "learned" or pooling == "flatten"):
            raise ValueError(f"pos_encoding={pos_encoding!r} / pooling={pooling!r} need max_len")
        if output_activation is not None and output_activation not in _ACTIVATIONS:
            raise ValueError(
                f"output_activation must be None or one of {sorted(_ACTIVATIONS)}, got {output_activation!r}"
            )
        if head_hidden is not None and (not isinstance(head_hidden, int) or head_hidden < 1):
            raise ValueError(f"head_hidden must be a positive int or None, got {head_hidden!r}")
        p = _check_dropout(dropout)
        self.embed_dim, self.max_len, self.pooling, self.pos_encoding = embed_dim, max_len, pooling, pos_encoding
        self.vocab_size, self.input_dim, self.padding_idx = vocab_size, input_dim, padding_idx
        n_tokens = None if max_len is None else max_len + (pooling == "cls")
        if vocab_size is not None:
            if not isinstance(vocab_size, int) or vocab_size < 1:
                raise ValueError(f"vocab_size must be a positive int, got {vocab_size!r}")
            if padding_idx is not None and not 0 <= padding_idx < vocab_size:
                raise ValueError(f"padding_idx must be in [0, {vocab_size}), got {padding_idx}")
            self.embed: nn.Module = nn.Embedding(vocab_size, embed_dim, padding_idx=padding_idx)
            nn.init.normal_(self.embed.weight, std=0.02)  # official LRA init
            if padding_idx is not None:
                with torch.no_grad():
                    self.embed.weight[padding_idx].zero_()
            self.input_scale = 1.0 if input_scale is None else float(input_scale)
        else:
            if not isinstance(input_dim, int) or input_dim < 1:
                raise ValueError(f"input_dim must be a positive int, got {input_dim!r}")
            if padding_idx is not None:
                raise ValueError("padding_idx applies to token ids only")
            self.embed = nn.Linear(input_dim, embed_dim)
            self.input_scale = math.sqrt(embed_dim) if input_scale is None else float(input_scale)
        self.pos = nn.Parameter(torch.empty(n_tokens, embed_dim)) if pos_encoding == "learned" and n_tokens else None
        if self.pos is not None:
            nn.init.normal_(self.pos, std=0.02)
        self.cls = nn.Parameter(torch.zeros(1, 1, embed_dim)) if pooling == "cls" else None
        if self.cls is not None:
            nn.init.normal_(self.cls, std=0.02)
        self.embed_dropout = nn.Dropout(p)
        self.encoder = TransformerEncoder(
            embed_dim,
            num_heads,
            attention,
            num_layers,
            ffn_dim=ffn_dim,
            dropout=dropout,
            activation=activation,
            norm_first=norm_first,
            final_norm=final_norm,
            causal=causal,
            max_len=n_tokens,
            attention_kwargs=attention_kwargs,
        )
        self.output_activation = None if output_activation is None else _ACTIVATIONS[output_activation]()
        self.output_dropout = nn.Dropout(p) if output_activation is not None else nn.Identity()
        pooled = embed_dim * max_len if pooling == "flatten" and max_len is not None else embed_dim
        self.head: nn.Module = (
            nn.Linear(pooled, num_classes)
            if head_hidden is None
            else nn.Sequential(nn.Linear(pooled, head_hidden), nn.ReLU(), nn.Linear(head_hidden, num_classes))
        )

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        if self.vocab_size is not None:
            if x.ndim != 2 or x.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
                raise ValueError(
                    f"expected token ids of shape (B, N) and an integer dtype, got {tuple(x.shape)} {x.dtype}"
                )
            if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.vocab_size):
                raise ValueError(f"token ids must lie in [0, {self.vocab_size})")
            h = self.embed(x.long())
        else:
            if x.ndim != 3 or x.shape[-1] != self.input_dim or not x.is_floating_point():
                raise ValueError(
                    f"expected float features of shape (B, N, {self.input_dim}), got {tuple(x.shape)} {x.dtype}"
                )
            if not bool(torch.isfinite(x).all()):
                raise ValueError("features contain NaN or inf")
            h = self.embed(x)
        return h * self.input_scale if self.input_scale != 1.0 else h

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim < 2 or x.shape[0] < 1 or x.shape[1] < 1:
            raise ValueError(f"expected a non-empty batch of sequences, got shape {tuple(x.shape)}")
        b, n = x.shape[0], x.shape[1]
        if self.max_len is not None and n > self.max_len:
            raise ValueError(f"sequence length {n} exceeds max_len={self.max_len}")
        if key_padding_mask is None and self.padding_idx is not None:
            key_padding_mask = x == self.padding_idx
        if key_padding_mask is not None and (key_padding_mask.shape != (b, n) or key_padding_mask.dtype != torch.bool):
            raise ValueError(
                f"key_padding_mask must be a bool tensor of shape {(b, n)}, got {tuple(key_padding_mask.shape)} "
                f"{key_padding_mask.dtype}"
            )
        h = self._embed(x)
        mask = key_padding_mask
        if self.cls is not None:
            h = torch.cat((self.cls.expand(b, 1, -1).to(h.dtype), h), dim=1)
            if mask is not None:
                mask = torch.cat((mask.new_zeros(b, 1), mask), dim=1)
        if self.pos is not None:
            h = h + self.pos[: h.shape[1]].to(h.dtype)
        elif self.pos_encoding == "sinusoidal":
            h = h + sinusoidal_positions(h.shape[1], self.embed_dim, h.device, h.dtype)
        h = self.encoder(self.embed_dropout(h), mask)
        if self.output_activation is not None:
            h = self.output_dropout(self.output_activation(h))
        return self.head(self._pool(h, mask))

    def _pool(self, h: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if self.pooling == "cls":
            return h[:, 0]
        keep = None if mask is None else (~mask)[:, :, None].to(h.dtype)
        if self.pooling == "mean":
            return h.mean(dim=1) if keep is None else (h * keep).sum(dim=1) / keep.sum(dim=1)
        assert self.max_len is not None
        if keep is not None:
            h = h * keep
        h = F.pad(h, (0, 0, 0, self.max_len - h.shape[1]))
        return h.reshape(h.shape[0], -1)


class PrimalFormer(TransformerClassifier):
    """PrimalFormer: a :class:`TransformerClassifier` whose every layer is Primal-Attention (Chen et al. 2023).

    ``rank`` (s) and ``rank_multi`` go to each :class:`~attnduality.nn.primal.PrimalAttention`; other keywords as
    :class:`TransformerClassifier`. Official settings: UEA 2 layers, D = 512, 8 heads, post-LN, flatten pooling,
    GELU output; LRA 2 layers, D = 64, 2 heads, pre-LN, mean pooling, MLP head 128.
    """

    def __init__(
        self,
        num_classes: int,
        embed_dim: int,
        num_heads: int,
        num_layers: int,
        *,
        rank: int = 20,
        rank_multi: int = 10,
        primal_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if "attention" in kwargs or "attention_kwargs" in kwargs:
            raise ValueError("PrimalFormer fixes the attention; use TransformerClassifier for other layouts")
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
        primal = {"rank": rank, "rank_multi": rank_multi, **dict(primal_kwargs or {})}
        super().__init__(
            num_classes, embed_dim, num_heads, ["primal"] * num_layers, attention_kwargs={"primal": primal}, **kwargs
        )


class PrimalTransformer(TransformerClassifier):
    """ "Primal.+Trans.": softmax layers with the last ``num_primal_layers`` replaced by Primal-Attention.

    Only those layers carry the KSVD loss (as in the official code, whose UEA/LRA models use 2 layers, the last primal).
    ``softmax_kwargs`` go to the softmax layers; other keywords as :class:`PrimalFormer`.
    """

    def __init__(
        self,
        num_classes: int,
        embed_dim: int,
        num_heads: int,
        num_layers: int,
        *,
        num_primal_layers: int = 1,
        rank: int = 20,
        rank_multi: int = 10,
        primal_kwargs: Mapping[str, Any] | None = None,
        softmax_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if "attention" in kwargs or "attention_kwargs" in kwargs:
            raise ValueError("PrimalTransformer fixes the attention; use TransformerClassifier for other layouts")
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"num_layers must be a positive int, got {num_layers!r}")
        if not isinstance(num_primal_layers, int) or not 1 <= num_primal_layers <= num_layers:
            raise ValueError(f"num_primal_layers must be in [1, num_layers={num_layers}], got {num_primal_layers!r}")
        names = ["softmax"] * (num_layers - num_primal_layers) + ["primal"] * num_primal_layers
        primal = {"rank": rank, "rank_multi": rank_multi, **dict(primal_kwargs or {})}
        attn_kwargs = {"primal": primal, "softmax": dict(softmax_kwargs or {})}
        super().__init__(num_classes, embed_dim, num_heads, names, attention_kwargs=attn_kwargs, **kwargs)
