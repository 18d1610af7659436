"""The token lasso programs of Ergen, Neyshabur & Mehta (2022) and their estimators.

* operators: forward = the definitions written as loops; adjoint identity; the row-stochastic cone projection
  against cvxpy and its variational inequality;
* every program (eq. (9), (12), per-token nuclear norm, gated FC, corrected A.7) agrees with an independent cvxpy
  formulation (≤ 1e-6 relative), and its certificate's dual bound lies below the cvxpy optimum;
* the recovered non-convex twin reproduces the predictions and the regularised objective (1e-8 relative, float64);
  random twins never go below the convex optimum (it is a lower bound for every width);
* the printed Prop. 1 map (``e_j``) is wrong when the support is not the first rows; the support-index map is right;
* one-head counterexamples to Thm 1, Thm 2 and App. A.7 as printed (no width condition): the convex value is strictly
  below the one-head optimum, which is computed by exhaustive grids over the attention rows with the output scale in
  closed form;
* the printed (33) without the equal-row-sum constraint is a strict relaxation of the sequence model;
* validation, the width report (``heads_needed_``, ``is_exact_``, lower-bound warning), paths, sklearn checks.
"""

from __future__ import annotations

import re
import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from attnduality.convex import (
    CrossEntropyLoss,
    GatedTokenOperator,
    LogisticLoss,
    RowStochasticCone,
    SequenceOperator,
    SquaredLoss,
    TokenLassoClassifier,
    TokenLassoRegressor,
    TokenOperator,
    regularized_objective,
)
from attnduality.convex.operators.token import project_row_stochastic_cone, token_gate_masks
from attnduality.convex.recovery_token import attention_to_module, heads_needed, printed_prop1_map, token_support
from attnduality.nn.token_lasso_twins import AttentionGatedFCNet, AttentionOnlyNet, SequenceAttentionNet

N, n, d = 24, 4, 3
TOL = 1e-9
REL = 1e-6
T64 = torch.float64


def _x(seed: int = 0, shape: tuple[int, ...] = (N, n, d)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


# ----------------------------------------------------------------------------------------------------------------
# Operators and the cone
# ----------------------------------------------------------------------------------------------------------------
def test_operators_match_definitions_and_adjoints():
    rng = np.random.default_rng(1)
    x = torch.tensor(_x(1))
    gates = torch.tensor(rng.standard_normal((d, 5)))
    c = 2
    masks = token_gate_masks(x, gates)
    for op, z in [
        (TokenOperator(x, c), torch.randn(n, d, c, dtype=T64)),
        (GatedTokenOperator(x, masks, c), torch.randn(n, 5, d, c, dtype=T64)),
        (SequenceOperator(x, c), torch.randn(2, d, c, n, n, dtype=T64)),
    ]:
        u = op.forward(z)
        xn, zn = x.numpy(), z.numpy()
        expected = np.zeros(u.shape)
        for i in range(N):
            if isinstance(op, GatedTokenOperator):
                for k in range(n):
                    for p in range(5):
                        if xn[i, k] @ gates[:, p].numpy() >= 0:
                            expected[i] += xn[i, k] @ zn[k, p]
            elif isinstance(op, SequenceOperator):
                for r in range(n):
                    for l in range(c):
                        expected[i, r * c + l] = sum(
                            (zn[0, q, l, r, k] - zn[1, q, l, r, k]) * xn[i, k, q] for q in range(d) for k in range(n)
                        )
            else:
                expected[i] = sum(xn[i, k] @ zn[k] for k in range(n))
        np.testing.assert_allclose(u.numpy(), expected, rtol=1e-12, atol=1e-12)
        g = torch.randn_like(u)
        assert float((u * g).sum()) == pytest.approx(float((z * op.adjoint(g)).sum()), rel=1e-12)
        assert tuple(op.adjoint(g).shape) == op.z_shape


def test_cone_projection_matches_cvxpy_and_is_a_projection():
    gen = torch.Generator().manual_seed(3)
    blocks = torch.randn(4, 3, 5, generator=gen, dtype=T64) + torch.tensor([0.3, -0.2, 1.0, -3.0])[:, None, None]
    p = project_row_stochastic_cone(blocks)
    assert torch.all(p[3] == 0)  # Σ_r max_k c_rk ≤ 0: the projection is 0
    for b in range(3):
        cvar, lam = cp.Variable((3, 5)), cp.Variable()
        prob = cp.Problem(cp.Minimize(cp.sum_squares(cvar - blocks[b].numpy())), [cvar >= 0, cp.sum(cvar, 1) == lam])
        prob.solve(solver=cp.CLARABEL)
        np.testing.assert_allclose(p[b].numpy(), cvar.value, atol=1e-6)
        sums = p[b].sum(-1)
        assert float(sums.max() - sums.min()) <= 1e-14 and float(p[b].min()) >= 0
    # variational inequality ⟨c − P(c), q − P(c)⟩ ≤ 0 for q in the cone
    for _ in range(20):
        q = project_row_stochastic_cone(torch.randn(4, 3, 5, generator=gen, dtype=T64))
        assert float(((blocks - p) * (q - p)).sum(dim=(1, 2)).max()) <= 1e-12
    pen = RowStochasticCone()
    assert float(pen.value(p)) == pytest.approx(float(p.sum()) / 3)
    assert torch.isinf(pen.value(blocks))
    # support function: ⟨W, C⟩ ≤ R°(W) R(C), with equality at the maximising row-one-hot block
    w = torch.randn(4, 3, 5, generator=gen, dtype=T64)
    assert float((w * p).sum()) <= float(pen.dual_norm(w)) * float(pen.value(p)) + 1e-12
    b = int(w.amax(-1).sum(-1).argmax())
    best = torch.zeros_like(w)
    best[b].scatter_(-1, w[b].argmax(-1, keepdim=True), 1.0)
    assert float((w * best).sum()) == pytest.approx(float(pen.dual_norm(w)) * float(pen.value(best)))


# ----------------------------------------------------------------------------------------------------------------
# Independent cvxpy formulations, written from the programs' definitions
# ----------------------------------------------------------------------------------------------------------------
def _cvx_loss(loss: str, u, y: np.ndarray):
    m = y.shape[0]
    if loss == "squared":
        return 0.5 * cp.sum_squares(u - y) / m
    if loss == "cross_entropy":
        onehot = np.eye(u.shape[1])[y]
        return (cp.sum(cp.log_sum_exp(u, axis=1)) - cp.sum(cp.multiply(onehot, u))) / m
    return cp.sum(cp.logistic(-cp.multiply(y, u))) / m


def cvx_token_program(kind, penalty, loss, x, y, beta, c, gates=None, relaxed=False):
    """min (1/N) Σ L(f(X_i), y_i) + β R; returns the optimal value."""
    m, nt, dd = x.shape
    cons = []
    if kind == "attention":
        zs = [cp.Variable((dd, c)) for _ in range(nt)]  # Z_k (d, c)
        u = sum(x[:, k, :] @ zs[k] for k in range(nt))
        blocks = zs
    elif kind == "gated_fc":
        masks = (x @ gates >= 0).astype(np.float64)  # (N, n, P)
        blocks, terms = [], []
        for k in range(nt):
            for p in range(gates.shape[1]):
                zkp = cp.Variable((dd, c))
                blocks.append(zkp)
                terms.append(cp.multiply(masks[:, k, [p]], x[:, k, :] @ zkp))
        u = sum(terms)
    else:  # sequence: C^±_ql ≥ 0 with equal row sums λ^±_ql (relaxed: the printed (33), max row sum, no equality)
        cols, pen = [], 0
        for _r in range(nt):
            cols.append([0] * c)
        for q in range(dd):
            for l in range(c):
                mats = []
                for _sign in range(2):
                    cmat = cp.Variable((nt, nt), nonneg=True)
                    if relaxed:
                        pen += cp.max(cp.sum(cmat, axis=1))
                    else:
                        lam = cp.Variable(nonneg=True)
                        cons.append(cp.sum(cmat, axis=1) == lam)
                        pen += lam
                    mats.append(cmat)
                mq = mats[0] - mats[1]
                for r in range(nt):
                    cols[r][l] = cols[r][l] + x[:, :, q] @ mq[r, :]
        u = cp.hstack([cp.reshape(cols[r][l], (m, 1), order="C") for r in range(nt) for l in range(c)])
        prob = cp.Problem(cp.Minimize(_cvx_loss(loss, u, y) + beta * pen), cons)
        prob.solve(solver=cp.CLARABEL)
        assert prob.status == cp.OPTIMAL, prob.status
        return float(prob.value)
    if penalty == "group":
        reg = sum(cp.sum(cp.norm(b, 2, axis=0)) for b in blocks)
    else:
        reg = sum(cp.normNuc(b) if c > 1 else cp.norm(b, "fro") for b in blocks)
    prob = cp.Problem(cp.Minimize(_cvx_loss(loss, u, y) + beta * reg), cons)
    prob.solve(solver=cp.CLARABEL)
    assert prob.status == cp.OPTIMAL, prob.status
    return float(prob.value)


Y_REG1 = np.tanh(_x(2)[:, 1] @ np.ones(d)) + 0.1 * np.random.default_rng(3).standard_normal(N)
Y_REG2 = np.c_[Y_REG1, np.random.default_rng(4).standard_normal(N)]
Y_CLF3 = np.array(["ant", "bee", "cat"])[np.argmax(_x(0)[:, 2, :] + 0.3 * _x(5, (N, d)), axis=1)]
Y_CLF2 = (_x(0)[:, 0, 0] > 0).astype(int)
Y_SEQ1 = np.einsum("rk,ikq->ir", np.array([[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0.5, 0.5], [0, 0, 0, 1]]), _x(0))
Y_SEQ2 = np.stack([Y_SEQ1, np.roll(_x(0)[:, :, 1], 1, axis=1)], axis=2).reshape(N, -1)

# id: (estimator, targets, cvxpy loss, targets for cvxpy)
CASES = {
    "eq9-reg": (TokenLassoRegressor(beta=0.05), Y_REG1),
    "eq12-reg-c2": (TokenLassoRegressor(beta=0.05), Y_REG2),
    "nuclear-reg-c2": (TokenLassoRegressor(penalty="nuclear", beta=0.05), Y_REG2),
    "eq12-clf-ce3": (TokenLassoClassifier(beta=0.02), Y_CLF3),
    "nuclear-clf-ce3": (TokenLassoClassifier(penalty="nuclear", beta=0.02), Y_CLF3),
    "eq9-clf-logistic": (TokenLassoClassifier(loss="logistic", beta=0.02), Y_CLF2),
    "eq12-clf-squared": (TokenLassoClassifier(loss="squared", beta=0.02), Y_CLF3),
    "gated-reg": (TokenLassoRegressor(kind="gated_fc", n_gates=3, random_state=0, beta=0.05), Y_REG1),
    "gated-nuclear-clf": (
        TokenLassoClassifier(kind="gated_fc", penalty="nuclear", n_gates=3, random_state=0, beta=0.02),
        Y_CLF3,
    ),
    "gated-group-reg-c2": (TokenLassoRegressor(kind="gated_fc", n_gates=2, random_state=1, beta=0.05), Y_REG2),
    "seq-reg-c1": (TokenLassoRegressor(kind="sequence", beta=0.05), Y_SEQ1),
    "seq-reg-c2": (TokenLassoRegressor(kind="sequence", beta=0.05), Y_SEQ2),
}
_FITTED: dict[str, object] = {}


def _fitted(case: str):
    if case not in _FITTED:
        est, y = CASES[case]
        _FITTED[case] = clone(est).set_params(tol=TOL, max_iter=50_000).fit(_x(0), y)
    return _FITTED[case]


def _targets(est, y):
    """(library loss, cvxpy loss name, cvxpy targets, c) in the estimator's convention."""
    if isinstance(est, TokenLassoRegressor):
        y2 = y.reshape(len(y), -1)
        return SquaredLoss(torch.tensor(y2)), "squared", y2
    idx = np.searchsorted(est.classes_, y)
    if est.loss == "logistic":
        t = (2.0 * idx - 1.0)[:, None]
        return LogisticLoss(torch.tensor(t)), "logistic", t
    if est.loss == "squared":
        t = np.eye(len(est.classes_))[idx]
        return SquaredLoss(torch.tensor(t)), "squared", t
    return CrossEntropyLoss(torch.as_tensor(idx)), "cross_entropy", idx


@pytest.mark.parametrize("case", list(CASES))
def test_convex_optimum_matches_cvxpy(case):
    est = _fitted(case)
    _, y = CASES[case]
    assert est.status_ == "converged" and est.certificate_.rel_gap <= TOL
    _, loss, t = _targets(est, y)
    c = est.coef_.shape[2] if est.kind == "sequence" else est.coef_.shape[-1]
    p_cvx = cvx_token_program(est.kind, est.penalty, loss, _x(0), t, est.beta, c, gates=est.gates_)
    assert est.objective_ == pytest.approx(p_cvx, rel=REL)
    assert est.certificate_.dual <= p_cvx + 1e-9 * abs(p_cvx)
    assert est.heads_needed_ >= 1


@pytest.mark.parametrize("case", list(CASES))
def test_recovered_twin_has_the_convex_objective(case):
    """Convex optimum = recovered non-convex objective (float64, 1e-8 relative), same predictions."""
    est = _fitted(case)
    _, y = CASES[case]
    module = est.to_module()
    assert module.n_heads == est.heads_needed_ == est.n_heads_ and est.is_exact_
    loss, _, _ = _targets(est, y)
    x = torch.tensor(_x(0))
    with torch.no_grad():
        obj = float(regularized_objective(module, loss, x, est.beta))
        assert obj == pytest.approx(est.objective_, rel=1e-8)
        for xx in (_x(0), _x(9)):  # training data and fresh data
            out = module(torch.tensor(xx)).numpy()
            ref = est.predict(xx) if isinstance(est, TokenLassoRegressor) else est.decision_function(xx)
            if isinstance(est, TokenLassoClassifier) and out.shape[1] == 2:
                out = out[:, 1] - out[:, 0]
            np.testing.assert_allclose(out.reshape(ref.shape), ref, rtol=1e-10, atol=1e-10)
    if est.kind != "sequence":  # each head attends to exactly one token of the support
        rows = module.attention().detach()
        assert torch.all((rows == 0) | (rows == 1)) and torch.all(rows.sum(1) == 1)
        assert set(rows.argmax(1).tolist()) == set(est.support_.tolist())


@pytest.mark.parametrize("case", ["eq12-reg-c2", "nuclear-clf-ce3", "seq-reg-c2", "gated-reg"])
def test_convex_value_lower_bounds_random_networks(case):
    """Any non-convex network, of any width, has objective ≥ the convex optimum (rows sampled on the simplex;
    for the gated model the relaxation is exact at one-hot rows, which is what is sampled there)."""
    est = _fitted(case)
    _, y = CASES[case]
    loss, _, _ = _targets(est, y)
    x = torch.tensor(_x(0))
    gen = torch.Generator().manual_seed(0)
    lower = est.certificate_.dual
    for h in (1, 2, 7):
        for _ in range(5):
            scale = float(torch.rand((), generator=gen, dtype=T64)) * 0.8
            if est.kind == "sequence":
                c = est.coef_.shape[2]
                mix = torch.softmax(3 * torch.randn(h, n, n, generator=gen, dtype=T64), -1)
                v, b = scale * torch.randn(h, d, c, generator=gen, dtype=T64), torch.randn(h, generator=gen, dtype=T64)
                net = SequenceAttentionNet(mix, v, b, flatten_output=True)
            else:
                c = est.coef_.shape[-1]
                v, b = scale * torch.randn(h, d, generator=gen, dtype=T64), torch.randn(h, c, generator=gen, dtype=T64)
                norm = "l1" if est.penalty == "group" else "l2"
                if est.kind == "gated_fc":
                    p = torch.randint(0, est.gates_.shape[1], (h,), generator=gen)
                    rows = torch.eye(n, dtype=T64)[torch.randint(0, n, (h,), generator=gen)]
                    g = torch.as_tensor(est.gates_).T[p]
                    net = AttentionGatedFCNet(rows, g, v, b, output_norm=norm)
                else:
                    rows = torch.softmax(3 * torch.randn(h, n, generator=gen, dtype=T64), -1)
                    net = AttentionOnlyNet(rows, v, b, output_norm=norm)
            with torch.no_grad():
                assert float(regularized_objective(net, loss, x, est.beta)) >= lower


# ----------------------------------------------------------------------------------------------------------------
# Recovery: the printed map, the width condition
# ----------------------------------------------------------------------------------------------------------------
def _teacher_data(seed=0, m=40, nt=6, dd=5, tokens=(1, 4), noise=0.1):
    """A small student–teacher setting: the teacher reads tokens 1 and 4."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, nt, dd))
    y = sum(x[:, k] @ rng.standard_normal(dd) for k in tokens) + noise * rng.standard_normal(m)
    return x, y


def test_printed_prop1_map_is_wrong_support_index_map_is_right():
    x, y = _teacher_data()
    est = TokenLassoRegressor(beta=0.1, tol=TOL).fit(x, y)
    assert est.support_.tolist() == [1, 4] and est.heads_needed_ == 2
    xt = torch.tensor(x)
    with torch.no_grad():
        good = attention_to_module(torch.as_tensor(est.coef_))(xt)[:, 0].numpy()
        bad = printed_prop1_map(torch.as_tensor(est.coef_))(xt)[:, 0].numpy()
    np.testing.assert_allclose(good, est.predict(x), rtol=1e-12, atol=1e-12)
    assert np.abs(bad - est.predict(x)).max() > 0.5  # e_j reads tokens 0 and 1, not 1 and 4
    # when the support is the first rows the printed map happens to agree
    z = np.zeros_like(est.coef_)
    z[:2] = est.coef_[[1, 4]]
    with torch.no_grad():
        np.testing.assert_allclose(
            printed_prop1_map(torch.as_tensor(z))(xt).numpy(), attention_to_module(torch.as_tensor(z))(xt).numpy()
        )


def test_width_condition_reported():
    x, y = _teacher_data()
    with pytest.warns(UserWarning, match=r"h\* = 2 heads but n_heads = 1.*only a lower bound"):
        narrow = TokenLassoRegressor(beta=0.1, tol=TOL, n_heads=1).fit(x, y)
    assert narrow.heads_needed_ == 2 and not narrow.is_exact_
    with pytest.raises(ValueError, match="needs h\\* = 2 heads but n_heads = 1"):
        narrow.to_module()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wide = TokenLassoRegressor(beta=0.1, tol=TOL, n_heads=6).fit(x, y)
    assert wide.is_exact_ and wide.n_heads_ == 6 and wide.objective_ == narrow.objective_
    module = wide.to_module()
    assert module.n_heads == 6
    assert float(module.b.detach().abs()[2:].sum()) == 0.0  # zero heads pad the width
    with torch.no_grad():
        obj = float(regularized_objective(module, SquaredLoss(torch.tensor(y[:, None])), torch.tensor(x), 0.1))
    assert obj == pytest.approx(wide.objective_, rel=1e-8)
    assert heads_needed(torch.as_tensor(wide.coef_)) == 2
    assert token_support(torch.as_tensor(wide.coef_)).tolist() == [1, 4]


# ----------------------------------------------------------------------------------------------------------------
# One-head counterexamples (Thm 1, Thm 2, App. A.7 as printed): the convex value is strictly lower
# ----------------------------------------------------------------------------------------------------------------
BETA = 0.1
GRID = np.linspace(0.0, 1.0, 2001)


def _scale_opt(a: np.ndarray, bvec: np.ndarray, const: float, beta: float) -> np.ndarray:
    """min_s a s² + 2 b s + const + β|s| in closed form (a > 0), vectorised."""
    s = -np.sign(bvec) * np.maximum(np.abs(bvec) - beta / 2, 0.0) / a
    return a * s**2 + 2 * bvec * s + const + beta * np.abs(s)


def test_counterexample_scalar_one_head():
    """n = N = 2, d = 1, y = (1, −1) (Thm 1 with h = 1, n = N = 2): two tokens of opposite sign need two
    heads. Convex optimum 2β − 2β² = 0.18; one head: min over w ∈ Δ_2 and the scale s = b·‖v‖."""
    x = np.array([[[1.0], [0.0]], [[0.0], [1.0]]])
    y = np.array([1.0, -1.0])
    est = TokenLassoRegressor(beta=BETA, tol=1e-12).fit(x, y)
    assert est.objective_ == pytest.approx(2 * BETA - 2 * BETA**2, rel=1e-9)
    assert est.heads_needed_ == 2 and est.support_.tolist() == [0, 1]
    # one head: f = (w1 s, (1 − w1) s); (1/4)[(w1 s − 1)² + ((1−w1) s + 1)²] + β|s|
    w = GRID
    one_head = _scale_opt((w**2 + (1 - w) ** 2) / 4, (-w + (1 - w)) / 4, 0.5, BETA).min()
    assert one_head == pytest.approx(0.34, abs=1e-6)  # w = e_1, s = 1 − 2β
    assert est.objective_ < one_head - 0.1
    with pytest.warns(UserWarning, match="lower bound"):
        TokenLassoRegressor(beta=BETA, n_heads=1).fit(x, y)


@pytest.mark.parametrize("penalty", ["group", "nuclear"])
def test_counterexample_vector_one_head(penalty):
    """n = 1, d = c = 2, Y = I (Thm 2 needs h ≥ n·c): a one-head network is a rank-one map v bᵀ."""
    x = np.eye(2)[:, None, :]  # X_i = e_iᵀ: one token
    y = np.eye(2)
    est = TokenLassoRegressor(penalty=penalty, beta=BETA, tol=1e-12).fit(x, y)
    assert est.objective_ == pytest.approx(2 * BETA - 2 * BETA**2, rel=1e-9)
    assert est.heads_needed_ == 2
    # one head: M = t v̂ b̂ᵀ, ‖v̂‖ = 1, ‖b̂‖ = 1 in ℓ1 (group) or ℓ2 (nuclear); loss (1/4)‖M − I‖² + β t
    th = np.linspace(0, 2 * np.pi, 721)
    v = np.stack([np.cos(th), np.sin(th)], 1)
    if penalty == "group":
        bb = np.stack([np.cos(th), np.sin(th)], 1)
        bb = bb / np.abs(bb).sum(1, keepdims=True)
    else:
        bb = v
    inner = v @ bb.T  # v̂ᵀ b̂ = ⟨v̂ b̂ᵀ, I⟩
    bsq = (bb**2).sum(1)[None, :] * np.ones_like(inner)
    one_head = _scale_opt(bsq / 4, -inner / 4, 0.5, BETA).min()
    assert one_head == pytest.approx(0.34, abs=1e-4)
    assert est.objective_ < one_head - 0.1


def test_counterexample_sequence_one_head():
    """n = 2, d = c = 1, targets Y_i = T X_i with T = [[1, −1], [0, 0]] (App. A.7): a one-head network is
    s·W with W row-stochastic, so it cannot make a row with both signs. One head: s W (s = b·‖V‖_1)."""
    x = np.eye(2)[:, :, None]  # X_1 = e_1, X_2 = e_2 (tokens with one feature)
    t = np.array([[1.0, -1.0], [0.0, 0.0]])
    y = np.einsum("rk,ikq->ir", t, x)
    est = TokenLassoRegressor(kind="sequence", beta=BETA, tol=1e-12).fit(x, y)
    p_cvx = cvx_token_program("sequence", "group", "squared", x, y, BETA, 1)
    assert est.objective_ == pytest.approx(p_cvx, rel=1e-6)
    assert est.objective_ == pytest.approx(2 * BETA - 2 * BETA**2, rel=1e-6)
    assert est.heads_needed_ == 2
    # one head: rows (w, 1 − w) and (u, 1 − u); (1/4)‖s W − T‖² + β|s| (X_i = e_i, so predictions are W's columns)
    w, u = np.meshgrid(GRID[::4], GRID[::4], indexing="ij")
    a = (w**2 + (1 - w) ** 2 + u**2 + (1 - u) ** 2) / 4
    b = -(w * 1 + (1 - w) * -1) / 4
    one_head = _scale_opt(a, b, 0.5, BETA).min()
    assert one_head == pytest.approx(59 / 150, abs=1e-4)  # w = e_1, u = (½, ½), s = 8/15
    assert est.objective_ < one_head - 0.1


def test_printed_eq33_is_a_strict_relaxation():
    """Without the equal-row-sum constraint the printed (33) reaches targets no network of form (30) can: with
    T = [[1, 0], [0, 0]] (row sums 1 and 0) the printed program is strictly below the exact one."""
    x = np.eye(2)[:, :, None]
    y = np.einsum("rk,ikq->ir", np.array([[1.0, 0.0], [0.0, 0.0]]), x)
    relaxed = cvx_token_program("sequence", "group", "squared", x, y, BETA, 1, relaxed=True)
    exact = TokenLassoRegressor(kind="sequence", beta=BETA, tol=1e-12).fit(x, y)
    assert exact.objective_ == pytest.approx(cvx_token_program("sequence", "group", "squared", x, y, BETA, 1), rel=1e-6)
    assert relaxed < exact.objective_ - 0.01
    assert relaxed == pytest.approx(BETA - BETA**2, rel=1e-6)  # M = (1 − 2β) T·… at cost β·max row sum


def _adam(net, loss, x, beta, steps=1500):
    opt = torch.optim.Adam(net.parameters(), lr=0.03)
    for _ in range(steps):
        opt.zero_grad()
        obj = regularized_objective(net, loss, x, beta)
        obj.backward()
        opt.step()
    return float(obj.detach())


def test_chk_setting_reproduces_reference_numbers():
    """A NumPy reference run (N = 40, n = 6, d = 5, teacher on tokens 1 and 4, noise 0.1, loss ½Σ, β = 0.5), in
    the library's scaling (1/N)·(½Σ) + (β/N)·R: N × the convex optimum is its 2.55772; Adam on (8) with h = 1 stays
    near its 7.707 (with one head the convex value is only a lower bound), with h = n = 6 at or above the optimum."""
    x, y = _teacher_data()
    beta = 0.5 / 40
    est = TokenLassoRegressor(beta=beta, tol=TOL).fit(x, y)
    assert 40 * est.objective_ == pytest.approx(2.55772, abs=1e-5)
    xt, loss = torch.tensor(x), SquaredLoss(torch.tensor(y[:, None]))
    one = _adam(AttentionOnlyNet.random(6, 5, 1, seed=0, parametrization="softmax").double(), loss, xt, beta)
    wide = _adam(AttentionOnlyNet.random(6, 5, 6, seed=0, parametrization="softmax").double(), loss, xt, beta)
    assert 40 * one > 7.0 and one > 2.5 * est.objective_
    assert est.objective_ <= wide < 1.05 * est.objective_


# ----------------------------------------------------------------------------------------------------------------
# Inputs, parameters, paths
# ----------------------------------------------------------------------------------------------------------------
def test_2d_input_is_flattened_tokens():
    x = _x(0)
    a = TokenLassoRegressor(beta=0.05, tol=TOL).fit(x, Y_REG1)
    b = TokenLassoRegressor(beta=0.05, tol=TOL, n_tokens=n).fit(x.reshape(N, -1), Y_REG1)
    assert b.n_features_in_ == n * d and a.n_features_in_ == d and a.n_tokens_in_ == b.n_tokens_in_ == n
    np.testing.assert_allclose(a.coef_, b.coef_)
    np.testing.assert_allclose(b.predict(x), b.predict(x.reshape(N, -1)))
    np.testing.assert_allclose(a.predict(x.reshape(N, -1)), a.predict(x))
    c = TokenLassoRegressor(beta=0.05).fit(x.reshape(N, -1), Y_REG1)  # every column a token
    assert c.n_tokens_in_ == n * d and c.coef_.shape == (n * d, 1, 1)


def test_float32_and_gates():
    x = _x(0)
    a = TokenLassoRegressor(kind="gated_fc", n_gates=4, random_state=0, beta=0.05, tol=1e-5).fit(x, Y_REG1)
    b = TokenLassoRegressor(kind="gated_fc", n_gates=4, random_state=0, beta=0.05, tol=1e-5, dtype="float32")
    b.fit(x, Y_REG1)
    np.testing.assert_allclose(a.gates_, b.gates_, rtol=1e-6)
    assert b.objective_ == pytest.approx(a.objective_, rel=1e-4)
    e = TokenLassoRegressor(kind="gated_fc", gates=a.gates_, beta=0.05, tol=1e-5).fit(x, Y_REG1)
    np.testing.assert_array_equal(e.gates_, a.gates_)


BAD = [
    (dict(), np.full((N, n, d), np.nan), Y_REG1, "NaN"),
    (dict(), np.full((N, n, d), np.inf), Y_REG1, "infinity"),
    (dict(), np.zeros((N, n, d, 2)), Y_REG1, "dim 4"),
    (dict(), np.zeros((0, n, d)), np.zeros(0), "0 sample"),
    (dict(), np.zeros((N, 0, d)), Y_REG1, "n_tokens, n_features >= 1"),
    (dict(), _x(0), Y_REG1[:5], "inconsistent numbers of samples"),
    (dict(beta=0.0), _x(0), Y_REG1, "beta must be > 0"),
    (dict(beta=-1.0), _x(0), Y_REG1, "beta must be"),
    (dict(kind="softmax"), _x(0), Y_REG1, "kind must be one of"),
    (dict(penalty="l1"), _x(0), Y_REG1, "penalty must be one of"),
    (dict(kind="sequence", penalty="nuclear"), _x(0), Y_SEQ1, "kind='sequence' has its own penalty"),
    (dict(kind="sequence"), _x(0), Y_REG1, "targets of shape \\(n_samples, n_tokens \\* c\\)"),
    (dict(n_heads=0), _x(0), Y_REG1, "n_heads must be None or an integer >= 1"),
    (dict(n_tokens=5), _x(0).reshape(N, -1), Y_REG1, "not a multiple of n_tokens=5"),
    (dict(n_tokens=3), _x(0), Y_REG1, "X has 4 tokens but n_tokens=3"),
    (dict(kind="gated_fc", gates=np.ones((d + 1, 2))), _x(0), Y_REG1, "gates must be an array of shape \\(3, m\\)"),
    (dict(kind="gated_fc", n_gates=0), _x(0), Y_REG1, "n_gates must be an integer >= 1"),
]


@pytest.mark.parametrize("params,x,y,match", BAD, ids=[b[3] for b in BAD])
def test_bad_input_raises(params, x, y, match):
    with pytest.raises(ValueError, match=match):
        TokenLassoRegressor(**params).fit(x, y)


def test_classifier_specific_errors():
    with pytest.raises(ValueError, match="only one class"):
        TokenLassoClassifier().fit(_x(0), np.zeros(N))
    with pytest.raises(ValueError, match="regression only"):
        TokenLassoClassifier(kind="sequence").fit(_x(0), Y_CLF2)
    with pytest.raises(ValueError, match="Unknown label type"):
        TokenLassoClassifier().fit(_x(0), Y_REG1)


def test_predict_validates_and_not_fitted():
    est = _fitted("eq9-reg")
    with pytest.raises(ValueError, match=re.escape("X has tokens of shape (4, 2), but TokenLassoRegressor")):
        est.predict(_x(0)[:, :, :2])
    with pytest.raises(ValueError, match="X has 11 features, but TokenLassoRegressor is expecting 12 features"):
        est.predict(np.zeros((3, 11)))
    with pytest.raises(ValueError, match="NaN"):
        est.predict(np.full((2, n, d), np.nan))
    with pytest.raises(NotFittedError):
        TokenLassoRegressor().predict(_x(0))
    with pytest.raises(NotFittedError):
        TokenLassoRegressor().to_module()


def test_non_convergence_is_reported():
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        est = TokenLassoClassifier(max_iter=2, tol=1e-12).fit(_x(0), Y_CLF3)
    assert est.status_ == "max_iter"


def test_regularization_path_sparsity():
    x, y = _teacher_data()
    est = TokenLassoRegressor(tol=1e-8)
    path = est.regularization_path(x, y, n_betas=8, eps=1e-2, keep_coefs=True)
    assert not hasattr(est, "coef_")  # the estimator itself is untouched
    assert path.betas[0] == pytest.approx(path.beta_max) and path.n_groups[0] == 0 and path.n_tokens[0] == 0
    assert path.n_tokens[-1] >= 2 and all(s == "converged" for s in path.status)
    assert np.all(np.diff(path.betas) < 0) and path.token_norms.shape == (8, 6) and len(path.coefs) == 8
    # a point of the path is the plain fit at that β
    single = TokenLassoRegressor(beta=path.betas[4], tol=1e-10).fit(x, y)
    assert path.objective[4] == pytest.approx(single.objective_, rel=1e-7)
    assert path.n_tokens[4] == len(single.support_)
    # the two teacher tokens enter first
    first = [int(np.flatnonzero(path.token_norms[:, k])[0]) if path.token_norms[:, k].any() else 99 for k in range(6)]
    assert sorted(np.argsort(first)[:2].tolist()) == [1, 4]
    with pytest.raises(ValueError, match="betas must be"):
        est.regularization_path(x, y, betas=[0.1, -1.0])


FAST = dict(tol=1e-5, max_iter=2000)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks(
    [
        TokenLassoRegressor(**FAST),
        TokenLassoClassifier(**FAST),
        TokenLassoRegressor(kind="gated_fc", n_gates=4, random_state=0, **FAST),
        TokenLassoClassifier(penalty="nuclear", **FAST),
    ]
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
