"""Losses: value and gradient against torch autograd, the convex conjugate via Fenchel–Young, the Lipschitz bound."""

from __future__ import annotations

import math

import pytest
import torch

from attnduality.convex import CrossEntropyLoss, LogisticLoss, SquaredLoss, get_loss

N, C = 23, 4


def _make(name: str, dtype: torch.dtype = torch.float64, seed: int = 0):
    """A loss bound to random targets and a random prediction matrix U of the matching shape."""
    gen = torch.Generator().manual_seed(seed)
    if name == "squared":
        loss = SquaredLoss(torch.randn(N, C, generator=gen, dtype=dtype))
        c = C
    elif name == "cross_entropy":
        loss = CrossEntropyLoss(torch.randint(0, C, (N,), generator=gen))
        c = C
    else:
        y = torch.where(torch.rand(N, 1, generator=gen) < 0.5, -1.0, 1.0).to(dtype)
        loss = LogisticLoss(y)
        c = 1
    u = 3.0 * torch.randn(N, c, generator=gen, dtype=dtype)
    return loss, u, gen


def _reference_value(name: str, loss, u: torch.Tensor) -> torch.Tensor:
    """The loss written from its definition with plain torch ops (the autograd reference)."""
    n = u.shape[0]
    if name == "squared":
        return 0.5 * ((u - loss.y) ** 2).sum() / n
    if name == "cross_entropy":
        lse = torch.log(torch.exp(u - u.max(1, keepdim=True).values).sum(1)) + u.max(1).values
        return (lse - u[torch.arange(n), loss.y]).sum() / n
    return torch.log1p(torch.exp(-loss.y * u)).sum() / n


def _random_dual_point(name: str, loss, c: int, gen: torch.Generator) -> torch.Tensor:
    """A random Θ inside dom f*, built from the domain's description (not from the loss's code)."""
    n = loss.n_samples
    if name == "squared":
        return torch.randn(n, c, generator=gen, dtype=torch.float64) / n
    if name == "cross_entropy":
        e = -torch.log(torch.rand(n, c, generator=gen, dtype=torch.float64))  # uniform on the simplex
        p = e / e.sum(1, keepdim=True)
        return (p - torch.nn.functional.one_hot(loss.y, c).double()) / n
    a = torch.rand(n, 1, generator=gen, dtype=torch.float64)
    return -loss.y * a / n


LOSSES = ["squared", "cross_entropy", "logistic"]


@pytest.mark.parametrize("name", LOSSES)
def test_value_and_grad_match_autograd(name):
    loss, u, _ = _make(name)
    u_ref = u.clone().requires_grad_(True)
    ref = _reference_value(name, loss, u_ref)
    (g_ref,) = torch.autograd.grad(ref, u_ref)
    ref = ref.detach()
    assert float(loss.value(u)) == pytest.approx(float(ref), rel=1e-13, abs=1e-15)
    torch.testing.assert_close(loss.grad(u), g_ref, rtol=1e-12, atol=1e-15)
    v, g = loss.value_grad(u)
    assert float(v) == pytest.approx(float(ref), rel=1e-13, abs=1e-15)
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-15)
    assert loss.grad(u).shape == u.shape


@pytest.mark.parametrize("name", LOSSES)
def test_value_grad_does_not_modify_inputs(name):
    loss, u, _ = _make(name)
    u0, y0 = u.clone(), loss.y.clone()
    loss.value_grad(u)
    loss.grad(u)
    loss.conjugate(loss.grad(u))
    assert torch.equal(u, u0)
    assert torch.equal(loss.y, y0)


@pytest.mark.parametrize("name", LOSSES)
def test_fenchel_young_equality_at_gradient(name):
    """f(U) + f*(∇f(U)) = ⟨∇f(U), U⟩: the sup defining f* is attained at U."""
    for seed in range(5):
        loss, u, _ = _make(name, seed=seed)
        theta = loss.grad(u)
        lhs = float(loss.value(u) + loss.conjugate(theta))
        rhs = float((theta * u).sum())
        assert math.isfinite(lhs)
        assert lhs == pytest.approx(rhs, rel=1e-11, abs=1e-12)


@pytest.mark.parametrize("name", LOSSES)
def test_fenchel_young_inequality_random_pairs(name):
    """f(U) + f*(Θ) ≥ ⟨Θ, U⟩ for random U and random Θ in dom f*, with a strictly positive slack in general."""
    loss, _, gen = _make(name, seed=1)
    c = 1 if name == "logistic" else C
    slacks = []
    for _ in range(200):
        u = 3.0 * torch.randn(N, c, generator=gen, dtype=torch.float64)
        theta = _random_dual_point(name, loss, c, gen)
        fstar = float(loss.conjugate(theta))
        assert math.isfinite(fstar)
        slacks.append(float(loss.value(u)) + fstar - float((theta * u).sum()))
    assert min(slacks) >= -1e-12
    assert max(slacks) > 1e-3  # a random pair is not a conjugate pair: the inequality is not trivially tight


@pytest.mark.parametrize("name", LOSSES)
def test_conjugate_is_the_supremum(name):
    """f*(Θ) = sup_U ⟨Θ,U⟩ − f(U), checked by maximising the concave function numerically (LBFGS)."""
    loss, _, gen = _make(name, seed=2)
    c = 1 if name == "logistic" else C
    theta = _random_dual_point(name, loss, c, gen)
    if name != "squared":  # keep Θ in the interior so the supremum is attained at a finite U
        theta = 0.8 * theta + 0.2 * _random_dual_point(name, loss, c, gen)
    u = torch.zeros(N, c, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS(
        [u], lr=1.0, max_iter=500, tolerance_grad=1e-14, tolerance_change=1e-16, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        obj = loss.value(u) - (theta * u).sum()
        obj.backward()
        return obj

    opt.step(closure)
    with torch.no_grad():
        sup = float((theta * u).sum() - loss.value(u))
    assert float(loss.conjugate(theta)) == pytest.approx(sup, rel=1e-7, abs=1e-9)


@pytest.mark.parametrize("name", ["cross_entropy", "logistic"])
def test_conjugate_is_infinite_outside_domain(name):
    loss, u, _ = _make(name)
    theta = loss.grad(u)
    assert math.isinf(float(loss.conjugate(2.5 * theta)))  # leaves the simplex / [0, 1]
    assert math.isinf(float(loss.conjugate(-theta)))
    if name == "cross_entropy":  # rows of N Θ + e_y must sum to one
        assert math.isinf(float(loss.conjugate(theta + 0.1 / N)))


def test_squared_conjugate_closed_form():
    loss, _, gen = _make("squared")
    theta = torch.randn(N, C, generator=gen, dtype=torch.float64)
    expected = 0.5 * N * float((theta**2).sum()) + float((theta * loss.y).sum())
    assert float(loss.conjugate(theta)) == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize("name", LOSSES)
def test_lipschitz_bound_on_random_pairs(name):
    loss, _, gen = _make(name, seed=3)
    c = 1 if name == "logistic" else C
    lip = loss.lipschitz()
    ratios = []
    for scale in (0.01, 0.3, 1.0, 5.0):
        for _ in range(100):
            u = 3.0 * torch.randn(N, c, generator=gen, dtype=torch.float64)
            v = u + scale * torch.randn(N, c, generator=gen, dtype=torch.float64)
            num = float(torch.linalg.vector_norm(loss.grad(u) - loss.grad(v)))
            ratios.append(num / float(torch.linalg.vector_norm(u - v)))
    assert max(ratios) <= lip * (1 + 1e-12)
    # not vacuous: the bound is within a factor 4 of the observed worst case (exact for the squared loss)
    assert max(ratios) >= lip / 4
    if name == "squared":
        assert max(ratios) == pytest.approx(lip, rel=1e-10)


@pytest.mark.parametrize("name", LOSSES)
def test_float32_matches_float64(name):
    loss64, u64, _ = _make(name)
    if name == "cross_entropy":
        loss32 = CrossEntropyLoss(loss64.y)
    else:
        loss32 = type(loss64)(loss64.y.float())
    u32 = u64.float()
    assert loss32.value(u32).dtype == torch.float32
    assert loss32.grad(u32).dtype == torch.float32
    assert float(loss32.value(u32)) == pytest.approx(float(loss64.value(u64)), rel=1e-5)
    torch.testing.assert_close(loss32.grad(u32).double(), loss64.grad(u64), rtol=1e-5, atol=1e-7)


def test_dual_feasible_scales_gradient():
    loss, u, _ = _make("cross_entropy")
    g = loss.grad(u)
    torch.testing.assert_close(loss.dual_feasible(g, 0.3), 0.3 * g)
    assert math.isfinite(float(loss.conjugate(loss.dual_feasible(g, 0.3))))


def test_cross_entropy_handles_huge_logits():
    loss = CrossEntropyLoss(torch.tensor([0, 1]))
    u = torch.tensor([[1000.0, -1000.0], [1000.0, -1000.0]], dtype=torch.float64)
    v, g = loss.value_grad(u)
    assert float(v) == pytest.approx(1000.0, rel=1e-12)  # (0 + 2000) / 2
    assert torch.isfinite(g).all()
    torch.testing.assert_close(g, torch.tensor([[0.0, 0.0], [0.5, -0.5]], dtype=torch.float64))


def test_get_loss():
    assert get_loss("squared") is SquaredLoss
    assert get_loss("cross_entropy") is CrossEntropyLoss
    assert get_loss("logistic") is LogisticLoss
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        get_loss("hinge")


@pytest.mark.parametrize("name", ["squared", "cross_entropy", "logistic"])
@pytest.mark.parametrize("mu", [1e-2, 1e-12])
def test_hessian_factor_squares_to_the_damped_hessian(name, mu):
    """``SᵀS = ∇²f(U) + μI`` per sample, ``solve_t`` inverts ``apply_t``, and ``apply`` is ``S`` itself; also where the
    softmax is nearly one-hot and μ tiny (the cross-entropy factor's ``1 − ‖q‖²`` is computed without cancellation)."""
    loss, u, gen = _make(name)
    u = u.clone()
    u[0] = 0.0
    u[0, 0] = 40.0  # p ≈ e₁ to 1e-17
    factor = loss.hessian_factor(u, mu)
    c = u.shape[1]
    eye = torch.eye(c, dtype=u.dtype)
    s = torch.stack([factor.apply(eye[j].expand(N, c)) for j in range(c)], dim=-1)  # (N, c, c): S e_j in column j
    damped = loss.hessian(u) + mu * eye
    torch.testing.assert_close(s.mT @ s, damped, rtol=1e-9, atol=1e-15)  # entries up to 1/N; rounding of the reference
    v = torch.randn(N, c, generator=gen, dtype=u.dtype)
    torch.testing.assert_close(factor.apply_t(v), (s.mT @ v.unsqueeze(-1)).squeeze(-1), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(factor.solve_t(factor.apply_t(v)), v, rtol=1e-7, atol=1e-9)
    assert (factor.scalar is None) == (c > 1)
    if c == 1:
        torch.testing.assert_close(factor.scalar, s[:, 0, 0])
    with pytest.raises(ValueError, match="mu must be > 0"):
        loss.hessian_factor(u, 0.0)
