"""Quickstart: a certified convex gated-ReLU network versus Adam on the same non-convex network.

Data: scikit-learn's bundled 8×8 digits (1,797 images, 10 classes), split 75/25 with the run's seed. The
convex program (Sahiner et al. eq. (8), cross-entropy) is solved to a certified relative duality gap ``tol``; its
dual value is a lower bound on the regularised training objective of *every* network with these gates. The twin
(same gates, ``neurons_per_gate`` neurons per gate, weight decay ``β/2 Σ‖θ‖²``: the same objective) is trained with
full-batch Adam from ``adam_seeds`` initialisations at once: the seeds are stacked along a leading axis, and Adam,
being elementwise, updates each exactly as if it ran alone. Adam runs in ``adam_dtype`` (float32 by default, as
networks are usually trained); every reported Adam objective is re-evaluated in float64 on the library's twin
module. The report says whether any Adam run ends below the certified bound (none can).

Steps (resumable): ``convex`` (the certified fit), then ``adam`` (all seeds), checkpointed every
``checkpoint_every`` Adam steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .runner import RunContext, register_experiment, run_experiment

__all__ = ["QuickstartConfig", "run_quickstart"]

_ADAM_DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class QuickstartConfig:
    """Configuration of the quickstart experiment."""

    beta: float = 1e-2
    """regularisation β of the averaged objective"""
    n_gates: int = 50
    """sampled gates of the convex program"""
    tol: float = 1e-6
    """certified relative duality gap at which the convex solve stops"""
    max_iter: int = 20_000
    adam_steps: int = 500
    """full-batch Adam steps per seed"""
    adam_seeds: int = 5
    """number of Adam runs (trained together, each from its own initialisation)"""
    adam_lr: float = 1e-2
    adam_dtype: str = "float32"
    """precision of Adam's training ("float32" or "float64"); reported objectives are float64"""
    neurons_per_gate: int = 10
    """twin width per gate; must be ≥ the convex blocks' ranks (≤ min(d, c) = 10)"""
    test_size: float = 0.25
    checkpoint_every: int = 100
    """Adam steps between training checkpoints"""

    def __post_init__(self) -> None:
        for name in ("beta", "adam_lr"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not v > 0:
                raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
        for name in ("n_gates", "max_iter", "adam_steps", "adam_seeds", "neurons_per_gate", "checkpoint_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not 0 < self.tol < 1:
            raise ValueError(f"tol must be in (0, 1), got {self.tol}")
        if not 0 < self.test_size < 1:
            raise ValueError(f"test_size must be in (0, 1), got {self.test_size}")
        if self.adam_dtype not in _ADAM_DTYPES:
            raise ValueError(f"adam_dtype must be one of {_ADAM_DTYPES}, got {self.adam_dtype!r}")

    @classmethod
    def quick(cls) -> QuickstartConfig:
        return cls(n_gates=20, adam_steps=300, adam_seeds=3)


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
        verbose=int(ctx.show_progress),
    )
    est.fit(x_tr, y_tr)
    h = est.history_
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
        "history": {"iteration": list(h.n_iter), "objective": list(h.objective), "relative_gap": list(h.rel_gap)},
    }


class _StackedTwin:
    """The gated twin of every Adam seed at once: ``w1`` (S, d, m), ``w2`` (S, m, c), the gate mask of the training
    inputs computed once. ``objectives()`` is each seed's ``(1/N) Σ CE + β/2 (‖w1‖² + ‖w2‖²)``, the objective of
    :class:`~attnduality.nn.GatedReLUMLP` with :func:`~attnduality.convex.regularized_objective`."""

    def __init__(self, x: Any, y: Any, wide_gates: Any, w1: Any, w2: Any, beta: float) -> None:
        import torch

        self.x = x.to(w1.dtype)
        self.mask = (x @ wide_gates.to(x.dtype) >= 0).to(w1.dtype)  # gate signs from the float64 inputs
        self.y, self.beta = y, beta
        self.w1, self.w2 = torch.nn.Parameter(w1), torch.nn.Parameter(w2)

    def objectives(self) -> Any:
        import torch

        out = (self.mask * (self.x @ self.w1)) @ self.w2  # (S, N, c)
        s, n, c = out.shape
        ce = torch.nn.functional.cross_entropy(out.reshape(s * n, c), self.y.repeat(s), reduction="none")
        decay = 0.5 * (self.w1.square().sum((1, 2)) + self.w2.square().sum((1, 2)))
        return ce.reshape(s, n).mean(1) + self.beta * decay


def _adam(ctx: RunContext, data: tuple[np.ndarray, ...], gates: np.ndarray) -> dict[str, Any]:
    """Full-batch Adam on the twin from every seed at once, checkpointed every ``checkpoint_every`` steps."""
    import torch

    from ..convex import CrossEntropyLoss, regularized_objective
    from ..nn import GatedReLUMLP
    from ..training import Step, resume, train

    cfg: QuickstartConfig = ctx.config
    x_tr, x_te, y_tr, y_te = data
    x = torch.as_tensor(x_tr, dtype=torch.float64)
    y = torch.as_tensor(y_tr)
    wide = torch.as_tensor(gates).repeat_interleave(cfg.neurons_per_gate, dim=1)
    d, m = wide.shape
    n_classes = int(y_tr.max()) + 1
    seeds = [ctx.seed * 100 + s for s in range(cfg.adam_seeds)]
    inits = []
    for run_seed in seeds:  # each seed's initialisation is drawn in float64 from its own generator
        gen = torch.Generator().manual_seed(run_seed)
        w1 = torch.randn(d, m, generator=gen, dtype=torch.float64) / d**0.5
        inits.append((w1, torch.randn(m, n_classes, generator=gen, dtype=torch.float64) / m**0.5))
    dtype = getattr(torch, cfg.adam_dtype)
    twin = _StackedTwin(
        x,
        y,
        wide,
        torch.stack([w1 for w1, _ in inits]).to(dtype),
        torch.stack([w2 for _, w2 in inits]).to(dtype),
        cfg.beta,
    )
    params = torch.nn.ParameterList([twin.w1, twin.w2])
    opt = torch.optim.Adam(params, lr=cfg.adam_lr)
    ck = ctx.checkpoint("adam", every=cfg.checkpoint_every)
    start = resume(ck, model=params, optimizer=opt)
    objs: list[list[float]] = list(ck.extra.get("objs", []))

    def objective(_: Any, __: None) -> tuple[Any, Any]:
        obj = twin.objectives()
        return obj.sum(), obj  # the seeds' objectives are independent: each gets its own gradient

    def record(step: Step) -> None:
        objs.append(step.aux.detach().double().tolist())

    train(
        params,
        objective,
        opt,
        cfg.adam_steps,
        start=start,
        checkpoint=ck,
        extra=lambda: {"objs": objs},
        on_step=record,
        progress=lambda span: ctx.progress(
            span, desc=f"Adam ({len(seeds)} runs, {cfg.adam_dtype})", initial=span.start, total=span.stop
        ),
    )
    runs = []
    loss = CrossEntropyLoss(y)
    curves = np.asarray(objs).T  # (S, steps)
    for s, run_seed in enumerate(seeds):
        module = GatedReLUMLP(wide, twin.w1[s].detach().double(), twin.w2[s].detach().double())
        with torch.no_grad():
            final = float(regularized_objective(module, loss, x, cfg.beta))
            pred_te = module(torch.as_tensor(x_te, dtype=torch.float64)).argmax(1).numpy()
        runs.append(
            {
                "seed": run_seed,
                "final_objective": final,
                "best_objective": float(min(final, curves[s].min())),
                "test_accuracy": float((pred_te == y_te).mean()),
                "objs": curves[s].tolist(),
            }
        )
    return {"runs": runs}


def _what_this_shows(cfg: QuickstartConfig, convex: dict[str, Any], runs: list[dict[str, Any]], below: int) -> str:
    """The report's opening paragraph, written from the numbers."""
    lower = convex["lower_bound"]
    above = np.array([r["final_objective"] - lower for r in runs])
    accs = np.array([r["test_accuracy"] for r in runs])
    status = (
        f"solved to a certified relative duality gap of {convex['relative_gap']:.1e}"
        if convex["status"] == "converged"
        else f"**not** certified (status {convex['status']}, gap {convex['relative_gap']:.1e})"
    )
    text = (
        f"**What this shows.** The convex program was {status}: its objective {convex['objective']:.6f} is within "
        f"{convex['objective'] - lower:.1e} of the lower bound {lower:.6f}, and no network with these "
        f"{len(convex['gates'][0])} gates, of any width, can reach a lower regularised training objective. "
        f"Adam ({len(runs)} runs of {cfg.adam_steps} full-batch steps, learning rate {cfg.adam_lr:g}) on the same "
        f"network ended {above.min():.1e} to {above.max():.1e} above that bound "
        f"({100 * above.min() / lower:.2g}% to {100 * above.max() / lower:.2g}%). "
    )
    if below:
        text += f"{below} run(s) went below the bound, which contradicts the certificate: please report this as a bug. "
    else:
        text += "None went below it, as the certificate guarantees. "
    text += (
        f"Test accuracy: convex {convex['test_accuracy']:.3f}, Adam {accs.mean():.3f} on average "
        f"({accs.min():.3f}–{accs.max():.3f}). The convex fit needs no learning rate, seed or stopping rule, and "
        "says how far it is from the optimum; Adam's distance is known here only because of the convex bound."
    )
    return text


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
    adam = ctx.step("adam", lambda: _adam(ctx, data, gates))
    runs = adam["runs"]
    for r in runs:
        # float32 trajectories may sit a rounding error below their float64 value
        r["below_convex_optimum"] = bool(
            r["final_objective"] < lower - 1e-12 or min(r["objs"]) < lower - 1e-6 * abs(lower)
        )
    below = sum(r["below_convex_optimum"] for r in runs)
    ctx.metric("adam.best_objective", min(r["best_objective"] for r in runs))
    ctx.metric("adam.mean_test_accuracy", float(np.mean([r["test_accuracy"] for r in runs])))
    ctx.metric("adam.runs_below_lower_bound", below)
    ctx.metric("adam.seconds", ctx.steps["adam"]["seconds"])

    ctx.note(_what_this_shows(cfg, convex, runs, below))
    ctx.note(
        f"Seed {ctx.seed}. Objective `(1/N) Σ CE + β/2 Σ‖θ‖²`, β = {cfg.beta}, {cfg.neurons_per_gate} neurons per "
        f"gate. Wall-clock times depend on the machine's load: the convex fit took {convex['seconds']:.1f} s, the "
        f"{len(runs)} Adam runs (trained together) {ctx.steps['adam']['seconds']:.1f} s."
    )
    rows = [
        {
            "model": f"convex (certified, rel. gap {convex['relative_gap']:.1e})",
            "objective": convex["objective"],
            "above bound": convex["objective"] - lower,
            "test acc.": convex["test_accuracy"],
        }
    ]
    rows += [
        {
            "model": f"Adam seed {r['seed']}",
            "objective": r["final_objective"],
            "above bound": r["final_objective"] - lower,
            "test acc.": r["test_accuracy"],
        }
        for r in runs
    ]
    ctx.table("models", rows, formats={"objective": ".6f", "above bound": ".1e", "test acc.": ".3f"})
    ctx.table("adam", [{k: v for k, v in r.items() if k != "objs"} for r in runs], report=False)
    ctx.figure("objective", _figure(cfg, convex, runs), caption=_CAPTION)


_CAPTION = (
    "Lower is better. Left: each Adam run's regularised training objective minus the certified lower bound, per "
    "full-batch Adam step; the dashed line is the convex solution, which sits on the bound to within the "
    "certified gap (nothing can go below zero on this axis). Right: the convex solver's certified relative gap "
    "per iteration (FISTA iterations, then Newton steps); it stops at the tolerance (dotted). Both axes count "
    "work, not seconds, so the picture does not depend on the machine's load."
)


def _figure(cfg: QuickstartConfig, convex: dict[str, Any], runs: list[dict[str, Any]]) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lower = convex["lower_bound"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for r in runs:
        steps = np.arange(1, len(r["objs"]) + 1)
        left.semilogy(steps, np.maximum(np.array(r["objs"]) - lower, 1e-12), alpha=0.7, label=f"Adam seed {r['seed']}")
    left.axhline(max(convex["objective"] - lower, 1e-12), color="k", ls="--", lw=1.5, label="convex (certified)")
    left.set_xlabel("Adam step (full batch)")
    left.set_ylabel("objective − certified lower bound")
    left.set_title("Adam on the non-convex twin")
    left.legend(fontsize=7)
    h = convex["history"]
    right.semilogy(h["iteration"], h["relative_gap"], "k.-", label="certified relative gap")
    right.axhline(cfg.tol, color="gray", ls=":", label=f"tol {cfg.tol:g}")
    right.set_xlabel("solver iteration (FISTA, then Newton steps)")
    right.set_ylabel("certified relative duality gap")
    right.set_title("Convex program (certified)")
    right.legend(fontsize=7)
    fig.suptitle(f"Digits, gated ReLU, {len(convex['gates'][0])} gates, β = {cfg.beta:g}  (lower is better)")
    fig.tight_layout()
    return fig


def run_quickstart(out: Path, seed: int = 0, quick: bool = False, device: str = "cpu") -> dict[str, Any]:
    """Run the quickstart experiment; writes ``results.json``, ``report.md`` and ``objective.png`` to ``out``."""
    return run_experiment("quickstart", out=out, seed=seed, quick=quick, device=device)
