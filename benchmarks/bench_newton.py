"""The semismooth Newton solver against FISTA and the solvers a user would pick instead (BENCHMARKS.md §7).

Parts (``--parts``, default all):

* ``family``: the convex gated-ReLU MLP, squared loss, group ℓ2 over gate blocks (c = 1), N = 1000, d = 50,
  200 Gaussian gates (deduplicated), β = frac·β_max. Ours (Newton, FISTA) run to a certified relative gap of
  ``--tol``; cvxpy + Clarabel at high accuracy; skglm ``GroupLasso`` and celer ``GroupLasso`` on the lifted
  N × P·d matrix (same objective ``(1/2N)‖Az − y‖² + β Σ_j ‖z_j‖``) at tight tolerances. Every objective is
  re-evaluated in float64 at the returned point; "rel. to ours" is (objective − ours)/ours.
* ``quickstart``: the quickstart's convex program (digits, 50 gates, cross-entropy, block nuclear norm, β = 1e-2)
  through ``ConvexMLPClassifier(solver=...)``, tol 1e-6.
* ``heads``: every token head at the sizes of §5 (N = 400, s = 16, d = 8, c = 4, planted labels,
  β = 0.1·β_max and 0.01·β_max, cross-entropy, tol 1e-8): Newton, FISTA and auto, iterations and time.
* ``fashion``: the nuclear-norm multinomial logistic head on Fashion-MNIST pixels average-pooled 4×4 (49 channels,
  or their first 16), each channel divided by its RMS, the first 2,000 training images, β ∈ {1e-2, 3e-3,
  1e-3}·β_max, tol 1e-4 and 1e-6: Newton's outer steps (more than 40 means it stalled and handed over to FISTA).
* ``pyscnn``: pyscnn's R-FISTA on ``bench_pyscnn.py``'s problem (N ∈ {2000, 10000}, d = 50, 500 gates, float64,
  β = 1e-2·β_max) against the time ours (Newton, auto, FISTA) need to reach pyscnn's objective (checked at every
  certificate: every 10 FISTA iterations, once per Newton step, so for Newton this is the time of the step that gets
  there).

    python benchmarks/bench_newton.py [--parts family quickstart heads pyscnn fashion] [--threads 1] [--quick]
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import numpy as np
import torch

from _common import (
    base_parser,
    beta_max_np,
    distinct_gates,
    gaussian_gates,
    machine_info,
    objective_np,
    out_name,
    planted_regression,
    print_table,
    set_threads,
    write_json,
)
from attnduality.convex import (
    FISTA,
    CompositeProblem,
    ConvexMLPClassifier,
    GatedMLPOperator,
    GroupL2,
    SquaredLoss,
)
from attnduality.convex.solvers import AutoSolver, SemismoothNewton

NAME = "bench_newton"


def _ours(problem: CompositeProblem, solver: Any, repeats: int = 1) -> dict:
    """One solve, timed ``repeats`` times (the median is reported: a ~1 s solve on a loaded machine varies by ±30%)."""
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        res = solver.run(problem)
        times.append(time.perf_counter() - t0)
    return {
        "time": float(np.median(times)),
        "times": times,
        "status": res.status,
        "n_iter": res.n_iter,
        "objective": res.objective,
        "rel_gap": res.certificate.rel_gap,
        "z": res.z,
    }


def _lifted(x: np.ndarray, gates: np.ndarray) -> np.ndarray:
    masks = (x @ gates >= 0).astype(np.float64)
    return np.concatenate([masks[:, [j]] * x for j in range(gates.shape[1])], axis=1)


def part_family(args: Any) -> list[dict]:
    from bench_cvxpy import solve_cvxpy

    n, d, p = (300, 20, 50) if args.quick else (1000, 50, 200)
    x, y = planted_regression(n, d, args.seed)
    gates = distinct_gates(x, gaussian_gates(d, p, args.seed))
    p = gates.shape[1]
    masks = torch.tensor((x @ gates >= 0).astype(np.float64))
    op = GatedMLPOperator(torch.tensor(x), masks, 1)
    base = CompositeProblem(SquaredLoss(torch.tensor(y[:, None])), op, GroupL2(axes=(1, 2)), 1.0)
    bmax = beta_max_np(x, y, gates)
    rows = []
    for frac in args.beta_fracs:
        beta = frac * bmax
        prob = base.with_beta(beta)
        newton = _ours(prob, SemismoothNewton(tol=args.tol), args.repeats)
        fista = _ours(prob, FISTA(tol=args.tol, max_iter=100_000), args.repeats)
        auto = _ours(prob, AutoSolver(tol=args.tol, max_iter=100_000), args.repeats)
        ref = newton["objective"]
        row: dict[str, Any] = {"frac": frac, "beta": beta, "n": n, "d": d, "gates": p}
        for name, r in (("newton", newton), ("fista", fista), ("auto", auto)):
            row[name] = {k: v for k, v in r.items() if k != "z"}
        if not args.skip_peers:
            a = _lifted(x, gates)
            for name, make in (("skglm", _skglm), ("celer", _celer)):
                if name not in args.peers:
                    continue
                t0 = time.perf_counter()
                w, info = make(a, y, d, beta)
                obj = objective_np(x, y, gates, w.reshape(p, d), beta)
                row[name] = {"time": time.perf_counter() - t0, "objective": obj, "rel_to_ours": (obj - ref) / ref}
                row[name].update(info)
                print(f"  {name}: {row[name]['time']:.1f}s rel. obj. {row[name]['rel_to_ours']:+.1e}", flush=True)
        if not args.skip_peers and "clarabel" in args.peers:
            cl = solve_cvxpy(x, y, gates, beta, "CLARABEL", tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
            row["clarabel"] = {
                "time": cl["time_total"],
                "status": cl["status"],
                "objective": cl["objective"],
                "rel_to_ours": (cl["objective"] - ref) / ref,
            }
        rows.append(row)
        print(f"frac {frac:g}: " + ", ".join(f"{k} {v['time']:.3g}s" for k, v in row.items() if isinstance(v, dict)))
    table = []
    for r in rows:
        peers = [k for k in ("clarabel", "skglm", "celer") if k in r]
        line = [
            f"{r['frac']:g}",
            f"{r['newton']['time']:.3g} ({r['newton']['n_iter']} it, gap {r['newton']['rel_gap']:.1e})",
            f"{r['fista']['time']:.3g} ({r['fista']['n_iter']} it)",
            f"{r['auto']['time']:.3g} ({r['auto']['n_iter']} it)",
        ]
        line += [f"{r[k]['time']:.3g} ({r[k]['rel_to_ours']:+.1e})" for k in peers]
        line += [f"{min(r[k]['time'] for k in peers) / r['newton']['time']:.1f}x" if peers else "-"]
        table.append(line)
    heads = ["β/β_max", "Newton s", "FISTA s", "auto s"]
    heads += [f"{k} s (rel. obj.)" for k in ("clarabel", "skglm", "celer") if k in rows[0]] + ["best peer / Newton"]
    print_table(heads, table, title=f"gated MLP, squared loss, N={n}, d={d}, {p} gates, tol {args.tol:g}")
    return rows


def _skglm(a: np.ndarray, y: np.ndarray, d: int, beta: float) -> tuple[np.ndarray, dict]:
    from skglm import GroupLasso

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = GroupLasso(groups=d, alpha=beta, tol=1e-8, max_iter=1000, fit_intercept=False).fit(a, y)
    return np.asarray(m.coef_), {"tol": 1e-8}


def _celer(a: np.ndarray, y: np.ndarray, d: int, beta: float) -> tuple[np.ndarray, dict]:
    from celer import GroupLasso

    # celer stops on a duality gap ≤ tol·‖y‖²/N, i.e. relative to about 2·P(0): 1e-6 matches our tolerance
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = GroupLasso(groups=d, alpha=beta, tol=1e-6, max_iter=1000, fit_intercept=False).fit(a, y)
    return np.asarray(m.coef_), {"tol": 1e-6}


def part_quickstart(args: Any) -> list[dict]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_tr, _, y_tr, _ = train_test_split(digits.data / 16.0, digits.target, test_size=0.25, random_state=0)
    rows = []
    for solver in ("newton", "fista", "auto"):
        times, counts = [], {}
        for _ in range(1 if solver == "fista" else max(1, args.repeats)):  # FISTA's ~100 s once
            est = ConvexMLPClassifier(n_gates=50, beta=1e-2, tol=1e-6, max_iter=20_000, random_state=0, solver=solver)

            def count(state: Any, _cert: Any, counts: dict = counts) -> None:
                if hasattr(state, "n_cg"):  # the Newton phase (n_tangent: products through the tangent map)
                    counts.update(products=state.n_products, tangent=getattr(state, "n_tangent", 0))

            t0 = time.perf_counter()
            est.fit(x_tr, y_tr, callback=count)
            times.append((time.perf_counter() - t0, est.solve_time_))
        rows.append(
            {
                "solver": solver,
                "fit_s": float(np.median([t[0] for t in times])),
                "solve_s": float(np.median([t[1] for t in times])),
                "solve_times": [t[1] for t in times],
                "n_iter": est.n_iter_,
                "status": est.status_,
                "objective": est.objective_,
                "rel_gap": est.certificate_.rel_gap,
                "newton_products": counts.get("products"),
                "newton_tangent_products": counts.get("tangent"),
            }
        )
    print_table(
        [
            "solver",
            "fit s",
            "solve s (median)",
            "solve s (runs)",
            "iterations",
            "Newton products (tangent)",
            "objective",
            "rel. gap",
        ],
        [
            [
                r["solver"],
                f"{r['fit_s']:.2f}",
                f"{r['solve_s']:.2f}",
                " / ".join(f"{t:.2f}" for t in r["solve_times"]),
                r["n_iter"],
                "–" if r["newton_products"] is None else f"{r['newton_products']} ({r['newton_tangent_products']})",
                f"{r['objective']:.9f}",
                f"{r['rel_gap']:.1e}",
            ]
            for r in rows
        ],
        title="quickstart convex program (digits, 50 gates, cross-entropy, block nuclear, beta=1e-2, tol 1e-6)",
    )
    return rows


def head_cases(args: Any) -> Iterator[tuple[str, float, Callable[[str], Any], np.ndarray, np.ndarray]]:
    """The token heads of §5's sizes (N = 400, s = 16, d = 8, c = 4; N = 100 with ``--quick``) at 0.1 and
    0.01·β_max: ``(head, frac, make_estimator(solver), X, y)``."""
    import bench_heads_adam as bh

    n = 100 if args.quick else 400
    for key, spec in bh.HEADS.items():
        x, y = bh.planted_data(spec, n, 16, 8, 4, args.seed)
        gates = bh.sample_gates(spec, 16, 8, spec.n_gates, args.seed)
        xt = torch.as_tensor(x, dtype=bh.DTYPE)
        bmax = bh.beta_max(spec, xt, torch.as_tensor(y), gates, 4)
        for frac in (0.1, 0.01):
            yield key, frac, partial(_head_estimator, bh, spec, gates, frac * bmax), x, y


def part_heads(args: Any) -> list[dict]:
    n = 100 if args.quick else 400
    rows = []
    for key, frac, make, x, y in head_cases(args):
        row: dict[str, Any] = {"head": key, "frac": frac}
        for solver in ("newton", "fista", "auto"):
            est = make(solver)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                est.fit(x, y)
            row[solver] = {
                "time": time.perf_counter() - t0,
                "n_iter": est.n_iter_,
                "status": est.status_,
                "objective": est.objective_,
                "rel_gap": est.certificate_.rel_gap,
            }
        rows.append(row)
        print(
            f"{key} {frac:g}: newton {row['newton']['time']:.2f}s fista {row['fista']['time']:.2f}s "
            f"auto {row['auto']['time']:.2f}s"
        )
    print_table(
        [
            "head",
            "β/β_max",
            "Newton s (steps)",
            "FISTA s (iterations)",
            "auto s (iterations)",
            "FISTA/Newton",
            "rel. obj. diff",
        ],
        [
            [
                r["head"],
                f"{r['frac']:g}",
                f"{r['newton']['time']:.2f} ({r['newton']['n_iter']}, {r['newton']['status']})",
                f"{r['fista']['time']:.2f} ({r['fista']['n_iter']}, {r['fista']['status']})",
                f"{r['auto']['time']:.2f} ({r['auto']['n_iter']}, {r['auto']['status']})",
                f"{r['fista']['time'] / r['newton']['time']:.1f}x",
                f"{(r['newton']['objective'] - r['fista']['objective']) / r['fista']['objective']:+.1e}",
            ]
            for r in rows
        ],
        title=f"token heads, N={n}, s=16, d=8, c=4, cross-entropy, tol 1e-8",
    )
    return rows


def _head_estimator(bh: Any, spec: Any, gates: torch.Tensor | None, beta: float, solver: str) -> Any:
    kw: dict[str, Any] = {"beta": beta, "tol": 1e-8, "max_iter": 200_000, "solver": solver, "max_time": 120.0}
    if gates is not None:
        kw["gates"] = gates.numpy()
    return bh.make_estimator(spec.form, **kw)


def part_pyscnn(args: Any) -> list[dict]:
    try:
        import bench_pyscnn as bp
    except (ImportError, SystemExit) as exc:  # pyscnn missing: BENCHMARKS.md "Installing pyscnn without touching torch"
        print(f"pyscnn part skipped: {exc}")
        return []
    rows = []
    runs = [(500, 1e-6)] if args.quick else [(2000, 1e-6), (2000, 1e-10), (10_000, 1e-6)]
    solvers = {
        "newton": lambda: SemismoothNewton(tol=args.tol),
        "auto": lambda: AutoSolver(tol=args.tol, max_iter=100_000),
        "fista": lambda: FISTA(tol=args.tol, max_iter=100_000, max_time=300.0),
    }
    for n, ptol in runs:
        x, y = planted_regression(n, 50, args.seed)
        gates = distinct_gates(x, gaussian_gates(50, 500, args.seed))
        beta = 1e-2 * beta_max_np(x, y, gates)  # bench_pyscnn.py's problem (λ = β)
        theirs = bp.run_pyscnn(x, y, gates, beta, "float64", ptol, 10_000)
        target = theirs["objective_ours_fn"]
        masks = torch.tensor((x @ gates >= 0).astype(np.float64))
        row: dict[str, Any] = {"n": n, "pyscnn_tol": ptol, "pyscnn_loop_s": theirs["wall_loop"]}
        row["pyscnn_objective"] = target
        for name, make in solvers.items():
            t0 = time.perf_counter()
            op = GatedMLPOperator(torch.tensor(x), masks, 1)
            prob = CompositeProblem(SquaredLoss(torch.tensor(y[:, None])), op, GroupL2(axes=(1, 2)), beta)
            hit: dict[str, float] = {}

            def cb(_s: Any, cert: Any, t0: float = t0, target: float = target, hit: dict = hit) -> None:
                if "t" not in hit and cert.primal <= target:
                    hit["t"] = time.perf_counter() - t0

            res = make().run(prob, callback=cb)
            row[name] = {
                "to_their_objective_s": hit.get("t", float("nan")),
                "certified_s": time.perf_counter() - t0,
                "objective": res.objective,
                "rel_gap": res.certificate.rel_gap,
                "status": res.status,
            }
        rows.append(row)
        print(
            f"N={n} pyscnn tol {ptol:g}: pyscnn {theirs['wall_loop']:.2f}s, "
            + ", ".join(f"{k} {row[k]['to_their_objective_s']:.2f}s" for k in solvers)
        )
    print_table(
        ["N", "pyscnn tol", "pyscnn loop s"]
        + [f"{k} s to pyscnn's objective (ratio)" for k in solvers]
        + ["Newton certified (gap)"],
        [
            [r["n"], f"{r['pyscnn_tol']:g}", f"{r['pyscnn_loop_s']:.2f}"]
            + [
                f"{r[k]['to_their_objective_s']:.2f} ({r[k]['to_their_objective_s'] / r['pyscnn_loop_s']:.2f})"
                for k in solvers
            ]
            + [f"{r['newton']['certified_s']:.2f} s ({r['newton']['rel_gap']:.1e})"]
            for r in rows
        ],
        title="pyscnn R-FISTA vs ours, d=50, 500 gates, float64, β = 1e-2·β_max",
    )
    return rows


def part_fashion(args: Any) -> list[dict]:
    from attnduality.convex import NuclearNormClassifier
    from attnduality.data import load_fashion_mnist

    ds = load_fashion_mnist()
    n = 500 if args.quick else 2000
    x = ds.X_train[:n].reshape(n, 7, 4, 7, 4).mean((2, 4)).reshape(n, 49) / 255.0
    x = x / np.sqrt((x**2).mean(0))
    y = ds.y_train[:n]
    rows = []
    for width in (49, 16):
        xw = x[:, :width]
        bmax = NuclearNormClassifier(beta=1.0).beta_max(xw, y)
        for frac in (1e-2, 3e-3, 1e-3):
            for tol in (1e-4, 1e-6):
                est = NuclearNormClassifier(beta=frac * bmax, tol=tol, solver="newton")
                t0 = time.perf_counter()
                est.fit(xw, y)
                row = {"channels": width, "frac": frac, "tol": tol, "time": time.perf_counter() - t0}
                row.update(n_iter=int(est.n_iter_), status=est.status_, objective=est.objective_)
                rows.append(row)
                print(f"{width} channels, {frac:g}·β_max, tol {tol:g}: {row['n_iter']} it, {row['time']:.2f}s")
    print_table(
        ["channels", "β/β_max", "tol", "Newton iterations", "s", "objective"],
        [[r["channels"], f"{r['frac']:g}", f"{r['tol']:g}", r["n_iter"], f"{r['time']:.2f}", f"{r['objective']:.9g}"]
         for r in rows],
        title=f"nuclear-norm logistic on pooled, RMS-normalised Fashion-MNIST pixels, N={n}",
    )  # fmt: skip
    return rows


def main() -> None:
    p = base_parser(__doc__ or "")
    p.add_argument("--parts", nargs="+", default=["family", "quickstart", "heads", "pyscnn", "fashion"])
    p.add_argument("--beta-fracs", type=float, nargs="+", default=[3e-4, 1e-3, 1e-2, 1e-1])
    p.add_argument("--tol", type=float, default=1e-6)
    p.add_argument("--skip-peers", action="store_true", help="family part: ours only")
    p.add_argument("--repeats", type=int, default=3, help="family and quickstart parts: timings of ours (median)")
    p.add_argument("--peers", nargs="+", default=["clarabel", "skglm", "celer"], help="family part: which peers to run")
    args = p.parse_args()
    set_threads(args.threads)
    out: dict[str, Any] = {"machine": machine_info(), "args": vars(args)}
    parts = {"family": part_family, "quickstart": part_quickstart, "heads": part_heads, "pyscnn": part_pyscnn,
             "fashion": part_fashion}  # fmt: skip
    for name in args.parts:
        out[name] = parts[name](args)
    write_json(out_name(NAME, args.quick), out)


if __name__ == "__main__":
    main()
