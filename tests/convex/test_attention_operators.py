"""Convex attention-style heads with GAP (Sahiner et al. Thm 3.1, 4.1, 4.4, 4.7 and their gated-ReLU analogues).

Self-attention, MLP-Mixer and (B-)FNO operators, their non-convex twins and the recovery maps:

* adjoints pass the dot-product test in float64;
* the operators equal the non-convex multi-head twins at lifted weights and at SVD-recovered weights;
* FISTA's certified optimum agrees with an independent cvxpy program whose linear map is built here with explicit
  loops from the theorems' definitions (masks, local Gram matrices, circulant shifts, block indexing), not from the
  library operators;
* the convex objective equals the non-convex objective at the recovered heads, and Adam on the twin never goes
  below the certified lower bound of the convex optimum.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch

from attnduality.convex import (
    FISTA,
    BlockNuclearNorm,
    CompositeProblem,
    CrossEntropyLoss,
    NuclearNorm,
    SquaredLoss,
    beta_max,
    regularized_objective,
)
from attnduality.convex.operators.attention import (
    GatedAttentionOperator,
    LinearAttentionOperator,
    attention_masks,
    sample_attention_gates,
)
from attnduality.convex.operators.fno import FNOOperator, GatedFNOOperator, circulant, fno_masks, sample_fno_gates
from attnduality.convex.operators.mixer import (
    GatedMixerOperator,
    LinearMixerOperator,
    mixer_masks,
    sample_mixer_gates,
)
from attnduality.convex.recovery_attention import (
    attention_heads_from_z,
    attention_weights_to_z,
    fno_weights_to_z,
    gated_attention_to_module,
    gated_attention_weights_to_z,
    gated_fno_to_module,
    gated_mixer_to_module,
    linear_attention_to_module,
    linear_fno_to_module,
    linear_mixer_to_module,
    mixer_weights_to_z,
)
from attnduality.convex.solvers import SemismoothNewton
from attnduality.nn.token_twins import (
    GatedAttentionHead,
    GatedFNOHead,
    GatedMixerHead,
    LinearAttentionHead,
    LinearFNOHead,
    LinearMixerHead,
)

F64 = torch.float64
TOL = 1e-9
REL = 1e-5


def _x(n: int, s: int, d: int, seed: int) -> torch.Tensor:
    return torch.randn(n, s, d, generator=torch.Generator().manual_seed(seed), dtype=F64)


def _operator(kind: str, x: torch.Tensor, c: int, m: int = 2, scale: float = 1.0, cache: bool | None = None):
    if kind == "linear":
        return LinearAttentionOperator(x, c, scale=scale, cache=cache)
    gates = sample_attention_gates(x.shape[2], m, seed=11)
    return GatedAttentionOperator(x, gates, c, scale=scale, cache=cache)


def _chunked(op):
    op._cache, op.chunk = None, 2  # force recomputation in chunks of 2 samples
    if hasattr(op, "_grams"):  # the linear operator's Gram matrices, likewise
        op._grams, op._gram_chunk = None, 2
    return op


# ----------------------------------------------------------------------------------------------------------------
# Operators: adjoint, masks, non-convex twins, lifting and recovery
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunked", [False, True])
def test_linear_attention_gram_path_equals_the_lifted_features(chunked):
    """The Gram-matrix GEMM gives Φ · Z and Φᵀ · g of the (N, d³) features of Thm 3.1 (eq. (13))."""
    x = _x(7, 5, 3, 4)
    op = LinearAttentionOperator(x, 2, scale=0.3)
    op = _chunked(op) if chunked else op
    phi = op.features()
    assert phi.shape == (7, 27)
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(op.z_shape, generator=gen, dtype=F64)
    g = torch.randn(7, 2, generator=gen, dtype=F64)
    torch.testing.assert_close(op.forward(z), phi @ z.reshape(27, 2), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(op.adjoint(g), (phi.T @ g).reshape(op.z_shape), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cached", [True, False])
@pytest.mark.parametrize("kind", ["linear", "gated"])
def test_adjoint_dot_product(kind, cached):
    op = _operator(kind, _x(9, 4, 3, 0), c=2, m=3, scale=0.7)
    op = op if cached else _chunked(op)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        z = torch.randn(op.z_shape, generator=gen, dtype=F64)
        g = torch.randn(op.n_samples, op.n_outputs, generator=gen, dtype=F64)
        az = op.forward(z)
        lhs, rhs = float((az * g).sum()), float((z * op.adjoint(g)).sum())
        assert abs(lhs - rhs) <= 1e-12 * float(az.norm() * g.norm())
    assert op.adjoint(g).shape == op.z_shape


def test_masks_match_definition():
    x, gates = _x(5, 4, 3, 2), sample_attention_gates(3, 2, seed=3)
    m = attention_masks(x, gates)
    assert m.shape == (5, 2, 4, 4)
    for n in range(5):
        for j in range(2):
            for t in range(4):
                for u in range(4):
                    assert m[n, j, t, u] == float(x[n, t] @ gates[j] @ x[n, u] >= 0)
    assert bool((m == 0).any()) and bool((m == 1).any())


@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_linear_operator_equals_twin(scale):
    """``A(Σ_h vec_F(W1_h) vec_F(W2_hᵀ)ᵀ) = mean_t Σ_h scale (X W1_h Xᵀ) X W2_h``, pooled and per token."""
    x, gen = _x(7, 4, 3, 4), torch.Generator().manual_seed(5)
    w1, w2 = torch.randn(5, 3, 3, generator=gen, dtype=F64), torch.randn(5, 3, 2, generator=gen, dtype=F64)
    op, head = LinearAttentionOperator(x, 2, scale=scale), LinearAttentionHead(w1, w2, scale=scale)
    z = attention_weights_to_z(w1, w2)
    # the lifting written entry by entry: Z[k*d + a, l*c + b] = Σ_h W1_h[a, k] W2_h[l, b]
    assert float(z[1 * 3 + 2, 2 * 2 + 1]) == pytest.approx(float((w1[:, 2, 1] * w2[:, 2, 1]).sum()), rel=1e-14)
    with torch.no_grad():
        torch.testing.assert_close(op.forward(z), head(x), rtol=0, atol=1e-10)
        torch.testing.assert_close(op.token_outputs(z), head.token_forward(x), rtol=0, atol=1e-10)
        torch.testing.assert_close(_chunked(op).forward(z), head(x), rtol=0, atol=1e-10)
    torch.testing.assert_close(op.token_outputs(z).mean(1), op.forward(z), rtol=0, atol=1e-12)
    # Thm 3.1 literally: Y = X Σ_{k,l} G[k,l] Z^{(k,l)} with G = scale XᵀX
    n, d, c = 3, 3, 2
    g = scale * x[n].T @ x[n]
    y = sum(g[k, l] * x[n] @ z[k * d : (k + 1) * d, l * c : (l + 1) * c] for k in range(d) for l in range(d))
    torch.testing.assert_close(op.token_outputs(z)[n], y, rtol=0, atol=1e-12)


@pytest.mark.parametrize("scale", [1.0, 0.25])
def test_gated_operator_equals_twin(scale):
    """``A(Z) = mean_t Σ_j Σ_h (M_j ⊙ scale X W1 Xᵀ) X W2`` at ``Z_j = Σ_h vec_F(W1_jh) vec_F(W2_jhᵀ)ᵀ``."""
    x, gen = _x(7, 4, 3, 6), torch.Generator().manual_seed(7)
    gates = sample_attention_gates(3, 3, seed=8)
    w1, w2 = torch.randn(3, 4, 3, 3, generator=gen, dtype=F64), torch.randn(3, 4, 3, 2, generator=gen, dtype=F64)
    op, head = GatedAttentionOperator(x, gates, 2, scale=scale), GatedAttentionHead(gates, w1, w2, scale=scale)
    z = gated_attention_weights_to_z(w1, w2)
    with torch.no_grad():
        torch.testing.assert_close(op.forward(z), head(x), rtol=0, atol=1e-10)
        torch.testing.assert_close(op.token_outputs(z), head.token_forward(x), rtol=0, atol=1e-10)
        torch.testing.assert_close(_chunked(op).forward(z), head(x), rtol=0, atol=1e-10)
    # per-token form: Σ_j Σ_{k,l} diag(g_j[:, k, l]) X Z_j^{(k,l)} with g from the loop definition
    n, d, c = 2, 3, 2
    y = torch.zeros(4, c, dtype=F64)
    for j in range(3):
        mask = attention_masks(x[n : n + 1], gates[j : j + 1])[0, 0]
        for k in range(d):
            for l in range(d):
                gl = scale * (mask * (x[n, :, k] * x[n, :, l])[None, :]).sum(1)
                y += gl[:, None] * (x[n] @ z[j, k * d : (k + 1) * d, l * c : (l + 1) * c])
    torch.testing.assert_close(op.token_outputs(z)[n], y, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["linear", "gated"])
def test_scale_is_linear_and_recorded(kind):
    x = _x(6, 3, 2, 9)
    base, scaled = _operator(kind, x, 2), _operator(kind, x, 2, scale=1 / 3)
    z = torch.randn(base.z_shape, generator=torch.Generator().manual_seed(0), dtype=F64)
    assert scaled.scale == pytest.approx(1 / 3)
    torch.testing.assert_close(scaled.forward(z), base.forward(z) / 3, rtol=1e-13, atol=1e-13)


def test_recovery_roundtrip_and_weight_decay():
    """SVD recovery: lifting the recovered heads gives Z back; the twin equals A(Z); weight decay = ‖Z‖_*."""
    gen = torch.Generator().manual_seed(10)
    x = _x(6, 4, 3, 11)
    z = torch.randn(9, 3, generator=gen, dtype=F64) @ torch.randn(3, 6, generator=gen, dtype=F64)  # rank 3
    w1, w2 = attention_heads_from_z(z, 3)
    assert w1.shape == (3, 3, 3) and w2.shape == (3, 3, 2)  # zero singular values pruned
    torch.testing.assert_close(attention_weights_to_z(w1, w2), z, rtol=0, atol=1e-12)
    head, op = linear_attention_to_module(z, scale=0.5), LinearAttentionOperator(x, 2, scale=0.5)
    with torch.no_grad():
        torch.testing.assert_close(head(x), op.forward(z), rtol=0, atol=1e-10)
    assert float(head.weight_decay().detach()) == pytest.approx(float(torch.linalg.svdvals(z).sum()), rel=1e-12)

    gates = sample_attention_gates(3, 2, seed=12)
    zg = torch.stack([z, torch.zeros_like(z)])
    zg[1, :, :2] = torch.randn(9, 2, generator=gen, dtype=F64)  # rank 2 block: padded with one zero head
    gh, gop = gated_attention_to_module(zg, gates, scale=0.5), GatedAttentionOperator(x, gates, 2, scale=0.5)
    assert gh.n_heads == 3
    torch.testing.assert_close(gated_attention_weights_to_z(gh.w1, gh.w2), zg, rtol=0, atol=1e-12)
    with torch.no_grad():
        torch.testing.assert_close(gh(x), gop.forward(zg), rtol=0, atol=1e-10)
    assert float(gh.weight_decay().detach()) == pytest.approx(float(torch.linalg.svdvals(zg).sum()), rel=1e-12)


def test_input_validation():
    with pytest.raises(ValueError):
        LinearAttentionOperator(torch.zeros(3, 4, dtype=F64), 2)
    with pytest.raises(ValueError):
        GatedAttentionOperator(torch.zeros(3, 4, 2, dtype=F64), torch.zeros(2, 3, 3, dtype=F64), 2)
    with pytest.raises(ValueError):
        LinearAttentionHead(torch.zeros(2, 3, 3), torch.zeros(1, 3, 2))
    with pytest.raises(ValueError):
        attention_heads_from_z(torch.zeros(8, 6), 3)


# ----------------------------------------------------------------------------------------------------------------
# All six heads through one interface: operator, penalty, random twin, lifting, recovery
# ----------------------------------------------------------------------------------------------------------------
# name: (s, d, c, grid, B); gated heads use m = 2 gates
SHAPES = {
    "attn-linear": (4, 3, 2, None, 1),
    "attn-gated": (4, 3, 2, None, 1),
    "mixer-linear": (3, 3, 2, None, 1),
    "mixer-gated": (3, 3, 2, None, 1),
    "fno-linear": (4, 4, 4, None, 2),
    "fno-gated": (4, 4, 4, (2, 2), 2),
    "fno-gated-1d": (5, 2, 2, None, 1),
}
KINDS = list(SHAPES)
M_GATES = 2


def make_operator(kind: str, x: torch.Tensor, cache: bool | None = None):
    s, d, c, grid, groups = SHAPES[kind]
    if kind == "attn-linear":
        return LinearAttentionOperator(x, c, cache=cache)
    if kind == "attn-gated":
        return GatedAttentionOperator(x, sample_attention_gates(d, M_GATES, seed=11), c, cache=cache)
    if kind == "mixer-linear":
        return LinearMixerOperator(x, c)
    if kind == "mixer-gated":
        return GatedMixerOperator(x, sample_mixer_gates(s, M_GATES, seed=12), c, cache=cache)
    if kind == "fno-linear":
        return FNOOperator(x, c, groups=groups, grid=grid)
    return GatedFNOOperator(x, sample_fno_gates(s, d, M_GATES, seed=13, groups=groups), c, grid=grid, cache=cache)


def penalty(kind: str):
    return NuclearNorm() if kind in ("attn-linear", "mixer-linear") else BlockNuclearNorm()


def random_twin(kind: str, op, h: int, seed: int, std: float = 1.0):
    """A non-convex twin with random weights, and its lifted Z (written with the documented vec_F convention)."""
    s, d, c, grid, groups = SHAPES[kind]
    gen = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return std * torch.randn(*shape, generator=gen, dtype=F64)

    if kind == "attn-linear":
        w1, w2 = rnd(h, d, d), rnd(h, d, c)
        return LinearAttentionHead(w1, w2), attention_weights_to_z(w1, w2)
    if kind == "attn-gated":
        w1, w2 = rnd(M_GATES, h, d, d), rnd(M_GATES, h, d, c)
        return GatedAttentionHead(op.gates, w1, w2), gated_attention_weights_to_z(w1, w2)
    if kind == "mixer-linear":
        w1, w2 = rnd(h, s, s), rnd(h, d, c)
        return LinearMixerHead(w1, w2), mixer_weights_to_z(w1, w2)
    if kind == "mixer-gated":
        w1, w2 = rnd(M_GATES, h, s, s), rnd(M_GATES, h, d, c)
        return GatedMixerHead(op.gates, w1, w2), mixer_weights_to_z(w1, w2)
    db, cb = d // groups, c // groups
    if kind == "fno-linear":
        w1, w2 = rnd(groups, h, s, db), rnd(groups, h, cb)
        return LinearFNOHead(w1, w2, grid=grid), fno_weights_to_z(w1, w2)
    w1, w2 = rnd(groups, M_GATES, h, s, db), rnd(groups, M_GATES, h, cb)
    return GatedFNOHead(op.gates, w1, w2, grid=grid), fno_weights_to_z(w1, w2)


def recover(kind: str, z: torch.Tensor, op):
    s, d, _, grid, _ = SHAPES[kind]
    return {
        "attn-linear": lambda: linear_attention_to_module(z),
        "attn-gated": lambda: gated_attention_to_module(z, op.gates),
        "mixer-linear": lambda: linear_mixer_to_module(z, d),
        "mixer-gated": lambda: gated_mixer_to_module(z, op.gates, d),
        "fno-linear": lambda: linear_fno_to_module(z, s, grid),
    }.get(kind, lambda: gated_fno_to_module(z, op.gates, grid))()


@pytest.mark.parametrize("kind", [k for k in KINDS if not k.startswith("attn")])
@pytest.mark.parametrize("cached", [True, False])
def test_adjoint_dot_product_all(kind, cached):
    s, d, c, _, _ = SHAPES[kind]
    op = make_operator(kind, _x(9, s, d, 0))
    if not cached and hasattr(op, "_cache"):
        op = _chunked(op)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        z = torch.randn(op.z_shape, generator=gen, dtype=F64)
        g = torch.randn(op.n_samples, c, generator=gen, dtype=F64)
        az = op.forward(z)
        assert abs(float((az * g).sum()) - float((z * op.adjoint(g)).sum())) <= 1e-12 * float(az.norm() * g.norm())


@pytest.mark.parametrize("kind", KINDS)
def test_operator_equals_twin_all(kind):
    """``A(lift(W)) = twin(X)`` pooled and per token (the operators' token outputs use other code paths: FFT for
    FNO, einsum over the token formula for attention and Mixer); SVD recovery gives Z back and a twin equal to A(Z)."""
    s, d, c, _, _ = SHAPES[kind]
    x = _x(7, s, d, 21)
    op = make_operator(kind, x)
    twin, z = random_twin(kind, op, h=3, seed=22)
    assert tuple(z.shape) == tuple(op.z_shape)
    with torch.no_grad():
        torch.testing.assert_close(op.forward(z), twin(x), rtol=0, atol=1e-10)
        torch.testing.assert_close(op.token_outputs(z), twin.token_forward(x), rtol=0, atol=1e-10)
        torch.testing.assert_close(op.token_outputs(z).mean(1), op.forward(z), rtol=0, atol=1e-12)
        if hasattr(op, "_cache"):
            torch.testing.assert_close(_chunked(make_operator(kind, x)).forward(z), twin(x), rtol=0, atol=1e-10)
        rec = recover(kind, z, op)
        torch.testing.assert_close(rec(x), op.forward(z), rtol=0, atol=1e-10)
        wd = float(rec.weight_decay())
    assert wd == pytest.approx(float(torch.linalg.svdvals(z).sum()), rel=1e-12)
    lifted = {"attn-linear": attention_weights_to_z, "attn-gated": gated_attention_weights_to_z}
    z_back = lifted.get(kind, mixer_weights_to_z if kind.startswith("mixer") else fno_weights_to_z)(rec.w1, rec.w2)
    torch.testing.assert_close(z_back, z, rtol=0, atol=1e-12)


def test_mixer_masks_and_blocks_match_definition():
    """``M_j = 1{U_j X ≥ 0}``; eq. (19): ``Y = Σ_{t,k} X[t,k] Z̃^{(t,k)}``, ``Z̃^{(t,k)} = Z[t*s:(t+1)*s, k::d]``."""
    s, d, c = 3, 3, 2
    x, gates = _x(4, s, d, 30), sample_mixer_gates(s, 2, seed=31)
    m = mixer_masks(x, gates)
    for n in range(4):
        for j in range(2):
            for r in range(s):
                for k in range(d):
                    assert m[n, j, r, k] == float(sum(gates[j, r, t] * x[n, t, k] for t in range(s)) >= 0)
    z = torch.randn(s * s, d * c, generator=torch.Generator().manual_seed(32), dtype=F64)
    y = sum(x[1, t, k] * z[t * s : (t + 1) * s, k::d] for t in range(s) for k in range(d))
    torch.testing.assert_close(LinearMixerOperator(x, c).token_outputs(z)[1], y, rtol=0, atol=1e-12)


@pytest.mark.parametrize("grid", [(6,), (2, 3)])
def test_fno_lemma_4_3_and_circulant(grid):
    """Lemma 4.3: the FNO block (22) (DFT over the token grid, per-frequency d×d weights V = DFT(L), inverse DFT, then
    W1, W2) equals ``circ(X) w1_j w2_jᵀ`` with ``w1_j[δ] = L[δ] W1[:, j]``; and ``circ`` is the documented gather."""
    s, d, h, c = 6, 3, 4, 2
    gen = torch.Generator().manual_seed(40)
    x = torch.randn(5, s, d, generator=gen, dtype=F64)
    kern = torch.randn(s, d, d, generator=gen, dtype=F64)
    w1, w2 = torch.randn(d, h, generator=gen, dtype=F64), torch.randn(h, c, generator=gen, dtype=F64)
    dims = tuple(range(1, 1 + len(grid)))
    fx = torch.fft.fftn(x.reshape(5, *grid, d), dim=dims)
    fv = torch.fft.fftn(kern.reshape(*grid, d, d), dim=tuple(range(len(grid))))
    y = torch.fft.ifftn(torch.einsum("n...a,...ab->n...b", fx, fv), dim=dims).real.reshape(5, s, d)
    expected = y @ w1 @ w2
    merged = torch.einsum("eab,bj->jea", kern, w1)  # (h, s, d): w1_j[δ, :] = L[δ] W1[:, j]
    head = LinearFNOHead(merged[None], w2[None], grid=grid)
    with torch.no_grad():
        torch.testing.assert_close(head.token_forward(x), expected, rtol=0, atol=1e-11)
    circ = circulant(x, grid)
    shape = grid if len(grid) == 2 else (1, s)
    for t in range(s):
        for delta in range(s):
            (t1, t2), (d1, d2) = divmod(t, shape[1]), divmod(delta, shape[1])
            src = ((t1 - d1) % shape[0]) * shape[1] + (t2 - d2) % shape[1]
            torch.testing.assert_close(circ[:, t, delta * d : (delta + 1) * d], x[:, src], rtol=0, atol=0)


def test_fno_gap_collapse_and_masks():
    """Linear (B-)FNO under GAP is ``x̄_bᵀ Σ_δ Z_b[δ]`` (derived in :mod:`attnduality.convex.operators.fno`); gated
    masks are ``1{circ(X^{(b)}) u ≥ 0}``."""
    s, d, c, groups = 4, 4, 4, 2
    x = _x(6, s, d, 50)
    op = FNOOperator(x, c, groups=groups)
    z = torch.randn(op.z_shape, generator=torch.Generator().manual_seed(51), dtype=F64)
    xbar = x.mean(1)
    for b in range(groups):
        zsum = z[b].reshape(s, 2, 2).sum(0)
        torch.testing.assert_close(op.forward(z)[:, 2 * b : 2 * b + 2], xbar[:, 2 * b : 2 * b + 2] @ zsum)
    gates = sample_fno_gates(s, d, 3, seed=52, groups=groups)
    circ = circulant(x).reshape(6, s, s, d)
    for b in range(groups):
        pre = torch.einsum("ntek,jek->njt", circ[..., 2 * b : 2 * b + 2], gates[b])
        torch.testing.assert_close(fno_masks(x, gates)[:, b], (pre >= 0).to(F64), rtol=0, atol=0)


def test_input_validation_all():
    x = torch.zeros(3, 4, 4, dtype=F64)
    with pytest.raises(ValueError):
        FNOOperator(x, 3, groups=2)  # 2 does not divide c = 3
    with pytest.raises(ValueError):
        FNOOperator(x, 2, grid=(3, 2))
    with pytest.raises(ValueError):
        GatedMixerOperator(x, torch.zeros(2, 3, 3, dtype=F64), 2)
    with pytest.raises(ValueError):
        GatedFNOOperator(x, torch.zeros(2, 2, 4, 3, dtype=F64), 2)


# ----------------------------------------------------------------------------------------------------------------
# Independent linear maps, written with explicit loops from each theorem's definition
# ----------------------------------------------------------------------------------------------------------------
# Each returns A with ``logits.reshape(N*c) = A @ concat_blocks vec_F(Z_block)``, blocks in the library's order.
def attention_map(x: np.ndarray, gates: np.ndarray | None, c: int) -> np.ndarray:
    """``y_i[t, b] = Σ_j Σ_{k,l,a} g_ij[t,k,l] X_i[t,a] Z_j[k*d + a, l*c + b]``, ``logits_i = mean_t y_i[t]``,
    ``g_ij[t,k,l] = Σ_u M_ij[t,u] X_i[u,k] X_i[u,l]``, ``M_ij[t,u] = 1{x_tᵀ U_j x_u ≥ 0}`` (``M = 1``: Thm 3.1)."""
    n, s, d = x.shape
    m = 1 if gates is None else gates.shape[0]
    nz = d * d * d * c
    a_mat = np.zeros((n * c, m * nz))
    for i in range(n):
        xi = x[i]
        for j in range(m):
            mask = np.ones((s, s))
            if gates is not None:
                for t in range(s):
                    for u in range(s):
                        score = sum(xi[t, p] * gates[j, p, q] * xi[u, q] for p in range(d) for q in range(d))
                        mask[t, u] = float(score >= 0)
            for t in range(s):
                for k in range(d):
                    for l in range(d):
                        g = sum(mask[t, u] * xi[u, k] * xi[u, l] for u in range(s))
                        for a in range(d):
                            for b in range(c):
                                col = j * nz + (k * d + a) + (l * c + b) * d * d  # Fortran-order vec of Z_j
                                a_mat[i * c + b, col] += g * xi[t, a] / s
    return a_mat


def mixer_map(x: np.ndarray, gates: np.ndarray | None, c: int) -> np.ndarray:
    """``y_i[r, p] = Σ_j Σ_{t,k} M_ij[r,k] X_i[t,k] Z_j[t*s + r, p*d + k]`` (Thm 4.1 / gated 4.2),
    ``M_ij[r,k] = 1{Σ_t' U_j[r,t'] X_i[t',k] ≥ 0}`` (``M = 1`` when linear), ``logits_i = mean_r y_i[r]``."""
    n, s, d = x.shape
    m = 1 if gates is None else gates.shape[0]
    nz = s * s * d * c
    a_mat = np.zeros((n * c, m * nz))
    for i in range(n):
        for j in range(m):
            for r in range(s):
                for k in range(d):
                    mask = 1.0 if gates is None else float(sum(gates[j, r, u] * x[i, u, k] for u in range(s)) >= 0)
                    for t in range(s):
                        for p in range(c):
                            col = j * nz + (t * s + r) + (p * d + k) * s * s
                            a_mat[i * c + p, col] += mask * x[i, t, k] / s
    return a_mat


def fno_map(x: np.ndarray, gates: np.ndarray | None, c: int, groups: int, grid) -> np.ndarray:
    """``y_i[t, b*c_b + p] = Σ_j D_bj[t] Σ_{δ,k} X_i[t − δ, b*d_b + k] Z_bj[δ*d_b + k, p]`` (Thm 4.4/4.7, gated
    4.5/4.8) with ``t − δ`` taken on the token grid, ``D_bj[t] = 1{Σ_{δ,k} X_i[t − δ, b*d_b + k] U_bj[δ, k] ≥ 0}``."""
    n, s, d = x.shape
    rows, cols = (1, s) if grid is None else grid
    m = 1 if gates is None else gates.shape[1]
    db, cb = d // groups, c // groups
    nz = s * db * cb

    def shifted(t: int, delta: int) -> int:
        (t1, t2), (d1, d2) = divmod(t, cols), divmod(delta, cols)
        return ((t1 - d1) % rows) * cols + (t2 - d2) % cols

    a_mat = np.zeros((n * c, groups * m * nz))
    for i in range(n):
        for b in range(groups):
            for j in range(m):
                for t in range(s):
                    mask = 1.0
                    if gates is not None:
                        pre = sum(
                            x[i, shifted(t, e), b * db + k] * gates[b, j, e, k] for e in range(s) for k in range(db)
                        )
                        mask = float(pre >= 0)
                    for e in range(s):
                        for k in range(db):
                            for p in range(cb):
                                col = (b * m + j) * nz + (e * db + k) + p * s * db
                                a_mat[i * c + b * cb + p, col] += mask * x[i, shifted(t, e), b * db + k] / s
    return a_mat


def explicit_map(kind: str, x: np.ndarray, op) -> np.ndarray:
    _, _, c, grid, groups = SHAPES[kind]
    gates = op.gates.numpy() if hasattr(op, "gates") else None
    if kind.startswith("attn"):
        return attention_map(x, gates, c)
    if kind.startswith("mixer"):
        return mixer_map(x, gates, c)
    return fno_map(x, gates, c, groups, grid)


def _blocks(z: np.ndarray, op) -> np.ndarray:
    return z.reshape(-1, *op.z_shape[-2:])


def cvx_solve(a_mat: np.ndarray, op, y, loss: str, beta: float) -> tuple[float, np.ndarray]:
    """``min (1/N) Σ L(logits_i, y_i) + β Σ_blocks ‖Z_block‖_*`` with the explicit map ``a_mat`` (Clarabel)."""
    n, c = op.n_samples, op.n_outputs
    n_blocks = int(np.prod(op.z_shape[:-2]))
    zs = [cp.Variable(op.z_shape[-2:]) for _ in range(n_blocks)]
    u = cp.reshape(a_mat @ cp.hstack([cp.vec(z, order="F") for z in zs]), (n, c), order="C")
    if loss == "squared":
        fit = 0.5 * cp.sum_squares(u - y) / n
    else:
        fit = (cp.sum(cp.log_sum_exp(u, axis=1)) - cp.sum(cp.multiply(np.eye(c)[y], u))) / n
    prob = cp.Problem(cp.Minimize(fit + beta * sum(cp.normNuc(z) for z in zs)))
    prob.solve(solver=cp.CLARABEL)
    assert prob.status == cp.OPTIMAL, prob.status
    return float(prob.value), np.stack([v.value for v in zs]).reshape(op.z_shape)


def _problem(kind: str, loss: str, seed: int, n: int = 16, frac: float = 0.1):
    s, d, c, _, _ = SHAPES[kind]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, s, d))
    y = rng.standard_normal((n, c)) if loss == "squared" else rng.integers(0, c, n)
    op = make_operator(kind, torch.tensor(x))
    our_loss = SquaredLoss(torch.tensor(y)) if loss == "squared" else CrossEntropyLoss(torch.tensor(y))
    prob = CompositeProblem(our_loss, op, penalty(kind), 1.0)
    return x, y, prob.with_beta(frac * beta_max(prob))


@pytest.mark.parametrize("kind", KINDS)
def test_explicit_map_is_the_operator(kind):
    x, _, prob = _problem(kind, "squared", 0, n=5)
    op = prob.operator
    a_mat = explicit_map(kind, x, op)
    z = torch.randn(op.z_shape, generator=torch.Generator().manual_seed(3), dtype=F64)
    zvec = np.concatenate([zj.T.reshape(-1) for zj in _blocks(z.numpy(), op)])
    np.testing.assert_allclose((a_mat @ zvec).reshape(5, -1), op.forward(z).numpy(), rtol=0, atol=1e-12)


CASES = [
    ("attn-linear", "squared"),
    ("attn-linear", "cross_entropy"),
    ("attn-gated", "squared"),
    ("attn-gated", "cross_entropy"),
    ("mixer-linear", "squared"),
    ("mixer-gated", "cross_entropy"),
    ("fno-linear", "squared"),
    ("fno-gated", "cross_entropy"),
    ("fno-gated-1d", "squared"),
]


@pytest.mark.parametrize("kind,loss", CASES, ids=[f"{k}-{l}" for k, l in CASES])
def test_solvers_match_cvxpy_and_twin(kind, loss):
    """FISTA and the semismooth Newton solver both reach cvxpy's optimum; the recovered twin reproduces it."""
    x, y, problem = _problem(kind, loss, seed=CASES.index((kind, loss)))
    p_cvx, z_cvx = cvx_solve(explicit_map(kind, x, problem.operator), problem.operator, y, loss, problem.beta)
    assert problem.objective(torch.tensor(z_cvx)) == pytest.approx(p_cvx, rel=1e-6)
    for solver in (FISTA(tol=TOL, max_iter=30_000), SemismoothNewton(tol=TOL)):
        res = solver.run(problem)
        assert res.status == "converged" and res.certificate.rel_gap <= TOL
        assert torch.count_nonzero(res.z) > 0
        assert res.objective == pytest.approx(p_cvx, rel=REL)
        assert res.certificate.dual <= p_cvx + 1e-7 * abs(p_cvx)  # Clarabel's value is only ~1e-8 accurate

        # recovered twin: same predictions, same objective (weight decay = nuclear norm)
        x_t = torch.tensor(x)
        head = recover(kind, res.z, problem.operator)
        with torch.no_grad():
            torch.testing.assert_close(head(x_t), problem.operator.forward(res.z), rtol=0, atol=1e-10)
            p_twin = float(regularized_objective(head, problem.loss, x_t, problem.beta))
        assert p_twin == pytest.approx(res.objective, rel=1e-8)


ADAM = [("attn-linear", 3), ("attn-gated", 3), ("mixer-gated", 2), ("fno-gated", 2)]


@pytest.mark.parametrize("kind,n_seeds", ADAM, ids=[k for k, _ in ADAM])
def test_adam_on_twin_never_below_convex_optimum(kind, n_seeds):
    """Every point Adam visits is a feasible lifted point, so its objective is ≥ p* ≥ the certified dual bound; with
    enough heads it also gets close to p*."""
    x, _, problem = _problem(kind, "cross_entropy", seed=20, n=12)
    res = FISTA(tol=TOL, max_iter=30_000).run(problem)
    assert res.status == "converged"
    lower, x_t = res.certificate.dual, torch.tensor(x)
    h = min(problem.operator.z_shape[-2:])
    best = []
    for seed in range(n_seeds):
        net, _ = random_twin(kind, problem.operator, h=h, seed=seed, std=0.5)
        opt = torch.optim.Adam(net.parameters(), lr=0.02)
        values = []
        for _ in range(500):
            opt.zero_grad()
            obj = regularized_objective(net, problem.loss, x_t, problem.beta)
            obj.backward()
            opt.step()
            values.append(float(obj.detach()))
        assert min(values) >= lower - 1e-12 * abs(lower)
        best.append(min(values))
    assert min(best) <= res.objective * (1 + 1e-3)
