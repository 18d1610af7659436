"""The semismooth Newton solver: its building blocks (prox Jacobians, loss Hessians), its certificates, warm starts,
paths, stopping rules and solver selection. Agreement with cvxpy for every loss × penalty × model is in
test_cvxpy_agreement.py and for every head family in test_head_estimators.py / test_token_lasso.py."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
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
    GroupL2,
    L1Norm,
    LogisticLoss,
    NuclearNorm,
    SquaredLoss,
    beta_max,
    solve_path,
)
from attnduality.convex.penalties import ProxPoint
from attnduality.convex.solvers import AutoSolver, History, SemismoothNewton, make_solver, solver_threads
from attnduality.convex.solvers.newton import NewtonState, _Counted

PENALTIES = [
    (BlockNuclearNorm(), (3, 5, 8)),
    (BlockNuclearNorm(), (3, 8, 5)),
    (BlockNuclearNorm(), (4, 6, 1)),  # vector blocks: the group-ℓ2 path
    (NuclearNorm(), (6, 6)),
    (GroupL2(axes=(1, 2)), (4, 3, 2)),
    (GroupL2(axes=(1,)), (5, 4)),
    (L1Norm(), (5, 4)),
]


@pytest.mark.parametrize("pen,shape", PENALTIES, ids=[f"{type(p).__name__}-{s}" for p, s in PENALTIES])
def test_prox_jacobian_is_the_derivative_and_symmetric_psd(pen, shape):
    gen = torch.Generator().manual_seed(0)
    w = 2.0 * torch.randn(shape, generator=gen, dtype=torch.float64)
    t = 1.5
    jac = pen.prox_jacobian(w, t)
    for _ in range(3):
        h = torch.randn(shape, generator=gen, dtype=torch.float64)
        k = torch.randn(shape, generator=gen, dtype=torch.float64)
        eps = 1e-6
        fd = (pen.prox(w + eps * h, t) - pen.prox(w - eps * h, t)) / (2 * eps)
        assert float((jac(h) - fd).norm()) <= 1e-6 * float(fd.norm()) + 1e-9
        assert float((jac(h) * k).sum()) == pytest.approx(float((jac(k) * h).sum()), rel=1e-10, abs=1e-12)
        quad = float((jac(h) * h).sum())
        assert -1e-12 <= quad <= float((h * h).sum()) * (1 + 1e-12)  # 0 ⪯ J ⪯ I
    # everything below the threshold: the Jacobian vanishes
    small = 1e-3 * w / float(w.abs().max())
    assert float(pen.prox_jacobian(small, t)(torch.ones(shape, dtype=torch.float64)).abs().max()) == 0.0


@pytest.mark.parametrize("pen,shape", PENALTIES, ids=[f"{type(p).__name__}-{s}" for p, s in PENALTIES])
def test_prox_point_is_the_prox_and_its_jacobian_from_one_decomposition(pen, shape, monkeypatch):
    import attnduality.convex.penalties as penalties_module

    gen = torch.Generator().manual_seed(3)
    w = 2.0 * torch.randn(shape, generator=gen, dtype=torch.float64)
    h = torch.randn(shape, generator=gen, dtype=torch.float64)
    calls = []
    thin_svd = penalties_module._thin_svd
    monkeypatch.setattr(penalties_module, "_thin_svd", lambda z: calls.append(z.shape) or thin_svd(z))
    point = pen.prox_point(w, 1.5)
    jh = point.jacobian()(h)
    tangent = point.tangent()
    matrix_blocks = isinstance(pen, NuclearNorm) and min(shape[-2:]) > 1
    assert len(calls) == (1 if matrix_blocks else 0)  # the prox, J and its tangent form share one SVD
    torch.testing.assert_close(point.prox, pen.prox(w, 1.5), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(jh, pen.prox_jacobian(w, 1.5)(h), rtol=1e-12, atol=1e-12)
    expected = pen.tangent_jacobian(w, 1.5)
    assert (tangent is None) == (expected is None) and (expected is not None) == (matrix_blocks and len(shape) == 3)
    if expected is not None:
        assert tangent.index.tolist() == expected.index.tolist()
        torch.testing.assert_close(tangent.apply(h[tangent.index]), expected.apply(h[expected.index]))


def test_cone_penalty_has_no_prox_jacobian():
    x = torch.randn(10, 3, dtype=torch.float64)
    pen = ConeGroupL2(x, torch.ones(10, 2))
    assert not pen.has_prox_jacobian and GroupL2().has_prox_jacobian
    with pytest.raises(NotImplementedError, match="fista"):
        pen.prox_jacobian(torch.zeros(2, 2, 3, 1, dtype=torch.float64), 1.0)


@pytest.mark.parametrize(
    "loss",
    [
        SquaredLoss(torch.randn(7, 3, dtype=torch.float64)),
        CrossEntropyLoss(torch.tensor([0, 2, 1, 1, 0, 2, 2])),
        LogisticLoss(torch.tensor([[1.0], [-1.0], [1.0], [1.0], [-1.0], [-1.0], [1.0]], dtype=torch.float64)),
    ],
    ids=["squared", "cross_entropy", "logistic"],
)
def test_loss_hessian_matches_autograd(loss):
    c = 1 if isinstance(loss, LogisticLoss) else 3
    u = torch.randn(7, c, dtype=torch.float64)
    full = torch.autograd.functional.hessian(lambda v: loss.value(v), u)  # (7, c, 7, c)
    blocks = torch.stack([full[i, :, i, :] for i in range(7)])
    torch.testing.assert_close(loss.hessian(u), blocks, rtol=1e-10, atol=1e-12)
    off = full.clone()
    for i in range(7):
        off[i, :, i, :] = 0
    assert float(off.abs().max()) == 0.0  # separable: nothing off the sample blocks


def _problem(loss: str, c: int, seed: int = 0, frac: float = 0.01, n: int = 60, d: int = 5, p: int = 12):
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.standard_normal((n, d)))
    masks = (x @ torch.tensor(rng.standard_normal((d, p))) >= 0).double()
    if loss == "squared":
        lo = SquaredLoss(torch.tensor(rng.standard_normal((n, c))))
    elif loss == "cross_entropy":
        lo = CrossEntropyLoss(torch.tensor(rng.integers(0, c, n)))
    else:
        lo = LogisticLoss(torch.tensor(np.where(rng.random(n) < 0.5, -1.0, 1.0)[:, None]))
    prob = CompositeProblem(lo, GatedMLPOperator(x, masks, c), BlockNuclearNorm(), 1.0)
    return prob.with_beta(frac * beta_max(prob))


@pytest.mark.parametrize("loss,c", [("squared", 2), ("cross_entropy", 3), ("logistic", 1)])
def test_newton_certified_and_agrees_with_fista_at_small_beta(loss, c):
    prob = _problem(loss, c, frac=1e-3)
    ours = SemismoothNewton(tol=1e-8).run(prob)
    ref = FISTA(tol=1e-8, max_iter=100_000).run(prob)
    assert ours.status == "converged" and ours.certificate.rel_gap <= 1e-8
    assert ours.objective == pytest.approx(ref.objective, rel=1e-7)
    # each certificate bounds the other solver's point: the dual values are lower bounds on the optimum
    assert ours.certificate.dual <= ref.objective * (1 + 1e-12)
    assert ref.certificate.dual <= ours.objective * (1 + 1e-12)
    assert ours.n_iter <= 30  # proximal Newton steps; FISTA takes thousands here
    assert ref.n_iter > 10 * ours.n_iter
    if loss == "squared":
        assert ours.n_iter == 1  # the quadratic model is exact
    h = ours.history
    assert h.n_iter == list(range(len(h.n_iter))) and h.rel_gap[-1] == ours.certificate.rel_gap


def test_newton_warm_start_and_path():
    prob = _problem("cross_entropy", 3, seed=1)
    bmax = beta_max(prob.with_beta(1.0))
    betas = [0.3 * bmax, 0.03 * bmax, 0.003 * bmax]
    path = solve_path(prob, betas, SemismoothNewton(tol=1e-8))
    cold = [SemismoothNewton(tol=1e-8).run(prob.with_beta(b)) for b in betas]
    for p, c in zip(path, cold, strict=True):
        assert p.status == "converged" and c.status == "converged"
        assert p.objective == pytest.approx(c.objective, rel=1e-7)
    # a warm start at the solution is certified at once, without a Newton step
    again = SemismoothNewton(tol=1e-6).run(prob.with_beta(betas[-1]), z0=path[-1].z)
    assert again.status == "converged" and again.n_iter == 0
    with pytest.raises(ValueError, match="shape"):
        SemismoothNewton().run(prob, z0=torch.zeros(2, 2, dtype=torch.float64))


def test_newton_stopping_rules_match_fista():
    prob = _problem("cross_entropy", 3, seed=2, frac=1e-3)
    capped = SemismoothNewton(tol=1e-12, max_iter=1).run(prob)
    assert capped.status == "max_iter" and capped.n_iter == 1
    assert np.isfinite(capped.objective) and capped.certificate.rel_gap > 1e-12
    assert capped.certificate.dual <= capped.objective
    timed = SemismoothNewton(tol=1e-14, max_time=1e-9).run(prob)
    assert timed.status == "max_time" and bool(torch.isfinite(timed.z).all())
    assert timed.objective == pytest.approx(prob.objective(timed.z), rel=1e-12)
    with pytest.raises(ValueError):
        SemismoothNewton(max_cg=0)


def test_estimator_solver_parameter():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((80, 4)), rng.integers(0, 3, 80)
    fits = {
        s: ConvexMLPClassifier(n_gates=6, beta=1e-3, tol=1e-8, max_iter=50_000, random_state=0, solver=s).fit(x, y)
        for s in ("auto", "fista", "newton")
    }
    for s in ("auto", "newton"):
        assert fits[s].status_ == "converged"
        assert fits[s].objective_ == pytest.approx(fits["fista"].objective_, rel=1e-7)
    assert fits["newton"].n_iter_ < fits["fista"].n_iter_ / 10
    # auto: FISTA was slow to certify this one, so Newton finished it, counted after FISTA's 100–300 iterations
    assert 100 < fits["auto"].n_iter_ < 330 and fits["auto"].history_.n_iter[-1] == fits["auto"].n_iter_
    for bad in ("Newton", "ssn", None, 3):
        with pytest.raises(ValueError, match="solver must be one of"):
            ConvexMLPClassifier(solver=bad).fit(x, y)
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        est = ConvexMLPClassifier(n_gates=6, beta=1e-3, max_iter=1, random_state=0, solver="newton").fit(x, y)
    assert est.status_ == "max_iter" and np.isfinite(est.coef_).all()
    # the convex ReLU program has a cone-constrained penalty: auto uses FISTA, newton is refused by name
    xr, yr = rng.standard_normal((30, 3)), rng.standard_normal(30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        relu = ConvexMLPRegressor(activation="relu", n_gates=3, beta=0.05, max_iter=300, random_state=0).fit(xr, yr)
    assert np.isfinite(relu.objective_)
    with pytest.raises(ValueError, match="prox Jacobian"):
        ConvexMLPRegressor(activation="relu", n_gates=3, solver="newton", random_state=0).fit(xr, yr)


def test_auto_solver_switches_once_fista_is_slow():
    easy = _problem("logistic", 1, frac=0.5)
    res = AutoSolver(tol=1e-8).run(easy)
    assert res.status == "converged" and res.n_iter < 100  # FISTA alone
    squared = _problem("squared", 2, frac=1e-2)  # the squared loss: one exact Newton step, no FISTA first
    res = AutoSolver(tol=1e-8).run(squared)
    assert res.status == "converged" and res.n_iter == 1 and res.history.n_iter == [0, 1]
    hard = _problem("cross_entropy", 3, seed=3, frac=1e-3)
    res = AutoSolver(tol=1e-8, switch_iter=50).run(hard)
    ref = SemismoothNewton(tol=1e-8).run(hard)
    assert res.status == "converged" and res.n_iter > 50
    assert res.objective == pytest.approx(ref.objective, rel=1e-7)
    assert res.history.n_iter == sorted(res.history.n_iter) and res.history.time == sorted(res.history.time)
    capped = AutoSolver(tol=1e-14, max_iter=51, switch_iter=50).run(hard)  # 50 FISTA iterations + 1 Newton step
    assert capped.status == "max_iter" and capped.n_iter == 51 and np.isfinite(capped.objective)
    for bad in (dict(tol=-1.0), dict(max_iter=0), dict(switch_iter=0)):
        with pytest.raises(ValueError, match="switch_iter"):
            AutoSolver(**bad)


def test_auto_solver_hands_over_early_when_fista_would_take_long():
    rule = AutoSolver(tol=1e-6)
    slow = History()
    for k in range(0, 101, 10):  # the gap halves every 50 iterations: ~900 more to 1e-6
        slow.append(k, 0.0, 1.0, 1e-1 * 0.5 ** (k / 50))
    assert rule.handoff(slow)
    fast = History()
    for k in range(0, 101, 10):  # 1e-1 → 1e-5 over 100 iterations: 50 more are enough
        fast.append(k, 0.0, 1.0, 1e-1 * 10 ** (-k / 25))
    assert not rule.handoff(fast)
    early = History()
    for k in range(0, 91, 10):
        early.append(k, 0.0, 1.0, 1e-1)
    assert not rule.handoff(early)  # before early_switch
    flat = History()
    for k in range(0, 101, 10):
        flat.append(k, 0.0, 1.0, 1e-1 + 1e-3 * (k % 20))  # no progress of the best gap
    assert rule.handoff(flat)
    assert not AutoSolver(tol=1e-6, early_switch=None).handoff(slow)
    assert AutoSolver(tol=0.0).handoff(fast)  # a zero gap is out of reach at any rate
    unbounded = History()
    for k in range(0, 101, 10):  # no finite dual bound until late: no rate to judge by
        unbounded.append(k, 0.0, 1.0, math.inf if k < 90 else 1e-1)
    assert not rule.handoff(unbounded)
    with pytest.raises(ValueError, match="early_switch"):
        AutoSolver(early_switch=0)
    # FISTA asks the rule at every check; a handover is reported as such and leaves a finite iterate
    res = FISTA(tol=1e-12, max_iter=500, handoff=lambda h: h.n_iter[-1] >= 40).run(_problem("squared", 1))
    assert res.status == "handoff" and res.n_iter == 40
    with pytest.raises(ValueError, match="handoff must be None or a callable"):
        FISTA(handoff=100).run(_problem("squared", 1))  # checked with stall_window, where the solve starts
    # on a problem FISTA is slow on, auto hands over after early_switch FISTA iterations, and certifies the optimum
    hard = _problem("cross_entropy", 3, seed=3, frac=1e-3)
    fista_part = FISTA(tol=1e-8, max_iter=300, handoff=AutoSolver(tol=1e-8).handoff).run(hard)
    assert fista_part.status == "handoff" and 100 <= fista_part.n_iter < 300
    res = AutoSolver(tol=1e-8).run(hard)
    assert res.status == "converged" and res.n_iter < fista_part.n_iter + 30
    assert res.objective == pytest.approx(SemismoothNewton(tol=1e-8).run(hard).objective, rel=1e-7)


def test_make_solver_and_thread_policy():
    prob = _problem("squared", 1)
    assert isinstance(make_solver("auto", prob, 1e-6, 10, None), AutoSolver)
    assert isinstance(make_solver("newton", prob, 1e-6, 10, None), SemismoothNewton)
    assert isinstance(make_solver("fista", prob, 1e-6, 10, None), FISTA)
    with pytest.raises(ValueError, match="solver must be one of"):
        make_solver("lbfgs", prob, 1e-6, 10, None)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with solver_threads(prob):  # a small problem runs on one thread ...
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2  # ... and the caller's setting comes back
    finally:
        torch.set_num_threads(before)


# --- the dual preconditioner of single-output problems ------------------------------------------------------------
@pytest.mark.parametrize("pen", [GroupL2(axes=(1, 2)), BlockNuclearNorm()], ids=["group_l2", "block_nuclear"])
def test_block_jacobian_is_the_prox_jacobian(pen):
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(5, 4, 1, generator=gen, dtype=torch.float64)
    w[1] *= 1e-3  # an inactive block
    t = 0.8
    a, u = pen.block_jacobian(w, t)
    assert a.shape == (5,) and u.shape == w.shape and float(a[1]) == 0.0 and float(u[1].abs().max()) == 0.0
    jac = pen.prox_jacobian(w, t)
    for _ in range(3):
        h = torch.randn(w.shape, generator=gen, dtype=torch.float64)
        ours = a[:, None, None] * h + u * (u * h).sum(dim=(1, 2), keepdim=True)
        torch.testing.assert_close(ours, jac(h), rtol=1e-12, atol=1e-14)


def test_block_jacobian_refuses_other_block_forms():
    w = torch.randn(3, 4, 2, dtype=torch.float64)
    assert BlockNuclearNorm().block_jacobian(w, 0.1) is None  # matrix blocks
    assert GroupL2(axes=(1, 2)).block_jacobian(w, 0.1) is None  # several outputs
    assert GroupL2(axes=(1,)).block_jacobian(w[..., :1], 0.1) is None  # groups are not the leading blocks
    assert L1Norm().block_jacobian(w[..., :1], 0.1) is None


def test_dual_gram_is_a_j_a_adjoint():
    rng = np.random.default_rng(3)
    n, d, p = 12, 4, 5
    x = torch.tensor(rng.standard_normal((n, d)))
    op = GatedMLPOperator(x, (x @ torch.tensor(rng.standard_normal((d, p))) >= 0).double(), 1)
    a = torch.tensor(rng.random(p))
    u = torch.tensor(rng.standard_normal((p, d, 1)))
    k = op.dual_gram(a, u)
    dense = torch.stack(
        [
            op.forward(a[:, None, None] * g + u * (u * g).sum(dim=(1, 2), keepdim=True))[:, 0]
            for g in (op.adjoint(e[:, None]) for e in torch.eye(n, dtype=torch.float64))
        ],
        1,
    )
    torch.testing.assert_close(k, dense, rtol=1e-12, atol=1e-12)
    assert GatedMLPOperator(x, op.masks, 2).dual_gram(a, u) is None  # several outputs: not formed
    with pytest.raises(ValueError, match="dual_gram needs a of shape"):
        op.dual_gram(a[:-1], u)


def test_progress_rule_of_the_inner_tolerance():
    """Near a solution (relative gap below 1e-2) an outer step counts as progress when it lowers the gap and either
    halves it or lowers the objective by a tenth of the last gap; far from it, any lower gap counts. The flat steps
    seen on the linear Mixer at real size (objective equal to 10 digits, gap 1.04e-5 → 1.01e-5) are not progress, so
    SSNAL's tolerance is tightened there; the slow early steps on Fashion-MNIST pixels (gap 0.95 → 0.88) are."""
    from attnduality.convex.certificates import Certificate
    from attnduality.convex.solvers.newton import _progress

    def cert(primal: float, rel_gap: float) -> Certificate:
        return Certificate(primal, primal * (1 - rel_gap), primal * rel_gap, rel_gap, 1.0)

    flat_before, flat_after = cert(0.6006194386, 1.04e-5), cert(0.6006194386 - 1e-12, 1.01e-5)
    assert not _progress(flat_before, flat_after)
    assert _progress(cert(0.6006194386, 1.3e-5), cert(0.6006194386, 4.0e-6))  # the gap fell to a third
    assert _progress(cert(0.60062, 1e-3), cert(0.60052, 9e-4))  # the objective fell by more than a tenth of the gap
    assert _progress(cert(1.4997, 0.95), cert(1.4533, 0.88))  # far away: any decrease
    assert not _progress(cert(0.60, 1e-3), cert(0.60, 2e-3))  # worse
    assert not _progress(cert(2.30, 0.5), cert(0.82, 0.6))  # a higher gap is never progress


# --- the tangent form of the nuclear-norm Jacobian ---------------------------------------------------------------
def _low_rank_blocks(shape: tuple[int, int, int], gen: torch.Generator) -> torch.Tensor:
    """Blocks with a spread of active ranks at threshold 1: 0 (zero and small blocks) up to min(m, n)."""
    p, m, n = shape
    w = 0.2 * torch.randn(shape, generator=gen, dtype=torch.float64)
    for g in range(p):
        rank = g % (min(m, n) + 1)
        w[g] += (
            3.0
            * torch.randn(m, rank, generator=gen, dtype=torch.float64)
            @ torch.randn(rank, n, generator=gen, dtype=torch.float64)
        )
    w[1] = 0.0
    return w


@pytest.mark.parametrize("shape", [(7, 6, 3), (7, 3, 6), (5, 4, 4)], ids=["tall", "wide", "square"])
def test_tangent_jacobian_is_the_prox_jacobian(shape):
    gen = torch.Generator().manual_seed(2)
    w = _low_rank_blocks(shape, gen)
    pen, t = BlockNuclearNorm(), 1.0
    tj = pen.tangent_jacobian(w, t)
    jac = pen.prox_jacobian(w, t)
    s = torch.linalg.svdvals(w)
    assert tj.index.tolist() == [g for g in range(shape[0]) if float(s[g, 0]) > t]  # the zero block is not there
    assert tj.columns.sum(-1).tolist() == (s[tj.index] > t).sum(-1).tolist()
    eye = torch.eye(tj.left.shape[-1], dtype=torch.float64)
    on = tj.columns[:, None, :] & tj.columns[:, :, None]
    torch.testing.assert_close(tj.left.mT @ tj.left, eye * on, rtol=0, atol=1e-12)  # orthonormal, zero padding
    torch.testing.assert_close(tj.right.mT @ tj.right, eye * on, rtol=0, atol=1e-12)
    for _ in range(3):
        h = torch.randn(shape, generator=gen, dtype=torch.float64)
        full = jac(h)
        sub = h[tj.index]
        projected = tj.to_tangent(sub.mT @ tj.left, sub @ tj.right)
        ours = tj.apply(projected)  # J only sees the tangent projection of H ...
        torch.testing.assert_close(ours, full[tj.index], rtol=1e-10, atol=1e-12)
        assert float(full[[g for g in range(shape[0]) if g not in tj.index.tolist()]].abs().max()) == 0.0
        torch.testing.assert_close(tj.to_tangent(*tj.from_tangent(ours)), ours, rtol=1e-10, atol=1e-12)  # ... in T
        # on the factors alone, without a (k, m, n) block: the same J H, also for a batch of right-hand sides
        c, d = tj.apply_factors(sub.mT @ tj.left, sub @ tj.right)
        torch.testing.assert_close(tj.left @ c.mT + d @ tj.right.mT, ours, rtol=1e-10, atol=1e-12)
        both = torch.stack([sub, 2.0 * sub])
        cb, db = tj.apply_factors(both.mT @ tj.left, both @ tj.right)
        torch.testing.assert_close(tj.left @ cb.mT + db @ tj.right.mT, torch.stack([ours, 2.0 * ours]))


def test_tangent_jacobian_refuses_other_forms():
    w = torch.randn(3, 4, 1, dtype=torch.float64)
    assert BlockNuclearNorm().tangent_jacobian(w, 0.1) is None  # vector blocks: the group-ℓ2 Jacobian
    assert NuclearNorm().tangent_jacobian(w[0], 0.1) is None  # one matrix, no leading blocks
    assert GroupL2(axes=(1, 2)).tangent_jacobian(w, 0.1) is None
    w = torch.randn(3, 4, 2, dtype=torch.float64)
    w[0, 0, 0] = float("nan")
    assert BlockNuclearNorm().tangent_jacobian(w, 0.1) is None  # a non-finite block: the full Jacobian decides


def test_gated_mlp_tangent_map_is_a_j_a_adjoint():
    rng = np.random.default_rng(4)
    gen = torch.Generator().manual_seed(4)
    n, d, p, c = 40, 6, 9, 3
    x = torch.tensor(rng.standard_normal((n, d)))
    op = GatedMLPOperator(x, (x @ torch.tensor(rng.standard_normal((d, p))) >= 0).double(), c)
    pen = BlockNuclearNorm()
    w = _low_rank_blocks((p, d, c), gen)
    w[4:] *= 0.01  # few active blocks: the tangent form pays
    tj = pen.tangent_jacobian(w, 1.0)
    tm = op.tangent_map(tj)
    assert tm is not None and 0 < len(tj.index) < p
    jac = pen.prox_jacobian(w, 1.0)
    y = torch.randn(n, c, generator=gen, dtype=torch.float64)
    hl, hr = tm.project(y)
    full = op.adjoint(y)[tj.index]
    torch.testing.assert_close(hl, full.mT @ tj.left, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(hr, full @ tj.right, rtol=1e-12, atol=1e-12)
    ours = tm.lift(*tj.from_tangent(tj.apply(tj.to_tangent(hl, hr))))
    torch.testing.assert_close(ours, op.forward(jac(op.adjoint(y))), rtol=1e-10, atol=1e-12)
    cl = torch.randn(hl.shape, generator=gen, dtype=torch.float64) * tj.columns[:, None, :]
    cr = torch.randn(hr.shape, generator=gen, dtype=torch.float64) * tj.columns[:, None, :]
    assert float((tm.lift(cl, cr) * y).sum()) == pytest.approx(float((cl * hl).sum() + (cr * hr).sum()), rel=1e-12)
    torch.testing.assert_close(tm.lift(cl, None), tm.lift(cl, torch.zeros_like(cr)), rtol=1e-12, atol=1e-14)
    # the solver's image of P = prox(W) through the same tangent map (P's active blocks are L (PᵀL)ᵀ)
    prob = CompositeProblem(CrossEntropyLoss(torch.zeros(n, dtype=torch.long)), op, pen, 1.0)
    state = NewtonState(z=w, u=op.forward(w))
    ops = _Counted(prob, None, state)
    product, image = ops.linearize(pen.prox_point(w, 1.0))
    torch.testing.assert_close(image(pen.prox(w, 1.0)), op.forward(pen.prox(w, 1.0)), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(product(y), op.forward(jac(op.adjoint(y))), rtol=1e-10, atol=1e-12)
    assert state.n_tangent == 2 and state.n_products == 0
    wrong = pen.tangent_jacobian(_low_rank_blocks((p, d + 1, c), gen), 1.0)
    with pytest.raises(ValueError, match="tangent_map needs blocks of shape"):
        op.tangent_map(wrong)
    dense = _low_rank_blocks((p, d, c), gen)  # every block active at full rank: no saving, no tangent map
    assert op.tangent_map(pen.tangent_jacobian(dense + 5.0 * torch.eye(d, c, dtype=torch.float64), 1.0)) is None


def test_newton_with_tangent_products_same_steps(monkeypatch):
    """The tangent products change the arithmetic, not the method: same steps, same optimum, and they replace most
    full products on a multi-output problem with low-rank blocks."""
    from sklearn.datasets import load_digits

    import attnduality.convex.operators.mlp as mlp_mod

    digits = load_digits()  # real images: few active blocks of rank 1–3 (random labels would need full rank)
    x = torch.tensor(digits.data[:300] / 16.0)
    masks = (x @ torch.tensor(np.random.default_rng(0).standard_normal((64, 16))) >= 0).double()
    lo = CrossEntropyLoss(torch.tensor(digits.target[:300]))
    prob = CompositeProblem(lo, GatedMLPOperator(x, masks, 10), BlockNuclearNorm(), 1.0)
    prob = prob.with_beta(3e-2 * beta_max(prob))

    def solve() -> tuple:
        seen = {}
        res = SemismoothNewton(tol=1e-8).run(
            prob, callback=lambda s, _c: seen.update(prod=s.n_products, tan=s.n_tangent)
        )
        return res, seen

    tangent, tangent_counts = solve()
    monkeypatch.setattr(mlp_mod, "_TANGENT_GAIN", 0.0)  # never pays: full products only
    full, full_counts = solve()
    assert tangent.status == full.status == "converged"
    assert tangent.n_iter == full.n_iter
    assert tangent.objective == pytest.approx(full.objective, rel=1e-8)
    assert full_counts["tan"] == 0 and tangent_counts["tan"] > 0
    assert tangent_counts["prod"] < 0.3 * full_counts["prod"]


@pytest.mark.parametrize("p,kept", [(3, [0, 2]), (20, [1, 4, 7, 19]), (20, [1, 4, 7, 9, 11, 13, 15, 19]), (20, [])])
@pytest.mark.parametrize("c", [1, 3])
def test_gated_mlp_restrict_is_the_operator_on_the_kept_blocks(p, kept, c):
    """Both code paths (fewer gates than features, and more) on each side; the original operator is left as it was."""
    rng = np.random.default_rng(5)
    n, d = 30, 6
    x = torch.tensor(rng.standard_normal((n, d)))
    masks = (x @ torch.tensor(rng.standard_normal((d, p))) >= 0).double()
    op = GatedMLPOperator(x, masks, c)
    index = torch.tensor(kept, dtype=torch.long)
    z = torch.tensor(rng.standard_normal((len(kept), d, c)))
    g = torch.tensor(rng.standard_normal((n, c)))
    full = op.zeros()
    full[index] = z
    before = op.adjoint(g)
    sub = op.restrict(index)
    assert sub.z_shape == (len(kept), d, c) and op.z_shape == (p, d, c)
    torch.testing.assert_close(sub.forward(z), op.forward(full), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(sub.adjoint(g), before[index], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(op.adjoint(g), before, rtol=0, atol=0)
    for bad in (torch.tensor([p]), torch.tensor([[0]]), torch.tensor([0.0])):
        with pytest.raises(ValueError, match="restrict needs a 1-D integer index"):
            op.restrict(bad)


@pytest.mark.parametrize(
    "pen,shape",
    [(GroupL2(axes=(1, 2)), (6, 4, 1)), (BlockNuclearNorm(), (6, 4, 1)), (BlockNuclearNorm(), (6, 5, 3))],
    ids=["group-l2", "nuclear-vector-blocks", "nuclear-matrix-blocks"],
)
def test_active_blocks_and_the_jacobian_restricted_to_them(pen, shape):
    gen = torch.Generator().manual_seed(6)
    w = 3.0 * torch.randn(shape, generator=gen, dtype=torch.float64)
    w[[1, 4]] *= 1e-3  # below the threshold: the prox and J vanish there
    point = pen.prox_point(w, 1.0)
    index = point.active_blocks()
    assert index.tolist() == pen.active_blocks(w, 1.0).tolist() == [0, 2, 3, 5]
    assert float(point.prox[[1, 4]].abs().max()) == 0.0
    h = torch.randn(shape, generator=gen, dtype=torch.float64)
    full = point.jacobian()(h)
    assert float(full[[1, 4]].abs().max()) == 0.0
    torch.testing.assert_close(point.jacobian(index)(h[index]), full[index], rtol=1e-12, atol=1e-12)
    assert GroupL2(axes=(2,)).active_blocks(w, 1.0) is None  # groups that are not the leading blocks
    broken = w.clone()
    broken[3, 0, 0] = float("nan")  # a non-finite block: no restriction, the full products decide
    assert pen.active_blocks(broken, 1.0) is None and pen.prox_point(broken, 1.0).active_blocks() is None
    # no active block at all: the solver's products through the restricted operator are zero, not an error
    x = torch.randn(20, shape[1], generator=gen, dtype=torch.float64)
    op = GatedMLPOperator(
        x, (x @ torch.randn(shape[1], shape[0], generator=gen, dtype=torch.float64) >= 0).double(), shape[2]
    )
    prob = CompositeProblem(SquaredLoss(torch.zeros(20, shape[2], dtype=torch.float64)), op, pen, 1.0)
    ops = _Counted(prob, None, NewtonState(z=w, u=op.forward(w)))
    quiet = pen.prox_point(1e-3 * w, 1.0)
    assert len(quiet.active_blocks()) == 0
    product, image = ops.linearize(quiet)
    y = torch.randn(20, shape[2], generator=gen, dtype=torch.float64)
    assert float(product(y).abs().max()) == 0.0 and float(image(quiet.prox).abs().max()) == 0.0
    # matrix blocks go through the (empty) tangent map, group-ℓ2 and vector blocks through the restricted operator
    assert (ops.state.n_tangent, ops.state.n_restricted) == ((2, 0) if shape[2] > 1 else (0, 2))
    assert NuclearNorm().active_blocks(w[0], 1.0) is None and L1Norm().active_blocks(w, 1.0) is None


def test_newton_on_the_active_blocks_same_steps(monkeypatch):
    """Products on the active groups alone change the arithmetic, not the method: same steps, same optimum."""
    import attnduality.convex.solvers.newton as newton_mod

    prob = _problem("squared", 1, seed=3, frac=0.3, n=200, d=8, p=40)  # 25 of 40 groups active at the optimum
    prob = CompositeProblem(prob.loss, prob.operator, GroupL2(axes=(1, 2)), prob.beta)

    def solve() -> tuple:
        seen = {}
        res = SemismoothNewton(tol=1e-9).run(prob, callback=lambda s, _c: seen.update(sub=s.n_restricted))
        return res, seen

    restricted, restricted_counts = solve()
    monkeypatch.setattr(newton_mod, "_RESTRICT_SHARE", -1.0)  # never: full products
    full, full_counts = solve()
    assert restricted.status == full.status == "converged" and restricted.n_iter == full.n_iter
    assert restricted.objective == pytest.approx(full.objective, rel=1e-9)
    assert restricted_counts["sub"] > 0 and full_counts["sub"] == 0
    assert int((restricted.z.flatten(1).norm(dim=1) > 0).sum()) < 0.75 * 40  # few groups active: the case it serves


@pytest.mark.parametrize("loss", ["squared", "logistic"])
def test_preconditioned_newton_same_optimum_fewer_cg(loss, monkeypatch):
    import attnduality.convex.solvers.newton as newton_mod

    rng = np.random.default_rng(0)
    n, d, p = 300, 20, 60  # a build costs about 16 operator products here: affordable
    x = torch.tensor(rng.standard_normal((n, d)))
    masks = (x @ torch.tensor(rng.standard_normal((d, p))) >= 0).double()
    if loss == "squared":
        lo = SquaredLoss(torch.tensor(rng.standard_normal((n, 1))))
    else:
        signs = np.where(x[:, 0].numpy() + 0.5 * rng.standard_normal(n) > 0, 1.0, -1.0)
        lo = LogisticLoss(torch.tensor(signs[:, None]))
    prob = CompositeProblem(lo, GatedMLPOperator(x, masks, 1), GroupL2(axes=(1, 2)), 1.0)
    prob = prob.with_beta(1e-3 * beta_max(prob))

    def solve() -> tuple:
        seen = {}
        res = SemismoothNewton(tol=1e-9).run(prob, callback=lambda s, _c: seen.update(cg=s.n_cg, pre=s.n_precond))
        return res, seen

    pre, pre_counts = solve()
    monkeypatch.setattr(newton_mod, "_PRECOND_MAX_COST", 0)  # no build is affordable: plain CG
    plain, plain_counts = solve()
    assert pre.status == plain.status == "converged"
    assert pre.objective == pytest.approx(plain.objective, rel=1e-9)
    assert pre_counts["pre"] >= 1 and plain_counts["pre"] == 0
    assert pre_counts["cg"] < 0.5 * plain_counts["cg"]


def test_nystrom_preconditioned_newton_several_outputs(monkeypatch):
    import attnduality.convex.solvers.newton as newton_mod

    prob = _problem("cross_entropy", 4, frac=3e-3, n=200, d=12, p=16)

    def solve() -> tuple:
        seen = {}
        res = SemismoothNewton(tol=1e-9).run(prob, callback=lambda s, _c: seen.update(cg=s.n_cg, pre=s.n_precond))
        return res, seen

    monkeypatch.setattr(newton_mod, "_NYSTROM_LIMIT", 10)  # sketch early: this problem is small
    pre, pre_counts = solve()
    monkeypatch.setattr(newton_mod, "_NYSTROM_MAX_BYTES", 0)  # no sketch fits: plain CG
    plain, plain_counts = solve()
    assert pre.status == plain.status == "converged"
    assert pre.objective == pytest.approx(plain.objective, rel=1e-9)
    assert pre_counts["pre"] >= 1 and plain_counts["pre"] == 0
    assert pre_counts["cg"] < 0.7 * plain_counts["cg"]


def test_softmax_near_a_fit_does_not_stall_newton():
    """Channel-normalised pooled Fashion-MNIST pixels (1,000 images, 49 channels), nuclear-norm multinomial logistic
    at 1e-2·β_max: far from separable classes leave the softmax Hessian nearly flat, ``½‖S⁻¹∇f‖²`` dominates the
    inner objective, and an inner tolerance relative to it let SSNAL stop at once while σ shrank step after step.
    Newton must certify by its own steps (before the fix: 148 iterations, 134 of them FISTA's after a stall)."""
    import os

    from attnduality.convex import NuclearNormClassifier
    from attnduality.data import MissingDataError, load_fashion_mnist

    try:
        ds = load_fashion_mnist()
    except MissingDataError as e:
        if os.environ.get("ATTNDUALITY_REQUIRE_DATA") == "1":
            raise
        pytest.skip(f"{e} (ATTNDUALITY_REQUIRE_DATA=1 makes this a failure)")
    n = 1000
    x = ds.X_train[:n].reshape(n, 7, 4, 7, 4).mean((2, 4)).reshape(n, 49) / 255.0
    x = x / np.sqrt((x**2).mean(0))
    y = ds.y_train[:n]
    beta = 1e-2 * NuclearNormClassifier(beta=1.0).beta_max(x, y)
    newton = NuclearNormClassifier(beta=beta, tol=1e-4, solver="newton").fit(x, y)
    assert newton.status_ == "converged" and newton.n_iter_ <= 20
    fista = NuclearNormClassifier(beta=beta, tol=1e-7, solver="fista", max_iter=20_000).fit(x, y)
    assert newton.objective_ == pytest.approx(fista.objective_, rel=1e-4)
    assert newton.certificate_.dual <= fista.objective_ * (1 + 1e-12)


def _digits_problem(scale: float = 1.0, n: int = 300, gates: int = 16) -> CompositeProblem:
    """Cross-entropy on real digits with block nuclear norms: few active blocks of low rank, the tangent products'
    regime."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.data[:n] / 16.0)
    masks = (x @ torch.tensor(np.random.default_rng(0).standard_normal((64, gates))) >= 0).double()
    prob = CompositeProblem(
        CrossEntropyLoss(torch.tensor(digits.target[:n])),
        GatedMLPOperator(scale * x, masks, 10),
        BlockNuclearNorm(),
        1.0,
    )
    return prob.with_beta(3e-2 * beta_max(prob))


def test_tangent_products_in_float32_are_the_float64_products_rounded():
    prob = _digits_problem()
    op, pen = prob.operator, prob.penalty
    gen = torch.Generator().manual_seed(1)
    w = op.adjoint(torch.randn(op.n_samples, 10, generator=gen, dtype=torch.float64))
    t = 0.5 * float(torch.linalg.matrix_norm(w, ord=2).max())  # a few active blocks and singular pairs
    point = pen.prox_point(w, t)
    jac64, jac32 = point.tangent(), point.tangent(torch.float32)
    assert jac32 is not None and jac32.left.dtype == jac32.right.dtype == torch.float32
    assert torch.equal(jac32.index, jac64.index) and torch.equal(jac32.columns, jac64.columns)  # decided in float64
    assert ProxPoint(pen, w, t).tangent(torch.float32) is None  # the generic point has no lower-precision form
    s = prob.loss.hessian_factor(op.forward(w), 1e-3)
    y = torch.randn(op.n_samples, 10, generator=gen, dtype=torch.float64)
    exact = s.apply(op.forward(pen.prox_jacobian(w, t)(op.adjoint(s.apply_t(y)))))
    for low, rtol in ((None, 1e-10), (torch.float32, 1e-5)):
        state = NewtonState(z=w, u=op.forward(w), product_dtype=low)
        product, _image = _Counted(prob, s, state).linearize(point)
        out = product(y)
        assert out.dtype == torch.float64 and state.n_tangent == 1
        torch.testing.assert_close(out, exact, rtol=rtol, atol=rtol * float(exact.abs().max()))
        if low is not None:
            assert not torch.equal(out, exact)  # the float32 path did run
    assert GatedMLPOperator(1e39 * op.x, op.masks, 10).astype(torch.float32) is None  # beyond float32's range
    assert op.astype(torch.float32) is op.astype(torch.float32) and op.astype(torch.float64) is op


def test_newton_mixed_precision_same_optimum():
    """CG products in float32 (the default for a float64 problem) change the arithmetic of the inner systems only:
    the solve is certified in float64, to the optimum of the float64 products."""
    prob = _digits_problem()

    def solve(mixed: bool) -> tuple:
        seen = {}
        res = SemismoothNewton(tol=1e-8, mixed_precision=mixed).run(
            prob, callback=lambda s, _c: seen.update(low=s.product_dtype, tan=s.n_tangent)
        )
        return res, seen

    (mixed, mixed_seen), (full, full_seen) = solve(True), solve(False)
    assert mixed.status == full.status == "converged" and mixed.certificate.rel_gap <= 1e-8
    assert mixed.objective == pytest.approx(full.objective, rel=1e-8)
    assert mixed.certificate.dual <= full.objective * (1 + 1e-12)
    assert mixed_seen["low"] == torch.float32 and mixed_seen["tan"] > 0  # float32 all the way
    assert full_seen["low"] is None
    assert mixed.n_iter <= full.n_iter + 1


def test_newton_mixed_precision_falls_back_where_float32_overflows():
    """Data at 1e20: the float32 products overflow (their squares exceed float32's range) and the solver goes on in
    float64, to the optimum of the same problem at scale 1 (the solution scales by 1e-20, β by 1e20)."""
    scaled, plain = _digits_problem(scale=1e20), _digits_problem()
    seen = {}
    res = SemismoothNewton(tol=1e-8).run(scaled, callback=lambda s, _c: seen.update(low=s.product_dtype))
    ref = SemismoothNewton(tol=1e-8, mixed_precision=False).run(plain)
    assert res.status == "converged" and res.certificate.rel_gap <= 1e-8
    assert seen["low"] is None  # fell back
    assert res.objective == pytest.approx(ref.objective, rel=1e-7)


def test_auto_solver_warm_up_in_float32():
    """auto's FISTA iterations before Newton run in float32 for a float64 problem; only float64 certificates end the
    solve, and the result is that of the float64 solve."""
    prob = _digits_problem()

    def solve(mixed: bool, p: CompositeProblem = prob, **kw) -> tuple:
        dtypes = []

        def record(state: object, _cert: object) -> None:
            dtypes.append("newton" if isinstance(state, NewtonState) else state.z.dtype)

        res = AutoSolver(tol=1e-8, mixed_precision=mixed, **kw).run(p, callback=record)
        return res, dtypes

    (mixed, seen), (full, seen_full) = solve(True), solve(False)
    assert mixed.status == full.status == "converged" and mixed.certificate.rel_gap <= 1e-8
    assert mixed.z.dtype == torch.float64 and mixed.objective == pytest.approx(full.objective, rel=1e-8)
    assert mixed.objective == pytest.approx(prob.objective(mixed.z), rel=1e-12)
    assert set(seen_full) == {torch.float64, "newton"} and set(seen) == {torch.float32, "newton"}
    assert seen.index("newton") >= 10 and set(seen[: seen.index("newton")]) == {torch.float32}
    h = mixed.history
    assert h.n_iter == sorted(h.n_iter) and h.time == sorted(h.time) and h.rel_gap[-1] == mixed.certificate.rel_gap
    # a problem FISTA certifies in tens of iterations: float32 down to a gap of 1e-4, then FISTA in float64 from
    # there (not Newton), certified in float64
    easy = _problem("logistic", 1, frac=0.5)
    res, seen = solve(True, easy)
    assert res.status == "converged" and res.n_iter < 100 and res.certificate.rel_gap <= 1e-8
    assert seen[0] == torch.float32 and seen[-1] == torch.float64 and "newton" not in seen
    assert res.objective == pytest.approx(FISTA(tol=1e-10, max_iter=10_000).run(easy).objective, rel=1e-8)
    # a warm start already past float32's range (a neighbouring solution) is not rounded through float32: FISTA's
    # checks are those of the float64 solve
    warm = [AutoSolver(tol=1e-10, mixed_precision=m).run(prob, z0=mixed.z) for m in (True, False)]
    assert warm[0].status == "converged" and warm[0].n_iter == warm[1].n_iter
    assert warm[0].history.rel_gap[:5] == warm[1].history.rel_gap[:5]
    assert warm[0].objective == pytest.approx(warm[1].objective, rel=1e-10)
    # stopped by max_iter inside the float32 phase: the best point in float64, certified there
    short, _ = solve(True, prob, switch_iter=300, max_iter=5)
    assert short.status == "max_iter" and short.z.dtype == torch.float64 and short.n_iter == 5
    assert short.objective == pytest.approx(prob.objective(short.z), rel=1e-12)
    assert short.certificate.rel_gap == pytest.approx(prob.certificate(short.z).rel_gap, rel=1e-9)


def test_problem_astype():
    prob = _digits_problem()
    low = prob.astype(torch.float32)
    assert low is not None and low.operator.dtype == torch.float32 and low.beta == prob.beta
    assert low.loss.y.dtype == torch.long and prob.astype(torch.float64) is prob
    z = prob.operator.adjoint(prob.loss.grad(prob.operator.forward(prob.operator.zeros())))
    assert float(low.objective(z.float())) == pytest.approx(prob.objective(z), rel=1e-5)
    sq = _problem("squared", 2)
    assert sq.astype(torch.float32).loss.y.dtype == torch.float32
    x = sq.operator.x
    cone = CompositeProblem(sq.loss, sq.operator, ConeGroupL2(x, sq.operator.masks), 1.0)
    assert cone.astype(torch.float32) is None  # the cone penalty holds the data: no float32 form here
    for convert in (prob.astype, prob.loss.astype, prob.operator.astype):
        with pytest.raises(ValueError, match="floating-point dtype"):
            convert(torch.int64)
