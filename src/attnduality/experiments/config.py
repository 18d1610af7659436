"""Experiment configs: ``--set key=value`` overrides parsed by field type, the finite-number check, the config hash.

A config is a dataclass instance. :func:`parse_overrides` splits command-line items into ``{key: "string"}``;
:func:`apply_overrides` parses each string by the annotated type of its field (bool, int, float, str, tuples and
lists of those, ``X | None``) and returns a modified copy. :func:`config_hash` names a run's identity (experiment,
config, seed, device): it is stored in the run folder's manifest, and a later run on that folder is refused when it
differs, so its canonical dump must stay as it is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .storage import jsonable

__all__ = ["apply_overrides", "check_finite_config", "config_hash", "parse_overrides"]


def config_hash(payload: Mapping[str, Any]) -> str:
    """SHA-256 (first 16 hex digits) of a canonical JSON dump of ``payload``.

    The dump is :func:`~attnduality.experiments.storage.jsonable` of ``payload`` with sorted keys, no spaces and
    ``NaN``/``Infinity`` allowed.
    """
    text = json.dumps(jsonable(payload), sort_keys=True, separators=(",", ":"), allow_nan=True)
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
