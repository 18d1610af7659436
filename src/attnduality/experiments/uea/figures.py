"""Figures of the ``uea`` experiment: the learning curves of each dataset (Chen et al. 2023, Table 1 setup).

The singular-value decay figure (paper Fig. 2) is :func:`attnduality.experiments.figures.spectrum_figure`, shared
with the ``listops`` experiment.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..figures import MODEL_LABELS, pyplot

__all__ = ["curves_figure"]


def curves_figure(dataset: str, runs: Mapping[str, Mapping[str, list[dict[str, Any]]]]) -> Any:
    """Training cross-entropy, validation and test accuracy per epoch, mean over seeds, per model and training set."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for model, parts in runs.items():
        color = None
        for part, style in (("holdout", "-"), ("full", "--")):
            rs = parts.get(part, [])
            if not rs:
                continue
            ep = np.arange(1, len(rs[0]["history"]["test_acc"]) + 1)
            loss = np.mean([r["history"]["train_ce"] for r in rs], axis=0)
            test = np.mean([r["history"]["test_acc"] for r in rs], axis=0)
            lab = f"{MODEL_LABELS[model]} ({part})"
            (line,) = axes[0].plot(ep, loss, style, color=color, label=lab)
            color = line.get_color()
            axes[2].plot(ep, 100 * test, style, color=color, label=lab)
            if part == "holdout":
                val = np.mean([r["history"]["val_acc"] for r in rs], axis=0)
                axes[1].plot(ep, 100 * val, style, color=color, label=lab)
    titles = ("training cross-entropy (without η·KSVD)", "validation accuracy (%)", "test accuracy (%)")
    for ax, t in zip(axes, titles, strict=True):
        ax.set_xlabel("epoch")
        ax.set_title(t, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[2].legend(fontsize=7)
    fig.suptitle(
        f"{dataset}: mean over seeds (holdout: fitted on the train split; full: on the whole training set)", fontsize=10
    )
    fig.tight_layout()
    return fig
