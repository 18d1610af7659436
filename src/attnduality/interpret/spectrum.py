"""Singular-value decay of attention operators (Chen et al., NeurIPS 2023, Figure 2).

For every attention layer of a model, take the N×N operator it applies to a batch: the row-stochastic softmax matrix
for canonical attention and, for Primal-Attention, the implied asymmetric kernel ``K = φ_q(X) φ_k(X)ᵀ`` whose KSVD the
layer represents (the library's reading of the figure; any layer with an
``attention_matrix(x, key_padding_mask)`` method works). Per sample and head, the curve is the normalised cumulative
sum of singular values ``c_k = Σ_{i≤k} σ_i / Σ_i σ_i`` (k = 0 … N−1); a sharper decay (``c_k`` reaching 1 earlier)
means a lower effective rank.

* :func:`cumulative_singular_values`: ``c`` for a stack of matrices (with padding masks).
* :func:`attention_operators` / :func:`singular_value_decay`: run a model once, record each attention layer's input
  with forward pre-hooks, and return the operators / the curves per layer.
* :func:`plot_singular_value_decay`: one figure per model: the mean curve of each layer with a band over samples and
  heads, and the (layer × index) heat map of Fig. 2(d).

Functions return NumPy float64 arrays; figures are :class:`matplotlib.figure.Figure` objects on the Agg canvas (no
pyplot, no global backend change); pass ``path`` to also write a PNG.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import nn

__all__ = [
    "attention_operators",
    "cumulative_singular_values",
    "plot_singular_value_decay",
    "singular_value_decay",
]

PathLike = str | os.PathLike


def _curve(sv: torch.Tensor, n: int) -> torch.Tensor:
    """Normalised cumulative sums of singular values (…, k), padded with ones to length ``n``."""
    total = sv.sum(dim=-1, keepdim=True)
    c = torch.where(total > 0, sv.cumsum(dim=-1) / torch.where(total > 0, total, 1.0), torch.ones_like(sv))
    if c.shape[-1] < n:
        c = torch.cat((c, c.new_ones(*c.shape[:-1], n - c.shape[-1])), dim=-1)
    return c


def cumulative_singular_values(
    matrices: torch.Tensor | np.ndarray, key_padding_mask: torch.Tensor | np.ndarray | None = None
) -> np.ndarray:
    """``c_k = Σ_{i≤k} σ_i / Σ_i σ_i`` of each N×N matrix in ``matrices`` (…, N, N) → (…, N), float64.

    With ``key_padding_mask`` (B, N) (True = padding) and ``matrices`` (B, …, N, N), sample ``b`` uses the submatrix
    of its non-padding tokens, and its curve is continued with ones up to N. A zero matrix gives ones.
    """
    m = torch.as_tensor(matrices).detach().to("cpu", torch.float64)
    if m.ndim < 2 or m.shape[-1] != m.shape[-2]:
        raise ValueError(f"expected square matrices (..., N, N), got shape {tuple(m.shape)}")
    if not bool(torch.isfinite(m).all()):
        raise ValueError("matrices contain NaN or inf")
    n = m.shape[-1]
    if key_padding_mask is None:
        return _curve(torch.linalg.svdvals(m), n).numpy()
    mask = torch.as_tensor(key_padding_mask).to("cpu")
    if mask.dtype != torch.bool or mask.ndim != 2 or m.ndim < 3 or mask.shape != (m.shape[0], n):
        raise ValueError(f"key_padding_mask must be a bool (B, N) = ({m.shape[0]}, {n}) array, got {tuple(mask.shape)}")
    out = []
    for b in range(m.shape[0]):
        keep = ~mask[b]
        if not bool(keep.any()):
            raise ValueError(f"sample {b} is all padding")
        sub = m[b][..., keep, :][..., keep]
        out.append(_curve(torch.linalg.svdvals(sub), n))
    return torch.stack(out).numpy()


def _attention_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, mod) for name, mod in model.named_modules() if callable(getattr(mod, "attention_matrix", None))]


@torch.no_grad()
def attention_operators(
    model: nn.Module, *args: Any, **kwargs: Any
) -> dict[str, tuple[torch.Tensor, torch.Tensor | None]]:
    """Run ``model(*args, **kwargs)`` once (eval mode, no grad) and return each attention layer's operator.

    Every submodule with an ``attention_matrix(x, key_padding_mask)`` method (the registry's layers) is recorded:
    ``{qualified name: (operator (B, H, N, N), key_padding_mask or None)}``, in module order. The model's training
    flag is restored afterwards.
    """
    layers = _attention_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no layer with an attention_matrix method")
    seen: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def hook(name: str, layer: nn.Module) -> Any:
        def pre(module: nn.Module, a: tuple[Any, ...], kw: dict[str, Any]) -> None:
            x = a[0] if a else kw["x"]
            mask = a[1] if len(a) > 1 else kw.get("key_padding_mask")
            seen[name] = (module.attention_matrix(x, mask).detach(), None if mask is None else mask.detach())

        return layer.register_forward_pre_hook(pre, with_kwargs=True)

    handles = [hook(name, layer) for name, layer in layers]
    was_training = model.training
    try:
        model.eval()
        model(*args, **kwargs)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return {name: seen[name] for name, _ in layers if name in seen}


def singular_value_decay(model: nn.Module, *args: Any, **kwargs: Any) -> dict[str, np.ndarray]:
    """Cumulative normalised singular values (B, H, N) of each attention layer's operator on one batch.

    ``model(*args, **kwargs)`` is run once; keys are the layers' qualified names with their class, e.g.
    ``"encoder.layers.1.attn (PrimalAttention)"``. Feed the result to :func:`plot_singular_value_decay`.
    """
    ops = attention_operators(model, *args, **kwargs)
    mods = dict(model.named_modules())
    return {
        f"{name} ({type(mods[name]).__name__})": cumulative_singular_values(op, mask)
        for name, (op, mask) in ops.items()
    }


def plot_singular_value_decay(
    decay: Mapping[str, np.ndarray | torch.Tensor],
    path: PathLike | None = None,
    *,
    title: str | None = None,
    band: str = "minmax",
    dpi: int = 120,
) -> Figure:
    """One model's Figure 2: mean ``c_k`` per layer with a band over samples/heads, and the layer × index heat map.

    ``decay`` maps a layer label to curves (..., N) (e.g. :func:`singular_value_decay`'s output); ``band`` is
    ``"minmax"`` (the range) or ``"std"`` (mean ± one standard deviation, clipped to [0, 1]).
    """
    if band not in ("minmax", "std"):
        raise ValueError(f"band must be 'minmax' or 'std', got {band!r}")
    if not decay:
        raise ValueError("decay is empty")
    curves = {k: np.asarray(torch.as_tensor(v).detach().cpu(), dtype=np.float64) for k, v in decay.items()}
    lengths = {c.shape[-1] for c in curves.values()}
    if len(lengths) != 1:
        raise ValueError(f"all layers need the same N, got {sorted(lengths)}")
    n = lengths.pop()
    flat = {k: c.reshape(-1, n) for k, c in curves.items()}
    fig = Figure(figsize=(11.0, 4.2))
    FigureCanvasAgg(fig)
    ax, hm = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.3, 1.0]})
    idx = np.arange(n)
    means = []
    for label, c in flat.items():
        mean = c.mean(axis=0)
        means.append(mean)
        if band == "minmax":
            lo, hi = c.min(axis=0), c.max(axis=0)
        else:
            sd = c.std(axis=0)
            lo, hi = np.clip(mean - sd, 0, 1), np.clip(mean + sd, 0, 1)
        (line,) = ax.plot(idx, mean, label=label, lw=1.5)
        ax.fill_between(idx, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
    ax.set_xlabel("singular value index k")
    ax.set_ylabel("normalised cumulative singular value")
    ax.set_ylim(0.0, 1.02)
    ax.set_xlim(0, max(n - 1, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    img = hm.imshow(np.stack(means), aspect="auto", origin="lower", vmin=0.0, vmax=1.0, cmap="viridis")
    hm.set_xlabel("singular value index k")
    hm.set_ylabel("layer")
    hm.set_yticks(range(len(means)))
    hm.set_yticklabels([str(i) for i in range(len(means))])
    fig.colorbar(img, ax=hm, fraction=0.05)
    fig.suptitle(title or "Singular value decay of the attention operators")
    fig.tight_layout()
    if path is not None:
        fig.savefig(os.fspath(path), dpi=dpi, format="png")
    return fig
