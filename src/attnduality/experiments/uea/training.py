"""Models and training of the ``uea`` experiment (Chen et al. 2023, Table 1; official ``PrimalAttention_TimeSeries``).

:func:`train_one` trains one (dataset, model, seed) either on the fit split with validation (``"holdout"``) or on
the whole training set (``"full"``) with :func:`attnduality.training.train`: RAdam, gradient clipping, per-sample
``CE + η·KSVD`` (``J`` squared per sequence), every epoch logging the training loss, validation and test accuracy and
checkpointed, so an interrupted run resumes where it stopped. The first seed's holdout model also yields the
singular-value decay of its attention operators on test samples (paper Fig. 2).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ..runner import RunContext
from ..stats import protocol_numbers, spectrum_summary
from .config import UEAConfig
from .data import Part, standardiser, subset, to_tensors

__all__ = ["train_one"]


def _build(cfg: UEAConfig, dataset: str, model: str, channels: int, length: int, n_classes: int) -> Any:
    from ...nn import PrimalFormer, PrimalTransformer, TransformerClassifier

    common: dict[str, Any] = dict(
        input_dim=channels,
        max_len=length,
        pos_encoding="learned",
        pooling="flatten",
        ffn_dim=cfg.ffn,
        dropout=cfg.dropout,
        activation="gelu",
        norm_first=False,
        final_norm=True,
        output_activation="gelu",
    )
    hp = cfg.hparams(dataset, model)
    if hp is None:
        return TransformerClassifier(n_classes, cfg.d_model, cfg.heads, "softmax", cfg.layers, **common)
    s, _, rm = hp
    cls = PrimalFormer if model == "primalformer" else PrimalTransformer
    return cls(n_classes, cfg.d_model, cfg.heads, cfg.layers, rank=s, rank_multi=rm, **common)


def _accuracy(model: Any, x: Any, pad: Any, y: Any, batch: int) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, x.shape[0], batch):
            m = None if pad is None else pad[i : i + batch]
            correct += int((model(x[i : i + batch], m).argmax(dim=1) == y[i : i + batch]).sum())
    return correct / max(int(x.shape[0]), 1)


def train_one(
    ctx: RunContext, data: Mapping[str, Any], dataset: str, model_name: str, seed_idx: int, part: str
) -> dict[str, Any]:
    """Train one model (``part`` "holdout": on the fit split with validation; "full": on the whole training set)."""
    import torch
    import torch.nn.functional as F

    from ...interpret.spectrum import singular_value_decay
    from ...nn import primal_layers
    from ...training import KSVD, Step, resume
    from ...training import train as run_training

    cfg: UEAConfig = ctx.config
    key = f"{dataset}/{model_name}/seed{seed_idx}/{part}"
    train: Part = data["train"]
    fit = subset(train, data["fit_idx"]) if part == "holdout" else train
    mu, sd = standardiser(fit)
    x, pad, y = to_tensors(fit, mu, sd)
    xt, padt, yt = to_tensors(data["test"], mu, sd)
    xv = padv = yv = None
    if part == "holdout":
        xv, padv, yv = to_tensors(subset(train, data["val_idx"]), mu, sd)
    model = _build(cfg, dataset, model_name, data["channels"], data["length"], data["n_classes"])
    hp = cfg.hparams(dataset, model_name)
    eta = 0.0 if hp is None else hp[1]
    has_primal = any(True for _ in primal_layers(model))
    opt = torch.optim.RAdam(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(ctx.seed_for(key + "/shuffle"))
    ck = ctx.checkpoint(key, every=1)
    start = resume(ck, model=model, optimizer=opt, generators=[gen])
    names = (
        "train_loss",
        "train_ce",
        "train_ksvd",
        "train_acc",
        "val_acc",
        "test_acc",
        "train_seconds",
        "eval_seconds",
        "train_cpu_seconds",
        "eval_cpu_seconds",
    )
    hist: dict[str, list[Any]] = {k: list(ck.extra.get("history", {}).get(k, [])) for k in names}
    n = int(x.shape[0])
    sums: dict[str, float] = {}
    clock: list[float] = []

    def epoch_batches(_: int) -> Any:
        model.train()
        clock[:] = [time.perf_counter(), time.process_time()]
        perm = torch.randperm(n, generator=gen)
        sums.update(loss=0.0, ce=0.0, ksvd=0.0, correct=0)
        return (perm[i : i + cfg.batch] for i in range(0, n, cfg.batch))

    def objective(net: Any, idx: Any) -> tuple[Any, Any]:
        logits = net(x[idx], None if pad is None else pad[idx])
        return F.cross_entropy(logits, y[idx]), logits

    def accumulate(step: Step) -> None:
        k = int(step.batch.numel())
        sums["loss"] += float(step.loss) * k
        sums["ce"] += float(step.task) * k
        sums["ksvd"] += 0.0 if step.ksvd is None else float(step.ksvd) * k
        sums["correct"] += int((step.aux.detach().argmax(dim=1) == y[step.batch]).sum())

    def evaluate(epoch: int, bar: Any) -> None:
        t0, c0 = clock
        t1, c1 = time.perf_counter(), time.process_time()
        val = _accuracy(model, xv, padv, yv, cfg.eval_batch) if part == "holdout" else None
        test = _accuracy(model, xt, padt, yt, cfg.eval_batch)
        t2, c2 = time.perf_counter(), time.process_time()
        for name, v in zip(
            names,
            (
                sums["loss"] / n,
                sums["ce"] / n,
                sums["ksvd"] / n,
                sums["correct"] / n,
                val,
                test,
                t1 - t0,
                t2 - t1,
                c1 - c0,
                c2 - c1,
            ),
            strict=True,
        ):
            hist[name].append(v)
        bar.set_postfix(loss=f"{sums['loss'] / n:.3f}", val="-" if val is None else f"{val:.3f}", test=f"{test:.3f}")

    run_training(
        model,
        objective,
        opt,
        cfg.epochs,
        epoch_batches,
        start=start,
        checkpoint=ck,
        generators=[gen],
        extra=lambda: {"history": hist},
        ksvd=KSVD(eta, per_sample=True) if has_primal else None,  # official TS: J² per sequence, averaged
        grad_clip=cfg.grad_clip,
        on_step=accumulate,
        on_round=evaluate,
        progress=lambda span: ctx.progress(span, desc=key, initial=span.start, total=span.stop),
    )
    out: dict[str, Any] = {
        "dataset": dataset,
        "model": model_name,
        "seed": seed_idx,
        "part": part,
        "n_fit": n,
        "n_val": int(data["val_idx"].size) if part == "holdout" else 0,
        "n_test": int(xt.shape[0]),
        "params": sum(p.numel() for p in model.parameters()),
        "history": hist,
        **protocol_numbers(hist["test_acc"], hist["val_acc"] if part == "holdout" else None),
    }
    if part == "holdout" and seed_idx == 0 and cfg.spectrum_samples > 0:
        k = min(cfg.spectrum_samples, int(xt.shape[0]))
        decay = singular_value_decay(model, xt[:k], None if padt is None else padt[:k])
        out["spectrum"] = spectrum_summary(decay)
    return out
