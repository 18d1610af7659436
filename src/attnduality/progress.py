"""Progress of the library's long loops (solves, training, feature extraction): tqdm bars on a terminal, a few
plain lines in a log.

Captured to a file, carriage-return bars turn into thousands of lines of escapes; :class:`PlainProgress` prints
one line when a loop starts, about every quarter (or every ``every`` seconds, whichever comes later) and when it
ends.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

__all__ = ["PlainProgress", "progress"]


class PlainProgress:
    """An iterable wrapper with tqdm's interface (``initial``, ``total``, ``set_postfix``) that prints plain lines
    ``desc: k/total (p%) t s [postfix]`` to ``stream``: at the start, when at least a quarter of ``total`` and
    ``every`` seconds have passed since the last line, and at the end."""

    def __init__(
        self,
        iterable: Iterable[Any] | None = None,
        desc: str = "",
        *,
        total: int | None = None,
        initial: int = 0,
        every: float = 5.0,
        stream: TextIO | None = None,
        **_: Any,
    ) -> None:
        self.iterable, self.desc, self.initial, self.every = iterable, desc, initial, every
        if total is None and iterable is not None:
            try:
                total = initial + len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.total, self.n, self.stream = total, initial, stream
        self.postfix = ""
        self.start = time.perf_counter()
        self._last_n, self._last_t = initial, self.start
        self._started = False

    def set_postfix(self, **kwargs: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in kwargs.items())

    def _line(self) -> None:
        done = f"{self.n}/{self.total} ({100 * self.n / self.total:.0f}%)" if self.total else f"{self.n}"
        tail = f" [{self.postfix}]" if self.postfix else ""
        elapsed = time.perf_counter() - self.start
        print(f"{self.desc}: {done}, {elapsed:.1f} s{tail}", file=self.stream or sys.stderr, flush=True)
        self._last_n, self._last_t = self.n, time.perf_counter()

    def _advance(self, n: int) -> None:
        if not self._started:
            self._started = True
            self._line()
        self.n += n
        quarter = max(1, (self.total or 4) // 4)
        if self.n - self._last_n >= quarter and time.perf_counter() - self._last_t >= self.every:
            self._line()

    def __iter__(self) -> Iterator[Any]:
        if self.iterable is None:
            raise TypeError("PlainProgress without an iterable: use update() and close()")
        if not self._started:
            self._started = True
            self._line()
        for item in self.iterable:
            yield item
            self._advance(1)
        self.close()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items done (for loops that are not driven by the iterable)."""
        self._advance(n)

    def close(self) -> None:
        """Print the last line, if the count moved since the previous one."""
        if self._started and self.n != self._last_n:
            self._line()


def progress(iterable: Iterable[Any] | None = None, desc: str = "", *, enabled: bool = True, **kwargs: Any) -> Any:
    """tqdm when stderr is a terminal, :class:`PlainProgress` when it is not; silent when not ``enabled``."""
    if not enabled:
        return PlainProgress(iterable, desc, stream=_Null(), **kwargs)
    if sys.stderr.isatty():
        from tqdm.auto import tqdm

        kwargs.setdefault("leave", False)
        kwargs.setdefault("dynamic_ncols", True)
        return tqdm(iterable, desc=desc, **kwargs)
    return PlainProgress(iterable, desc, **kwargs)


class _Null:
    def write(self, _: str) -> int:
        return 0

    def flush(self) -> None:
        pass
