"""The frozen MiniLM backbone (real weights, offline) and its cached token features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from attnduality.backbones import minilm_token_features, pool_channels


def test_minilm_is_the_real_frozen_model(minilm) -> None:
    model, tok = minilm
    assert sum(p.numel() for p in model.parameters()) == 22_713_216
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert len(model.encoder.layer) == 6 and model.config.hidden_size == 384 and tok.vocab_size == 30522
    assert tok("a gripping film")["input_ids"] == [101, 1037, 13940, 2143, 102]


def test_token_features_match_the_model_and_are_cached(minilm, sentences, tmp_path: Path) -> None:
    model, tok = minilm
    texts, y = sentences.texts[:12], sentences.y[:12]
    f = minilm_token_features(texts, name="pl-sent", y=y, max_length=48, batch_size=5, cache=tmp_path, progress=False)
    lengths = [len(tok(t, truncation=True, max_length=48)["input_ids"]) for t in texts]
    assert f.X.shape == (12, max(lengths), 384) and f.mask.sum(1).tolist() == lengths
    assert not f.X[~f.mask].any() and np.array_equal(f.y, y)
    for i in (0, int(np.argmin(lengths))):  # batched with padding == one text on its own
        enc = tok(texts[i], truncation=True, max_length=48, return_tensors="pt")
        with torch.no_grad():
            h = model(**enc).last_hidden_state[0].numpy()
        np.testing.assert_allclose(f.X[i, : lengths[i]], h, atol=2e-5)
    again = minilm_token_features(texts, name="pl-sent", y=y, max_length=48, cache=tmp_path, progress=False)
    assert isinstance(again.X, np.memmap) and again.path == f.path and np.array_equal(again.X, f.X)
    # pooled to d = 100 (Sahiner et al. §5), derived from the unpooled cache
    p = minilm_token_features(texts, name="pl-sent", max_length=48, pool_dim=100, cache=tmp_path, progress=False)
    assert p.X.shape == (12, max(lengths), 100) and p.path != f.path and p.meta["pool_dim"] == 100
    np.testing.assert_allclose(p.X, pool_channels(np.asarray(f.X), 100) * f.mask[..., None], atol=1e-6)


def test_layer_choice_and_uncached(minilm, sentences) -> None:
    model, tok = minilm
    texts = sentences.texts[:3]
    e = minilm_token_features(texts, name="x", max_length=16, layer=0, pool_dim=96, use_cache=False, progress=False)
    assert e.path is None and e.X.shape[2] == 96
    enc = tok(list(texts), truncation=True, max_length=16, padding=True, return_tensors="pt")
    with torch.no_grad():
        emb = model(**enc, output_hidden_states=True).hidden_states[0].numpy()
    np.testing.assert_allclose(e.X, pool_channels(emb, 96) * e.mask[..., None], atol=1e-5)


def test_bad_arguments() -> None:
    for kw, msg in [(dict(max_length=600), "max_length"), (dict(layer=7), "layer"), (dict(pool_dim=500), "pool_dim"),
                    (dict(batch_size=0), "batch_size"), (dict(y=[0]), "y must have shape")]:
        with pytest.raises(ValueError, match=msg):
            minilm_token_features(["a", "b"], name="x", use_cache=False, **kw)
    with pytest.raises(ValueError, match="non-empty sequence of str"):
        minilm_token_features([], name="x")


def test_frozen_features_transfer_to_pang_lee(minilm, sentences) -> None:
    """A linear probe on mean-pooled frozen tokens: 200 training sentences reach 0.78 on 100 held-out ones (0.5 is
    chance); data.md reports 0.741 with 3,000 / 1,000."""
    from sklearn.linear_model import LogisticRegression

    split = sentences.split(100, seed=0)
    idx = np.sort(np.random.default_rng(0).choice(len(split.texts_train), 200, replace=False))

    def mean_tokens(texts: tuple[str, ...]) -> np.ndarray:
        f = minilm_token_features(texts, name="probe", max_length=32, use_cache=False, progress=False)
        return (f.X * f.mask[..., None]).sum(1) / f.mask.sum(1, keepdims=True)

    probe = LogisticRegression(max_iter=2000).fit(mean_tokens(tuple(split.texts_train[i] for i in idx)),
                                                  split.y_train[idx])
    assert probe.score(mean_tokens(split.texts_test), split.y_test) > 0.65
