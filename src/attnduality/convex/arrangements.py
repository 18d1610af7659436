"""Hyperplane-arrangement gates: sampling and the 0/1 activation masks they induce (Sahiner et al. eq. (3), (7))."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import torch

__all__ = ["distinct_gate_indices", "gate_masks", "sample_gates", "unique_gates"]

_MASK_CHUNK = 1 << 22  # mask entries per chunk when deduplicating gates


def sample_gates(n_features: int, n_gates: int, seed: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``n_gates`` i.i.d. standard Gaussian gate vectors as the columns of a (d, P) matrix."""
    if n_gates < 1:
        raise ValueError(f"n_gates must be >= 1, got {n_gates}")
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(n_features, n_gates, generator=gen, dtype=dtype)


def gate_masks(x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """``D[n, j] = 1{x_nᵀ g_j ≥ 0}`` as a (N, P) tensor of the dtype of ``x``."""
    return (x @ gates.to(dtype=x.dtype, device=x.device) >= 0).to(x.dtype)


def unique_gates(x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
    """The gates whose masks on ``x`` are distinct and not all-zero (first occurrence kept, order preserved).

    Identical masks give identical blocks of the convex program, and an all-zero mask a block that never acts.
    """
    keep = distinct_gate_indices(lambda xc: gate_masks(xc, gates), x, int(gates.shape[1]), gate_axis=-1)
    return gates[:, torch.as_tensor(keep, dtype=torch.long, device=gates.device)]


def distinct_gate_indices(
    masks: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, n_gates: int, gate_axis: int = 1
) -> list[int]:
    """Indices of the gates whose 0/1 masks on ``x`` are not all zero and differ from every earlier gate's (first
    occurrence kept, order preserved). ``masks(x_chunk)`` returns the masks, samples first, gates on axis
    ``gate_axis``; they are hashed chunk by chunk over samples and never stored whole. Identical masks give
    identical blocks of the convex program, and an all-zero mask a block that never acts."""
    n = int(x.shape[0])
    per_sample = max(1, masks(x[:1]).numel())
    chunk = max(1, _MASK_CHUNK // per_sample)
    hashers = [hashlib.sha256() for _ in range(n_gates)]
    active = np.zeros(n_gates, dtype=bool)
    for lo in range(0, n, chunk):
        m = masks(x[lo : lo + chunk]).movedim(gate_axis, 0).reshape(n_gates, -1)
        m = (m != 0).cpu().numpy()
        active |= m.any(axis=1)
        for j in range(n_gates):
            hashers[j].update(np.packbits(m[j]).tobytes())
    keep: list[int] = []
    seen: set[bytes] = set()
    for j in range(n_gates):
        key = hashers[j].digest()
        if active[j] and key not in seen:
            seen.add(key)
            keep.append(j)
    return keep
