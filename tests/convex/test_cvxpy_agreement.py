"""The key test: FISTA's certified optimum agrees with an independent cvxpy formulation (Clarabel; SCS once).

The cvxpy programs are written from the math — ``(1/N) Σ_i L(f(x_i), y_i) + β · penalty`` with
``f(x) = x̃ᵀ Z`` (linear) or ``Σ_j 1{x̃ᵀ g_j ≥ 0} x̃ᵀ Z_j`` (gated MLP) — and take only data, gates and masks from
the library (masks are recomputed here with numpy). Every comparison is at ≤ 1e-6 relative, and the library's
dual bound must lie below the cvxpy optimum.
"""

from __future__ import annotations

import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch
from sklearn.base import clone

from attnduality.convex import (
    FISTA,
    BlockNuclearNorm,
    CompositeProblem,
    ConvexMLPClassifier,
    ConvexMLPRegressor,
    CrossEntropyLoss,
    DenseOperator,
    GatedMLPOperator,
    GroupL2,
    L1Norm,
    LogisticLoss,
    NuclearNorm,
    NuclearNormClassifier,
    NuclearNormRegressor,
    SquaredLoss,
    beta_max,
)
from attnduality.convex.solvers import SemismoothNewton

N, D, P = 40, 5, 7
TOL = 1e-8  # 1e-9 stalls on some instances: see test_solvers.py::test_fista_reaches_tight_tolerance
SCS_TIGHT = dict(eps_abs=1e-10, eps_rel=1e-10, max_iters=200_000)
REL = 1e-6  # agreement required between FISTA and cvxpy optima (the brief asks for 1e-5)


# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------
def _data(seed: int, loss: str, c: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D))
    gates = rng.standard_normal((D, P))
    masks = (x @ gates >= 0).astype(np.float64)
    if loss == "squared":
        y = rng.standard_normal((N, c))
    elif loss == "cross_entropy":
        y = rng.integers(0, c, N)
    else:
        y = np.where(rng.random(N) < 0.5, -1.0, 1.0)[:, None]
    return x, masks, y


def _our_loss(loss: str, y: np.ndarray):
    if loss == "squared":
        return SquaredLoss(torch.tensor(y))
    if loss == "cross_entropy":
        return CrossEntropyLoss(torch.tensor(y))
    return LogisticLoss(torch.tensor(y))


OUR_PENALTIES = {
    ("dense", "group_l2"): lambda: GroupL2(axes=(1,)),  # one group per row (feature) of W (d, c)
    ("dense", "nuclear"): NuclearNorm,
    ("dense", "l1"): L1Norm,
    ("mlp", "group_l2"): lambda: GroupL2(axes=(1, 2)),  # one group per gate block Z_j
    ("mlp", "group_l2_columns"): lambda: GroupL2(axes=(1,)),  # one group per (gate j, output k)
    ("mlp", "block_nuclear"): BlockNuclearNorm,
    ("mlp", "l1"): L1Norm,
}


# ----------------------------------------------------------------------------------------------------------------
# Independent cvxpy formulations
# ----------------------------------------------------------------------------------------------------------------
def _cvx_loss(loss: str, u, y: np.ndarray, n: int):
    if loss == "squared":
        return 0.5 * cp.sum_squares(u - y) / n
    if loss == "cross_entropy":
        onehot = np.eye(u.shape[1])[y]
        return (cp.sum(cp.log_sum_exp(u, axis=1)) - cp.sum(cp.multiply(onehot, u))) / n
    return cp.sum(cp.logistic(-cp.multiply(y, u))) / n


def _cvx_penalty(model: str, penalty: str, zs):
    if model == "dense":
        (z,) = zs
        return {
            "group_l2": lambda: cp.sum(cp.norm(z, 2, axis=1)),
            "nuclear": lambda: cp.normNuc(z),
            "l1": lambda: cp.sum(cp.abs(z)),
        }[penalty]()
    terms = {
        "group_l2": lambda z: cp.norm(z, "fro"),
        "group_l2_columns": lambda z: cp.sum(cp.norm(z, 2, axis=0)),
        "block_nuclear": lambda z: cp.normNuc(z),
        "l1": lambda z: cp.sum(cp.abs(z)),
    }[penalty]
    return sum(terms(z) for z in zs)


def cvx_solve(model, loss, penalty, x, masks, y, beta, c, solver=cp.CLARABEL, **opts):
    """min_Z (1/N) Σ L(f(x_i), y_i) + β R(Z); returns (optimal value, Z as a numpy array of the library's shape)."""
    n, d = x.shape
    if model == "dense":
        zs = [cp.Variable((d, c))]
        u = x @ zs[0]
    else:
        zs = [cp.Variable((d, c)) for _ in range(masks.shape[1])]
        u = sum(cp.multiply(masks[:, [j]], x @ zs[j]) for j in range(masks.shape[1]))
    prob = cp.Problem(cp.Minimize(_cvx_loss(loss, u, y, n) + beta * _cvx_penalty(model, penalty, zs)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "solution may be inaccurate": handled by the fallback
        prob.solve(solver=solver, **opts)
    if prob.status != cp.OPTIMAL and solver == cp.CLARABEL:  # fallback: SCS with tight tolerances
        prob.solve(solver=cp.SCS, **SCS_TIGHT)
    assert prob.status == cp.OPTIMAL, prob.status
    z = zs[0].value if model == "dense" else np.stack([v.value for v in zs])
    return float(prob.value), z


# ----------------------------------------------------------------------------------------------------------------
# Library-level agreement: every loss × penalty × model
# ----------------------------------------------------------------------------------------------------------------
LOSS_CASES = [("squared", 1), ("squared", 2), ("squared", 3), ("cross_entropy", 3), ("logistic", 1)]
MODEL_PENALTIES = [
    ("dense", "group_l2"),
    ("dense", "nuclear"),
    ("dense", "l1"),
    ("mlp", "group_l2"),
    ("mlp", "group_l2_columns"),
    ("mlp", "block_nuclear"),
    ("mlp", "l1"),
]


def _our_problem(model, penalty, loss, x, masks, y, c):
    xt = torch.tensor(x)
    op = DenseOperator(xt, c) if model == "dense" else GatedMLPOperator(xt, torch.tensor(masks), c)
    prob = CompositeProblem(_our_loss(loss, y), op, OUR_PENALTIES[(model, penalty)](), 1.0)
    return prob.with_beta(0.1 * beta_max(prob))  # well inside the path: the solution is not zero


SOLVERS = {"fista": lambda: FISTA(tol=TOL, max_iter=20_000), "newton": lambda: SemismoothNewton(tol=TOL)}


@pytest.mark.parametrize("loss,c", LOSS_CASES, ids=[f"{loss}-c{c}" for loss, c in LOSS_CASES])
@pytest.mark.parametrize("model,penalty", MODEL_PENALTIES, ids=[f"{m}-{p}" for m, p in MODEL_PENALTIES])
def test_solvers_match_cvxpy(model, penalty, loss, c):
    """FISTA and the semismooth Newton solver both reach cvxpy's optimum, certified."""
    seed = 7 * MODEL_PENALTIES.index((model, penalty)) + LOSS_CASES.index((loss, c))
    x, masks, y = _data(seed, loss, c)
    problem = _our_problem(model, penalty, loss, x, masks, y, c)
    p_cvx, z_cvx = cvx_solve(model, loss, penalty, x, masks, y, problem.beta, c)
    # our objective evaluated at cvxpy's minimiser is cvxpy's objective (same function, independently written)
    assert problem.objective(torch.tensor(z_cvx)) == pytest.approx(p_cvx, rel=1e-8)
    for name, make in SOLVERS.items():
        res = make().run(problem)
        assert res.status == "converged", name
        assert res.certificate.rel_gap <= TOL
        assert torch.count_nonzero(res.z) > 0
        assert res.objective == pytest.approx(p_cvx, rel=REL), name
        # the certificate's dual value is a lower bound on the optimum, hence below cvxpy's (near-optimal) value
        assert res.certificate.dual <= p_cvx + 1e-9 * abs(p_cvx), name
        # and the solver is at least as good as cvxpy's point, up to its certified gap
        assert res.objective <= problem.objective(torch.tensor(z_cvx)) + res.certificate.gap + 1e-12


def test_fista_matches_scs():
    """The same agreement against a second, first-order conic solver (SCS, tight tolerances)."""
    x, masks, y = _data(100, "squared", 2)
    problem = _our_problem("mlp", "block_nuclear", "squared", x, masks, y, 2)
    res = FISTA(tol=TOL, max_iter=20_000).run(problem)
    assert res.status == "converged"
    p_scs, _ = cvx_solve("mlp", "squared", "block_nuclear", x, masks, y, problem.beta, 2, solver=cp.SCS, **SCS_TIGHT)
    assert res.objective == pytest.approx(p_scs, rel=1e-5)
    p_clarabel, _ = cvx_solve("mlp", "squared", "block_nuclear", x, masks, y, problem.beta, 2)
    assert p_scs == pytest.approx(p_clarabel, rel=1e-5)


@pytest.mark.parametrize("beta_frac", [0.001, 0.01, 0.5])
@pytest.mark.parametrize("loss", ["cross_entropy", "squared"])
def test_solvers_match_cvxpy_across_beta(beta_frac, loss):
    """Small and large β on the headline problem (gated MLP, block nuclear), both solvers."""
    x, masks, y = _data(200, loss, 3)
    problem = _our_problem("mlp", "block_nuclear", loss, x, masks, y, 3)
    problem = problem.with_beta(10 * problem.beta * beta_frac)  # beta_frac × beta_max
    p_cvx, _ = cvx_solve("mlp", loss, "block_nuclear", x, masks, y, problem.beta, 3)
    for name, make in SOLVERS.items():
        res = make().run(problem)
        assert res.status == "converged", name
        assert res.objective == pytest.approx(p_cvx, rel=REL), name
        assert res.certificate.dual <= p_cvx + 1e-9 * abs(p_cvx), name


# ----------------------------------------------------------------------------------------------------------------
# Estimator-level agreement: the cvxpy program is built from X (with the ones column when fit_intercept) and the
# estimator's own gates_
# ----------------------------------------------------------------------------------------------------------------
def _design(x, fit_intercept):
    return np.hstack([x, np.ones((x.shape[0], 1))]) if fit_intercept else x


def _estimator_targets(est, y):
    """The targets of the convex program in the estimator's convention, rebuilt from y and classes_."""
    if isinstance(est, (ConvexMLPRegressor, NuclearNormRegressor)):
        return "squared", y.reshape(len(y), -1)
    idx = np.searchsorted(est.classes_, y)
    k = len(est.classes_)
    if est.loss == "cross_entropy":
        return "cross_entropy", idx
    if est.loss == "logistic":
        return "logistic", (2.0 * idx - 1.0)[:, None]
    return "squared", np.eye(k)[idx]


def _cvx_for_estimator(est, x, y):
    xt = _design(x, est.fit_intercept)
    loss, targets = _estimator_targets(est, y)
    c = est.coef_.shape[-1]
    if isinstance(est, (NuclearNormClassifier, NuclearNormRegressor)):
        return cvx_solve("dense", loss, "nuclear", xt, None, targets, est.beta, c)
    masks = (xt @ est.gates_ >= 0).astype(np.float64)
    return cvx_solve("mlp", loss, "block_nuclear", xt, masks, targets, est.beta, c)


def _estimator_cases():
    common = dict(tol=TOL, max_iter=20_000)
    mlp = dict(n_gates=8, random_state=0, **common)
    return [
        ("mlp-reg-c1-intercept", ConvexMLPRegressor(beta=0.02, fit_intercept=True, **mlp), "reg1"),
        ("mlp-reg-c2", ConvexMLPRegressor(beta=0.02, **mlp), "reg2"),
        ("mlp-clf-ce-3class-intercept", ConvexMLPClassifier(beta=0.02, fit_intercept=True, **mlp), "clf3"),
        ("mlp-clf-ce-binary", ConvexMLPClassifier(beta=0.02, **mlp), "clf2"),
        ("mlp-clf-logistic", ConvexMLPClassifier(beta=0.02, loss="logistic", fit_intercept=True, **mlp), "clf2"),
        ("mlp-clf-squared", ConvexMLPClassifier(beta=0.02, loss="squared", **mlp), "clf3"),
        ("nuc-clf-ce", NuclearNormClassifier(beta=0.05, fit_intercept=True, **common), "clf4"),
        ("nuc-clf-logistic", NuclearNormClassifier(beta=0.05, loss="logistic", **common), "clf2"),
        ("nuc-clf-squared", NuclearNormClassifier(beta=0.05, loss="squared", **common), "clf4"),
        ("nuc-reg", NuclearNormRegressor(beta=0.05, fit_intercept=True, **common), "reg3"),
    ]


ESTIMATOR_CASES = _estimator_cases()


@pytest.mark.parametrize("est,target", [c[1:] for c in ESTIMATOR_CASES], ids=[c[0] for c in ESTIMATOR_CASES])
def test_estimator_matches_cvxpy(est, target):
    est = clone(est)
    rng = np.random.default_rng(300)
    x = rng.standard_normal((50, 4))
    kind, k = target[:3], int(target[3:])
    if kind == "reg":
        w = rng.standard_normal((4, k))
        y = np.tanh(x @ w) + 0.1 * rng.standard_normal((50, k))
        y = y[:, 0] if k == 1 else y
    else:  # string labels: the estimator must encode them itself
        labels = np.array(["ant", "bee", "cat", "dog"])[:k]
        y = labels[np.argmax(x[:, :k] + 0.5 * rng.standard_normal((50, k)), axis=1)]
    est.fit(x, y)
    assert est.status_ == "converged"
    assert est.certificate_.rel_gap <= TOL
    p_cvx, z_cvx = _cvx_for_estimator(est, x, y)
    assert est.objective_ == pytest.approx(p_cvx, rel=REL)
    assert est.certificate_.dual <= p_cvx + 1e-9 * abs(p_cvx)
    assert np.count_nonzero(est.coef_) > 0
    if kind == "reg":  # the squared loss is strictly convex in the predictions: they agree with cvxpy's
        xt = _design(x, est.fit_intercept)
        if z_cvx.ndim == 2:
            u_cvx = xt @ z_cvx
        else:
            masks = (xt @ est.gates_ >= 0).astype(np.float64)
            u_cvx = sum(masks[:, [j]] * (xt @ z_cvx[j]) for j in range(z_cvx.shape[0]))
        np.testing.assert_allclose(est.predict(x).reshape(50, -1), u_cvx, atol=1e-3)
