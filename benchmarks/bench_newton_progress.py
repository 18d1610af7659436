"""When the Newton solver tightens SSNAL's tolerance: "the gap did not fall" against "neither the gap nor the
objective fell by a useful amount" (BENCHMARKS.md §7).

The semismooth Newton solver tightens its inner (SSNAL) tolerance tenfold after an outer step without progress. The
old rule counted any lower gap as progress; near a solution of the linear Mixer on ViT tokens the objective was flat
and the gap fell by a few percent per step (the multiplier, the dual candidate that lets the gap follow the
objective, was no more accurate than the loose inner solve), so the rule did not fire for several steps. The new rule
(``newton._progress``) asks more below a relative gap of 1e-2: a step must lower the gap and either halve it or lower
the objective by a tenth of the last gap. Both rules run in one process on:

* ``mixer``: the linear Mixer head of the transfer experiment (Fashion-MNIST through the frozen ViT pre-trained on
  MNIST, 49 tokens pooled to 16 channels and RMS-scaled as the experiment does unless ``--no-rms``, first ``--n``
  training images),
  β = 0.003·β_max (the β validation chose at 20,000 images), tol 1e-4 and 1e-6.
* ``quickstart``: the quickstart program (digits, 50 gates, cross-entropy, block nuclear norm, β = 1e-2, tol 1e-6).
* ``heads``: the token heads of ``bench_newton.py --parts heads`` (§5 sizes, tol 1e-8) at 0.1 and 0.01·β_max.

Reported: outer steps, operator products (deterministic) and seconds (load-dependent), the gap per step.

    python benchmarks/bench_newton_progress.py [--parts mixer quickstart heads] [--threads 1] [--n 4000] [--quick]
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from _common import base_parser, machine_info, out_name, print_table, set_threads, write_json
from attnduality.convex import CompositeProblem, ConvexMLPClassifier, CrossEntropyLoss, NuclearNorm, beta_max
from attnduality.convex.operators.mixer import LinearMixerOperator
from attnduality.convex.solvers import newton as newton_module

NAME = "bench_newton_progress"
RULES = {"gap fell (old)": (1.0, math.inf), "near a solution: gap halved or objective fell (new)": (0.5, 0.1)}


def _with_rule(rule: str, fn: Callable[[], dict]) -> dict:
    saved = newton_module._PROGRESS_GAP, newton_module._PROGRESS_OBJECTIVE
    newton_module._PROGRESS_GAP, newton_module._PROGRESS_OBJECTIVE = RULES[rule]
    try:
        return fn()
    finally:
        newton_module._PROGRESS_GAP, newton_module._PROGRESS_OBJECTIVE = saved


def _solve(problem: CompositeProblem, tol: float) -> dict:
    gaps: list[float] = []
    seen: dict[str, Any] = {}

    def cb(state: Any, cert: Any) -> None:
        gaps.append(cert.rel_gap)
        seen["state"] = state

    t0 = time.perf_counter()
    res = newton_module.SemismoothNewton(tol=tol).run(problem, callback=cb)
    return {
        "seconds": time.perf_counter() - t0,
        "steps": res.n_iter,
        "status": res.status,
        "objective": res.objective,
        "rel_gap": res.certificate.rel_gap,
        "products": seen["state"].n_products + seen["state"].n_tangent,
        "gaps": gaps,
    }


def part_mixer(args: Any) -> list[dict]:
    from attnduality.backbones import PretrainConfig, ViTConfig, fashion_mnist_vit_features, pretrain_vit_mnist
    from attnduality.experiments.transfer.config import TransferConfig

    cfg = TransferConfig()
    vit_cfg = ViTConfig(patch_size=cfg.vit_patch_size, dim=cfg.vit_dim, depth=cfg.vit_depth, heads=cfg.vit_heads)
    pre = PretrainConfig(seed=cfg.vit_seed, epochs=cfg.vit_epochs, n_train=cfg.vit_pretrain_n, vit=vit_cfg)
    feats = fashion_mnist_vit_features(pretrain_vit_mnist(pre), "train", n=args.n, pool_dim=16)
    x, mask = np.asarray(feats.X, dtype=np.float64), np.asarray(feats.mask)
    if not args.no_rms:
        rms = np.sqrt((x[mask] ** 2).mean(axis=0))
        x = x / np.where(rms > 0, rms, 1.0)
    problem = CompositeProblem(
        CrossEntropyLoss(torch.as_tensor(np.asarray(feats.y))),
        LinearMixerOperator(torch.as_tensor(x), 10),
        NuclearNorm(),
        1.0,
    )
    problem = problem.with_beta(0.003 * float(beta_max(problem)))
    rows = []
    for tol in (1e-4, 1e-6):
        for rule in RULES:
            label = f"linear Mixer, N={args.n}{', raw tokens' if args.no_rms else ''}, tol {tol:g}"
            rows.append({"problem": label, "rule": rule,
                         **_with_rule(rule, lambda tol=tol: _solve(problem, tol))})  # fmt: skip
            print(rows[-1]["problem"], rule, rows[-1]["steps"], rows[-1]["products"], flush=True)
    return rows


def part_quickstart(args: Any) -> list[dict]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_tr, _, y_tr, _ = train_test_split(digits.data / 16.0, digits.target, test_size=0.25, random_state=0)
    est = ConvexMLPClassifier(n_gates=50, beta=1e-2, tol=1e-6, random_state=0)
    captured = {"problem": _captured_problem(est, x_tr, y_tr)}
    return [
        {"problem": "quickstart program", "rule": rule, **_with_rule(rule, lambda: _solve(captured["problem"], 1e-6))}
        for rule in RULES
    ]


def _captured_problem(est: Any, x: Any, y: Any) -> CompositeProblem:
    """The convex program an estimator would solve on ``(x, y)`` (one FISTA iteration builds it)."""
    captured: dict[str, CompositeProblem] = {}
    solve = est._solve

    def grab(loss: Any, op: Any, pen: Any, z0: Any = None, callback: Any = None) -> Any:
        captured["problem"] = CompositeProblem(loss, op, pen, float(est.beta))
        return solve(loss, op, pen, z0, callback)

    est._solve = grab
    est.set_params(solver="fista", max_iter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(x, y)
    return captured["problem"]


def part_heads(args: Any) -> list[dict]:
    from bench_newton import head_cases

    rows = []
    for key, frac, make, x, y in head_cases(args):
        problem = _captured_problem(make("fista"), x, y)
        for rule in RULES:
            rows.append({"problem": f"{key} {frac:g}·β_max", "rule": rule,
                         **_with_rule(rule, lambda problem=problem: _solve(problem, 1e-8))})  # fmt: skip
    return rows


def main() -> None:
    p = base_parser(__doc__ or "")
    p.add_argument("--parts", nargs="+", default=["mixer", "quickstart", "heads"])
    p.add_argument("--n", type=int, default=4000, help="mixer part: training images")
    p.add_argument("--no-rms", action="store_true", help="mixer part: the ViT tokens as they are (no RMS scaling)")
    args = p.parse_args()
    set_threads(args.threads)
    if args.quick:
        args.n = min(args.n, 1000)
    out: dict[str, Any] = {"machine": machine_info(), "args": vars(args)}
    parts = {"mixer": part_mixer, "quickstart": part_quickstart, "heads": part_heads}
    rows = []
    for name in args.parts:
        out[name] = parts[name](args)
        rows += out[name]
    print_table(
        ["problem", "rule", "outer steps", "operator products", "s", "objective", "rel. gap", "gap per step"],
        [
            [
                r["problem"],
                r["rule"],
                r["steps"],
                r["products"],
                f"{r['seconds']:.1f}",
                f"{r['objective']:.10f}",
                f"{r['rel_gap']:.1e}",
                " ".join(f"{g:.1e}" for g in r["gaps"]),
            ]
            for r in rows
        ],
        title="Newton's inner-tolerance rule: old vs new",
    )
    write_json(out_name(NAME, args.quick), out)


if __name__ == "__main__":
    main()
