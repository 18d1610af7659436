"""Token sparsity versus β (Ergen et al. 2022: "an implicit regularization mechanism, which promotes sparsity across
tokens")."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.figure import Figure

from attnduality.convex import TokenLassoClassifier, TokenLassoRegressor, TokenPath
from attnduality.interpret import plot_sparsity_vs_beta, sparsity_vs_beta, token_sparsity


def _teacher(seed=0, m=40, n=6, d=5, tokens=(1, 4)):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, n, d))
    return x, sum(x[:, k] @ rng.standard_normal(d) for k in tokens) + 0.1 * rng.standard_normal(m)


def test_sparsity_grows_as_beta_shrinks_and_plot(tmp_path):
    x, y = _teacher()
    path = sparsity_vs_beta(TokenLassoRegressor(tol=1e-8), x, y, n_betas=10, eps=1e-3)
    assert isinstance(path, TokenPath) and path.n_groups.shape == (10,)
    assert path.n_groups[0] == 0 and path.n_tokens[-1] == 6  # from Z = 0 at beta_max to every token
    assert np.all(np.diff(path.n_tokens) >= 0)  # on this path tokens only enter as β decreases
    assert np.all(path.n_groups == path.heads_needed)  # group penalty, one output: one head per token group
    assert 1 <= path.n_tokens[3] < 6  # an intermediate β uses few tokens (the teacher's two enter first)
    out = tmp_path / "sparsity.png"
    fig = plot_sparsity_vs_beta(path, out)
    assert isinstance(fig, Figure) and out.stat().st_size > 1000
    with open(out, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_sparsity_classifier_nuclear_and_gated():
    x, y = _teacher()
    labels = (y > 0).astype(int)
    path = sparsity_vs_beta(TokenLassoClassifier(penalty="nuclear", tol=1e-7), x, labels, n_betas=5)
    assert path.n_groups[0] == 0 and path.n_groups[-1] >= 1
    assert np.all(path.heads_needed >= path.n_groups)  # a token block of rank r is r heads
    gated_est = TokenLassoRegressor(kind="gated_fc", n_gates=4, random_state=0, tol=1e-7)
    gated = sparsity_vs_beta(gated_est, x, y, [0.3, 0.1])
    assert gated.token_norms.shape == (2, 6) and gated.n_groups[1] >= gated.n_tokens[1] >= 1


def test_token_sparsity_of_a_fit():
    x, y = _teacher()
    est = TokenLassoRegressor(beta=0.1, tol=1e-9).fit(x, y)
    s = token_sparsity(est)
    assert s.support.tolist() == [1, 4] and s.n_active == 2 and s.heads_needed == 2 and s.n_tokens == 6
    assert s.fraction_active == pytest.approx(2 / 6)
    assert np.count_nonzero(s.token_norms) == 2


def test_bad_inputs():
    with pytest.raises(ValueError, match="regularization_path"):
        sparsity_vs_beta(object(), np.zeros((2, 2, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="TokenPath"):
        plot_sparsity_vs_beta({"betas": [1.0]})
    with pytest.raises(ValueError, match="n_betas"):
        sparsity_vs_beta(TokenLassoRegressor(), *_teacher(), n_betas=0)
