"""Progress lines for a running solve: a solver callback that prints the certificate as the solve goes."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from ..certificates import Certificate

__all__ = ["SolveProgress", "chain_callbacks"]


class SolveProgress:
    """A ``callback(state, certificate)`` for every solver that prints one plain line per certificate check: the
    solver's iteration (FISTA iterations or proximal Newton steps), the objective and the certified relative gap
    against ``tol``, at most every ``every`` seconds, at the first check and at the check that reaches ``tol``.

    Plain lines (no carriage returns) so that logs stay readable; ``stream`` defaults to ``sys.stderr`` at call
    time.
    """

    def __init__(self, tol: float, *, label: str = "solve", every: float = 2.0, stream: TextIO | None = None) -> None:
        self.tol, self.label, self.every, self.stream = tol, label, every, stream
        self.start = time.perf_counter()
        self.last: float | None = None

    def __call__(self, state: Any, cert: Certificate) -> None:
        now = time.perf_counter()
        done = cert.rel_gap <= self.tol
        if not done and self.last is not None and now - self.last < self.every:
            return
        self.last = now
        kind = "Newton step" if hasattr(state, "n_newton") else "iteration"
        line = (
            f"{self.label}: {kind} {state.n_iter}, objective {cert.primal:.8g}, "
            f"certified gap {cert.rel_gap:.1e} (tol {self.tol:.0e}), {now - self.start:.1f} s"
        )
        print(line, file=self.stream or sys.stderr, flush=True)


def chain_callbacks(
    *fns: Callable[[Any, Certificate], None] | None,
) -> Callable[[Any, Certificate], None] | None:
    """One solver callback calling each of ``fns`` that is not ``None``, in order (``None`` if there is none)."""
    live = [f for f in fns if f is not None]
    if len(live) <= 1:
        return live[0] if live else None

    def chained(state: Any, cert: Certificate) -> None:
        for f in live:
            f(state, cert)

    return chained
