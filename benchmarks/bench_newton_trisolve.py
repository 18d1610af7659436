"""Applying the Newton solver's dual preconditioner: ``torch.cholesky_solve`` against two triangular solves
(BENCHMARKS.md §7).

The single-output Newton systems are preconditioned by the Cholesky factor ``L`` of ``I + σ A J A*`` (N × N),
applied once per conjugate-gradient iteration to one right-hand side. Two parts, both in one process:

* ``apply``: one application at N = 1000 and 2000, float64, one thread, ``cholesky_solve(r, L)`` against
  ``solve_triangular(Lᵀ, solve_triangular(L, r))`` (median of 200).
* ``solve``: the gated MLP of ``bench_newton.py --parts family`` (N = 1000, d = 50, 200 gates, squared loss,
  tol 1e-6) at β ∈ {3e-4, 1e-3, 1e-2, 1e-1}·β_max, solved by ``SemismoothNewton`` with the preconditioner
  applied each way, interleaved, ``--repeats`` times each; min and median seconds, and the objectives (identical
  up to rounding).

    python benchmarks/bench_newton_trisolve.py [--threads 1] [--repeats 5] [--quick]
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from _common import (
    base_parser,
    beta_max_np,
    distinct_gates,
    gaussian_gates,
    machine_info,
    out_name,
    planted_regression,
    print_table,
    set_threads,
    write_json,
)
from attnduality.convex import CompositeProblem, GatedMLPOperator, GroupL2, SquaredLoss
from attnduality.convex.solvers import SemismoothNewton
from attnduality.convex.solvers import newton as newton_module

NAME = "bench_newton_trisolve"


def _median_ms(fn: Callable[[], Any], k: int = 200) -> float:
    for _ in range(10):
        fn()
    times = []
    for _ in range(k):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def part_apply(args: Any) -> list[dict]:
    rows = []
    tri = torch.linalg.solve_triangular
    for n in (500,) if args.quick else (1000, 2000):
        gen = torch.Generator().manual_seed(args.seed)
        a = torch.randn(n, n, generator=gen, dtype=torch.float64)
        low = torch.linalg.cholesky(a @ a.T / n + torch.eye(n, dtype=torch.float64))
        r = torch.randn(n, 1, generator=gen, dtype=torch.float64)
        old = _median_ms(lambda low=low, r=r: torch.cholesky_solve(r, low))
        new = _median_ms(lambda low=low, r=r: tri(low.mT, tri(low, r, upper=False), upper=True))
        rows.append({"n": n, "cholesky_solve_ms": old, "two_triangular_ms": new})
    print_table(
        ["N", "cholesky_solve ms", "two triangular solves ms", "ratio"],
        [[r["n"], f"{r['cholesky_solve_ms']:.3f}", f"{r['two_triangular_ms']:.3f}",
          f"{r['cholesky_solve_ms'] / r['two_triangular_ms']:.1f}x"] for r in rows],
        title="one application of the dual preconditioner (float64, one right-hand side)",
    )  # fmt: skip
    return rows


def _cholesky_solve(chol: torch.Tensor) -> Any:
    """``_DualPreconditioner.inverse`` by ``torch.cholesky_solve`` (the baseline)."""
    return lambda r: torch.cholesky_solve(r, chol)


def part_solve(args: Any) -> list[dict]:
    n, d, p = (300, 20, 50) if args.quick else (1000, 50, 200)
    x, y = planted_regression(n, d, args.seed)
    gates = distinct_gates(x, gaussian_gates(d, p, args.seed))
    op = GatedMLPOperator(torch.tensor(x), torch.tensor((x @ gates >= 0).astype(np.float64)), 1)
    base = CompositeProblem(SquaredLoss(torch.tensor(y[:, None])), op, GroupL2(axes=(1, 2)), 1.0)
    bmax = beta_max_np(x, y, gates)
    ours = newton_module._DualPreconditioner.inverse
    rows = []
    try:
        for frac in args.beta_fracs:
            prob = base.with_beta(frac * bmax)
            times: dict[str, list[float]] = {"cholesky_solve": [], "triangular": []}
            objs: dict[str, float] = {}
            for _ in range(args.repeats):
                for name, inverse in (("cholesky_solve", _cholesky_solve), ("triangular", ours)):
                    newton_module._DualPreconditioner.inverse = staticmethod(inverse)  # type: ignore[method-assign]
                    t0 = time.perf_counter()
                    res = SemismoothNewton(tol=1e-6).run(prob)
                    times[name].append(time.perf_counter() - t0)
                    objs[name] = res.objective
            rows.append({"frac": frac, "times": times, "objectives": objs})
    finally:
        newton_module._DualPreconditioner.inverse = staticmethod(ours)  # type: ignore[method-assign]
    table = []
    for r in rows:
        old, new = r["times"]["cholesky_solve"], r["times"]["triangular"]
        o = r["objectives"]
        table.append([
            f"{r['frac']:g}", f"{min(old):.3f} / {np.median(old):.3f}", f"{min(new):.3f} / {np.median(new):.3f}",
            f"{np.median(old) / np.median(new):.2f}x",
            f"{abs(o['cholesky_solve'] - o['triangular']) / o['triangular']:.1e}",
        ])  # fmt: skip
    print_table(
        ["β/β_max", "cholesky_solve s (min / median)", "triangular s (min / median)", "median ratio", "rel. obj. diff"],
        table,
        title=f"SemismoothNewton on the gated MLP (N={n}, d={d}), {args.repeats} interleaved repeats",
    )
    return rows


def main() -> None:
    p = base_parser(__doc__ or "")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--beta-fracs", type=float, nargs="+", default=[3e-4, 1e-3, 1e-2, 1e-1])
    args = p.parse_args()
    set_threads(args.threads)
    out: dict[str, Any] = {"machine": machine_info(), "args": vars(args)}
    out["apply"] = part_apply(args)
    out["solve"] = part_solve(args)
    write_json(out_name(NAME, args.quick), out)


if __name__ == "__main__":
    main()
