"""`attnduality run quickstart` end to end, as a user runs it, with another process keeping a core busy (§8).

Each configuration runs the real command in a fresh subprocess (imports included) into a fresh output folder and
reports its wall time, the convex and Adam steps' times (from results.json) and the threads the run used:

* ``auto``: the default (``--threads auto``: as many threads as idle cores when the run starts);
* ``torch default``: ``--threads N`` with N = torch's default thread count (what the runner did before it had a
  thread policy, and what any script that does not set threads gets).

``--busy`` (default 1) is the number of busy-loop processes started first and stopped after; ``--busy 0`` measures
a quiet machine. ``--repeats`` runs each configuration that many times, alternating. Results go to
``benchmarks/out/bench_quickstart_busyB.json``.

    python benchmarks/bench_quickstart.py [--busy 1] [--repeats 1] [--quick] [--configs auto torch-default]
"""

from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from _common import base_parser, machine_info, out_name, print_table, write_json

NAME = "bench_quickstart"


def _spin() -> None:
    while True:
        pass


def _run(threads: str, quick: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "attnduality.cli", "run", "quickstart", "--out", str(out), "--threads", threads]
        cmd += ["--no-report"] + (["--quick"] if quick else [])
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
        res = json.loads((out / "results.json").read_text())
    return {
        "wall": wall,
        "run": res["total_seconds"],
        "convex": res["steps"]["convex"]["seconds"],
        "adam": res["steps"]["adam"]["seconds"],
        "threads": res["threads"],
        "gap": res["metrics"]["convex.relative_gap"],
        "adam_below": res["metrics"]["adam.runs_below_lower_bound"],
        "log_lines": len(proc.stderr.splitlines()),
    }


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--busy", type=int, default=1, help="busy-loop processes running during the measurement")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--configs", nargs="+", default=["auto", "torch-default"], choices=["auto", "torch-default"])
    args = p.parse_args()
    default = str(torch.get_num_threads())
    spinners = [mp.Process(target=_spin, daemon=True) for _ in range(args.busy)]
    for s in spinners:
        s.start()
    rows, records = [], []
    try:
        time.sleep(1.0)
        for rep in range(args.repeats):
            for name in args.configs:
                r = _run("auto" if name == "auto" else default, args.quick)
                records.append({"config": name, "repeat": rep, **r})
                rows.append(
                    [
                        name,
                        rep,
                        r["threads"],
                        f"{r['wall']:.1f}",
                        f"{r['convex']:.1f}",
                        f"{r['adam']:.1f}",
                        f"{r['gap']:.1e}",
                        r["adam_below"],
                        r["log_lines"],
                    ]
                )
                print(f"{name} #{rep}: {r['wall']:.1f} s wall", flush=True)
    finally:
        for s in spinners:
            s.terminate()
    print_table(
        ["config", "repeat", "threads", "wall s", "convex s", "Adam s", "certified gap", "Adam < bound", "log lines"],
        rows,
        title=f"attnduality run quickstart{' --quick' if args.quick else ''}, {args.busy} busy process(es)",
    )
    walls = {c: [r["wall"] for r in records if r["config"] == c] for c in args.configs}
    if len(args.configs) == 2 and all(walls.values()):
        ratio = min(walls["torch-default"]) / min(walls["auto"])
        print(f"torch default / auto (best of {args.repeats}): {ratio:.2f}x")
    name = out_name(f"{NAME}_busy{args.busy}", args.quick)
    write_json(name, {"machine": machine_info(), "busy": args.busy, "records": records})


if __name__ == "__main__":
    main()
