"""Figure helpers shared by the experiments: a headless pyplot and the singular-value decay figure.

:func:`spectrum_figure` draws the normalised cumulative singular values ``c_k`` of each layer's attention operators
in the style of Chen et al. 2023 (Primal-Attention, NeurIPS), Fig. 2(a–c), from the per-layer rows of
:func:`attnduality.experiments.stats.spectrum_summary`. :data:`MODEL_LABELS` are the display names of that paper's
models, the model keys of the ``uea`` and ``listops`` experiments.

This module registers no experiment; it is imported by the experiment modules that use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["MODEL_LABELS", "pyplot", "spectrum_figure"]

MODEL_LABELS: dict[str, str] = {
    "primalformer": "PrimalFormer",
    "primal+trans": "Primal.+Trans.",
    "transformer": "Transformer (softmax)",
}
"""Display names of the models of Chen et al. 2023 (PrimalFormer, Primal.+Trans. and the softmax transformer)."""


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (figures are only saved)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def spectrum_figure(
    per_model: Mapping[str, list[dict[str, Any]]], title: str, labels: Mapping[str, str] = MODEL_LABELS
) -> Any:
    """Fig. 2(a–c) style: one panel per layer index, mean ``c_k`` per model with a min–max band.

    ``per_model`` maps a model key to its :func:`~attnduality.experiments.stats.spectrum_summary` rows; ``labels``
    names the models in the legend (a key without a label is shown as is).
    """
    plt = pyplot()
    n_layers = max(len(v) for v in per_model.values())
    fig, axes = plt.subplots(1, n_layers, figsize=(4.6 * n_layers, 3.8), squeeze=False)
    for li in range(n_layers):
        ax = axes[0, li]
        for model, layers in per_model.items():
            if li >= len(layers):
                continue
            row = layers[li]
            mean = np.asarray(row["mean"])
            k = np.arange(mean.size)
            kind = str(row["layer"]).rsplit("(", 1)[-1].rstrip(")")
            (line,) = ax.plot(k, mean, lw=1.6, label=f"{labels.get(model, model)} [{kind}]")
            ax.fill_between(k, np.asarray(row["min"]), np.asarray(row["max"]), color=line.get_color(), alpha=0.15)
        ax.set_title(f"layer {li}")
        ax.set_xlabel("singular value index k")
        ax.set_ylabel("normalised cumulative singular value")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
