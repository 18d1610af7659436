"""Data-parallel training and sharded convex solves under ``torchrun``.

Run a script (or the demo, :mod:`attnduality.experiments.distributed_demo`) with ``torchrun --nproc_per_node P
--master_addr 127.0.0.1 --master_port PORT``; :func:`init_distributed` reads the environment torchrun sets (gloo on
CPU, NCCL when CUDA is available) and is a no-op in a single process, so the same code runs with and without
torchrun. The package, by job:

* :mod:`~attnduality.distributed.process`: the process group (:func:`init_distributed`, :func:`rank`,
  :func:`world`, :func:`all_reduce_sum`, ...) and :func:`launch`, torchrun's in-Python counterpart;
* :mod:`~attnduality.distributed.data`: :class:`GlobalBatchLoader`, global batches that do not depend on the world
  size (``randperm(n)`` seeded by ``seed + epoch``; global batch ``t`` is ``perm[t·B:(t+1)·B]``, rank ``r`` gets
  its entries ``r, r + P, ...``; the incomplete last global batch of an epoch is dropped);
* :mod:`~attnduality.distributed.classifier`: :func:`train_classifier`, a sequence classifier trained with
  :func:`attnduality.training.train`, which wraps the model in ``DistributedDataParallel`` when ``world() > 1``
  and makes each update equal the single-process update on the whole global batch, KSVD regulariser included
  (the batch form squares one ``J`` per *global* batch: see :func:`attnduality.training.ksvd_data_parallel`);
* :mod:`~attnduality.distributed.operator`: :class:`ShardedOperator`. Rank ``r`` holds a contiguous block of
  samples (:func:`shard_range`) and the operator built on them; ``forward`` all-gathers the (n_r, c) predictions,
  so the loss, its gradient, FISTA's inner products and the duality-gap certificate run unchanged on the (N, c)
  predictions; ``adjoint`` all-reduces the local adjoints. FISTA on P ranks reproduces the single-process solve up
  to the order of the floating-point sums in the adjoint (about 1e-15 relative per iteration in float64).

What must be identical for "same result as one process": the global sample order (shards concatenated in rank order
are the original rows), the gates, the initialisation (seeded; DDP also broadcasts rank 0's parameters), the global
batch composition and order, ``dropout = 0`` (dropout masks come from each rank's RNG) and the data type.
Floating-point sums are grouped differently, so results agree to rounding, not bit for bit: the tests use 1e-10 in
float64. Do not give FISTA a ``max_time`` on sharded problems: ranks would stop at different iterations.

Demo (the digits; ``digits_sequences``, ``PrimalFormerDemo``, ``run_primalformer``, ``ConvexDemo``, ``run_convex``
are importable from here too)::

    torchrun --nproc_per_node 2 --master_addr 127.0.0.1 --master_port 29500 \\
        -m attnduality.distributed demo --task primalformer --out runs/distributed-primalformer
"""

from __future__ import annotations

import importlib
from typing import Any

from .classifier import train_classifier
from .data import GlobalBatchLoader
from .operator import ShardedOperator, shard_range
from .process import (
    DistInfo,
    all_reduce_sum,
    barrier,
    free_port,
    init_distributed,
    is_main,
    launch,
    rank,
    run_jobs,
    shutdown,
    world,
)

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

_DEMO = (
    "ConvexDemo",
    "PrimalFormerDemo",
    "build_primalformer",
    "digits_sequences",
    "main",
    "primalformer_data",
    "run_convex",
    "run_primalformer",
)


def __getattr__(name: str) -> Any:
    """The demo's names, from :mod:`attnduality.experiments.distributed_demo` (imported on first use: it builds on
    this package)."""
    if name in _DEMO:
        return getattr(importlib.import_module("attnduality.experiments.distributed_demo"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_DEMO])
