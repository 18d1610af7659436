"""The thread policy of every solve: one torch thread for problems too small to gain from more.

Below ``_ONE_THREAD_BELOW`` floating-point operations per operator application, a solve runs on one torch thread. On the
gated MLP operator (forward + adjoint, float64) two threads gain little below that size on a quiet machine and are
*slower* when another process holds a core (measured in BENCHMARKS.md §7). The caller's setting is restored when the
solve returns.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..problem import CompositeProblem

__all__ = ["solver_threads"]

_ONE_THREAD_BELOW = 1e9


@contextmanager
def solver_threads(problem: CompositeProblem) -> Iterator[None]:
    """One torch thread while solving a problem whose operator application costs fewer than ``10⁹`` flops
    (estimated as ``2·N·numel(Z)``); the caller's thread count is restored afterwards."""
    op = problem.operator
    work = 2.0 * op.n_samples * math.prod(op.z_shape)
    before = torch.get_num_threads()
    if work >= _ONE_THREAD_BELOW or before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
