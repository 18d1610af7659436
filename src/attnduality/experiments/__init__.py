"""Experiments runnable from the command line (``attnduality run NAME``) and the framework they are written in.

Every module of this package (not starting with ``_``) is imported on first use of the registry and registers its
experiments with :func:`register_experiment`; see :mod:`attnduality.experiments.runner` for how to write one.
"""

from __future__ import annotations

from typing import Any

from .runner import (
    DISCOVERY_ERRORS,
    EXPERIMENTS,
    ConfigMismatchError,
    Experiment,
    RunContext,
    RunError,
    RunFolderBusyError,
    TrainingCheckpoint,
    apply_overrides,
    available_experiments,
    default_out_dir,
    get_experiment,
    parse_overrides,
    register_experiment,
    run_experiment,
    unregister_experiment,
)

__all__ = [
    "DISCOVERY_ERRORS",
    "EXPERIMENTS",
    "ConfigMismatchError",
    "Experiment",
    "RunContext",
    "RunError",
    "RunFolderBusyError",
    "TrainingCheckpoint",
    "apply_overrides",
    "available_experiments",
    "default_out_dir",
    "get_experiment",
    "parse_overrides",
    "register_experiment",
    "run_experiment",
    "run_quickstart",
    "unregister_experiment",
]


def __getattr__(name: str) -> Any:
    if name == "run_quickstart":
        from .quickstart import run_quickstart

        return run_quickstart
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
