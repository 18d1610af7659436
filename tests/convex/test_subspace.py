"""The subspace (column-generation) solver: same optimum and same certificate as the exact FISTA solve."""

from __future__ import annotations

import pytest
import torch

from attnduality.convex.losses import CrossEntropyLoss, SquaredLoss
from attnduality.convex.operators.attention import GatedAttentionOperator
from attnduality.convex.operators.streamed_attention import StreamedGatedAttention
from attnduality.convex.penalties import BlockNuclearNorm
from attnduality.convex.problem import CompositeProblem
from attnduality.convex.solvers.fista import FISTA
from attnduality.convex.solvers.path import beta_max
from attnduality.convex.solvers.subspace import SubspaceOperator, SubspaceSolver
from attnduality.convex.streaming import ArrayTokens

N, S, D, C, M = 120, 5, 4, 3, 3


def _problem(loss_kind: str):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(N, S, D, generator=gen, dtype=torch.float64)
    gates = torch.randn(M, D, D, generator=gen, dtype=torch.float64)
    if loss_kind == "ce":
        loss = CrossEntropyLoss(torch.randint(0, C, (N,), generator=gen))
    else:
        loss = SquaredLoss(torch.randn(N, C, generator=gen, dtype=torch.float64))
    op = GatedAttentionOperator(x, gates, C, scale=0.3)
    problem = CompositeProblem(loss, op, BlockNuclearNorm(), 1.0)
    problem = problem.with_beta(0.1 * beta_max(problem))
    return x, gates, loss, problem


@pytest.mark.parametrize("loss_kind", ["ce", "squared"])
def test_subspace_solver_matches_fista(loss_kind):
    x, gates, loss, problem = _problem(loss_kind)
    exact = FISTA(tol=1e-10, max_iter=50_000).run(problem)
    assert exact.status == "converged"
    head = StreamedGatedAttention(ArrayTokens(x), gates, C, scale=0.3)
    res = SubspaceSolver(tol=1e-7, rank0=4, grow=4, max_rank=D * D, max_rounds=20).run(head, loss, problem.beta)
    assert res.status == "converged"
    cert = res.certificate
    assert cert.rel_gap <= 1e-7
    # the same optimum, and the certificate is the exact solver's formula evaluated at Z = Q Bᵀ
    assert res.objective == pytest.approx(exact.objective, rel=1e-6)
    assert cert.dual <= exact.objective * (1 + 1e-9)
    exact_cert = problem.certificate(res.z())
    assert cert.primal == pytest.approx(exact_cert.primal, rel=1e-10)
    assert cert.dual == pytest.approx(exact_cert.dual, rel=1e-6)
    assert cert.grad_dual_norm == pytest.approx(exact_cert.grad_dual_norm, rel=1e-6)
    # the history records every full certificate; the gap ends below tol
    assert len(res.history["rel_gap"]) >= 1 and res.history["rel_gap"][-1] == cert.rel_gap
    assert torch.allclose(
        res.basis.mT @ res.basis, torch.eye(res.basis.shape[-1], dtype=torch.float64).expand(M, -1, -1), atol=1e-10
    )


def test_subspace_solver_with_direction_subsample_and_rank_limit():
    x, gates, loss, problem = _problem("ce")
    head = StreamedGatedAttention(ArrayTokens(x), gates, C, scale=0.3)
    res = SubspaceSolver(tol=1e-6, rank0=4, grow=4, max_rank=D * D, direction_samples=60, max_rounds=30).run(
        head, loss, problem.beta
    )
    assert res.status == "converged" and res.certificate.rel_gap <= 1e-6
    # a rank cap below the optimal rank stops with a certificate that says how far off it is
    capped = SubspaceSolver(tol=1e-8, rank0=1, grow=1, max_rank=1).run(head, loss, problem.beta)
    assert capped.status == "max_rank" and capped.certificate.rel_gap > 1e-8
    assert capped.certificate.dual <= res.objective * (1 + 1e-9)


def test_subspace_operator_adjoint():
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(3, 7, 2, 4, generator=gen, dtype=torch.float64)
    op = SubspaceOperator(h, 5)
    z = torch.randn(op.z_shape, generator=gen, dtype=torch.float64)
    g = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    assert float((op.forward(z) * g).sum()) == pytest.approx(float((z * op.adjoint(g)).sum()), rel=1e-12)


def test_subspace_solver_rejects_bad_parameters():
    with pytest.raises(ValueError, match="tol must be > 0"):
        SubspaceSolver(tol=0.0)
    with pytest.raises(ValueError, match="max_rank >= rank0"):
        SubspaceSolver(rank0=8, max_rank=4)
    x, gates, loss, _ = _problem("ce")
    head = StreamedGatedAttention(ArrayTokens(x), gates, C)
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        SubspaceSolver().run(head, loss, 0.0)


def test_subspace_solver_accepts_a_first_basis():
    x, gates, loss, problem = _problem("squared")
    head = StreamedGatedAttention(ArrayTokens(x), gates, C, scale=0.3)
    gen = torch.Generator().manual_seed(4)
    basis0 = torch.randn(M, D * D, 3, generator=gen, dtype=torch.float64)  # not orthonormal: QR'd by the solver
    res = SubspaceSolver(tol=1e-7, grow=4, max_rank=D * D, max_rounds=20).run(head, loss, problem.beta, basis0=basis0)
    assert res.status == "converged" and res.certificate.rel_gap <= 1e-7
    exact = FISTA(tol=1e-10, max_iter=50_000).run(problem)
    assert res.objective == pytest.approx(exact.objective, rel=1e-6)
    with pytest.raises(ValueError, match=r"basis0 must be \(m, p, k\) = \(3, 16, 1\.\.16\)"):
        SubspaceSolver(max_rank=D * D).run(head, loss, problem.beta, basis0=basis0[:, :5])


def test_subspace_solver_warm_start_on_a_subsample():
    """Bases found on the first samples start the full problem; the certificate is still the full one."""
    x, gates, loss, problem = _problem("ce")
    head = StreamedGatedAttention(ArrayTokens(x), gates, C, scale=0.3)
    solver = SubspaceSolver(tol=1e-7, rank0=4, grow=4, max_rank=D * D, max_rounds=20, warm_samples=[20, 40])
    res = solver.run(head, loss, problem.beta)
    assert res.status == "converged" and res.certificate.rel_gap <= 1e-7
    exact = FISTA(tol=1e-10, max_iter=50_000).run(problem)
    assert res.objective == pytest.approx(exact.objective, rel=1e-6)
    assert problem.certificate(res.z()).rel_gap <= 1e-6  # the exact solver's certificate agrees
    assert res.history["warm_time"][0] > 0 and res.history["warm_rel_gap"][0] <= 1e-7
    # the subsample problem is a different one: its optimum is not the full optimum
    sub = SubspaceSolver(tol=1e-7, rank0=4, grow=4, max_rank=D * D, max_rounds=20).run(
        head.subset(40), loss.subset(40), problem.beta
    )
    assert abs(sub.objective - res.objective) > 1e-3 * abs(res.objective)
    with pytest.raises(ValueError, match="warm_samples must be increasing sample counts >= 1"):
        SubspaceSolver(warm_samples=0)
    with pytest.raises(ValueError, match="warm_samples must be increasing"):
        SubspaceSolver(warm_samples=[60, 30])
    with pytest.raises(ValueError, match=r"stop must be in 1\.\.120"):
        head.subset(121)
