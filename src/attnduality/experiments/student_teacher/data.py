"""Data of the ``student-teacher`` experiment (Ergen, Neyshabur & Mehta 2022, §4).

:func:`load_data` picks a seeded subset of the Pang & Lee sentences, splits it into fit, validation and test
sentences, and extracts once with the frozen all-MiniLM-L6-v2 the input of its last layer ``X_i`` (layer 5's
output), the last layer's output (the part-A target) and the last attention's output at [CLS], centred on the fit
sentences (the part-B target). :func:`batches` gives the mini-batch of an update, stateless so training resumes
exactly; :func:`example_index` picks the sentence of the attention-map figure.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..runner import RunContext
from .config import StudentTeacherConfig
from .models import cls_attention, last_layer_student, teacher_attention

__all__ = ["batches", "example_index", "load_data"]


def load_data(ctx: RunContext) -> dict[str, Any]:
    """Sentence subset and splits (indices into Pang & Lee), MiniLM inputs of the last layer, teacher targets."""
    import torch

    from ...backbones import load_minilm, minilm_token_features
    from ...data import load_pang_lee

    cfg: StudentTeacherConfig = ctx.config
    corpus = load_pang_lee("sentences")
    rng = np.random.default_rng(ctx.seed)
    pick = np.sort(rng.permutation(len(corpus.texts))[: cfg.n_sentences])
    texts = [corpus.texts[i] for i in pick]
    n = len(texts)
    n_test = int(round(cfg.test_frac * n))
    perm = rng.permutation(n)
    test, train = np.sort(perm[:n_test]), perm[n_test:]
    n_val = int(round(cfg.val_frac * len(train)))
    val, fit = np.sort(train[:n_val]), np.sort(train[n_val:])
    train = np.sort(train)
    kw = {"name": "pang_lee-sentences", "max_length": cfg.max_length, "progress": ctx.show_progress}
    x5 = minilm_token_features(texts, layer=5, **kw)
    y6 = minilm_token_features(texts, layer=6, **kw)
    model, tok = load_minilm()
    bert_layer = model.encoder.layer[-1]
    x = torch.as_tensor(np.array(x5.X, dtype=np.float32))
    pad = torch.as_tensor(~np.array(x5.mask))
    y = torch.as_tensor(np.array(y6.X, dtype=np.float32))
    teacher = teacher_attention(bert_layer)
    with torch.no_grad():
        y_cls, p_cls = cls_attention(teacher, x, pad)
        student = last_layer_student(teacher, bert_layer).eval()
        recon = torch.cat([student(x[i : i + 256], pad[i : i + 256]) for i in range(0, n, 256)])
    y_cls = y_cls - y_cls[torch.as_tensor(fit)].mean(0)  # centred on the fit sentences (no model has an intercept)
    real = ~pad
    ids = tok(texts, truncation=True, max_length=cfg.max_length)["input_ids"]
    return {
        "texts": texts,
        "tokens": [tok.convert_ids_to_tokens(i) for i in ids],
        "x": x,
        "pad": pad,
        "y": y,
        "y_cls": y_cls,
        "teacher_cls_weights": p_cls,
        "teacher": teacher,
        "bert_layer": bert_layer,
        "fit": torch.as_tensor(fit),
        "val": torch.as_tensor(val),
        "train": torch.as_tensor(train),
        "test": torch.as_tensor(test),
        "teacher_reconstruction": float((recon - y)[real].abs().max()),
    }


def batches(n: int, bs: int, t: int, seed: int) -> Any:
    """Indices (into 0..n-1) of update ``t``: epoch-wise permutations seeded by (seed, epoch) (stateless resume)."""
    import torch

    bs = min(bs, n)
    epoch, off = divmod(t * bs, n)
    idx: list[int] = []
    while len(idx) < bs:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        idx.extend(perm[off : off + bs - len(idx)].tolist())
        epoch, off = epoch + 1, 0
    return torch.as_tensor(idx)


def example_index(data: dict[str, Any]) -> int:
    """Position in the test set of the example sentence for attention maps: the first with ≥ 10 real tokens."""
    lengths = (~data["pad"][data["test"]]).sum(1)
    ok = (lengths >= min(10, int(lengths.max()))).nonzero()
    return int(ok[0, 0])
