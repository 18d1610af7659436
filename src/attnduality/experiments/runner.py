"""A small experiment framework: registered experiments, a run context, resumable steps, results and reports.

Writing an experiment
---------------------
An experiment is a config dataclass (with an optional ``quick()`` classmethod giving the small variant) and a
``run(ctx)`` body, registered under a name::

    @dataclass(frozen=True)
    class MyConfig:
        n_gates: int = 50
        betas: tuple[float, ...] = (1e-3, 1e-2)

        @classmethod
        def quick(cls) -> "MyConfig":
            return cls(n_gates=10)

    @register_experiment("my-exp", about="one line", data="what data it uses", config=MyConfig)
    def run(ctx: RunContext) -> None:
        cfg = ctx.config                                  # a MyConfig (quick variant and --set overrides applied)
        data = ctx.step("data", lambda: load(ctx.seed))   # keyed, cached under out/checkpoints/steps/
        for beta in ctx.progress(cfg.betas, desc="betas"):
            res = ctx.step(f"fit-beta{beta:g}", lambda: fit(data, beta))
            ctx.metric(f"objective.beta{beta:g}", res["objective"])
        ctx.table("fits", rows)                           # markdown table in report.md, rows in results.json
        ctx.figure("objective", fig)                      # objective.png, linked from report.md
        ctx.note("Free text for the report.")

Modules in this package are discovered automatically (any module whose name does not start with ``_``), so a new
experiment only needs its module here; keep module-level imports cheap (import heavy things inside ``run``).

Resuming
--------
``ctx.step(key, fn)`` runs ``fn()`` once and stores its result (JSON when JSON-able, else ``torch.save``) under
``out/checkpoints/steps/KEY.json|.pt``; a later run with the same experiment, config, seed and device loads it instead
of recomputing. Before ``fn`` runs, the global RNGs (``random``, NumPy, torch) are seeded from ``(seed, key)``, so a
step's numbers do not depend on which earlier steps were computed or loaded. A JSON result is returned *as loaded*
(round-tripped) on the first run too, so first and resumed runs see exactly the same values.

Long training loops checkpoint *inside* a step with ``ctx.checkpoint(key, every=K)``::

    def train() -> dict:
        gen = torch.Generator().manual_seed(ctx.seed)
        model, opt = make_model(), make_optimizer()
        ck = ctx.checkpoint("adam", every=100)             # out/checkpoints/train/adam.pt
        start = ck.resume(model=model, optimizer=opt, generators=[gen])   # 0, or the step after the last save
        for t in ctx.progress(range(start, cfg.steps), desc="Adam", initial=start, total=cfg.steps):
            ...one update...
            ck.maybe_save(t, model=model, optimizer=opt, generators=[gen], extra={"losses": losses})
        return {"loss": losses[-1]}
    result = ctx.step("adam", train)

``maybe_save`` stores model, optimizer (and scheduler) state, the global ``random``/NumPy/torch RNG states, the
given generators' states and ``extra`` every ``every`` iterations; ``resume`` restores them all and ``ck.extra``
holds ``extra``, so an interrupted training continues bit-identically. ``ck.load()`` / ``ck.save(state)`` are the raw
form for anything else.

Outputs
-------
``results.json`` (experiment, status, config, seed, device, versions, git commit, metrics, tables, figures, per-step
times, total time) and ``report.md`` (title, about, data, the notes/tables/figures in the order they were added,
metrics, configuration, run information). A directory whose checkpoints were made with another configuration is
refused with :class:`ConfigMismatchError` (use another ``out`` or ``fresh=True``).

Modules
-------
This module holds :func:`run_experiment` and the run-folder lock, and re-exports the framework's public names from
the modules that define them: :mod:`.registry` (experiments by name), :mod:`.config` (overrides, the config hash),
:mod:`.context` (:class:`RunContext`), :mod:`.checkpoints` (step results, :class:`TrainingCheckpoint`),
:mod:`.report` (``results.json``, ``report.md``), :mod:`.environment` (versions, device check) and :mod:`.storage`
(JSON conversion, atomic writes).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from . import storage
from .checkpoints import TrainingCheckpoint
from .config import apply_overrides, check_finite_config, config_hash, parse_overrides
from .context import RunContext
from .environment import check_device, environment_versions, git_commit
from .registry import (
    DISCOVERY_ERRORS,
    EXPERIMENTS,
    Experiment,
    available_experiments,
    get_experiment,
    register_experiment,
    unregister_experiment,
)
from .report import write_outputs
from .storage import jsonable
from .threads import resolve_threads, thread_limit

__all__ = [
    "ConfigMismatchError",
    "RunError",
    "RunFolderBusyError",
    "DISCOVERY_ERRORS",
    "EXPERIMENTS",
    "Experiment",
    "RunContext",
    "TrainingCheckpoint",
    "apply_overrides",
    "available_experiments",
    "check_device",
    "check_finite_config",
    "config_hash",
    "default_out_dir",
    "environment_versions",
    "get_experiment",
    "parse_overrides",
    "register_experiment",
    "run_experiment",
    "unregister_experiment",
]


class RunError(ValueError):
    """A run that cannot start for a reason the user can fix (the CLI prints it in one line and exits 2)."""


class ConfigMismatchError(RunError):
    """The output directory holds checkpoints of a different experiment, config, seed or device."""


class RunFolderBusyError(RunError):
    """Another run holds the output directory's lock."""


@contextlib.contextmanager
def _run_lock(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``out`` for the whole block: ``out/.lock``, locked with ``flock`` (``msvcrt`` on
    Windows). The operating system releases it when the process ends, however it ends, so a crashed run never
    leaves a stale lock; a second run on the same folder is refused while the first holds it."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise RunError(f"cannot use {out} as the output directory: {exc.strerror or exc}") from None
    try:
        try:
            if os.name == "nt":  # pragma: no cover - exercised on Windows only
                import msvcrt

                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            else:
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.lseek(fd, 0, os.SEEK_SET)
            holder = os.read(fd, 32).decode(errors="replace").strip()
            raise RunFolderBusyError(
                f"{out} is in use by another run{f' (pid {holder})' if holder else ''}; wait for it to finish or "
                "use another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, str(os.getpid()).encode())
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def default_out_dir(name: str, seed: int, quick: bool = False, overrides: Mapping[str, Any] | None = None) -> Path:
    """``runs/NAME[-quick]-seedS[-HASH]``; the hash (of the overrides) appears only when there are overrides."""
    stem = f"{name}{'-quick' if quick else ''}-seed{seed}"
    if overrides:
        stem += "-" + config_hash(dict(overrides))[:8]
    return Path("runs") / stem


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    keys = list(dict.fromkeys([*a, *b]))
    return [f"{k}: {a.get(k, '<missing>')!r} -> {b.get(k, '<missing>')!r}" for k in keys if a.get(k) != b.get(k)]


def run_experiment(
    experiment: str | Experiment,
    *,
    out: Path | str | None = None,
    seed: int = 0,
    quick: bool = False,
    device: str = "cpu",
    overrides: Mapping[str, Any] | None = None,
    config: Any = None,
    fresh: bool = False,
    progress: bool = True,
    threads: int | str | None = "auto",
) -> dict[str, Any]:
    """Run an experiment (a name or an :class:`Experiment`) and write ``results.json`` and ``report.md`` in ``out``.

    ``config`` (a config instance) replaces the default/quick config; ``overrides`` then apply to it. Checkpoints
    from an earlier run with the same experiment, config, seed and device are reused; different ones raise
    :class:`ConfigMismatchError` unless ``fresh=True`` (which deletes them first). Returns the results dict. If the
    body raises, ``results.json``/``report.md`` are still written with ``status`` ``"failed"`` (or
    ``"interrupted"``) and the exception propagates; completed steps stay cached for the next run.

    ``threads``: torch/BLAS threads for the run (restored afterwards); ``"auto"`` (default) uses as many as there
    are idle cores when the run starts (:mod:`attnduality.experiments.threads`), ``None`` leaves them as they are.
    """
    exp = get_experiment(experiment) if isinstance(experiment, str) else experiment
    if not isinstance(seed, int | np.integer) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    device = check_device(device)
    n_threads = resolve_threads(threads)
    if config is None:
        cfg = exp.make_config(quick=quick, overrides=overrides)
    else:
        if not isinstance(config, exp.config):
            raise ValueError(f"config must be a {exp.config.__name__}, got {type(config).__name__}")
        cfg = apply_overrides(config, overrides or {})
    check_finite_config(cfg)
    out = Path(out) if out is not None else default_out_dir(exp.name, seed, quick, overrides)
    cfg_json = jsonable(cfg)
    identity = {"experiment": exp.name, "config": cfg_json, "seed": seed, "device": device}
    chash = config_hash(identity)
    with _run_lock(out):  # held from the manifest check to the last write
        ckdir = out / "checkpoints"
        manifest_path = ckdir / "manifest.json"
        for stale in out.rglob(".*.tmp*"):  # half-written files of a killed run (nobody else writes here now)
            stale.unlink(missing_ok=True)
        if fresh and ckdir.exists():
            shutil.rmtree(ckdir)
        if manifest_path.exists():
            old = json.loads(manifest_path.read_text())
            if old.get("config_hash") != chash:
                diffs = _diff(
                    {"experiment": old.get("experiment"), "seed": old.get("seed"), "device": old.get("device")},
                    {"experiment": exp.name, "seed": seed, "device": device},
                )
                diffs += _diff(old.get("config", {}), cfg_json)
                raise ConfigMismatchError(
                    f"{out} holds checkpoints of a different run ({'; '.join(diffs) or 'config changed'}). "
                    "Use another output directory (--out), or --fresh to delete the old checkpoints and start over."
                )
        elif ckdir.exists() and any(ckdir.iterdir()):
            raise ConfigMismatchError(f"{ckdir} exists without a manifest; remove it or use --fresh")
        versions = environment_versions()
        storage.atomic_write_bytes(
            manifest_path,
            json.dumps({**identity, "config_hash": chash, "versions": versions}, indent=1).encode(),
        )
        ctx = RunContext(
            experiment=exp, config=cfg, seed=seed, device=device, out=out, quick=quick, show_progress=progress
        )
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        t0 = time.perf_counter()
        status, error = "complete", ""
        try:
            with thread_limit(n_threads):
                ctx.threads = _torch_threads()
                if progress:
                    ctx.log(f"{exp.name}: seed {seed}, {ctx.threads} thread(s), writing to {out}")
                exp.run(ctx)
        except KeyboardInterrupt:
            status, error = "interrupted", "KeyboardInterrupt"
            raise
        except BaseException as exc:
            status, error = "failed", f"{type(exc).__name__}: {exc}"
            raise
        finally:
            results = {
                "experiment": exp.name,
                "about": exp.about,
                "data": exp.data,
                "status": status,
                "config": cfg_json,
                "seed": seed,
                "device": device,
                "quick": quick,
                "threads": ctx.threads,
                "config_hash": chash,
                "versions": versions,
                "git": git_commit(),
                "metrics": ctx.metrics,
                "tables": ctx.tables,
                "figures": ctx.figures,
                "steps": ctx.steps,
                "started": started,
                "total_seconds": time.perf_counter() - t0,
            }
            if error:
                results["error"] = error
            write_outputs(ctx, results)
        return results
