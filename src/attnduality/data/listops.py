"""LRA ListOps (Nangia & Bowman 2018; Tay et al. 2021), generated: the LRA grammar and settings, deterministic by seed.

A tree is a digit (probability ``p_leaf``, and always at ``max_depth``) or ``[OP a_1 … a_k ]`` with 2..``max_args``
arguments; OP is MAX, MIN, MED (``int(np.median)``, as LRA) or SM (sum mod 10). The label is the tree's value
(10 classes). Trees are drawn until their token count lies in [min_len, max_len] (LRA: 500–2000, depth 10,
10 arguments, leaf probability 0.75; the root has depth 1, so at most 9 nested operators, as in LRA's
``generate_tree(1, ...)``). LRA keeps 500 < length < 2000 (strict): pass ``min_len=501, max_len=1999`` for exactly
that rule. LRA's TSV also carries "(" ")" tokens that hold no information; they are left out here, so the lengths
count only the tokens below (as LRA's own length does). With the defaults the median length is 941 tokens.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

import numpy as np

from ._core import Split, cache_dir, cache_key

OPS = ("[MAX", "[MIN", "[MED", "[SM")
VOCAB: tuple[str, ...] = ("<pad>", *(str(i) for i in range(10)), *OPS, "]")
TOKEN_ID = {t: i for i, t in enumerate(VOCAB)}
PAD = 0


def _apply(op: str, args: list[int]) -> int:
    if op == "[MAX":
        return max(args)
    if op == "[MIN":
        return min(args)
    if op == "[MED":
        return int(np.median(args))
    return sum(args) % 10


class _TooLong(Exception):
    pass


def _tree(rng: random.Random, depth: int, max_depth: int, max_args: int, p_leaf: float, out: list[str],
          budget: int) -> int:
    # as LRA's generate_tree (depth starts at 1; digits drawn as leaves, the operator after its arguments);
    # a tree that grows past max_len is abandoned early, which leaves the accepted trees' distribution unchanged
    if depth >= max_depth or rng.random() < p_leaf:
        v = rng.randrange(10)
        out.append(str(v))
        if len(out) > budget:
            raise _TooLong
        return v
    start = len(out)
    out.append("")
    vals = [_tree(rng, depth + 1, max_depth, max_args, p_leaf, out, budget)
            for _ in range(rng.randint(2, max_args))]
    op = rng.choice(OPS)
    out[start] = op
    out.append("]")
    if len(out) > budget:
        raise _TooLong
    return _apply(op, vals)


def generate_listops(n: int, *, seed: int = 0, min_len: int = 500, max_len: int = 2000, max_depth: int = 10,
                     max_args: int = 10, p_leaf: float = 0.75,
                     max_tries: int | None = None) -> tuple[list[list[str]], np.ndarray]:
    """``n`` ListOps expressions (token lists) and their values (n,) int64, deterministic in ``seed``."""
    if n < 0 or not 1 <= min_len <= max_len or max_depth < 1 or max_args < 2 or not 0.0 < p_leaf <= 1.0:
        raise ValueError(f"invalid ListOps settings: n={n}, min_len={min_len}, max_len={max_len}, "
                         f"max_depth={max_depth}, max_args={max_args}, p_leaf={p_leaf}")
    rng = random.Random(seed)
    exprs: list[list[str]] = []
    ys: list[int] = []
    tries, limit = 0, max_tries if max_tries is not None else 2000 + 2000 * n
    while len(exprs) < n:
        tries += 1
        if tries > limit:
            raise ValueError(f"only {len(exprs)} of {n} ListOps trees had {min_len}..{max_len} tokens after "
                             f"{limit} draws; widen the length range or change max_depth/max_args/p_leaf")
        out: list[str] = []
        try:
            v = _tree(rng, 1, max_depth, max_args, p_leaf, out, max_len)
        except _TooLong:
            continue
        if len(out) >= min_len:
            exprs.append(out)
            ys.append(v)
    return exprs, np.array(ys, dtype=np.int64)


def evaluate(tokens: Sequence[str]) -> int:
    """Value of one ListOps expression (a stack evaluator, independent of the generator); ValueError if malformed."""
    stack: list[list[object]] = []
    result: int | None = None
    for t in tokens:
        if t in OPS:
            stack.append([t])
        elif t == "]":
            if not stack or len(stack[-1]) < 3:
                raise ValueError("']' without an operator and two arguments")
            op, *args = stack.pop()
            v = _apply(str(op), [int(a) for a in args])  # type: ignore[call-overload]
            if stack:
                stack[-1].append(v)
            else:
                result = v
        elif t.isdigit() and len(t) == 1:
            if not stack:
                if result is not None or len(tokens) != 1:
                    raise ValueError("a bare digit is only a valid expression on its own")
                result = int(t)
            else:
                stack[-1].append(int(t))
        else:
            raise ValueError(f"unknown ListOps token {t!r}")
    if stack or result is None:
        raise ValueError("unbalanced ListOps expression")
    return result


def encode(exprs: Sequence[Sequence[str]], pad_to: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Token lists -> ids (N, L) int64 padded with 0 (``<pad>``) and mask (N, L) bool; L = ``pad_to`` or longest."""
    L = max((len(e) for e in exprs), default=0) if pad_to is None else pad_to
    if exprs and max(len(e) for e in exprs) > L:
        raise ValueError(f"an expression is longer than pad_to={pad_to}")
    ids = np.zeros((len(exprs), L), np.int64)
    for i, e in enumerate(exprs):
        try:
            ids[i, : len(e)] = [TOKEN_ID[t] for t in e]
        except KeyError as err:
            raise ValueError(f"unknown ListOps token {err.args[0]!r}") from None
    return ids, ids != PAD


def decode(ids: np.ndarray) -> list[str]:
    """One row of token ids back to tokens (padding dropped)."""
    return [VOCAB[i] for i in np.asarray(ids).tolist() if i != PAD]


def make_listops(n_train: int, n_test: int, *, seed: int = 0, min_len: int = 500, max_len: int = 2000,
                 max_depth: int = 10, max_args: int = 10, p_leaf: float = 0.75, pad_to: int | None = None,
                 cache: bool | str | os.PathLike[str] = False) -> Split:
    """A ListOps train/test split (LRA defaults; LRA itself uses 96k/2k/2k train/val/test).

    ``X_*`` int64 token ids (N, L) over :data:`VOCAB` (0 = padding), ``mask_*`` (N, L) bool, ``y_*`` in 0..9;
    L = ``pad_to`` or ``max_len``. Train and test come from independent streams derived from ``seed``.
    ``cache=True`` (or a directory) stores the result as ``listops/<hash>.npz`` (96k samples take minutes).
    """
    if n_train < 1 or n_test < 1:
        raise ValueError(f"n_train and n_test must be >= 1, got {n_train}, {n_test}")
    L = max_len if pad_to is None else pad_to
    if L < max_len:
        raise ValueError(f"pad_to={pad_to} is shorter than max_len={max_len}")
    kw = dict(min_len=min_len, max_len=max_len, max_depth=max_depth, max_args=max_args, p_leaf=p_leaf)
    meta = {"name": "ListOps", "vocab": VOCAB, "seed": seed, **kw}
    path = None
    if cache is not False:
        key = cache_key({"n_train": n_train, "n_test": n_test, "pad_to": L, "v": 1, **meta})
        path = cache_dir(None if cache is True else cache) / "listops" / f"listops-{key}.npz"
        if path.is_file():
            with np.load(path) as z:
                return Split(z["X_train"], z["y_train"], z["X_test"], z["y_test"], z["X_train"] != PAD,
                             z["X_test"] != PAD, tuple(str(i) for i in range(10)), meta)
    streams = np.random.SeedSequence(seed).spawn(2)
    parts = []
    for n, ss in zip((n_train, n_test), streams, strict=True):
        exprs, y = generate_listops(n, seed=int(ss.generate_state(1)[0]), **kw)  # type: ignore[arg-type]
        parts.append((*encode(exprs, L), y))
    (Xa, ma, ya), (Xb, mb, yb) = parts
    split = Split(Xa, ya, Xb, yb, ma, mb, tuple(str(i) for i in range(10)), meta)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}-{os.getpid()}.npz")
        np.savez(tmp, X_train=Xa, y_train=ya, X_test=Xb, y_test=yb)
        os.replace(tmp, path)
    return split
