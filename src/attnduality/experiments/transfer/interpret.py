"""What the best self-attention head learned on a target (Sahiner et al. 2022, Thm 3.1 and Corollary 3.2): its
certified lifted solution at the selected β, the singular spectrum (the heads of the twin), the block-norm map
beside the mean Gram matrix, and how often its test predictions coincide with the logistic baseline's."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..runner import RunContext
from .config import HEADS, TransferConfig
from .heads import fit_head

__all__ = ["ATTENTION_HEADS", "attention_figures", "interpret_attention"]

ATTENTION_HEADS = ("attn_linear", "attn_gated")


def interpret_attention(ctx: RunContext, data: dict[str, Any], head: str, fit: dict[str, Any],
                        logreg_pred: np.ndarray | None) -> dict[str, Any]:
    """Read the certified solution of ``head`` (its ``fit`` record; a record written before the solution was kept in
    it is refit on the whole training set at the selected β with the same gates)."""
    from ...interpret.attention import effective_rank, singular_values

    cfg: TransferConfig = ctx.config
    frac, gates, test_pred = float(fit["beta_frac"]), fit["gates_kept"], np.asarray(fit["test_pred"])
    if "coef" in fit:
        z, rel_gap = np.asarray(fit["coef"]), float(fit["rel_gap"])
    else:
        est, rec = fit_head(HEADS[head], data, None, frac, gates, 1, cfg.tol, cfg)
        z, rel_gap = np.asarray(est.coef_), float(rec["rel_gap"])
    sv = np.atleast_2d(singular_values(z))
    total = float(sv.sum())
    return {
        "head": head, "beta_frac": frac, "rel_gap": rel_gap, "coef": z, "gates": gates,
        "singular_values": sv, "effective_rank": np.atleast_1d(effective_rank(sv, 1e-6)).tolist(),
        "top_share": float(sv[:, 0].sum() / total) if total > 0 else 0.0,
        "agreement_with_logreg": None if logreg_pred is None else float((test_pred == logreg_pred).mean()),
        "x_sample": np.asarray(data["x_train"][: min(500, len(data["x_train"]))]),
        "n_classes": int(data["n_classes"]),
    }  # fmt: skip


def attention_figures(rec: dict[str, Any]) -> tuple[Any, Any]:
    """The block-norm map beside the mean Gram matrix, and the singular spectrum."""
    from ...interpret.attention import plot_block_norms_vs_gram, plot_spectrum

    x = rec["x_sample"]
    gram = plot_block_norms_vs_gram(rec["coef"], x, x.shape[-1], rec["n_classes"])
    return gram, plot_spectrum(rec["coef"])
