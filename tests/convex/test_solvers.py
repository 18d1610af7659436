"""Solvers and their building blocks: operators, gate arrangements, FISTA, certificates, paths, beta_max."""

from __future__ import annotations

import math
import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch
from sklearn.exceptions import ConvergenceWarning

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
    gate_masks,
    sample_gates,
    solve_path,
    unique_gates,
)

N, D, P = 40, 5, 6


def _problem(loss: str, model: str, seed: int = 0, dtype=torch.float64, c: int | None = None, frac: float = 0.1):
    """A small random problem with β = frac · beta_max."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, D))
    masks = (x @ rng.standard_normal((D, P)) >= 0).astype(np.float64)
    if loss == "squared":
        c = c or 2
        lo = SquaredLoss(torch.tensor(rng.standard_normal((N, c)), dtype=dtype))
    elif loss == "cross_entropy":
        c = c or 3
        lo = CrossEntropyLoss(torch.tensor(rng.integers(0, c, N)))
    else:
        c = 1
        lo = LogisticLoss(torch.tensor(np.where(rng.random((N, 1)) < 0.5, -1.0, 1.0), dtype=dtype))
    xt = torch.tensor(x, dtype=dtype)
    if model == "dense":
        op, pen = DenseOperator(xt, c), NuclearNorm()
    else:
        op, pen = GatedMLPOperator(xt, torch.tensor(masks, dtype=dtype), c), BlockNuclearNorm()
    prob = CompositeProblem(lo, op, pen, 1.0)
    return prob.with_beta(frac * beta_max(prob))


def _cvx_optimum(prob: CompositeProblem) -> float:
    """The optimum of a gated-MLP/block-nuclear problem, by cvxpy (data taken from the problem)."""
    op, lo = prob.operator, prob.loss
    x, masks = op.x.double().numpy(), op.masks.double().numpy()
    n, (p, d, c) = x.shape[0], op.z_shape
    zs = [cp.Variable((d, c)) for _ in range(p)]
    u = sum(cp.multiply(masks[:, [j]], x @ zs[j]) for j in range(p))
    if isinstance(lo, SquaredLoss):
        f = 0.5 * cp.sum_squares(u - lo.y.double().numpy()) / n
    elif isinstance(lo, CrossEntropyLoss):
        f = (cp.sum(cp.log_sum_exp(u, axis=1)) - cp.sum(cp.multiply(np.eye(c)[lo.y.numpy()], u))) / n
    else:
        f = cp.sum(cp.logistic(-cp.multiply(lo.y.double().numpy(), u))) / n
    pr = cp.Problem(cp.Minimize(f + prob.beta * sum(cp.normNuc(z) for z in zs)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "solution may be inaccurate": handled below
        pr.solve(solver=cp.CLARABEL)
    if pr.status != cp.OPTIMAL:
        pr.solve(solver=cp.SCS, eps_abs=1e-10, eps_rel=1e-10, max_iters=200_000)
    assert pr.status == cp.OPTIMAL
    return float(pr.value)


# ----------------------------------------------------------------------------------------------------------------
# Operators and gates
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("c", [1, 3])
@pytest.mark.parametrize("model,p", [("dense", P), ("mlp", 2), ("mlp", 3 * D)], ids=["dense", "mlp-few", "mlp-many"])
def test_operator_forward_adjoint(model, p, c):
    """The gated operator has two code paths: fewer gates than features, and more."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((N, D))
    masks = (x @ rng.standard_normal((D, p)) >= 0).astype(np.float64)
    xt = torch.tensor(x)
    op = DenseOperator(xt, c) if model == "dense" else GatedMLPOperator(xt, torch.tensor(masks), c)
    z = rng.standard_normal(op.z_shape)
    g = rng.standard_normal((N, c))
    # forward from the definition
    if model == "dense":
        ref = x @ z
    else:
        ref = sum(masks[:, [j]] * (x @ z[j]) for j in range(p))
    np.testing.assert_allclose(op.forward(torch.tensor(z)).numpy(), ref, rtol=1e-12, atol=1e-12)
    # adjoint: ⟨A Z, G⟩ = ⟨Z, A* G⟩
    lhs = float((op.forward(torch.tensor(z)) * torch.tensor(g)).sum())
    rhs = float((torch.tensor(z) * op.adjoint(torch.tensor(g))).sum())
    assert lhs == pytest.approx(rhs, rel=1e-12)
    assert tuple(op.adjoint(torch.tensor(g)).shape) == op.z_shape
    # norm_sq estimates ‖A‖² from below and is close to it
    if model == "dense":
        a = np.kron(x, np.eye(c))  # vec_row(X Z) = (X ⊗ I_c) vec_row(Z)
    else:
        a = np.hstack([np.kron(masks[:, [j]] * x, np.eye(c)) for j in range(p)])
    exact = np.linalg.norm(a, 2) ** 2
    est = op.norm_sq(n_iter=100)
    assert est <= exact * (1 + 1e-10)
    assert est >= 0.99 * exact


def test_gated_operator_rejects_mismatched_masks():
    with pytest.raises(ValueError, match="masks have 3 rows but X has 4 samples"):
        GatedMLPOperator(torch.zeros(4, 2), torch.ones(3, 5), 1)


def test_gate_masks_and_unique_gates():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]], dtype=torch.float64)
    # columns g0 = (1, 0), g1 = 2·g0, g2 = (0, 1), g3 = (-1, -1), g4 = (1, 1); x·g = 0 counts as active (≥ 0)
    g = torch.tensor([[1.0, 2.0, 0.0, -1.0, 1.0], [0.0, 0.0, 1.0, -1.0, 1.0]], dtype=torch.float64)
    m = gate_masks(x, g)
    expected = np.array([[1, 1, 1, 0, 1], [1, 1, 1, 0, 1], [0, 0, 0, 1, 0]], dtype=float)
    np.testing.assert_array_equal(m.numpy(), expected)
    assert m.dtype == torch.float64
    kept = unique_gates(x, g)
    np.testing.assert_array_equal(kept.numpy(), g[:, [0, 3]].numpy())  # first occurrences, order preserved
    # an all-zero mask is dropped
    g_dead = torch.tensor([[-1.0], [-1.0]], dtype=torch.float64)
    x_pos = torch.tensor([[1.0, 1.0], [2.0, 0.5]], dtype=torch.float64)
    assert unique_gates(x_pos, g_dead).shape == (2, 0)


def test_sample_gates():
    a = sample_gates(4, 7, seed=3)
    b = sample_gates(4, 7, seed=3)
    c = sample_gates(4, 7, seed=4)
    assert a.shape == (4, 7) and a.dtype == torch.float64
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="n_gates must be >= 1"):
        sample_gates(4, 0, seed=0)


# ----------------------------------------------------------------------------------------------------------------
# FISTA
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("restart", ["gradient", "function", None])
@pytest.mark.parametrize("loss", ["squared", "cross_entropy", "logistic"])
def test_fista_converges_and_records_history(loss, restart):
    prob = _problem(loss, "mlp", seed=2)
    calls = []
    solver = FISTA(tol=1e-8, max_iter=20_000, restart=restart, check_every=10)
    res = solver.run(prob, callback=lambda state, cert: calls.append((state.n_iter, cert.rel_gap)))
    assert res.status == "converged" and res.converged
    assert res.certificate.rel_gap <= 1e-8
    assert res.objective == pytest.approx(prob.objective(res.z), rel=1e-12)
    assert res.certificate.primal == res.objective
    assert res.certificate.gap == pytest.approx(res.certificate.primal - res.certificate.dual, abs=1e-15)
    assert 0 < res.n_iter < 20_000 and res.time > 0
    h = res.history
    assert len(h.n_iter) == len(h.time) == len(h.objective) == len(h.rel_gap) == len(calls) >= 2
    assert h.n_iter == [i for i, _ in calls] and h.rel_gap == [g for _, g in calls]
    assert h.n_iter[0] == 0 and h.n_iter[-1] == res.n_iter
    assert all(i % 10 == 0 for i in h.n_iter)
    assert all(t1 >= t0 for t0, t1 in zip(h.time, h.time[1:], strict=False))
    assert h.rel_gap[-1] <= 1e-8 < h.rel_gap[0]
    assert h.objective[-1] < h.objective[0]
    assert h.objective[-1] == res.objective
    # the solution is a fixed point of the proximal-gradient map
    return_z = res.z
    g = prob.operator.adjoint(prob.loss.grad(prob.operator.forward(return_z)))
    t = 1.0 / prob.lipschitz()
    fixed = prob.penalty.prox(return_z - t * g, t * prob.beta)
    assert float(torch.linalg.vector_norm(fixed - return_z)) <= 1e-3 * float(torch.linalg.vector_norm(return_z))


def test_restart_variants_agree():
    prob = _problem("cross_entropy", "mlp", seed=3)
    objs = [FISTA(tol=1e-8, max_iter=20_000, restart=r).run(prob).objective for r in ("gradient", "function", None)]
    assert max(objs) - min(objs) <= 2e-8 * abs(objs[0])


@pytest.mark.parametrize("model", ["dense", "mlp"])
@pytest.mark.parametrize("loss", ["squared", "cross_entropy", "logistic"])
def test_warm_start_from_solution(loss, model):
    prob = _problem(loss, model, seed=4)
    solver = FISTA(tol=1e-8, max_iter=20_000, check_every=10)
    cold = solver.run(prob)
    assert cold.status == "converged"
    warm = solver.run(prob, z0=cold.z)
    assert warm.status == "converged"
    assert warm.n_iter <= 2 * solver.check_every
    assert warm.objective == pytest.approx(cold.objective, rel=1e-8)
    # a warm start must not be modified in place
    z0 = cold.z.clone()
    solver.run(prob.with_beta(prob.beta * 0.5), z0=z0)
    assert torch.equal(z0, cold.z)


def test_first_step_size_from_a_previous_solve(monkeypatch):
    """A given first step skips the power iteration (no ``norm_sq`` call) and reaches the same optimum; a step that
    is not a finite positive number is refused."""
    prob = _problem("cross_entropy", "mlp", seed=4)
    steps: list[float] = []
    cold = FISTA(tol=1e-8, max_iter=20_000).run(prob, callback=lambda state, _: steps.append(state.step))
    calls = []
    monkeypatch.setattr(type(prob.operator), "norm_sq", lambda *a, **k: calls.append(1) or 1.0)
    near = prob.with_beta(prob.beta * 0.9)
    res = FISTA(tol=1e-8, max_iter=20_000).run(near, step=steps[-1])
    assert calls == [] and res.status == "converged"
    ref = FISTA(tol=1e-8, max_iter=20_000).run(near)  # the power iteration, monkeypatched away: 1/L_f as first step
    assert calls and res.objective == pytest.approx(ref.objective, rel=1e-7)
    assert cold.status == "converged"
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="step must be"):
            FISTA().run(prob, step=bad)


def test_warm_start_shape_is_checked():
    prob = _problem("squared", "mlp")
    with pytest.raises(ValueError, match="warm start has shape"):
        FISTA().run(prob, z0=torch.zeros(2, 2, dtype=torch.float64))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(tol=-1.0), "tol must be >= 0"),
        (dict(max_iter=0), "max_iter and check_every >= 1"),
        (dict(check_every=0), "max_iter and check_every >= 1"),
        (dict(restart="sometimes"), "restart must be"),
    ],
)
def test_fista_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FISTA(**kwargs)


def test_problem_rejects_bad_beta():
    prob = _problem("squared", "dense")
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
            prob.with_beta(bad)


def test_max_iter_and_max_time_status():
    prob = _problem("cross_entropy", "mlp", seed=5, frac=0.02)
    res = FISTA(tol=1e-12, max_iter=7, check_every=10).run(prob)
    assert res.status == "max_iter" and not res.converged
    assert res.n_iter == 7
    assert res.history.n_iter == [0, 7]
    assert res.certificate.rel_gap > 1e-12
    assert math.isfinite(res.objective) and bool(torch.isfinite(res.z).all())
    # the best iterate seen at a check is returned
    assert res.objective == min(res.history.objective)
    res_t = FISTA(tol=1e-12, max_iter=10**6, max_time=0.0).run(prob)
    assert res_t.status == "max_time"
    assert res_t.n_iter == 0


def test_objective_of_the_problem_as_given():
    """The objective is (1/2N)‖A Z − Y‖² + β Σ ‖Z_j‖_* on the data as given: no hidden rescaling."""
    prob = _problem("squared", "mlp", seed=6)
    res = FISTA(tol=1e-8, max_iter=20_000).run(prob)
    x, masks = prob.operator.x.numpy(), prob.operator.masks.numpy()
    z, y = res.z.numpy(), prob.loss.y.numpy()
    u = sum(masks[:, [j]] * (x @ z[j]) for j in range(P))
    by_hand = 0.5 * ((u - y) ** 2).sum() / N + prob.beta * sum(
        np.linalg.svd(z[j], compute_uv=False).sum() for j in range(P)
    )
    assert res.objective == pytest.approx(by_hand, rel=1e-12)
    # scaling X by 10 and β by 10 is the substitution V = 10 Z: same optimum, solution divided by 10
    op10 = GatedMLPOperator(10 * prob.operator.x, prob.operator.masks, prob.operator.n_outputs)
    prob10 = CompositeProblem(prob.loss, op10, prob.penalty, 10 * prob.beta)
    res10 = FISTA(tol=1e-8, max_iter=20_000).run(prob10)
    assert res10.objective == pytest.approx(res.objective, rel=1e-8)
    np.testing.assert_allclose(res10.z.numpy(), z / 10, atol=1e-5)
    # while scaling X alone gives a strictly better fit at the same β (the penalty buys 10× more)
    res10b = FISTA(tol=1e-8, max_iter=20_000).run(prob10.with_beta(prob.beta))
    assert res10b.objective < res.objective * 0.9


# ----------------------------------------------------------------------------------------------------------------
# float32
# ----------------------------------------------------------------------------------------------------------------
FLOAT32_CASES = [
    pytest.param("squared", "dense", id="squared-dense"),
    pytest.param("squared", "mlp", id="squared-mlp"),
    pytest.param("cross_entropy", "dense", id="cross_entropy-dense"),
    pytest.param("cross_entropy", "mlp", id="cross_entropy-mlp"),
    pytest.param("logistic", "dense", id="logistic-dense"),  # ZeroDivisionError
    pytest.param("logistic", "mlp", id="logistic-mlp"),  # ZeroDivisionError
]


@pytest.mark.parametrize("loss,model", FLOAT32_CASES)
def test_float32_converges_and_matches_float64(loss, model):
    p64 = _problem(loss, model, seed=0)
    p32 = _problem(loss, model, seed=0, dtype=torch.float32)
    assert p32.beta == pytest.approx(p64.beta, rel=1e-5)
    r64 = FISTA(tol=1e-8, max_iter=20_000).run(p64)
    r32 = FISTA(tol=1e-5, max_iter=3_000).run(p32)
    assert r64.status == "converged"
    assert r32.z.dtype == torch.float32
    assert r32.objective == pytest.approx(r64.objective, rel=1e-4)
    assert r32.status == "converged"
    assert r32.certificate.rel_gap <= 1e-5


def test_float32_objective_close_even_when_unconverged():
    """What holds today for the float32 cases that do not crash: the returned point is within 1e-4 of the optimum."""
    for loss, model in [("squared", "mlp"), ("cross_entropy", "mlp"), ("cross_entropy", "dense")]:
        r64 = FISTA(tol=1e-8, max_iter=20_000).run(_problem(loss, model, seed=0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r32 = FISTA(tol=1e-5, max_iter=500).run(_problem(loss, model, seed=0, dtype=torch.float32))
        assert r32.objective == pytest.approx(r64.objective, rel=1e-4)
        assert bool(torch.isfinite(r32.z).all())


def test_float32_logistic_mlp_does_not_crash():
    res = FISTA(tol=1e-5, max_iter=3_000).run(_problem("logistic", "mlp", seed=0, dtype=torch.float32))
    assert math.isfinite(res.objective)


@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_fista_reaches_tight_tolerance(loss):
    """A 40×5, 6-gate problem: the objective is within 1e-10 after ~100 iterations, so a 1e-10 certificate
    should follow within a few hundred; today the gap oscillates and 5000 iterations are not enough."""
    prob = _problem(loss, "mlp", seed=0)
    res = FISTA(tol=1e-10, max_iter=5_000).run(prob)
    assert res.status == "converged"


def test_fista_gap_is_stable_after_convergence():
    """Once the relative gap is below 1e-9 it should stay below 1e-8; today it jumps back up to ~1e-7."""
    prob = _problem("squared", "mlp", seed=0)
    res = FISTA(tol=0.0, max_iter=2_000).run(prob)
    gaps = np.array(res.history.rel_gap)
    first = int(np.argmax(gaps < 1e-9))
    assert gaps[first] < 1e-9
    objs = np.array(res.history.objective[first:])
    assert objs.max() - objs.min() <= 1e-11 * abs(objs.min())  # holds today: the objective stays optimal
    assert gaps[first:].max() < 1e-8  # fails today: the iterate wanders in the flat valley


def _float32_data(cls):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((40, 4))
    y = x[:, 0] - x[:, 1] ** 2 if "Regressor" in cls.__name__ else (x[:, 0] > 0.2 * x[:, 1]).astype(int)
    return x, y


def _decision(est, x):
    return est.predict(x) if hasattr(est, "_y_ndim") else est.decision_function(x)


@pytest.mark.parametrize(
    "cls",
    [
        pytest.param(ConvexMLPRegressor),  # ZeroDivisionError even at tol=1e-3
        NuclearNormRegressor,
        pytest.param(ConvexMLPClassifier),  # stalls at rel_gap 1.6e-3
        NuclearNormClassifier,
    ],
)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_estimator_float32_loose_tolerance(cls):
    """float32 estimators at tol=1e-3: float32 weights, float64 outputs, close to the float64 fit."""
    x, y = _float32_data(cls)
    kw = dict(n_gates=8, random_state=0) if "MLP" in cls.__name__ else {}
    e64 = cls(beta=0.02, tol=1e-8, max_iter=20_000, **kw).fit(x, y)
    kw32 = dict(gates=e64.gates_) if "MLP" in cls.__name__ else {}  # same gates: see the gates test below
    e32 = cls(beta=0.02, tol=1e-3, max_iter=3_000, dtype="float32", **kw32).fit(x, y)
    assert e32.status_ == "converged"
    assert e32.coef_.dtype == np.float32
    assert e32.objective_ == pytest.approx(e64.objective_, rel=2e-3)
    assert e32.objective_ >= e64.certificate_.dual
    out = _decision(e32, x)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, _decision(e64, x), atol=0.2)  # outputs ~10, a gap of 1e-3: ~sqrt(gap) sensitivity


@pytest.mark.parametrize(
    "cls",
    [
        pytest.param(ConvexMLPRegressor),
        pytest.param(NuclearNormRegressor),  # ZeroDivisionError
        pytest.param(ConvexMLPClassifier),
        NuclearNormClassifier,
    ],
)
def test_estimator_float32_tight_tolerance(cls):
    x, y = _float32_data(cls)
    kw = dict(n_gates=8, random_state=0) if "MLP" in cls.__name__ else {}
    e64 = cls(beta=0.02, tol=1e-8, max_iter=20_000, **kw).fit(x, y)
    kw32 = dict(gates=e64.gates_) if "MLP" in cls.__name__ else {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        e32 = cls(beta=0.02, tol=1e-5, max_iter=3_000, dtype="float32", **kw32).fit(x, y)
    assert e32.status_ == "converged"
    assert e32.objective_ == pytest.approx(e64.objective_, rel=1e-4)
    np.testing.assert_allclose(_decision(e32, x), _decision(e64, x), rtol=5e-3, atol=1e-2)  # ~sqrt(gap) sensitivity


def test_estimator_float32_default_parameters_do_not_crash():
    """Minimal reproduction: a 50×3 linear regression, all defaults but dtype='float32'."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 3))
    y = x @ rng.standard_normal(3) + 0.1 * rng.standard_normal(50)
    NuclearNormRegressor(dtype="float32").fit(x, y)


def test_estimator_float32_uses_the_same_gates():
    x = np.random.default_rng(8).standard_normal((30, 3))
    y = x[:, 0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        e64 = ConvexMLPRegressor(n_gates=6, random_state=0, max_iter=5).fit(x, y)
        e32 = ConvexMLPRegressor(n_gates=6, random_state=0, max_iter=5, dtype="float32").fit(x, y)
    np.testing.assert_allclose(e32.gates_, e64.gates_, rtol=1e-6)


# ----------------------------------------------------------------------------------------------------------------
# Certificates
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["squared", "cross_entropy", "logistic"])
def test_certificate_brackets_the_optimum_at_non_optimal_points(loss):
    prob = _problem(loss, "mlp", seed=9)
    p_star = _cvx_optimum(prob)
    rng = np.random.default_rng(9)
    points = {
        "zero": prob.operator.zeros(),
        "random": torch.tensor(0.3 * rng.standard_normal(prob.operator.z_shape)),
        "few_iterations": FISTA(tol=0.0, max_iter=5).run(prob).z,
        "overfit": FISTA(tol=1e-8, max_iter=20_000).run(prob.with_beta(prob.beta * 0.05)).z,
    }
    for name, z in points.items():
        cert = prob.certificate(z)
        assert cert.dual <= p_star + 1e-8 * abs(p_star), name
        assert p_star <= cert.primal + 1e-8 * abs(p_star), name
        assert cert.primal == pytest.approx(prob.objective(z), rel=1e-12), name
        assert cert.gap == pytest.approx(max(cert.primal - cert.dual, 0.0), abs=1e-14)
        assert cert.rel_gap == pytest.approx(cert.gap / abs(cert.primal), rel=1e-12)
        if name != "zero":
            assert cert.gap > 1e-6, name  # not optimal: the certificate says so
    # at the optimum the bracket closes and R°(A*∇f) = β
    res = FISTA(tol=1e-8, max_iter=20_000).run(prob)
    assert res.certificate.dual <= p_star + 1e-8 * abs(p_star) <= res.certificate.primal + 2e-8 * abs(p_star)
    assert res.certificate.grad_dual_norm == pytest.approx(prob.beta, rel=1e-3)


def test_certificate_with_other_penalties():
    """The dual bound uses the penalty's dual norm: check it is valid for ℓ1 and group ℓ2 too (vs cvxpy)."""
    base = _problem("squared", "dense", seed=10)
    x, y = base.operator.x.numpy(), base.loss.y.numpy()
    for pen, cvx_pen in [
        (L1Norm(), lambda z: cp.sum(cp.abs(z))),
        (GroupL2(axes=(1,)), lambda z: cp.sum(cp.norm(z, 2, axis=1))),
    ]:
        prob = CompositeProblem(base.loss, base.operator, pen, 0.05)
        z = cp.Variable((D, 2))
        pr = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(x @ z - y) / N + 0.05 * cvx_pen(z)))
        pr.solve(solver=cp.CLARABEL)
        for zz in (prob.operator.zeros(), torch.tensor(np.random.default_rng(0).standard_normal((D, 2)))):
            cert = prob.certificate(zz)
            assert cert.dual <= pr.value + 1e-9 <= cert.primal + 2e-9


def test_beta_zero_objective_is_least_squares():
    prob = _problem("squared", "dense", seed=11).with_beta(0.0)
    res = FISTA(tol=1e-9, max_iter=500).run(prob)
    x, y = prob.operator.x.numpy(), prob.loss.y.numpy()
    w, *_ = np.linalg.lstsq(x, y, rcond=None)
    assert res.objective == pytest.approx(0.5 * ((x @ w - y) ** 2).sum() / N, rel=1e-10)
    assert res.certificate.dual <= res.objective


def test_beta_zero_has_no_certificate_and_says_so():
    """With β = 0 the dual point collapses to 0: the solver must not claim convergence, and stays finite."""
    prob = _problem("squared", "dense", seed=11).with_beta(0.0)
    res = FISTA(tol=1e-6, max_iter=200).run(prob)
    assert res.status == "max_iter"
    assert math.isfinite(res.objective) and bool(torch.isfinite(res.z).all())


# ----------------------------------------------------------------------------------------------------------------
# beta_max and paths
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["dense", "mlp"])
@pytest.mark.parametrize("loss", ["squared", "cross_entropy", "logistic"])
def test_beta_max_gives_exact_zero(loss, model):
    prob = _problem(loss, model, seed=12)
    bm = beta_max(prob)
    # by definition: R°(A* ∇f(0))
    g0 = prob.loss.grad(prob.operator.forward(prob.operator.zeros()))
    assert bm == pytest.approx(float(prob.penalty.dual_norm(prob.operator.adjoint(g0))), rel=1e-14)
    z0 = torch.tensor(np.random.default_rng(12).standard_normal(prob.operator.z_shape))  # start far from 0
    above = FISTA(tol=1e-9, max_iter=5_000).run(prob.with_beta(bm * (1 + 1e-9)), z0=z0)
    assert above.status == "converged"
    assert torch.count_nonzero(above.z) == 0
    assert above.certificate.grad_dual_norm <= bm * (1 + 1e-9)
    at = FISTA(tol=1e-9, max_iter=5_000).run(prob.with_beta(bm), z0=z0)
    assert float(at.z.abs().max()) <= 1e-12
    below = FISTA(tol=1e-8, max_iter=20_000).run(prob.with_beta(0.9 * bm))
    assert below.status == "converged"
    assert torch.count_nonzero(below.z) > 0


def test_solve_path_order_convergence_and_warm_starts():
    prob = _problem("cross_entropy", "mlp", seed=13, frac=1.0)
    bm = beta_max(prob)
    fracs = [0.2, 0.05, 1.2, 0.1, 0.4, 0.02]
    betas = [f * bm for f in fracs]
    solver = FISTA(tol=1e-8, max_iter=20_000)
    path = solve_path(prob, betas, solver)
    assert len(path) == len(betas)
    cold = [solver.run(prob.with_beta(b)) for b in betas]
    for b, r, rc in zip(betas, path, cold, strict=True):
        assert r.status == "converged" and r.certificate.rel_gap <= 1e-8
        # result i belongs to betas[i]: its objective is the cold solve's at that β
        assert r.objective == pytest.approx(rc.objective, rel=1e-7)
        assert r.objective == pytest.approx(prob.with_beta(b).objective(r.z), rel=1e-12)
    assert torch.count_nonzero(path[2].z) == 0  # β > beta_max
    # penalty decreases along β (a property of regularisation paths)
    order = np.argsort(fracs)
    pens = [float(prob.penalty.value(path[i].z)) for i in order]
    assert all(a >= b - 1e-6 * pens[0] for a, b in zip(pens, pens[1:], strict=False))
    # warm starts pay off
    assert sum(r.n_iter for r in path) < sum(r.n_iter for r in cold)


def test_solve_path_verbose_prints_each_beta(capsys: pytest.CaptureFixture[str]) -> None:
    prob = _problem("cross_entropy", "mlp", seed=13, frac=1.0)
    bm = beta_max(prob)
    path = solve_path(prob, [0.5 * bm, 0.2 * bm], FISTA(tol=1e-6), verbose=True, label="head val")
    err = capsys.readouterr().err
    for b, r in zip([0.5 * bm, 0.2 * bm], path, strict=True):
        assert f"head val β={b:.3g}: iteration 0," in err
        assert f"certified gap {r.certificate.rel_gap:.1e} (tol 1e-06)" in err
    solve_path(prob, [0.5 * bm], FISTA(tol=1e-6))
    assert capsys.readouterr().err == ""


def test_solve_path_rejects_bad_betas():
    prob = _problem("squared", "dense")
    with pytest.raises(ValueError, match="betas is empty"):
        solve_path(prob, [])
    with pytest.raises(ValueError, match="every beta must be >= 0"):
        solve_path(prob, [0.1, -0.1])


def test_solve_path_default_solver():
    prob = _problem("squared", "dense", seed=14)
    path = solve_path(prob, [prob.beta, 2 * prob.beta])
    assert [r.status for r in path] == ["converged", "converged"]
    assert path[0].objective < path[1].objective


@pytest.mark.parametrize("cls", [NuclearNormRegressor, ConvexMLPRegressor])
def test_estimator_has_no_hidden_rescaling(cls):
    """Fitting 10·X with 10·β is the substitution V = 10 Z: the same objective and predictions, coef_/10; fitting
    10·X with the same β gives a different (lower) objective. A standardising estimator would fail both."""
    rng = np.random.default_rng(15)
    x = rng.standard_normal((40, 4))
    y = np.c_[np.sin(x[:, 0]), x[:, 1] * x[:, 2]]
    kw = dict(n_gates=8, random_state=0) if cls is ConvexMLPRegressor else {}
    a = cls(beta=0.02, tol=1e-8, max_iter=20_000, **kw).fit(x, y)
    b = cls(beta=0.2, tol=1e-8, max_iter=20_000, **kw).fit(10 * x, y)
    assert b.objective_ == pytest.approx(a.objective_, rel=1e-7)
    np.testing.assert_allclose(b.coef_, a.coef_ / 10, atol=1e-4)
    np.testing.assert_allclose(b.predict(10 * x), a.predict(x), atol=1e-4)
    c = cls(beta=0.02, tol=1e-8, max_iter=20_000, **kw).fit(10 * x, y)
    assert c.objective_ < a.objective_ - 1e-3
    # objective_ is the formula evaluated on the data as given
    if cls is NuclearNormRegressor:
        u, pen = x @ a.coef_, np.linalg.svd(a.coef_, compute_uv=False).sum()
    else:
        masks = (x @ a.gates_ >= 0).astype(float)
        u = sum(masks[:, [j]] * (x @ a.coef_[j]) for j in range(a.coef_.shape[0]))
        pen = sum(np.linalg.svd(zj, compute_uv=False).sum() for zj in a.coef_)
    assert a.objective_ == pytest.approx(0.5 * ((u - y) ** 2).sum() / 40 + 0.02 * pen, rel=1e-10)
