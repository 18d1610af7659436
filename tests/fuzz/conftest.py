"""Hypothesis profiles of the fuzz suite.

``ci`` (the default): a fixed, small number of examples per test, derandomized so every run draws the same inputs,
no deadline (the first fit of a process pays for imports and caches). ``long``: many more random examples, for runs
on demand: ``ATTNDUALITY_FUZZ=long python -m pytest tests/fuzz``.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

settings.register_profile("ci", max_examples=12, deadline=None, derandomize=True, suppress_health_check=_QUIET)
settings.register_profile("long", max_examples=400, deadline=None, suppress_health_check=_QUIET)

_PROFILE = os.environ.get("ATTNDUALITY_FUZZ", "ci")
if _PROFILE not in ("ci", "long"):
    raise ValueError(f"ATTNDUALITY_FUZZ must be 'ci' or 'long', got {_PROFILE!r}")
settings.load_profile(_PROFILE)
