"""The transfer experiment's figures: test accuracy per head and target, and Adam's excess over the certified
optimum."""

from __future__ import annotations

from typing import Any

import numpy as np

from .config import BASELINES, DATASET_LABELS

__all__ = ["accuracy_figure", "adam_figure"]


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def accuracy_figure(results: dict[str, list[dict[str, Any]]]) -> Any:
    plt = _plt()
    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 5.0), squeeze=False)
    for ax, (ds, rows) in zip(axes[0], results.items(), strict=True):
        xs = np.arange(len(rows))
        acc = np.array([r["test_acc"] for r in rows])
        err = np.array([1.96 * r["test_se"] for r in rows])
        colors = ["tab:gray" if r["head"] in BASELINES else "tab:blue" for r in rows]
        ax.bar(xs - 0.2, acc, 0.4, yerr=err, color=colors, capsize=2, label="convex (certified)")
        adam = [r.get("adam_test_acc") for r in rows]
        if any(a is not None for a in adam):
            ax.bar(xs + 0.2, [np.nan if a is None else a for a in adam], 0.4, color="tab:orange", alpha=0.8,
                   label="twin, Adam")
        base = max((r["test_acc"] for r in rows if r["head"] in BASELINES), default=None)
        if base is not None:
            ax.axhline(base, color="k", ls="--", lw=0.8, label="best baseline (convex)")
        lo = np.nanmin(np.concatenate([acc, [a for a in adam if a is not None]])) if len(rows) else 0.0
        ax.set_ylim(max(0.0, lo - 0.1), min(1.0, float(np.nanmax(acc + err)) + 0.05))
        ax.set_xticks(xs, [r["head"] for r in rows], rotation=40, ha="right", fontsize=8)
        ax.set_ylabel("test accuracy")
        ax.set_title(DATASET_LABELS[ds], fontsize=9)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3, frameon=False)
    fig.tight_layout()
    return fig


def adam_figure(results: dict[str, list[dict[str, Any]]], curves: dict[str, dict[str, dict[str, Any]]]) -> Any:
    plt = _plt()
    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 4.2), squeeze=False)
    for ax, ds in zip(axes[0], results, strict=True):
        for head, a in curves.get(ds, {}).items():
            obj = np.asarray(a["curve"], dtype=float)
            if obj.size:
                p = float(a["certified_objective"])
                ax.semilogy(a["curve_step"], np.maximum((obj - p) / abs(p), 1e-8), lw=1, label=head)
        ax.set_xlabel("Adam step")
        ax.set_ylabel("(objective − certified optimum) / optimum")
        ax.set_title(DATASET_LABELS[ds], fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig
