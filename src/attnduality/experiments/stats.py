"""Statistics shared by the experiments: the two epoch-selection protocols, mean ± std over seeds, and the summary
of singular-value decay curves.

:func:`protocol_numbers` applies both selection rules of Chen et al. 2023 (Primal-Attention, NeurIPS) to one
accuracy history: the best test accuracy over evaluations (the rule of their UEA scripts, which select on the test
set) and the test accuracy at the evaluation with the best validation accuracy (the honest rule).
:func:`spectrum_summary` condenses the normalised cumulative singular values ``c_k`` of the attention operators
(their Fig. 2, computed by :func:`attnduality.interpret.spectrum.singular_value_decay`) per layer.

This module registers no experiment; it is imported by the experiment modules that use it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["fmt_pm", "format_mean_std", "mean_std", "protocol_numbers", "spectrum_summary"]


def protocol_numbers(test_acc: Sequence[float], val_acc: Sequence[float] | None = None) -> dict[str, Any]:
    """Both selection rules on one accuracy history (earliest maximum on ties, as the official loops).

    ``best_test``: the maximum test accuracy over evaluations (the paper's UEA protocol, selection on test);
    ``honest``: the test accuracy at the evaluation with the best validation accuracy (when ``val_acc`` is given).
    """
    t = np.asarray(test_acc, dtype=np.float64)
    if t.ndim != 1 or t.size == 0:
        raise ValueError("test_acc must be a non-empty 1-D sequence")
    i = int(np.argmax(t))
    out: dict[str, Any] = {"best_test": float(t[i]), "best_test_index": i, "last_test": float(t[-1])}
    if val_acc is not None:
        v = np.asarray(val_acc, dtype=np.float64)
        if v.shape != t.shape:
            raise ValueError(f"val_acc has shape {v.shape}, test_acc {t.shape}")
        j = int(np.argmax(v))
        out.update(honest=float(t[j]), honest_index=j, honest_val=float(v[j]))
    return out


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return math.nan, math.nan
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def fmt_pm(values: Sequence[float], scale: float = 100.0) -> str:
    """``"mean ± std"`` in percent (``"mean"`` for one value)."""
    m, s = mean_std(values)
    if math.isnan(m):
        return ""
    return f"{scale * m:.1f} ± {scale * s:.1f}" if len(values) > 1 else f"{scale * m:.1f}"


def format_mean_std(values: Sequence[float], fmt: str = ".4f") -> str:
    """``"mean ± std"`` with the format spec ``fmt`` for both (sample std; 0 for one value), ``"—"`` for none."""
    if len(values) == 0:
        return "—"
    a = np.asarray(values, float)
    return f"{a.mean():{fmt}} ± {a.std(ddof=1) if len(a) > 1 else 0.0:{fmt}}"


def spectrum_summary(decay: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    """Per layer: label, mean/min/max/std of ``c_k`` over samples and heads, and k at which the mean reaches 0.9."""
    rows = []
    for label, c in decay.items():
        flat = np.asarray(c, dtype=np.float64).reshape(-1, np.asarray(c).shape[-1])
        mean = flat.mean(axis=0)
        rows.append(
            {
                "layer": label,
                "mean": mean,
                "min": flat.min(axis=0),
                "max": flat.max(axis=0),
                "std": flat.std(axis=0),
                "k90": int(np.argmax(mean >= 0.9)) + 1 if bool((mean >= 0.9).any()) else int(mean.size),
            }
        )
    return rows
