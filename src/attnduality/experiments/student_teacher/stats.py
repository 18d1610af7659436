"""Statistics of the ``student-teacher`` experiment (Ergen, Neyshabur & Mehta 2022, §4, Figs. 2–3).

:func:`rel_error` is the relative error ``Σ‖ŷ − y‖² / Σ‖y − ȳ‖²`` (1 = predicting the training mean ``ȳ``);
:func:`attention_stats` measures how sparse row-stochastic attention weights are (Fig. 3: "sparse versus uniform").
"""

from __future__ import annotations

from typing import Any

__all__ = ["attention_stats", "rel_error"]


def rel_error(pred: Any, target: Any, mean: Any) -> float:
    """``Σ‖pred − target‖² / Σ‖target − mean‖²``."""
    return float((pred - target).square().sum() / (target - mean).square().sum())


def attention_stats(weights: Any, key_padding_mask: Any = None) -> dict[str, float]:
    """Sparsity of row-stochastic attention ``weights`` (B, H, n_q, n): the mean row entropy normalised by
    log(#real keys) (1 = uniform, 0 = one-hot), the mean largest weight, and ``exp(entropy)`` (effective number of
    keys). Rows of padded queries and rows with a single real key are skipped."""
    import torch

    w = weights.double()
    b, _, nq, n = w.shape
    keys = torch.full((b, n), True) if key_padding_mask is None else ~key_padding_mask.cpu()
    m = keys.sum(1).double()  # real keys per sample
    ent = -(w * torch.log(w.clamp_min(1e-300))).sum(-1)  # (B, H, nq)
    norm = ent / torch.log(m.clamp_min(2.0))[:, None, None]
    rows = keys[:, None, :nq].expand_as(ent) & (m > 1)[:, None, None]
    return {
        "entropy": float(norm[rows].mean()),
        "max_weight": float(w.max(-1).values[rows].mean()),
        "effective_keys": float(torch.exp(ent)[rows].mean()),
    }
