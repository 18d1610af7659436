"""Every registered attention layer honours the registry's call convention (parametrised over the registry)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attnduality.nn import SoftmaxAttention, available_attention, build_attention, primal_layers, register_attention
from attnduality.nn import registry as registry_module
from attnduality.nn.primal import ksvd_loss

MAX_LEN = 24
NAMES = available_attention()


def _build(name: str, d: int = 16, h: int = 2, causal: bool = False, **kw: object) -> nn.Module:
    """Build with ``max_len=None``; layers that need it must say so with a ValueError naming max_len."""
    torch.manual_seed(0)
    try:
        return build_attention(name, d, h, causal=causal, **kw)
    except ValueError as err:
        if "max_len" not in str(err) or "max_len" in kw:
            raise
        return build_attention(name, d, h, causal=causal, max_len=MAX_LEN, **kw)


def _causal_or_skip(name: str, **kw: object) -> nn.Module:
    try:
        return _build(name, causal=True, **kw)  # type: ignore[arg-type]
    except ValueError as err:
        if "causal" in str(err):
            pytest.skip(f"{name} has no causal variant: {err}")
        raise


def _loss(layer: nn.Module, y: torch.Tensor) -> torch.Tensor:
    loss = y.square().sum()
    if any(True for _ in primal_layers(layer)):
        loss = loss + ksvd_loss(layer)  # Λ reaches the loss only through the KSVD term
    return loss


def test_registry_lists_the_builtin_layers() -> None:
    assert {"softmax", "primal"} <= set(NAMES)
    assert list(NAMES) == sorted(NAMES)


def test_register_build_and_errors() -> None:
    @register_attention("_test_identity")
    class Identity(nn.Module):
        def __init__(self, embed_dim: int, num_heads: int, *, max_len: int | None = None, causal: bool = False):
            super().__init__()

        def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
            return x

    try:
        assert "_test_identity" in available_attention()
        assert isinstance(build_attention("_test_identity", 8, 2), Identity)
        with pytest.raises(ValueError, match="already registered"):
            register_attention("_test_identity")(SoftmaxAttention)
    finally:
        registry_module._REGISTRY.pop("_test_identity")
    with pytest.raises(ValueError, match="unknown attention 'nope'.*softmax"):
        build_attention("nope", 8, 2)
    with pytest.raises(ValueError, match="non-empty"):
        register_attention("")


@pytest.mark.parametrize("name", NAMES)
def test_embed_dim_must_divide_by_heads(name: str) -> None:
    with pytest.raises(ValueError, match="divisible"):
        build_attention(name, 10, 3, max_len=MAX_LEN)


@pytest.mark.parametrize("name", NAMES)
def test_max_len_none_builds_or_raises_value_error(name: str) -> None:
    try:
        layer = build_attention(name, 16, 2)
    except ValueError as err:
        assert "max_len" in str(err)
    else:
        assert layer(torch.randn(1, 5, 16)).shape == (1, 5, 16)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("n", [1, 7, MAX_LEN])
def test_shapes_and_finite(name: str, n: int) -> None:
    layer = _build(name)
    y = layer(torch.randn(3, n, 16) * 10)
    assert y.shape == (3, n, 16) and torch.isfinite(y).all()


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("causal", [False, True])
def test_padding_tokens_change_nothing(name: str, causal: bool) -> None:
    layer = _causal_or_skip(name) if causal else _build(name)
    layer.eval()
    x = torch.randn(3, 10, 16, dtype=torch.float32)
    mask = torch.zeros(3, 10, dtype=torch.bool)
    mask[0, 6:] = True  # right padding
    mask[2, [1, 4, 8]] = True  # padding anywhere
    y = layer(x, mask)
    assert torch.isfinite(y).all()
    x2 = x.clone()
    x2[mask] = torch.randn(int(mask.sum()), 16) * 100  # new padding content
    y2 = layer(x2, mask)
    assert torch.allclose(y[~mask], y2[~mask], atol=1e-5)
    alone = layer(x[:1, :6])  # the same sequence without its padding
    assert torch.allclose(y[0, :6], alone[0], atol=1e-5)
    assert (y[1] - layer(x[1:2])[0]).abs().max() < 1e-5  # the unmasked sample is a plain call


@pytest.mark.parametrize("name", NAMES)
def test_every_parameter_gets_a_gradient(name: str) -> None:
    layer = _build(name)
    layer.train()
    x = torch.randn(2, 9, 16, requires_grad=True)
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[1, 5:] = True
    _loss(layer, layer(x, mask)).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for pname, p in layer.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", NAMES)
def test_causal_layers_never_look_ahead(name: str) -> None:
    layer = _causal_or_skip(name)
    layer.eval()
    x = torch.randn(2, 12, 16)
    y = layer(x)
    for t in (0, 5, 11):
        x2 = x.clone()
        x2[:, t:] += torch.randn(2, 12 - t, 16) * 3
        y2 = layer(x2)
        assert torch.allclose(y[:, :t], y2[:, :t], atol=1e-6)
        assert (y[:, t] - y2[:, t]).abs().max() > 1e-4  # the present does count


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck_float64_tiny(name: str, causal: bool) -> None:
    small = {"max_len": 4}  # every layer accepts max_len; it keeps length-dependent parameters few (primal: n = 4)
    layer = (_causal_or_skip(name, **small) if causal else _build(name, **small)).double().eval()
    params = [p for p in layer.parameters() if p.requires_grad]
    x = torch.randn(2, 4, 16, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[False] * 4, [False, False, True, True]])

    def f(x: torch.Tensor, *ps: torch.Tensor) -> torch.Tensor:
        return layer(x, mask)[~mask]

    assert torch.autograd.gradcheck(f, (x, *params), atol=1e-6, fast_mode=True)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_dtypes(name: str, dtype: torch.dtype) -> None:
    layer = _build(name)
    x = torch.randn(2, 9, 16)
    ref = layer(x)
    y = layer.to(dtype)(x.to(dtype))
    assert y.dtype == dtype and torch.isfinite(y).all()
    assert (y.double() - ref.double()).abs().max() < 0.05 * (1 + ref.abs().max())


@pytest.mark.parametrize("name", NAMES)
def test_bad_input_raises_value_error(name: str) -> None:
    layer = _build(name)
    with pytest.raises(ValueError):
        layer(torch.randn(2, 5, 15))
    with pytest.raises(ValueError):
        layer(torch.randn(5, 16))
    with pytest.raises(ValueError):
        layer(torch.full((1, 4, 16), float("nan")))
    with pytest.raises(ValueError):
        layer(torch.randn(2, 4, 16), torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(ValueError):
        layer(torch.randn(2, 4, 16), torch.ones(2, 4, dtype=torch.bool))


@pytest.mark.parametrize("name", NAMES)
def test_attention_matrix_shape_and_padding(name: str) -> None:
    layer = _build(name)
    if not hasattr(layer, "attention_matrix"):
        pytest.skip(f"{name} has no attention_matrix")
    x = torch.randn(2, 6, 16)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[1, 4:] = True
    a = layer.attention_matrix(x, mask)
    assert a.shape == (2, 2, 6, 6) and torch.isfinite(a).all()
    assert torch.allclose(a[1, :, :, 4:], torch.zeros(2, 6, 2))  # nothing comes from padding


# Layers whose outputs depend on absolute positions (a max_len × max_len mixing matrix): dropping left padding
# shifts positions, so they are not compared with the unpadded sequence.
POSITIONAL = {"convex"}


def _variants() -> list[tuple[str, dict[str, object]]]:
    out: list[tuple[str, dict[str, object]]] = []
    for name in NAMES:
        impls = ("sdpa", "explicit") if name == "softmax" else (None,)
        out += [(name, {} if impl is None else {"implementation": impl}) for impl in impls]
    return out


@pytest.mark.parametrize(
    ("name", "kw"), _variants(), ids=lambda v: str(v) if isinstance(v, str) else "-".join(v.values())
)
@pytest.mark.parametrize("causal", [False, True])
def test_queries_without_allowed_keys_are_zero_and_finite(name: str, kw: dict[str, object], causal: bool) -> None:
    """Left padding under a causal mask leaves padding queries with no key: finite outputs and gradients."""
    layer = (_causal_or_skip(name, **kw) if causal else _build(name, **kw)).double().eval()
    x = torch.randn(2, 6, 16, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, :2] = True  # left padding
    y = layer(x, mask)
    assert torch.isfinite(y).all()
    y[~mask].square().sum().backward()  # a loss on the valid rows only
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert torch.all(x.grad[mask] == 0)  # padding tokens reach no valid output
    for pname, p in layer.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), pname
    if name not in POSITIONAL:
        alone = layer(x[:1, 2:])
        assert (y[0, 2:] - alone[0]).abs().max() < 1e-12
    assert (y[1] - layer(x[1:2])[0]).abs().max() < 1e-12
    if hasattr(layer, "attention_matrix"):
        a = layer.attention_matrix(x, mask)
        assert torch.isfinite(a).all()
        assert torch.all(a[0, :, :, :2] == 0)  # nothing comes from padding
        if causal:
            assert torch.all(a[0, :, :2] == 0)  # padding queries with no allowed key: zero rows
        if name in ("softmax", "convex"):  # row-stochastic layers: every query with a key sums to one
            rows = a[0, :, 2:].sum(-1) if causal else a[0].sum(-1)
            assert torch.allclose(rows, torch.ones_like(rows), atol=1e-12)


@pytest.mark.parametrize("implementation", ["sdpa", "explicit"])
def test_softmax_empty_rows_float32_gradients(implementation: str) -> None:
    """The case of the issue: float32, causal, left padding, gradients of both projections and of x."""
    torch.manual_seed(0)
    layer = build_attention("softmax", 8, 2, causal=True, implementation=implementation)
    x = torch.randn(2, 6, 8, requires_grad=True)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, :2] = True
    y = layer(x, mask)
    assert torch.isfinite(y).all()
    y[~mask].sum().backward()
    for g in (layer.qkv_proj.weight.grad, layer.out_proj.weight.grad, x.grad):
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    a = layer.attention_matrix(x, mask)
    assert torch.all(a[0, :, :2] == 0) and torch.allclose(a[0, :, 2:].sum(-1), torch.ones(2, 4))


# ---------------------------------------------------------------------------------------------------------------
# the softmax layer
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("causal", [False, True])
def test_softmax_sdpa_equals_explicit_and_multihead_attention(causal: bool) -> None:
    torch.manual_seed(0)
    sdpa = SoftmaxAttention(16, 4, causal=causal).double()
    explicit = SoftmaxAttention(16, 4, causal=causal, implementation="explicit").double()
    explicit.load_state_dict(sdpa.state_dict())
    mha = nn.MultiheadAttention(16, 4, batch_first=True).double()
    with torch.no_grad():
        mha.in_proj_weight.copy_(sdpa.qkv_proj.weight)
        mha.in_proj_bias.copy_(sdpa.qkv_proj.bias)
        mha.out_proj.load_state_dict(sdpa.out_proj.state_dict())
    x = torch.randn(2, 7, 16, dtype=torch.float64)
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[1, 5:] = True
    y = sdpa(x, mask)
    assert torch.allclose(y, explicit(x, mask), atol=1e-12)
    causal_mask = torch.ones(7, 7, dtype=torch.bool).triu(1) if causal else None
    ref = mha(x, x, x, key_padding_mask=mask, attn_mask=causal_mask, need_weights=False)[0]
    assert torch.allclose(y, ref, atol=1e-12)
    a = sdpa.attention_matrix(x, mask)
    assert torch.allclose(a.sum(-1), torch.ones(2, 4, 7, dtype=torch.float64))
    if causal:
        assert torch.all(a.triu(1) == 0)


def test_softmax_bad_options() -> None:
    with pytest.raises(ValueError, match="implementation"):
        SoftmaxAttention(8, 2, implementation="flash")
    with pytest.raises(ValueError, match="dropout"):
        SoftmaxAttention(8, 2, dropout=1.0)
