"""Token features streamed in chunks, from memory or from a memory-mapped ``.npy`` file.

The paper-scale heads (Sahiner et al. §5: N = 50,000 samples of s = 196 tokens, d = 100) hold 3.9 GB of float32
features; solvers read them chunk by chunk through a :class:`TokenSource` and never hold them whole.
:class:`MemmapTokens` maps the file read-only and drops the pages of each chunk once it has been copied
(``madvise(MADV_DONTNEED)``), so a pass over the file does not grow the process's resident memory by the file size;
the kernel's page cache still keeps the file, which makes later passes cheap.
"""

from __future__ import annotations

import mmap
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

__all__ = ["ArrayTokens", "MemmapTokens", "TokenSource", "write_tokens"]


class TokenSource(ABC):
    """Samples of ``s`` tokens with ``d`` features, read in chunks of consecutive samples as torch tensors."""

    n_samples: int
    n_tokens: int
    n_features: int

    @abstractmethod
    def _read(self, lo: int, hi: int) -> np.ndarray:
        """Samples ``lo:hi`` as an array (hi − lo, s, d) that the caller may keep."""

    def read(self, lo: int, hi: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
        """Samples ``lo:hi`` as a tensor of ``dtype``; ``ValueError`` names the first non-finite sample."""
        if not 0 <= lo <= hi <= self.n_samples:
            raise ValueError(f"sample range {lo}:{hi} outside 0:{self.n_samples}")
        x = torch.as_tensor(np.ascontiguousarray(self._read(lo, hi)), dtype=dtype)
        bad = ~torch.isfinite(x).flatten(1).all(dim=1)
        if bool(bad.any()):
            raise ValueError(f"token features contain NaN or inf (sample {lo + int(bad.nonzero()[0, 0])})")
        return x

    def chunks(
        self, size: int, dtype: torch.dtype = torch.float64, stop: int | None = None, desc: str | None = None
    ) -> Iterator[tuple[int, int, torch.Tensor]]:
        """``(lo, hi, X[lo:hi])`` over samples ``0:stop`` (all by default), with progress
        (:mod:`attnduality.progress`) when ``desc`` is given."""
        stop = self.n_samples if stop is None else min(int(stop), self.n_samples)
        size = max(1, int(size))
        starts = range(0, stop, size)
        if desc is not None:
            from ..progress import progress

            starts = progress(starts, desc, unit="chunk")
        for lo in starts:
            hi = min(lo + size, stop)
            yield lo, hi, self.read(lo, hi, dtype)

    def prefix(self, stop: int) -> TokenSource:
        """The first ``stop`` samples as a source of their own (no copy)."""
        if not 1 <= int(stop) <= self.n_samples:
            raise ValueError(f"stop must be in 1..{self.n_samples}, got {stop}")
        return _Prefix(self, int(stop))

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        if len(shape) != 3:
            raise ValueError(f"token features must be (n_samples, n_tokens, n_features), got shape {shape}")
        if min(shape) < 1:
            raise ValueError(f"token features must be non-empty, got shape {shape}")
        self.n_samples, self.n_tokens, self.n_features = (int(v) for v in shape)


class ArrayTokens(TokenSource):
    """A :class:`TokenSource` over an in-memory array or tensor (N, s, d)."""

    def __init__(self, x: np.ndarray | torch.Tensor) -> None:
        self._x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        if not np.issubdtype(self._x.dtype, np.floating):
            raise ValueError(f"token features must be floating point, got {self._x.dtype}")
        self._check_shape(self._x.shape)

    def _read(self, lo: int, hi: int) -> np.ndarray:
        return self._x[lo:hi]


class _Prefix(TokenSource):
    """The first samples of another source."""

    def __init__(self, parent: TokenSource, stop: int) -> None:
        self._parent = parent
        self._check_shape((stop, parent.n_tokens, parent.n_features))

    def _read(self, lo: int, hi: int) -> np.ndarray:
        return self._parent._read(lo, hi)


class MemmapTokens(TokenSource):
    """A :class:`TokenSource` over a ``.npy`` file (N, s, d), memory-mapped read-only.

    Pages of a chunk are released after it is copied, so resident memory stays at one chunk (the page cache, not this
    process, keeps the file between passes).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ValueError(f"token feature file {self.path} does not exist")
        self._x = np.load(self.path, mmap_mode="r")
        if not np.issubdtype(self._x.dtype, np.floating):
            raise ValueError(f"{self.path}: token features must be floating point, got {self._x.dtype}")
        self._check_shape(self._x.shape)

    def _read(self, lo: int, hi: int) -> np.ndarray:
        out = np.array(self._x[lo:hi])  # a copy: the mapping's pages can go
        raw = getattr(self._x, "_mmap", None)
        if raw is not None and hasattr(raw, "madvise"):
            raw.madvise(mmap.MADV_DONTNEED)
        return out


def write_tokens(
    path: str | Path,
    shape: tuple[int, int, int],
    fill: Callable[[int, int], np.ndarray],
    chunk: int = 1024,
    dtype: np.dtype | type = np.float32,
    desc: str | None = None,
) -> MemmapTokens:
    """Write an (N, s, d) ``.npy`` file chunk by chunk, ``fill(lo, hi)`` giving samples ``lo:hi``; returns it mapped.

    For features that do not fit in memory (e.g. a backbone's tokens for a whole dataset, or synthetic benchmark data).
    """
    n = int(shape[0])
    out = np.lib.format.open_memmap(Path(path), mode="w+", dtype=dtype, shape=tuple(int(v) for v in shape))
    starts = range(0, n, max(1, int(chunk)))
    if desc is not None:
        from ..progress import progress

        starts = progress(starts, desc, unit="chunk")
    for lo in starts:
        hi = min(lo + int(chunk), n)
        block = np.asarray(fill(lo, hi))
        if block.shape != (hi - lo, *shape[1:]):
            raise ValueError(f"fill({lo}, {hi}) returned shape {block.shape}, expected {(hi - lo, *shape[1:])}")
        out[lo:hi] = block
    out.flush()
    del out
    return MemmapTokens(path)
