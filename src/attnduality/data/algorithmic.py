"""Algorithmic tasks: modular arithmetic (Power et al. 2022; Ergen et al. 2022 use x / y mod 97) and sparse parity
(Barak et al. 2022). Both are deterministic in ``seed``."""

from __future__ import annotations

import numpy as np

from ._core import Split

MODULAR_OPS = ("div", "add", "sub", "mul", "x2+xy+y2")


def _is_prime(p: int) -> bool:
    return p >= 2 and all(p % q for q in range(2, int(p**0.5) + 1))


def modular_table(p: int = 97, op: str = "div") -> tuple[np.ndarray, np.ndarray]:
    """Every equation ``a op b = c (mod p)``: tokens (M, 4) int64 ``[a, OP, b, EQ]`` with OP = p, EQ = p + 1
    (vocabulary p + 2) and answers (M,) int64. Division skips b = 0, so p = 97 gives 97·96 = 9,312 equations."""
    if op not in MODULAR_OPS:
        raise ValueError(f"op must be one of {MODULAR_OPS}, got {op!r}")
    if p < 2 or (op in ("div", "mul") and not _is_prime(p)):
        raise ValueError(f"p must be a prime >= 2 for {op!r} (a field, so that division is defined), got {p}")
    a, b = (v.ravel() for v in np.meshgrid(np.arange(p), np.arange(p), indexing="ij"))
    if op == "div":
        a, b = a[b != 0], b[b != 0]
        inv = np.array([pow(int(v), p - 2, p) for v in range(p)])  # Fermat: b^(p-2) = b^-1 mod p
        c = (a * inv[b]) % p
        if not np.array_equal((c * b) % p, a):
            raise AssertionError("modular inverse check failed")
    else:
        c = {"add": a + b, "sub": a - b, "mul": a * b, "x2+xy+y2": a * a + a * b + b * b}[op] % p
    X = np.stack([a, np.full_like(a, p), b, np.full_like(a, p + 1)], axis=1).astype(np.int64)
    return X, c.astype(np.int64)


def make_modular(p: int = 97, op: str = "div", train_frac: float = 0.5, seed: int = 0) -> Split:
    """A random train/test split of :func:`modular_table` with ``round(train_frac · M)`` training equations.

    ``X_*`` (N, 4) int64 tokens, ``y_*`` (N,) int64 answers in 0..p-1 (``classes`` = "0".."p-1").
    """
    if not 0.0 < train_frac < 1.0:
        raise ValueError(f"train_frac must lie in (0, 1), got {train_frac}")
    X, y = modular_table(p, op)
    k = int(round(train_frac * len(y)))
    if not 0 < k < len(y):
        raise ValueError(f"train_frac={train_frac} leaves an empty train or test set ({len(y)} equations)")
    idx = np.random.default_rng(seed).permutation(len(y))
    tr, te = idx[:k], idx[k:]
    return Split(X[tr], y[tr], X[te], y[te], classes=tuple(str(i) for i in range(p)),
                 meta={"name": f"modular-{op}-{p}", "p": p, "op": op, "vocab_size": p + 2, "train_frac": train_frac,
                       "seed": seed, "n_equations": len(y)})


def make_sparse_parity(n_train: int, n_test: int, n_bits: int = 40, k: int = 3, seed: int = 0,
                       support: tuple[int, ...] | None = None, signed: bool = False) -> Split:
    """(n_bits, k)-sparse parity: x uniform in {0,1}^n_bits, y = XOR of the bits in a hidden k-subset S.

    S is drawn from ``seed`` unless ``support`` is given (it is in ``meta["support"]``). Train and test samples come
    from independent streams. ``X_*`` (N, n_bits) int64 in {0,1}, or float32 in {+1,-1} (1-2x) if ``signed``.
    """
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be >= 1, got {n_train}, {n_test}")
    if not 1 <= k <= n_bits:
        raise ValueError(f"need 1 <= k <= n_bits, got k={k}, n_bits={n_bits}")
    s_rng, a_rng, b_rng = (np.random.default_rng(ss) for ss in np.random.SeedSequence(seed).spawn(3))
    if support is None:
        S = np.sort(s_rng.choice(n_bits, k, replace=False))
    else:
        S = np.array(sorted(support), dtype=np.int64)
        if len(S) != k or len(set(S.tolist())) != k or S.min() < 0 or S.max() >= n_bits:
            raise ValueError(f"support must be {k} distinct indices in 0..{n_bits - 1}, got {support}")
    parts = []
    for rng, n in ((a_rng, n_train), (b_rng, n_test)):
        X = rng.integers(0, 2, size=(n, n_bits), dtype=np.int64)
        y = X[:, S].sum(1) % 2
        parts.append(((1 - 2 * X).astype(np.float32) if signed else X, y.astype(np.int64)))
    (Xa, ya), (Xb, yb) = parts
    return Split(Xa, ya, Xb, yb, classes=("0", "1"),
                 meta={"name": f"sparse-parity-{n_bits}-{k}", "support": tuple(int(s) for s in S), "seed": seed,
                       "signed": signed})
