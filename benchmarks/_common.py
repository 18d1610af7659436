"""Shared helpers of the benchmark scripts: data, the convex gated-ReLU problem, timing records, output files.

Every script is run as ``python benchmarks/NAME.py [--quick] [--seed S] [--threads T]`` from the repository root; it
prints a table and writes ``benchmarks/out/NAME.json`` (``NAME_quick.json`` with ``--quick``; ``benchmarks/out/`` is
git-ignored).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnduality.convex.arrangements import gate_masks, unique_gates
from attnduality.convex.losses import SquaredLoss
from attnduality.convex.operators import GatedMLPOperator
from attnduality.convex.penalties import BlockNuclearNorm
from attnduality.convex.problem import CompositeProblem
from attnduality.convex.solvers.fista import FISTA, SolveResult

OUT_DIR = Path(__file__).resolve().parent / "out"
DTYPES = {"float32": torch.float32, "float64": torch.float64}


# ----------------------------------------------------------------------------------------------------------------
# command line, threads, machine
# ----------------------------------------------------------------------------------------------------------------
def base_parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="small sizes, < 1 minute (smoke test)")
    p.add_argument("--seed", type=int, default=0, help="seed of data and gates")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads for torch, BLAS and OpenMP (default 1: every solver single-threaded, robust on a shared box)",
    )
    return p


_LIMITER: Any = None


def set_threads(n: int) -> None:
    """Limit torch, OpenBLAS/MKL and OpenMP to ``n`` threads (call after every solver library is imported)."""
    global _LIMITER
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        _LIMITER = threadpool_limits(limits=n)
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        _LIMITER = None


def machine_info() -> dict[str, Any]:
    model = platform.processor() or ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "gpu": torch.cuda.is_available(),
    }
    try:
        root = Path(__file__).resolve().parent.parent
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=root, capture_output=True, text=True)
        info["git_commit"] = rev.stdout.strip() + ("+dirty-src" if dirty.stdout.strip() else "")
    except OSError:
        pass
    try:
        info["loadavg_start"] = os.getloadavg()
    except OSError:
        pass
    return info


def out_name(name: str, quick: bool) -> str:
    """``name``, or ``name_quick`` for a ``--quick`` run, so that smoke tests never overwrite full results."""
    return f"{name}_quick" if quick else name


def write_json(name: str, payload: dict[str, Any]) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    try:
        payload.setdefault("machine", {})["loadavg_end"] = os.getloadavg()
    except OSError:
        pass
    path = OUT_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=_json_default))
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str | None = None) -> str:
    """Print (and return) a GitHub-flavoured markdown table."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            if v != v:
                return "n/a"
            if v == 0 or 1e-3 <= abs(v) < 1e5:
                return f"{v:.4g}"
            return f"{v:.3e}"
        return str(v)

    cells = [[fmt(v) for v in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    text = "\n".join(lines)
    if title:
        print(f"\n{title}")
    print(text)
    return text


# ----------------------------------------------------------------------------------------------------------------
# data and the convex gated-ReLU problem
# ----------------------------------------------------------------------------------------------------------------
def planted_regression(n: int, d: int, seed: int, width: int = 10, noise: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """``X`` (n, d) with i.i.d. N(0, 1/d) entries (rows of norm ≈ 1) and ``y = relu(X W1) w2 + noise``, y of unit
    standard deviation before the noise is added."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) / math.sqrt(d)
    w1 = rng.standard_normal((d, width))
    w2 = rng.standard_normal(width)
    clean = np.maximum(x @ w1, 0.0) @ w2
    clean = (clean - clean.mean()) / clean.std()
    y = clean + noise * rng.standard_normal(n)
    return x, y


def gaussian_gates(d: int, n_gates: int, seed: int) -> np.ndarray:
    """``n_gates`` standard Gaussian gate vectors as the columns of a (d, P) array (independent stream of ``seed``)."""
    return np.random.default_rng([seed, 1]).standard_normal((d, n_gates))


def distinct_gates(x: np.ndarray, gates: np.ndarray) -> np.ndarray:
    """The gates whose masks on ``x`` are distinct and not all-zero (first occurrence kept). Duplicate masks do not
    change the optimal value, so every solver gets this same set."""
    return unique_gates(torch.as_tensor(x), torch.as_tensor(gates)).numpy()


@dataclass
class GatedProblem:
    """The convex gated-ReLU program ``(1/2N)‖Σ_j D_j X Z_j − y‖² + β Σ_j ‖Z_j‖_2`` in our library's objects."""

    x: np.ndarray
    y: np.ndarray
    gates: np.ndarray
    dtype: torch.dtype = torch.float64
    problem: CompositeProblem = field(init=False)
    beta_max: float = field(init=False)

    def __post_init__(self) -> None:
        xt = torch.as_tensor(self.x, dtype=self.dtype)
        yt = torch.as_tensor(self.y.reshape(-1, 1), dtype=self.dtype)
        op = GatedMLPOperator(xt, gate_masks(xt, torch.as_tensor(self.gates, dtype=self.dtype)), 1)
        loss = SquaredLoss(yt)
        pen = BlockNuclearNorm()
        self.beta_max = float(pen.dual_norm(op.adjoint(loss.grad(op.forward(op.zeros())))))
        self.problem = CompositeProblem(loss, op, pen, 0.0)

    def with_beta(self, beta: float) -> CompositeProblem:
        return self.problem.with_beta(beta)


def beta_max_np(x: np.ndarray, y: np.ndarray, gates: np.ndarray) -> float:
    """``max_j ‖Xᵀ D_j y‖ / N``: the smallest β at which ``Z = 0`` is optimal (float64, numpy)."""
    m = (x @ gates >= 0).astype(np.float64)
    return float(np.max(np.linalg.norm(x.T @ (m * y[:, None]), axis=0)) / x.shape[0])


def objective_np(x: np.ndarray, y: np.ndarray, gates: np.ndarray, z: np.ndarray, beta: float) -> float:
    """Our objective evaluated independently in float64 numpy: ``z`` is (P, d)."""
    m = (x @ gates >= 0).astype(np.float64)
    pred = ((x @ z.T) * m).sum(1)
    return float(0.5 * np.sum((pred - y) ** 2) / x.shape[0] + beta * np.linalg.norm(z, axis=1).sum())


# ----------------------------------------------------------------------------------------------------------------
# timing of our solver
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Trace:
    """(iteration, wall seconds, CPU seconds, objective, relative gap) at each certificate check of a FISTA run."""

    n_iter: list[int] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    objective: list[float] = field(default_factory=list)
    rel_gap: list[float] = field(default_factory=list)

    def first_reaching(self, target: float) -> tuple[int, float, float] | None:
        """(iteration, wall, cpu) of the first check whose objective is ≤ ``target``; None if never."""
        for k, obj in enumerate(self.objective):
            if obj <= target:
                return self.n_iter[k], self.wall[k], self.cpu[k]
        return None

    def as_dict(self) -> dict[str, list]:
        return {
            "n_iter": self.n_iter,
            "wall": self.wall,
            "cpu": self.cpu,
            "objective": self.objective,
            "rel_gap": self.rel_gap,
        }


class _Stop(Exception):
    """Raised by the recording hooks to end a run once a target objective is reached."""


class _TracedFISTA(FISTA):
    """Our FISTA, unchanged, plus a record of the objective after every iteration (evaluated in float64 from the
    iterate's predictions: one loss value and one penalty value, no operator call)."""

    def __init__(self, trace: Trace, t0: float, c0: float, stop_at: float | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._trace, self._t0, self._c0, self._stop_at = trace, t0, c0, stop_at

    def step(self, problem: CompositeProblem, state: Any) -> Any:
        new = super().step(problem, state)
        obj = float(problem.loss.value(new.u.double())) + problem.beta * float(problem.penalty.value(new.z.double()))
        tr = self._trace
        tr.wall.append(time.perf_counter() - self._t0)
        tr.cpu.append(time.process_time() - self._c0)
        tr.n_iter.append(int(new.n_iter))
        tr.objective.append(obj)
        tr.rel_gap.append(float("nan"))
        if self._stop_at is not None and obj <= self._stop_at:
            raise _Stop
        return new


def run_fista(
    problem: CompositeProblem,
    tol: float,
    max_iter: int = 100_000,
    stop_at: float | None = None,
    max_time: float | None = None,
    per_iteration: bool = False,
) -> tuple[SolveResult | None, Trace, str]:
    """Run our FISTA, recording wall and CPU time (from the call, so including ``FISTA.init``'s Lipschitz estimate).

    The record is taken at each certificate check (every 10 iterations; ``rel_gap`` filled), or after every
    iteration when ``per_iteration`` (``rel_gap`` NaN). ``stop_at``: end the run as soon as a recorded objective is
    ≤ this value (status ``"target"``). Returns ``(result, trace, status)``: ``result`` is None when the run was
    stopped at the target or when the solver raised (``status`` is then ``"error: …"``, and the trace up to the
    failure is kept).
    """
    trace = Trace()
    t0, c0 = time.perf_counter(), time.process_time()

    def cb(state: Any, cert: Any) -> None:
        if per_iteration:
            return
        trace.wall.append(time.perf_counter() - t0)
        trace.cpu.append(time.process_time() - c0)
        trace.n_iter.append(int(state.n_iter))
        trace.objective.append(float(cert.primal))
        trace.rel_gap.append(float(cert.rel_gap))
        if stop_at is not None and cert.primal <= stop_at:
            raise _Stop

    kwargs: dict[str, Any] = {"tol": tol, "max_iter": max_iter, "max_time": max_time}
    solver = _TracedFISTA(trace, t0, c0, stop_at, **kwargs) if per_iteration else FISTA(**kwargs)
    try:
        result = solver.run(problem, callback=cb)
    except _Stop:
        return None, trace, "target"
    except Exception as exc:  # reported, not hidden: the error goes in the table and the JSON
        return None, trace, f"error: {exc!r}"
    trace.wall.append(time.perf_counter() - t0)
    trace.cpu.append(time.process_time() - c0)
    trace.n_iter.append(int(result.n_iter))
    trace.objective.append(float(result.objective))
    trace.rel_gap.append(float(result.certificate.rel_gap))
    return result, trace, result.status


def rel_diff(a: float, b: float) -> float:
    return (a - b) / abs(b) if b != 0 else float("nan")
