"""Convex token heads (our estimators, FISTA) vs full-batch Adam on their non-convex twins, at the same β.

Heads (Sahiner et al. 2022 §3–§4): gated-ReLU and linear self-attention, gated-ReLU MLP-Mixer, gated-ReLU FNO and
B-FNO (``blocks=2``), on synthetic tokens ``X`` (N, s = 16 on a 4×4 grid, d) whose labels come from a planted random
twin of the same head (its own random gates and weights; labels ``argmax(logits + Gumbel noise)``). Every fit uses the
classifier estimators (softmax cross-entropy averaged over samples), float64, one thread, with ``β`` a fraction of
``β_max`` (the smallest β at which ``Z = 0`` is optimal, computed from the operator at the same gates).

For each head:

* **convex**: ``Convex*Classifier(kind=…, gates=…, beta=β, tol=1e-8)``. Its curve is the estimator's ``history_``
  (objective at every certificate check, i.e. every 10 FISTA iterations), shifted by the setup time (input checks,
  gate deduplication and the operator's cached features: the fit's wall time minus ``solve_time_``), so times are
  measured from the call to ``fit``. The certified lower bound is ``certificate_.dual``.
* **Adam**: the twin of :mod:`attnduality.nn.token_twins` with the same (deduplicated) gates and scale and
  ``h`` heads per gate, ``h`` = the largest rank of a block of the convex solution (``to_module()``'s head count;
  ``--extra-heads`` adds more), from a random init scaled so that the initial logits have unit standard deviation.
  Its objective is the estimator's: ``CrossEntropyLoss.value(module(X)) + β · module.weight_decay()``; full batch,
  one run per learning rate, each for ``--adam-seconds`` (objective recorded at every step).

Reported per head: Adam's best objective over all learning rates; the target ``T = max(Adam's best, our final
objective)`` (Adam may end below our final primal, but never more than the certified gap, 1e-8 relative, below it);
the time Adam needed to reach ``T`` (the earliest learning rate to get there; every step is recorded); the time the
convex solver needed to reach ``T`` (first certificate check at or below it, from the call to ``fit``); their ratio
(target ≤ 0.2); the certified optimum (final primal and dual); and a check that no Adam iterate ever went below the
certified lower bound (that would be a bug and is printed loudly).

Curves (log suboptimality vs seconds, one panel per head) go to ``benchmarks/out/heads_adam.png``, the JSON to
``benchmarks/out/bench_heads_adam.json``; ``--quick`` and ``--heads`` (a subset) add suffixes to both names so they
never overwrite the full results.

    python benchmarks/bench_heads_adam.py [--quick] [--seed 0] [--threads 1] [--heads attn_gated mixer_gated …]
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from _common import (
    OUT_DIR,
    base_parser,
    machine_info,
    out_name,
    print_table,
    set_threads,
    write_json,
)
from attnduality.convex import Formulation, get_formulation, make_estimator
from attnduality.convex.losses import CrossEntropyLoss
from attnduality.nn.token_twins import (
    GatedAttentionHead,
    GatedFNOHead,
    GatedMixerHead,
    LinearAttentionHead,
)

NAME = "bench_heads_adam"
DTYPE = torch.float64
GRID = (4, 4)


@dataclass(frozen=True)
class HeadSpec:
    """One benchmarked head: its family, kind, number of gates (per group) and B-FNO blocks."""

    key: str
    label: str
    family: str  # "attention" | "mixer" | "fno"
    kind: str  # "gated_relu" | "linear"
    n_gates: int = 0
    blocks: int = 1

    @property
    def form(self) -> Formulation:
        """The head's formulation (with B and the 4×4 token grid where it takes them)."""
        taken = get_formulation(self.family, kind=self.kind).options()
        opts = {k: v for k, v in (("blocks", self.blocks), ("grid", GRID)) if k in taken}
        return get_formulation(self.family, kind=self.kind, **opts)


HEADS = {
    h.key: h
    for h in (
        HeadSpec("attn_gated", "gated-ReLU self-attention", "attention", "gated_relu", n_gates=5),
        HeadSpec("attn_linear", "linear self-attention", "attention", "linear"),
        HeadSpec("mixer_gated", "gated-ReLU MLP-Mixer", "mixer", "gated_relu", n_gates=8),
        HeadSpec("fno_gated", "gated-ReLU FNO", "fno", "gated_relu", n_gates=16),
        HeadSpec("bfno_gated", "gated-ReLU B-FNO (B=2)", "fno", "gated_relu", n_gates=16, blocks=2),
    )
}


# ----------------------------------------------------------------------------------------------------------------
# gates, operators, twins
# ----------------------------------------------------------------------------------------------------------------
def sample_gates(spec: HeadSpec, s: int, d: int, n_gates: int, seed: int) -> torch.Tensor | None:
    form = spec.form
    return form.sample_gates(s, d, n_gates, seed).to(DTYPE) if form.gated else None


def beta_max(spec: HeadSpec, x: torch.Tensor, labels: torch.Tensor, gates: torch.Tensor | None, c: int) -> float:
    """``R°(A*∇f(0))``: the smallest β at which ``Z = 0`` is optimal, for this head, gates and loss."""
    return spec.form.beta_max(CrossEntropyLoss(labels), x, gates, c)


def make_twin(spec: HeadSpec, gates: torch.Tensor | None, h: int, s: int, d: int, c: int, gen: torch.Generator):
    """The non-convex twin with ``h`` heads (per gate and group) and standard Gaussian weights (rescaled later)."""

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=DTYPE)

    if spec.family == "attention":
        if gates is None:
            return LinearAttentionHead(randn(h, d, d), randn(h, d, c))
        m = gates.shape[0]
        return GatedAttentionHead(gates, randn(m, h, d, d), randn(m, h, d, c))
    if spec.family == "mixer":
        m = gates.shape[0]
        return GatedMixerHead(gates, randn(m, h, s, s), randn(m, h, d, c))
    bb, m = gates.shape[0], gates.shape[1]
    return GatedFNOHead(gates, randn(bb, m, h, s, d // bb), randn(bb, m, h, c // bb), grid=GRID)


def calibrate(module: torch.nn.Module, x: torch.Tensor, target_std: float = 1.0) -> None:
    """Rescale both layers by the same factor so that the logits on ``x`` have standard deviation ``target_std``
    (the head is bilinear in (w1, w2), so scaling both by ``a`` scales the output by ``a²``)."""
    with torch.no_grad():
        std = float(module(x).std())
        a = math.sqrt(target_std / std) if std > 0 else 1.0
        module.w1.mul_(a)
        module.w2.mul_(a)


def planted_data(spec: HeadSpec, n: int, s: int, d: int, c: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Tokens ``X`` (n, s, d) with i.i.d. N(0, 1/d) entries and labels from a planted random twin of the same head
    (3 heads per gate, gates and weights from their own streams): ``argmax(κ·standardised logits + Gumbel)``."""
    rng = np.random.default_rng([seed, 7])
    x = rng.standard_normal((n, s, d)) / math.sqrt(d)
    xt = torch.as_tensor(x, dtype=DTYPE)
    gates = sample_gates(spec, s, d, max(spec.n_gates // 2, 2), seed + 1000)
    gen = torch.Generator().manual_seed(seed + 2000)
    twin = make_twin(spec, gates, 3, s, d, c, gen)
    with torch.no_grad():
        logits = twin(xt).numpy()
    logits = (logits - logits.mean(0)) / logits.std(0)
    y = np.argmax(3.0 * logits + rng.gumbel(size=logits.shape), axis=1)
    return x, y


def twin_objective(module: torch.nn.Module, loss: CrossEntropyLoss, x: torch.Tensor, beta: float) -> torch.Tensor:
    """The estimator's objective for the twin: mean cross-entropy + β · weight_decay()."""
    return loss.value(module(x)) + beta * module.weight_decay()


# ----------------------------------------------------------------------------------------------------------------
# runs
# ----------------------------------------------------------------------------------------------------------------
def fit_convex(spec: HeadSpec, x: np.ndarray, y: np.ndarray, gates: torch.Tensor | None, beta: float) -> dict:
    kw: dict[str, Any] = {"beta": beta, "tol": 1e-8, "max_iter": 200_000, "dtype": "float64"}
    if gates is not None:
        kw["gates"] = gates.numpy()
    est = make_estimator(spec.form, **kw)
    t0, c0 = time.perf_counter(), time.process_time()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit(x, y)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    setup = wall - est.solve_time_
    hist = est.history_
    return {
        "est": est,
        "status": est.status_,
        "n_iter": est.n_iter_,
        "wall": wall,
        "cpu": cpu,
        "setup": setup,
        "objective": est.objective_,
        "dual": est.certificate_.dual,
        "rel_gap": est.certificate_.rel_gap,
        "warnings": [str(w.message) for w in caught],
        "trace": {
            "n_iter": list(hist.n_iter),
            "wall": [setup + t for t in hist.time],
            "objective": list(hist.objective),
            "rel_gap": list(hist.rel_gap),
        },
    }


def first_reaching(trace: dict, target: float) -> tuple[float, int] | None:
    for t, k, obj in zip(trace["wall"], trace["n_iter"], trace["objective"], strict=True):
        if obj <= target:
            return t, k
    return None


def compare(conv: dict, runs: list[dict], target: float) -> dict:
    """Time to ``target``: Adam's (the earliest of ``runs``; every step is recorded) and ours (first certificate
    check at or below ``max(target, our final objective)``, from the call to ``fit``), and their ratio."""
    adam_time, lr = math.inf, None
    for r in runs:
        hit = next((t for t, v in zip(r["times"], r["objectives"], strict=True) if v <= target), None)
        if hit is not None and hit < adam_time:
            adam_time, lr = hit, r["lr"]
    ours = first_reaching(conv["trace"], max(target, conv["objective"]))
    conv_time, conv_iter = ours if ours is not None else (math.nan, -1)
    ratio = conv_time / adam_time if lr is not None and adam_time > 0 else math.nan
    return {"adam_lr": lr, "adam_time": adam_time if lr is not None else math.nan, "convex_time": conv_time,
            "convex_iter": conv_iter, "ratio": ratio}  # fmt: skip


def run_adam(module0: torch.nn.Module, loss: CrossEntropyLoss, x: torch.Tensor, beta: float, lr: float,
             seconds: float, max_steps: int) -> dict:  # fmt: skip
    """Full-batch Adam on the twin's objective from a copy of ``module0``; objective recorded at every step."""
    module = copy.deepcopy(module0)
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    times: list[float] = []
    objs: list[float] = []
    t0 = time.perf_counter()
    for _ in range(max_steps):
        opt.zero_grad(set_to_none=True)
        obj = twin_objective(module, loss, x, beta)
        obj.backward()
        opt.step()
        objs.append(obj.item())  # objective at the parameters before this step
        times.append(time.perf_counter() - t0)
        if times[-1] >= seconds or not math.isfinite(objs[-1]):
            break
    with torch.no_grad():
        objs.append(float(twin_objective(module, loss, x, beta)))
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
        "min_objective": float(np.nanmin(arr)) if np.isfinite(arr).any() else math.nan,
        "times": times,
        "objectives": objs,
    }


def bench_head(spec: HeadSpec, args: Any) -> dict:
    s, d, c, n = args.s, args.d, args.c, args.n
    x, y = planted_data(spec, n, s, d, c, args.seed)
    xt = torch.as_tensor(x, dtype=DTYPE)
    labels = torch.as_tensor(y)
    n_gates = max(2, round(spec.n_gates * args.gate_mult)) if spec.kind != "linear" else 0
    gates = sample_gates(spec, s, d, n_gates, args.seed)
    bmax = beta_max(spec, xt, labels, gates, c)
    beta = args.beta_frac * bmax
    print(f"\n[{spec.key}] N={n} s={s} d={d} c={c} gates={n_gates} β={args.beta_frac:g}·β_max={beta:.4g}", flush=True)

    # convex: best of --convex-repeats fits (same data and gates; the fastest run's curve is kept)
    fits = [fit_convex(spec, x, y, gates, beta) for _ in range(args.convex_repeats)]
    conv = min(fits, key=lambda f: f["wall"])
    est = conv.pop("est")
    for f in fits:
        f.pop("est", None)
    twin_opt = est.to_module()
    loss = CrossEntropyLoss(labels)
    with torch.no_grad():
        twin_opt_obj = float(twin_objective(twin_opt, loss, xt, beta))
    heads_per_gate = int(twin_opt.w1.shape[-3])  # w1 is (…, h, ·, ·) for every twin
    kept_gates = 0 if est.gates_ is None else int(est.gates_.shape[1 if spec.family == "fno" else 0])
    z = torch.as_tensor(est.coef_)
    blocks = z.reshape(-1, *z.shape[-2:])
    sv = torch.linalg.svdvals(blocks)
    ranks = [int((v > 1e-10 * max(float(sv.max()), 1e-300)).sum()) for v in sv]
    total_rank = int(sum(ranks))
    print(
        f"  convex: {conv['status']} in {conv['wall']:.3g} s ({conv['n_iter']} it, setup {conv['setup']:.3g} s), "
        f"objective {conv['objective']:.10g}, dual {conv['dual']:.10g}, rel gap {conv['rel_gap']:.1e}, "
        f"{kept_gates} distinct gates, active blocks {sum(r > 0 for r in ranks)}, total rank {total_rank}, "
        f"max block rank {heads_per_gate}; twin objective {twin_opt_obj:.10g}",
        flush=True,
    )

    # Adam on the twin: same gates (deduplicated, as the estimator keeps them), same scale, same β
    h = max(1, heads_per_gate) + args.extra_heads
    g_twin = None if est.gates_ is None else torch.as_tensor(est.gates_, dtype=DTYPE)
    gen = torch.Generator().manual_seed(args.seed + 3000)
    module0 = make_twin(spec, g_twin, h, s, d, c, gen)
    calibrate(module0, xt)
    n_params = sum(p.numel() for p in module0.parameters())
    runs = []
    for lr in args.lrs:
        r = run_adam(module0, loss, xt, beta, lr, args.adam_seconds, args.adam_steps)
        print(f"  Adam lr={lr:g}: {r['steps']} steps, best {r['best']:.10g} at {r['time_to_best']:.3g} s", flush=True)
        runs.append(r)

    dual, p_final = conv["dual"], conv["objective"]
    below = [r for r in runs if r["min_objective"] < dual - 1e-12 * abs(dual)]
    if below:
        bar = "!" * 100
        print(f"{bar}\nBUG: Adam went below the certified lower bound {dual!r} on {spec.key}: "
              f"{[(r['lr'], r['min_objective']) for r in below]}\n{bar}", flush=True)  # fmt: skip
    for r in runs:
        r["rel_subopt_best"] = (r["best"] - p_final) / abs(p_final)
        r.update(compare(conv, [r], r["best"]))
    # The target: Adam's best objective over all learning rates, or our certified final objective if Adam went lower
    # (then both are within the certified gap, 1e-8 relative, of the optimum, and neither curve is cut short).
    adam_best = min(r["best"] for r in runs)
    target = max(adam_best, p_final)
    cmp = compare(conv, runs, target)
    best_lr = cmp["adam_lr"] if cmp["adam_lr"] is not None else min(runs, key=lambda r: r["best"])["lr"]
    return {
        "key": spec.key,
        "label": spec.label,
        "family": spec.family,
        "kind": spec.kind,
        "blocks": spec.blocks,
        "n": n,
        "s": s,
        "d": d,
        "c": c,
        "n_gates_sampled": n_gates,
        "n_gates_kept": kept_gates,
        "beta_max": bmax,
        "beta_frac": args.beta_frac,
        "beta": beta,
        "class_counts": np.bincount(y, minlength=c).tolist(),
        "block_ranks": ranks,
        "total_rank": total_rank,
        "max_block_rank": heads_per_gate,
        "twin_heads_per_gate": h,
        "twin_params": n_params,
        "twin_objective_at_convex_solution": twin_opt_obj,
        "convex": conv,
        "convex_all_walls": [f["wall"] for f in fits],
        "adam": runs,
        "best_lr": best_lr,
        "adam_best": adam_best,
        "adam_below_convex_final": adam_best < p_final,
        "target": target,
        "adam_time_to_best": cmp["adam_time"],
        "convex_time_to_adam_best": cmp["convex_time"],
        "convex_iter_to_adam_best": cmp["convex_iter"],
        "ratio": cmp["ratio"],
        "target_met": bool(cmp["ratio"] <= 0.2),
        "below_lower_bound": [(r["lr"], r["min_objective"]) for r in below],
    }


# ----------------------------------------------------------------------------------------------------------------
# output
# ----------------------------------------------------------------------------------------------------------------
def plot(results: list[dict], png: Any) -> None:
    k = len(results)
    cols = min(k, 3)
    rows = math.ceil(k / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.0 * rows), squeeze=False)
    floor = 1e-12
    for ax, res in zip(axes.ravel(), results, strict=False):
        p_ref = min(res["convex"]["objective"], *(r["best"] for r in res["adam"]))

        def subopt(v: Any, p_ref: float = p_ref) -> np.ndarray:
            return np.maximum((np.asarray(v, dtype=float) - p_ref) / abs(p_ref), floor)

        tr = res["convex"]["trace"]
        ax.plot(tr["wall"], subopt(tr["objective"]), "k-", lw=2, label="convex (FISTA)")
        for r in res["adam"]:
            t = np.asarray(r["times"])
            ax.plot(np.maximum(t, 1e-4), subopt(r["objectives"]), lw=1.0, label=f"Adam lr={r['lr']:g}")
        gap_lb = (res["convex"]["objective"] - res["convex"]["dual"]) / abs(p_ref)
        ax.axhline(max((res["adam_best"] - p_ref) / abs(p_ref), floor), color="gray", ls="--", lw=0.8,
                   label="Adam's best")  # fmt: skip
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("seconds (wall)")
        ax.set_ylabel("(objective − p*) / p*")
        ax.set_title(f"{res['label']}\nβ={res['beta_frac']:g}·β_max, ratio {res['ratio']:.3g} (gap {gap_lb:.0e})",
                     fontsize=9)  # fmt: skip
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes.ravel()[k:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)


def _thin(r: dict, k: int = 1500) -> dict:
    step = max(1, len(r["times"]) // k)
    return r | {"times": r["times"][::step], "objectives": r["objectives"][::step]}


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--heads", nargs="+", default=list(HEADS), choices=list(HEADS))
    p.add_argument("--n", type=int, default=400, help="samples")
    p.add_argument("--s", type=int, default=16, help="tokens (a 4×4 grid for the FNO heads)")
    p.add_argument("--d", type=int, default=8, help="features per token")
    p.add_argument("--c", type=int, default=4, help="classes")
    p.add_argument("--beta-frac", type=float, default=0.1, help="β / β_max")
    p.add_argument("--gate-mult", type=float, default=1.0, help="multiplies each head's default number of gates")
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-2, 3e-2, 1e-1, 3e-1, 1.0])
    p.add_argument("--adam-seconds", type=float, default=16.0, help="time budget of each Adam run")
    p.add_argument("--adam-steps", type=int, default=1_000_000, help="step limit of each Adam run")
    p.add_argument("--extra-heads", type=int, default=0, help="twin heads per gate beyond the convex max block rank")
    p.add_argument("--convex-repeats", type=int, default=2, help="convex fits per head (the fastest is reported)")
    args = p.parse_args()
    set_threads(args.threads)
    info = machine_info()  # before the runs: records the load average at the start
    if args.quick:
        args.n, args.adam_seconds, args.gate_mult, args.convex_repeats = 120, 1.5, 0.5, 1
        args.lrs = [1e-2, 1e-1]
    if GRID[0] * GRID[1] != args.s and any(HEADS[k].family == "fno" for k in args.heads):
        p.error(f"the FNO heads use a {GRID[0]}×{GRID[1]} grid: --s must be {GRID[0] * GRID[1]}")

    results = [bench_head(HEADS[k], args) for k in args.heads]

    rows = []
    for res in results:
        cv = res["convex"]
        rows.append(
            [res["label"], f"N={res['n']} s={res['s']} d={res['d']} c={res['c']} m={res['n_gates_kept']}",
             res["beta_frac"], res["total_rank"], res["twin_heads_per_gate"], f"{cv['status']} {cv['wall']:.3g}s",
             cv["objective"], cv["dual"], res["adam_best"], (res["adam_best"] - cv["objective"]) / abs(cv["objective"]),
             res["best_lr"], res["adam_time_to_best"], res["convex_time_to_adam_best"], res["ratio"],
             "yes" if res["target_met"] else "NO", "NO (BUG)" if res["below_lower_bound"] else "yes"]
        )  # fmt: skip
    headers = ["head", "sizes", "β/β_max", "rank", "twin heads/gate", "convex (gap 1e-8)", "p* (primal)",
               "dual bound", "Adam best", "Adam rel. subopt.", "best lr", "Adam s to best",
               "convex s to Adam best", "ratio", "≤ 0.2?", "Adam ≥ dual?"]  # fmt: skip
    title = (
        f"float64, cross-entropy, threads={args.threads}, Adam {args.adam_seconds:g} s per lr "
        f"{args.lrs}, {info['cpu_model']}"
    )
    table = print_table(headers, rows, title)

    per_lr_rows = []
    for res in results:
        for r in res["adam"]:
            per_lr_rows.append(
                [res["key"], r["lr"], r["steps"], r["final"], r["best"], r["rel_subopt_best"], r["adam_time"],
                 r["convex_time"], r["convex_iter"], r["ratio"]]
            )  # fmt: skip
    per_lr = print_table(
        ["head", "lr", "steps", "final", "best", "rel. subopt.", "Adam s to best", "convex s to it", "convex it",
         "ratio"],
        per_lr_rows,
        "every learning rate",
    )  # fmt: skip

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    # a run on a subset of the heads never overwrites the full results
    suffix = "" if args.heads == list(HEADS) else "_" + "-".join(args.heads)
    png = OUT_DIR / f"heads_adam{suffix}{'_quick' if args.quick else ''}.png"
    plot(results, png)
    bugs = [res["key"] for res in results if res["below_lower_bound"]]
    path = write_json(
        out_name(NAME + suffix, args.quick),
        {
            "config": vars(args) | {"grid": GRID, "dtype": "float64", "loss": "cross_entropy"},
            "machine": info,
            "results": [r | {"adam": [_thin(a) for a in r["adam"]]} for r in results],
            "table": table,
            "table_per_lr": per_lr,
            "below_lower_bound": bugs,
            "png": str(png),
        },
    )
    print(f"\nwrote {path} and {png}")
    if bugs:
        print(f"BUG: Adam went below the certified lower bound on {bugs}")


if __name__ == "__main__":
    main()
