"""The transfer experiment's certified refit: cold, or warm-started from the validation path's solution
(BENCHMARKS.md §9).

After β selection the experiment refits each head on the whole training set (fit + validation split) at the selected
β, to ``tol``. The validation path already holds a solution of almost the same program (the same β, 80% of the
samples, certified to ``val_tol``). This runs the experiment once (validation paths, whose checkpoints are kept,
and the cold refit), then only the refits of the two warm variants, from the same path:

* ``cold``: from zero with ``solver="auto"`` (300 FISTA iterations, then Newton);
* ``warm, auto``: from the path's solution with ``solver="auto"``;
* ``warm, newton``: from the path's solution with Newton at once.

Reported per head and variant: refit seconds (load-dependent), FISTA iterations + Newton steps, certified gap, and
the objective (all variants are certified to the same tolerance, so objectives agree within it).

    python benchmarks/bench_transfer_refit.py [--n 4000] [--heads mlp mixer_linear ...] [--threads 1] [--quick]
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from _common import base_parser, machine_info, out_name, print_table, set_threads, write_json
from attnduality.experiments import run_experiment, storage
from attnduality.experiments import transfer as transfer_module
from attnduality.experiments.checkpoints import SolveCheckpoint
from attnduality.experiments.transfer import heads as heads_module

NAME = "bench_transfer_refit"
VARIANTS = {"cold": (False, None), "warm, auto": (True, None), "warm, newton": (True, "newton")}


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=4000, help="Fashion-MNIST training images")
    p.add_argument("--heads", nargs="+", default=["mlp", "attn_linear", "mixer_linear", "fno_gated"])
    p.add_argument("--out", type=Path, default=None, help="run folder (default: a temporary one)")
    args = p.parse_args()
    set_threads(args.threads)
    if args.quick:
        args.n, args.heads = min(args.n, 1000), args.heads[:2]
    over: dict[str, Any] = {
        "datasets": ("fashion_mnist",),
        "heads": tuple(args.heads),
        "n_train": args.n,
        "pool_dim": 16,
        "gates_fno": 5,
        "adam_steps": 0,
        "full_width_reference": False,
    }
    root = args.out or Path(tempfile.mkdtemp(prefix="bench_transfer_refit-"))
    run = root / "run"
    solve_dir = run / "checkpoints" / "solve" / "fashion_mnist"
    steps_dir = run / "checkpoints" / "steps" / "fashion_mnist"
    kept = root / "val-path-checkpoints"

    def refit_record(head: str) -> dict[str, Any]:
        return storage.torch_load(steps_dir / head / "fit.pt")["value"]

    def keep_path(self: SolveCheckpoint) -> None:  # the first run's paths' solutions, for the warm variants
        if self.path.name == "val-path.pt" and self.path.exists():
            (kept / self.path.parent.name).mkdir(parents=True, exist_ok=True)
            shutil.copy2(self.path, kept / self.path.parent.name / self.path.name)
        real_clear(self)

    real_clear, real_path_solution, real_phase = (
        SolveCheckpoint.clear,
        transfer_module.path_solution,
        heads_module._WARM_PHASE,
    )
    rows: list[dict[str, Any]] = []
    for variant, (warm, phase) in VARIANTS.items():
        if warm:
            for head in args.heads:
                (steps_dir / head / "fit.pt").unlink()
                shutil.copy2(kept / head / "val-path.pt", solve_dir / head / "val-path.pt")
        else:
            SolveCheckpoint.clear = keep_path  # type: ignore[method-assign]
            transfer_module.path_solution = lambda ckpt, frac: None
        heads_module._WARM_PHASE = phase
        try:
            run_experiment("transfer", out=run, overrides=over, progress=False, seed=args.seed)
        finally:
            SolveCheckpoint.clear = real_clear  # type: ignore[method-assign]
            transfer_module.path_solution, heads_module._WARM_PHASE = real_path_solution, real_phase
        for head in args.heads:
            fit = refit_record(head)
            rows.append(
                {
                    "head": head,
                    "variant": variant,
                    "seconds": fit["solve_seconds"],
                    "n_iter": fit["n_iter"],
                    "status": fit["status"],
                    "rel_gap": fit["rel_gap"],
                    "objective": fit["objective"],
                    "warm_started": fit["warm_started"],
                    "test_acc": fit["test_acc"],
                }
            )
            print(rows[-1], flush=True)
    print_table(
        ["head", "variant", "refit s", "iterations", "status", "rel. gap", "objective", "test acc."],
        [
            [
                r["head"],
                r["variant"],
                f"{r['seconds']:.1f}",
                r["n_iter"],
                r["status"],
                f"{r['rel_gap']:.1e}",
                f"{r['objective']:.10f}",
                f"{r['test_acc']:.4f}",
            ]
            for r in rows
        ],
        title=f"transfer refit on Fashion-MNIST ViT tokens, n_train = {args.n}: cold vs warm-started",
    )
    write_json(
        out_name(NAME, args.quick), {"machine": machine_info(), "args": {**vars(args), "out": str(root)}, "rows": rows}
    )


if __name__ == "__main__":
    main()
