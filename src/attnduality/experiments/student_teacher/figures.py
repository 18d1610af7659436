"""Figures of the ``student-teacher`` experiment (Ergen, Neyshabur & Mehta 2022, §4, Figs. 2–3).

:func:`error_figure`: test relative error versus steps (parts A and B) and the part-B objective with the convex
program's certified lower bound (Fig. 2 style); :func:`maps_figure`: the attention on one test sentence, teacher
against the part-A students (Fig. 3: "sparse versus uniform"); :func:`importance_figure`: which token positions each
part-B model pools.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..figures import pyplot
from .data import example_index

__all__ = ["COLORS", "error_figure", "importance_figure", "maps_figure"]


COLORS = {
    "softmax": "tab:blue",
    "convex": "tab:red",
    "convex-simplex": "tab:purple",
    "twin": "tab:orange",
    "program": "black",
}
"""Line colour of each model in the figures."""


def error_figure(
    layer_runs: list[dict[str, Any]],
    head_runs: list[dict[str, Any]],
    program: dict[str, Any] | None,
    lower: float | None,
) -> Any:
    """Test relative error versus steps (A, B) and the part-B objective against the certified bound."""
    plt = pyplot()
    ncols = 1 + bool(head_runs or program) + bool(lower is not None and head_runs)
    fig, axes = plt.subplots(1, ncols, figsize=(4.8 * ncols, 3.6), squeeze=False)
    ax = axes[0][0]
    for r in layer_runs:
        ax.plot(r["step"], r["test_rel"], color=COLORS[r["model"]], lw=1.3, label=f"{r['model']} seed {r['seed']}")
        ax.plot(r["step"], r["train_rel"], color=COLORS[r["model"]], lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("Adam step")
    ax.set_ylabel("relative error (solid test, dashed train)")
    ax.set_title("A: last layer, attention replaced", fontsize=9)
    ax.legend(fontsize=7)
    if ncols > 1:
        ax = axes[0][1]
        for r in head_runs:
            ax.plot(r["step"], r["test_rel"], color=COLORS[r["model"]], lw=1.2, label=f"{r['model']} seed {r['seed']}")
        if program is not None:
            tr = program["trace"]
            ax.plot(tr["iteration"], tr["test_rel"], color="black", lw=1.6, label="convex program (FISTA iter.)")
        ax.set_yscale("log")
        ax.set_xlabel("Adam step / FISTA iteration")
        ax.set_ylabel("test relative error")
        ax.set_title("B: attention-only heads ([CLS] output)", fontsize=9)
        ax.legend(fontsize=7)
    if ncols > 2 and lower is not None:
        ax = axes[0][2]
        for r in head_runs:
            ax.plot(r["step"], r["objective"], color=COLORS[r["model"]], lw=1.2, label=f"{r['model']} seed {r['seed']}")
        if program is not None:
            tr = program["trace"]
            ax.plot(tr["iteration"], tr["objective"], color="black", lw=1.6, label="convex program")
        ax.axhline(lower, color="black", ls=":", lw=1, label="certified lower bound (twin's class)")
        ax.set_yscale("log")
        ax.set_xlabel("Adam step / FISTA iteration")
        ax.set_ylabel("regularised objective (fit sentences)")
        ax.set_title("B: objective; the bound holds for the twin, not the softmax head", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def maps_figure(data: dict[str, Any], layer_runs: list[dict[str, Any]], teacher_map: Any) -> Any:
    """Part A: the attention of the teacher and of each student on one test sentence."""
    plt = pyplot()
    ex = example_index(data)
    i = int(data["test"][ex])
    n_real = int((~data["pad"][i]).sum())
    toks = data["tokens"][i][:n_real]
    panels = [("teacher (MiniLM layer 6)", np.asarray(teacher_map))]
    seen = set()
    for r in layer_runs:
        if r["model"] not in seen:
            seen.add(r["model"])
            panels.append((f"{r['model']} student (seed {r['seed']})", np.asarray(r["example_map"])))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    for ax, (title, m) in zip(axes[0], panels, strict=True):
        m = m[:n_real, :n_real]
        ax.imshow(m / m.max(), cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(n_real), toks, rotation=90, fontsize=6)
        ax.set_yticks(range(n_real), toks, fontsize=6)
        ax.set_title(title + ", mean over heads", fontsize=8)
    fig.tight_layout()
    return fig


def importance_figure(data: dict[str, Any], head_runs: list[dict[str, Any]], program: dict[str, Any] | None) -> Any:
    """Part B: the pooling weight per token position of each model (test sentences)."""
    plt = pyplot()
    w = data["teacher_cls_weights"][data["test"]]
    n = w.shape[-1]
    series = [("teacher [CLS] attention", (w.mean((0, 1))).numpy(), "gray")]
    seen = set()
    for r in head_runs:
        if r["model"] not in seen:
            seen.add(r["model"])
            series.append((f"{r['model']} head (seed {r['seed']})", np.asarray(r["importance"]), COLORS[r["model"]]))
    if program is not None:
        tn = np.asarray(program["token_norms"])
        series.append(("convex program ‖z_k‖", tn / max(tn.sum(), 1e-30), "black"))
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    width = 0.8 / len(series)
    for j, (label, v, c) in enumerate(series):
        ax.bar(np.arange(n) + j * width, v, width=width, color=c, label=label)
    ax.set_xlabel("token position (0 = [CLS])")
    ax.set_ylabel("normalised weight")
    ax.set_title("B: which positions each model pools (test sentences)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
