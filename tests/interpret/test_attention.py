"""Interpretation tools for convex self-attention heads (:mod:`attnduality.interpret.attention`).

* Corollary 3.2 reproduced on fitted heads: when every sample's tokens carry features of one group only (so every
  Gram matrix, and every gated local Gram, is block diagonal over the groups), the certified optimum of the linear
  head has cross-group blocks ``Z^{(k,l)}`` ≤ 1e-6 × the largest block while every within-group block is
  ≥ 1e-2 × it, and ``‖Z‖_*`` splits into the per-group nuclear norms; the same fit on correlated data has all
  cross-group blocks ≥ 1e-2 × the largest; the gated head behaves like the linear one.
* ``block_norms``, ``mean_gram``, ``singular_values``/``effective_rank``, ``token_masks`` against direct NumPy
  computations (the block convention also against the factor form ``Z^{(k,l)} = Σ_h W1_h[:, k] W2_h[l, :]`` and the
  operator's forward).
* ``mask_clustering_score``: exactly 1 for rank-one PSD gates and for two antipodal token groups with ``U = I``, the
  exhaustive search against a brute-force loop, the local search against the exhaustive one, and chance-level
  cosine correlation for Gaussian gates.
* The nuclear-norm solution's effective rank decreases along a β grid.
* The figure functions write non-empty PNGs.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import attnduality.interpret.attention as interp
from attnduality.convex import ConvexAttentionRegressor
from attnduality.convex.operators.attention import LinearAttentionOperator, sample_attention_gates
from attnduality.interpret import (
    MaskClustering,
    block_norms,
    effective_rank,
    mask_clustering_score,
    mean_gram,
    plot_block_norms_vs_gram,
    plot_spectrum,
    plot_token_masks,
    singular_values,
    token_masks,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _lifted(w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """``Z = Σ_h vec_F(W1_h) vec_F(W2_hᵀ)ᵀ`` for heads ``W1`` (H, d, d), ``W2`` (H, d, c) (Sahiner et al., Thm 3.1)."""
    return sum(np.outer(a.reshape(-1, order="F"), b.T.reshape(-1, order="F")) for a, b in zip(w1, w2, strict=True))


# ----------------------------------------------------------------------------------------------------------------
# Corollary 3.2 on fitted heads
# ----------------------------------------------------------------------------------------------------------------
GROUPS = (2, 2)  # feature groups {0, 1} and {2, 3}
D = sum(GROUPS)
N_TOK = 6
GROUP_OF = np.repeat(np.arange(len(GROUPS)), GROUPS)
CROSS = GROUP_OF[:, None] != GROUP_OF[None, :]  # (d, d): (k, l) in different groups


def _grouped_tokens(n: int, rng: np.random.Generator) -> np.ndarray:
    """Tokens that each carry the features of one group only: per sample, a random half of the tokens holds
    group-1 features and the other half group-2 features. Then ``X_i[t, k] X_i[t, l] = 0`` for every token and
    every cross-group pair, so every ``G_i = X_iᵀX_i`` (and every gated local Gram) is block diagonal."""
    x = rng.standard_normal((n, N_TOK, D))
    for xi in x:
        owner = np.empty(N_TOK, dtype=np.int64)
        for b, tokens in enumerate(np.array_split(rng.permutation(N_TOK), len(GROUPS))):
            owner[tokens] = b
        xi[owner[:, None] != GROUP_OF[None, :]] = 0.0
    return x


def _teacher_targets(x: np.ndarray, rng: np.random.Generator, c: int = 2) -> np.ndarray:
    """A dense linear-attention teacher (its W1 has cross-group entries) plus noise."""
    w1, w2 = rng.standard_normal((D, D)), rng.standard_normal((D, c))
    y = np.stack([(xi @ w1 @ xi.T @ xi @ w2).mean(axis=0) for xi in x]) / x.shape[1]
    return y + 0.1 * rng.standard_normal(y.shape)


def _group_nuclear_norms(z: np.ndarray, c: int) -> list[float]:
    """``‖Z^{(b)}‖_*`` of each group's sub-matrix (rows k ∈ b with all a; columns l ∈ b with all outputs)."""
    rows = np.repeat(GROUP_OF, D)  # row k*d + a belongs to group of k
    cols = np.repeat(GROUP_OF, c)  # column l*c + b belongs to group of l
    return [np.linalg.norm(z[np.ix_(rows == b, cols == b)], ord="nuc") for b in range(len(GROUPS))]


@pytest.fixture(scope="module")
def grouped_fit() -> tuple[np.ndarray, np.ndarray, ConvexAttentionRegressor]:
    rng = np.random.default_rng(0)
    x = _grouped_tokens(60, rng)
    y = _teacher_targets(x, rng)
    est = ConvexAttentionRegressor(kind="linear", scale=1 / N_TOK, beta=1e-3, tol=1e-9, max_iter=50_000).fit(x, y)
    return x, y, est


def test_corollary_3_2_cross_group_blocks_vanish(grouped_fit) -> None:
    # Why this is a real test. Under token averaging the linear head's prediction is
    # Σ_{k,a,l} G_i[k,l] x̄_i[a] Z4[k,a,l,:] (operators/attention.py): every block Z^{(k,l)} with G_i[k,l] ≠ 0 for
    # some sample reaches the loss (through all of its rows a, since x̄_i is dense here), while the cross-group
    # blocks receive zero gradient on these data and are set by the penalty alone. Zeroing them never increases
    # ‖Z‖_* (pinching inequality), which is Corollary 3.2: the program decouples into per-group nuclear norms. The
    # assertion fails if block_norms read the wrong blocks (e.g. rows as (a, k) instead of (k, a)), if the operator
    # leaked gradient into cross-group blocks, or if the solver's prox mixed the groups. (The optimum need not be
    # unique; the certified gap shows that the block-diagonal Z found is a global optimum.)
    x, _, est = grouped_fit
    c = 2
    assert est.status_ == "converged" and est.certificate_.rel_gap <= 1e-9
    gram = mean_gram(x, absolute=True)
    assert np.all(gram[CROSS] == 0.0) and np.all(gram[~CROSS] > 0.1)  # the corollary's hypothesis holds exactly
    norms = block_norms(est.coef_, D, c)
    top = norms.max()
    assert norms[CROSS].max() <= 1e-6 * top, norms / top
    assert norms[~CROSS].min() >= 1e-2 * top, norms / top
    # the penalty splits: ‖Z‖_* = Σ_b ‖Z^{(b)}‖_*
    np.testing.assert_allclose(singular_values(est.coef_).sum(), sum(_group_nuclear_norms(est.coef_, c)), rtol=1e-9)


def test_corollary_3_2_contrast_correlated_data() -> None:
    # Same teacher, but every token carries every feature: G_i is dense and the cross-group blocks are used.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, N_TOK, D))
    y = _teacher_targets(x, rng)
    est = ConvexAttentionRegressor(kind="linear", scale=1 / N_TOK, beta=1e-3, tol=1e-9, max_iter=50_000).fit(x, y)
    assert est.status_ == "converged"
    norms = block_norms(est.coef_, D, 2)
    assert norms[CROSS].min() >= 1e-2 * norms.max(), norms / norms.max()
    assert norms[CROSS].max() >= 0.1 * norms.max()
    nuc = singular_values(est.coef_).sum()
    assert sum(_group_nuclear_norms(est.coef_, 2)) < nuc * (1 - 1e-3)  # no split


def test_corollary_3_2_gated_head(grouped_fit) -> None:
    # Extension (inferred, not stated in the paper): the gated local Grams Σ_t' M_j[t,t'] X[t',k] X[t',l] are sums
    # of per-token products, which vanish for cross-group pairs on these data, so every gate's cross blocks vanish.
    x, y, _ = grouped_fit
    est = ConvexAttentionRegressor(
        kind="gated_relu", n_gates=3, random_state=0, scale=1 / N_TOK, beta=1e-3, tol=1e-8, max_iter=50_000
    ).fit(x, y)
    assert est.status_ == "converged"
    per_gate = block_norms(est.coef_, D, 2, per_gate=True)
    top = per_gate.max()
    assert per_gate[:, CROSS].max() <= 1e-6 * top, per_gate / top
    assert per_gate[:, ~CROSS].max(axis=1).min() >= 1e-2 * top  # every gate is used
    np.testing.assert_allclose(block_norms(est.coef_, D, 2), per_gate.sum(axis=0))


# ----------------------------------------------------------------------------------------------------------------
# Low rank along β (nuclear norm, Theorem 3.1)
# ----------------------------------------------------------------------------------------------------------------
def test_effective_rank_decreases_with_beta() -> None:
    # Z is (9, 6): rank ≤ 6. Rank is not monotone in β for every nuclear-norm problem; on this instance it is
    # (measured: 6, 5, 4, 2, 1).
    rng = np.random.default_rng(1)
    n, s, d, c = 40, 5, 3, 2
    x, y = rng.standard_normal((n, s, d)), rng.standard_normal((n, c))
    ranks = []
    for beta in (1e-3, 1e-2, 3e-2, 1e-1, 3e-1):
        est = ConvexAttentionRegressor(kind="linear", scale=1 / s, beta=beta, tol=1e-9, max_iter=50_000).fit(x, y)
        assert est.status_ == "converged"
        ranks.append(effective_rank(singular_values(est.coef_)))
    assert ranks == sorted(ranks, reverse=True), ranks
    assert ranks[0] >= 5 and ranks[-1] <= 2, ranks


# ----------------------------------------------------------------------------------------------------------------
# Values against direct computations
# ----------------------------------------------------------------------------------------------------------------
def test_block_norms_against_loops_and_factors() -> None:
    rng = np.random.default_rng(2)
    d, c, heads = 3, 2, 2
    w1, w2 = rng.standard_normal((heads, d, d)), rng.standard_normal((heads, d, c))
    z = _lifted(w1, w2)
    loops = np.array(
        [[np.linalg.norm(z[k * d : (k + 1) * d, l * c : (l + 1) * c]) for l in range(d)] for k in range(d)]
    )
    factors = np.array(
        [
            [np.linalg.norm(sum(np.outer(w1[h][:, k], w2[h][l]) for h in range(heads))) for l in range(d)]
            for k in range(d)
        ]
    )
    np.testing.assert_allclose(block_norms(z, d, c), loops, rtol=1e-12)
    np.testing.assert_allclose(block_norms(torch.as_tensor(z), d, c), factors, rtol=1e-12)
    # this Z is what the estimators' coef_ means: the operator's forward equals the heads' token-mean output
    x = rng.standard_normal((5, 4, d))
    direct = np.stack([sum((xi @ w1[h] @ xi.T @ xi @ w2[h]).mean(axis=0) for h in range(heads)) for xi in x])
    forward = LinearAttentionOperator(torch.as_tensor(x), c).forward(torch.as_tensor(z)).numpy()
    np.testing.assert_allclose(forward, direct, rtol=1e-10)
    # gated stacks: summed over gates, or per gate
    stack = rng.standard_normal((3, d * d, d * c))
    per_gate = np.stack([block_norms(zj, d, c) for zj in stack])
    np.testing.assert_allclose(block_norms(stack, d, c, per_gate=True), per_gate)
    np.testing.assert_allclose(block_norms(stack, d, c), per_gate.sum(axis=0))
    with pytest.raises(ValueError, match="must be"):
        block_norms(z, d, c + 1)


def test_mean_gram_against_loops() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 5, 3))
    grams = [xi.T @ xi for xi in x]
    np.testing.assert_allclose(mean_gram(x), np.mean(grams, axis=0))
    np.testing.assert_allclose(mean_gram(torch.as_tensor(x), normalize=True), np.mean(grams, axis=0) / 5)
    np.testing.assert_allclose(mean_gram(x, absolute=True), np.mean(np.abs(grams), axis=0))
    np.testing.assert_allclose(mean_gram(x[0]), grams[0])


def test_singular_values_and_effective_rank() -> None:
    rng = np.random.default_rng(4)
    z = rng.standard_normal((9, 2)) @ rng.standard_normal((2, 6))  # rank 2, (9, 6)
    sv = singular_values(z)
    np.testing.assert_allclose(sv, np.linalg.svd(z, compute_uv=False))
    assert sv.shape == (6,) and effective_rank(sv) == 2 and effective_rank(sv, tol=0.0) == 6
    stack = np.stack([z, np.zeros_like(z), rng.standard_normal((9, 6))])
    svs = singular_values(torch.as_tensor(stack))
    np.testing.assert_allclose(svs[2], np.linalg.svd(stack[2], compute_uv=False))
    np.testing.assert_array_equal(effective_rank(svs), [2, 0, 6])
    assert effective_rank(np.array([3.0, 1.0, 1e-3]), tol=1e-2) == 2


def test_token_masks_against_numpy() -> None:
    rng = np.random.default_rng(5)
    x, gates = rng.standard_normal((7, 3)), rng.standard_normal((4, 3, 3))
    masks = token_masks(x, gates)
    assert masks.dtype == bool and masks.shape == (4, 7, 7)
    np.testing.assert_array_equal(masks, np.stack([x @ u @ x.T >= 0 for u in gates]))
    np.testing.assert_array_equal(token_masks(torch.as_tensor(x), gates[1]), masks[1:2])
    with pytest.raises(ValueError, match="gates must be"):
        token_masks(x, gates[:, :2])


# ----------------------------------------------------------------------------------------------------------------
# Mask clustering
# ----------------------------------------------------------------------------------------------------------------
def _brute_force_agreement(mask: np.ndarray) -> float:
    s = mask.shape[0]
    best = 0.0
    for labels in itertools.product((0, 1), repeat=s):
        hits = [mask[t, u] == (labels[t] == labels[u]) for t in range(s) for u in range(s) if t != u]
        best = max(best, float(np.mean(hits)))
    return best


def test_mask_clustering_rank_one_gate_is_a_clustering() -> None:
    rng = np.random.default_rng(6)
    x, u = rng.standard_normal((12, 4)), rng.standard_normal(4)
    res = mask_clustering_score(x, np.outer(u, u))
    assert isinstance(res, MaskClustering) and res.exact
    assert res.agreement[0] == 1.0 and res.excess_agreement[0] == 1.0
    side = (x @ u < 0).astype(np.int64)
    assert np.array_equal(res.labels[0], side) or np.array_equal(res.labels[0], 1 - side)
    assert res.null_agreement[0] < 0.75  # chance level for this density
    # the anti-clustering gate -uuᵀ (attend across the two sides only) scores below chance
    anti = mask_clustering_score(x, -np.outer(u, u))
    assert anti.agreement[0] < anti.null_agreement[0]


def test_mask_clustering_identity_gate_on_two_token_groups() -> None:
    rng = np.random.default_rng(7)
    mu, side = rng.standard_normal(4), rng.integers(0, 2, 12)
    x = np.where(side[:, None] == 1, mu, -mu) + 0.3 * rng.standard_normal((12, 4))
    res = mask_clustering_score(x, np.eye(4))
    assert res.agreement[0] == 1.0 and res.cosine_correlation[0] > 0.9
    assert np.array_equal(res.labels[0], side) or np.array_equal(res.labels[0], 1 - side)


def test_mask_clustering_search_is_exact() -> None:
    rng = np.random.default_rng(8)
    x, gates = rng.standard_normal((7, 3)), rng.standard_normal((5, 3, 3))
    res = mask_clustering_score(x, gates, n_null=0)
    brute = [_brute_force_agreement(m) for m in token_masks(x, gates)]
    np.testing.assert_allclose(res.agreement, brute, rtol=1e-12)
    assert np.isnan(res.null_agreement).all()
    # agreement is attained by the reported labels
    for mask, labels, agree in zip(token_masks(x, gates), res.labels, res.agreement, strict=True):
        same = labels[:, None] == labels[None, :]
        off = ~np.eye(7, dtype=bool)
        assert np.mean(mask[off] == same[off]) == pytest.approx(agree)


def test_mask_clustering_local_search_matches_exhaustive(monkeypatch) -> None:
    rng = np.random.default_rng(9)
    x, gates = rng.standard_normal((13, 3)), rng.standard_normal((20, 3, 3))
    exact = mask_clustering_score(x, gates, n_null=0)
    monkeypatch.setattr(interp, "_EXHAUSTIVE_MAX_TOKENS", 0)
    local = mask_clustering_score(x, gates, n_null=0)
    assert not local.exact
    assert np.all(local.agreement <= exact.agreement + 1e-12)
    assert np.mean(np.isclose(local.agreement, exact.agreement)) >= 0.9


def test_mask_clustering_gaussian_gates_ignore_raw_similarity() -> None:
    # For i.i.d. Gaussian gates, sign(x_tᵀ U x_t') is independent of the tokens' angle: the masks do not track
    # raw cosine similarity (mean correlation over 50 gates ≈ 0), while U = I does.
    rng = np.random.default_rng(10)
    x = rng.standard_normal((12, 4))
    res = mask_clustering_score(x, sample_attention_gates(4, 50, seed=0), n_null=5)
    assert abs(np.nanmean(res.cosine_correlation)) < 0.1
    assert mask_clustering_score(x, np.eye(4), n_null=5).cosine_correlation[0] > 0.7


# ----------------------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------------------
def _assert_png(path) -> None:
    data = path.read_bytes()
    assert len(data) > 1000 and data.startswith(PNG_MAGIC)


def test_figures_write_pngs(tmp_path, grouped_fit) -> None:
    x, _, est = grouped_fit
    fig = plot_block_norms_vs_gram(est.coef_, x, D, 2, path=tmp_path / "blocks.png")
    assert len(fig.axes) >= 2
    _assert_png(tmp_path / "blocks.png")
    plot_block_norms_vs_gram(
        est.coef_, x, D, 2, path=tmp_path / "blocks_signed.png", absolute=False, order=[2, 0, 1, 3]
    )
    _assert_png(tmp_path / "blocks_signed.png")

    plot_spectrum(est.coef_, path=tmp_path / "spectrum.png")
    _assert_png(tmp_path / "spectrum.png")
    stack = np.stack([est.coef_, np.zeros_like(est.coef_)])
    plot_spectrum(stack, path=tmp_path / "spectrum_gated.png")
    _assert_png(tmp_path / "spectrum_gated.png")

    gates = sample_attention_gates(D, 3, seed=0)
    sample = np.random.default_rng(11).standard_normal((12, D))
    fig = plot_token_masks(sample, gates, grid=(3, 4), query=5, path=tmp_path / "masks.png")
    assert len(fig.axes) == 6
    _assert_png(tmp_path / "masks.png")
    assert len(plot_token_masks(sample, gates, grid=(3, 4), max_gates=2).axes) == 4  # no path: nothing written
    with pytest.raises(ValueError, match="grid"):
        plot_token_masks(sample, gates, grid=(5, 3))
    with pytest.raises(ValueError, match="query"):
        plot_token_masks(sample, gates, grid=(3, 4), query=12)
