"""What a run records about where it ran, and the device check made before it starts.

:func:`environment_versions` (package versions and platform) goes into a run's manifest and ``results.json``;
:func:`git_commit` (the checkout's commit and whether it has local changes) into ``results.json``;
:func:`check_device` refuses a torch device this machine cannot use.
"""

from __future__ import annotations

import contextlib
import importlib
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["check_device", "environment_versions", "git_commit"]


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


def git_commit() -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` of the git checkout holding this package; ``None`` outside one."""
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
