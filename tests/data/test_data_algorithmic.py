"""Modular division mod 97 (Ergen et al.) and sparse parity."""

from __future__ import annotations

import numpy as np
import pytest

from attnduality.data import make_modular, make_sparse_parity, modular_table


def test_division_mod_97_has_9312_equations() -> None:
    X, y = modular_table(97, "div")
    assert X.shape == (9312, 4) and y.shape == (9312,)
    a, b = X[:, 0], X[:, 2]
    assert np.array_equal((y * b) % 97, a) and b.min() == 1 and (X[:, 1] == 97).all() and (X[:, 3] == 98).all()
    assert len({(int(p), int(q)) for p, q in zip(a, b, strict=True)}) == 9312


def test_split_is_a_seeded_partition() -> None:
    s = make_modular(97, "div", train_frac=0.3, seed=0)
    assert (len(s.y_train), len(s.y_test)) == (2794, 6518) and s.meta["vocab_size"] == 99 and s.n_classes == 97
    rows = {tuple(r) for r in s.X_train} | {tuple(r) for r in s.X_test}
    assert len(rows) == 9312
    assert np.array_equal(s.X_train, make_modular(train_frac=0.3, seed=0).X_train)
    assert not np.array_equal(s.X_train, make_modular(train_frac=0.3, seed=1).X_train)


def test_other_operations() -> None:
    X, y = modular_table(7, "add")
    assert X.shape == (49, 4) and np.array_equal(y, (X[:, 0] + X[:, 2]) % 7)
    X, y = modular_table(5, "x2+xy+y2")
    a, b = X[:, 0], X[:, 2]
    assert np.array_equal(y, (a * a + a * b + b * b) % 5)
    with pytest.raises(ValueError, match="prime"):
        modular_table(96, "div")
    with pytest.raises(ValueError, match="op must be one of"):
        modular_table(7, "pow")
    with pytest.raises(ValueError, match="train_frac"):
        make_modular(train_frac=1.0)


def test_sparse_parity() -> None:
    s = make_sparse_parity(2000, 500, n_bits=40, k=3, seed=0)
    S = list(s.meta["support"])
    assert s.X_train.shape == (2000, 40) and set(np.unique(s.X_train)) == {0, 1} and len(S) == 3
    assert np.array_equal(s.y_train, s.X_train[:, S].sum(1) % 2) and np.array_equal(s.y_test, s.X_test[:, S].sum(1) % 2)
    assert 0.45 < s.y_train.mean() < 0.55
    # no single bit (nor the other bits) predicts the label
    corr = np.abs([np.corrcoef(s.X_train[:, j], s.y_train)[0, 1] for j in range(40)])
    assert corr.max() < 0.1
    t = make_sparse_parity(2000, 500, n_bits=40, k=3, seed=0, signed=True)
    assert np.array_equal(t.X_train, 1 - 2 * s.X_train) and t.X_train.dtype == np.float32
    assert np.array_equal(np.prod(t.X_test[:, S], axis=1) < 0, t.y_test == 1)
    u = make_sparse_parity(10, 10, n_bits=20, k=2, seed=1, support=(3, 17))
    assert u.meta["support"] == (3, 17) and np.array_equal(u.y_train, (u.X_train[:, 3] + u.X_train[:, 17]) % 2)
    with pytest.raises(ValueError, match="support"):
        make_sparse_parity(10, 10, n_bits=20, k=2, support=(3, 3))
    with pytest.raises(ValueError, match="k <= n_bits"):
        make_sparse_parity(10, 10, n_bits=2, k=3)
