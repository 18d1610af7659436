"""How the experiment runner puts things on disk: JSON conversion, atomic writes and ``torch.save``/``torch.load``.

Every file of a run folder (manifest, step results, training checkpoints, ``results.json``, ``report.md``) is written
through :func:`atomic_write_bytes`: the bytes go to a hidden temporary file next to the target (``.NAME.tmpPID``),
which then replaces the target, so a killed run leaves either the old file or the new one, never half of one. The
runner deletes left-over temporary files when it next opens the folder. Callers look the function up on this
module at call time (``storage.atomic_write_bytes(...)``), so replacing it here affects every write of a run.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["atomic_torch_save", "atomic_write_bytes", "jsonable", "torch_load"]


def jsonable(obj: Any) -> Any:
    """``obj`` with NumPy scalars/arrays, tuples, paths and dataclasses turned into JSON types.

    Mappings become dicts with string keys, tuples and lists become lists, dataclass instances become dicts of
    their fields; ``TypeError`` for anything else that is not ``None``, a bool, number or string.
    """
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
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


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (creating its folder) through a temporary file that then replaces ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def atomic_torch_save(path: Path, obj: Any) -> None:
    """``torch.save(obj)`` to ``path`` atomically (serialised in memory, then :func:`atomic_write_bytes`)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def torch_load(path: Path) -> Any:
    """What :func:`atomic_torch_save` stored at ``path``, loaded onto the CPU (full unpickling: trusted files only)."""
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)
