"""The run context: what an experiment's ``run(ctx)`` is given and records its results through.

:class:`RunContext` carries the config, seed, device and output folder, and offers resumable units of work
(``ctx.step``, stored under ``checkpoints/steps/``; ``ctx.checkpoint``, a :class:`TrainingCheckpoint` under
``checkpoints/train/``; ``ctx.solve_checkpoint``, a :class:`SolveCheckpoint` under ``checkpoints/solve/``),
progress and logging, and the recorders of results: metrics, tables, figures and notes (tables, figures and notes
appear in the report in the order they were added). Before a step's function runs, the
global RNGs are seeded from ``(seed, key)``."""

from __future__ import annotations

import hashlib
import random
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..progress import progress
from .checkpoints import SolveCheckpoint, TrainingCheckpoint, load_step, save_step, step_paths
from .registry import Experiment
from .storage import jsonable

__all__ = ["RunContext"]

_KEY_RE = re.compile(r"^[A-Za-z0-9_.=+-]+(/[A-Za-z0-9_.=+-]+)*$")


def _seed_for(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:4], "little")


def _seed_everything(value: int) -> None:
    import torch

    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


@dataclass
class RunContext:
    """What an experiment's ``run(ctx)`` gets: config, seed, device, output directory and the recording helpers."""

    experiment: Experiment
    config: Any
    seed: int
    device: str
    out: Path
    quick: bool = False
    show_progress: bool = True
    metrics: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    figures: list[str] = field(default_factory=list)
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    body: list[str] = field(default_factory=list)
    threads: int | None = None
    """torch threads the run used (set by :func:`run_experiment`)."""

    @property
    def checkpoint_dir(self) -> Path:
        return self.out / "checkpoints"

    # -- loops and logging ---------------------------------------------------------------------------------------
    def progress(self, iterable: Iterable[Any], desc: str = "", **kwargs: Any) -> Any:
        """Progress over ``iterable`` (tqdm's keywords): a bar on a terminal, a few plain lines in a log, nothing
        when the run is quiet (:func:`attnduality.progress.progress`)."""
        return progress(iterable, desc, enabled=self.show_progress, **kwargs)

    def log(self, message: str) -> None:
        """Print a line to stderr without breaking progress bars."""
        from tqdm.auto import tqdm

        tqdm.write(message, file=sys.stderr)

    def seed_for(self, key: str) -> int:
        """A 32-bit seed derived from the run's seed and ``key`` (the one ``step(key, ...)`` seeds the RNGs with)."""
        return _seed_for(self.seed, key)

    # -- resumable units of work ---------------------------------------------------------------------------------
    def _check_key(self, key: str) -> None:
        if not isinstance(key, str) or not _KEY_RE.fullmatch(key) or ".." in key.split("/"):
            raise ValueError(f"checkpoint key must be letters, digits and _.=+- (with / for sub-folders), got {key!r}")

    def step(self, key: str, fn: Callable[[], Any], *, storage: str = "auto") -> Any:
        """Run ``fn()`` once for ``key`` and cache its result under ``out/checkpoints/steps/``; load it on re-runs.

        ``storage``: ``"json"`` (must be JSON-able; NumPy scalars/arrays and tuples become numbers/lists), ``"torch"``
        (``torch.save``: tensors, arrays, anything picklable) or ``"auto"`` (JSON when possible). The global RNGs
        are seeded with ``seed_for(key)`` before ``fn`` runs. Keys must be unique within a run.
        """
        self._check_key(key)
        if storage not in ("auto", "json", "torch"):
            raise ValueError(f"storage must be 'auto', 'json' or 'torch', got {storage!r}")
        if key in self.steps:
            raise ValueError(f"step {key!r} was already run in this experiment; step keys must be unique")
        steps_dir = self.checkpoint_dir / "steps"
        rec = load_step(steps_dir, key)
        if rec is not None:
            self.steps[key] = {"seconds": rec["seconds"], "resumed": True}
            return rec["value"]
        _seed_everything(self.seed_for(key))
        start = time.perf_counter()
        value = fn()
        seconds = time.perf_counter() - start
        self.steps[key] = {"seconds": seconds, "resumed": False}
        return save_step(steps_dir, key, seconds, value, storage)

    def is_done(self, key: str) -> bool:
        """Whether ``step(key, ...)`` has a stored result."""
        self._check_key(key)
        return any(path.exists() for path in step_paths(self.checkpoint_dir / "steps", key))

    def checkpoint(self, key: str, every: int = 1) -> TrainingCheckpoint:
        """A :class:`TrainingCheckpoint` at ``out/checkpoints/train/KEY.pt`` saving every ``every`` iterations."""
        self._check_key(key)
        return TrainingCheckpoint(self.checkpoint_dir / "train" / f"{key}.pt", every=every)

    def solve_checkpoint(self, key: str, every: float = 60.0) -> SolveCheckpoint:
        """A :class:`SolveCheckpoint` at ``out/checkpoints/solve/KEY.pt`` saving a solve's iterate every ``every`` s."""
        self._check_key(key)
        return SolveCheckpoint(self.checkpoint_dir / "solve" / f"{key}.pt", every=every)

    # -- results ---------------------------------------------------------------------------------------------------
    def metric(self, name: str, value: Any) -> Any:
        """Record a scalar metric (number, bool or string; ``name`` may be dotted, e.g. ``convex.objective``)."""
        if not isinstance(name, str) or not name:
            raise ValueError("metric name must be a non-empty string")
        v = jsonable(value)
        if not (v is None or isinstance(v, bool | int | float | str)):
            raise ValueError(f"metric {name!r} must be a scalar, got {type(value).__name__}; use ctx.table for rows")
        self.metrics[name] = v
        return v

    def table(
        self,
        name: str,
        rows: Sequence[Mapping[str, Any]],
        *,
        columns: Sequence[str] | None = None,
        caption: str = "",
        floatfmt: str = ".4g",
        formats: Mapping[str, str] | None = None,
        report: bool = True,
    ) -> None:
        """Record rows (dicts) under ``name`` in results.json and (``report=True``) add a markdown table here.

        ``columns`` picks and orders the report's columns (default: keys in first-seen order); ``formats`` maps a
        column to a format spec (default ``floatfmt`` for floats).
        """
        if name in self.tables:
            raise ValueError(f"table {name!r} was already recorded")
        jrows = [jsonable(dict(r)) for r in rows]
        self.tables[name] = jrows
        if not report:
            return
        cols = list(columns) if columns is not None else list(dict.fromkeys(k for r in jrows for k in r))
        fmts = dict(formats or {})

        def cell(col: str, v: Any) -> str:
            if v is None:
                return ""
            if isinstance(v, float) and not isinstance(v, bool):
                return format(v, fmts.get(col, floatfmt))
            if col in fmts and isinstance(v, int) and not isinstance(v, bool):
                return format(v, fmts[col])
            return str(v).replace("|", "\\|")

        lines = [f"**{caption}**", ""] if caption else []
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(cell(c, r.get(c)) for c in cols) + " |" for r in jrows]
        self.body.append("\n".join(lines))

    def figure(self, name: str, fig: Any, *, caption: str = "", dpi: int = 120) -> Path:
        """Save a matplotlib figure as ``out/NAME.png``, close it and link it from the report here."""
        self._check_key(name)
        if "/" in name:
            raise ValueError(f"figure name must not contain '/', got {name!r}")
        import matplotlib.pyplot as plt

        path = self.out / f"{name}.png"
        fig.savefig(path, dpi=dpi)
        plt.close(fig)
        self.figures.append(path.name)
        self.body.append(f"![{caption or name}]({path.name})" + (f"\n\n*{caption}*" if caption else ""))
        return path

    def note(self, text: str) -> None:
        """Add a markdown paragraph to the report here."""
        self.body.append(str(text).strip())
