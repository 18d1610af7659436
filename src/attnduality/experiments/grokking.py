"""Grokking on modular division (Ergen, Neyshabur & Mehta 2022, §4; Power et al. 2022): softmax transformers versus
the convex-attention models.

Task: ``a / b = c (mod 97)``, all 9,312 equations (:func:`attnduality.data.make_modular`), split at random into a
training fraction (``train_fracs``) and the rest as test set; one split per seed. A model reads the four tokens
``[a, /, b, =]`` and predicts ``c`` at the ``=`` position (Nanda et al. 2023's read-out; openai/grok also
supervises a trailing EOS, which carries no information and is left out here).

Models (all with learned token and position embeddings, trained with AdamW on mini-batches):

* ``softmax``: a decoder-style transformer (causal softmax attention, pre-LN residual blocks with a GELU MLP, final
  LayerNorm, linear read-out), 1 or 2 layers: the grokking baseline.
* ``convex``: the same network with every softmax attention replaced by :class:`~attnduality.nn.ConvexAttention`
  (the paper's alternative attention, eq. (4): a trainable input-independent row-stochastic mixing matrix per head,
  no ``W_Q``/``W_K``): the attention swap alone, trained non-convexly.
* ``convex-paper``: the paper's architecture (Fig. 1; §3.4 reconstructed here): ConvexAttention followed by a gated-ReLU
  FC layer per block, **no skip connections and no LayerNorm** (:func:`~attnduality.nn.stacked_model`), trained
  non-convexly.

The mixing matrices of ConvexAttention get no weight decay (in eq. (4) ``W ∈ Δ`` is constrained, not penalised);
every other parameter is decayed.

Convex program (``convex_program=True``): the certified token-lasso fit (eq. (12), :class:`~attnduality.convex.
TokenLassoClassifier`, cross-entropy) on fixed one-hot tokens, the only input representation under which the model is
convex (learned embeddings are not). On one-hot tokens every model of the paper's convex class, attention-only
(eq. (12)) or with the per-token gated-ReLU FC layer (§3.4 reconstruction), computes ``F_a[a] + F_b[b] + const``:
a per-token function of a one-hot token is a table lookup, i.e. linear in the one-hot vector. So the convex program is
additive in the two operands, and its certified optimum shows how much of the division table that class can fit at all.

Metrics per setting (train fraction × layers × model) over seeds: the first evaluated step with train accuracy ≥
``threshold`` (99%) and with test accuracy ≥ ``threshold`` (``None``: not reached within ``steps``), final
accuracies. The test set is only *measured* during training (no selection, no early stopping), as in the grokking
literature. Each training is one resumable step, checkpointed every ``checkpoint_every`` updates.

Settings the paper does not disclose (§4): train fraction, weight decay, learning rate, batch size, width.
The defaults follow openai/grok (width 128, 4 heads, AdamW lr 1e-3, betas (0.9, 0.98), 10 warm-up updates,
batch 512) with weight decay 1 (Power et al. found weight decay the most effective intervention; the grok default is
smaller); the paper's standard transformer generalises after > 10⁵ updates, far beyond a CPU budget.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from .runner import RunContext, register_experiment
from .stats import format_mean_std

__all__ = ["GROKKING_MODELS", "GrokkingConfig", "build_grokking_model", "steps_to_threshold"]

GROKKING_MODELS = ("softmax", "convex", "convex-paper")


@dataclass(frozen=True)
class GrokkingConfig:
    """Configuration of the grokking experiment (defaults: openai/grok settings, weight decay 1, CPU-sized steps)."""

    p: int = 97
    """modulus (prime); p = 97 gives 9,312 division equations"""
    train_fracs: tuple[float, ...] = (0.3, 0.5)
    layers: tuple[int, ...] = (1, 2)
    models: tuple[str, ...] = ("softmax", "convex")
    """any of "softmax", "convex" (attention swapped in the same transformer), "convex-paper" (no skip/LayerNorm,
    gated-ReLU FC)"""
    seeds: tuple[int, ...] = (0, 1, 2)
    """each seed draws its own split and initialisation (offset by the run's --seed × 1000)"""
    steps: int = 2000
    """AdamW updates per training (the paper's standard transformer needs > 100k to generalise)"""
    batch_size: int = 512
    lr: float = 1e-3
    weight_decay: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.98
    warmup_steps: int = 10
    """linear learning-rate warm-up (openai/grok: 10)"""
    d_model: int = 128
    n_heads: int = 4
    eval_every: int = 50
    """updates between evaluations of the full train and test sets"""
    checkpoint_every: int = 500
    threshold: float = 0.99
    convex_program: bool = True
    """also solve the certified convex program on one-hot tokens (one per train fraction and seed)"""
    convex_beta: float = 1e-4
    convex_tol: float = 1e-4
    convex_max_iter: int = 600

    def __post_init__(self) -> None:
        if self.p < 3 or any(self.p % q == 0 for q in range(2, int(self.p**0.5) + 1)):
            raise ValueError(f"p must be a prime >= 3, got {self.p}")
        if not self.train_fracs or any(not 0.0 < f < 1.0 for f in self.train_fracs):
            raise ValueError(f"train_fracs must be a non-empty tuple of numbers in (0, 1), got {self.train_fracs}")
        if not self.layers or any(not isinstance(k, int) or k < 1 for k in self.layers):
            raise ValueError(f"layers must be a non-empty tuple of integers >= 1, got {self.layers}")
        bad = [m for m in self.models if m not in GROKKING_MODELS]
        if not self.models or bad:
            raise ValueError(f"models must be a non-empty subset of {GROKKING_MODELS}, got {self.models}")
        if len(set(self.models)) != len(self.models) or len(set(self.seeds)) != len(self.seeds):
            raise ValueError("models and seeds must not repeat")
        if not self.seeds or any(not isinstance(s, int) or s < 0 for s in self.seeds):
            raise ValueError(f"seeds must be a non-empty tuple of integers >= 0, got {self.seeds}")
        for name in ("steps", "batch_size", "d_model", "n_heads", "eval_every", "checkpoint_every",
                     "convex_max_iter"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if not self.lr > 0 or self.weight_decay < 0:
            raise ValueError(f"need lr > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}")
        if not (0.0 <= self.beta1 < 1.0 and 0.0 <= self.beta2 < 1.0):
            raise ValueError(f"betas must lie in [0, 1), got ({self.beta1}, {self.beta2})")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must lie in (0, 1], got {self.threshold}")
        if not self.convex_beta > 0 or not 0 < self.convex_tol < 1:
            raise ValueError(f"need convex_beta > 0 and 0 < convex_tol < 1, got {self.convex_beta}, {self.convex_tol}")

    @classmethod
    def quick(cls) -> GrokkingConfig:
        return cls(train_fracs=(0.5,), layers=(1,), seeds=(0,), steps=200, eval_every=25, checkpoint_every=100,
                   convex_max_iter=100)


# ----------------------------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------------------------
def build_grokking_model(model: str, n_layers: int, vocab_size: int, n_classes: int, *, d_model: int = 128,
                         n_heads: int = 4, n_tokens: int = 4, seed: int = 0) -> Any:
    """The ``model`` network (``"softmax"``, ``"convex"`` or ``"convex-paper"``, see the module docstring):
    token ids (B, n_tokens) → logits (B, n_classes) read at the last position."""
    import torch
    from torch import nn

    from ..nn import TransformerEncoder, stacked_model

    if model not in GROKKING_MODELS:
        raise ValueError(f"model must be one of {GROKKING_MODELS}, got {model!r}")
    if not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"n_layers must be an integer >= 1, got {n_layers!r}")

    class GrokNet(nn.Module):
        """Embedding + learned positions → blocks → last position → linear read-out."""

        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(seed)
            self.embed = nn.Embedding(vocab_size, d_model)
            self.pos = nn.Parameter(0.02 * torch.randn(n_tokens, d_model))
            if model == "convex-paper":
                self.body: nn.Module = stacked_model(d_model, n_heads, n_layers, max_len=n_tokens, causal=True,
                                                     seed=seed)
            else:
                self.body = TransformerEncoder(d_model, n_heads, "softmax" if model == "softmax" else "convex",
                                               n_layers, dropout=0.0, causal=True, max_len=n_tokens)
            self.head = nn.Linear(d_model, n_classes)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            """Logits at the last position. The last block's feed-forward part runs on that position only (the
            others cannot reach the read-out), which is the full network's output at a fraction of the cost."""
            h = self.embed(x) + self.pos[: x.shape[1]]
            if model == "convex-paper":
                *first, last = self.body.blocks
                for block in first:
                    h = block(h)
                a = last.attn(last.norm1(h))[:, -1:]
                h = h[:, -1:] + a if last.residual else a
                if last.ffn is not None:
                    f = last.ffn(last.norm2(h))
                    h = h + f if last.residual else f
                return self.head(h[:, -1])
            *first, last = self.body.layers
            for layer in first:
                h = layer(h)
            h = h[:, -1:] + last.attn(last.norm1(h))[:, -1:]  # pre-LN block, no dropout
            h = h + last.ffn(last.norm2(h))
            return self.head(self.body.norm(h)[:, -1])

        def forward_full(self, x: torch.Tensor) -> torch.Tensor:
            """The same logits through the unsliced network (a reference for tests)."""
            h = self.embed(x) + self.pos[: x.shape[1]]
            return self.head(self.body(h)[:, -1])

    return GrokNet()


def _param_groups(net: Any, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: ConvexAttention mixing logits undecayed (W ∈ Δ is constrained in eq. (4)), the rest decayed."""
    mixing = [p for n, p in net.named_parameters() if n.endswith("mixing.param")]
    ids = {id(p) for p in mixing}
    rest = [p for p in net.parameters() if id(p) not in ids]
    groups = [{"params": rest, "weight_decay": weight_decay}]
    if mixing:
        groups.append({"params": mixing, "weight_decay": 0.0})
    return groups


def steps_to_threshold(steps: list[int], acc: list[float], threshold: float) -> int | None:
    """The first evaluated step whose accuracy is ≥ ``threshold`` (``None`` if never)."""
    for s, a in zip(steps, acc, strict=True):
        if a >= threshold:
            return int(s)
    return None


def _train(ctx: RunContext, key: str, model: str, n_layers: int, frac: float, run_seed: int) -> dict[str, Any]:
    """AdamW on one setting; evaluates the full train and test sets every ``eval_every`` updates."""
    import torch
    import torch.nn.functional as F

    from ..data import make_modular
    from ..training import resume, train

    cfg: GrokkingConfig = ctx.config
    split = make_modular(cfg.p, "div", frac, seed=run_seed)
    dev = torch.device(ctx.device)
    x_tr, y_tr = torch.as_tensor(split.X_train, device=dev), torch.as_tensor(split.y_train, device=dev)
    x_te, y_te = torch.as_tensor(split.X_test, device=dev), torch.as_tensor(split.y_test, device=dev)
    net = build_grokking_model(model, n_layers, cfg.p + 2, cfg.p, d_model=cfg.d_model, n_heads=cfg.n_heads,
                               seed=run_seed).to(dev)
    opt = torch.optim.AdamW(_param_groups(net, cfg.weight_decay), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, (t + 1) / max(cfg.warmup_steps, 1)))
    ck = ctx.checkpoint(key, every=cfg.checkpoint_every)
    start = resume(ck, model=net, optimizer=opt, scheduler=sched)
    log: dict[str, list[Any]] = {k: list(ck.extra.get(k, [])) for k in
                                 ("step", "train_acc", "test_acc", "train_loss", "test_loss")}
    seconds = float(ck.extra.get("seconds", 0.0))
    n, bs = len(y_tr), min(cfg.batch_size, len(y_tr))

    def batch(t: int) -> torch.Tensor:
        """Indices of update ``t``: epoch-wise permutations seeded by (seed, epoch), so resuming is stateless."""
        pos = t * bs
        epoch, off = divmod(pos, n)
        idx = []
        while len(idx) < bs:
            g = torch.Generator().manual_seed(run_seed * 1_000_003 + epoch)
            perm = torch.randperm(n, generator=g)
            take = perm[off: off + bs - len(idx)]
            idx.extend(take.tolist())
            epoch, off = epoch + 1, 0
        return torch.as_tensor(idx, device=dev)

    @torch.no_grad()
    def evaluate(step: int) -> None:
        net.eval()
        for x, y, name in ((x_tr, y_tr, "train"), (x_te, y_te, "test")):
            logits = torch.cat([net(x[i: i + 4096]) for i in range(0, len(x), 4096)])
            log[f"{name}_acc"].append(float((logits.argmax(1) == y).float().mean()))
            log[f"{name}_loss"].append(float(F.cross_entropy(logits, y)))
        log["step"].append(step)
        net.train()

    def evaluate_due(t: int, _: Any) -> None:
        if (t + 1) % cfg.eval_every == 0 or t + 1 == cfg.steps:
            evaluate(t + 1)

    if start == 0:
        evaluate(0)
    t0 = time.perf_counter()
    net.train()
    train(net, lambda model, idx: F.cross_entropy(model(x_tr[idx]), y_tr[idx]), opt, cfg.steps,
          lambda t: (batch(t),), start=start, scheduler=sched, checkpoint=ck,
          extra=lambda: {**log, "seconds": seconds + time.perf_counter() - t0}, on_round=evaluate_due,
          progress=lambda span: ctx.progress(span, desc=key, initial=span.start, total=span.stop))
    seconds += time.perf_counter() - t0
    return {
        "model": model, "layers": n_layers, "train_frac": frac, "seed": run_seed, "n_train": n,
        "n_test": len(y_te), "parameters": sum(p.numel() for p in net.parameters()),
        "steps_train": steps_to_threshold(log["step"], log["train_acc"], cfg.threshold),
        "steps_test": steps_to_threshold(log["step"], log["test_acc"], cfg.threshold),
        "final_train_acc": log["train_acc"][-1], "final_test_acc": log["test_acc"][-1],
        "seconds": seconds, **log,
    }


def _one_hot(tokens: np.ndarray, vocab: int) -> np.ndarray:
    out = np.zeros((*tokens.shape, vocab), np.float64)
    np.put_along_axis(out, tokens[..., None], 1.0, axis=-1)
    return out


def _convex_program(ctx: RunContext, frac: float, run_seed: int) -> dict[str, Any]:
    """The certified token-lasso fit (eq. (12), cross-entropy) on one-hot tokens: the paper's convex class there."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    from ..convex import TokenLassoClassifier
    from ..data import make_modular

    cfg: GrokkingConfig = ctx.config
    split = make_modular(cfg.p, "div", frac, seed=run_seed)
    vocab = cfg.p + 2
    x_tr, x_te = _one_hot(split.X_train, vocab), _one_hot(split.X_test, vocab)
    est = TokenLassoClassifier(kind="attention", penalty="group", beta=cfg.convex_beta, tol=cfg.convex_tol,
                               max_iter=cfg.convex_max_iter, device=ctx.device, dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(x_tr, split.y_train)
    return {
        "train_frac": frac, "seed": run_seed, "beta": cfg.convex_beta, "status": est.status_,
        "objective": float(est.objective_), "rel_gap": float(est.certificate_.rel_gap), "iterations": int(est.n_iter_),
        "seconds": float(est.solve_time_), "train_acc": float(est.score(x_tr, split.y_train)),
        "test_acc": float(est.score(x_te, split.y_test)), "tokens_used": [int(k) for k in est.support_],
    }


# ----------------------------------------------------------------------------------------------------------------
# reporting
# ----------------------------------------------------------------------------------------------------------------


def _summary_rows(runs: list[dict[str, Any]], cfg: GrokkingConfig) -> list[dict[str, Any]]:
    rows = []
    for frac in cfg.train_fracs:
        for n_layers in cfg.layers:
            for model in cfg.models:
                rs = [r for r in runs if r["train_frac"] == frac and r["layers"] == n_layers and r["model"] == model]
                tr = [r["steps_train"] for r in rs if r["steps_train"] is not None]
                te = [r["steps_test"] for r in rs if r["steps_test"] is not None]
                rows.append({
                    "train frac": frac, "layers": n_layers, "model": model, "seeds": len(rs),
                    "train≥99%": f"{len(tr)}/{len(rs)}",
                    "steps to 99% train": format_mean_std(tr, ".0f") if tr else "not reached",
                    "test≥99%": f"{len(te)}/{len(rs)}",
                    "steps to 99% test": format_mean_std(te, ".0f") if te else "not reached",
                    "final train acc": format_mean_std([r["final_train_acc"] for r in rs], ".3f"),
                    "final test acc": format_mean_std([r["final_test_acc"] for r in rs], ".3f"),
                    "best test acc": format_mean_std([max(r["test_acc"]) for r in rs], ".3f"),
                    "mean s": float(np.mean([r["seconds"] for r in rs])),
                })
    return rows


def _curves_figure(runs: list[dict[str, Any]], cfg: GrokkingConfig, what: str) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nr, nc = len(cfg.train_fracs), len(cfg.layers)
    fig, axes = plt.subplots(nr, nc, figsize=(4.6 * nc, 3.4 * nr), squeeze=False, sharex=True, sharey=True)
    colors = {"softmax": "tab:blue", "convex": "tab:red", "convex-paper": "tab:green"}
    for i, frac in enumerate(cfg.train_fracs):
        for j, n_layers in enumerate(cfg.layers):
            ax = axes[i][j]
            for r in runs:
                if r["train_frac"] != frac or r["layers"] != n_layers:
                    continue
                s = np.maximum(np.asarray(r["step"]), 1)
                c = colors[r["model"]]
                first = r["seed"] == min(rr["seed"] for rr in runs if rr["model"] == r["model"])
                if what == "accuracy":
                    ax.plot(s, r["train_acc"], ls="--", color=c, lw=1, alpha=0.8,
                            label=f"{r['model']} train" if first else None)
                    ax.plot(s, r["test_acc"], ls="-", color=c, lw=1.3, alpha=0.8,
                            label=f"{r['model']} test" if first else None)
                else:
                    ax.plot(s, r["train_loss"], ls="--", color=c, lw=1, alpha=0.8,
                            label=f"{r['model']} train" if first else None)
                    ax.plot(s, r["test_loss"], ls="-", color=c, lw=1.3, alpha=0.8,
                            label=f"{r['model']} test" if first else None)
            ax.set_xscale("log")
            if what == "loss":
                ax.set_yscale("log")
            else:
                ax.axhline(cfg.threshold, color="gray", lw=0.6, ls=":")
            ax.set_title(f"train frac {frac:g}, {n_layers} layer{'s' if n_layers > 1 else ''}", fontsize=9)
            if i == nr - 1:
                ax.set_xlabel("AdamW update")
            if j == 0:
                ax.set_ylabel(what)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"x / y mod {cfg.p}: {what} (dashed train, solid test; one line per seed)", fontsize=10)
    fig.tight_layout()
    return fig


@register_experiment(
    "grokking",
    about="modular division mod 97: steps to 99% train/test accuracy, softmax transformers vs convex attention "
          "(Ergen et al. 2022 §4)",
    data="x / y mod 97, all 9,312 equations (generated), random train/test split per seed (train fraction 0.3, 0.5)",
    config=GrokkingConfig,
    title="Grokking: modular division, softmax vs convex attention",
)
def grokking(ctx: RunContext) -> None:
    """Train every (train fraction, layers, model, seed), then tabulate steps to 99% and plot the curves."""
    cfg: GrokkingConfig = ctx.config
    # seed outermost: every setting has a first seed before any has a second
    settings = [(f, k, m, s) for s in cfg.seeds for f in cfg.train_fracs for k in cfg.layers for m in cfg.models]
    runs = []
    for frac, n_layers, model, s in ctx.progress(settings, desc="settings"):
        run_seed = ctx.seed * 1000 + s
        key = f"train-frac{frac:g}-L{n_layers}-{model}-seed{run_seed}"
        runs.append(ctx.step(key, lambda k=key, m=model, n=n_layers, f=frac, rs=run_seed: _train(ctx, k, m, n, f,
                                                                                                   rs)))
    rows = _summary_rows(runs, cfg)
    ctx.note(
        f"Budget: {cfg.steps} AdamW updates per training (batch {cfg.batch_size}, lr {cfg.lr:g}, weight decay "
        f"{cfg.weight_decay:g}, betas ({cfg.beta1:g}, {cfg.beta2:g}), {cfg.warmup_steps} warm-up updates, width "
        f"{cfg.d_model}, {cfg.n_heads} heads), evaluated every {cfg.eval_every}. The paper's standard transformer "
        "fits the training set in about 10³ updates and generalises after more than 10⁵ (the paper, §4); a step count "
        "'not reached' means not within this budget. Steps are the first evaluation at or above "
        f"{cfg.threshold:.0%}; mean ± std over the seeds that reached it. 'best test acc' is the highest evaluated "
        "test accuracy (a measurement, not used to select anything); 'final' is at the last update, which can sit on "
        "one of the loss spikes AdamW shows once the training set is fitted."
    )
    ctx.table("summary", rows, formats={"mean s": ".0f"})
    for r in rows:
        base = f"frac{r['train frac']:g}.L{r['layers']}.{r['model']}"
        rs = [x for x in runs if x["train_frac"] == r["train frac"] and x["layers"] == r["layers"]
              and x["model"] == r["model"]]
        for what in ("steps_train", "steps_test"):
            reached = [x[what] for x in rs if x[what] is not None]
            ctx.metric(f"{base}.{what}_reached", len(reached))
            ctx.metric(f"{base}.{what}_mean", float(np.mean(reached)) if reached else None)
        ctx.metric(f"{base}.final_train_acc_mean", float(np.mean([x["final_train_acc"] for x in rs])))
        ctx.metric(f"{base}.final_test_acc_mean", float(np.mean([x["final_test_acc"] for x in rs])))
        ctx.metric(f"{base}.best_test_acc_mean", float(np.mean([max(x["test_acc"]) for x in rs])))
    ctx.table("runs", [{k: v for k, v in r.items() if k not in ("step", "train_acc", "test_acc", "train_loss",
                                                                 "test_loss")} for r in runs], report=False)
    ctx.table("curves", [{k: r[k] for k in ("model", "layers", "train_frac", "seed", "step", "train_acc", "test_acc",
                                            "train_loss", "test_loss")} for r in runs], report=False)
    ctx.figure("accuracy", _curves_figure(runs, cfg, "accuracy"),
               caption="Train (dashed) and test (solid) accuracy per setting; one line per seed.")
    ctx.figure("loss", _curves_figure(runs, cfg, "loss"), caption="Train (dashed) and test (solid) cross-entropy.")

    if cfg.convex_program:
        prog = []
        for frac, s in ctx.progress([(f, s) for f in cfg.train_fracs for s in cfg.seeds], desc="convex program"):
            run_seed = ctx.seed * 1000 + s
            prog.append(ctx.step(f"program-frac{frac:g}-seed{run_seed}",
                                 lambda f=frac, rs=run_seed: _convex_program(ctx, f, rs)))
        ctx.note(
            "**Convex program on one-hot tokens** (eq. (12), cross-entropy, certified by the duality gap). With fixed "
            "one-hot tokens every model of the paper's convex class is additive in the operands, "
            "`logits = F_a[a] + F_b[b] + const` (also with the per-token gated-ReLU FC layer: a function of a one-hot "
            "token is a table lookup), so its optimum bounds what that class can fit; it is not a transformer and has "
            "no 'steps'."
        )
        ctx.table("convex program", [{k: v for k, v in r.items() if k != "tokens_used"} for r in prog],
                  formats={"objective": ".4f", "rel_gap": ".1e", "seconds": ".1f", "train_acc": ".3f",
                           "test_acc": ".3f"})
        for frac in cfg.train_fracs:
            ps = [r for r in prog if r["train_frac"] == frac]
            ctx.metric(f"frac{frac:g}.program.train_acc_mean", float(np.mean([r["train_acc"] for r in ps])))
            ctx.metric(f"frac{frac:g}.program.test_acc_mean", float(np.mean([r["test_acc"] for r in ps])))
    total = sum(r["seconds"] for r in runs)
    ctx.metric("training_seconds", total)
    ctx.note(f"{len(runs)} trainings, {total / 60:.1f} min of training in all on {ctx.device}; "
             f"{sum(math.isfinite(r['final_train_acc']) for r in runs)} finished.")
