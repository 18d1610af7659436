"""Attention layers by name: the registry, its call convention and the built-in entries.

Built in: ``"softmax"`` (:class:`~attnduality.nn.softmax.SoftmaxAttention`), ``"primal"``
(:class:`~attnduality.nn.primal.PrimalAttention`) and ``"convex"``
(:class:`~attnduality.nn.convexified.ConvexifiedAttention`).

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
    class ConvexifiedAttention(nn.Module): ...

or a call, as this module does for the built-in layers: ``register_attention("convex")(ConvexifiedAttention)``. The
registry tests are parametrised over :func:`available_attention`, so a new entry is tested automatically.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from .checks import check_attention_input, check_heads
from .convexified import ConvexifiedAttention
from .primal import PrimalAttention
from .softmax import SoftmaxAttention

__all__ = [
    "SoftmaxAttention",
    "available_attention",
    "build_attention",
    "check_attention_input",
    "check_heads",
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


# The built-in layers (imported above; none of them imports this module).
register_attention("softmax")(SoftmaxAttention)
register_attention("primal")(PrimalAttention)
register_attention("convex")(ConvexifiedAttention)
