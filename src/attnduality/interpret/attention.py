"""Reading a fitted convex self-attention head (Sahiner et al. 2022, Theorems 3.1 and 3.3, Corollary 3.2).

The lifted solution of the linear head (``ConvexAttentionClassifier/Regressor(kind="linear").coef_``) is one
(d², d·c) matrix ``Z``; that of the gated-ReLU head is (m, d², d·c), one such matrix ``Z_j`` per gate ``U_j``
(``gates_``, (m, d, d)). The index convention is the library's (:mod:`attnduality.convex.operators.attention`): block
``Z^{(k,l)} = Z[k*d:(k+1)*d, l*c:(l+1)*c] = Σ_h W1_h[:, k] W2_h[l, :]`` for merged weights ``W1 = QKᵀ`` (d, d) and
``W2 = VW`` (d, c), i.e. ``Z.reshape(d, d, d, c)[k, a, l, b]``.

What each tool shows:

* :func:`block_norms` and :func:`mean_gram` (:func:`plot_block_norms_vs_gram`): Corollary 3.2 — if every sample's
  Gram matrix ``G_i = X_iᵀX_i`` is block diagonal over feature groups, the blocks ``Z^{(k,l)}`` that pair features of
  different groups are zero at an optimum (they do not reach the loss, and zeroing them never increases ``‖Z‖_*``),
  so the block-norm map inherits the Gram matrices' zero pattern (the paper's Figure 1).
* :func:`singular_values` and :func:`effective_rank` (:func:`plot_spectrum`): the nuclear norm of Theorem 3.1
  (``Σ_j ‖Z_j‖_*`` for the gated head) makes ``Z`` low rank; its rank is the number of heads of the equivalent
  non-convex network (one per singular value; the SVD map is derived here).
* :func:`token_masks` and :func:`mask_clustering_score` (:func:`plot_token_masks`): the token-pair masks
  ``M_j[t, t'] = 1{x_tᵀ U_j x_t' ≥ 0}`` of Theorem 3.3 / the gated head (eqs. (15)–(16)), the mechanism behind the
  abstract's "self-attention implicitly clusters the tokens based on their latent similarity", and a quantitative
  check of how cluster-like a given mask is.

Every function accepts NumPy arrays or torch tensors and returns NumPy arrays (float64 / bool). Figures are
:class:`matplotlib.figure.Figure` objects on the Agg canvas (no pyplot, no global backend change); pass ``path`` to
also write a PNG.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..convex.operators.attention import attention_masks

__all__ = [
    "MaskClustering",
    "block_norms",
    "effective_rank",
    "mask_clustering_score",
    "mean_gram",
    "plot_block_norms_vs_gram",
    "plot_spectrum",
    "plot_token_masks",
    "singular_values",
    "token_masks",
]

ArrayLike = np.ndarray | torch.Tensor | Sequence
PathLike = str | os.PathLike

_EXHAUSTIVE_MAX_TOKENS = 16  # 2^(s-1) two-cluster partitions are enumerated up to this many tokens
_LOG_FLOOR = 1e-18  # zero singular values are drawn at this height on log axes


def _array(a: ArrayLike, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    out = np.asarray(a, dtype=np.float64)
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or inf")
    return out


# ----------------------------------------------------------------------------------------------------------------
# Block structure (Corollary 3.2)
# ----------------------------------------------------------------------------------------------------------------
def block_norms(z: ArrayLike, d: int, c: int, per_gate: bool = False) -> np.ndarray:
    """Frobenius norms ``‖Z^{(k,l)}‖_F`` of the (d, c) blocks of a lifted self-attention solution (Theorem 3.1).

    ``z`` is the linear head's (d², d·c) matrix, or the gated head's (m, d², d·c) stack. Block ``(k, l)`` is
    ``Z[k*d:(k+1)*d, l*c:(l+1)*c] = Σ_h W1_h[:, k] W2_h[l, :]``: the interaction of Gram entry ``G_i[k, l]``
    with the prediction. By Corollary 3.2, if ``G_i[k, l] = 0`` for every sample (feature groups uncorrelated
    within every sample), these blocks vanish at an optimum.

    Returns (d, d) with entry ``[k, l]``; for a gated stack the per-gate norms summed over gates,
    ``Σ_j ‖Z_j^{(k,l)}‖_F`` (the block is zero in every gate iff the sum is zero), or the (m, d, d) per-gate norms
    when ``per_gate=True``.
    """
    z = _array(z, "z")
    d, c = int(d), int(c)
    if d < 1 or c < 1:
        raise ValueError(f"d and c must be >= 1, got d={d}, c={c}")
    if z.ndim not in (2, 3) or z.shape[-2:] != (d * d, d * c):
        raise ValueError(f"z must be (d², d·c) = {(d * d, d * c)} or (m, d², d·c), got shape {z.shape}")
    stack = z.reshape(-1, d, d, d, c)  # [j, k, a, l, b]
    norms = np.sqrt(np.square(stack).sum(axis=(2, 4)))  # [j, k, l]
    if z.ndim == 2:
        return norms[0]
    return norms if per_gate else norms.sum(axis=0)


def mean_gram(x: ArrayLike, normalize: bool = False, absolute: bool = False) -> np.ndarray:
    """Mean over samples of the Gram (feature-correlation) matrices ``G_i = X_iᵀX_i`` of Theorem 3.1, (d, d).

    ``x`` is (N, s, d) (or one sample (s, d)). ``normalize=True`` divides by the number of tokens s (``G_i / s``,
    the per-token second moment). ``absolute=True`` averages ``|G_i|`` entrywise instead: Corollary 3.2 needs
    ``G_i[k, l] = 0`` for *every* sample, which is exactly where the mean of ``|G_i|`` is zero, whereas the signed
    mean can vanish by cancellation across samples.
    """
    x = _array(x, "x")
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"x must be (N, s, d) or (s, d), got shape {x.shape}")
    grams = np.einsum("nta,ntb->nab", x, x)
    if absolute:
        grams = np.abs(grams)
    out = grams.mean(axis=0)
    return out / x.shape[1] if normalize else out


# ----------------------------------------------------------------------------------------------------------------
# Spectrum (the nuclear norm, Theorem 3.1)
# ----------------------------------------------------------------------------------------------------------------
def singular_values(z: ArrayLike) -> np.ndarray:
    """Singular values of the lifted solution, in decreasing order (Theorem 3.1's nuclear norm is their sum).

    ``z`` (d², d·c) gives (min(d², d·c),); a gated stack (m, d², d·c) gives (m, min(d², d·c)), one spectrum per gate
    (the gated penalty is ``Σ_j ‖Z_j‖_*``). The number of non-zero values of ``Z_j`` is the number of heads of the
    equivalent non-convex network for that gate (SVD recovery, derived here).
    """
    z = _array(z, "z")
    if z.ndim not in (2, 3):
        raise ValueError(f"z must be 2-D (d², d·c) or 3-D (m, d², d·c), got shape {z.shape}")
    return np.linalg.svd(z, compute_uv=False)


def effective_rank(sv: ArrayLike, tol: float = 1e-6) -> int | np.ndarray:
    """Number of singular values above ``tol`` times the largest one (a relative threshold).

    ``sv`` is a spectrum (r,) from :func:`singular_values` (returns an ``int``) or a stack (m, r) (returns an (m,)
    integer array, one rank per gate). An all-zero spectrum has rank 0. The proximal (singular-value thresholding)
    solutions of the library's solvers have exact zeros up to rounding (~1e-16 relative), so the default ``tol``
    separates them cleanly from the kept values at tight solver tolerances.
    """
    sv = _array(sv, "sv")
    if sv.ndim not in (1, 2):
        raise ValueError(f"sv must be 1-D or 2-D, got shape {sv.shape}")
    if not 0 <= tol < 1:
        raise ValueError(f"tol must be in [0, 1), got {tol!r}")
    top = np.abs(sv).max(axis=-1, keepdims=True) if sv.shape[-1] else np.zeros(sv.shape[:-1] + (1,))
    ranks = ((np.abs(sv) > tol * top) & (top > 0)).sum(axis=-1)
    return int(ranks) if sv.ndim == 1 else ranks.astype(np.int64)


# ----------------------------------------------------------------------------------------------------------------
# Token-pair masks (Theorem 3.3, gated heads)
# ----------------------------------------------------------------------------------------------------------------
def _sample_and_gates(x_i: ArrayLike, gates: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x = _array(x_i, "x_i")
    g = _array(gates, "gates")
    if g.ndim == 2:
        g = g[None]
    if x.ndim != 2:
        raise ValueError(f"x_i must be one sample (s, d), got shape {x.shape}")
    d = x.shape[1]
    if g.ndim != 3 or g.shape[1:] != (d, d):
        raise ValueError(f"gates must be (m, {d}, {d}) or ({d}, {d}), got shape {g.shape}")
    return x, g


def token_masks(x_i: ArrayLike, gates: ArrayLike) -> np.ndarray:
    """Token-pair masks ``M_j[t, t'] = 1{x_tᵀ U_j x_t' ≥ 0}`` of one sample, (m, s, s) bool.

    The arrangement patterns of Theorem 3.3 for fixed gates (the gated head): query token ``t``
    attends to key ``t'`` under gate ``j`` iff their latent similarity ``x_tᵀ U_j x_t'`` is non-negative. ``x_i``
    is (s, d); ``gates`` is (m, d, d) (e.g. a fitted head's ``gates_``) or one (d, d) gate (then m = 1). Computed by
    :func:`attnduality.convex.operators.attention.attention_masks`, the function the operators use.
    """
    x, g = _sample_and_gates(x_i, gates)
    masks = attention_masks(torch.as_tensor(x)[None], torch.as_tensor(g))[0]
    return masks.numpy() != 0


@dataclass(frozen=True)
class MaskClustering:
    """How cluster-like the token-pair masks of one sample are (:func:`mask_clustering_score`); arrays are (m,).

    ``density``: fraction of off-diagonal token pairs with mask 1. ``agreement``: the largest fraction of
    off-diagonal ordered pairs ``(t, t')`` on which the mask equals the same-cluster indicator ``1{ℓ_t = ℓ_t'}`` of
    a partition of the tokens into at most two clusters (``labels``, (m, s) in {0, 1}); 1 iff the mask *is* a
    two-cluster co-membership relation. ``null_agreement``: the same statistic, averaged over masks whose
    off-diagonal entries are randomly permuted (same density, no structure) — the chance level. ``cosine_correlation``:
    Pearson correlation between the mask entries and the raw cosine similarity ``cos(x_t, x_t')`` over off-diagonal
    pairs (NaN when either is constant). ``exact``: whether the partitions were found by exhaustive enumeration
    (True) or by a local search (then ``agreement`` and ``null_agreement`` are lower bounds).
    """

    density: np.ndarray
    agreement: np.ndarray
    null_agreement: np.ndarray
    cosine_correlation: np.ndarray
    labels: np.ndarray
    exact: bool

    @property
    def excess_agreement(self) -> np.ndarray:
        """``(agreement − null) / (1 − null)``: 0 at chance level, 1 for an exact two-cluster mask."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return (self.agreement - self.null_agreement) / (1.0 - self.null_agreement)


def _partitions(s: int) -> np.ndarray:
    """All ±1 labelings of s tokens with the first token fixed to +1, (2^(s-1), s)."""
    bits = (np.arange(2 ** (s - 1))[:, None] >> np.arange(s - 1)[None, :]) & 1
    return np.concatenate([np.ones((bits.shape[0], 1)), 1.0 - 2.0 * bits], axis=1)


def _best_partition(a: np.ndarray, table: np.ndarray | None) -> tuple[np.ndarray, float]:
    """Maximise ``ℓᵀ A ℓ`` over ``ℓ ∈ {±1}^s`` for symmetric ``A`` with zero diagonal.

    Exhaustive over ``table`` when given; otherwise a local search (single flips, best improvement first) from the
    sign of the leading eigenvector and from the one-cluster labeling, keeping the better local maximum.
    """
    if table is not None:
        values = ((table @ a) * table).sum(axis=1)
        best = int(values.argmax())
        return table[best], float(values[best])
    s = a.shape[0]
    lead = np.linalg.eigh(a)[1][:, -1]
    starts = [np.where(lead >= 0, 1.0, -1.0), np.ones(s)]
    best_lab, best_val = starts[1], float(a.sum())
    for lab in starts:
        lab = lab.copy()
        for _ in range(s * s):
            gain = -4.0 * lab * (a @ lab)  # change of ℓᵀAℓ when flipping each token
            t = int(gain.argmax())
            if gain[t] <= 1e-12:
                break
            lab[t] = -lab[t]
        val = float(lab @ a @ lab)
        if val > best_val:
            best_lab, best_val = lab, val
    return best_lab, best_val


def _two_cluster_agreement(mask: np.ndarray, table: np.ndarray | None) -> tuple[float, np.ndarray]:
    """Best agreement of a 0/1 (s, s) mask with a ≤2-cluster co-membership relation, off-diagonal pairs."""
    s = mask.shape[0]
    b = 2.0 * mask - 1.0
    np.fill_diagonal(b, 0.0)
    a = 0.5 * (b + b.T)  # ℓᵀBℓ = ℓᵀAℓ
    lab, val = _best_partition(a, table)
    pairs = s * (s - 1)
    # agreement on pair (t, t') is (1 + B[t, t'] ℓ_t ℓ_t') / 2; summed over ordered off-diagonal pairs
    return (pairs + val) / (2.0 * pairs), (lab < 0).astype(np.int64)


def mask_clustering_score(
    x_i: ArrayLike,
    gates: ArrayLike,
    n_null: int = 20,
    seed: int = 0,
) -> MaskClustering:
    """A quantitative check of "self-attention implicitly clusters the tokens by their latent similarity".

    The claim (abstract; mechanism in Theorem 3.3) rests on the masks
    ``M_j[t, t'] = 1{x_tᵀ U_j x_t' ≥ 0}`` (:func:`token_masks`). Comparing the latent similarity inside and outside
    the mask is vacuous (it is ≥ 0 inside and < 0 outside by definition), so this function asks instead whether a
    mask is a *clustering*, i.e. a co-membership relation "``t`` and ``t'`` are in the same cluster":

    * ``agreement``: the best fraction of off-diagonal ordered token pairs on which ``M_j`` equals
      ``1{ℓ_t = ℓ_t'}`` over partitions ``ℓ`` of the s tokens into two clusters (one cluster allowed). It is exactly
      1 for a rank-one positive semidefinite gate ``U = u uᵀ`` (then ``x_tᵀUx_t' = (uᵀx_t)(uᵀx_t')`` and the two
      clusters are the signs of ``uᵀx_t``, ties aside), and for ``U = I`` on tokens that form two antipodal groups.
      A generic gate's sign pattern of ``X U Xᵀ`` is neither symmetric nor transitive, so its agreement is below 1.
      A bipartite mask (``U = −u uᵀ``: attend only across the two sides) scores *below* chance: the statistic
      rewards co-membership, not any two-block structure.
      Found by enumerating all ``2^(s-1)`` partitions for s ≤ 16 tokens; beyond that by a local search (a lower
      bound; ``exact=False``).
    * ``null_agreement``: the same statistic for ``n_null`` masks with the off-diagonal entries randomly permuted
      (same density; seeded by ``seed``). Two clusters can always explain part of any mask, so read ``agreement``
      against this chance level (``excess_agreement``).
    * ``cosine_correlation``: correlation of the mask entries with the raw cosine similarity of the tokens. It says
      whether the gate's "latent similarity" tracks the tokens' raw similarity: it is positive for gates with a
      positive definite symmetric part (e.g. ``U = I``) and has expectation 0 for the i.i.d. Gaussian gates that the
      estimators sample (the sign of ``x_tᵀUx_t'`` is then independent of the angle between the tokens).

    What this does not measure: whether a *fitted* model relies on these clusters. In the gated head the gates are
    fixed (random) and only the blocks ``Z_j`` are learned, so mask structure is a property of the gates and the
    data; combine with ``block_norms(coef_, d, c, per_gate=True)`` to see which gates' masks the fit actually uses.

    ``x_i`` is one sample (s, d) with s ≥ 2; ``gates`` (m, d, d) or (d, d).
    """
    x, g = _sample_and_gates(x_i, gates)
    s = x.shape[0]
    if s < 2:
        raise ValueError(f"need at least 2 tokens, got s={s}")
    if n_null < 0:
        raise ValueError(f"n_null must be >= 0, got {n_null!r}")
    masks = token_masks(x, g).astype(np.float64)
    exact = s <= _EXHAUSTIVE_MAX_TOKENS
    table = _partitions(s) if exact else None
    off = ~np.eye(s, dtype=bool)
    norms = np.linalg.norm(x, axis=1)
    safe = np.where(norms > 0, norms, 1.0)
    cos = ((x @ x.T) / safe[:, None] / safe[None, :])[off]
    rng = np.random.default_rng(seed)

    m = g.shape[0]
    density, agree, null, corr = (np.empty(m) for _ in range(4))
    labels = np.empty((m, s), dtype=np.int64)
    for j in range(m):
        entries = masks[j][off]
        density[j] = entries.mean()
        agree[j], labels[j] = _two_cluster_agreement(masks[j], table)
        shuffled = []
        for _ in range(n_null):
            perm = np.zeros((s, s))
            perm[off] = rng.permutation(entries)
            shuffled.append(_two_cluster_agreement(perm, table)[0])
        null[j] = np.mean(shuffled) if shuffled else np.nan
        const = np.ptp(entries) == 0 or np.ptp(cos) == 0
        corr[j] = np.nan if const else np.corrcoef(entries, cos)[0, 1]
    return MaskClustering(density, agree, null, corr, labels, exact)


# ----------------------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------------------
def _figure(figsize: tuple[float, float]) -> Figure:
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: PathLike | None, dpi: int) -> None:
    if path is not None:
        fig.savefig(os.fspath(path), dpi=dpi, format="png")


def plot_block_norms_vs_gram(
    z: ArrayLike,
    x: ArrayLike,
    d: int,
    c: int,
    path: PathLike | None = None,
    *,
    absolute: bool = True,
    order: Sequence[int] | None = None,
    dpi: int = 120,
) -> Figure:
    """Corollary 3.2 / the paper's Figure 1: the block-norm map of ``Z`` beside the mean Gram matrix.

    Left: :func:`block_norms` ``‖Z^{(k,l)}‖_F`` (summed over gates for a gated stack); right: :func:`mean_gram` of
    ``x`` (N, s, d), normalised by s, of ``|G_i|`` by default (``absolute=True``: zero exactly where ``G_i[k, l] = 0``
    for every sample, the corollary's hypothesis). Under the corollary, the zeros of the right map reappear in the
    left one. ``order`` permutes the features of both maps (e.g. to bring feature groups together). Returns the
    figure; writes a PNG to ``path`` when given.
    """
    norms = block_norms(z, d, c)
    x = _array(x, "x")
    if x.shape[-1] != int(d):
        raise ValueError(f"x has {x.shape[-1]} features, expected d={d}")
    gram = mean_gram(x, normalize=True, absolute=absolute)
    ticks = np.arange(int(d))
    if order is not None:
        idx = np.asarray(order, dtype=np.int64)
        if sorted(idx.tolist()) != ticks.tolist():
            raise ValueError(f"order must be a permutation of range({d}), got {list(order)}")
        norms, gram, ticks = norms[np.ix_(idx, idx)], gram[np.ix_(idx, idx)], idx

    fig = _figure((9.0, 4.0))
    axes = fig.subplots(1, 2)
    panels = [
        (norms, r"block norms $\|Z^{(k,l)}\|_F$", "viridis"),
        (gram, r"mean $|G_i|/s$" if absolute else r"mean $G_i/s$", "viridis" if absolute else "RdBu_r"),
    ]
    for ax, (values, title, cmap) in zip(axes, panels, strict=True):
        kwargs = {}
        if cmap == "RdBu_r":
            lim = float(np.abs(values).max()) or 1.0
            kwargs = {"vmin": -lim, "vmax": lim}
        im = ax.imshow(values, cmap=cmap, interpolation="nearest", **kwargs)
        fig.colorbar(im, ax=ax, shrink=0.8)
        ax.set_title(title)
        ax.set_xlabel("feature l")
        ax.set_ylabel("feature k")
        if d <= 20:
            ax.set_xticks(range(int(d)), [str(t) for t in ticks])
            ax.set_yticks(range(int(d)), [str(t) for t in ticks])
    fig.suptitle("Corollary 3.2: zero Gram entries give zero blocks of Z")
    _save(fig, path, dpi)
    return fig


def plot_spectrum(z: ArrayLike, path: PathLike | None = None, *, tol: float = 1e-6, dpi: int = 120) -> Figure:
    """The singular spectrum of ``Z`` (one line per gate for a gated stack): the low rank of Theorem 3.1's nuclear norm.

    Left: normalised singular values ``σ_r / σ_1`` on a log scale (exact zeros drawn at 1e-18), with the
    :func:`effective_rank` threshold ``tol`` dashed; right: the cumulative share ``Σ_{r' ≤ r} σ_r' / Σ σ`` of the
    nuclear norm. All-zero gates are skipped. Returns the figure; writes a PNG to ``path`` when given.
    """
    sv = np.atleast_2d(singular_values(z))
    ranks = np.atleast_1d(effective_rank(sv, tol))
    fig = _figure((9.0, 3.8))
    ax_sv, ax_cum = fig.subplots(1, 2)
    r = np.arange(1, sv.shape[1] + 1)
    for j, (row, rank) in enumerate(zip(sv, ranks, strict=True)):
        if row[0] <= 0:
            continue
        label = f"rank {rank}" if sv.shape[0] == 1 else f"gate {j}: rank {rank}"
        ax_sv.semilogy(r, np.maximum(row / row[0], _LOG_FLOOR), "o-", ms=3, label=label)
        ax_cum.plot(r, np.cumsum(row) / row.sum(), "o-", ms=3, label=label)
    ax_sv.axhline(tol, color="k", ls="--", lw=0.8)
    ax_sv.set_xlabel("index r")
    ax_sv.set_ylabel(r"$\sigma_r / \sigma_1$")
    ax_sv.set_title("normalised singular values")
    ax_cum.set_xlabel("index r")
    ax_cum.set_ylabel(r"$\Sigma_{r' \leq r}\, \sigma_{r'} \,/\, \Sigma\, \sigma$")
    ax_cum.set_ylim(0.0, 1.05)
    ax_cum.set_title("cumulative share of the nuclear norm")
    if ax_sv.get_legend_handles_labels()[0]:
        ax_sv.legend(fontsize=7)
    _save(fig, path, dpi)
    return fig


def plot_token_masks(
    x_i: ArrayLike,
    gates: ArrayLike,
    grid: tuple[int, int],
    query: int = 0,
    path: PathLike | None = None,
    *,
    max_gates: int = 8,
    dpi: int = 120,
) -> Figure:
    """The token-pair masks of one sample (Theorem 3.3 / gated head; the paper's figure is not public).

    Top row: the s×s mask ``1{x_tᵀ U_j x_t' ≥ 0}`` of each gate (query ``t`` on rows, key ``t'`` on columns; the
    query row outlined). Bottom row: the query token's mask row reshaped onto the (h, w) patch grid (row-major
    token order, e.g. (14, 14) for 196 patches), the query's own patch marked. At most ``max_gates`` gates are drawn.
    Returns the figure; writes a PNG to ``path`` when given.
    """
    masks = token_masks(x_i, gates)
    m, s = masks.shape[0], masks.shape[1]
    h, w = (int(v) for v in grid)
    if h * w != s:
        raise ValueError(f"grid {tuple(grid)} has {h * w} cells but the sample has s={s} tokens")
    if not 0 <= query < s:
        raise ValueError(f"query must be in [0, {s}), got {query}")
    if max_gates < 1:
        raise ValueError(f"max_gates must be >= 1, got {max_gates}")
    shown = min(m, int(max_gates))
    fig = _figure((2.6 * shown + 0.5, 5.4))
    axes = fig.subplots(2, shown, squeeze=False)
    for j in range(shown):
        top, bottom = axes[0, j], axes[1, j]
        top.imshow(masks[j], cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
        top.axhline(query - 0.5, color="tab:red", lw=0.8)
        top.axhline(query + 0.5, color="tab:red", lw=0.8)
        top.set_title(f"gate {j}: mask ({masks[j].mean():.0%} on)", fontsize=9)
        top.set_xlabel("key t'", fontsize=8)
        top.set_ylabel("query t", fontsize=8)
        bottom.imshow(masks[j, query].reshape(h, w), cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
        bottom.plot([query % w], [query // w], marker="*", color="tab:red", ms=10, ls="none")
        bottom.set_title(f"query {query} on the {h}×{w} grid", fontsize=9)
        bottom.set_xticks([])
        bottom.set_yticks([])
    suffix = f" (first {shown} of {m} gates)" if shown < m else ""
    fig.suptitle(r"token-pair masks $1\{x_t^\top U_j x_{t'} \geq 0\}$ (black: 1)" + suffix)
    _save(fig, path, dpi)
    return fig
