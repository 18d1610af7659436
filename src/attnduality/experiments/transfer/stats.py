"""The transfer experiment's statistics: B-FNO's effective B, the exact McNemar test and the claim's verdict."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .config import BASELINES, DATASET_LABELS

__all__ = ["claim_text", "claim_verdict", "effective_blocks", "grid_edge", "mcnemar_p"]


def effective_blocks(requested: int, n_features: int, n_classes: int) -> int:
    """The largest B ≤ ``requested`` dividing both d and c (B-FNO needs B | d and B | c)."""
    g = math.gcd(n_features, n_classes)
    return max(b for b in range(1, min(requested, g) + 1) if g % b == 0)


def grid_edge(frac: float, fracs: Sequence[float]) -> str | None:
    """``"smallest"`` or ``"largest"`` when the β/β_max chosen on validation is an end of a grid of several values
    (validation accuracy may still improve beyond it: widen ``beta_fracs``), else ``None``."""
    if len(fracs) < 2:
        return None
    if frac == min(fracs):
        return "smallest"
    return "largest" if frac == max(fracs) else None


def mcnemar_p(correct_a: np.ndarray, correct_b: np.ndarray) -> float:
    """Exact two-sided McNemar test (binomial on the discordant pairs) of two classifiers on the same test set."""
    from scipy.stats import binomtest

    a, b = np.asarray(correct_a, bool), np.asarray(correct_b, bool)
    if a.shape != b.shape:
        raise ValueError(f"the two prediction vectors differ in shape: {a.shape} vs {b.shape}")
    n01, n10 = int((a & ~b).sum()), int((~a & b).sum())
    return 1.0 if n01 + n10 == 0 else float(binomtest(n01, n01 + n10, 0.5).pvalue)


def claim_verdict(rows: list[dict[str, Any]], correct: dict[str, np.ndarray], alpha: float = 0.05) -> dict[str, Any]:
    """Does the claim "attention-style convex heads beat the linear and MLP heads" hold on one target?

    ``rows``: one dict per head with ``head`` and ``test_acc`` (convex fits); ``correct``: per head, the boolean
    test-correctness vector. It holds when a majority of the attention-style heads score above the best baseline and
    the best attention-style head beats it significantly (exact McNemar test at ``alpha``).
    """
    acc = {r["head"]: float(r["test_acc"]) for r in rows}
    base = [h for h in acc if h in BASELINES]
    attn = [h for h in acc if h not in BASELINES]
    if not base or not attn:
        return {"decided": False, "text": "needs at least one baseline and one attention-style head"}
    best_base = max(base, key=lambda h: acc[h])
    best_attn = max(attn, key=lambda h: acc[h])
    above = [h for h in attn if acc[h] > acc[best_base]]
    p = mcnemar_p(correct[best_attn], correct[best_base])
    holds = len(above) * 2 > len(attn) and acc[best_attn] > acc[best_base] and p < alpha
    return {
        "decided": True,
        "holds": bool(holds),
        "best_baseline": best_base,
        "best_baseline_acc": acc[best_base],
        "best_attention": best_attn,
        "best_attention_acc": acc[best_attn],
        "margin": acc[best_attn] - acc[best_base],
        "mcnemar_p": p,
        "n_above": len(above),
        "n_attention": len(attn),
        "above": above,
    }


def claim_text(ds: str, v: dict[str, Any]) -> str:
    if not v.get("decided"):
        return f"**{DATASET_LABELS[ds]}**: claim not decided ({v['text']})."
    word = "HOLDS" if v["holds"] else "DOES NOT HOLD"
    return (
        f"**{DATASET_LABELS[ds]}: the claim {word} on this substitute.** Best baseline `{v['best_baseline']}` "
        f"{v['best_baseline_acc']:.4f}; best attention-style head `{v['best_attention']}` "
        f"{v['best_attention_acc']:.4f} "
        f"(margin {v['margin']:+.4f}, exact McNemar p = {v['mcnemar_p']:.3g}); {v['n_above']} of "
        f"{v['n_attention']} attention-style heads score above the best baseline"
        + (f" ({', '.join(f'`{h}`' for h in v['above'])})." if v["above"] else ".")
    )
