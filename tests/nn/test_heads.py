"""The non-convex heads: GatedReLUMLP and ReLUMLP."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnduality.nn import GatedReLUMLP, ReLUMLP

N, D, M, C = 11, 4, 6, 3


def _params(d=D, m=M, c=C, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (
        torch.randn(d, m, generator=gen, dtype=dtype),
        torch.randn(d, m, generator=gen, dtype=dtype),
        torch.randn(m, c, generator=gen, dtype=dtype),
        torch.randn(N, D, generator=gen, dtype=dtype),
    )


@pytest.mark.parametrize("bias", [False, True])
def test_relu_forward_matches_definition(bias):
    d = D + 1 if bias else D
    _, w1, w2, x = _params(d=d)
    net = ReLUMLP(w1, w2, bias=bias)
    xt = np.hstack([x.numpy(), np.ones((N, 1))]) if bias else x.numpy()
    expected = np.maximum(xt @ w1.numpy(), 0) @ w2.numpy()
    out = net(x)
    assert out.shape == (N, C)
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-12, atol=1e-12)
    assert net.hidden(x).shape == (N, M)
    assert net.n_neurons == M


@pytest.mark.parametrize("bias", [False, True])
def test_gated_forward_matches_definition(bias):
    d = D + 1 if bias else D
    g, w1, w2, x = _params(d=d)
    net = GatedReLUMLP(g, w1, w2, bias=bias)
    xt = np.hstack([x.numpy(), np.ones((N, 1))]) if bias else x.numpy()
    expected = ((xt @ g.numpy() >= 0) * (xt @ w1.numpy())) @ w2.numpy()
    out = net(x)
    assert out.shape == (N, C)
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-12, atol=1e-12)
    # a gated unit is linear (not rectified) where its gate is on: negative pre-activations pass through
    h = net.hidden(x).detach().numpy()
    assert (h < 0).any()


def test_gate_boundary_counts_as_active():
    g = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
    w1 = torch.tensor([[0.0], [2.0]], dtype=torch.float64)
    w2 = torch.tensor([[1.0]], dtype=torch.float64)
    net = GatedReLUMLP(g, w1, w2)
    x = torch.tensor([[0.0, 1.0], [-1.0, 1.0]], dtype=torch.float64)  # x·g = 0 (active), -1 (inactive)
    np.testing.assert_array_equal(net(x).detach().numpy(), [[2.0], [0.0]])


def test_gated_relu_with_own_gates_is_relu():
    """With gates equal to the first-layer weights, the gated unit is the ReLU unit."""
    _, w1, w2, x = _params()
    gated = GatedReLUMLP(w1, w1, w2)
    relu = ReLUMLP(w1, w2)
    torch.testing.assert_close(gated(x), relu(x), rtol=1e-12, atol=1e-12)


def test_bias_is_a_ones_column():
    g, w1, w2, x = _params(d=D + 1)
    x1 = torch.cat([x, torch.ones(N, 1, dtype=x.dtype)], dim=1)
    torch.testing.assert_close(GatedReLUMLP(g, w1, w2, bias=True)(x), GatedReLUMLP(g, w1, w2)(x1))
    torch.testing.assert_close(ReLUMLP(w1, w2, bias=True)(x), ReLUMLP(w1, w2)(x1))


def test_batched_inputs():
    g, w1, w2, _ = _params(d=D + 1)
    xb = torch.randn(2, 5, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    net = GatedReLUMLP(g, w1, w2, bias=True)
    out = net(xb)
    assert out.shape == (2, 5, C)
    torch.testing.assert_close(out[1], net(xb[1]))


@pytest.mark.parametrize("cls", ["relu", "gated"])
def test_weight_decay_value_and_gradients(cls):
    g, w1, w2, x = _params()
    net = ReLUMLP(w1, w2) if cls == "relu" else GatedReLUMLP(g, w1, w2)
    wd = net.weight_decay()
    expected = 0.5 * (float((w1**2).sum()) + float((w2**2).sum()))
    assert float(wd.detach()) == pytest.approx(expected, rel=1e-13)
    # gradients flow to both layers, and the gates are a buffer (no gradient, not a parameter)
    loss = net(x).square().sum() + 0.1 * net.weight_decay()
    loss.backward()
    assert {n for n, _ in net.named_parameters()} == {"w1", "w2"}
    assert net.w1.grad is not None and net.w2.grad is not None
    assert float(net.w1.grad.abs().sum()) > 0 and float(net.w2.grad.abs().sum()) > 0
    if cls == "gated":
        assert not net.gates.requires_grad
        assert "gates" in dict(net.named_buffers())
    # the weight-decay gradient is the parameter itself
    net.zero_grad()
    net.weight_decay().backward()
    torch.testing.assert_close(net.w1.grad, net.w1.detach())
    torch.testing.assert_close(net.w2.grad, net.w2.detach())


def test_gradients_match_finite_differences():
    g, w1, w2, x = _params(m=3, c=2)
    net = GatedReLUMLP(g, w1, w2)
    obj = (net(x) ** 2).sum()
    obj.backward()
    eps = 1e-6
    with torch.no_grad():
        for i, j in [(0, 0), (2, 1), (3, 2)]:
            net.w1[i, j] += eps
            up = float((net(x) ** 2).sum())
            net.w1[i, j] -= 2 * eps
            down = float((net(x) ** 2).sum())
            net.w1[i, j] += eps
            assert float(net.w1.grad[i, j]) == pytest.approx((up - down) / (2 * eps), rel=1e-6, abs=1e-8)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes(dtype):
    g, w1, w2, x = _params(dtype=dtype)
    for net in (ReLUMLP(w1, w2), GatedReLUMLP(g, w1, w2)):
        out = net(x)
        assert out.dtype == dtype
        assert net.weight_decay().dtype == dtype
    # conversion moves the gates buffer too
    net = GatedReLUMLP(g, w1, w2).to(torch.float32 if dtype == torch.float64 else torch.float64)
    assert net.gates.dtype == net.w1.dtype
    assert net(x.to(net.w1.dtype)).dtype == net.w1.dtype


def test_float32_matches_float64():
    g, w1, w2, x = _params()
    out64 = GatedReLUMLP(g, w1, w2)(x)
    out32 = GatedReLUMLP(g, w1, w2).float()(x.float())
    torch.testing.assert_close(out32.double(), out64, rtol=1e-5, atol=1e-5)


def test_parameters_are_copies():
    g, w1, w2, _ = _params()
    net = GatedReLUMLP(g, w1, w2)
    with torch.no_grad():
        net.w1.add_(1.0)
        net.gates.add_(1.0)
    assert not torch.equal(net.w1.detach(), w1)
    assert not torch.equal(net.gates, g)


def test_zero_width_network():
    net = GatedReLUMLP(torch.zeros(D, 0), torch.zeros(D, 0), torch.zeros(0, C))
    x = torch.randn(N, D)
    assert net.n_neurons == 0
    np.testing.assert_array_equal(net(x).detach().numpy(), np.zeros((N, C)))
    assert float(net.weight_decay().detach()) == 0.0


def test_gates_shape_must_match_w1():
    g, w1, w2, _ = _params()
    with pytest.raises(ValueError, match=r"gates \(4, 5\) and w1 \(4, 6\) must have the same shape"):
        GatedReLUMLP(g[:, :5], w1, w2)
