"""The Newton solver's ``A J A*`` through the tangent spaces of the active singular pairs, against full operator
products (BENCHMARKS.md §7).

On the quickstart program (digits, 50 gates, cross-entropy, block nuclear norm, β = 1e-2, tol 1e-6) the prox
Jacobian of each SSNAL system lives on the tangent spaces of the blocks' active singular pairs
(:class:`~attnduality.convex.penalties.TangentJacobian`), and ``GatedMLPOperator.tangent_map`` applies ``A J A*``
on those factors only. Both variants run in one process, interleaved, ``--repeats`` times each, for
``solver="newton"`` and ``solver="auto"``: "full" switches the tangent map off (``_TANGENT_GAIN = 0``: full forward
and adjoint products, as before the map; J on the active blocks). Reported: median and all solve seconds,
Newton-phase operator products (full, and through the tangent map), and the objectives.

    python benchmarks/bench_newton_tangent.py [--threads 1] [--repeats 3] [--quick]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from _common import base_parser, machine_info, out_name, print_table, set_threads, write_json
from attnduality.convex import ConvexMLPClassifier
from attnduality.convex.operators import mlp as mlp_module

NAME = "bench_newton_tangent"


def main() -> None:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    p = base_parser(__doc__ or "")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    set_threads(args.threads)
    digits = load_digits()
    x_tr, _, y_tr, _ = train_test_split(digits.data / 16.0, digits.target, test_size=0.25, random_state=0)
    n_gates = 20 if args.quick else 50
    default_gain = mlp_module._TANGENT_GAIN
    runs: dict[tuple[str, str], list[dict]] = {}
    for _ in range(max(1, args.repeats)):
        for solver in ("newton", "auto"):
            for variant, gain in (("tangent", default_gain), ("full", 0.0)):
                mlp_module._TANGENT_GAIN = gain
                counts: dict[str, int] = {}

                def count(state: Any, _cert: Any, counts: dict = counts) -> None:
                    if hasattr(state, "n_tangent"):
                        counts.update(products=state.n_products, tangent=state.n_tangent)

                est = ConvexMLPClassifier(
                    n_gates=n_gates, beta=1e-2, tol=1e-6, max_iter=20_000, random_state=args.seed, solver=solver
                )
                est.fit(x_tr, y_tr, callback=count)
                runs.setdefault((solver, variant), []).append(
                    {
                        "seconds": est.solve_time_,
                        "n_iter": est.n_iter_,
                        "objective": est.objective_,
                        "rel_gap": est.certificate_.rel_gap,
                        **counts,
                    }  # fmt: skip
                )
                print(f"{solver} {variant}: {est.solve_time_:.2f} s", flush=True)
    mlp_module._TANGENT_GAIN = default_gain
    rows = []
    for (solver, variant), rs in runs.items():
        secs = [r["seconds"] for r in rs]
        rows.append({"solver": solver, "variant": variant, "median_s": float(np.median(secs)), "runs": rs})
    medians = {(r["solver"], r["variant"]): r["median_s"] for r in rows}
    print_table(
        ["solver", "A J A*", "solve s (median)", "runs", "Newton products (tangent)", "objective", "rel. gap", "gain"],
        [
            [
                r["solver"],
                r["variant"],
                f"{r['median_s']:.2f}",
                " / ".join(f"{x['seconds']:.2f}" for x in r["runs"]),
                f"{r['runs'][-1].get('products')} ({r['runs'][-1].get('tangent')})",
                f"{r['runs'][-1]['objective']:.9f}",
                f"{r['runs'][-1]['rel_gap']:.1e}",
                f"{medians[(r['solver'], 'full')] / r['median_s']:.2f}x",
            ]
            for r in rows
        ],
        title=f"quickstart program ({n_gates} gates), Newton systems with and without the tangent map",
    )
    write_json(out_name(NAME, args.quick), {"machine": machine_info(), "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
