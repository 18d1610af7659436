"""ConvexifiedAttention (Ergen et al. 2022, eq. (4)), its builders and the non-convex twins of the token programs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnduality.nn import (
    AttentionGatedFCNet,
    AttentionOnlyNet,
    ConvexifiedAttention,
    ConvexifiedAttentionStack,
    SequenceAttentionNet,
    attention_fc_model,
    attention_only_model,
    stacked_model,
)
from attnduality.nn.simplex import project_rows_to_simplex

B, N, D, H, L = 3, 5, 8, 2, 7
PARAMS = ["softmax", "simplex"]


def _x(b=B, n=N, d=D, seed=0):
    return torch.randn(b, n, d, generator=torch.Generator().manual_seed(seed))


def _layer(parametrization="softmax", causal=False, seed=0, **kw):
    torch.manual_seed(seed)
    layer = ConvexifiedAttention(D, H, max_len=L, causal=causal, parametrization=parametrization, **kw)
    if parametrization == "simplex":  # non-uniform weights with exact zeros
        with torch.no_grad():
            layer.mixing.param.copy_(torch.rand_like(layer.mixing.param) - 0.3)
        layer.project_()
    return layer


# ----------------------------------------------------------------------------------------------------------------
# The layer
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("parametrization", PARAMS)
@pytest.mark.parametrize("causal", [False, True])
def test_mixing_is_row_stochastic_and_causal(parametrization, causal):
    layer = _layer(parametrization, causal)
    for n in (1, 4, L):
        w = layer.mixing_weights(n)
        assert w.shape == (H, n, n) and bool((w >= 0).all())
        torch.testing.assert_close(w.sum(-1), torch.ones(H, n))
        if causal:
            assert bool((w.triu(1) == 0).all())
    a = layer.attention_matrix(_x())
    assert a.shape == (B, H, N, N)


@pytest.mark.parametrize("parametrization", PARAMS)
def test_forward_is_mixing_of_values(parametrization):
    layer = _layer(parametrization).double()
    x = _x().double()
    w = layer.mixing_weights(N)
    v = layer.v_proj(x).view(B, N, H, D // H)
    mixed = torch.einsum("hrk,bkhe->brhe", w, v).reshape(B, N, D)
    torch.testing.assert_close(layer(x), layer.out_proj(mixed))


@pytest.mark.parametrize("parametrization", PARAMS)
@pytest.mark.parametrize("causal", [False, True])
def test_padding_changes_nothing_for_real_tokens(parametrization, causal):
    layer = _layer(parametrization, causal).double()
    x = _x().double()
    lengths = [5, 3, 1]
    mask = torch.arange(N)[None, :] >= torch.tensor(lengths)[:, None]  # right padding, True = padding
    out = layer(x, mask)
    x2 = x.clone()
    x2[mask] = 1e3 * torch.randn(int(mask.sum()), D, dtype=torch.float64)  # padded values are irrelevant
    torch.testing.assert_close(layer(x2, mask)[~mask], out[~mask])
    for i, m in enumerate(lengths):  # the same sequence without its padding, and with more padding
        torch.testing.assert_close(layer(x[i : i + 1, :m])[0], out[i, :m])
        longer = torch.cat([x[i : i + 1], torch.zeros(1, L - N, D, dtype=torch.float64)], dim=1)
        pad = torch.arange(L)[None, :] >= m
        torch.testing.assert_close(layer(longer, pad)[0, :m], out[i, :m])
    w = layer.attention_matrix(x, mask)
    assert bool((w.masked_select(mask[:, None, None, :].expand_as(w)) == 0).all())  # padded keys get weight 0
    torch.testing.assert_close(w.sum(-1), torch.ones(B, H, N, dtype=torch.float64))


def test_causal_output_depends_only_on_the_past():
    layer = _layer("softmax", causal=True).double()
    x = _x().double()
    y = x.clone()
    y[:, 3:] += 5.0
    torch.testing.assert_close(layer(x)[:, :3], layer(y)[:, :3])
    assert not torch.allclose(layer(x)[:, 3:], layer(y)[:, 3:])


def test_simplex_weights_zero_mass_row_falls_back_to_uniform():
    layer = ConvexifiedAttention(D, 1, max_len=3, parametrization="simplex", bias=False)
    with torch.no_grad():
        layer.mixing.param.copy_(torch.tensor([[[0.0, 0.0, 1.0], [0.25, 0.75, 0.0], [0.0, 1.0, 0.0]]]))
    w = layer.mixing_weights(2)  # row 0 only weighs token 2, which is cut off at N = 2
    torch.testing.assert_close(w[0], torch.tensor([[0.5, 0.5], [0.25, 0.75]]))
    mask = torch.tensor([[False, True, False]])  # row 2 only weighs the padded token 1
    torch.testing.assert_close(layer.mixing_weights(3, mask)[0, 0, 2], torch.tensor([0.5, 0.0, 0.5]))


def test_gradients_and_projected_training_stay_on_the_simplex():
    for parametrization in PARAMS:
        layer = _layer(parametrization)
        x, target = _x(), _x(seed=1)
        opt = torch.optim.SGD(layer.parameters(), lr=0.5)
        first = None
        for _ in range(30):
            opt.zero_grad()
            loss = (layer(x) - target).square().mean()
            loss.backward()
            assert layer.mixing.param.grad is not None and bool(torch.isfinite(layer.mixing.param.grad).all())
            opt.step()
            layer.project_()
            first = float(loss.detach()) if first is None else first
        assert float(loss.detach()) < first
        w = layer.mixing_weights()
        torch.testing.assert_close(w.sum(-1), torch.ones(H, L))
        assert bool((w >= 0).all())
        if parametrization == "simplex":
            assert bool((layer.mixing.param >= 0).all()) and bool((layer.mixing.param == 0).any())


def test_project_rows_to_simplex_is_the_euclidean_projection():
    gen = torch.Generator().manual_seed(0)
    w = 2 * torch.randn(50, 6, generator=gen, dtype=torch.float64)
    p = project_rows_to_simplex(w)
    torch.testing.assert_close(p.sum(-1), torch.ones(50, dtype=torch.float64))
    assert bool((p >= 0).all())
    for _ in range(20):  # ⟨w − p, q − p⟩ ≤ 0 for q on the simplex
        q = torch.softmax(3 * torch.randn(50, 6, generator=gen, dtype=torch.float64), -1)
        assert float(((w - p) * (q - p)).sum(-1).max()) <= 1e-12
    allowed = torch.ones(6, 6, dtype=torch.bool).tril()
    pa = project_rows_to_simplex(torch.randn(6, 6, generator=gen, dtype=torch.float64), allowed)
    assert bool((pa.triu(1) == 0).all())
    torch.testing.assert_close(pa.sum(-1), torch.ones(6, dtype=torch.float64))
    onehot = torch.eye(4, dtype=torch.float64)
    assert torch.equal(project_rows_to_simplex(onehot), onehot)


BAD_INPUTS = [
    (lambda: (torch.randn(B, N, D + 1), None), "expected x of shape"),
    (lambda: (torch.randn(B, N), None), "expected x of shape"),
    (lambda: (torch.ones(B, N, D, dtype=torch.long), None), "floating"),
    (lambda: (torch.randn(B, L + 1, D), None), "exceeds max_len"),
    (lambda: (torch.randn(0, N, D), None), "B >= 1 and N >= 1"),
    (lambda: (torch.full((B, N, D), float("nan")), None), "NaN or inf"),
    (lambda: (torch.randn(B, N, D), torch.zeros(B, N)), "bool"),
    (lambda: (torch.randn(B, N, D), torch.zeros(B, N + 1, dtype=torch.bool)), "key_padding_mask must have shape"),
    (lambda: (torch.randn(B, N, D), torch.ones(B, N, dtype=torch.bool)), "at least one non-padding token"),
]


@pytest.mark.parametrize("make,match", BAD_INPUTS, ids=[b[1] for b in BAD_INPUTS])
def test_bad_input_raises(make, match):
    x, mask = make()
    with pytest.raises(ValueError, match=match):
        _layer()(x, mask)


def test_bad_construction_raises():
    with pytest.raises(ValueError, match="needs max_len"):
        ConvexifiedAttention(D, H)
    with pytest.raises(ValueError, match="not divisible"):
        ConvexifiedAttention(D, 3, max_len=L)
    with pytest.raises(ValueError, match="parametrization"):
        ConvexifiedAttention(D, H, max_len=L, parametrization="sparsemax")
    with pytest.raises(ValueError, match="max_len must be a positive int"):
        ConvexifiedAttention(D, H, max_len=0)
    with pytest.raises(TypeError):
        ConvexifiedAttention(D, H, max_len=L, unknown_option=1)
    layer = ConvexifiedAttention(D, H, max_len=L, dtype=torch.float64)
    assert layer.v_proj.weight.dtype == torch.float64 and layer.mixing.param.dtype == torch.float64


# ----------------------------------------------------------------------------------------------------------------
# Builders
# ----------------------------------------------------------------------------------------------------------------
def test_builders_shapes_and_structure():
    x = _x()
    mask = torch.zeros(B, N, dtype=torch.bool)
    mask[0, 3:] = True
    a = attention_only_model(D, H, max_len=L)
    f = attention_fc_model(D, H, max_len=L, hidden_dim=16)
    s = stacked_model(D, H, 2, max_len=L, causal=True, residual=True, layer_norm=True)
    r = stacked_model(D, H, 2, max_len=L, ffn="relu", parametrization="simplex")
    for model in (a, f, s, r):
        assert isinstance(model, ConvexifiedAttentionStack)
        out = model(x, mask)
        assert out.shape == (B, N, D) and bool(torch.isfinite(out).all())
        model.project_()
    assert a.blocks[0].ffn is None and len(s.blocks) == 2
    assert f.blocks[0].ffn.gates.shape == (D, 16)
    assert not torch.equal(s.blocks[0].ffn.gates, s.blocks[1].ffn.gates)
    with pytest.raises(ValueError, match="depth"):
        stacked_model(D, H, 0, max_len=L)
    with pytest.raises(ValueError, match="ffn"):
        attention_fc_model(D, H, max_len=L, ffn="gelu")


def test_gated_relu_feedforward_definition():
    f = attention_fc_model(D, H, max_len=L, hidden_dim=6).blocks[0].ffn.double()
    x = _x().double()
    g, u, w2 = f.gates, f.fc1.weight.T, f.fc2.weight.T
    torch.testing.assert_close(f(x), ((x @ g >= 0).double() * (x @ u)) @ w2)


# ----------------------------------------------------------------------------------------------------------------
# Twins of the convex programs
# ----------------------------------------------------------------------------------------------------------------
def test_attention_only_twin_definition_and_decay():
    gen = torch.Generator().manual_seed(0)
    h, n, d, c = 3, 4, 5, 2
    rows = torch.softmax(torch.randn(h, n, generator=gen, dtype=torch.float64), -1)
    v, b = torch.randn(h, d, generator=gen, dtype=torch.float64), torch.randn(h, c, generator=gen, dtype=torch.float64)
    x = torch.randn(6, n, d, generator=gen, dtype=torch.float64)
    for norm in ("l1", "l2"):
        net = AttentionOnlyNet(rows, v, b, output_norm=norm)
        expected = sum(torch.outer((rows[j] @ x) @ v[j], b[j]) for j in range(h))  # Σ_j (w_jᵀ X v_j) b_jᵀ
        torch.testing.assert_close(net(x), expected)
        bn = b.abs().sum(1).square().sum() if norm == "l1" else b.square().sum()
        torch.testing.assert_close(net.weight_decay(), 0.5 * (v.square().sum() + bn))
    sm = AttentionOnlyNet(rows, v, b, parametrization="softmax")
    torch.testing.assert_close(sm.attention(), rows)
    assert AttentionOnlyNet.random(n, d, h, c, seed=1)(x.float()).shape == (6, c)
    with pytest.raises(ValueError, match="output_norm"):
        AttentionOnlyNet(rows, v, b, output_norm="linf")
    with pytest.raises(ValueError, match="expected rows"):
        AttentionOnlyNet(rows, v[:2], b)


def test_gated_fc_and_sequence_twin_definitions():
    gen = torch.Generator().manual_seed(1)
    h, n, d, c = 3, 4, 5, 2
    rows = torch.softmax(torch.randn(h, n, generator=gen, dtype=torch.float64), -1)
    g, u = torch.randn(h, d, generator=gen, dtype=torch.float64), torch.randn(h, d, generator=gen, dtype=torch.float64)
    alpha = torch.randn(h, c, generator=gen, dtype=torch.float64)
    x = torch.randn(6, n, d, generator=gen, dtype=torch.float64)
    net = AttentionGatedFCNet(rows, g, u, alpha)
    expected = 0
    for j in range(h):
        a = rows[j] @ x  # (6, d) pooled tokens
        expected = expected + torch.outer(((a @ g[j]) >= 0).double() * (a @ u[j]), alpha[j])
    torch.testing.assert_close(net(x), expected)
    with pytest.raises(ValueError, match="same shape"):
        AttentionGatedFCNet(rows, g[:, :2], u, alpha)
    mix = torch.softmax(torch.randn(h, n, n, generator=gen, dtype=torch.float64), -1)
    vv = torch.randn(h, d, c, generator=gen, dtype=torch.float64)
    bb = torch.randn(h, generator=gen, dtype=torch.float64)
    seq = SequenceAttentionNet(mix, vv, bb)
    torch.testing.assert_close(seq(x), sum(bb[j] * mix[j] @ x @ vv[j] for j in range(h)))
    torch.testing.assert_close(seq.weight_decay(), 0.5 * (vv.abs().sum((1, 2)).square().sum() + bb.square().sum()))
    flat = SequenceAttentionNet(mix, vv, bb, flatten_output=True)
    np.testing.assert_allclose(flat(x).detach().numpy(), seq(x).detach().numpy().reshape(6, -1))


def test_deprecated_names_still_work_and_warn() -> None:
    import importlib

    import attnduality.nn as nn_pkg

    with pytest.warns(DeprecationWarning, match="use ConvexifiedAttention"):
        assert nn_pkg.ConvexAttention is ConvexifiedAttention
    with pytest.warns(DeprecationWarning, match="use ConvexifiedAttentionStack"):
        assert nn_pkg.ConvexAttentionStack is ConvexifiedAttentionStack
    for old, new, name in (
        ("convex_attention", "convexified", "ConvexAttention"),
        ("heads", "mlp_twins", "GatedReLUMLP"),
        ("attention_heads", "token_twins", "GatedFNOHead"),
    ):
        import sys

        sys.modules.pop(f"attnduality.nn.{old}", None)
        with pytest.warns(DeprecationWarning, match=f"attnduality.nn.{old} is deprecated"):
            module = importlib.import_module(f"attnduality.nn.{old}")
        new_module = importlib.import_module(f"attnduality.nn.{new}")
        assert getattr(module, name) is getattr(
            new_module, "ConvexifiedAttention" if name == "ConvexAttention" else name
        )
    with pytest.raises(AttributeError):
        nn_pkg.NoSuchLayer  # noqa: B018
