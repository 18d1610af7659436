"""Quickstart: a certified convex gated-ReLU network versus Adam on the same non-convex network.

Data: scikit-learn's bundled 8×8 digits (1,797 images, 10 classes), split 75/25 with the run's seed. The
convex program (Sahiner et al. eq. (8), cross-entropy) is solved by FISTA to a relative duality gap ``tol``;
the twin (same gates, weight decay ``β/2 Σ‖θ‖²``) is trained with full-batch Adam from several seeds. The
report shows that no Adam run ends below the certified convex optimum, and compares test accuracies.

Steps (resumable): ``convex`` (the certified fit), then ``adam-seed<S>`` per Adam run, each checkpointed every
``checkpoint_every`` Adam steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .runner import RunContext, register_experiment, run_experiment

__all__ = ["QuickstartConfig", "run_quickstart"]


@dataclass(frozen=True)
class QuickstartConfig:
    """Configuration of the quickstart experiment."""

    beta: float = 1e-2
    """regularisation β of the averaged objective"""
    n_gates: int = 50
    """sampled gates of the convex program"""
    tol: float = 1e-6
    """certified relative duality gap at which FISTA stops"""
    max_iter: int = 20_000
    adam_steps: int = 1500
    """full-batch Adam steps per seed"""
    adam_seeds: int = 5
    """number of Adam runs"""
    adam_lr: float = 1e-2
    neurons_per_gate: int = 10
    """twin width per gate; must be ≥ the convex blocks' ranks (≤ min(d, c) = 10)"""
    test_size: float = 0.25
    checkpoint_every: int = 500
    """Adam steps between training checkpoints"""

    def __post_init__(self) -> None:
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        for name in ("n_gates", "max_iter", "adam_steps", "adam_seeds", "neurons_per_gate", "checkpoint_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {getattr(self, name)!r}")
        if not 0 < self.tol < 1:
            raise ValueError(f"tol must be in (0, 1), got {self.tol}")
        if not 0 < self.test_size < 1:
            raise ValueError(f"test_size must be in (0, 1), got {self.test_size}")

    @classmethod
    def quick(cls) -> QuickstartConfig:
        return cls(n_gates=20, adam_steps=300, adam_seeds=3, checkpoint_every=100)


def _data(seed: int, test_size: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.data / 16.0
    x_tr, x_te, y_tr, y_te = train_test_split(x, digits.target, test_size=test_size, random_state=seed)
    return x_tr, x_te, y_tr, y_te


def _convex(ctx: RunContext, data: tuple[np.ndarray, ...]) -> dict[str, Any]:
    from ..convex import ConvexMLPClassifier

    cfg: QuickstartConfig = ctx.config
    x_tr, x_te, y_tr, y_te = data
    est = ConvexMLPClassifier(
        n_gates=cfg.n_gates,
        beta=cfg.beta,
        tol=cfg.tol,
        max_iter=cfg.max_iter,
        random_state=ctx.seed,
        device=ctx.device,
    )
    est.fit(x_tr, y_tr)
    h = est.history_
    keep = np.unique(np.linspace(0, len(h.time) - 1, min(len(h.time), 2000)).astype(int))
    return {
        "objective": est.objective_,
        "lower_bound": est.certificate_.dual,
        "relative_gap": est.certificate_.rel_gap,
        "status": est.status_,
        "iterations": est.n_iter_,
        "seconds": est.solve_time_,
        "train_accuracy": float(est.score(x_tr, y_tr)),
        "test_accuracy": float(est.score(x_te, y_te)),
        "neurons": est.to_module().n_neurons,
        "gates": np.asarray(est.gates_),
        "history": {"time": np.asarray(h.time)[keep], "objective": np.asarray(h.objective)[keep]},
    }


def _adam(ctx: RunContext, data: tuple[np.ndarray, ...], gates: np.ndarray, run_seed: int) -> dict[str, Any]:
    """Full-batch Adam on the twin from ``run_seed``, checkpointed every ``checkpoint_every`` steps."""
    import torch

    from ..convex import CrossEntropyLoss, regularized_objective
    from ..nn import GatedReLUMLP

    cfg: QuickstartConfig = ctx.config
    x_tr, x_te, y_tr, y_te = data
    x = torch.as_tensor(x_tr, dtype=torch.float64)
    wide = torch.as_tensor(gates).repeat_interleave(cfg.neurons_per_gate, dim=1)
    gen = torch.Generator().manual_seed(run_seed)
    d, m = wide.shape
    n_classes = int(y_tr.max()) + 1
    w1 = torch.randn(d, m, generator=gen, dtype=x.dtype) / d**0.5
    w2 = torch.randn(m, n_classes, generator=gen, dtype=x.dtype) / m**0.5
    module = GatedReLUMLP(wide, w1, w2)
    loss = CrossEntropyLoss(torch.as_tensor(y_tr))
    opt = torch.optim.Adam(module.parameters(), lr=cfg.adam_lr)
    ck = ctx.checkpoint(f"adam-seed{run_seed}", every=cfg.checkpoint_every)
    start = ck.resume(model=module, optimizer=opt)
    objs: list[float] = list(ck.extra.get("objs", []))
    times: list[float] = list(ck.extra.get("times", []))
    offset = times[-1] if times else 0.0
    t0 = time.perf_counter()
    steps = ctx.progress(
        range(start, cfg.adam_steps), desc=f"Adam seed {run_seed}", initial=start, total=cfg.adam_steps
    )
    for t in steps:
        opt.zero_grad()
        obj = regularized_objective(module, loss, x, cfg.beta)
        obj.backward()
        opt.step()
        objs.append(float(obj.detach()))
        times.append(offset + time.perf_counter() - t0)
        ck.maybe_save(t, model=module, optimizer=opt, extra={"objs": objs, "times": times})
    with torch.no_grad():
        pred_te = module(torch.as_tensor(x_te, dtype=torch.float64)).argmax(1).numpy()
    return {
        "seed": run_seed,
        "final_objective": objs[-1],
        "best_objective": min(objs),
        "seconds": times[-1],
        "test_accuracy": float((pred_te == y_te).mean()),
        "objs": objs,
        "times": times,
    }


@register_experiment(
    "quickstart",
    about="convex gated-ReLU MLP vs Adam on its non-convex twin, certified by a duality gap",
    data="scikit-learn digits (8x8, 1,797 images, 10 classes; bundled with scikit-learn), 75/25 split",
    config=QuickstartConfig,
    title="Quickstart: convex gated-ReLU network vs Adam on its twin",
)
def quickstart(ctx: RunContext) -> None:
    """Fit the certified convex model, train Adam on its twin from several seeds, compare."""
    cfg: QuickstartConfig = ctx.config
    data = _data(ctx.seed, cfg.test_size)
    convex = ctx.step("convex", lambda: _convex(ctx, data))
    for key in (
        "objective",
        "lower_bound",
        "relative_gap",
        "status",
        "iterations",
        "seconds",
        "train_accuracy",
        "test_accuracy",
        "neurons",
    ):
        ctx.metric(f"convex.{key}", convex[key])
    gates = np.asarray(convex["gates"], dtype=np.float64)
    lower = convex["lower_bound"]
    adam = []
    for s in ctx.progress(range(cfg.adam_seeds), desc="Adam runs"):
        run_seed = ctx.seed * 100 + s
        res = ctx.step(f"adam-seed{run_seed}", lambda rs=run_seed: _adam(ctx, data, gates, rs))
        res["below_convex_optimum"] = bool(res["best_objective"] < lower - 1e-12)
        adam.append(res)
    below = sum(r["below_convex_optimum"] for r in adam)
    ctx.metric("adam.best_objective", min(r["best_objective"] for r in adam))
    ctx.metric("adam.mean_test_accuracy", float(np.mean([r["test_accuracy"] for r in adam])))
    ctx.metric("adam.runs_below_lower_bound", below)

    ctx.note(f"Seed {ctx.seed}. Objective `(1/N) Σ CE + β/2 Σ‖θ‖²`, β = {cfg.beta}.")
    rows = [
        {
            "model": f"convex (certified, rel. gap {convex['relative_gap']:.1e})",
            "objective": convex["objective"],
            "test acc.": convex["test_accuracy"],
            "seconds": convex["seconds"],
        }
    ]
    rows += [
        {
            "model": f"Adam seed {r['seed']}",
            "objective": r["final_objective"],
            "test acc.": r["test_accuracy"],
            "seconds": r["seconds"],
        }
        for r in adam
    ]
    ctx.table("models", rows, formats={"objective": ".6f", "test acc.": ".3f", "seconds": ".1f"})
    ctx.table("adam", [{k: v for k, v in r.items() if k not in ("objs", "times")} for r in adam], report=False)
    ctx.note(f"Adam runs ending below the certified lower bound: {below} (must be 0).")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in adam:
        ax.semilogy(
            r["times"], np.maximum(np.array(r["objs"]) - lower, 1e-12), alpha=0.7, label=f"Adam seed {r['seed']}"
        )
    h = convex["history"]
    ax.semilogy(h["time"], np.maximum(np.array(h["objective"]) - lower, 1e-12), "k-", lw=2, label="convex (FISTA)")
    ax.set_xlabel("seconds")
    ax.set_ylabel("objective − certified lower bound")
    ax.set_title(f"Digits, gated ReLU, β = {cfg.beta:g}")
    ax.legend(fontsize=7)
    fig.tight_layout()
    ctx.figure("objective", fig)


def run_quickstart(out: Path, seed: int = 0, quick: bool = False, device: str = "cpu") -> dict[str, Any]:
    """Run the quickstart experiment; writes ``results.json``, ``report.md`` and ``objective.png`` to ``out``."""
    return run_experiment("quickstart", out=out, seed=seed, quick=quick, device=device)
