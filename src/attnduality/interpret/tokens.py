"""Token sparsity of the convex attention programs (Ergen, Neyshabur & Mehta 2022, abstract and App. A.4).

The abstract's "implicit regularization mechanism, which promotes sparsity across tokens": in eq. (9)/(12) weight
decay becomes a group ℓ1 penalty over token rows of ``Z``, so only a few tokens are used, each by one head with a
one-hot attention row. These tools measure it on a fitted :class:`~attnduality.convex.TokenLassoRegressor` /
:class:`~attnduality.convex.TokenLassoClassifier` and along a regularisation path:

* :func:`token_sparsity` — the per-token norms, the support and ``h*`` of one fit;
* :func:`sparsity_vs_beta` — the number of nonzero token groups, tokens and heads versus β (warm-started path);
* :func:`plot_sparsity_vs_beta` — counts versus β beside the per-token norm paths (PNG with ``path``).

Figures are :class:`matplotlib.figure.Figure` objects on the Agg canvas (no pyplot, no global backend change).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.utils.validation import check_is_fitted

from ..convex.estimators.token_lasso import TokenPath

__all__ = ["TokenSparsity", "plot_sparsity_vs_beta", "sparsity_vs_beta", "token_sparsity"]

PathLike = str | os.PathLike


@dataclass(frozen=True)
class TokenSparsity:
    """The token sparsity of one fit."""

    token_norms: np.ndarray
    """(n,) ``‖Z_k‖_F`` per token (normalised to max 1 it is the convex model's "attention map")."""
    support: np.ndarray
    """Indices of the tokens used."""
    n_tokens: int
    """Number of tokens in the input."""
    heads_needed: int
    """``h*``: heads of the recovered network."""

    @property
    def n_active(self) -> int:
        return int(len(self.support))

    @property
    def fraction_active(self) -> float:
        return self.n_active / self.n_tokens if self.n_tokens else 0.0


def token_sparsity(estimator: Any) -> TokenSparsity:
    """The token sparsity of a fitted token-lasso estimator."""
    check_is_fitted(estimator, ["coef_", "support_", "token_norms_"])
    return TokenSparsity(
        token_norms=np.asarray(estimator.token_norms_, dtype=np.float64),
        support=np.asarray(estimator.support_, dtype=np.int64),
        n_tokens=int(estimator.n_tokens_in_),
        heads_needed=int(estimator.heads_needed_),
    )


def sparsity_vs_beta(
    estimator: Any,
    X: Any,
    y: Any,
    betas: Any = None,
    *,
    n_betas: int = 20,
    eps: float = 1e-3,
) -> TokenPath:
    """Number of nonzero token groups (and tokens, and heads ``h*``) versus β for ``estimator``'s program on
    ``(X, y)``: the warm-started path of :meth:`~attnduality.convex.TokenLassoRegressor.regularization_path` (default
    grid: ``n_betas`` values from ``beta_max`` down to ``eps · beta_max``). ``estimator`` is not modified."""
    if not hasattr(estimator, "regularization_path"):
        raise ValueError(f"{type(estimator).__name__} has no regularization_path; use a TokenLasso estimator")
    return estimator.regularization_path(X, y, betas, n_betas=n_betas, eps=eps)


def plot_sparsity_vs_beta(path_result: TokenPath, path: PathLike | None = None, *, dpi: int = 120) -> Figure:
    """Token sparsity versus β. Left: nonzero token groups, tokens used and ``h*`` against β (log axis, β decreasing
    to the right as along a path); right: every token's norm ``‖Z_k‖_F`` along the path. Returns the figure; writes a
    PNG to ``path`` when given."""
    if not isinstance(path_result, TokenPath):
        raise ValueError(f"expected a TokenPath (from sparsity_vs_beta), got {type(path_result).__name__}")
    order = np.argsort(-path_result.betas)
    betas = path_result.betas[order]
    fig = Figure(figsize=(10.0, 3.8))
    FigureCanvasAgg(fig)
    ax_n, ax_norm = fig.subplots(1, 2)
    ax_n.semilogx(betas, path_result.n_groups[order], "o-", ms=3, label="nonzero token groups")
    ax_n.semilogx(betas, path_result.n_tokens[order], "s-", ms=3, label="tokens used")
    ax_n.semilogx(betas, path_result.heads_needed[order], "^--", ms=3, label="heads needed h*")
    ax_n.axvline(path_result.beta_max, color="k", ls=":", lw=0.8)
    ax_n.invert_xaxis()
    ax_n.set_xlabel(r"$\beta$")
    ax_n.set_ylabel("count")
    ax_n.set_title(r"token sparsity vs $\beta$ (dotted: $\beta_{max}$)")
    ax_n.legend(fontsize=7)
    norms = path_result.token_norms[order]
    for k in range(norms.shape[1]):
        ax_norm.semilogx(betas, norms[:, k], "-", lw=1.0, label=f"token {k}" if norms.shape[1] <= 12 else None)
    ax_norm.invert_xaxis()
    ax_norm.set_xlabel(r"$\beta$")
    ax_norm.set_ylabel(r"$\|Z_k\|_F$")
    ax_norm.set_title("per-token norms along the path")
    if norms.shape[1] <= 12:
        ax_norm.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    if path is not None:
        fig.savefig(os.fspath(path), dpi=dpi)
    return fig
