"""Convex solve (our FISTA) vs full-batch Adam on the non-convex gated-ReLU twin, at the same β.

The non-convex model is :class:`attnduality.nn.mlp_twins.GatedReLUMLP` with the same gates as the convex program and a
random initialisation; its objective is ``(1/2N)‖f(X) − y‖² + β · module.weight_decay()`` with
``weight_decay = ½(‖W1‖² + ‖w2‖²)``, whose minimum over the factorisation equals the convex optimum
``min_Z (1/2N)‖Σ_j D_j X Z_j − y‖² + β Σ_j ‖Z_j‖_2``. Adam runs full batch for a fixed time budget at several
learning rates; the best objective any of them reaches is the target. We report the time Adam needed to get there,
the time our FISTA needed to reach the same objective (first certificate check at or below it, every 10
iterations), and their ratio. Both run in float64 (``--dtype``) and single-threaded (``--threads``).

Curves (log suboptimality vs seconds) go to ``benchmarks/out/adam_curves.png`` (``adam_curves_quick.png`` with
``--quick``); the reference optimum is our final objective at a relative duality gap ≤ 1e-8 (or the best value seen,
if lower).

    python benchmarks/bench_adam.py [--quick] [--seed 0] [--threads 1]
"""

from __future__ import annotations

import math
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from _common import (
    DTYPES,
    OUT_DIR,
    GatedProblem,
    base_parser,
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
from attnduality.convex.losses import SquaredLoss
from attnduality.nn.mlp_twins import GatedReLUMLP

NAME = "bench_adam"


def run_adam(
    x: torch.Tensor,
    y: torch.Tensor,
    gates: torch.Tensor,
    beta: float,
    lr: float,
    seconds: float,
    max_steps: int,
    seed: int,
) -> dict:
    """Full-batch Adam on ``loss + β·weight_decay`` from a fixed random init; objective recorded at every step."""
    d, p = gates.shape
    gen = torch.Generator().manual_seed(seed)
    w1 = torch.randn(d, p, generator=gen, dtype=x.dtype) / math.sqrt(d)
    w2 = torch.randn(p, 1, generator=gen, dtype=x.dtype) / math.sqrt(p)
    module = GatedReLUMLP(gates, w1, w2, bias=False)
    loss = SquaredLoss(y)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    times: list[float] = []
    objs: list[float] = []
    t0 = time.perf_counter()
    for _ in range(max_steps):
        opt.zero_grad(set_to_none=True)
        obj = loss.value(module(x)) + beta * module.weight_decay()
        obj.backward()
        opt.step()
        objs.append(obj.item())  # objective at the parameters before this step
        times.append(time.perf_counter() - t0)
        if times[-1] >= seconds or not math.isfinite(objs[-1]):
            break
    with torch.no_grad():
        objs.append(float(loss.value(module(x)) + beta * module.weight_decay()))
    times.append(time.perf_counter() - t0)
    arr = np.asarray(objs)
    k = int(np.nanargmin(arr)) if np.isfinite(arr).any() else len(arr) - 1
    return {
        "lr": lr,
        "steps": len(objs) - 1,
        "time": times[-1],
        "final": objs[-1],
        "best": float(arr[k]),
        "time_to_best": times[k],
        "step_of_best": k,
        "times": times,
        "objectives": objs,
    }


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="samples")
    p.add_argument("--d", type=int, default=50)
    p.add_argument("--gates", type=int, default=200)
    p.add_argument("--beta-frac", type=float, default=1e-2, help="β / β_max")
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3, 1e-2, 3e-2, 1e-1])
    p.add_argument("--adam-seconds", type=float, default=60.0, help="time budget of each Adam run")
    p.add_argument("--adam-steps", type=int, default=200_000, help="step limit of each Adam run")
    p.add_argument("--dtype", default="float64", choices=sorted(DTYPES))
    args = p.parse_args()
    set_threads(args.threads)
    info = machine_info()  # before the runs: records the load average at the start
    if args.quick:
        args.n, args.d, args.gates, args.adam_seconds = 300, 10, 30, 5.0
        args.lrs = [1e-2, 1e-1]
    dtype = DTYPES[args.dtype]

    xn, yn = planted_regression(args.n, args.d, args.seed)
    gates_np = distinct_gates(xn, gaussian_gates(args.d, args.gates, args.seed))
    gp = GatedProblem(xn, yn, gates_np, dtype)
    beta = args.beta_frac * gp.beta_max
    prob = gp.with_beta(beta)

    print("convex (FISTA, gap ≤ 1e-8) …", flush=True)
    result, trace, status = run_fista(prob, tol=1e-8, max_iter=200_000, max_time=300.0)
    ours_final = trace.objective[-1]
    ours_time = trace.wall[-1]

    x = torch.as_tensor(xn, dtype=dtype)
    y = torch.as_tensor(yn.reshape(-1, 1), dtype=dtype)
    g = torch.as_tensor(gates_np, dtype=dtype)
    adam_runs = []
    for lr in args.lrs:
        print(f"Adam lr={lr:g} ({args.adam_seconds:g} s) …", flush=True)
        adam_runs.append(run_adam(x, y, g, beta, lr, args.adam_seconds, args.adam_steps, args.seed))

    p_ref = min(ours_final, *(r["best"] for r in adam_runs))
    best_run = min(adam_runs, key=lambda r: r["best"])
    rows = []
    for r in adam_runs:
        hit = trace.first_reaching(r["best"])
        r["ours_time_to_best"] = hit[1] if hit else float("nan")
        r["ours_iter_to_best"] = hit[0] if hit else -1
        r["ratio_ours_over_adam"] = r["ours_time_to_best"] / r["time_to_best"] if r["time_to_best"] > 0 else math.nan
        rows.append(
            [f"Adam lr={r['lr']:g}" + (" (best)" if r is best_run else ""), r["steps"], r["final"], r["best"],
             (r["best"] - p_ref) / p_ref, r["time_to_best"], r["ours_time_to_best"], r["ours_iter_to_best"],
             r["ratio_ours_over_adam"]]
        )  # fmt: skip
    rows.append(
        [f"ours FISTA ({status}, gap {trace.rel_gap[-1]:.1e})", trace.n_iter[-1], ours_final, ours_final,
         (ours_final - p_ref) / p_ref, ours_time, ours_time, trace.n_iter[-1], float("nan")]
    )  # fmt: skip
    headers = ["method", "steps / iters", "final objective", "best objective", "rel. subopt. of best",
               "s to its best", "ours s to that objective", "ours iters", "ours / Adam time"]  # fmt: skip
    title = (
        f"N={args.n}, d={args.d}, {gates_np.shape[1]} distinct gates (of {args.gates}), β={args.beta_frac:g}·β_max"
        f"={beta:.4g}, {args.dtype}, threads={args.threads}, {info['cpu_model']}"
    )
    table = print_table(headers, rows, title)

    # curves
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    floor = 1e-12

    def subopt(v: np.ndarray) -> np.ndarray:
        return np.maximum((np.asarray(v) - p_ref) / abs(p_ref), floor)

    tw = np.asarray(trace.wall)
    ax.plot(tw, subopt(trace.objective), "k-", lw=2, label="convex, our FISTA")
    for r in adam_runs:
        t = np.asarray(r["times"])
        ax.plot(t, subopt(r["objectives"]), lw=1.2, label=f"Adam lr={r['lr']:g}")
    ax.axhline(max((best_run["best"] - p_ref) / abs(p_ref), floor), color="gray", ls="--", lw=0.8, label="Adam's best")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("seconds (wall, log scale)")
    ax.set_ylabel("(objective − p*) / p*")
    ax.set_title(f"gated ReLU, N={args.n}, d={args.d}, P={gates_np.shape[1]}, β={args.beta_frac:g}·β_max")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = OUT_DIR / ("adam_curves_quick.png" if args.quick else "adam_curves.png")
    fig.savefig(png, dpi=120)
    plt.close(fig)

    def thin(r: dict, k: int = 2000) -> dict:
        step = max(1, len(r["times"]) // k)
        return r | {"times": r["times"][::step], "objectives": r["objectives"][::step]}

    path = write_json(
        out_name(NAME, args.quick),
        {
            "config": vars(args) | {"distinct_gates": int(gates_np.shape[1]), "beta": beta},
            "machine": info,
            "p_ref": p_ref,
            "ours": {"status": status, "final": ours_final, "time": ours_time, "trace": trace.as_dict()},
            "adam": [thin(r) for r in adam_runs],
            "best_lr": best_run["lr"],
            "ratio_ours_over_adam_at_best": best_run["ratio_ours_over_adam"],
            "table": table,
            "png": str(png),
        },
    )
    print(f"\nwrote {path} and {png}")


if __name__ == "__main__":
    main()
