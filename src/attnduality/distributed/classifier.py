"""Data-parallel training of a sequence classifier (:func:`train_classifier`) on :func:`attnduality.training.train`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..nn.primal import primal_layers
from ..progress import progress as progress_bar
from ..training import KSVD, Checkpoint, Step, resume, train
from .data import GlobalBatchLoader
from .process import all_reduce_sum, rank, world

__all__ = ["train_classifier"]

_OPTIMIZERS = ("radam", "adam", "adamw")


def _unpack(
    batch: Sequence[torch.Tensor], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    if len(batch) == 2:
        x, y = batch
        mask = None
    elif len(batch) == 3:
        x, mask, y = batch
        mask = mask.to(device)
    else:
        raise ValueError(f"dataset items must be (x, y) or (x, key_padding_mask, y), got {len(batch)} fields")
    return x.to(device), mask, y.to(device).long()


def _make_optimizer(name: str, params: Any, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "radam":
        return torch.optim.RAdam(params, lr=lr, weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def train_classifier(
    model: nn.Module,
    dataset: Dataset[Any],
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    optimizer: str = "radam",
    weight_decay: float = 0.0,
    ksvd_weight: float = 0.0,
    ksvd_per_sample: bool = False,
    ksvd_trace: str = "params",
    seed: int,
    checkpoint: Checkpoint | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train a sequence classifier (e.g. :class:`~attnduality.nn.transformer.PrimalFormer`) in place, data-parallel.

    Loss per global batch: mean cross-entropy ``+ ksvd_weight · ksvd_loss(model)`` (Chen et al. 2023; batch form, or
    ``ksvd_per_sample=True``, ``ksvd_trace`` as in :func:`~attnduality.nn.primal.ksvd_loss`). ``dataset`` items are
    ``(x, y)`` or ``(x, key_padding_mask, y)``; ``batch_size`` is the global batch (see :class:`GlobalBatchLoader`),
    ``epochs`` full passes of ``n // batch_size`` steps. With ``world() > 1`` the model is wrapped in DDP and each
    step equals the single-process step on the same global batch (:mod:`attnduality.training`): each rank's
    cross-entropy is ``(P/B) Σ_local CE`` and DDP averages the gradients. ``checkpoint``: a
    :class:`~attnduality.experiments.runner.TrainingCheckpoint` (rank 0 writes, every rank resumes; the per-rank
    torch RNG states travel in ``extra`` so a resumed run with dropout continues bit-identically on the same world
    size). The model must already be on this rank's device (``init_distributed().device``).

    Returns ``{"losses": [per-step global loss], "task_losses", "ksvd": [per-step regulariser], "steps", "world",
    "seconds"}`` (identical on every rank).
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if not (isinstance(lr, int | float) and lr > 0 and math.isfinite(lr)):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    if optimizer not in _OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {optimizer!r}")
    if not (weight_decay >= 0 and math.isfinite(weight_decay)):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    if not (ksvd_weight >= 0 and math.isfinite(ksvd_weight)):
        raise ValueError(f"ksvd_weight must be a finite number >= 0, got {ksvd_weight!r}")
    if ksvd_trace not in ("params", "data"):
        raise ValueError(f"ksvd_trace must be 'params' or 'data', got {ksvd_trace!r}")
    params = list(model.parameters())
    if not params:
        raise ValueError("the model has no parameters")
    if ksvd_weight > 0 and next(primal_layers(model), None) is None:
        raise ValueError(f"ksvd_weight > 0 but {type(model).__name__} contains no PrimalAttention layer")
    device = params[0].device
    p, r = world(), rank()
    loader = GlobalBatchLoader(dataset, batch_size, seed=seed)
    opt = _make_optimizer(optimizer, params, float(lr), float(weight_decay))
    total = epochs * loader.steps
    start, losses, task_losses, ksvd_vals = 0, [], [], []
    if checkpoint is not None:
        start = resume(checkpoint, model=model, optimizer=opt)
        ex = checkpoint.extra
        losses, task_losses, ksvd_vals = list(ex.get("losses", [])), list(ex.get("task", [])), list(ex.get("ksvd", []))

    def objective(net: nn.Module, batch: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x, mask, y = _unpack(batch, device)
        ce_sum = F.cross_entropy(net(x, mask), y, reduction="sum")
        return ce_sum * (p / batch_size), ce_sum.detach()

    def record(step: Step) -> None:
        task = float(all_reduce_sum(step.aux)) / batch_size
        reg = 0.0 if step.ksvd is None else float(step.ksvd)
        task_losses.append(task)
        ksvd_vals.append(reg)
        losses.append(task + ksvd_weight * reg)

    model.train()
    result = train(
        model,
        objective,
        opt,
        total,
        lambda t: (loader.batch(t),),
        start=start,
        checkpoint=checkpoint,
        extra=lambda: {"losses": losses, "task": task_losses, "ksvd": ksvd_vals},
        ksvd=KSVD(ksvd_weight, ksvd_per_sample, ksvd_trace),
        progress=lambda span: progress_bar(
            span, desc=f"train (world {p})", initial=span.start, total=span.stop, enabled=progress and r == 0
        ),
        on_step=record,
    )
    return {
        "losses": losses,
        "task_losses": task_losses,
        "ksvd": ksvd_vals,
        "steps": total,
        "world": p,
        "seconds": result.seconds,
    }
