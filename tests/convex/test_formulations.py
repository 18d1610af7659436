"""Every registered formulation, automatically (timm-style): adjoint, cvxpy agreement, twin, lift and β_max.

A new formulation gets these tests by registering itself. The cvxpy program is built from the math, not from the
library's solver: the operator is materialised column by column into a dense matrix (its correctness is what the
adjoint and twin tests check against the non-convex PyTorch twin, an independent forward pass), and the penalty is
the sum of nuclear norms of the solution's blocks, ``cp.normNuc`` on a variable per block.
"""

from __future__ import annotations

import math
import warnings

import cvxpy as cp
import numpy as np
import pytest
import torch

from attnduality.convex import (
    CrossEntropyLoss,
    FormulationClassifier,
    check_formulation,
    formulation_names,
    get_formulation,
    make_estimator,
)
from attnduality.convex.formulations import Formulation, register_formulation
from attnduality.convex.recovery import regularized_objective

NAMES = formulation_names()
CLASSIFY = [n for n in NAMES if n != "token_lasso/sequence"]  # sequence outputs are regression only
NUCLEAR = [n for n in CLASSIFY if n not in ("mlp/relu", "token_lasso/attention", "token_lasso/gated_fc")]
"""Programs whose penalty is a sum of nuclear norms of blocks (the generic cvxpy test); the cone-constrained ReLU MLP
and the token group lassos have their own cvxpy tests (test_relu.py, test_token_lasso.py)."""
C = 2  # classes
N = 14
BETA_FRAC = 0.05


def _form(name: str) -> Formulation:
    """The formulation with options that exercise its shape logic (B-FNO on a 2-D grid)."""
    family = name.partition("/")[0]
    if family == "fno":
        return get_formulation(name, blocks=2, grid=(2, 2))
    if family == "attention":
        return get_formulation(name, scale=0.7)
    return get_formulation(name)


def _data(form: Formulation, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, 4, 2)) if form.tokens else rng.standard_normal((N, 3))
    y = np.arange(N) % C
    rng.shuffle(y)
    return x, y


def _fit(name: str, beta_frac: float = BETA_FRAC, tol: float = 1e-9):
    form = _form(name)
    x, y = _data(form)
    params = {"n_gates": 3, "random_state": 0} if form.gated else {}
    probe = make_estimator(form, beta=1.0, **params)
    bmax = probe.beta_max(x, y)
    est = make_estimator(form, beta=beta_frac * bmax, tol=tol, max_iter=50_000, solver="auto", **params)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fit that does not converge fails the test
        est.fit(x, y)
    return est, x, y, bmax


def _tensor(a: np.ndarray | None) -> torch.Tensor | None:
    return None if a is None else torch.as_tensor(a, dtype=torch.float64)


def test_registry_lists_every_head() -> None:
    assert set(NAMES) >= {
        "linear/linear",
        "mlp/gated_relu",
        "mlp/relu",
        "attention/linear",
        "attention/gated_relu",
        "attention/relu",
        "mixer/linear",
        "mixer/gated_relu",
        "fno/linear",
        "fno/gated_relu",
        "token_lasso/attention",
        "token_lasso/gated_fc",
        "token_lasso/sequence",
    }


@pytest.mark.parametrize("name", NAMES)
def test_adjoint(name: str) -> None:
    """``<A z, r> = <z, A* r>`` on random z and r."""
    form = _form(name)
    x, _ = _data(form)
    xt = torch.as_tensor(x)
    gates = form.sample_gates(4 if form.tokens else 1, x.shape[-1], 3, 0) if form.gated else None
    c = C * x.shape[1] if name == "token_lasso/sequence" else C  # sequence targets: Y_i (n, c) flattened
    op = form.operator(xt, gates, c)
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(op.zeros().shape, generator=gen, dtype=torch.float64)
    r = torch.randn(N, op.forward(z).shape[1], generator=gen, dtype=torch.float64)
    lhs, rhs = float((op.forward(z) * r).sum()), float((z * op.adjoint(r)).sum())
    assert abs(lhs - rhs) <= 1e-10 * max(1.0, abs(lhs))


def _cvxpy_optimum(est, x: np.ndarray, y: np.ndarray) -> float:
    form = est.formulation_
    xt = torch.as_tensor(x)
    op = form.operator(xt, _tensor(getattr(est, "gates_", None)), C)
    shape = tuple(op.zeros().shape)
    size = math.prod(shape)
    cols = [op.forward(torch.eye(size, dtype=torch.float64)[i].reshape(shape)).reshape(-1) for i in range(size)]
    a = torch.stack(cols, 1).numpy()  # (N·C, size), C-order columns
    p, q = shape[-2:]
    n_blocks = size // (p * q)
    blocks = [cp.Variable((p, q)) for _ in range(n_blocks)]
    logits = 0
    for b, zb in enumerate(blocks):
        ab = a[:, b * p * q : (b + 1) * p * q].reshape(-1, p, q).transpose(0, 2, 1).reshape(-1, p * q)  # F-order
        logits = logits + ab @ cp.vec(zb, order="F")
    logits = cp.reshape(logits, (N, C), order="C")
    onehot = np.eye(C)[y]
    ce = cp.sum(cp.log_sum_exp(logits, axis=1) - cp.sum(cp.multiply(onehot, logits), axis=1)) / N
    objective = ce + est.beta * sum(cp.normNuc(zb) for zb in blocks)
    prob = cp.Problem(cp.Minimize(objective))
    prob.solve(solver=cp.CLARABEL, tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11)
    assert prob.status == cp.OPTIMAL, prob.status
    return float(prob.value)


@pytest.mark.parametrize("name", NUCLEAR)
def test_cvxpy_agreement(name: str) -> None:
    """The certified optimum equals an independent cvxpy (Clarabel) optimum to 1e-6 relative, and the dual bound
    lies below it."""
    est, x, y, _ = _fit(name)
    ref = _cvxpy_optimum(est, x, y)
    assert abs(est.objective_ - ref) <= 1e-6 * abs(ref)
    assert est.certificate_.dual <= ref + 1e-9 * abs(ref)


@pytest.mark.parametrize("name", CLASSIFY)
def test_twin_reproduces_predictions_and_objective(name: str) -> None:
    """The recovered non-convex twin gives the convex model's outputs and its regularised objective."""
    est, x, y, _ = _fit(name, tol=1e-7)
    twin = est.to_module()
    xt = torch.as_tensor(x)
    with torch.no_grad():
        out = twin(xt)
        ours = est._raw_predict(xt)
        obj = float(regularized_objective(twin, CrossEntropyLoss(torch.as_tensor(y)), xt, est.beta))
    np.testing.assert_allclose(out.numpy(), ours.numpy(), rtol=1e-8, atol=1e-10)
    target = est.relu_objective_ if name == "attention/relu" else est.objective_
    assert abs(obj - target) <= 1e-8 * abs(target)


@pytest.mark.parametrize("name", [n for n in NAMES if _form(n).liftable])
def test_lift_bounds_the_penalty_and_inverts_recovery(name: str) -> None:
    """``R(lift(W1, W2)) ≤ ½(‖W1‖² + ‖W2‖²)`` for any twin weights (the variational form of the nuclear norm), with
    equality at the recovered twin of a solution, whose lift is that solution (token heads, whose twins store
    their weights in the lift's layout)."""
    est, x, _, _ = _fit(name, tol=1e-7)
    form = est.formulation_
    coef = torch.as_tensor(est.coef_)
    s, d = (x.shape[1], x.shape[2]) if form.tokens else (1, x.shape[1])
    w1_shape, w2_shape = form.twin_shapes(tuple(coef.shape), 3, s, d, C)
    gen = torch.Generator().manual_seed(2)
    w1 = torch.randn(w1_shape, generator=gen, dtype=torch.float64)
    w2 = torch.randn(w2_shape, generator=gen, dtype=torch.float64)
    z = form.lift(w1, w2)
    assert z.shape == coef.shape
    pen = form.penalty(torch.as_tensor(x), _tensor(getattr(est, "gates_", None)))
    assert float(pen.value(z)) <= 0.5 * float(w1.square().sum() + w2.square().sum()) + 1e-12
    if form.tokens:
        twin = est.to_module()
        z_twin = form.lift(twin.w1.detach(), twin.w2.detach())
        np.testing.assert_allclose(z_twin.numpy(), coef.numpy(), atol=1e-9 * float(coef.abs().max()))
        assert abs(float(pen.value(z_twin)) - float(twin.weight_decay().detach())) <= 1e-9 * max(
            1.0, float(pen.value(coef))
        )


@pytest.mark.parametrize("name", CLASSIFY)
def test_beta_max_is_where_the_solution_vanishes(name: str) -> None:
    """``Z = 0`` is optimal (and certified) at β slightly above β_max, and not at β below it."""
    above, *_ = _fit(name, beta_frac=1.01, tol=1e-8)
    assert not np.any(above.coef_)
    below, *_ = _fit(name, beta_frac=0.5, tol=1e-6)
    assert np.abs(below.coef_).max() > 1e-6


def test_unknown_names_and_options_raise() -> None:
    with pytest.raises(ValueError, match="unknown formulation family 'conv'"):
        get_formulation("conv/linear")
    with pytest.raises(ValueError, match="kind must be one of"):
        get_formulation("mixer/relu")
    with pytest.raises(ValueError, match=r"unknown options \['scale'\] for the mixer formulation"):
        get_formulation("mixer/linear", scale=2.0)
    with pytest.raises(ValueError, match="conflicting kinds"):
        get_formulation("fno/linear", kind="gated_relu")
    with pytest.raises(ValueError, match="blocks=2 must divide"):
        get_formulation("fno/linear", blocks=2).bind(4, 3, 2)
    with pytest.raises(ValueError, match="must set family and kinds"):
        register_formulation(type("Nameless", (Formulation,), {}))
    with pytest.raises(ValueError, match="already registered"):
        register_formulation(type("Attention2", (type(get_formulation("attention")),), {}))
    with pytest.raises(ValueError, match="task must be"):
        make_estimator("attention/linear", task="cluster")


@pytest.mark.parametrize("name", CLASSIFY)
def test_check_formulation_passes(name: str) -> None:
    form = _form(name)
    x, y = _data(form, seed=3)
    check_formulation(form, x, y)


class _ScaledAdjoint(type(get_formulation("attention/linear"))):
    """A broken head: its operator's adjoint is scaled by 2 (and its lift by 3)."""

    def operator(self, x, gates, n_outputs):
        op = super().operator(x, gates, n_outputs)
        adjoint = op.adjoint
        op.adjoint = lambda r: 2 * adjoint(r)
        return op

    def lift(self, w1, w2):
        return 3 * super().lift(w1, w2)


class _ScaledLift(type(get_formulation("attention/linear"))):
    def lift(self, w1, w2):
        return 3 * super().lift(w1, w2)


def test_check_formulation_refuses_bad_input() -> None:
    x, y = _data(get_formulation("attention/linear"))
    with pytest.raises(ValueError, match=r"X must be non-empty \(N, s, d\) tokens for attention/linear"):
        check_formulation("attention/linear", x[:, 0], y)
    with pytest.raises(ValueError, match="X contains NaN or inf"):
        check_formulation("attention/linear", np.where(x > 1, np.nan, x), y)
    with pytest.raises(ValueError, match=r"y must have shape \(14,\)"):
        check_formulation("attention/linear", x, y[:3])
    with pytest.raises(ValueError, match="at least 2 classes"):
        check_formulation("attention/linear", x, np.zeros(len(x)))
    with pytest.raises(ValueError, match="registry name or a Formulation"):
        check_formulation(3, x, y)


def test_check_formulation_names_what_is_broken() -> None:
    x, y = _data(get_formulation("attention/linear"))
    with pytest.raises(AssertionError, match="attention/linear: adjoint mismatch"):
        check_formulation(_ScaledAdjoint(kind="linear"), x, y)
    with pytest.raises(AssertionError, match=r"R\(lift\(W1, W2\)\) = .* exceeds"):
        check_formulation(_ScaledLift(kind="linear"), x, y)


def test_formulation_estimator_fits_any_token_formulation() -> None:
    form = get_formulation("fno/gated_relu", blocks=2, grid=(2, 2))
    x, y = _data(form)
    generic = FormulationClassifier(form, beta=1e-2, n_gates=3, random_state=0, tol=1e-8).fit(x, y)
    family = make_estimator(form, beta=1e-2, n_gates=3, random_state=0, tol=1e-8).fit(x, y)
    assert type(family).__name__ == "ConvexFNOClassifier"
    np.testing.assert_allclose(generic.coef_, family.coef_, atol=1e-8)
    assert generic.objective_ == pytest.approx(family.objective_, rel=1e-10)
    with pytest.raises(ValueError, match="reads \\(N, d\\) feature rows"):
        FormulationClassifier("mlp/gated_relu").fit(x, y)
    with pytest.raises(ValueError, match="formulation must be a registry name or a Formulation"):
        FormulationClassifier(42).fit(x, y)
