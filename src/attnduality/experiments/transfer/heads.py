"""The transfer experiment's heads: each head's formulation, gates and operator, the certified validation path and
refit, the full-width reference, and full-batch Adam on the twin (``lift`` of the formulation)."""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..checkpoints import SolveCheckpoint
from ..runner import RunContext
from .config import HEADS, HeadSpec, TransferConfig

__all__ = [
    "adam_on_twin",
    "feature_cache",
    "final_fit",
    "fit_head",
    "head_operator",
    "path_solution",
    "reference_fit",
    "sample_head_gates",
    "torch_dtype",
    "validate_head",
]


@contextlib.contextmanager
def feature_cache(n_bytes: float, itemsize: int) -> Iterator[None]:
    """Let the token operators keep their lifted features in memory up to ``n_bytes`` (default 128 MiB) while a
    training-set operator is built; prediction-time operators keep the library default (chunked recomputation)."""
    from ...convex.operators import features

    old = features.CACHE_LIMIT
    features.CACHE_LIMIT = max(old, int(n_bytes // itemsize))
    try:
        yield
    finally:
        features.CACHE_LIMIT = old


def torch_dtype(name: str) -> Any:
    import torch

    return {"float32": torch.float32, "float64": torch.float64}[name]


def _n_gates(spec: HeadSpec, cfg: TransferConfig) -> int:
    return {"mlp": cfg.gates_mlp, "attention": cfg.gates_attention, "mixer": cfg.gates_mixer,
            "fno": cfg.gates_fno}.get(spec.family, 0)


def _formulation(spec: HeadSpec, grid: tuple[int, ...], blocks: int) -> Any:
    """The head's :class:`~attnduality.convex.formulations.Formulation` (the token grid and B where it takes them)."""
    from ...convex import get_formulation

    taken = get_formulation(spec.family, kind=spec.kind).options()
    opts = {k: v for k, v in (("grid", tuple(grid)), ("blocks", blocks)) if k in taken}
    return get_formulation(spec.family, kind=spec.kind, **opts)


def sample_head_gates(spec: HeadSpec, s: int, d: int, blocks: int, cfg: TransferConfig, seed: int) -> np.ndarray | None:
    """I.i.d. Gaussian gates in the estimator's layout (float64), or None for a linear head."""
    form = _formulation(spec, (s,), blocks)
    return form.sample_gates(s, d, _n_gates(spec, cfg), seed).numpy() if form.gated else None


def head_operator(spec: HeadSpec, x: Any, gates: Any, n_classes: int, grid: tuple[int, ...], blocks: int) -> Any:
    """The convex head's operator ``A`` on inputs ``x`` (the estimators build the same ones)."""
    return _formulation(spec, grid, blocks).operator(x, gates, n_classes)


def _problem(spec: HeadSpec, x: np.ndarray, y: np.ndarray, gates: np.ndarray | None, n_classes: int,
             grid: tuple[int, ...], blocks: int, dtype: str) -> Any:
    """The head's convex program on ``(x, y)`` with mean cross-entropy, at β = 1."""
    import torch

    from ...convex import CrossEntropyLoss

    tdt = torch_dtype(dtype)
    xt = torch.as_tensor(np.ascontiguousarray(x), dtype=tdt)
    g = None if gates is None else torch.as_tensor(gates, dtype=tdt)
    return _formulation(spec, grid, blocks).problem(CrossEntropyLoss(torch.as_tensor(y)), xt, g, n_classes)


def _beta_max(spec: HeadSpec, x: np.ndarray, y: np.ndarray, gates: np.ndarray | None, n_classes: int,
              grid: tuple[int, ...], blocks: int, dtype: str) -> float:
    """``R°(A*∇f(0))``: the smallest β with ``Z = 0`` optimal, for this head, its gates and the fitting data."""
    from ...convex import beta_max

    return beta_max(_problem(spec, x, y, gates, n_classes, grid, blocks, dtype))


def _estimator(spec: HeadSpec, beta: float, gates: np.ndarray | None, grid: tuple[int, ...], blocks: int, tol: float,
               cfg: TransferConfig) -> Any:
    from ...convex import make_estimator

    form = _formulation(spec, grid, blocks)
    kw: dict[str, Any] = {"beta": beta, "tol": tol, "max_iter": cfg.max_iter, "dtype": cfg.dtype}
    return make_estimator(form, **kw, **({"gates": gates} if form.gated else {}))


def _blocks_of(spec: HeadSpec, coef: np.ndarray) -> np.ndarray:
    """The lifted solution as a stack of the matrices the penalty sums nuclear norms over: (n_blocks, p, q)."""
    return coef.reshape(-1, *coef.shape[-2:])


def _ranks(blocks: np.ndarray) -> np.ndarray:
    """Numerical ranks of the blocks (the library's recovery threshold: σ_max · min(p, q) · eps of the whole)."""
    s = np.linalg.svd(blocks, compute_uv=False)
    top = float(s.max()) if s.size else 0.0
    cut = top * min(blocks.shape[-2:]) * np.finfo(blocks.dtype).eps
    return (s > cut).sum(axis=-1) if top > 0 else np.zeros(len(blocks), dtype=int)


def _check_lift(spec: HeadSpec, est: Any) -> float:
    """Relative error of ``Z(recovered twin weights)`` against the certified solution (token heads: the library's
    recovery must invert the formulation's lift exactly, otherwise Adam would not train the twin of this program)."""
    import torch

    if not spec.tokens:
        return 0.0
    twin = est.to_module()
    z = est.formulation_.lift(twin.w1.detach(), twin.w2.detach()).cpu().numpy()
    ref = np.asarray(est.coef_)
    return float(np.linalg.norm(z - ref) / max(np.linalg.norm(ref), torch.finfo(torch.float64).tiny))


# ----------------------------------------------------------------------------------------------------------------
# fits
# ----------------------------------------------------------------------------------------------------------------
def _inputs(spec: HeadSpec, data: dict[str, Any], part: str) -> np.ndarray:
    return data[f"x_{part}"] if spec.tokens else data[f"mean_{part}"]


# Where a refit warm-started from the validation path's solution begins (None: solver="auto"); BENCHMARKS.md §9.
_WARM_PHASE: str | None = "newton"


def _resumed_phases(phase: str | None, fista_done: int, max_iter: int) -> list[tuple[str, int]]:
    """The solver runs that continue ``solver="auto"`` from a checkpoint in ``phase``: the whole solve (none saved),
    Newton (saved in Newton, or FISTA's share used up), or the FISTA iterations still due after the ``fista_done``
    saved ones and then Newton from their best point (what :class:`~attnduality.convex.solvers.AutoSolver` does
    within one solve, less its early handover: a resumed FISTA phase runs to the fixed switch point)."""
    from ...convex.solvers import AutoSolver

    if phase is None:
        return [("auto", max_iter)]
    fista_left = AutoSolver().switch_iter - fista_done
    if phase == "newton" or fista_left <= 0:
        return [("newton", max_iter)]
    return [("fista", fista_left), ("newton", max(1, max_iter - fista_left))]


def fit_head(spec: HeadSpec, data: dict[str, Any], idx: np.ndarray | None, frac: float, gates: np.ndarray | None,
         blocks: int, tol: float, cfg: TransferConfig, verbose: bool = False,
         checkpoint: SolveCheckpoint | None = None, z_init: np.ndarray | None = None) -> tuple[Any, dict[str, Any]]:
    """Fit one head at β = frac · β_max on the training samples ``idx`` (None: all); the fitted estimator and a
    summary (β, status, certificate, times). With ``checkpoint`` the solve saves its iterate as it goes and restarts
    from the last one saved (in the phase of ``solver="auto"`` it had reached); ``solve_seconds`` then counts the
    interrupted attempts too. ``z_init`` (the validation path's solution at the same β fraction) starts a solve that
    has no saved iterate, in the phase ``_WARM_PHASE``; ``warm_started`` records whether the solve began there."""
    from sklearn.exceptions import ConvergenceWarning

    x_all, y_all = _inputs(spec, data, "train"), data["y_train"]
    x, y = (x_all, y_all) if idx is None else (x_all[idx], y_all[idx])
    c = data["n_classes"]
    if len(np.unique(y)) != c:
        raise ValueError(f"the fitting samples miss a class ({len(np.unique(y))} of {c}); increase n_train")
    t0 = time.perf_counter()
    bmax = _beta_max(spec, x, y, gates, c, data["grid"], blocks, cfg.dtype)
    t_bmax = time.perf_counter() - t0
    est = _estimator(spec, frac * bmax, gates, data["grid"], blocks, tol, cfg).set_params(verbose=int(verbose))
    saved = None if checkpoint is None else checkpoint.start(f"beta={frac * bmax!r}")
    phase = None if saved is None else saved["phase"]
    z0 = None if saved is None else saved["z"].numpy()
    if saved is None and z_init is not None:
        z0, phase = np.asarray(z_init), _WARM_PHASE
    warm = bool(saved["extra"].get("warm_started", False)) if saved is not None else z_init is not None
    if checkpoint is not None:
        checkpoint.extra = {"warm_started": warm}
    itemsize = 4 if cfg.dtype == "float32" else 8
    t0 = time.perf_counter()
    n_iter, solve_seconds = 0, 0.0
    with feature_cache(cfg.cache_gb * 2**30, itemsize), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # the status is recorded instead
        # Resumed inside auto's FISTA phase, its earlier iterations count toward the switch to Newton, as in one solve.
        fista_done = 0 if saved is None else int(saved.get("n_iter", 0))
        for solver, max_iter in _resumed_phases(phase, fista_done, cfg.max_iter):
            est.set_params(solver=solver, max_iter=max_iter).fit(x, y, coef_init=z0, callback=checkpoint)
            n_iter, solve_seconds = n_iter + int(est.n_iter_), solve_seconds + float(est.solve_time_)
            if est.status_ != "max_iter":
                break
            z0 = est.coef_
        est.set_params(solver="auto", max_iter=cfg.max_iter)  # the configured estimator, fitted
    wall = time.perf_counter() - t0
    before = 0.0 if checkpoint is None else checkpoint.before
    return est, {
        "beta_frac": frac, "beta_max": bmax, "beta": frac * bmax, "status": est.status_, "n_iter": n_iter,
        "rel_gap": float(est.certificate_.rel_gap), "objective": float(est.objective_),
        "lower_bound": float(est.certificate_.dual), "solve_seconds": before + solve_seconds,
        "fit_seconds": before + wall, "beta_max_seconds": t_bmax, "n_fit": len(y),
        "resumed_at_gap": None if saved is None else float(saved["rel_gap"]),
        "warm_started": warm,
    }


def validate_head(ctx: RunContext, spec: HeadSpec, data: dict[str, Any], gates: np.ndarray | None, blocks: int,
                  checkpoint: SolveCheckpoint | None = None) -> list[dict[str, Any]]:
    """Validation accuracy at every β in ``beta_fracs``·β_max: the convex program of the head on the fit split,
    solved along a warm-started regularisation path (largest β first, ``solver='auto'``: FISTA, then Newton where
    FISTA is slow; each point certified to ``val_tol``), scored on the validation split. Same operator, penalty, loss
    and solver as the estimators. With ``checkpoint`` the path saves its finished points and the running solve's
    iterate, and an interrupted path goes on from them."""
    import torch

    from ...convex import CrossEntropyLoss
    from ...convex.solvers import SolveProgress, chain_callbacks, make_solver

    cfg: TransferConfig = ctx.config
    tdt = torch_dtype(cfg.dtype)
    x = _inputs(spec, data, "train")
    fit, val = data["fit_idx"], data["val_idx"]
    y_fit = data["y_train"][fit]
    c = data["n_classes"]
    if len(np.unique(y_fit)) != c:
        raise ValueError(f"the fit split misses a class ({len(np.unique(y_fit))} of {c}); increase n_train")
    g = None if gates is None else torch.as_tensor(gates, dtype=tdt)
    t0 = time.perf_counter()
    bmax = _beta_max(spec, x[fit], y_fit, gates, c, data["grid"], blocks, cfg.dtype)
    t_bmax = time.perf_counter() - t0
    form = _formulation(spec, data["grid"], blocks)
    fracs = list(cfg.beta_fracs)
    saved = None if checkpoint is None else checkpoint.load()
    done: dict[float, dict[str, Any]] = {} if saved is None else dict(saved["extra"].get("done", {}))
    with feature_cache(cfg.cache_gb * 2**30, 4 if cfg.dtype == "float32" else 8):
        problem = form.problem(CrossEntropyLoss(torch.as_tensor(y_fit)),
                               torch.as_tensor(np.ascontiguousarray(x[fit]), dtype=tdt), g, c)
        z = None
        for f in sorted(fracs, reverse=True):  # the path: each point warm-starts the next smaller β
            if f in done:
                z = done[f]["z"].to(problem.operator.device, tdt)
                continue
            beta = f * bmax
            resumed = None
            if checkpoint is not None:
                checkpoint.extra = {"done": done}
                resumed = checkpoint.start(f"beta={beta!r}")
            phase = None if resumed is None else resumed["phase"]
            progress = SolveProgress(cfg.val_tol, label=f"{spec.key} val β={beta:.3g}") if ctx.show_progress else None
            z0 = z if resumed is None else resumed["z"].to(problem.operator.device, tdt)
            n_iter = 0
            fista_done = 0 if resumed is None else int(resumed.get("n_iter", 0))
            for name, max_iter in _resumed_phases(phase, fista_done, cfg.max_iter):
                res = make_solver(name, problem, cfg.val_tol, max_iter, None).run(
                    problem.with_beta(beta), z0=z0, callback=chain_callbacks(progress, checkpoint))
                n_iter, z0 = n_iter + int(res.n_iter), res.z
                if res.status != "max_iter":
                    break
            z = res.z.detach()
            done[f] = {"z": z.cpu(), "status": res.status, "n_iter": n_iter,
                       "rel_gap": float(res.certificate.rel_gap), "objective": float(res.objective),
                       "solve_seconds": float(res.time) if checkpoint is None else checkpoint.seconds()}
            if checkpoint is not None:  # extra holds ``done`` itself: the finished point is saved with it
                checkpoint.save(z, "done", res.certificate.rel_gap)
        del problem
    op_val = head_operator(spec, torch.as_tensor(np.ascontiguousarray(x[val]), dtype=tdt), g, c, data["grid"], blocks)
    y_val = torch.as_tensor(data["y_train"][val])
    out = []
    with torch.no_grad():
        for f in fracs:
            rec = done[f]
            out.append({
                "beta_frac": f, "beta_max": bmax, "beta": f * bmax,
                **{k: rec[k] for k in ("status", "n_iter", "rel_gap", "objective", "solve_seconds")},
                "beta_max_seconds": t_bmax, "n_fit": len(fit),
                "val_acc": float((op_val.forward(rec["z"].to(op_val.device, tdt)).argmax(1) == y_val).double().mean()),
            })
    return out


def path_solution(checkpoint: SolveCheckpoint | None, frac: float) -> np.ndarray | None:
    """The solution :func:`validate_head` saved at ``frac``·β_max in ``checkpoint`` (``None`` if it holds none)."""
    rec = None if checkpoint is None else checkpoint.load()
    point = None if rec is None else rec["extra"].get("done", {}).get(frac)
    return None if point is None else point["z"].numpy()


def final_fit(ctx: RunContext, spec: HeadSpec, data: dict[str, Any], frac: float, gates: np.ndarray | None,
              blocks: int, checkpoint: SolveCheckpoint | None = None, z_init: np.ndarray | None = None
              ) -> dict[str, Any]:
    """The refit on the whole training set with the selected β: test predictions, twin size, gates for Adam.
    ``checkpoint``, ``z_init``: as in :func:`fit_head`."""
    cfg: TransferConfig = ctx.config
    est, rec = fit_head(spec, data, None, frac, gates, blocks, cfg.tol, cfg, verbose=ctx.show_progress,
                        checkpoint=checkpoint, z_init=z_init)
    t0 = time.perf_counter()
    pred = est.predict(_inputs(spec, data, "test"))
    rec["predict_seconds"] = time.perf_counter() - t0
    rec["train_acc"] = float(est.score(_inputs(spec, data, "train"), data["y_train"]))
    rec["test_pred"] = np.asarray(pred, dtype=np.int64)
    rec["test_acc"] = float((pred == data["y_test"]).mean())
    coef = np.asarray(est.coef_)
    blk = _blocks_of(spec, coef)
    ranks = _ranks(blk)
    rec["lifted_vars"] = int(coef.size)
    rec["heads"] = int(ranks.sum())
    rec["max_rank"] = int(ranks.max()) if ranks.size else 0
    rec["params"] = int((ranks * (blk.shape[-2] + blk.shape[-1])).sum())
    rec["twin_lift_error"] = _check_lift(spec, est)
    if rec["twin_lift_error"] > (1e-6 if cfg.dtype == "float64" else 1e-3):
        raise RuntimeError(f"{spec.key}: Z(recovered twin) differs from the certified solution by "
                           f"{rec['twin_lift_error']:.2e}; the lift used for Adam does not match this head")
    rec["coef_shape"] = list(coef.shape)
    rec["coef"] = coef
    rec["gates_kept"] = None if getattr(est, "gates_", None) is None else np.asarray(est.gates_)
    rec["n_gates_kept"] = 0 if rec["gates_kept"] is None else int(
        rec["gates_kept"].shape[est.formulation_.gate_axis])
    return rec


def reference_fit(ctx: RunContext, data: dict[str, Any]) -> dict[str, Any]:
    """The logistic baseline on the unpooled mean token, with the same β selection (a reference outside the claim)."""
    cfg: TransferConfig = ctx.config
    spec = HEADS["logreg"]
    wide = {**data, "mean_train": data["ref_train"], "mean_test": data["ref_test"]}
    val_acc = None
    frac = float(cfg.beta_fracs[0])
    if len(cfg.beta_fracs) > 1:
        val_acc, frac = max((r["val_acc"], r["beta_frac"]) for r in validate_head(ctx, spec, wide, None, 1))
    est, rec = fit_head(spec, wide, None, frac, None, 1, cfg.tol, cfg, verbose=ctx.show_progress)
    rec.update({"val_acc": val_acc, "n_features": int(wide["mean_train"].shape[1]),
                "test_acc": float(est.score(wide["mean_test"], data["y_test"]))})
    return rec


def adam_on_twin(ctx: RunContext, key: str, spec: HeadSpec, data: dict[str, Any], fit: dict[str, Any],
          blocks: int) -> dict[str, Any]:
    """Full-batch Adam on the twin (same gates and β, width = the recovered twin's) from a random initialisation."""
    import torch

    from ...convex import CrossEntropyLoss
    from ...training import Step, resume, train

    cfg: TransferConfig = ctx.config
    tdt = torch_dtype(cfg.dtype)
    x = torch.as_tensor(np.ascontiguousarray(_inputs(spec, data, "train")), dtype=tdt)
    y = torch.as_tensor(data["y_train"])
    c, s, d = data["n_classes"], int(data["x_train"].shape[1]), int(data["x_train"].shape[2])
    gates = None if fit["gates_kept"] is None else torch.as_tensor(fit["gates_kept"], dtype=tdt)
    itemsize = 4 if cfg.dtype == "float32" else 8
    with feature_cache(cfg.cache_gb * 2**30, itemsize):
        op = head_operator(spec, x, gates, c, data["grid"], blocks)
    h = max(int(fit["max_rank"]), 1)
    form = _formulation(spec, data["grid"], blocks)
    shape1, shape2 = form.twin_shapes(tuple(fit["coef_shape"]), h, s, d, c)
    gen = torch.Generator().manual_seed(ctx.seed_for(key))
    params = torch.nn.ParameterDict({
        "w1": torch.nn.Parameter(torch.randn(shape1, generator=gen, dtype=tdt)),
        "w2": torch.nn.Parameter(torch.randn(shape2, generator=gen, dtype=tdt)),
    })
    loss = CrossEntropyLoss(y)
    beta = float(fit["beta"])

    def logits(p: Any, operator: Any) -> Any:
        z = form.lift(p["w1"], p["w2"])
        if spec.family == "mlp":  # GatedMLPOperator.forward writes into a reused buffer: no autograd through it
            return torch.einsum("np,nd,pdc->nc", operator.masks, operator.x, z)
        return operator.forward(z)

    def objective(p: Any) -> Any:
        return loss.value(logits(p, op)) + beta * 0.5 * (p["w1"].square().sum() + p["w2"].square().sum())

    with torch.no_grad():  # the head is bilinear: scaling both factors by a scales the logits by a²
        std = float(logits(params, op).std())
        a = math.sqrt(1.0 / std) if std > 0 else 1.0
        params["w1"].mul_(a)
        params["w2"].mul_(a)
    opt = torch.optim.Adam(params.parameters(), lr=cfg.adam_lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.adam_steps, eta_min=cfg.adam_lr / 100)
    ck = ctx.checkpoint(key, every=cfg.checkpoint_every)
    start = resume(ck, model=params, optimizer=opt, scheduler=sched, generators=[gen])
    objs: list[float] = list(ck.extra.get("objs", []))
    seconds = float(ck.extra.get("seconds", 0.0))

    def record(step: Step) -> None:
        objs.append(float(step.loss))

    t0 = time.perf_counter()
    train(params, lambda p, _: objective(p), opt, cfg.adam_steps, start=start, scheduler=sched, checkpoint=ck,
          generators=[gen], extra=lambda: {"objs": objs, "seconds": seconds + time.perf_counter() - t0},
          on_step=record,
          progress=lambda span: ctx.progress(span, desc=f"Adam {key}", initial=span.start, total=span.stop))
    seconds += time.perf_counter() - t0
    with torch.no_grad():
        final = float(objective(params))
        train_acc = float((logits(params, op).argmax(1) == y).double().mean())
        xt = torch.as_tensor(np.ascontiguousarray(_inputs(spec, data, "test")), dtype=tdt)
        op_test = head_operator(spec, xt, gates, c, data["grid"], blocks)
        pred = logits(params, op_test).argmax(1).numpy()
    p_star, lower = float(fit["objective"]), float(fit["lower_bound"])
    keep = np.unique(np.linspace(0, max(len(objs) - 1, 0), min(len(objs), 500)).astype(int)) if objs else []
    return {
        "steps": cfg.adam_steps, "heads_per_block": h, "seconds": seconds, "final_objective": final,
        "best_objective": min([final, *objs]), "certified_objective": p_star, "lower_bound": lower,
        "rel_excess": (final - p_star) / abs(p_star), "below_lower_bound": bool(min([final, *objs]) < lower - 1e-9 *
                                                                                   abs(lower)),
        "train_acc": train_acc, "test_acc": float((pred == data["y_test"]).mean()),
        "test_pred": pred.astype(np.int64), "curve_step": [int(i) for i in keep],
        "curve": [objs[i] for i in keep],
    }
