"""Sharded convex solves: each rank holds a contiguous block of samples (:func:`shard_range`) and the operator built
on them; :class:`ShardedOperator` makes the ranks' operators one operator over all samples.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..convex.operators.base import LinearOperator
from .process import rank as current_rank
from .process import world as current_world

__all__ = ["ShardedOperator", "shard_range"]


def shard_range(n: int, rank: int | None = None, world: int | None = None) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of ``n`` samples that ``rank`` holds: contiguous blocks whose sizes differ by at most one."""
    p = current_world() if world is None else int(world)
    r = current_rank() if rank is None else int(rank)
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
        p = current_world()
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
        r = current_rank()
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
