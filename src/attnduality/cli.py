"""The ``attnduality`` command line: ``list`` the experiments, ``run`` one."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .experiments import EXPERIMENTS, default_out_dir, run_experiment

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="attnduality", description="Convex attention heads and friends.")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the experiments and the data they use")
    run = sub.add_parser("run", help="run an experiment; writes results.json, report.md and figures")
    run.add_argument("name", choices=sorted(EXPERIMENTS), help="experiment name (see `attnduality list`)")
    run.add_argument("--quick", action="store_true", help="a smaller configuration that runs in about a minute")
    run.add_argument("--seed", type=int, default=0, help="random seed (data split, gates, initialisations)")
    run.add_argument("--out", type=Path, default=None, help="output directory (default runs/NAME-seedS)")
    run.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "list":
        for name, exp in EXPERIMENTS.items():
            print(f"{name:12s} {exp.about} [data: {exp.data}]")
        return 0
    out = args.out or default_out_dir(args.name, args.seed, args.quick)
    run_experiment(args.name, out=out, seed=args.seed, quick=args.quick, device=args.device)
    print(f"wrote {out / 'report.md'}")
    print((out / "report.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
