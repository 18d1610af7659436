"""Experiment: what commit a9289ec changed in the cost of our FISTA (the pre-a9289ec methods are restored in-process
by ``benchmarks/_patches.py``; nothing in src/ is touched).

Our FISTA runs a fixed number of iterations on the bench_pyscnn problems (d=50, 500 Gaussian gates,
β = 1e-2·β_max): the operator that allocates fresh N×P temporaries per call with 30 power iterations (before
a9289ec), the same with 10 power iterations, and the shipped code (one reused N×P workspace, 10 power iterations).
The operator change must leave the iterates bit-identical (same arithmetic, other memory); minor page faults per
iteration (``getrusage``) show where the time went.

    python benchmarks/exp_fista_fixes.py [--quick] [--seed 0] [--threads 1]
"""

from __future__ import annotations

import resource

import _patches
from _common import (
    DTYPES,
    GatedProblem,
    base_parser,
    beta_max_np,
    distinct_gates,
    gaussian_gates,
    machine_info,
    out_name,
    planted_regression,
    print_table,
    run_fista,
    set_threads,
    write_json,
)

NAME = "exp_fista_fixes"
VARIANTS = {
    "before a9289ec: fresh N×P temporaries, 30 power its": {"operator": True, "lipschitz": True},
    "fresh N×P temporaries, 10 power its": {"operator": True, "lipschitz": False},
    "shipped: reused workspace, 10 power its": {"operator": False, "lipschitz": False},
}


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--iters", type=int, default=150, help="iterations per run")
    args = p.parse_args()
    set_threads(args.threads)
    sizes = [400, 1000] if args.quick else [2000, 10000]
    d, n_gates = (20, 100) if args.quick else (50, 500)
    info = machine_info()
    results: list[dict] = []

    rows_a = []
    for n in sizes:
        x, y = planted_regression(n, d, args.seed)
        gates = distinct_gates(x, gaussian_gates(d, n_gates, args.seed))
        beta = 1e-2 * beta_max_np(x, y, gates)
        for dtype in ("float32", "float64"):
            base = None
            for label, opts in VARIANTS.items():
                with _patches.previous_behaviour(**opts):
                    prob = GatedProblem(x, y, gates, DTYPES[dtype]).with_beta(beta)
                    faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                    _, tr, status = run_fista(prob, 0.0, args.iters, per_iteration=True)
                    faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0) / args.iters
                wall = tr.wall[-1]
                same = "-" if base is None else ("yes" if tr.objective[: args.iters] == base else "no")
                if base is None:
                    base_wall = wall
                base = tr.objective[: args.iters]
                rows_a.append([n, dtype, label, status, tr.n_iter[-1], wall, 1e3 * wall / tr.n_iter[-1],
                               base_wall / wall, faults, tr.objective[-1], same])  # fmt: skip
                results.append({"n": n, "dtype": dtype, "variant": label, "wall": wall, "trace": tr.as_dict()})
                print(f"N={n} {dtype} {label}: {wall:.3g}s", flush=True)
    headers_a = ["N", "dtype", "variant", "status", "iters", "wall s", "ms / iter", "speedup vs before",
                 "minor page faults / iter", "objective", "iterates identical to previous row"]  # fmt: skip
    table_a = print_table(headers_a, rows_a, f"per-iteration cost, d={d}, {n_gates} gates, {info['cpu_model']}")

    path = write_json(
        out_name(NAME, args.quick), {"config": vars(args), "machine": info, "results": results, "table": table_a}
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
