"""The runner's thread policy: use the cores that are idle when a run starts, never more.

A run that asks for more threads than there are idle cores does not just lose the extra threads: every parallel
kernel waits for its slowest thread, and a thread sharing a core with another process runs at a fraction of its
speed. Measured on the 2-core development machine with another process keeping one core busy
(BENCHMARKS.md §8): `attnduality run quickstart` took 75–79 s on torch's default of two threads and 47–53 s on
one; on a quiet machine the two settings were within noise (38–41 s). So ``threads="auto"`` measures the idle
cores over a short window when the run starts (``/proc/stat`` on Linux, the load average elsewhere) and uses that
many threads, at least one and at most torch's default. It decides once: a process that starts later is not seen.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["auto_threads", "idle_cpus", "resolve_threads", "thread_limit"]


def _proc_stat() -> tuple[int, int] | None:
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:9]]
    return ticks[3] + ticks[4], sum(ticks)  # idle + iowait, all (user … steal)


def idle_cpus(window: float = 0.25) -> float | None:
    """How many CPUs were idle over the next ``window`` seconds (``/proc/stat``), or from the 1-minute load
    average where there is no ``/proc/stat``; ``None`` if neither is available."""
    n = os.cpu_count() or 1
    first = _proc_stat()
    if first is not None:
        time.sleep(window)
        second = _proc_stat()
        if second is not None and second[1] > first[1]:
            return n * (second[0] - first[0]) / (second[1] - first[1])
    try:
        return max(0.0, n - os.getloadavg()[0])
    except (AttributeError, OSError):
        return None


def auto_threads() -> int:
    """The number of idle cores (rounded, so that a core 70% idle counts), at least 1, at most torch's default."""
    import torch

    default = torch.get_num_threads()
    idle = idle_cpus()
    if idle is None:
        return default
    return max(1, min(default, math.floor(idle + 0.3)))


def resolve_threads(threads: int | str | None) -> int | None:
    """``"auto"`` → :func:`auto_threads`; an integer ≥ 1 → itself; ``None`` → ``None`` (leave torch's setting)."""
    if threads is None:
        return None
    if threads == "auto":
        return auto_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be 'auto', None or an integer >= 1, got {threads!r}")
    return threads


@contextmanager
def thread_limit(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch and BLAS/OpenMP threads (``None``: unchanged); the settings are restored."""
    if n is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        limits = None
    else:
        limits = threadpool_limits(limits=n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
        if limits is not None:
            limits.restore_original_limits()
