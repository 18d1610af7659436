"""The factored (Burer–Monteiro) solver: same optimum and certificate as FISTA, Krylov spectral norms, rank escape,
honest statuses; and its pieces: low-rank factor algebra, the factored certificate, the L-BFGS recursion and line
searches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from attnduality.convex import (
    FISTA,
    BlockNuclearNorm,
    CompositeProblem,
    CrossEntropyLoss,
    DenseOperator,
    FactoredSolver,
    GatedMLPOperator,
    GroupL2,
    NuclearNorm,
    SquaredLoss,
    beta_max,
    duality_gap,
    gate_masks,
    sample_gates,
)
from attnduality.convex.linalg import (
    balanced_factors,
    factor_svd,
    span_distance,
    spectral_norm_power,
    top_singular_pairs,
)
from attnduality.convex.operators.attention import LinearAttentionOperator
from attnduality.convex.solvers.lbfgs import convex_line_search, strong_wolfe_search, two_loop, update_memory
from attnduality.convex.solvers.lowrank_certificate import factored_certificate, factored_nuclear_norm

F64 = torch.float64


def _loss(rng: np.random.Generator, kind: str, n: int, c: int, dtype=F64):
    if kind == "squared":
        return SquaredLoss(torch.tensor(rng.standard_normal((n, c)), dtype=dtype))
    return CrossEntropyLoss(torch.tensor(rng.integers(0, c, n)))


def _dense(kind: str = "squared", frac: float = 0.1, seed: int = 0, dtype=F64) -> CompositeProblem:
    """Nuclear-norm linear model: N = 200, d = 20, c = 10."""
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.standard_normal((200, 20)), dtype=dtype)
    prob = CompositeProblem(_loss(rng, kind, 200, 10, dtype), DenseOperator(x, 10), NuclearNorm(), 1.0)
    return prob.with_beta(frac * beta_max(prob))


def _gated(kind: str = "squared", frac: float = 0.1, seed: int = 0) -> CompositeProblem:
    """Gated-ReLU MLP, P = 5 patterns, d = 10, c = 4 (block nuclear norm)."""
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.standard_normal((200, 10)), dtype=F64)
    op = GatedMLPOperator(x, gate_masks(x, sample_gates(10, 5, seed)), 4)
    prob = CompositeProblem(_loss(rng, kind, 200, 4), op, BlockNuclearNorm(), 1.0)
    return prob.with_beta(frac * beta_max(prob))


def _attention(kind: str = "squared", frac: float = 0.1, seed: int = 0) -> CompositeProblem:
    """Linear self-attention with GAP, N = 100, s = 4, d = 3, c = 2: Z is (9, 6)."""
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.standard_normal((100, 4, 3)), dtype=F64)
    prob = CompositeProblem(_loss(rng, kind, 100, 2), LinearAttentionOperator(x, 2), NuclearNorm(), 1.0)
    return prob.with_beta(frac * beta_max(prob))


MAKERS = {"dense": _dense, "gated": _gated, "attention": _attention}


@pytest.mark.parametrize("model", sorted(MAKERS))
@pytest.mark.parametrize("kind", ["squared", "cross_entropy"])
@pytest.mark.parametrize("frac", [0.1, 0.3])
def test_same_optimum_as_fista(model: str, kind: str, frac: float) -> None:
    prob = MAKERS[model](kind, frac)
    exact = FISTA(tol=1e-8, max_iter=50_000).run(prob)
    assert exact.converged
    res = FactoredSolver(tol=1e-8).run(prob)
    assert res.converged, res.status
    assert res.certificate.rel_gap <= 1e-6
    assert abs(res.objective - exact.objective) <= 1e-6 * abs(exact.objective)
    # the reported objective is the convex objective of the returned Z, evaluated exactly
    assert math.isclose(prob.objective(res.z), res.objective, rel_tol=1e-10)
    # the two lower bounds certify each other's primal values
    assert res.objective >= exact.certificate.dual - 1e-12 * abs(exact.objective)
    assert exact.objective >= res.certificate.dual - 1e-12 * abs(exact.objective)
    # same rank as the exact solution
    sv = torch.linalg.svdvals(exact.z.reshape(-1, *exact.z.shape[-2:]))
    exact_rank = int((sv > 1e-6 * sv.max()).sum(-1).max())
    assert res.rank == exact_rank


def test_certificate_equals_exact_formula() -> None:
    """At the factored solution, the Krylov / r×r-core certificate equals the SVD-based duality_gap."""
    for prob in (_dense("cross_entropy"), _gated("squared")):
        res = FactoredSolver(tol=1e-8).run(prob)
        ref = duality_gap(prob, res.z, prob.operator.forward(res.z))
        cert = res.certificate
        assert math.isclose(cert.primal, ref.primal, rel_tol=1e-10)
        assert math.isclose(cert.dual, ref.dual, rel_tol=1e-9)
        assert math.isclose(cert.grad_dual_norm, ref.grad_dual_norm, rel_tol=1e-8)
        assert abs(cert.rel_gap - ref.rel_gap) <= 1e-9


@pytest.mark.parametrize(
    "shape", [(60, 40), (200, 100), (100, 250), (3, 120, 90), (2, 2, 70, 50), (7, 5), (300, 1), (900, 300)]
)
def test_spectral_norm_power_matches_svd(shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(sum(shape))
    w = torch.randn(*shape, generator=gen, dtype=F64)
    est = spectral_norm_power(w)
    ref = torch.linalg.matrix_norm(w, ord=2)
    assert est.shape == ref.shape
    assert float(((est - ref).abs() / ref).max()) <= 1e-8


def test_spectral_norm_power_hard_spectra() -> None:
    """Clustered top singular values (as at an optimum: σ_1 = … = σ_r = β), low rank, zero matrix."""
    gen = torch.Generator().manual_seed(1)
    q1 = torch.linalg.qr(torch.randn(400, 60, generator=gen, dtype=F64)).Q
    q2 = torch.linalg.qr(torch.randn(150, 60, generator=gen, dtype=F64)).Q
    s = torch.cat([torch.full((5,), 2.0, dtype=F64), torch.linspace(1.999, 0.1, 55, dtype=F64)])
    w = (q1 * s) @ q2.T
    assert abs(float(spectral_norm_power(w)) - 2.0) <= 1e-8 * 2.0
    low = torch.randn(300, 3, generator=gen, dtype=F64) @ torch.randn(3, 200, generator=gen, dtype=F64)
    ref = float(torch.linalg.matrix_norm(low, ord=2))
    assert abs(float(spectral_norm_power(low)) - ref) <= 1e-8 * ref
    assert float(spectral_norm_power(torch.zeros(50, 40, dtype=F64))) == 0.0
    sig, left, right = top_singular_pairs(w, 3)
    assert torch.allclose(w @ right, left * sig.unsqueeze(-2), atol=1e-7)
    wide = torch.randn(3, 60, 140, generator=gen, dtype=F64)  # the Gram operator acts on the left side; v0 on the right
    v0 = torch.randn(3, 140, 2, generator=gen, dtype=F64)
    ref = torch.linalg.matrix_norm(wide, ord=2)
    assert float(((spectral_norm_power(wide, v0=v0) - ref).abs() / ref).max()) <= 1e-8
    f32 = torch.randn(200, 80, generator=gen)
    ref32 = torch.linalg.matrix_norm(f32.double(), ord=2)
    assert float(abs(spectral_norm_power(f32).double() - ref32) / ref32) <= 1e-5


def test_rank_escape_from_rank_one() -> None:
    prob = _dense("squared", 0.1)
    exact = FISTA(tol=1e-8, max_iter=50_000).run(prob)
    sv = torch.linalg.svdvals(exact.z)
    exact_rank = int((sv > 1e-6 * sv.max()).sum())
    assert exact_rank >= 3
    res = FactoredSolver(tol=1e-8, escape_pairs=1).run(prob, rank=1)
    assert res.converged
    assert res.n_escapes >= 2
    assert res.rank == exact_rank
    assert abs(res.objective - exact.objective) <= 1e-6 * abs(exact.objective)
    # factors are returned balanced, in SVD form
    assert torch.allclose(res.left.mT @ res.left, res.right.mT @ res.right, atol=1e-8)


def test_rank_deficient_factorization_is_not_certified() -> None:
    """Capped at rank 1 on a problem whose optimum has rank ≥ 3, the solver stops at a rank-1 stationary point and
    the certificate says so (σ_max(A*∇f) > β)."""
    prob = _dense("squared", 0.1)
    res = FactoredSolver(tol=1e-8, max_rank=1, max_iter=2_000).run(prob)
    assert res.status in ("stalled", "max_iter")
    assert res.left.shape[-1] == 1
    assert res.certificate.rel_gap > 1e-3
    assert res.certificate.grad_dual_norm > 1.01 * prob.beta


def test_max_iter_reported_honestly() -> None:
    prob = _dense("cross_entropy", 0.1)
    res = FactoredSolver(tol=1e-10, max_iter=3).run(prob)
    assert res.status == "max_iter"
    assert not res.converged
    assert res.n_iter == 3
    assert res.certificate.rel_gap > 1e-10
    for v in (res.objective, res.certificate.dual, res.certificate.gap, res.certificate.rel_gap):
        assert math.isfinite(v)
    assert bool(torch.isfinite(res.z).all())
    assert len(res.history.n_iter) >= 1


def test_max_time() -> None:
    res = FactoredSolver(tol=0.0, max_time=0.0, max_iter=10_000).run(_gated("squared"))
    assert res.status == "max_time"


def test_zero_is_optimal_above_beta_max() -> None:
    prob = _dense("squared", 1.0)
    prob = prob.with_beta(1.01 * prob.beta)
    res = FactoredSolver().run(prob)
    assert res.converged
    assert res.rank == 0
    assert float(res.z.abs().max()) == 0.0


def test_float32() -> None:
    prob32 = _dense("squared", 0.1, dtype=torch.float32)
    ref = FactoredSolver(tol=1e-8).run(_dense("squared", 0.1))
    res = FactoredSolver(tol=1e-5).run(prob32)
    assert res.z.dtype == torch.float32
    assert res.status in ("converged", "stalled")
    assert math.isfinite(res.objective) and math.isfinite(res.certificate.rel_gap)
    assert abs(res.objective - ref.objective) <= 1e-4 * abs(ref.objective)


def test_warm_start_from_factors() -> None:
    prob = _gated("cross_entropy", 0.1)
    first = FactoredSolver(tol=1e-8).run(prob)
    again = FactoredSolver(tol=1e-8).run(prob, factors=(first.left, first.right))
    assert again.converged
    assert again.n_iter <= 10
    assert abs(again.objective - first.objective) <= 1e-8 * abs(first.objective)


def test_vector_blocks_and_penalty_check() -> None:
    rng = np.random.default_rng(3)
    x = torch.tensor(rng.standard_normal((80, 6)), dtype=F64)
    op = GatedMLPOperator(x, gate_masks(x, sample_gates(6, 4, 3)), 1)
    prob = CompositeProblem(SquaredLoss(torch.tensor(rng.standard_normal((80, 1)))), op, BlockNuclearNorm(), 1.0)
    prob = prob.with_beta(0.1 * beta_max(prob))
    exact = FISTA(tol=1e-9, max_iter=50_000).run(prob)
    res = FactoredSolver(tol=1e-9).run(prob)
    assert res.converged
    assert abs(res.objective - exact.objective) <= 1e-6 * abs(exact.objective)
    with pytest.raises(TypeError):
        FactoredSolver().run(CompositeProblem(prob.loss, op, GroupL2(axes=(1, 2)), prob.beta))


def test_old_import_paths() -> None:
    """The names that moved out of ``solvers.factored`` are still importable from it (the same objects)."""
    from attnduality.convex import linalg, solvers
    from attnduality.convex.solvers import factored, factored_state, lowrank_certificate

    assert factored.spectral_norm_power is linalg.spectral_norm_power is solvers.spectral_norm_power
    assert factored.top_singular_pairs is linalg.top_singular_pairs
    assert factored.factored_certificate is lowrank_certificate.factored_certificate
    assert factored.FactoredState is factored_state.FactoredState is solvers.FactoredState
    assert factored.FactoredResult is factored_state.FactoredResult is solvers.FactoredResult


def test_factor_algebra() -> None:
    gen = torch.Generator().manual_seed(5)
    left = torch.randn(3, 30, 4, generator=gen, dtype=F64)
    right = torch.randn(3, 20, 4, generator=gen, dtype=F64)
    right[1, :, 3] = right[1, :, 0]  # block 1 has rank 3
    z = left @ right.mT
    p, s, w = factor_svd(left, right)
    assert torch.allclose((p * s.unsqueeze(-2)) @ w.mT, z, atol=1e-12)
    assert torch.allclose(s, torch.linalg.svdvals(z)[:, :4], atol=1e-12)
    nuc = float(torch.linalg.svdvals(z).sum())
    assert math.isclose(factored_nuclear_norm(left, right), nuc, rel_tol=1e-12)
    assert factored_nuclear_norm(left[..., :0], right[..., :0]) == 0.0
    bl, br = balanced_factors(left, right)
    assert torch.allclose(bl @ br.mT, z, atol=1e-12)
    assert math.isclose(0.5 * float(bl.square().sum() + br.square().sum()), nuc, rel_tol=1e-12)
    assert torch.allclose(bl.mT @ bl, br.mT @ br, atol=1e-10)  # balanced: equal (diagonal) Gram matrices
    assert float(bl[1, :, 3].abs().max()) == 0.0  # the numerically zero singular value is dropped (zero column)
    one = balanced_factors(left[..., :1] * 0, right[..., :1])
    assert one[0].shape[-1] == 0  # Z = 0: width 0
    # span distance: 0 for vectors in both column spaces, 1 for vectors orthogonal to both
    u_in = left[..., 0] / torch.linalg.vector_norm(left[..., 0], dim=-1, keepdim=True)
    v_in = right[..., 0] / torch.linalg.vector_norm(right[..., 0], dim=-1, keepdim=True)
    assert float(span_distance(left, right, u_in, v_in).max()) <= 1e-12
    qu = torch.linalg.qr(torch.cat([left, torch.randn(3, 30, 1, generator=gen, dtype=F64)], -1)).Q[..., 4:]
    qv = torch.linalg.qr(torch.cat([right, torch.randn(3, 20, 1, generator=gen, dtype=F64)], -1)).Q[..., 4:]
    out = span_distance(left, right, qu, qv)
    assert out.shape == (3, 1) and torch.allclose(out, torch.ones_like(out), atol=1e-12)
    assert torch.equal(span_distance(left[..., :0], right[..., :0], u_in, v_in), torch.ones(3, dtype=F64))


def test_factored_certificate_matches_duality_gap_at_any_point() -> None:
    prob = _dense("cross_entropy", 0.1)
    gen = torch.Generator().manual_seed(2)
    left, right = torch.randn(1, 20, 3, generator=gen, dtype=F64), torch.randn(1, 10, 3, generator=gen, dtype=F64)
    z = (left @ right.mT).reshape(prob.operator.z_shape)
    pred = prob.operator.forward(z)
    ref = duality_gap(prob, z, pred)
    cert = factored_certificate(prob, left, right, pred, ref.grad_dual_norm)
    assert math.isclose(cert.primal, ref.primal, rel_tol=1e-12)
    assert math.isclose(cert.dual, ref.dual, rel_tol=1e-12)
    assert math.isclose(cert.rel_gap, ref.rel_gap, rel_tol=1e-9)


def test_lbfgs_pieces() -> None:
    gen = torch.Generator().manual_seed(4)
    g = (torch.randn(5, 2, generator=gen, dtype=F64), torch.randn(3, 2, generator=gen, dtype=F64))
    d = two_loop(g, [], None)
    assert torch.equal(d[0], -g[0]) and torch.equal(d[1], -g[1])
    # the secant equation H y = s holds for the newest pair
    s_pair = (torch.randn(5, 2, generator=gen, dtype=F64), torch.randn(3, 2, generator=gen, dtype=F64))
    y_pair = (s_pair[0] + 0.1 * g[0], s_pair[1] + 0.1 * g[1])
    memory = update_memory([], s_pair, y_pair, size=3)
    assert len(memory) == 1
    d = two_loop(y_pair, memory, None)
    assert torch.allclose(d[0], -s_pair[0], atol=1e-12) and torch.allclose(d[1], -s_pair[1], atol=1e-12)
    assert update_memory(memory, s_pair, (-y_pair[0], -y_pair[1]), size=3) == memory  # sᵀy < 0: skipped
    assert len(update_memory(memory * 3, s_pair, y_pair, size=3)) == 3

    def line(a: float) -> tuple[float, float, str]:  # φ(a) = (a − 2)², φ'(0) = −4
        return (a - 2.0) ** 2, 2.0 * (a - 2.0), f"at {a}"

    a, val, payload = strong_wolfe_search(line, 4.0, -4.0, 0.1)
    assert val <= 4.0 - 1e-4 * a * 4.0 and abs(2.0 * (a - 2.0)) <= 0.1 * 4.0 and payload == f"at {a}"
    assert strong_wolfe_search(lambda a: (4.0 + a, 1.0, None), 4.0, -4.0, 1.0) is None  # no decrease anywhere
    assert math.isclose(convex_line_search(lambda t: 2.0 * (t - 3.0), 2.0), 3.0, rel_tol=1e-9)
    assert math.isclose(convex_line_search(lambda t: 2.0 * (t - 3.0), 0.01), 3.0, rel_tol=1e-9)  # expansion
    assert convex_line_search(lambda t: 1.0 + t, 1.0) == 0.0  # increasing: t = 0
