"""Hyperplane-arrangement gates: sampling and the 0/1 activation masks they induce (Sahiner et al. eq. (3), (7))."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["sample_gates", "gate_masks", "unique_gates"]


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
    masks = gate_masks(x, gates).bool().cpu().numpy()
    _, first = np.unique(masks, axis=1, return_index=True)
    keep = np.sort(first)
    keep = keep[masks[:, keep].any(axis=0)]
    return gates[:, torch.as_tensor(keep, device=gates.device)]
