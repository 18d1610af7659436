"""Global batches that do not depend on the world size (:class:`GlobalBatchLoader`)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

from .process import rank as current_rank
from .process import world as current_world

__all__ = ["GlobalBatchLoader"]


class GlobalBatchLoader:
    """This rank's part of every global batch of one epoch, from a ``DistributedSampler`` seeded ``seed``.

    ``batch_size`` is the *global* batch ``B`` (divisible by the world size ``P``); each rank gets ``B/P`` samples.
    Global batch ``t`` of epoch ``e`` is ``randperm(n, seed + e)[t·B:(t+1)·B]`` whatever ``P`` is (the sampler
    deals rank ``r`` the entries ``r, r + P, ...`` of the permutation); ``n // B`` batches per epoch (the incomplete
    last one, and the sampler's padding, are never reached). Iterate after :meth:`set_epoch`, or ask for global batch
    ``t`` counted over the epochs with :meth:`batch` (what :func:`attnduality.training.train` does).
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
        p = current_world() if num_replicas is None else int(num_replicas)
        r = current_rank() if rank is None else int(rank)
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
        self._batches: Iterator[Any] | None = None
        self._next = -1

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[Any]:
        return itertools.islice(iter(self.loader), self.steps)

    def batch(self, t: int) -> Any:
        """This rank's part of global batch ``t`` of the whole run (batch ``t % len(self)`` of epoch
        ``t // len(self)``). Consecutive calls read one epoch's iterator; the first call, an epoch's first batch
        and a jump (a resumed run) start the epoch's iterator again and skip to the batch."""
        epoch, k = divmod(t, self.steps)
        if self._batches is None or k == 0 or t != self._next:
            self.set_epoch(epoch)
            self._batches = itertools.islice(iter(self.loader), k, None)
        self._next = t + 1
        return next(self._batches)
