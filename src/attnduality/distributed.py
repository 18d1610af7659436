"""Data-parallel training and sharded convex solves under ``torchrun``.

Run a script (or the demo below) with ``torchrun --nproc_per_node P --master_addr 127.0.0.1 --master_port PORT``;
:func:`init_distributed` reads the environment torchrun sets (gloo on CPU, NCCL when CUDA is available) and is a no-op
in a single process, so the same code runs with and without torchrun.

Training (:func:`train_classifier`): the model is wrapped in ``DistributedDataParallel`` when ``world() > 1``; every
step consumes one *global* batch of ``batch_size`` samples split over the ranks, and the update equals the
single-process update on that whole batch:

* batches: :class:`GlobalBatchLoader` (a ``DistributedSampler`` underneath) shuffles with ``randperm(n)`` seeded by
  ``seed + epoch``, the same permutation for every world size; global batch ``t`` is ``perm[t·B:(t+1)·B]`` and rank
  ``r`` gets its entries ``r, r + P, ...``; the incomplete last global batch of an epoch is dropped.
* task loss: each rank computes ``(P/B) Σ_local CE``; DDP averages the gradients over ranks, giving the gradient of
  the mean over the global batch.
* KSVD regulariser (Chen et al. 2023; :func:`attnduality.nn.primal.ksvd_loss`, which finds the primal layers inside
  the DDP wrapper through ``module.modules()``): with ``ksvd_per_sample=True`` (official TS/RL/NLP) it is a mean of
  per-sequence ``J_i²`` and splits over ranks like the task loss. The batch form (official LRA/CV) squares one ``J``
  per *global* batch, which is not a sum over samples: each rank's ``J`` is a mean over its own tokens, so averaging
  per-rank ``J_r²`` would be a different regulariser. Here every layer's global ``J`` is assembled from the ranks'
  ``J_r`` weighted by their token (and sequence) counts (one all-reduce), and each rank back-propagates
  ``2 J · P · (its weighted share of J)``, so the DDP average is exactly ``∇ J²``.

Sharded convex solves (:class:`ShardedOperator`): rank ``r`` holds a contiguous block of samples (:func:`shard_range`)
and the operator built on them; ``forward`` is computed locally and the (n_r, c) predictions are all-gathered, so the
loss, its gradient, FISTA's inner products and the duality-gap certificate run unchanged on the (N, c) predictions
(replicated, cheap: N·c numbers); ``adjoint`` applies the local adjoint to the rank's rows and all-reduces (sums) the
result. The iterate ``Z`` is replicated and every rank takes bit-identical steps (all-reduced values are identical on
every rank). FISTA on P ranks then reproduces the single-process solve up to the order of the floating-point sums in
the adjoint (one GEMM over N rows versus P partial GEMMs added), i.e. to about 1e-15 relative per iteration in float64.

What must be identical for "same result as one process": the global sample order (shards concatenated in rank order
are the original rows), the gates, the initialisation (seeded; DDP also broadcasts rank 0's parameters), the global
batch composition and order (above), ``dropout = 0`` (dropout masks come from each rank's RNG) and the data type.
Floating-point sums are grouped differently, so results agree to rounding, not bit for bit: the tests use 1e-10 in
float64. Do not give FISTA a ``max_time`` on sharded problems: ranks would stop at different iterations.

Demo::

    torchrun --nproc_per_node 2 --master_addr 127.0.0.1 --master_port 29500 \\
        -m attnduality.distributed demo --task primalformer --out runs/distributed-primalformer
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from torch.utils.data.distributed import DistributedSampler

from .convex.operators.base import LinearOperator
from .nn.primal import ksvd_loss, primal_layers

__all__ = [
    "DistInfo",
    "GlobalBatchLoader",
    "ShardedOperator",
    "all_reduce_sum",
    "barrier",
    "free_port",
    "init_distributed",
    "is_main",
    "launch",
    "rank",
    "run_jobs",
    "shard_range",
    "shutdown",
    "train_classifier",
    "world",
]

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
_OPTIMIZERS = ("radam", "adam", "adamw")


# ----------------------------------------------------------------------------------------------------------------
# process group
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DistInfo:
    """This process's place: ``rank`` of ``world`` processes, ``local_rank`` on its node, backend and device."""

    rank: int
    world: int
    local_rank: int
    backend: str | None
    device: str


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def _world() -> int:
    return dist.get_world_size() if _active() else 1


def _rank() -> int:
    return dist.get_rank() if _active() else 0


def world() -> int:
    """Number of processes in the default group (1 without one)."""
    return _world()


def rank() -> int:
    """This process's rank (0 without a group)."""
    return _rank()


def is_main() -> bool:
    """Whether this is rank 0 (the process that writes files and prints)."""
    return _rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if _active():
        dist.barrier()


def shutdown() -> None:
    """Destroy the default process group if there is one."""
    if _active():
        dist.destroy_process_group()


def _env_int(name: str) -> int:
    try:
        return int(os.environ[name])
    except ValueError:
        raise ValueError(f"environment variable {name}={os.environ[name]!r} is not an integer") from None


def init_distributed(backend: str | None = None, timeout_s: float = 600.0) -> DistInfo:
    """Join the process group described by torchrun's environment; a no-op in a single process.

    Reads ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``. Without ``WORLD_SIZE`` (or with
    ``WORLD_SIZE=1``) nothing is initialised and rank 0 of 1 is returned. ``backend`` defaults to ``"nccl"`` when
    CUDA is available (each process then uses ``cuda:LOCAL_RANK``) and ``"gloo"`` (CPU) otherwise. Calling it again
    returns the existing group's description.
    """
    if backend is not None and backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo', 'nccl' or None, got {backend!r}")
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    if _active():
        be = str(dist.get_backend())
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        dev = f"cuda:{local}" if be == "nccl" else "cpu"
        return DistInfo(dist.get_rank(), dist.get_world_size(), local, be, dev)
    n = _env_int("WORLD_SIZE") if "WORLD_SIZE" in os.environ else 1
    if n < 1:
        raise ValueError(f"WORLD_SIZE must be >= 1, got {n}")
    if n == 1:
        return DistInfo(0, 1, 0, None, "cuda" if torch.cuda.is_available() else "cpu")
    missing = [k for k in _ENV if k not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={n} but the torchrun variables {', '.join(missing)} are not set")
    r, local = _env_int("RANK"), _env_int("LOCAL_RANK")
    if not 0 <= r < n:
        raise ValueError(f"RANK={r} outside [0, WORLD_SIZE={n})")
    if not dist.is_available():
        raise ValueError("torch.distributed is not available in this build of PyTorch")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() and dist.is_nccl_available() else "gloo"
    device = "cpu"
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise ValueError("backend 'nccl' needs CUDA")
        if local >= torch.cuda.device_count():
            raise ValueError(f"LOCAL_RANK={local} but only {torch.cuda.device_count()} CUDA devices are visible")
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    dist.init_process_group(backend, init_method="env://", rank=r, world_size=n, timeout=timedelta(seconds=timeout_s))
    return DistInfo(r, n, local, backend, device)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over ranks (a new contiguous tensor; ``t`` itself in one process)."""
    if not _active() or dist.get_world_size() == 1:
        return t
    out = t.detach().clone().contiguous()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free on ``host`` a moment ago (for ``--master_port`` / ``MASTER_PORT``)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _launch_entry(
    local: int, fn: Callable[..., Any], args: tuple[Any, ...], port: int, nprocs: int, out: str, threads: int
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(local), LOCAL_RANK=str(local), WORLD_SIZE=str(nprocs)
    )
    torch.set_num_threads(threads)
    init_distributed(backend="gloo", timeout_s=120.0)
    try:
        result = fn(*args)
        torch.save(result, Path(out) / f"rank{local}.pt")
    finally:
        shutdown()


def run_jobs(jobs: Sequence[tuple[Callable[..., Any], Any]]) -> list[Any]:
    """``[fn(arg) for fn, arg in jobs]``: several runs in one :func:`launch` (process start-up is the slow part)."""
    return [fn(arg) for fn, arg in jobs]


def launch(fn: Callable[..., Any], nprocs: int, *args: Any, threads: int = 1) -> list[Any]:
    """Run ``fn(*args)`` in ``nprocs`` fresh processes joined by gloo on loopback; their results, by rank.

    The in-Python counterpart of ``torchrun --nproc_per_node nprocs`` (``torch.multiprocessing`` with the spawn start
    method, a free port found now): ``fn`` must be importable (a module-level function) and its result picklable.
    Each process uses ``threads`` intra-op threads.
    """
    if not isinstance(nprocs, int) or nprocs < 1:
        raise ValueError(f"nprocs must be a positive int, got {nprocs!r}")
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="attnduality-launch-") as tmp:
        mp.start_processes(
            _launch_entry,
            args=(fn, args, free_port(), nprocs, tmp, threads),
            nprocs=nprocs,
            join=True,
            start_method="spawn",
        )
        return [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=False) for r in range(nprocs)]


# ----------------------------------------------------------------------------------------------------------------
# global batches
# ----------------------------------------------------------------------------------------------------------------
class GlobalBatchLoader:
    """This rank's part of every global batch of one epoch, from a ``DistributedSampler`` seeded ``seed``.

    ``batch_size`` is the *global* batch ``B`` (divisible by the world size ``P``); each rank gets ``B/P`` samples.
    Global batch ``t`` of epoch ``e`` is ``randperm(n, seed + e)[t·B:(t+1)·B]`` whatever ``P`` is (the sampler
    deals rank ``r`` the entries ``r, r + P, ...`` of the permutation); ``n // B`` batches per epoch (the incomplete
    last one, and the sampler's padding, are never reached). Iterate after :meth:`set_epoch`.
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        batch_size: int,
        *,
        seed: int,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        p = _world() if num_replicas is None else int(num_replicas)
        r = _rank() if rank is None else int(rank)
        n = len(dataset)  # type: ignore[arg-type]
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if batch_size % p:
            raise ValueError(f"the global batch_size={batch_size} must be divisible by the world size {p}")
        if n < batch_size:
            raise ValueError(f"the dataset has {n} samples, fewer than one global batch of {batch_size}")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        self.batch_size, self.local_batch, self.world, self.rank = batch_size, batch_size // p, p, r
        self.steps = n // batch_size
        self.sampler: DistributedSampler[Any] = DistributedSampler(
            dataset, num_replicas=p, rank=r, shuffle=True, seed=seed, drop_last=False
        )
        self.loader = DataLoader(dataset, batch_size=self.local_batch, sampler=self.sampler, drop_last=True)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self.loader), self.steps)


# ----------------------------------------------------------------------------------------------------------------
# training
# ----------------------------------------------------------------------------------------------------------------
def _ksvd_global(module: nn.Module, *, trace: str, p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch-form KSVD regulariser of the *global* batch: (loss to back-propagate on this rank, its value).

    For each primal layer ``J = proj − tr`` with ``proj`` a mean over the batch's (non-padding) tokens and heads and
    ``tr`` the trace term (parameters, or a mean over sequences for ``trace="data"``). The global ``J`` is
    ``Σ_r (c_r/C)·proj_r − Σ_r (b_r/B)·tr_r`` (``c`` token counts, ``b`` sequence counts), i.e.
    ``Σ_r (c_r/C)·J_r`` when ``tr`` does not depend on the rank (``trace="params"``).
    """
    layers = list(primal_layers(module))
    if not layers:
        raise ValueError(f"ksvd_weight > 0 but {type(module).__name__} contains no PrimalAttention layer")
    dtype = layers[0].lambdas.dtype
    device = layers[0].lambdas.device
    counts = []
    for layer in layers:
        sc = layer.scores
        if sc is None:
            raise RuntimeError("the KSVD term needs a forward pass first")
        c = float(sc.e.shape[0] * sc.e.shape[1]) if sc.valid is None else float(sc.valid.sum())
        counts.append(c)
    b_local = float(layers[0].scores.e.shape[0])  # type: ignore[union-attr]
    totals = all_reduce_sum(torch.tensor([*counts, b_local], dtype=torch.float64, device=device))
    shares = []
    for layer, c, total in zip(layers, counts, totals[:-1].tolist(), strict=True):
        j = layer.ksvd_objective(per_sample=False, trace=trace)
        if trace == "params":
            share = j * (c / total)
        else:
            sc = layer.scores
            assert sc is not None and sc.weights is not None
            prod = sc.weights[:, 0] * sc.weights[:, 1]
            tr = prod.sum() / (layer.num_heads * prod.shape[0])
            share = (j + tr) * (c / total) - tr * (b_local / float(totals[-1]))
        shares.append(share)
    share_t = torch.stack(shares).to(dtype)
    j_global = all_reduce_sum(share_t.detach())
    value = j_global.square().mean()
    surrogate = (2.0 * p * j_global * share_t).mean()  # DDP averages over ranks: ∇ = mean_l 2 J_l ∇J_l
    return surrogate + (value - surrogate).detach(), value.detach()


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
    checkpoint: Any = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train a sequence classifier (e.g. :class:`~attnduality.nn.transformer.PrimalFormer`) in place, data-parallel.

    Loss per global batch: mean cross-entropy ``+ ksvd_weight · ksvd_loss(model)`` (Chen et al. 2023; batch form, or
    ``ksvd_per_sample=True``, ``ksvd_trace`` as in :func:`~attnduality.nn.primal.ksvd_loss`). ``dataset`` items are
    ``(x, y)`` or ``(x, key_padding_mask, y)``; ``batch_size`` is the global batch (see :class:`GlobalBatchLoader`),
    ``epochs`` full passes of ``n // batch_size`` steps. With ``world() > 1`` the model is wrapped in DDP and each
    step equals the single-process step on the same global batch (module docstring). ``checkpoint``: a
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
    net: nn.Module = model
    if p > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        # static_graph: Λ is used only by the KSVD term, outside forward (find_unused_parameters would mark it
        # ready twice), and has no gradient at all without it; the set of used parameters is fixed over the run
        net = DDP(model, device_ids=ids, static_graph=True)
    opt = _make_optimizer(optimizer, params, float(lr), float(weight_decay))
    total = epochs * loader.steps
    start, losses, task_losses, ksvd_vals = 0, [], [], []
    if checkpoint is not None:
        start = checkpoint.resume(model=model, optimizer=opt)
        ex = checkpoint.extra
        losses, task_losses, ksvd_vals = list(ex.get("losses", [])), list(ex.get("task", [])), list(ex.get("ksvd", []))
        states = ex.get("rank_rng")
        if states is not None and len(states) == p:
            torch.set_rng_state(states[r])
    from .progress import progress as progress_bar

    bar = progress_bar(desc=f"train (world {p})", total=total, initial=start, enabled=progress and r == 0)
    t0 = time.perf_counter()
    model.train()
    batches: Iterator[Any] | None = None
    for t in range(start, total):
        epoch, k = divmod(t, loader.steps)
        if batches is None or k == 0:
            loader.set_epoch(epoch)
            batches = itertools.islice(iter(loader), k, None)
        x, mask, y = _unpack(next(batches), device)
        logits = net(x, mask)
        ce_sum = F.cross_entropy(logits, y, reduction="sum")
        loss = ce_sum * (p / batch_size)
        reg_val = torch.zeros((), dtype=torch.float64)
        if ksvd_weight > 0:
            if ksvd_per_sample:
                per = ksvd_loss(net, per_sample=True, trace=ksvd_trace, reduction="none")
                reg = per.sum() * (p / batch_size)
                reg_val = all_reduce_sum(per.sum().detach()) / batch_size
            elif p > 1:
                reg, reg_val = _ksvd_global(net, trace=ksvd_trace, p=p)
            else:
                reg = ksvd_loss(net, per_sample=False, trace=ksvd_trace)
                reg_val = reg.detach()
            loss = loss + ksvd_weight * reg
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        task = float(all_reduce_sum(ce_sum.detach())) / batch_size
        task_losses.append(task)
        ksvd_vals.append(float(reg_val))
        losses.append(task + ksvd_weight * float(reg_val))
        bar.update(1)
        if checkpoint is not None and (t + 1) % checkpoint.every == 0:
            states = [torch.get_rng_state()]
            if p > 1:
                states = [None] * p
                dist.all_gather_object(states, torch.get_rng_state())
            if r == 0:
                extra = {"losses": losses, "task": task_losses, "ksvd": ksvd_vals, "rank_rng": states}
                checkpoint.maybe_save(t, model=model, optimizer=opt, extra=extra, force=True)
    bar.close()
    return {
        "losses": losses,
        "task_losses": task_losses,
        "ksvd": ksvd_vals,
        "steps": total,
        "world": p,
        "seconds": time.perf_counter() - t0,
    }


# ----------------------------------------------------------------------------------------------------------------
# sharded convex operators
# ----------------------------------------------------------------------------------------------------------------
def shard_range(n: int, rank: int | None = None, world: int | None = None) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of ``n`` samples that ``rank`` holds: contiguous blocks whose sizes differ by at most one."""
    p = _world() if world is None else int(world)
    r = _rank() if rank is None else int(rank)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    if not 0 <= r < p:
        raise ValueError(f"rank {r} outside [0, {p})")
    if n < p:
        raise ValueError(f"{n} samples cannot be sharded over {p} ranks")
    q, rem = divmod(n, p)
    lo = r * q + min(r, rem)
    return lo, lo + q + (r < rem)


class ShardedOperator(LinearOperator):
    """A :class:`LinearOperator` over all ranks' samples from each rank's operator on its own rows.

    ``local`` is built on this rank's contiguous rows (:func:`shard_range`); the global rows are the ranks' rows in
    rank order. ``forward(Z)`` (Z replicated) computes the local predictions and all-gathers them into (N, c);
    ``adjoint(G)`` for the global (N, c) ``G`` applies the local adjoint to this rank's rows and all-reduces the sum.
    Pair it with a loss bound to *all* targets and a penalty that holds no data (not the ReLU form's
    ``ConeGroupL2``) in a :class:`~attnduality.convex.problem.CompositeProblem`; FISTA, ``solve_path`` and the
    certificates then run unchanged. In one process it is a pass-through.
    """

    def __init__(self, local: LinearOperator) -> None:
        if not isinstance(local, LinearOperator):
            raise ValueError(f"local must be a LinearOperator, got {type(local).__name__}")
        self.local = local
        self.z_shape = tuple(local.z_shape)
        self.n_outputs = int(local.n_outputs)
        self.dtype, self.device = local.dtype, local.device
        p = world()
        info = [(int(local.n_samples), self.z_shape, self.n_outputs, str(self.dtype))]
        if p > 1:
            info = [None] * p  # type: ignore[list-item]
            dist.all_gather_object(info, (int(local.n_samples), self.z_shape, self.n_outputs, str(self.dtype)))
        shapes = {(z, c, d) for _, z, c, d in info}
        if len(shapes) > 1:
            raise ValueError(f"ranks disagree on (z_shape, n_outputs, dtype): {sorted(shapes, key=str)}")
        self.counts = [int(i[0]) for i in info]
        if min(self.counts) < 1:
            raise ValueError(f"every rank needs at least one sample, got counts {self.counts}")
        r = rank()
        self.lo = sum(self.counts[:r])
        self.hi = self.lo + self.counts[r]
        self.n_samples = sum(self.counts)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        u = self.local.forward(z)
        if len(self.counts) == 1:
            return u
        width = max(self.counts)
        buf = torch.zeros(width, self.n_outputs, dtype=u.dtype, device=u.device)
        buf[: u.shape[0]] = u
        parts = [torch.empty_like(buf) for _ in self.counts]
        dist.all_gather(parts, buf)
        return torch.cat([part[:n] for part, n in zip(parts, self.counts, strict=True)])

    def adjoint(self, g: torch.Tensor) -> torch.Tensor:
        if g.shape[0] != self.n_samples:
            raise ValueError(f"adjoint needs all {self.n_samples} rows of G, got {g.shape[0]}")
        out = self.local.adjoint(g[self.lo : self.hi])
        if len(self.counts) == 1:
            return out
        out = out.contiguous().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out


# ----------------------------------------------------------------------------------------------------------------
# demo (real data: scikit-learn's bundled 8×8 digits)
# ----------------------------------------------------------------------------------------------------------------
def digits_sequences(n: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8×8 digits as sequences: 8 tokens (image rows) of 8 pixels / 16, float64; ``n`` shuffled ones."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.data / 16.0, dtype=torch.float64).reshape(-1, 8, 8)
    y = torch.as_tensor(d.target, dtype=torch.long)
    if n is not None:
        if not isinstance(n, int) or not 1 <= n <= x.shape[0]:
            raise ValueError(f"n must be in [1, {x.shape[0]}], got {n!r}")
        idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
        x, y = x[idx], y[idx]
    return x, y


@dataclass(frozen=True)
class PrimalFormerDemo:
    """A small PrimalFormer on digit rows (8 tokens × 8 pixels), float64, dropout 0 (so world sizes agree)."""

    n_train: int = 1024
    n_test: int = 512
    embed_dim: int = 32
    num_heads: int = 2
    num_layers: int = 2
    rank: int = 4
    rank_multi: int = 2
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-2
    optimizer: str = "radam"
    weight_decay: float = 0.0
    ksvd_weight: float = 0.1
    ksvd_per_sample: bool = False
    ksvd_trace: str = "params"
    padding: bool = False
    """mask a random tail of 0–3 rows of each sequence as padding (exercises the token-count weighting)"""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_train + self.n_test > 1797:
            raise ValueError(f"n_train + n_test must be <= 1797 digits, got {self.n_train + self.n_test}")


def primalformer_data(cfg: PrimalFormerDemo) -> tuple[TensorDataset, tuple[torch.Tensor, ...]]:
    """Training dataset ``(x, [mask,] y)`` and test tensors of the demo (seeded split of the digits)."""
    x, y = digits_sequences(cfg.n_train + cfg.n_test, cfg.seed)
    masks = None
    if cfg.padding:
        tail = torch.randint(0, 4, (x.shape[0],), generator=torch.Generator().manual_seed(cfg.seed + 1))
        masks = torch.arange(8)[None, :] >= (8 - tail)[:, None]
    tr, te = slice(0, cfg.n_train), slice(cfg.n_train, None)
    if masks is None:
        return TensorDataset(x[tr], y[tr]), (x[te], None, y[te])
    return TensorDataset(x[tr], masks[tr], y[tr]), (x[te], masks[te], y[te])


def build_primalformer(cfg: PrimalFormerDemo) -> nn.Module:
    """The demo's PrimalFormer, initialised from ``cfg.seed``, in float64."""
    from .nn.transformer import PrimalFormer

    torch.manual_seed(cfg.seed)
    return PrimalFormer(
        10,
        cfg.embed_dim,
        cfg.num_heads,
        cfg.num_layers,
        rank=cfg.rank,
        rank_multi=cfg.rank_multi,
        input_dim=8,
        max_len=8,
        dropout=0.0,
        pooling="mean",
    ).double()


def run_primalformer(cfg: PrimalFormerDemo, progress: bool = False) -> dict[str, Any]:
    """Train the demo model in the current process group; final parameters, losses, accuracy and time."""
    dataset, (x_te, m_te, y_te) = primalformer_data(cfg)
    model = build_primalformer(cfg)
    hist = train_classifier(
        model,
        dataset,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        optimizer=cfg.optimizer,
        weight_decay=cfg.weight_decay,
        ksvd_weight=cfg.ksvd_weight,
        ksvd_per_sample=cfg.ksvd_per_sample,
        ksvd_trace=cfg.ksvd_trace,
        seed=cfg.seed,
        progress=progress,
    )
    model.eval()
    with torch.no_grad():
        acc = float((model(x_te, m_te).argmax(1) == y_te).double().mean())
    params = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {**hist, "test_accuracy": acc, "params": params}


@dataclass(frozen=True)
class ConvexDemo:
    """A gated-ReLU head on the digits, solved by FISTA over sharded samples (cross-entropy, block nuclear norm).

    ``operator="gated-mlp"``: Sahiner et al. eq. (8) on the flattened 64 pixels, ``n_gates`` gate vectors.
    ``operator="gated-attention"``: the gated attention head with token averaging (Thm 3.3's gated analogue) on the
    8×8 digit rows, ``n_gates`` gate matrices.
    """

    operator: str = "gated-attention"
    n_samples: int = 256
    n_gates: int = 2
    beta: float = 3e-2
    tol: float = 1e-6
    max_iter: int = 5000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.operator not in ("gated-mlp", "gated-attention"):
            raise ValueError(f"operator must be 'gated-mlp' or 'gated-attention', got {self.operator!r}")


def run_convex(cfg: ConvexDemo) -> dict[str, Any]:
    """Solve the demo's convex program with this rank's shard (all of it in one process); objective and certificate."""
    from .convex.arrangements import gate_masks, sample_gates
    from .convex.losses import CrossEntropyLoss
    from .convex.operators.attention import GatedAttentionOperator, sample_attention_gates
    from .convex.operators.mlp import GatedMLPOperator
    from .convex.penalties import BlockNuclearNorm
    from .convex.problem import CompositeProblem
    from .convex.solvers.fista import FISTA

    x, y = digits_sequences(cfg.n_samples, cfg.seed)
    lo, hi = shard_range(cfg.n_samples)
    if cfg.operator == "gated-mlp":
        flat = x.reshape(x.shape[0], -1)
        gates = sample_gates(flat.shape[1], cfg.n_gates, cfg.seed)
        local: LinearOperator = GatedMLPOperator(flat[lo:hi], gate_masks(flat[lo:hi], gates), 10)
    else:
        gates = sample_attention_gates(x.shape[2], cfg.n_gates, cfg.seed)
        local = GatedAttentionOperator(x[lo:hi], gates, 10)
    problem = CompositeProblem(CrossEntropyLoss(y), ShardedOperator(local), BlockNuclearNorm(), cfg.beta)
    t0 = time.perf_counter()
    res = FISTA(tol=cfg.tol, max_iter=cfg.max_iter).run(problem)
    cert = res.certificate
    return {
        "objective": res.objective,
        "primal": cert.primal,
        "dual": cert.dual,
        "gap": cert.gap,
        "rel_gap": cert.rel_gap,
        "grad_dual_norm": cert.grad_dual_norm,
        "status": res.status,
        "n_iter": res.n_iter,
        "seconds": time.perf_counter() - t0,
        "world": world(),
        "z": res.z.detach().cpu().clone(),
    }


def _summary(res: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in res.items() if k not in ("params", "z")}
    if "params" in res:
        out["param_sum_abs"] = float(sum(v.abs().sum() for v in res["params"].values()))
    if "z" in res:
        out["z_norm"] = float(torch.linalg.vector_norm(res["z"]))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m attnduality.distributed demo --task primalformer|convex [--seed S] [--out DIR] [--set k=v ...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m attnduality.distributed", description=(__doc__ or "").split("\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a PrimalFormer or solve a sharded convex head on the digits")
    demo.add_argument("--task", choices=("primalformer", "convex"), required=True)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", type=Path, default=None, help="directory for results.json (rank 0 writes)")
    demo.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override demo config fields")
    demo.add_argument("--threads", type=int, default=1, help="intra-op threads per process")
    args = parser.parse_args(argv)
    from .experiments.runner import apply_overrides, environment_versions, parse_overrides

    torch.set_num_threads(args.threads)
    info = init_distributed()
    try:
        base: Any = PrimalFormerDemo(seed=args.seed) if args.task == "primalformer" else ConvexDemo(seed=args.seed)
        cfg = apply_overrides(base, parse_overrides(args.set))
        t0 = time.perf_counter()
        res = run_primalformer(cfg, progress=True) if args.task == "primalformer" else run_convex(cfg)
        wall = time.perf_counter() - t0
        summary = _summary(res)
        if info.rank == 0:
            record = {
                "experiment": f"distributed-demo-{args.task}",
                "config": dataclasses.asdict(cfg),
                "seed": args.seed,
                "world": info.world,
                "backend": info.backend,
                "device": info.device,
                "threads_per_process": args.threads,
                "wall_seconds": wall,
                "results": summary,
                "versions": environment_versions(),
            }
            out = args.out or Path("runs") / f"distributed-{args.task}-world{info.world}-seed{args.seed}"
            out.mkdir(parents=True, exist_ok=True)
            (out / "results.json").write_text(json.dumps(record, indent=2))
            keys = ("world", "seconds", "test_accuracy", "param_sum_abs", "objective", "rel_gap", "n_iter", "status")
            print(json.dumps({k: summary[k] for k in keys if k in summary}))
            print(f"wrote {out / 'results.json'}", file=sys.stderr)
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
