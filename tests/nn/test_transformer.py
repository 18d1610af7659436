"""Encoder blocks and classifiers: layouts, padding invariance of the logits, training with the KSVD loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnduality.nn import (
    EncoderBlock,
    PrimalAttention,
    PrimalFormer,
    PrimalTransformer,
    SoftmaxAttention,
    TransformerClassifier,
    TransformerEncoder,
    available_attention,
    ksvd_loss,
    primal_layers,
)


def test_primalformer_and_primal_plus_trans_layouts() -> None:
    pf = PrimalFormer(4, 16, 2, 3, vocab_size=10, max_len=32, rank=3)
    assert pf.encoder.attention_names == ["primal"] * 3
    assert all(layer.rank == 3 for layer in primal_layers(pf))
    pt = PrimalTransformer(4, 16, 2, 3, num_primal_layers=2, input_dim=5, max_len=32, rank=4, rank_multi=3)
    assert pt.encoder.attention_names == ["softmax", "primal", "primal"]
    layers = list(primal_layers(pt))
    assert len(layers) == 2 and layers[0].num_landmarks == 12
    assert isinstance(pt.encoder.layers[0].attn, SoftmaxAttention)
    with pytest.raises(ValueError, match="num_primal_layers"):
        PrimalTransformer(4, 16, 2, 2, num_primal_layers=3, input_dim=5, max_len=8)
    with pytest.raises(ValueError, match="fixes the attention"):
        PrimalFormer(4, 16, 2, 2, input_dim=5, max_len=8, attention="softmax")


def test_encoder_accepts_any_registered_name_per_layer() -> None:
    names = list(available_attention())
    enc = TransformerEncoder(16, 2, names, max_len=12, dropout=0.0)
    assert enc.attention_names == names
    y = enc(torch.randn(2, 12, 16))
    assert y.shape == (2, 12, 16) and torch.isfinite(y).all()
    with pytest.raises(ValueError, match="unknown attention"):
        TransformerEncoder(16, 2, ["softmax", "nope"])
    with pytest.raises(ValueError, match="num_layers"):
        TransformerEncoder(16, 2, "softmax")


@pytest.mark.parametrize("norm_first", [True, False])
def test_block_residual_orders(norm_first: bool) -> None:
    torch.manual_seed(0)
    block = EncoderBlock(8, 2, "softmax", ffn_dim=16, dropout=0.0, norm_first=norm_first).eval()
    x = torch.randn(2, 5, 8)
    if norm_first:
        h = x + block.attn(block.norm1(x))
        want = h + block.ffn(block.norm2(h))
    else:
        h = block.norm1(x + block.attn(x))
        want = block.norm2(h + block.ffn(h))
    assert torch.allclose(block(x), want, atol=1e-6)


@pytest.mark.parametrize("pooling", ["mean", "cls", "flatten"])
@pytest.mark.parametrize("model_cls", [PrimalFormer, PrimalTransformer])
def test_token_logits_ignore_padding(pooling: str, model_cls: type) -> None:
    torch.manual_seed(0)
    model = model_cls(3, 16, 2, 2, vocab_size=12, padding_idx=0, max_len=20, pooling=pooling, rank=3, head_hidden=8)
    model.eval()
    ids = torch.randint(1, 12, (3, 20))
    lengths = [20, 13, 7]
    for i, n in enumerate(lengths):
        ids[i, n:] = 0  # padding_idx -> key_padding_mask
    logits = model(ids)
    for i, n in enumerate(lengths):
        assert torch.allclose(logits[i], model(ids[i : i + 1, :n])[0], atol=1e-5)
    assert logits.shape == (3, 3) and torch.isfinite(logits).all()


@pytest.mark.parametrize("pooling", ["mean", "flatten"])
def test_feature_logits_ignore_padding_and_official_uea_layout(pooling: str) -> None:
    torch.manual_seed(0)
    model = PrimalFormer(
        5, 16, 2, 2, input_dim=3, max_len=15, pooling=pooling, norm_first=False, output_activation="gelu", rank=2
    ).eval()
    x = torch.randn(2, 15, 3)
    mask = torch.zeros(2, 15, dtype=torch.bool)
    mask[1, 9:] = True
    x2 = x.clone()
    x2[1, 9:] = 1e3
    logits = model(x, mask)
    assert torch.allclose(logits, model(x2, mask), atol=1e-5)
    assert torch.allclose(logits[1], model(x[1:2, :9])[0], atol=1e-5)
    assert model.input_scale == pytest.approx(4.0)  # × √D for continuous features (official UEA)


def test_sinusoidal_causal_classifier_runs_for_any_length() -> None:
    model = TransformerClassifier(2, 16, 2, "primal", 2, input_dim=4, pos_encoding="sinusoidal", causal=True)
    for n in (1, 17, 300):
        assert model(torch.randn(2, n, 4)).shape == (2, 2)


def test_training_with_ksvd_loss_learns_a_toy_task() -> None:
    """Label = whether token 1 occurs before token 2; PrimalFormer + η·KSVD fits it."""
    torch.manual_seed(0)
    n, length = 128, 10
    ids = torch.randint(3, 8, (n, length))
    pos = torch.stack([torch.randperm(length)[:2] for _ in range(n)])
    ids[torch.arange(n), pos[:, 0]] = 1
    ids[torch.arange(n), pos[:, 1]] = 2
    y = (pos[:, 0] < pos[:, 1]).long()
    model = PrimalFormer(2, 32, 4, 2, vocab_size=8, max_len=length, rank=4, dropout=0.0, head_hidden=32)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(25):
        opt.zero_grad()
        task = F.cross_entropy(model(ids), y)
        loss = task + 0.05 * ksvd_loss(model)
        loss.backward()
        opt.step()
        first = float(task.detach()) if first is None else first
    acc = (model(ids).argmax(-1) == y).float().mean()
    assert float(task.detach()) < 0.5 * first and acc > 0.85
    assert all(layer.lambdas.grad is not None for layer in primal_layers(model))


def test_every_classifier_parameter_gets_a_gradient() -> None:
    torch.manual_seed(0)
    model = PrimalTransformer(3, 16, 2, 2, vocab_size=9, padding_idx=0, max_len=12, pooling="cls", rank=3)
    ids = torch.randint(1, 9, (4, 12))
    ids[2, 7:] = 0
    (model(ids).square().sum() + ksvd_loss(model)).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        if name != "embed.weight":
            assert p.grad.abs().sum() > 0, name


def test_classifier_bad_input() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        TransformerClassifier(2, 8, 2, "softmax", 1, vocab_size=5, input_dim=3, max_len=4)
    with pytest.raises(ValueError, match="need max_len"):
        TransformerClassifier(2, 8, 2, "softmax", 1, input_dim=3)
    with pytest.raises(ValueError, match="pooling"):
        TransformerClassifier(2, 8, 2, "softmax", 1, input_dim=3, max_len=4, pooling="max")
    tok = TransformerClassifier(2, 8, 2, "softmax", 1, vocab_size=5, max_len=4)
    with pytest.raises(ValueError, match="max_len"):
        tok(torch.zeros(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids"):
        tok(torch.full((1, 3), 7))
    with pytest.raises(ValueError, match="integer"):
        tok(torch.zeros(1, 3))
    feat = TransformerClassifier(2, 8, 2, "primal", 1, input_dim=3, max_len=4)
    with pytest.raises(ValueError, match="NaN"):
        feat(torch.full((1, 3, 3), float("nan")))
    with pytest.raises(ValueError, match="key_padding_mask"):
        feat(torch.randn(1, 3, 3), torch.zeros(1, 4, dtype=torch.bool))
    assert isinstance(feat.encoder.layers[0].attn, PrimalAttention)


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("implementation", ["sdpa", "explicit"])
def test_causal_classifier_with_left_padding(num_layers: int, implementation: str) -> None:
    """Causal softmax with left padding: finite logits equal to those of the unpadded sequence."""
    torch.manual_seed(0)
    model = TransformerClassifier(
        3,
        8,
        2,
        "softmax",
        num_layers,
        input_dim=8,
        pos_encoding="none",
        dropout=0.0,
        causal=True,
        attention_kwargs={"softmax": {"implementation": implementation}},
    ).double()
    x = torch.randn(2, 6, 8, dtype=torch.float64)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, :2] = True
    logits = model(x, mask)
    assert torch.isfinite(logits).all()
    assert (logits[0] - model(x[:1, 2:])[0]).abs().max() < 1e-12
    logits.sum().backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
