"""Input checks shared by every attention layer of the registry's call convention (see :mod:`.registry`)."""

from __future__ import annotations

import torch

__all__ = ["check_attention_input", "check_heads"]


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
        if not isinstance(key_padding_mask, torch.Tensor) or key_padding_mask.dtype != torch.bool:
            mask = key_padding_mask
            got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"key_padding_mask must be a bool tensor (True = padding), got {got}")
        if key_padding_mask.shape != x.shape[:2]:
            raise ValueError(
                f"key_padding_mask must have shape (B, N) = {tuple(x.shape[:2])}, got {tuple(key_padding_mask.shape)}"
            )
        if bool(key_padding_mask.all(dim=1).any()):
            raise ValueError("key_padding_mask: every sequence needs at least one non-padding token")
