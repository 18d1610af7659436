"""The cone-constrained convex ReLU network (activation="relu"): ReLUMLPOperator, ConeGroupL2, FISTA, recovery.

Kept apart from the gated-ReLU tests because the ReLU solver is being reworked. The cvxpy formulation here is
written from Sahiner et al. eq. (5) and takes only data and gates from the library:

    min_{V,W} f(Σ_j D_j X (V_j − W_j)) + β Σ_{j,k} (‖V_j[:,k]‖ + ‖W_j[:,k]‖)   s.t. (2D_j − I) X V_j ≥ 0, same for W.
"""

from __future__ import annotations

import math
import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning

from attnduality.convex import (
    FISTA,
    BlockNuclearNorm,
    CompositeProblem,
    ConeGroupL2,
    ConvexMLPClassifier,
    ConvexMLPRegressor,
    CrossEntropyLoss,
    GatedMLPOperator,
    LogisticLoss,
    ReLUMLPOperator,
    SquaredLoss,
    beta_max,
    regularized_objective,
    relu_mlp_to_module,
)
from attnduality.nn import ReLUMLP

N, D = 30, 3


def _design(x, fit_intercept):
    return np.hstack([x, np.ones((len(x), 1))]) if fit_intercept else x


def _targets(est, y):
    """(loss name, targets in the convex program's convention, library loss) rebuilt from y."""
    if isinstance(est, ConvexMLPRegressor):
        y2 = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        return "squared", y2, SquaredLoss(torch.tensor(y2))
    idx = np.searchsorted(est.classes_, y)
    if est.loss == "logistic":
        s = (2.0 * idx - 1.0)[:, None]
        return "logistic", s, LogisticLoss(torch.tensor(s))
    if est.loss == "cross_entropy":
        return "cross_entropy", idx, CrossEntropyLoss(torch.tensor(idx))
    onehot = np.eye(len(est.classes_))[idx]
    return "squared", onehot, SquaredLoss(torch.tensor(onehot))


def _solve(prob, **opts):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "solution may be inaccurate": handled by the fallback
        prob.solve(solver=cp.CLARABEL, **opts)
    if prob.status != cp.OPTIMAL:
        prob.solve(solver=cp.SCS, eps_abs=1e-10, eps_rel=1e-10, max_iters=200_000)
    assert prob.status == cp.OPTIMAL
    return float(prob.value)


def cvx_relu(x, masks, loss, y, beta, c):
    n, d = x.shape
    p = masks.shape[1]
    v = [cp.Variable((d, c)) for _ in range(p)]
    w = [cp.Variable((d, c)) for _ in range(p)]
    u = sum(cp.multiply(masks[:, [j]], x @ (v[j] - w[j])) for j in range(p))
    signs = 2 * masks - 1
    cons = [cp.multiply(signs[:, [j]], x @ v[j]) >= 0 for j in range(p)]
    cons += [cp.multiply(signs[:, [j]], x @ w[j]) >= 0 for j in range(p)]
    if loss == "squared":
        f = 0.5 * cp.sum_squares(u - y) / n
    elif loss == "logistic":
        f = cp.sum(cp.logistic(-cp.multiply(y, u))) / n
    else:
        f = (cp.sum(cp.log_sum_exp(u, axis=1)) - cp.sum(cp.multiply(np.eye(c)[y], u))) / n
    r = sum(cp.sum(cp.norm(z, 2, axis=0)) for z in v + w)
    return _solve(cp.Problem(cp.Minimize(f + beta * r), cons))


def _data(kind, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D))
    if kind == "reg1":
        return x, np.sin(2 * x[:, 0]) + x[:, 1] * x[:, 2]
    if kind == "reg2":
        return x, np.c_[np.sin(2 * x[:, 0]), np.abs(x[:, 1])]
    k = int(kind[3:])
    return x, np.argmax(x[:, :k] + 0.5 * rng.standard_normal((N, k)), axis=1)


def _cone_setup(seed=1, p=4):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D))
    masks = (x @ rng.standard_normal((D, p)) >= 0).astype(np.float64)
    return rng, x, masks


# ----------------------------------------------------------------------------------------------------------------
# Estimators against cvxpy, and recovery of the ReLU network
# ----------------------------------------------------------------------------------------------------------------
CASES = [
    ("reg-c1-intercept", ConvexMLPRegressor(fit_intercept=True), "reg1"),
    ("reg-c2", ConvexMLPRegressor(), "reg2"),
    ("clf-logistic", ConvexMLPClassifier(loss="logistic", fit_intercept=True), "clf2"),
    ("clf-ce-3", ConvexMLPClassifier(), "clf3"),
    ("clf-squared-3", ConvexMLPClassifier(loss="squared", fit_intercept=True), "clf3"),
]


@pytest.mark.parametrize("est,kind", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_relu_estimator_matches_cvxpy_and_recovers(est, kind):
    x, y = _data(kind)
    est = clone(est).set_params(activation="relu", n_gates=6, beta=0.03, tol=1e-8, max_iter=20_000, random_state=0)
    est.fit(x, y)
    assert est.status_ == "converged" and est.certificate_.rel_gap <= 1e-8
    p, d = est.gates_.shape[1], est.gates_.shape[0]
    c = est.coef_.shape[-1]
    assert est.cone_coef_.shape == (2, p, d, c)
    np.testing.assert_array_equal(est.coef_, est.cone_coef_[0] - est.cone_coef_[1])
    assert 0 <= est.constraint_violation_ <= 1e-12

    xt = _design(x, est.fit_intercept)
    masks = (xt @ est.gates_ >= 0).astype(np.float64)
    loss_name, targets, loss = _targets(est, y)
    p_cvx = cvx_relu(xt, masks, loss_name, targets, est.beta, c)
    assert est.objective_ == pytest.approx(p_cvx, rel=1e-6)
    assert est.certificate_.dual <= p_cvx + 1e-8 * abs(p_cvx)

    # the cone constraints hold: D_j X̃ V_j = (X̃ V_j)_+, the same for W
    for z in est.cone_coef_:
        for j in range(p):
            xz = xt @ z[j]
            np.testing.assert_allclose(masks[:, [j]] * xz, np.maximum(xz, 0), atol=1e-12)

    # the ReLU network reproduces the estimator and its objective, on training and new data
    module = est.to_module()
    assert isinstance(module, ReLUMLP) and module.bias is est.fit_intercept
    groups = int((np.linalg.norm(est.cone_coef_, axis=2) > 0).sum())
    assert 1 <= module.n_neurons <= groups
    x_new = np.random.default_rng(9).standard_normal((15, D))
    with torch.no_grad():
        for xx in (x, x_new):
            out = module(torch.tensor(xx)).numpy()
            dec = est.predict(xx) if isinstance(est, ConvexMLPRegressor) else est.decision_function(xx)
            np.testing.assert_allclose(out, dec.reshape(len(xx), -1), atol=1e-8)
        reg = float(regularized_objective(module, loss, torch.tensor(x), est.beta))
    assert reg == pytest.approx(est.objective_, rel=1e-8)


def test_relu_optimum_is_above_gated_optimum():
    """Same gates: the ReLU program is the gated program plus constraints, so its optimum is larger."""
    x, y = _data("reg1")
    kw = dict(n_gates=6, beta=0.03, tol=1e-8, max_iter=20_000, random_state=0)
    relu = ConvexMLPRegressor(activation="relu", **kw).fit(x, y)
    gated = ConvexMLPRegressor(**kw).fit(x, y)
    np.testing.assert_array_equal(relu.gates_, gated.gates_)
    assert gated.objective_ < relu.objective_
    assert relu.certificate_.dual > gated.objective_  # strictly separated here: the constraints bind


def test_relu_unconverged_is_reported():
    x, y = _data("reg1")
    est = ConvexMLPRegressor(activation="relu", n_gates=6, beta=1e-3, tol=1e-10, max_iter=2, random_state=0)
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        est.fit(x, y)
    assert est.status_ == "max_iter" and est.n_iter_ == 2
    assert est.certificate_.rel_gap > est.tol
    assert all(math.isfinite(v) for v in (est.objective_, est.certificate_.dual, est.constraint_violation_))
    assert est.constraint_violation_ <= 1e-12  # every iterate is a prox output, hence feasible
    assert np.isfinite(est.cone_coef_).all() and np.isfinite(est.predict(x)).all()


# ----------------------------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------------------------
def test_relu_operator():
    rng, x, masks = _cone_setup()
    p, c = masks.shape[1], 2
    op = ReLUMLPOperator(torch.tensor(x), torch.tensor(masks), c)
    assert op.z_shape == (2, p, D, c)
    z = rng.standard_normal(op.z_shape)
    out = op.forward(torch.tensor(z)).numpy()
    expected = sum(masks[:, [j]] * (x @ (z[0, j] - z[1, j])) for j in range(p))
    np.testing.assert_allclose(out, expected, atol=1e-12)
    g = rng.standard_normal((N, c))
    lhs = float((op.forward(torch.tensor(z)) * torch.tensor(g)).sum())
    rhs = float((torch.tensor(z) * op.adjoint(torch.tensor(g))).sum())
    assert lhs == pytest.approx(rhs, rel=1e-12)


def _cvx_cone_prox(x, masks, z, t):
    """argmin ½‖W − Z‖² + t Σ_g ‖W_g‖ over W in the cones (t = 0: the projection)."""
    signs = 2 * masks - 1
    s_, p, d, c = z.shape
    out = np.zeros_like(z)
    for s in range(s_):
        for j in range(p):
            for k in range(c):
                w = cp.Variable(d)
                prob = cp.Problem(
                    cp.Minimize(0.5 * cp.sum_squares(w - z[s, j, :, k]) + t * cp.norm(w, 2)),
                    [cp.multiply(signs[:, j], x @ w) >= 0],
                )
                _solve(prob, tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
                out[s, j, :, k] = w.value
    return out


@pytest.mark.parametrize("t", [0.0, 0.3])
def test_cone_group_l2_prox_matches_cvxpy(t):
    rng, x, masks = _cone_setup(p=3)
    pen = ConeGroupL2(torch.tensor(x), torch.tensor(masks))
    z = rng.standard_normal((2, 3, D, 2))
    ours = (pen.project(torch.tensor(z)) if t == 0 else pen.prox(torch.tensor(z), t)).numpy()
    np.testing.assert_allclose(ours, _cvx_cone_prox(x, masks, z, t), atol=1e-7)
    assert pen.violation(torch.tensor(ours)) <= 1e-12
    assert pen.violation(torch.tensor(z)) > 0.01  # the random input was not feasible


def test_cone_group_l2_value_violation_and_support_function():
    rng, x, masks = _cone_setup(p=2)
    pen = ConeGroupL2(torch.tensor(x), torch.tensor(masks))
    w = rng.standard_normal((2, 2, D, 1))
    wt = torch.tensor(w)
    assert pen.violation(wt) > 0.01 and float(pen.value(wt)) == np.inf  # outside the cones: +inf
    feasible = pen.project(wt)
    assert float(pen.value(feasible)) == pytest.approx(np.linalg.norm(feasible.numpy(), axis=2).sum(), rel=1e-13)
    # dual_norm is the support function sup{⟨W, Z⟩ : R(Z) ≤ 1, Z in the cones}, computed by cvxpy
    signs = 2 * masks - 1
    zs = {(s, j): cp.Variable(D) for s in range(2) for j in range(2)}
    cons = [cp.multiply(signs[:, j], x @ zs[s, j]) >= 0 for (s, j) in zs]
    cons.append(sum(cp.norm(v, 2) for v in zs.values()) <= 1)
    sup = _solve(cp.Problem(cp.Maximize(sum(w[s, j, :, 0] @ v for (s, j), v in zs.items())), cons))
    assert float(pen.dual_norm(wt)) == pytest.approx(sup, rel=1e-6)
    # not symmetric: the support function at −W differs (so certificates must use R°(−A*∇f))
    sup_neg = _solve(cp.Problem(cp.Maximize(sum(-w[s, j, :, 0] @ v for (s, j), v in zs.items())), cons))
    assert float(pen.dual_norm(-wt)) == pytest.approx(sup_neg, rel=1e-6)
    # violation: 0 inside the cones, relative size of the worst violated slack outside
    proj = pen.project(wt)
    assert pen.violation(proj) <= 1e-12
    slack = np.stack([[signs[:, j : j + 1] * (x @ w[s, j]) for j in range(2)] for s in range(2)])
    expected = max(-slack.min(), 0) / np.abs(slack).max()
    assert pen.violation(wt) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_relu_certificate_brackets_the_optimum(loss):
    """At feasible non-optimal points (prox outputs) the certificate brackets the cvxpy optimum."""
    rng, x, masks = _cone_setup(seed=3, p=4)
    if loss == "squared":
        y = np.sin(2 * x[:, :1])
        lo, name = SquaredLoss(torch.tensor(y)), "squared"
    else:
        y = np.where(x[:, :1] * x[:, 1:2] > 0, 1.0, -1.0)
        lo, name = LogisticLoss(torch.tensor(y)), "logistic"
    xt, mt = torch.tensor(x), torch.tensor(masks)
    pen = ConeGroupL2(xt, mt)
    prob = CompositeProblem(lo, ReLUMLPOperator(xt, mt, 1), pen, 1.0)
    prob = prob.with_beta(0.1 * beta_max(prob))
    p_star = cvx_relu(x, masks, name, y, prob.beta, 1)
    points = [
        prob.operator.zeros(),
        pen.project(torch.tensor(0.3 * rng.standard_normal(prob.operator.z_shape))),
        FISTA(tol=0.0, max_iter=5).run(prob).z,
    ]
    for z in points:
        cert = prob.certificate(z)
        assert cert.dual <= p_star + 1e-8 * abs(p_star) <= cert.primal + 2e-8 * abs(p_star)
    res = FISTA(tol=1e-8, max_iter=20_000).run(prob)
    assert res.status == "converged"
    assert res.objective == pytest.approx(p_star, rel=1e-6)


def test_relu_infeasible_warm_start_is_not_certified():
    x, y = _data("reg1")
    xt = torch.tensor(x)
    gates = torch.tensor(np.random.default_rng(0).standard_normal((D, 6)))
    masks = (xt @ gates >= 0).double()
    lo = SquaredLoss(torch.tensor(y[:, None]))
    gated = FISTA(tol=1e-9, max_iter=20_000).run(
        CompositeProblem(lo, GatedMLPOperator(xt, masks, 1), BlockNuclearNorm(), 0.03)
    )
    pen = ConeGroupL2(xt, masks)
    relu = CompositeProblem(lo, ReLUMLPOperator(xt, masks, 1), pen, 0.03)
    z0 = torch.stack([gated.z, torch.zeros_like(gated.z)])  # the gated solution: violates the cones
    assert pen.violation(z0) > 0.1
    res = FISTA(tol=1e-6, max_iter=20_000).run(relu, z0=z0)
    assert pen.violation(res.z) <= 1e-12
    p_star = FISTA(tol=1e-9, max_iter=20_000).run(relu).objective
    assert res.objective >= p_star * (1 - 1e-6)


def test_relu_mlp_to_module_known_solution():
    rng = np.random.default_rng(2)
    d, c = 3, 2
    v = np.zeros((2, d, c))
    w = np.zeros((2, d, c))
    v[0, :, 1] = rng.standard_normal(d)
    w[1, :, 0] = rng.standard_normal(d)
    w[1, :, 1] = rng.standard_normal(d)
    module = relu_mlp_to_module(torch.tensor(v), torch.tensor(w), bias=False)
    assert module.n_neurons == 3
    x = rng.standard_normal((20, d))
    expected = np.zeros((20, c))
    expected[:, 1] += np.maximum(x @ v[0, :, 1], 0)
    expected[:, 0] -= np.maximum(x @ w[1, :, 0], 0)
    expected[:, 1] -= np.maximum(x @ w[1, :, 1], 0)
    with torch.no_grad():
        np.testing.assert_allclose(module(torch.tensor(x)).numpy(), expected, atol=1e-12)
        norms = np.linalg.norm(v, axis=1).sum() + np.linalg.norm(w, axis=1).sum()
        assert float(module.weight_decay()) == pytest.approx(norms, rel=1e-12)
    empty = relu_mlp_to_module(torch.zeros(2, d, c, dtype=torch.float64), torch.zeros(2, d, c, dtype=torch.float64))
    assert empty.n_neurons == 0
