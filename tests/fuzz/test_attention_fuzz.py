"""Property-based fuzzing of every registered attention layer: shapes, scales, dtypes, masks, NaN/inf.

Properties: bad input (NaN/inf in ``x``, an all-padding sequence) raises a ``ValueError`` naming the offending
argument; anything else gives finite outputs, finite gradients, and valid outputs that padding never reaches.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnduality.nn import available_attention, build_attention, ksvd_loss, primal_layers

MAX_LEN = 8
EXAMPLES = settings().max_examples  # of the loaded profile (tests/fuzz/conftest.py)


def _variants() -> list[tuple[str, dict[str, str]]]:
    out: list[tuple[str, dict[str, str]]] = []
    for name in available_attention():
        impls = ("sdpa", "explicit") if name == "softmax" else (None,)
        out += [(name, {} if impl is None else {"implementation": impl}) for impl in impls]
    return out


VARIANTS = _variants()


@st.composite
def _masks(draw: st.DrawFn, b: int, n: int) -> torch.Tensor | None:
    """None, or a (B, N) padding mask mixing left, right, scattered and all-padding rows."""
    if draw(st.booleans()):
        return None
    rows = []
    for _ in range(b):
        kind = draw(st.sampled_from(["none", "left", "right", "scattered", "all"]))
        k = draw(st.integers(0, n))
        if kind == "left":
            row = [i < k for i in range(n)]
        elif kind == "right":
            row = [i >= n - k for i in range(n)]
        elif kind == "scattered":
            row = draw(st.lists(st.booleans(), min_size=n, max_size=n))
        elif kind == "all":
            row = [True] * n
        else:
            row = [False] * n
        rows.append(row)
    return torch.tensor(rows, dtype=torch.bool)


@st.composite
def _cases(draw: st.DrawFn) -> dict[str, object]:
    heads = draw(st.integers(1, 2))
    b, n = draw(st.integers(1, 3)), draw(st.integers(1, MAX_LEN))
    return {
        "heads": heads,
        "dim": heads * draw(st.integers(1, 4)),
        "b": b,
        "n": n,
        "causal": draw(st.booleans()),
        "dtype": draw(st.sampled_from([torch.float32, torch.float64])),
        "log_scale": draw(st.integers(-8, 8)),
        "mask": draw(_masks(b, n)),
        "poison": draw(st.sampled_from([None, math.nan, math.inf, -math.inf])),
        "seed": draw(st.integers(0, 2**16)),
    }


@pytest.mark.parametrize(
    ("name", "kw"), VARIANTS, ids=[n + ("-" + "-".join(k.values()) if k else "") for n, k in VARIANTS]
)
@settings(max_examples=6 * EXAMPLES)
@given(case=_cases())
def test_attention_layers_on_any_input(name: str, kw: dict[str, str], case: dict) -> None:
    torch.manual_seed(case["seed"])
    dtype: torch.dtype = case["dtype"]
    layer = build_attention(name, case["dim"], case["heads"], causal=case["causal"], max_len=MAX_LEN, **kw)
    layer = layer.to(dtype).eval()
    b, n, d = case["b"], case["n"], case["dim"]
    x = (torch.randn(b, n, d, dtype=dtype) * 10.0 ** case["log_scale"]).requires_grad_(True)
    mask: torch.Tensor | None = case["mask"]
    if case["poison"] is not None:
        with torch.no_grad():
            x[-1, n // 2, 0] = case["poison"]
        with pytest.raises(ValueError, match=r"\bx\b"):
            layer(x, mask)
        return
    if mask is not None and bool(mask.all(dim=1).any()):
        with pytest.raises(ValueError, match="key_padding_mask"):
            layer(x, mask)
        return
    y = layer(x, mask)
    assert y.shape == x.shape and y.dtype == dtype
    assert torch.isfinite(y).all()
    valid = torch.ones(b, n, dtype=torch.bool) if mask is None else ~mask
    # a loss on the valid rows, scaled so that its gradients are O(1) whatever the input scale
    loss = (y[valid] / y[valid].detach().abs().max().clamp_min(1e-30)).square().sum()
    if any(True for _ in primal_layers(layer)):
        loss = loss + ksvd_loss(layer)
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    if mask is not None:
        assert torch.all(x.grad[mask] == 0)  # padding never reaches a valid output
    for pname, p in layer.named_parameters():
        assert p.grad is None or torch.isfinite(p.grad).all(), pname
    if hasattr(layer, "attention_matrix"):
        a = layer.attention_matrix(x.detach(), mask)
        assert a.shape == (b, case["heads"], n, n) and torch.isfinite(a).all()
        if mask is not None:
            assert torch.all(a.permute(0, 3, 1, 2)[mask] == 0)  # no weight on padding keys
