"""The experiment registry: :class:`Experiment`, :func:`register_experiment` and look-up by name.

The registry discovers experiments by importing every module of :mod:`attnduality.experiments` (except the
framework's own modules and names starting with ``_``) the first time it is read, so an experiment module registers
itself at import. A module that fails to import is recorded in :data:`DISCOVERY_ERRORS` with a warning instead of
hiding the others.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import apply_overrides

if TYPE_CHECKING:
    from .context import RunContext

__all__ = [
    "DISCOVERY_ERRORS",
    "EXPERIMENTS",
    "Experiment",
    "available_experiments",
    "get_experiment",
    "register_experiment",
    "unregister_experiment",
]

# modules of this package that make up the runner rather than define experiments (discovery skips them)
_FRAMEWORK_MODULES = frozenset(
    {
        "checkpoints",
        "config",
        "context",
        "environment",
        "figures",
        "registry",
        "report",
        "runner",
        "stats",
        "storage",
        "threads",
    }
)


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
    """Import every experiment module of ``attnduality.experiments`` (not starting with ``_``) so they register."""
    global _DISCOVERED
    if _DISCOVERED:
        return
    _DISCOVERED = True
    pkg = importlib.import_module(__package__ or "attnduality.experiments")
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_") or info.name in _FRAMEWORK_MODULES:
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
