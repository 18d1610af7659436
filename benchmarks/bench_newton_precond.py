"""Would a preconditioner make the semismooth Newton solver's conjugate gradients cheap? (BENCHMARKS.md §7)

The Newton solver's cost is the conjugate-gradient (CG) iterations on ``(I + σ B J Bᵀ) d = r``; each costs one
``H``-product (a forward, a prox-Jacobian and an adjoint). This script records every Newton system the solver meets
on a problem (its matrix as a closure, its right-hand side, its CG count) and replays them with preconditioned CG
(same start ``d = 0``, same relative residual 0.1). Costs are counted in ``H``-products, sketch columns included, and
converted to seconds with the measured time of one product and of one preconditioner build.

Preconditioners:

* ``nystrom-fresh``: the solver's randomized Nyström approximation (``newton._NystromPreconditioner``; Frangella,
  Tropp & Udell 2023, Alg. 2.1 and eq. (5.3)) of rank ℓ, sketched for every system (ℓ products each);
* ``nystrom-reuse ℓ/K``: the same sketch, kept across systems (rescaled to the new σ) and rebuilt only when a solve
  needs more than K iterations;
* ``dual K`` (single output only): what the solver does (``newton._DualPreconditioner``): the exact dual matrix
  ``I + σ S A J A* S`` from :meth:`GatedMLPOperator.dual_gram` and the penalty's ``block_jacobian``, one Cholesky,
  kept while ``J`` and ``σ`` drift, rebuilt after a solve that needs more than K iterations;
* ``averaged gram K`` (the gated MLP with several outputs): the dual matrix with ``J`` and ``S`` averaged,
  ``I + σ D (XXᵀ ∘ (M diag(a) Mᵀ)) D ⊗ I_c``, ``a_g`` the mean eigenvalue of the prox Jacobian on block g (Hutchinson,
  8 probes), ``D`` the per-sample scale ``√(tr S_n²/c)``; the only Gram-type choice there, since the exact matrix is
  ``(N·c)²``.

Systems are recorded with the solver's own preconditioners switched off, so "plain" is unpreconditioned CG.

Problems: the quickstart program (digits, 50 gates, cross-entropy, block nuclear norm, β = 1e-2), the gated MLP
family of §7 (squared loss, N = 1000, d = 50, 200 gates) at 3e-4 and 1e-2·β_max, and two token heads of §5 (gated
attention, gated Mixer; N = 400, 0.01·β_max).

    python benchmarks/bench_newton_precond.py [--quick] [--threads 1]
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

import attnduality.convex.solvers.newton as newton_mod
from _common import (
    base_parser,
    beta_max_np,
    distinct_gates,
    gaussian_gates,
    machine_info,
    out_name,
    planted_regression,
    print_table,
    set_threads,
    write_json,
)
from attnduality.convex import CompositeProblem, ConvexMLPClassifier, GatedMLPOperator, GroupL2, SquaredLoss
from attnduality.convex.solvers import SemismoothNewton

NAME = "bench_newton_precond"
Map = Callable[[torch.Tensor], torch.Tensor]


class System:
    """One Newton system as the solver met it: matrix, right-hand side, plain CG count, and the point ``(V, t)``
    whose prox Jacobian ``J`` it holds."""

    def __init__(self, apply: Map, rhs: torch.Tensor, n_cg: int, point: tuple[Any, torch.Tensor, float]) -> None:
        self.apply, self.rhs, self.n_cg = apply, rhs, n_cg
        self.jac, self.sigma = apply.__defaults__  # the solver's lambda binds (J, σ) as defaults
        self.ops = apply.__closure__[0].cell_contents  # and closes over the counted operator (A, S)
        self.penalty, self.v, self.t = point


def record(solve: Callable[[], Any]) -> list[System]:
    """Run ``solve()`` with the solver's own preconditioner off and its CG wrapped to keep every system."""
    from attnduality.convex.penalties import GroupL2, NuclearNorm

    systems: list[System] = []
    plain, cost, nbytes = newton_mod._cg, newton_mod._PRECOND_MAX_COST, newton_mod._NYSTROM_MAX_BYTES
    jacobians = {cls: cls.prox_jacobian for cls in (GroupL2, NuclearNorm)}
    last: list[tuple[Any, torch.Tensor, float]] = []

    def cg(apply: Map, rhs: torch.Tensor, rtol: float, max_iter: int, precond: Any = None) -> tuple[torch.Tensor, int]:
        x, it = plain(apply, rhs, rtol, max_iter)
        systems.append(System(apply, rhs.clone(), it, last[-1]))
        return x, it

    def keep(orig: Callable) -> Callable:
        def wrapped(self: Any, w: torch.Tensor, t: float) -> Any:
            last.append((self, w, t))
            return orig(self, w, t)

        return wrapped

    newton_mod._cg, newton_mod._PRECOND_MAX_COST, newton_mod._NYSTROM_MAX_BYTES = cg, 0, 0
    for cls, orig in jacobians.items():
        cls.prox_jacobian = keep(orig)
    try:
        solve()
    finally:
        newton_mod._cg, newton_mod._PRECOND_MAX_COST, newton_mod._NYSTROM_MAX_BYTES = plain, cost, nbytes
        for cls, orig in jacobians.items():
            cls.prox_jacobian = orig
    return systems


def pcg(apply: Map, rhs: torch.Tensor, precond: Map, rtol: float = 0.1, max_iter: int = 1000) -> int:
    """Preconditioned CG from 0 to relative residual ``rtol``; returns the iterations."""
    x, r = torch.zeros_like(rhs), rhs.clone()
    z = precond(r)
    p, rz = z.clone(), float((r * z).sum())
    stop = rtol**2 * float((r * r).sum())
    for it in range(1, max_iter + 1):
        ap = apply(p)
        alpha = rz / float((p * ap).sum())
        x += alpha * p
        r -= alpha * ap
        if float((r * r).sum()) <= stop:
            return it
        z = precond(r)
        rz_new = float((r * z).sum())
        p, rz = z + (rz_new / rz) * p, rz_new
    return max_iter


# --- preconditioners ------------------------------------------------------------------------------------------
def nystrom(sys_: System, rank: int) -> Any:
    """The solver's Nyström preconditioner (``newton._NystromPreconditioner``) of rank ``rank``, not yet sketched;
    one object per strategy, so successive sketches draw fresh random test matrices."""
    return newton_mod._NystromPreconditioner(sys_.ops, sys_.rhs.shape, sys_.rhs.dtype, sys_.rhs.device, rank)


def sketched(pre: Any, sys_: System) -> Any:
    pre.sketch(sys_.apply, sys_.sigma)
    return pre


def nystrom_inverse(pre: Any, sys_: System) -> Map:
    """``P⁻¹`` at the system's σ (the identity where the sketch failed)."""
    return pre.precond(sys_.sigma) or (lambda r: r)


def averaged_gram(sys_: System, gen: torch.Generator) -> torch.Tensor:
    """Cholesky factor of the dual matrix of the gated MLP with ``J`` and ``S`` averaged (module docstring)."""
    op, s = sys_.ops.op, sys_.ops.s
    zs = torch.randn((8, *op.z_shape), generator=gen, dtype=op.dtype)
    a = torch.stack([(z * sys_.jac(z)).sum((1, 2)) for z in zs]).mean(0) / (op.z_shape[1] * op.z_shape[2])
    k = (op.x @ op.x.T) * ((op.masks * a.clamp_min(0.0)) @ op.masks.T)
    if s is not None:
        dsc = torch.diagonal(s @ s, dim1=-2, dim2=-1).mean(-1).sqrt()
        k = dsc[:, None] * k * dsc[None, :]
    k = sys_.sigma * k
    k.diagonal().add_(1.0)
    return torch.linalg.cholesky(k)


def exact_dual(sys_: System) -> torch.Tensor | None:
    """Cholesky factor of ``I + σ S A J A* S`` as the solver forms it (single output)."""
    return newton_mod._DualPreconditioner(sys_.ops, sys_.penalty, sys_.v).factor(sys_.v, sys_.t, sys_.sigma)


def _cholesky_inverse(chol: torch.Tensor | None, _sys: System) -> Map:
    return (lambda r: r) if chol is None else (lambda r: torch.cholesky_solve(r, chol))


# --- replay ---------------------------------------------------------------------------------------------------
def replay_reuse(systems: list[System], build: Callable[[System], Any], make: Callable[[Any, System], Map],
                 limit: int, build_cost: float) -> dict:
    """Precondition with the last build; build before the first system whose plain CG needs more than ``limit``
    and again after any solve that needs more than ``limit``. Cost in H-products (a build counts ``build_cost``)."""
    state, total, builds = None, 0.0, 0
    for s in systems:
        if state is None and s.n_cg <= limit:
            total += s.n_cg
            continue
        if state is None:
            state, builds, total = build(s), builds + 1, total + build_cost
        it = pcg(s.apply, s.rhs, make(state, s))
        total += it
        if it > limit:
            state, builds, total = build(s), builds + 1, total + build_cost
    return {"products": total, "builds": builds}


def h_product_seconds(s: System, reps: int = 20) -> float:
    s.apply(s.rhs)
    t0 = time.perf_counter()
    for _ in range(reps):
        s.apply(s.rhs)
    return (time.perf_counter() - t0) / reps


def study(label: str, systems: list[System], quick: bool, mlp: bool) -> dict:
    gen = torch.Generator().manual_seed(0)
    plain = sum(s.n_cg for s in systems)
    t_h = h_product_seconds(systems[-1])
    row: dict[str, Any] = {"problem": label, "systems": len(systems), "plain": plain, "t_product": t_h}
    fresh = nystrom(systems[0], 50)
    row["nystrom-fresh 50"] = float(sum(50 + pcg(s.apply, s.rhs, nystrom_inverse(sketched(fresh, s), s))
                                        for s in systems))
    for rank, limit in ((30, 40), (60, 20), (60, 40), (100, 20), (100, 40)):
        if quick and rank == 100:
            continue
        pre = nystrom(systems[0], rank)
        r = replay_reuse(systems, lambda s, p=pre: sketched(p, s), nystrom_inverse, limit, rank)
        row[f"nystrom-reuse {rank}/{limit}"] = r["products"]
    if mlp:
        single = systems[-1].rhs.shape[-1] == 1
        build = exact_dual if single else (lambda s: averaged_gram(s, gen))
        t0 = time.perf_counter()
        build(systems[-1])
        t_build = time.perf_counter() - t0
        row["build s"] = t_build
        for limit in (8, 20):
            rep = replay_reuse(systems, build, _cholesky_inverse, limit, t_build / t_h)
            row[f"{'dual' if single else 'averaged gram'} {limit}"] = rep["products"]
    print(f"{label}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()),
          flush=True)
    return row


# --- problems -------------------------------------------------------------------------------------------------
def quickstart_systems() -> list[System]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x, _, y, _ = train_test_split(digits.data / 16.0, digits.target, test_size=0.25, random_state=0)
    est = ConvexMLPClassifier(n_gates=50, beta=1e-2, tol=1e-6, max_iter=100, random_state=0, solver="newton")
    return record(lambda: est.fit(x, y))


def family_systems(n: int, d: int, p: int, frac: float, seed: int) -> list[System]:
    x, y = planted_regression(n, d, seed)
    gates = distinct_gates(x, gaussian_gates(d, p, seed))
    op = GatedMLPOperator(torch.tensor(x), torch.tensor((x @ gates >= 0).astype(np.float64)), 1)
    beta = frac * beta_max_np(x, y, gates)
    prob = CompositeProblem(SquaredLoss(torch.tensor(y[:, None])), op, GroupL2(axes=(1, 2)), beta)
    return record(lambda: SemismoothNewton(tol=1e-6).run(prob))


def head_systems(key: str, n: int, seed: int) -> list[System]:
    import bench_heads_adam as bh
    from bench_newton import _head_estimator

    spec = bh.HEADS[key]
    x, y = bh.planted_data(spec, n, 16, 8, 4, seed)
    gates = bh.sample_gates(spec, 16, 8, spec.n_gates, seed)
    bmax = bh.beta_max(spec, torch.as_tensor(x, dtype=bh.DTYPE), torch.as_tensor(y), gates, 4)
    est = _head_estimator(bh, spec, gates, 0.01 * bmax, "newton")

    def fit() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(x, y)

    return record(fit)


def main() -> None:
    args = base_parser(__doc__.splitlines()[0]).parse_args()
    set_threads(args.threads)
    rows = []
    n_fam, p_fam = (300, 50) if args.quick else (1000, 200)
    rows.append(study("quickstart (c=10, CE)", quickstart_systems(), args.quick, mlp=True))
    for frac in (3e-4, 1e-2):
        rows.append(study(f"gated MLP squared {frac:g}", family_systems(n_fam, 50, p_fam, frac, args.seed), args.quick,
                          mlp=True))
    for key in ("attn_gated", "mixer_gated"):
        rows.append(study(f"{key} 0.01", head_systems(key, 100 if args.quick else 400, args.seed), args.quick,
                          mlp=False))
    cols = list(dict.fromkeys(k for r in rows for k in r if k not in ("problem", "systems", "plain", "t_product",
                                                                      "build s")))
    table = [[r["problem"], r["systems"], r["plain"], f"{r['t_product'] * 1e3:.2f}"]
             + [f"{r[c] / r['plain']:.2f}" if c in r else "–" for c in cols] for r in rows]
    print_table(["problem", "systems", "plain CG products", "ms / product"] + [f"{c} (× plain)" for c in cols], table,
                title="H-products of each preconditioner relative to plain CG (< 1: cheaper)")
    write_json(out_name(NAME, args.quick), {"machine": machine_info(), "args": vars(args), "rows": rows})


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main()
