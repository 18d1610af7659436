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
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import json
import math
import os
import pkgutil
import platform
import random
import re
import shutil
import subprocess
import sys
import time
import types
import typing
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from ..progress import progress
from .threads import resolve_threads, thread_limit

__all__ = [
    "ConfigMismatchError",
    "RunError",
    "RunFolderBusyError",
    "EXPERIMENTS",
    "Experiment",
    "RunContext",
    "TrainingCheckpoint",
    "apply_overrides",
    "available_experiments",
    "config_hash",
    "default_out_dir",
    "get_experiment",
    "parse_overrides",
    "register_experiment",
    "run_experiment",
    "unregister_experiment",
]

_KEY_RE = re.compile(r"^[A-Za-z0-9_.=+-]+(/[A-Za-z0-9_.=+-]+)*$")


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


# ----------------------------------------------------------------------------------------------------------------
# experiments and the registry
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Experiment:
    """A runnable experiment: ``run(ctx)`` with a config dataclass ``config`` (``config.quick()`` if defined)."""

    name: str
    about: str
    data: str
    config: type
    run: Callable[[RunContext], Any]
    title: str = ""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", self.name):
            raise ValueError(f"experiment name must be lower-case letters, digits, '-' or '_', got {self.name!r}")
        if not dataclasses.is_dataclass(self.config) or not isinstance(self.config, type):
            raise ValueError(f"config of experiment {self.name!r} must be a dataclass type, got {self.config!r}")
        if not callable(self.run):
            raise ValueError(f"run of experiment {self.name!r} must be callable")

    def make_config(self, quick: bool = False, overrides: Mapping[str, Any] | None = None) -> Any:
        """The default (or quick) config with ``overrides`` (``{field: value or "string"}``) applied."""
        quick_fn = getattr(self.config, "quick", None)
        cfg = quick_fn() if quick and quick_fn is not None else self.config()
        return apply_overrides(cfg, overrides or {})


_REGISTRY: dict[str, Experiment] = {}
_DISCOVERED = False
DISCOVERY_ERRORS: dict[str, str] = {}
"""Modules of this package that failed to import during discovery (module name → error)."""


def register_experiment(
    name: str | Experiment,
    *,
    about: str = "",
    data: str = "",
    config: type | None = None,
    title: str = "",
    replace: bool = False,
) -> Any:
    """Register an experiment: ``register_experiment(Experiment(...))`` or as a decorator of ``run(ctx)``.

    The decorator form is ``@register_experiment("name", about=..., data=..., config=ConfigDataclass)`` and
    returns the function unchanged. Registering a name twice raises ``ValueError`` unless ``replace=True``.
    """

    def _add(exp: Experiment) -> Experiment:
        if exp.name in _REGISTRY and not replace and _REGISTRY[exp.name] is not exp:
            old = _REGISTRY[exp.name]
            if getattr(old.run, "__qualname__", None) != getattr(exp.run, "__qualname__", None) or getattr(
                old.run, "__module__", None
            ) != getattr(exp.run, "__module__", None):
                raise ValueError(f"an experiment named {exp.name!r} is already registered")
        _REGISTRY[exp.name] = exp
        return exp

    if isinstance(name, Experiment):
        return _add(name)
    if config is None:
        raise ValueError("register_experiment needs config=<a dataclass type>")
    if not about or not data:
        raise ValueError("register_experiment needs about= (one line) and data= (what data it uses)")

    def deco(fn: Callable[[RunContext], Any]) -> Callable[[RunContext], Any]:
        _add(Experiment(name=name, about=about, data=data, config=config, run=fn, title=title))
        return fn

    return deco


def unregister_experiment(name: str) -> None:
    """Remove a registered experiment (tests)."""
    _REGISTRY.pop(name, None)


def _discover() -> None:
    """Import every module of ``attnduality.experiments`` (not starting with ``_``) so they register."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    pkg = importlib.import_module(__package__ or "attnduality.experiments")
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_") or info.name == "runner":
            continue
        try:
            importlib.import_module(f"{pkg.__name__}.{info.name}")
        except Exception as exc:  # one broken module must not hide the others
            DISCOVERY_ERRORS[info.name] = f"{type(exc).__name__}: {exc}"
            warnings.warn(f"experiment module {info.name!r} failed to import: {exc}", RuntimeWarning, stacklevel=2)


class _Registry(Mapping[str, Experiment]):
    """Read-only view of the registered experiments; discovers the package's modules on first use."""

    def __getitem__(self, name: str) -> Experiment:
        _discover()
        return _REGISTRY[name]

    def __iter__(self) -> Iterator[str]:
        _discover()
        return iter(sorted(_REGISTRY))

    def __len__(self) -> int:
        _discover()
        return len(_REGISTRY)


EXPERIMENTS: Mapping[str, Experiment] = _Registry()


def available_experiments() -> list[str]:
    """Sorted names of the registered experiments."""
    return list(EXPERIMENTS)


def get_experiment(name: str) -> Experiment:
    """The experiment registered as ``name``; ``ValueError`` naming the available ones otherwise."""
    try:
        return EXPERIMENTS[name]
    except KeyError:
        raise ValueError(f"unknown experiment {name!r}; available: {', '.join(available_experiments())}") from None


# ----------------------------------------------------------------------------------------------------------------
# configs: overrides and hashing
# ----------------------------------------------------------------------------------------------------------------
def _jsonable(obj: Any) -> Any:
    """``obj`` with NumPy scalars/arrays, tuples, paths and dataclasses turned into JSON types."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    raise TypeError(f"not JSON-able: {type(obj).__name__}")


def config_hash(payload: Mapping[str, Any]) -> str:
    """SHA-256 (first 16 hex digits) of a canonical JSON dump of ``payload``."""
    text = json.dumps(_jsonable(payload), sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """``["a=1", "b=x"]`` → ``{"a": "1", "b": "x"}``; ``ValueError`` on an item without ``=``."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"config override must look like key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def _parse_value(text: str, tp: Any, key: str) -> Any:
    """Parse the string ``text`` as the annotated type ``tp`` (bool, int, float, str, tuples/lists, Optional)."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if text.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _parse_value(text, arg, key)
            except ValueError as exc:
                errors.append(str(exc))
        raise ValueError(f"cannot parse {key}={text!r} as {tp}: {'; '.join(errors)}")
    if origin in (tuple, list):
        raw = text.strip()
        if raw.startswith("["):
            parts = [json.dumps(v) if not isinstance(v, str) else v for v in json.loads(raw)]
        elif raw.startswith("("):
            parts = [p.strip() for p in raw.strip("()").split(",") if p.strip()]
        else:
            parts = [p.strip() for p in raw.split(",") if p.strip()]
        elem = args[0] if args else str
        vals = [_parse_value(p, elem, key) for p in parts]
        return tuple(vals) if origin is tuple else vals
    if tp is bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key} must be a boolean (true/false), got {text!r}")
    if tp is int:
        try:
            return int(text)
        except ValueError:
            try:
                f = float(text)
            except ValueError:
                raise ValueError(f"{key} must be an integer, got {text!r}") from None
            if not f.is_integer():
                raise ValueError(f"{key} must be an integer, got {text!r}") from None
            return int(f)
    if tp is float:
        try:
            f = float(text)
        except ValueError:
            raise ValueError(f"{key} must be a number, got {text!r}") from None
        if not math.isfinite(f):
            raise ValueError(f"{key} must be a finite number, got {text!r}")
        return f
    if tp is str or tp is Any:
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(config: Any, overrides: Mapping[str, Any]) -> Any:
    """A copy of the dataclass ``config`` with ``overrides`` applied; string values are parsed by field type.

    Unknown keys raise ``ValueError`` listing the valid ones; the config's own ``__post_init__`` validation runs.
    """
    if not overrides:
        return config
    fields = {f.name: f for f in dataclasses.fields(config)}
    hints = typing.get_type_hints(type(config))
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in fields:
            raise ValueError(f"unknown config key {key!r}; valid keys: {', '.join(fields)}")
        changes[key] = _parse_value(value, hints.get(key, Any), key) if isinstance(value, str) else value
    return dataclasses.replace(config, **changes)


def check_finite_config(config: Any) -> None:
    """``ValueError`` naming the first field of the dataclass ``config`` holding a NaN or infinite number (also
    inside tuples and lists); each config's ``__post_init__`` checks the ranges."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        items = value if isinstance(value, tuple | list) else (value,)
        for v in items:
            if isinstance(v, float | np.floating) and not math.isfinite(v):
                raise ValueError(f"config key {f.name!r} must be a finite number, got {value!r}")


def default_out_dir(name: str, seed: int, quick: bool = False, overrides: Mapping[str, Any] | None = None) -> Path:
    """``runs/NAME[-quick]-seedS[-HASH]``; the hash (of the overrides) appears only when there are overrides."""
    stem = f"{name}{'-quick' if quick else ''}-seed{seed}"
    if overrides:
        stem += "-" + config_hash(dict(overrides))[:8]
    return Path("runs") / stem


# ----------------------------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------------------------
def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _atomic_torch_save(path: Path, obj: Any) -> None:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    _atomic_write_bytes(path, buf.getvalue())


def _torch_load(path: Path) -> Any:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def _rng_state() -> dict[str, Any]:
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class TrainingCheckpoint:
    """A resumable training state stored at ``path`` (``torch.save``), saved every ``every`` iterations.

    Raw use: ``load()`` → the saved dict or ``None``; ``save(state)`` (atomic). Managed use: ``resume(...)`` restores
    model/optimizer/scheduler/generators/global RNGs and returns the iteration to start from;
    ``maybe_save(t, ...)`` saves after iteration ``t`` when ``(t + 1) % every == 0`` (or ``force=True``).
    ``extra`` holds the ``extra`` dict of the last save/resume (loss curves and the like).
    """

    def __init__(self, path: Path, every: int = 1) -> None:
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an integer >= 1, got {every!r}")
        self.path = Path(path)
        self.every = every
        self.extra: dict[str, Any] = {}

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> dict[str, Any] | None:
        """The saved state, or ``None`` if nothing was saved yet."""
        return _torch_load(self.path) if self.path.exists() else None

    def save(self, state: Mapping[str, Any]) -> None:
        """Save ``state`` (anything ``torch.save`` handles) atomically."""
        _atomic_torch_save(self.path, dict(state))

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)

    def resume(
        self,
        *,
        model: Any = None,
        optimizer: Any = None,
        scheduler: Any = None,
        generators: Sequence[Any] = (),
    ) -> int:
        """Restore the last saved state into the given objects; the iteration to continue from (0 if none)."""
        state = self.load()
        if state is None:
            self.extra = {}
            return 0
        for name, obj in (("model", model), ("optimizer", optimizer), ("scheduler", scheduler)):
            if obj is not None:
                if state.get(name) is None:
                    raise ValueError(f"checkpoint {self.path} has no {name} state")
                obj.load_state_dict(state[name])
        saved_gens = state.get("generators", [])
        if len(saved_gens) != len(generators):
            raise ValueError(f"checkpoint {self.path} holds {len(saved_gens)} generator states, got {len(generators)}")
        for gen, gstate in zip(generators, saved_gens, strict=True):
            if isinstance(gen, np.random.Generator):
                gen.bit_generator.state = gstate
            else:
                gen.set_state(gstate)
        _set_rng_state(state["rng"])
        self.extra = dict(state.get("extra", {}))
        return int(state["next"])

    def maybe_save(
        self,
        t: int,
        *,
        model: Any = None,
        optimizer: Any = None,
        scheduler: Any = None,
        generators: Sequence[Any] = (),
        extra: Mapping[str, Any] | None = None,
        force: bool = False,
    ) -> bool:
        """After iteration ``t``: save everything when ``(t + 1) % every == 0`` or ``force``; whether it saved."""
        if not force and (t + 1) % self.every:
            return False
        gens = [g.bit_generator.state if isinstance(g, np.random.Generator) else g.get_state() for g in generators]
        self.extra = dict(extra or {})
        self.save(
            {
                "next": t + 1,
                "model": None if model is None else model.state_dict(),
                "optimizer": None if optimizer is None else optimizer.state_dict(),
                "scheduler": None if scheduler is None else scheduler.state_dict(),
                "generators": gens,
                "rng": _rng_state(),
                "extra": self.extra,
            }
        )
        return True


# ----------------------------------------------------------------------------------------------------------------
# the run context
# ----------------------------------------------------------------------------------------------------------------
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
        base = self.checkpoint_dir / "steps" / key
        jpath, tpath = base.with_name(base.name + ".json"), base.with_name(base.name + ".pt")
        if jpath.exists():
            rec = json.loads(jpath.read_text())
            self.steps[key] = {"seconds": rec["seconds"], "resumed": True}
            return rec["value"]
        if tpath.exists():
            rec = _torch_load(tpath)
            self.steps[key] = {"seconds": rec["seconds"], "resumed": True}
            return rec["value"]
        _seed_everything(self.seed_for(key))
        start = time.perf_counter()
        value = fn()
        seconds = time.perf_counter() - start
        self.steps[key] = {"seconds": seconds, "resumed": False}
        if storage != "torch":
            try:
                text = json.dumps({"key": key, "seconds": seconds, "value": _jsonable(value)}, indent=1)
            except (TypeError, ValueError):
                if storage == "json":
                    raise ValueError(
                        f"step {key!r} returned a value that is not JSON-able; use storage='torch'"
                    ) from None
            else:
                _atomic_write_bytes(jpath, text.encode())
                return json.loads(text)["value"]
        _atomic_torch_save(tpath, {"key": key, "seconds": seconds, "value": value})
        return value

    def is_done(self, key: str) -> bool:
        """Whether ``step(key, ...)`` has a stored result."""
        self._check_key(key)
        base = self.checkpoint_dir / "steps" / key
        return base.with_name(base.name + ".json").exists() or base.with_name(base.name + ".pt").exists()

    def checkpoint(self, key: str, every: int = 1) -> TrainingCheckpoint:
        """A :class:`TrainingCheckpoint` at ``out/checkpoints/train/KEY.pt`` saving every ``every`` iterations."""
        self._check_key(key)
        return TrainingCheckpoint(self.checkpoint_dir / "train" / f"{key}.pt", every=every)

    # -- results ---------------------------------------------------------------------------------------------------
    def metric(self, name: str, value: Any) -> Any:
        """Record a scalar metric (number, bool or string; ``name`` may be dotted, e.g. ``convex.objective``)."""
        if not isinstance(name, str) or not name:
            raise ValueError("metric name must be a non-empty string")
        v = _jsonable(value)
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
        jrows = [_jsonable(dict(r)) for r in rows]
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


# ----------------------------------------------------------------------------------------------------------------
# running
# ----------------------------------------------------------------------------------------------------------------
def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def environment_versions() -> dict[str, str]:
    """Versions of attnduality, Python, torch, NumPy, SciPy, scikit-learn and the platform (for ``results.json``)."""
    import torch

    from .. import __version__

    out = {"attnduality": __version__, "python": platform.python_version(), "torch": torch.__version__}
    out["numpy"] = np.__version__
    for mod in ("scipy", "sklearn"):
        with contextlib.suppress(Exception):
            out[mod] = importlib.import_module(mod).__version__
    out["platform"] = platform.platform()
    return out


def _git_commit() -> dict[str, Any] | None:
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10, check=False
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return {"commit": head.stdout.strip(), "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return None


def check_device(device: str) -> str:
    """``device`` if torch can use it here, else a ``ValueError`` naming it and saying what is missing."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"invalid torch device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} requested but MPS is not available; use --device cpu")
    return str(device)


def _diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    keys = list(dict.fromkeys([*a, *b]))
    return [f"{k}: {a.get(k, '<missing>')!r} -> {b.get(k, '<missing>')!r}" for k in keys if a.get(k) != b.get(k)]


def _fmt_value(v: Any) -> str:
    if isinstance(v, float) and not isinstance(v, bool):
        return "nan" if math.isnan(v) else format(v, ".6g")
    return str(v).replace("|", "\\|")


def _report(ctx: RunContext, results: Mapping[str, Any]) -> str:
    exp = ctx.experiment
    lines = [f"# {exp.title or exp.name}", "", exp.about, "", f"Data: {exp.data}", ""]
    if results["status"] != "complete":
        lines += [f"**Status: {results['status']}** {results.get('error', '')}".rstrip(), ""]
    for item in ctx.body:
        lines += [item, ""]
    if ctx.metrics:
        lines += ["## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt_value(v)} |" for k, v in ctx.metrics.items()]
        lines.append("")
    lines += ["## Configuration", "", "| key | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt_value(v)} |" for k, v in results["config"].items()]
    lines += [f"| seed | {ctx.seed} |", f"| device | {ctx.device} |", f"| quick | {ctx.quick} |"]
    lines += [f"| threads | {ctx.threads} |", ""]
    lines += ["## Run", "", f"Status {results['status']}, {results['total_seconds']:.1f} s in all."]
    if ctx.steps:
        lines += ["", "| step | seconds | loaded from checkpoint |", "|---|---|---|"]
        lines += [f"| {k} | {v['seconds']:.2f} | {'yes' if v['resumed'] else 'no'} |" for k, v in ctx.steps.items()]
    ver = ", ".join(f"{k} {v}" for k, v in results["versions"].items() if k != "platform")
    git = results.get("git")
    lines += ["", f"Versions: {ver}."]
    if git:
        lines.append(f"Commit `{git['commit'][:12]}`{' (with local changes)' if git['dirty'] else ''}.")
    lines.append(f"Checkpoints: `checkpoints/` (config hash `{results['config_hash']}`).")
    return "\n".join(lines) + "\n"


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
    cfg_json = _jsonable(cfg)
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
        _atomic_write_bytes(
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
                "git": _git_commit(),
                "metrics": ctx.metrics,
                "tables": ctx.tables,
                "figures": ctx.figures,
                "steps": ctx.steps,
                "started": started,
                "total_seconds": time.perf_counter() - t0,
            }
            if error:
                results["error"] = error
            _atomic_write_bytes(out / "results.json", json.dumps(results, indent=2, allow_nan=True).encode())
            _atomic_write_bytes(out / "report.md", _report(ctx, results).encode())
        return results
