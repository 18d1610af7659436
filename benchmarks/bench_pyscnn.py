"""Our FISTA vs pyscnn's R-FISTA (Mishkin et al. 2022, PyPI ``pyscnn``) on the same convex gated-ReLU program.

Both solve ``min_Z (1/2N)‖Σ_j D_j X Z_j − y‖² + β Σ_j ‖Z_j‖_2`` (c = 1) on identical data and gates:

* pyscnn's objective is ``squared_error/(2·N) + λ Σ ‖U_j‖_2`` (``ConvexMLP._objective`` divides by ``2·len(y)``;
  ``NeuronGL1(λ)`` is the neuron-wise group ℓ1), so λ = β; the script checks it by evaluating both objectives
  at pyscnn's solution.
* pyscnn unitizes the columns of X by default (which would change the masks ``1{X g ≥ 0}``): we pass
  ``unitize_data=False``. It drops duplicate / all-zero masks; we give both solvers the already-distinct gate set.
* On CPU pyscnn runs its numpy backend in the dtype it is given; ours runs torch in the same dtype.

pyscnn runs to its default tolerance (squared norm of the minimum-norm subgradient ≤ 1e-6, max 10000 iterations)
and, for the first size, a tight one (1e-10, float64). Its final objective is re-evaluated by OUR objective
(float64) at ITS solution; we report the time our FISTA needs to reach that value (objective recorded after every
iteration from the iterate's predictions, time from the start of ``FISTA.run``, so including its Lipschitz power
iteration) and the ratio ours / theirs, where theirs is pyscnn's solver loop (``metrics.time[-1]``; data conversion
and mask computation excluded; its end-to-end ``optimize_model`` time is reported too). Best of ``--repeats``
interleaved runs. The last column runs ours alone to a relative duality gap of 1e-6 (30 s cap).

    python benchmarks/bench_pyscnn.py [--quick] [--seed 0] [--threads 1]

Install pyscnn without letting pip touch torch:
    pip install --no-deps pyscnn==0.0.10 linalg_backends==0.0.1b0 opt_einsum==3.4.0
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

import numpy as np
import torch

from _common import (
    DTYPES,
    GatedProblem,
    base_parser,
    beta_max_np,
    distinct_gates,
    gaussian_gates,
    machine_info,
    objective_np,
    out_name,
    planted_regression,
    print_table,
    run_fista,
    set_threads,
    write_json,
)

NAME = "bench_pyscnn"

try:
    from scnn.metrics import Metrics
    from scnn.models import ConvexGatedReLU
    from scnn.optimize import optimize_model
    from scnn.regularizers import NeuronGL1
    from scnn.solvers import RFISTA
except ImportError as exc:  # pragma: no cover
    raise SystemExit(
        f"pyscnn is not importable ({exc}); install it with\n"
        "  pip install --no-deps pyscnn==0.0.10 linalg_backends==0.0.1b0 opt_einsum==3.4.0"
    ) from exc


def run_pyscnn(
    x: np.ndarray, y: np.ndarray, gates: np.ndarray, beta: float, dtype: str, tol: float, max_iters: int
) -> dict[str, Any]:
    model = ConvexGatedReLU(gates.copy(), c=1, bias=False)
    solver = RFISTA(model, max_iters=max_iters, tol=tol)
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, metrics = optimize_model(
            model,
            solver,
            Metrics(),  # pyscnn's default metrics: objective, grad_norm, time (recorded every iteration)
            x,
            y,
            regularizer=NeuronGL1(beta),
            return_convex=True,
            unitize_data=False,
            verbose=False,
            device="cpu",
            dtype=dtype,
        )
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    w = np.asarray(model.parameters[0], dtype=np.float64)  # (c, p, d)
    g = np.asarray(model.G, dtype=np.float64)  # (d, p): the gates pyscnn kept, in its order
    z = w[0]  # (p, d) -> our Z_j = z[j]
    return {
        "wall_total": wall,
        "cpu_total": cpu,
        "wall_loop": float(metrics.time[-1]),
        # pyscnn records metrics before the loop, at every iteration and after it
        "n_iter": int(len(metrics.objective) - 2),
        "objective_pyscnn": float(metrics.objective[-1]),
        "grad_norm": float(metrics.grad_norm[-1]),
        "objective_ours_fn": float(GatedProblem(x, y, g, torch.float64).with_beta(beta).objective(
            torch.as_tensor(z, dtype=torch.float64)[:, :, None])),
        "objective_np": objective_np(x, y, g, z, beta),
        "n_gates_kept": int(g.shape[1]),
        "trace_time": [float(t) for t in metrics.time],
        "trace_objective": [float(o) for o in metrics.objective],
        "active_blocks": int((np.linalg.norm(z, axis=1) > 0).sum()),
    }  # fmt: skip


def run_ours_to(x: np.ndarray, y: np.ndarray, gates: np.ndarray, beta: float, dtype: str, target: float) -> dict:
    """Our FISTA (tol 0), objective recorded after every iteration, stopped at the first one ≤ target."""
    prob = GatedProblem(x, y, gates, DTYPES[dtype]).with_beta(beta)
    _, trace, status = run_fista(prob, tol=0.0, max_iter=20_000, stop_at=target, per_iteration=True)
    hit = trace.first_reaching(target)
    return {
        "status": status,
        "reached": hit is not None,
        "n_iter": hit[0] if hit else trace.n_iter[-1] if trace.n_iter else 0,
        "wall": hit[1] if hit else float("nan"),
        "cpu": hit[2] if hit else float("nan"),
        "objective": trace.objective[-1] if trace.objective else float("nan"),
        "trace": trace.as_dict(),
    }


def run_ours_own_tol(
    x: np.ndarray, y: np.ndarray, gates: np.ndarray, beta: float, dtype: str, tol: float, max_time: float
) -> dict:
    prob = GatedProblem(x, y, gates, DTYPES[dtype]).with_beta(beta)
    result, trace, status = run_fista(prob, tol=tol, max_iter=100_000, max_time=max_time)
    return {
        "tol": tol,
        "status": status,
        "n_iter": trace.n_iter[-1] if trace.n_iter else 0,
        "wall": trace.wall[-1] if trace.wall else float("nan"),
        "objective": trace.objective[-1] if trace.objective else float("nan"),
        "rel_gap": trace.rel_gap[-1] if trace.rel_gap else float("nan"),
    }


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="sample sizes N (default 2000 10000)")
    p.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=sorted(DTYPES))
    p.add_argument("--beta-frac", type=float, default=1e-2, help="β / β_max")
    p.add_argument("--pyscnn-tol", type=float, default=1e-6, help="pyscnn R-FISTA tolerance (its default 1e-6)")
    p.add_argument("--tight-tol", type=float, default=1e-10, help="extra pyscnn run at this tolerance (float64)")
    p.add_argument("--tight-sizes", type=int, nargs="*", default=None, help="sizes with the tight run (default 2000)")
    p.add_argument("--max-iters", type=int, default=10_000, help="pyscnn iteration limit")
    p.add_argument("--repeats", type=int, default=2, help="interleaved repetitions (best wall time is reported)")
    p.add_argument("--own-tol", type=float, default=1e-6, help="also run ours to this relative gap (0 disables)")
    p.add_argument("--own-max-time", type=float, default=30.0, help="time cap of that run (s)")
    args = p.parse_args()
    set_threads(args.threads)
    info = machine_info()  # before the runs: records the load average at the start
    logging.getLogger("scnn").setLevel(logging.ERROR)

    d, n_gates = (10, 50) if args.quick else (50, 500)
    if args.quick:
        args.own_max_time = min(args.own_max_time, 3.0)
    sizes = args.sizes or ([300, 600] if args.quick else [2000, 10000])
    tight_sizes = args.tight_sizes if args.tight_sizes is not None else sizes[:1]
    results: list[dict] = []
    rows: list[list] = []
    for n in sizes:
        x, y = planted_regression(n, d, args.seed)
        gates = distinct_gates(x, gaussian_gates(d, n_gates, args.seed))
        beta = args.beta_frac * beta_max_np(x, y, gates)
        runs = [(dt, args.pyscnn_tol) for dt in args.dtypes]
        if n in tight_sizes and args.tight_tol > 0:
            runs.append(("float64", args.tight_tol))
        for dtype, ptol in runs:
            print(f"N={n} {dtype} pyscnn tol={ptol:g} …", flush=True)
            theirs: list[dict] = []
            ours: list[dict] = []
            for _ in range(args.repeats):
                theirs.append(run_pyscnn(x, y, gates, beta, dtype, ptol, args.max_iters))
                target = theirs[0]["objective_ours_fn"]
                ours.append(run_ours_to(x, y, gates, beta, dtype, target))
            th = min(theirs, key=lambda r: r["wall_loop"])
            reached = [r for r in ours if r["reached"]]
            us = min(reached, key=lambda r: r["wall"]) if reached else ours[0]
            own = (
                run_ours_own_tol(x, y, gates, beta, dtype, args.own_tol, args.own_max_time)
                if args.own_tol > 0 and ptol == args.pyscnn_tol
                else None
            )
            ratio = us["wall"] / th["wall_loop"] if us["reached"] else float("nan")
            ratio_cpu = (
                min(r["cpu"] for r in reached) / min(r["cpu_total"] for r in theirs) if reached else float("nan")
            )
            entry = {
                "n": n,
                "d": d,
                "gates": int(gates.shape[1]),
                "beta": beta,
                "dtype": dtype,
                "pyscnn_tol": ptol,
                "pyscnn_runs": theirs,
                "ours_runs": ours,
                "ours_own_tol": own,
                "scaling_check_rel_diff": abs(th["objective_pyscnn"] - th["objective_ours_fn"])
                / abs(th["objective_ours_fn"]),
                "ratio_wall_ours_over_pyscnn_loop": ratio,
                "ratio_wall_ours_over_pyscnn_total": us["wall"] / th["wall_total"] if us["reached"] else float("nan"),
                "ratio_cpu_ours_over_pyscnn_total": ratio_cpu,
            }
            results.append(entry)
            rows.append(
                [n, dtype, f"{ptol:g}", th["n_iter"], th["objective_ours_fn"], entry["scaling_check_rel_diff"],
                 th["wall_loop"], th["wall_total"], us["n_iter"] if us["reached"] else "not reached",
                 us["wall"], ratio, entry["ratio_cpu_ours_over_pyscnn_total"],
                 "-" if own is None else f"{own['status']} {own['wall']:.3g}s gap {own['rel_gap']:.1e}"]
            )  # fmt: skip
            print(f"  pyscnn {th['wall_loop']:.3g}s, ours {us['wall']:.3g}s, ratio {ratio:.3g}", flush=True)

    headers = ["N", "dtype", "pyscnn tol", "pyscnn iters", "pyscnn objective (our fn)", "their obj vs our fn (rel.)",
               "pyscnn loop s", "pyscnn total s", "ours iters to it", "ours s to it", "ours/pyscnn (wall, loop)",
               "ours/pyscnn (CPU, total)", f"ours to gap {args.own_tol:g}"]  # fmt: skip
    title = f"d={d}, {n_gates} Gaussian gates, β={args.beta_frac:g}·β_max, threads={args.threads}, {info['cpu_model']}"
    table = print_table(headers, rows, title)
    path = write_json(
        out_name(NAME, args.quick),
        {
            "config": vars(args) | {"d": d, "n_gates": n_gates, "sizes": sizes},
            "machine": info,
            "results": results,
            "table": table,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
