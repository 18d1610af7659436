"""Penalties: value, prox and dual norm against their definitions (numpy) and against cvxpy."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch

from attnduality.convex import BlockNuclearNorm, GroupL2, L1Norm, NuclearNorm, get_penalty

P, D, C = 4, 5, 3
TIGHT = dict(tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10, tol_ktratio=1e-8)


def _rand(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# ----------------------------------------------------------------------------------------------------------------
# Independent numpy definitions: each case is (penalty, shape, value, dual_norm, cvxpy expression builder).
# The cvxpy builder takes a list of 2-D cvxpy variables (one per "block") plus a function splitting a numpy array
# of the full shape into the same blocks.
# ----------------------------------------------------------------------------------------------------------------
def _nuc(a):
    return np.linalg.svd(a, compute_uv=False).sum()


def _spec(a):
    return np.linalg.svd(a, compute_uv=False).max()


CASES = {
    # one group per block of a (P, d, c) tensor
    "group_l2_blocks": dict(
        penalty=GroupL2(axes=(1, 2)),
        shape=(P, D, C),
        value=lambda z: sum(np.linalg.norm(z[j]) for j in range(z.shape[0])),
        dual=lambda w: max(np.linalg.norm(w[j]) for j in range(w.shape[0])),
        blocks=lambda z: [z[j] for j in range(z.shape[0])],
        cvx_r=lambda ws: sum(cp.norm(w, "fro") for w in ws),
    ),
    # one group per (block j, output column k) of a (P, d, c) tensor: the ReLU cone penalty
    "group_l2_columns": dict(
        penalty=GroupL2(axes=(1,)),
        shape=(P, D, C),
        value=lambda z: sum(np.linalg.norm(z[j, :, k]) for j in range(z.shape[0]) for k in range(z.shape[2])),
        dual=lambda w: max(np.linalg.norm(w[j, :, k]) for j in range(w.shape[0]) for k in range(w.shape[2])),
        blocks=lambda z: [z[j] for j in range(z.shape[0])],
        cvx_r=lambda ws: sum(cp.sum(cp.norm(w, 2, axis=0)) for w in ws),
    ),
    # rows of a (d, c) matrix (axes=(-1,) reduces the output axis: one group per feature)
    "group_l2_rows": dict(
        penalty=GroupL2(axes=(-1,)),
        shape=(D, C),
        value=lambda z: sum(np.linalg.norm(z[i]) for i in range(z.shape[0])),
        dual=lambda w: max(np.linalg.norm(w[i]) for i in range(w.shape[0])),
        blocks=lambda z: [z],
        cvx_r=lambda ws: cp.sum(cp.norm(ws[0], 2, axis=1)),
    ),
    "nuclear": dict(
        penalty=NuclearNorm(),
        shape=(D, C),
        value=_nuc,
        dual=_spec,
        blocks=lambda z: [z],
        cvx_r=lambda ws: cp.normNuc(ws[0]),
    ),
    "nuclear_wide": dict(
        penalty=NuclearNorm(),
        shape=(2, 6),
        value=_nuc,
        dual=_spec,
        blocks=lambda z: [z],
        cvx_r=lambda ws: cp.normNuc(ws[0]),
    ),
    "nuclear_tall": dict(  # d ≥ 2c: the QR-reduced SVD path
        penalty=NuclearNorm(),
        shape=(7, 2),
        value=_nuc,
        dual=_spec,
        blocks=lambda z: [z],
        cvx_r=lambda ws: cp.normNuc(ws[0]),
    ),
    "nuclear_column": dict(  # a (d, 1) matrix: nuclear norm = ℓ2 norm (the library's special case)
        penalty=NuclearNorm(),
        shape=(D, 1),
        value=_nuc,
        dual=_spec,
        blocks=lambda z: [z],
        cvx_r=lambda ws: cp.normNuc(ws[0]),
    ),
    "block_nuclear": dict(
        penalty=BlockNuclearNorm(),
        shape=(P, D, C),
        value=lambda z: sum(_nuc(z[j]) for j in range(z.shape[0])),
        dual=lambda w: max(_spec(w[j]) for j in range(w.shape[0])),
        blocks=lambda z: [z[j] for j in range(z.shape[0])],
        cvx_r=lambda ws: sum(cp.normNuc(w) for w in ws),
    ),
    "block_nuclear_tall": dict(
        penalty=BlockNuclearNorm(),
        shape=(P, 7, 3),
        value=lambda z: sum(_nuc(z[j]) for j in range(z.shape[0])),
        dual=lambda w: max(_spec(w[j]) for j in range(w.shape[0])),
        blocks=lambda z: [z[j] for j in range(z.shape[0])],
        cvx_r=lambda ws: sum(cp.normNuc(w) for w in ws),
    ),
    "block_nuclear_wide": dict(
        penalty=BlockNuclearNorm(),
        shape=(P, 2, 5),
        value=lambda z: sum(_nuc(z[j]) for j in range(z.shape[0])),
        dual=lambda w: max(_spec(w[j]) for j in range(w.shape[0])),
        blocks=lambda z: [z[j] for j in range(z.shape[0])],
        cvx_r=lambda ws: sum(cp.normNuc(w) for w in ws),
    ),
    "block_nuclear_c1": dict(
        penalty=BlockNuclearNorm(),
        shape=(P, D, 1),
        value=lambda z: sum(_nuc(z[j]) for j in range(z.shape[0])),
        dual=lambda w: max(_spec(w[j]) for j in range(w.shape[0])),
        blocks=lambda z: [z[j] for j in range(z.shape[0])],
        cvx_r=lambda ws: sum(cp.normNuc(w) for w in ws),
    ),
    "l1": dict(
        penalty=L1Norm(),
        shape=(P, D, C),
        value=lambda z: np.abs(z).sum(),
        dual=lambda w: np.abs(w).max(),
        blocks=lambda z: [z[j] for j in range(z.shape[0])],
        cvx_r=lambda ws: sum(cp.sum(cp.abs(w)) for w in ws),
    ),
}
IDS = list(CASES)


def _cvx_prox(case, z: np.ndarray, t: float) -> np.ndarray:
    """argmin_W ½‖W − Z‖² + t R(W), solved by cvxpy/Clarabel."""
    zb = case["blocks"](z)
    ws = [cp.Variable(b.shape) for b in zb]
    obj = 0.5 * sum(cp.sum_squares(w - b) for w, b in zip(ws, zb, strict=True)) + t * case["cvx_r"](ws)
    prob = cp.Problem(cp.Minimize(obj))
    prob.solve(solver=cp.CLARABEL, **TIGHT)
    assert prob.status == cp.OPTIMAL
    return np.stack([w.value for w in ws]).reshape(z.shape)


@pytest.mark.parametrize("key", IDS)
def test_value_matches_definition(key):
    case = CASES[key]
    z = _rand(case["shape"], seed=1)
    assert float(case["penalty"].value(torch.tensor(z))) == pytest.approx(case["value"](z), rel=1e-12)


@pytest.mark.parametrize("key", IDS)
def test_dual_norm_matches_definition(key):
    case = CASES[key]
    w = _rand(case["shape"], seed=2)
    assert float(case["penalty"].dual_norm(torch.tensor(w))) == pytest.approx(case["dual"](w), rel=1e-12)


@pytest.mark.parametrize("key", IDS)
def test_dual_norm_is_sup_over_unit_ball_cvxpy(key):
    """R°(W) = sup_{R(Z) ≤ 1} ⟨W, Z⟩, the supremum computed by cvxpy."""
    case = CASES[key]
    w = _rand(case["shape"], seed=3)
    wb = case["blocks"](w)
    zs = [cp.Variable(b.shape) for b in wb]
    prob = cp.Problem(
        cp.Maximize(sum(cp.sum(cp.multiply(b, z)) for b, z in zip(wb, zs, strict=True))), [case["cvx_r"](zs) <= 1]
    )
    prob.solve(solver=cp.CLARABEL)
    assert prob.status == cp.OPTIMAL
    assert float(case["penalty"].dual_norm(torch.tensor(w))) == pytest.approx(prob.value, rel=1e-7)


@pytest.mark.parametrize("key", IDS)
@pytest.mark.parametrize("t_quantile", [0.3, 0.7])
def test_prox_matches_cvxpy(key, t_quantile):
    case = CASES[key]
    z = _rand(case["shape"], seed=4)
    # a threshold between the smallest and the largest "group size", so some groups shrink to zero and some do not
    t = float(np.quantile(np.abs(z), t_quantile)) * (2.0 if "l1" not in key else 1.0)
    ours = case["penalty"].prox(torch.tensor(z), t).numpy()
    ref = _cvx_prox(case, z, t)
    np.testing.assert_allclose(ours, ref, atol=1e-6, rtol=0)
    assert ours.shape == z.shape


@pytest.mark.parametrize("key", IDS)
def test_prox_optimality_conditions(key):
    """Moreau: the residual (Z − prox)/t lies in the dual unit ball and ⟨Z − prox, prox⟩ = t·R(prox)."""
    case = CASES[key]
    pen = case["penalty"]
    for seed, t in [(5, 0.2), (6, 1.0), (7, 2.5)]:
        z = torch.tensor(_rand(case["shape"], seed=seed))
        p = pen.prox(z, t)
        resid = (z - p) / t
        assert float(pen.dual_norm(resid)) <= 1 + 1e-10
        assert float((resid * p).sum()) == pytest.approx(float(pen.value(p)), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("key", IDS)
def test_prox_edge_cases(key):
    case = CASES[key]
    pen = case["penalty"]
    z = torch.tensor(_rand(case["shape"], seed=8))
    torch.testing.assert_close(pen.prox(z, 0.0), z, rtol=1e-12, atol=1e-12)
    # t ≥ R°(Z) is exactly the threshold at which the prox is zero
    big = float(pen.dual_norm(z))
    assert torch.count_nonzero(pen.prox(z, big * (1 + 1e-9))) == 0
    assert torch.count_nonzero(pen.prox(z, big * 0.99)) > 0
    zero = torch.zeros_like(z)
    assert torch.count_nonzero(pen.prox(zero, 0.5)) == 0
    assert float(pen.value(zero)) == 0.0


@pytest.mark.parametrize("key", IDS)
def test_float32(key):
    case = CASES[key]
    pen = case["penalty"]
    z = _rand(case["shape"], seed=9)
    z32 = torch.tensor(z, dtype=torch.float32)
    p32 = pen.prox(z32, 0.7)
    assert p32.dtype == torch.float32
    np.testing.assert_allclose(p32.double().numpy(), pen.prox(torch.tensor(z), 0.7).numpy(), atol=1e-5)
    assert float(pen.value(z32)) == pytest.approx(case["value"](z), rel=1e-5)
    assert float(pen.dual_norm(z32)) == pytest.approx(case["dual"](z), rel=1e-5)


def test_block_nuclear_with_one_column_is_group_l2():
    z = torch.tensor(_rand((6, D, 1), seed=10))
    bn, g = BlockNuclearNorm(), GroupL2(axes=(1, 2))
    assert float(bn.value(z)) == pytest.approx(float(g.value(z)), rel=1e-14)
    assert float(bn.dual_norm(z)) == pytest.approx(float(g.dual_norm(z)), rel=1e-14)
    for t in (0.1, 1.0, 2.0):
        torch.testing.assert_close(bn.prox(z, t), g.prox(z, t), rtol=1e-13, atol=1e-14)


def test_block_nuclear_is_sum_of_nuclear_norms():
    z = torch.tensor(_rand((P, D, C), seed=11))
    nn_ = NuclearNorm()
    total = sum(float(nn_.value(z[j])) for j in range(P))
    assert float(BlockNuclearNorm().value(z)) == pytest.approx(total, rel=1e-13)
    prox = BlockNuclearNorm().prox(z, 0.9)
    for j in range(P):
        torch.testing.assert_close(prox[j], nn_.prox(z[j], 0.9), rtol=1e-12, atol=1e-13)


def test_nuclear_prox_of_low_rank_keeps_rank():
    """Singular-value soft-thresholding: a rank-1 input stays rank 1 with σ reduced by t."""
    rng = np.random.default_rng(12)
    u, v = rng.standard_normal((D, 1)), rng.standard_normal((1, C))
    z = 3.0 * (u / np.linalg.norm(u)) @ (v / np.linalg.norm(v))
    out = NuclearNorm().prox(torch.tensor(z), 1.0).numpy()
    s = np.linalg.svd(out, compute_uv=False)
    assert s[0] == pytest.approx(2.0, rel=1e-12)
    assert s[1:].max() < 1e-12


def test_get_penalty():
    assert isinstance(get_penalty("nuclear"), NuclearNorm)
    assert isinstance(get_penalty("block_nuclear"), BlockNuclearNorm)
    assert isinstance(get_penalty("l1"), L1Norm)
    with pytest.raises(ValueError, match="unknown penalty 'group_l2'"):
        get_penalty("group_l2")
