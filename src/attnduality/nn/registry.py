"""Attention variants by name, and the softmax baseline (Vaswani et al. 2017, eq. (1); digest §1.1).

Every registered layer follows one call convention, so encoders can swap attention by name:

* constructor ``Layer(embed_dim: int, num_heads: int, *, max_len: int | None = None, causal: bool = False,
  **kwargs)``; ``embed_dim`` must be divisible by ``num_heads`` (``ValueError`` otherwise). Layers that need
  ``max_len`` (e.g. a fixed token count) raise ``ValueError`` when it is ``None``; the others accept and may ignore
  it. Layer-specific options are keyword arguments with defaults.
* forward ``layer(x, key_padding_mask=None) -> y``: ``x`` is batch-first ``(B, N, embed_dim)``, ``key_padding_mask``
  a bool tensor ``(B, N)`` with ``True`` = padding (the :class:`torch.nn.MultiheadAttention` convention) or
  ``None``; ``y`` has the shape of ``x``. Outputs at non-padding positions do not depend on the padding tokens (their
  values or their number). With ``causal=True`` the output at position ``t`` depends only on positions ``≤ t``.
  A query with no allowed key (a padding query before the first real token of a causal, left-padded sequence)
  attends to nothing: zero attention weights, finite outputs and zero gradients; every output is finite.
  Bad input (wrong shapes or dtypes, a sequence made only of padding, NaN/inf) raises ``ValueError``.
* optional ``layer.attention_matrix(x, key_padding_mask=None) -> (B, H, N, N)``: the N×N operator the layer
  applies (or implies), used by :mod:`attnduality.interpret.spectrum`.

Registering a new layer is one line, either a decorator on the class::

    @register_attention("convex")
    class ConvexAttention(nn.Module): ...

or, at the bottom of this module, ``register_attention("convex")(ConvexAttention)`` after importing it. The
registry tests are parametrised over :func:`available_attention`, so a new entry is tested automatically.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "SoftmaxAttention",
    "available_attention",
    "build_attention",
    "check_attention_input",
    "register_attention",
]

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
T = TypeVar("T", bound=Callable[..., nn.Module])


def register_attention(name: str) -> Callable[[T], T]:
    """Class decorator: make ``cls`` buildable as ``build_attention(name, ...)``. Names are unique."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"attention name must be a non-empty string, got {name!r}")

    def deco(cls: T) -> T:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"attention {name!r} is already registered ({_REGISTRY[name]!r})")
        _REGISTRY[name] = cls
        return cls

    return deco


def available_attention() -> tuple[str, ...]:
    """Names accepted by :func:`build_attention`, sorted."""
    return tuple(sorted(_REGISTRY))


def build_attention(name: str, embed_dim: int, num_heads: int, **kwargs: Any) -> nn.Module:
    """Build the attention layer registered as ``name`` (``max_len``, ``causal`` and layer options as keywords)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown attention {name!r}; available: {', '.join(available_attention())}")
    return _REGISTRY[name](embed_dim, num_heads, **kwargs)


def check_heads(embed_dim: int, num_heads: int) -> int:
    """Validate ``embed_dim``/``num_heads`` and return the head dimension."""
    if not isinstance(embed_dim, int) or embed_dim < 1:
        raise ValueError(f"embed_dim must be a positive int, got {embed_dim!r}")
    if not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"num_heads must be a positive int, got {num_heads!r}")
    if embed_dim % num_heads:
        raise ValueError(f"embed_dim={embed_dim} is not divisible by num_heads={num_heads}")
    return embed_dim // num_heads


def check_attention_input(
    x: torch.Tensor, key_padding_mask: torch.Tensor | None, embed_dim: int, check_finite: bool = True
) -> None:
    """Raise ``ValueError`` unless ``x`` is a finite floating (B, N, embed_dim) tensor and the mask a valid (B, N) bool.

    Every sequence must keep at least one non-padding token.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 3 or x.shape[-1] != embed_dim:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected x of shape (B, N, {embed_dim}), got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"x must be a floating tensor, got {x.dtype}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"x must have B >= 1 and N >= 1, got shape {tuple(x.shape)}")
    if check_finite and not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or inf")
    if key_padding_mask is not None:
        if key_padding_mask.dtype != torch.bool:
            raise ValueError(f"key_padding_mask must be a bool tensor (True = padding), got {key_padding_mask.dtype}")
        if key_padding_mask.shape != x.shape[:2]:
            raise ValueError(
                f"key_padding_mask must have shape (B, N) = {tuple(x.shape[:2])}, got {tuple(key_padding_mask.shape)}"
            )
        if bool(key_padding_mask.all(dim=1).any()):
            raise ValueError("key_padding_mask: every sequence needs at least one non-padding token")


def _open_empty_rows(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Make every row of a boolean attention mask (True = may attend) attend somewhere.

    A query row with no allowed key would give ``softmax`` of all ``-inf`` (NaN values and NaN gradients). Such rows
    are opened to every key here, and the returned ``live`` (…, N, 1) (None when no row was empty) zeroes their
    weights or outputs afterwards, so they come out exactly zero with zero gradients.
    """
    live = keep.any(dim=-1, keepdim=True)
    if bool(live.all()):
        return keep, None
    return keep | ~live, live


@register_attention("softmax")
class SoftmaxAttention(nn.Module):
    """Multi-head softmax attention ``softmax(Q Kᵀ/√d_h) V`` (Vaswani et al. eq. (1)), batch first.

    ``implementation="sdpa"`` (default) calls :func:`torch.nn.functional.scaled_dot_product_attention` (fused,
    O(N) memory on CPU/GPU); ``"explicit"`` forms the (B, H, N, N) matrix (the reference, and what
    :meth:`attention_matrix` returns). ``dropout`` is applied to the attention weights in training.
    ``max_len`` is accepted and ignored.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        max_len: int | None = None,
        causal: bool = False,
        bias: bool = True,
        dropout: float = 0.0,
        implementation: str = "sdpa",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.head_dim = check_heads(embed_dim, num_heads)
        if implementation not in ("sdpa", "explicit"):
            raise ValueError(f"implementation must be 'sdpa' or 'explicit', got {implementation!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if max_len is not None and max_len < 1:
            raise ValueError(f"max_len must be >= 1 or None, got {max_len}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.causal, self.dropout, self.implementation, self.max_len = (
            bool(causal),
            float(dropout),
            implementation,
            max_len,
        )
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.qkv_proj = nn.Linear(embed_dim, 3 * embed_dim, bias=bias, **kw)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **kw)

    def _qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, _ = x.shape
        qkv = self.qkv_proj(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]  # (B, H, N, d_h) each

    def _mask(self, key_padding_mask: torch.Tensor | None, n: int, device: torch.device) -> torch.Tensor | None:
        """Boolean (B, 1, N|1, N) mask, True = may attend; None when nothing is masked."""
        keep = None if key_padding_mask is None else (~key_padding_mask)[:, None, None, :]
        if self.causal:
            tri = torch.ones(n, n, dtype=torch.bool, device=device).tril()[None, None]
            keep = tri if keep is None else keep & tri
        return keep

    def attention_matrix(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """The (B, H, N, N) softmax matrix: padding columns and, if causal, the future are zero.

        Rows are stochastic except a query with no allowed key (a padding query before the first real token of a
        causal, left-padded sequence), whose row is zero.
        """
        check_attention_input(x, key_padding_mask, self.embed_dim)
        q, k, _ = self._qkv(x)
        return self._weights(q, k, key_padding_mask)

    def _weights(self, q: torch.Tensor, k: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        keep = self._mask(key_padding_mask, q.shape[2], q.device)
        if keep is None:
            return scores.softmax(dim=-1)
        keep, live = _open_empty_rows(keep)
        weights = scores.masked_fill(~keep, float("-inf")).softmax(dim=-1)
        return weights if live is None else weights * live.to(weights.dtype)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        check_attention_input(x, key_padding_mask, self.embed_dim)
        b, n, d = x.shape
        p = self.dropout if self.training else 0.0
        q, k, v = self._qkv(x)
        if self.implementation == "explicit":
            out = F.dropout(self._weights(q, k, key_padding_mask), p) @ v
        else:
            if key_padding_mask is None:
                out = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=self.causal)
            else:
                keep, live = _open_empty_rows(self._mask(key_padding_mask, n, x.device))
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=p)
                if live is not None:
                    out = out * live.to(out.dtype)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


# Built-in layers register themselves on import (keep these imports at the bottom: they use the decorator above).
from . import primal as _primal  # noqa: E402,F401
from .convex_attention import ConvexAttention  # noqa: E402

register_attention("convex")(ConvexAttention)
