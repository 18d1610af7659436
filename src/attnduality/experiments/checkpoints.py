"""What a run folder's ``checkpoints/`` holds besides the manifest: stored results of steps, mid-training checkpoints.

``checkpoints/steps/KEY.json`` (or ``KEY.pt`` for results JSON cannot hold) is the record ``{"key", "seconds",
"value"}`` of one ``ctx.step(KEY, fn)``: :func:`save_step` writes it, :func:`load_step` reads it back.

``checkpoints/solve/KEY.pt`` is a :class:`SolveCheckpoint`: the iterate of a long certified solve, from which an
interrupted solve restarts.

``checkpoints/train/KEY.pt`` is a :class:`TrainingCheckpoint`, which saves and restores a training loop's whole
state. It holds the model, optimizer and scheduler state dicts, the states of the given generators (torch or
NumPy), the global ``random``/NumPy/torch (and CUDA) RNG states, the iteration to continue from and an ``extra``
dict, in one ``torch.save`` file written atomically. Restoring all of them lets an interrupted loop continue
bit-identically. Experiments get one from ``ctx.checkpoint(key, every=K)``.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import storage

__all__ = ["SolveCheckpoint", "TrainingCheckpoint", "load_step", "save_step", "step_paths"]


def step_paths(steps_dir: Path, key: str) -> tuple[Path, Path]:
    """Where the result of step ``key`` is stored under ``steps_dir``: the JSON file and the ``torch.save`` file."""
    base = steps_dir / key
    return base.with_name(base.name + ".json"), base.with_name(base.name + ".pt")


def load_step(steps_dir: Path, key: str) -> dict[str, Any] | None:
    """The stored record ``{"key", "seconds", "value"}`` of step ``key`` (the JSON file first), ``None`` if none."""
    jpath, tpath = step_paths(steps_dir, key)
    if jpath.exists():
        return json.loads(jpath.read_text())
    if tpath.exists():
        return storage.torch_load(tpath)
    return None


def save_step(steps_dir: Path, key: str, seconds: float, value: Any, how: str = "auto") -> Any:
    """Store the result ``value`` of step ``key`` and return it as a later :func:`load_step` will.

    ``how``: ``"json"`` (``ValueError`` if ``value`` is not JSON-able), ``"torch"`` or ``"auto"`` (JSON when
    possible). A JSON result comes back round-tripped (tuples and arrays as lists, NumPy scalars as numbers).
    """
    jpath, tpath = step_paths(steps_dir, key)
    if how != "torch":
        try:
            text = json.dumps({"key": key, "seconds": seconds, "value": storage.jsonable(value)}, indent=1)
        except (TypeError, ValueError):
            if how == "json":
                raise ValueError(f"step {key!r} returned a value that is not JSON-able; use storage='torch'") from None
        else:
            storage.atomic_write_bytes(jpath, text.encode())
            return json.loads(text)["value"]
    storage.atomic_torch_save(tpath, {"key": key, "seconds": seconds, "value": value})
    return value


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
        return storage.torch_load(self.path) if self.path.exists() else None

    def save(self, state: Mapping[str, Any]) -> None:
        """Save ``state`` (anything ``torch.save`` handles) atomically."""
        storage.atomic_torch_save(self.path, dict(state))

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


class SolveCheckpoint:
    """The iterate of a long certified solve, saved at ``path`` at most every ``every`` seconds, so that a solve
    interrupted (a session end, a kill) restarts near where it stopped instead of from zero.

    Use it as the solver's ``callback(state, certificate)`` (or the estimators' ``fit(..., callback=)``): it saves
    ``state.z``, the phase of ``solver="auto"`` that was running (``"newton"`` once the state is a semismooth
    Newton state, else ``"fista"``), the certified relative gap and the seconds spent so far, earlier interrupted
    attempts included. ``start(tag)`` begins an attempt and returns what the last one saved under the same ``tag``
    (``None`` if nothing, or a checkpoint of another solve); ``extra`` is saved along (e.g. the finished points of
    a path). A restarted solve is certified to the same tolerance; its iterate may differ within it.
    """

    def __init__(self, path: Path, every: float = 60.0) -> None:
        if not every >= 0:
            raise ValueError(f"every must be a number of seconds >= 0, got {every!r}")
        self.path = Path(path)
        self.every = float(every)
        self.tag: str = ""
        self.before = 0.0
        self.extra: dict[str, Any] = {}
        self._t0 = self._last = 0.0
        self._phase_before: str | None = None
        self._iters_before = 0

    def load(self) -> dict[str, Any] | None:
        """The last saved record ``{"tag", "z", "phase", "n_iter", "rel_gap", "seconds", "extra"}``, or ``None``."""
        return storage.torch_load(self.path) if self.path.exists() else None

    def start(self, tag: str) -> dict[str, Any] | None:
        """Begin an attempt at the solve ``tag``: the saved record of an earlier attempt at it, or ``None``."""
        rec = self.load()
        if rec is not None and rec.get("tag") != tag:
            rec = None
        self.tag = tag
        self.before = float(rec["seconds"]) if rec is not None else 0.0
        self._phase_before = None if rec is None else rec["phase"]
        self._iters_before = 0 if rec is None else int(rec.get("n_iter", 0))
        self._t0 = self._last = time.perf_counter()
        return rec

    def seconds(self) -> float:
        """Seconds spent on the solve ``tag`` so far, earlier attempts included."""
        return self.before + time.perf_counter() - self._t0

    def save(self, z: Any, phase: str, rel_gap: float, n_iter: int = 0) -> None:
        """Save ``z`` reached after ``n_iter`` iterations of ``phase`` in this attempt (earlier attempts' iterations
        in the same phase are added: ``n_iter`` of the record counts the phase's iterations so far)."""
        if phase == self._phase_before:
            n_iter += self._iters_before
        storage.atomic_torch_save(
            self.path,
            {
                "tag": self.tag,
                "z": z.detach().cpu().clone(),
                "phase": phase,
                "n_iter": int(n_iter),
                "rel_gap": float(rel_gap),
                "seconds": self.seconds(),
                "extra": dict(self.extra),
            },
        )
        self._last = time.perf_counter()

    def __call__(self, state: Any, cert: Any) -> None:
        if time.perf_counter() - self._last >= self.every:
            self.save(state.z, "newton" if hasattr(state, "n_newton") else "fista", cert.rel_gap, int(state.n_iter))

    def clear(self) -> None:
        self.path.unlink(missing_ok=True)
