"""A run's outputs: ``results.json`` (everything the run recorded) and ``report.md`` (the same, for reading).

The report has the experiment's title, about and data lines, the status when the run did not complete, the notes,
tables and figures in the order the experiment added them, the metrics, the configuration, and how the run went
(steps and their times, versions, commit, config hash).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from . import storage
from .context import RunContext

__all__ = ["render_report", "write_outputs"]


def _fmt_value(v: Any) -> str:
    if isinstance(v, float) and not isinstance(v, bool):
        return "nan" if math.isnan(v) else format(v, ".6g")
    return str(v).replace("|", "\\|")


def render_report(ctx: RunContext, results: Mapping[str, Any]) -> str:
    """The markdown of ``report.md`` for the run ``ctx`` whose ``results.json`` content is ``results``."""
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


def write_outputs(ctx: RunContext, results: Mapping[str, Any]) -> None:
    """Write ``results.json`` (``results``), then ``report.md``, into the run's folder ``ctx.out``, each atomically."""
    storage.atomic_write_bytes(ctx.out / "results.json", json.dumps(results, indent=2, allow_nan=True).encode())
    storage.atomic_write_bytes(ctx.out / "report.md", render_report(ctx, results).encode())
