"""Singular-value decay of attention operators (Chen et al. 2023, Figure 2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from attnduality.interpret.spectrum import (
    attention_operators,
    cumulative_singular_values,
    plot_singular_value_decay,
    singular_value_decay,
)
from attnduality.nn import PrimalAttention, PrimalTransformer, SoftmaxAttention


def test_cumulative_singular_values_known_matrices() -> None:
    c = cumulative_singular_values(np.diag([1.0, 3.0, 0.0]))
    assert np.allclose(c, [0.75, 1.0, 1.0])
    rank_one = np.outer([1.0, 2.0, 3.0, 4.0], [1.0, -1.0, 0.5, 2.0])
    assert np.allclose(cumulative_singular_values(rank_one), 1.0)
    assert np.allclose(cumulative_singular_values(np.zeros((2, 3, 3))), 1.0)
    ident = cumulative_singular_values(np.eye(4))
    assert np.allclose(ident, [0.25, 0.5, 0.75, 1.0])
    assert cumulative_singular_values(torch.randn(2, 3, 5, 5)).shape == (2, 3, 5)


def test_padding_uses_the_valid_submatrix() -> None:
    a = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[1, 4:] = True
    c = cumulative_singular_values(a, mask)
    assert np.allclose(c[1, 0, :4], cumulative_singular_values(a[1, 0, :4, :4]))
    assert np.allclose(c[1, 0, 4:], 1.0)
    assert np.allclose(c[0], cumulative_singular_values(a[0]))


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="square"):
        cumulative_singular_values(np.ones((3, 4)))
    with pytest.raises(ValueError, match="NaN"):
        cumulative_singular_values(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match="key_padding_mask"):
        cumulative_singular_values(np.ones((2, 1, 3, 3)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="attention_matrix"):
        attention_operators(torch.nn.Linear(2, 2), torch.randn(1, 2))
    with pytest.raises(ValueError, match="band"):
        plot_singular_value_decay({"a": np.ones((1, 3))}, band="iqr")


def test_softmax_operator_is_row_stochastic_and_uniform_attention_has_rank_one() -> None:
    layer = SoftmaxAttention(8, 2)
    with torch.no_grad():
        layer.qkv_proj.weight[:16].zero_()  # q = k = bias: every row attends uniformly
    ops = attention_operators(layer, torch.randn(3, 7, 8))
    (op, mask) = ops[""]
    assert op.shape == (3, 2, 7, 7) and mask is None
    assert torch.allclose(op.sum(-1), torch.ones(3, 2, 7))
    assert np.allclose(cumulative_singular_values(op)[..., 0], 1.0)


def test_primal_kernel_rank_is_at_most_the_head_dim() -> None:
    """K = φ_q φ_kᵀ has rank ≤ d_h: c_k reaches 1 at k = d_h − 1 (the low rank the paper's figure shows)."""
    torch.manual_seed(0)
    layer = PrimalAttention(16, 4, 3)  # d_h = 4
    c = cumulative_singular_values(layer.attention_matrix(torch.randn(2, 20, 16)))
    assert c.shape == (2, 4, 20)
    assert np.allclose(c[..., 3:], 1.0, atol=1e-5)
    assert (c[..., 2] < 1 - 1e-3).all()  # generic features: the rank is exactly 4


def test_model_decay_and_plot(tmp_path: object) -> None:
    torch.manual_seed(0)
    model = PrimalTransformer(3, 16, 2, 3, vocab_size=10, padding_idx=0, max_len=12, rank=3)
    model.train()
    ids = torch.randint(1, 10, (4, 12))
    ids[1, 8:] = 0
    decay = singular_value_decay(model, ids)
    assert list(decay) == [
        "encoder.layers.0.attn (SoftmaxAttention)",
        "encoder.layers.1.attn (SoftmaxAttention)",
        "encoder.layers.2.attn (PrimalAttention)",
    ]
    assert model.training  # restored
    for c in decay.values():
        assert c.shape == (4, 2, 12) and np.all(np.diff(c, axis=-1) >= -1e-12) and np.allclose(c[..., -1], 1.0)
    assert np.allclose(decay["encoder.layers.2.attn (PrimalAttention)"][..., 7:], 1.0, atol=1e-5)  # rank ≤ d_h = 8
    assert np.allclose(decay["encoder.layers.0.attn (SoftmaxAttention)"][1, :, 8:], 1.0)  # padded sample: 8 tokens
    path = tmp_path / "decay.png"  # type: ignore[operator]
    fig = plot_singular_value_decay(decay, path, title="Primal.+Trans.", band="std")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    assert len(fig.axes) == 3  # curves, heat map, colour bar
    assert len(fig.axes[0].lines) == 3
