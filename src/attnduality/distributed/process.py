"""The process group: join it from torchrun's environment, this process's rank and the world size, and
:func:`launch` (torchrun's in-Python counterpart, for tests and notebooks).

Every helper is a no-op in a single process, so the same code runs with and without torchrun.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistInfo",
    "all_reduce_sum",
    "barrier",
    "free_port",
    "init_distributed",
    "is_main",
    "launch",
    "rank",
    "run_jobs",
    "shutdown",
    "world",
]

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


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
        # every rank tears down together: a rank whose peer has already closed its gloo connections can abort in a
        # background thread at exit ("terminate called without an active exception", SIGABRT)
        dist.barrier()
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
