"""Training of the ``student-teacher`` experiment (Ergen, Neyshabur & Mehta 2022, §4).

* :func:`train_layer` (part A): the last MiniLM layer with a fresh softmax or convex attention (eq. (4)), trained
  with Adam on the teacher's last-layer output at every real token (projected onto the simplex for
  ``"convex-simplex"``);
* :func:`convex_fit`, :func:`beta_max` (part B): the convex token-lasso program (eq. (12),
  :class:`~attnduality.convex.TokenLassoRegressor`, FISTA with a certified duality gap) and the smallest β with
  ``Z = 0`` optimal;
* :func:`train_head` (part B): the softmax head (eq. (3)) or the convex-attention twin (eq. (11)) trained with
  (projected) Adam on ``(1/2N) Σ ‖f(X_i) − y_i‖² + β R``.

Every run is checkpointed by :func:`attnduality.training.train` and resumes where it stopped.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

from ..runner import RunContext
from .config import StudentTeacherConfig
from .data import batches, example_index
from .models import (
    cls_attention,
    head_decay,
    head_forward,
    head_model,
    last_layer_student,
    layer_attention,
)
from .stats import attention_stats, rel_error

__all__ = ["beta_max", "convex_fit", "train_head", "train_layer"]


def _layer_weights(attn: Any, x: Any, pad: Any) -> Any:
    return attn.attention_matrix(x, pad)


def train_layer(ctx: RunContext, data: dict[str, Any], model: str, run_seed: int, key: str) -> dict[str, Any]:
    """Adam (projected for ``"convex-simplex"``) on the part-A student's attention: mean squared error to the
    teacher's last-layer output at every real token of the training sentences."""
    import torch

    from ...training import resume, train

    cfg: StudentTeacherConfig = ctx.config
    x, pad, y = data["x"], data["pad"], data["y"]
    tr, te = data["train"], data["test"]
    real = ~pad
    mean = y[tr][real[tr]].mean(0)
    ev_tr = tr[: cfg.eval_train_sentences]
    attn = layer_attention(model, cfg.n_heads, x.shape[1], run_seed)
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
            pr = torch.cat([student(x[idx[i : i + 128]], pad[idx[i : i + 128]]) for i in range(0, len(idx), 128)])
            m = real[idx]
            log[name].append(rel_error(pr[m], y[idx][m], mean))
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
    train(
        attn,
        objective,
        opt,
        cfg.layer_steps,
        lambda t: (tr[batches(len(tr), cfg.layer_batch, t, run_seed)],),
        start=start,
        checkpoint=ck,
        extra=lambda: {**log, "seconds": seconds + time.perf_counter() - t0},
        # projected gradient: the rows back onto the simplex (exact zeros possible)
        after_step=attn.project_ if model == "convex-simplex" else None,
        on_round=evaluate_due,
        progress=lambda span: ctx.progress(span, desc=key, initial=span.start, total=span.stop),
    )
    seconds += time.perf_counter() - t0
    with torch.no_grad():
        student.eval()
        w = torch.cat([_layer_weights(attn, x[te[i : i + 128]], pad[te[i : i + 128]]) for i in range(0, len(te), 128)])
    return {
        "model": model,
        "seed": run_seed,
        "seconds": seconds,
        **log,
        "final_test_rel": log["test_rel"][-1],
        **{f"attn_{k}": v for k, v in attention_stats(w, pad[te]).items()},
        "example_map": w[example_index(data), :].mean(0).tolist(),
    }


def convex_fit(ctx: RunContext, data: dict[str, Any], beta: float, beta_frac: float) -> dict[str, Any]:
    """Eq. (12) on the fit sentences with :class:`TokenLassoRegressor` (FISTA), tracing val/test error."""
    import torch
    from sklearn.exceptions import ConvergenceWarning

    from ...convex import TokenLassoRegressor
    from ...convex.problem import CompositeProblem
    from ...convex.solvers import FISTA, chain_callbacks

    cfg: StudentTeacherConfig = ctx.config
    x, y = data["x"], data["y_cls"]
    fit, val, te = data["fit"], data["val"], data["test"]
    mean = y[fit].mean(0)
    xv, xt = x[val].reshape(len(val), -1), x[te].reshape(len(te), -1)
    trace: dict[str, list[float]] = {
        k: [] for k in ("iteration", "seconds", "objective", "rel_gap", "val_rel", "test_rel")
    }
    t0 = time.perf_counter()

    class _Traced(TokenLassoRegressor):
        def _solve(self, loss: Any, operator: Any, penalty: Any, z0: Any = None, extra: Any = None) -> Any:
            def callback(state: Any, cert: Any) -> None:
                z = state.z.reshape(-1, y.shape[1]).to(xv.dtype)
                trace["iteration"].append(int(state.n_iter))
                trace["seconds"].append(time.perf_counter() - t0)
                trace["objective"].append(float(cert.primal))
                trace["rel_gap"].append(float(cert.rel_gap))
                trace["val_rel"].append(rel_error(xv @ z, y[val], mean))
                trace["test_rel"].append(rel_error(xt @ z, y[te], mean))

            solver = FISTA(tol=self.tol, max_iter=self.max_iter, check_every=cfg.fista_check_every)
            problem = CompositeProblem(loss, operator, penalty, float(self.beta))
            return solver.run(problem, z0, callback=chain_callbacks(callback, extra))

    est = _Traced(
        kind="attention",
        penalty="group",
        beta=beta,
        tol=cfg.fista_tol,
        max_iter=cfg.fista_max_iter,
        device=ctx.device,
        dtype="float32",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(x[fit].numpy(), y[fit].numpy())
    z = torch.as_tensor(est.coef_)
    pred_v, pred_t = xv @ z.reshape(-1, y.shape[1]), xt @ z.reshape(-1, y.shape[1])
    norms = np.asarray(est.token_norms_, float)
    return {
        "beta_frac": beta_frac,
        "beta": beta,
        "status": est.status_,
        "objective": float(est.objective_),
        "rel_gap": float(est.certificate_.rel_gap),
        "iterations": int(est.n_iter_),
        "seconds": float(est.solve_time_),
        "heads_needed": int(est.heads_needed_),
        "tokens_used": len(est.support_),
        "nonzero_groups": int((z.norm(dim=1) > 0).sum()),
        "val_rel": rel_error(pred_v, y[val], mean),
        "test_rel": rel_error(pred_t, y[te], mean),
        "token_norms": norms.tolist(),
        "trace": trace,
    }


def beta_max(data: dict[str, Any]) -> float:
    """β_max of eq. (12) with the averaged squared loss: ``max_{k,l} ‖(1/N) Σ_i y_il x_ik‖``."""
    import torch

    x, y, fit = data["x"], data["y_cls"], data["fit"]
    g = torch.einsum("ikq,il->klq", x[fit].double(), y[fit].double()) / len(fit)
    return float(g.norm(dim=-1).max())


def train_head(
    ctx: RunContext, data: dict[str, Any], model: str, beta: float, run_seed: int, key: str
) -> dict[str, Any]:
    """Adam (projected for the twin's simplex rows) on ``(1/2N) Σ ‖f(X_i) − y_i‖² + β R`` over the fit sentences."""
    import torch

    from ...training import resume, train

    cfg: StudentTeacherConfig = ctx.config
    x, pad, y = data["x"], data["pad"], data["y_cls"]
    fit, val, te = data["fit"], data["val"], data["test"]
    mean = y[fit].mean(0)
    net = head_model(model, x.shape[1], cfg, run_seed)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.head_lr)
    ck = ctx.checkpoint(key, every=cfg.checkpoint_every)
    start = resume(ck, model=net, optimizer=opt)
    log: dict[str, list[Any]] = {k: list(ck.extra.get(k, [])) for k in ("step", "objective", "val_rel", "test_rel")}
    seconds = float(ck.extra.get("seconds", 0.0))

    def predict(idx: Any) -> Any:
        return torch.cat(
            [head_forward(net, model, x[idx[i : i + 256]], pad[idx[i : i + 256]]) for i in range(0, len(idx), 256)]
        )

    @torch.no_grad()
    def evaluate(step: int) -> None:
        obj = 0.5 * (predict(fit) - y[fit]).square().sum() / len(fit) + beta * head_decay(net, model)
        log["objective"].append(float(obj))
        log["val_rel"].append(rel_error(predict(val), y[val], mean))
        log["test_rel"].append(rel_error(predict(te), y[te], mean))
        log["step"].append(step)

    def objective(head: Any, idx: Any) -> Any:
        loss = 0.5 * (head_forward(head, model, x[idx], pad[idx]) - y[idx]).square().sum() / len(idx)
        return loss + beta * head_decay(head, model)

    def evaluate_due(t: int, _: Any) -> None:
        if (t + 1) % cfg.eval_every == 0 or t + 1 == cfg.head_steps:
            evaluate(t + 1)

    if start == 0:
        evaluate(0)
    t0 = time.perf_counter()
    train(
        net,
        objective,
        opt,
        cfg.head_steps,
        lambda t: (fit[batches(len(fit), cfg.head_batch, t, run_seed)],),
        start=start,
        checkpoint=ck,
        extra=lambda: {**log, "seconds": seconds + time.perf_counter() - t0},
        after_step=net.project_ if model == "twin" else None,
        on_round=evaluate_due,
        progress=lambda span: ctx.progress(span, desc=key, initial=span.start, total=span.stop),
    )
    seconds += time.perf_counter() - t0
    with torch.no_grad():
        if model == "softmax":
            w = torch.cat(
                [cls_attention(net, x[te[i : i + 256]], pad[te[i : i + 256]])[1] for i in range(0, len(te), 256)]
            )
            importance = w.mean((0, 1))
            stats = attention_stats(w[:, :, None, :], pad[te])
        else:
            rows = net.attention()
            importance = (rows * (net.v.norm(dim=1) * net.b.abs().sum(1))[:, None]).sum(0)
            stats = attention_stats(rows[None, :, None, :])
    return {
        "model": model,
        "seed": run_seed,
        "beta": beta,
        "seconds": seconds,
        **log,
        "final_objective": log["objective"][-1],
        "final_val_rel": log["val_rel"][-1],
        "final_test_rel": log["test_rel"][-1],
        "importance": (importance / importance.sum()).tolist(),
        **{f"attn_{k}": v for k, v in stats.items()},
    }
