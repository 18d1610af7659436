"""ListOps generator: LRA grammar, length limits, determinism, labels checked by an independent evaluator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from attnduality.data import make_listops
from attnduality.data.listops import VOCAB, decode, encode, evaluate, generate_listops


def test_lra_defaults_lengths_and_labels() -> None:
    s = make_listops(24, 8, seed=0)
    assert s.X_train.shape == (24, 2000) and s.X_test.shape == (8, 2000) and s.n_classes == 10
    lengths = np.concatenate([s.mask_train.sum(1), s.mask_test.sum(1)])
    assert lengths.min() >= 500 and lengths.max() <= 2000
    assert np.array_equal(s.mask_train, s.X_train != 0)
    for X, y in ((s.X_train, s.y_train), (s.X_test, s.y_test)):
        for row, label in zip(X, y, strict=True):
            assert evaluate(decode(row)) == label
    assert len(VOCAB) == 16 and s.meta["vocab"] == VOCAB


def test_deterministic_in_seed_and_independent_train_test() -> None:
    a, b, c = (make_listops(6, 3, seed=k, min_len=20, max_len=200) for k in (0, 0, 1))
    assert np.array_equal(a.X_train, b.X_train) and np.array_equal(a.X_test, b.X_test)
    assert not np.array_equal(a.X_train, c.X_train)
    # the test set does not depend on how many training samples are drawn
    d = make_listops(9, 3, seed=0, min_len=20, max_len=200)
    assert np.array_equal(a.X_test, d.X_test)


def test_evaluator_and_grammar() -> None:
    assert evaluate("[MAX 2 9 [MIN 4 7 ] 0 ]".split()) == 9
    assert evaluate("[MED 1 2 3 4 ]".split()) == 2  # int(median 2.5), as LRA
    assert evaluate("[SM 8 5 [MAX 1 3 ] ]".split()) == 6
    assert evaluate(["7"]) == 7
    for bad in ("[MAX 1 ]", "[MAX 1 2", "1 2", "[FOO 1 2 ]"):
        with pytest.raises(ValueError):
            evaluate(bad.split())
    exprs, ys = generate_listops(50, seed=3, min_len=4, max_len=60, max_depth=4)
    for e, v in zip(exprs, ys, strict=True):
        assert 4 <= len(e) <= 60 and evaluate(e) == v
        assert e[0] in VOCAB[11:15] and e[-1] == "]"
    ids, mask = encode(exprs, 64)
    assert [decode(r) for r in ids] == exprs and ids.shape == (50, 64) and mask.sum() == sum(map(len, exprs))


def test_cache_round_trip(tmp_path: Path) -> None:
    a = make_listops(4, 2, seed=5, min_len=10, max_len=80, cache=tmp_path)
    (path,) = (tmp_path / "listops").glob("listops-*.npz")
    b = make_listops(4, 2, seed=5, min_len=10, max_len=80, cache=tmp_path)
    assert np.array_equal(a.X_train, b.X_train) and np.array_equal(a.mask_test, b.mask_test) and path.is_file()


def test_bad_settings() -> None:
    with pytest.raises(ValueError, match="invalid ListOps settings"):
        generate_listops(3, min_len=10, max_len=5)
    with pytest.raises(ValueError, match="widen the length range"):  # no tree has 2 or 3 tokens
        generate_listops(1, min_len=2, max_len=3, max_tries=500)
    with pytest.raises(ValueError, match="pad_to"):
        make_listops(1, 1, max_len=100, pad_to=50)
