"""Gated self-attention head at the paper's size, solved to a certified relative duality gap, on 2 cores.

Sahiner et al. §5 sizes: N = 50,000 samples, s = 196 tokens, d = 100 features, c = 100 classes, m = 5 gates (each lifted
block is 10⁴ × 10⁴). Features are synthetic (the paper's are not available offline) and live in a memory-mapped float32
``.npy`` file (3.9 GB) streamed chunk by chunk: tokens are ``x = (A z + 0.5 ε)/√d`` with a 20-dimensional latent ``z``
per token; labels come from a planted gated-attention teacher with the same gates (two heads per gate) plus Gumbel
noise. The solver is :class:`~attnduality.convex.solvers.subspace.SubspaceSolver` (cross-entropy, float32) with β =
``--beta-frac`` × β_max, β_max estimated on the first ``--direction-samples`` samples, warm-started on the problems over
the first ``--warm-samples`` samples (default 1,000 then 10,000). Reported: wall time, peak resident memory
(``ru_maxrss``, includes mapped file pages the process touched), the full-problem certificates and the objective curve
(``benchmarks/out/paper_scale.png``).

    python benchmarks/bench_paper_scale.py [--quick] [--n N] [--threads 2] [--seed 0]
"""

from __future__ import annotations

import math
import resource
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from _common import OUT_DIR, base_parser, machine_info, out_name, set_threads, write_json
from attnduality.convex.losses import CrossEntropyLoss
from attnduality.convex.operators.attention import sample_attention_gates
from attnduality.convex.operators.streamed_attention import StreamedGatedAttention
from attnduality.convex.solvers.factored import top_singular_pairs
from attnduality.convex.solvers.subspace import SubspaceSolver
from attnduality.convex.streaming import MemmapTokens, write_tokens

NAME = "bench_paper_scale"


def make_tokens(path, n: int, s: int, d: int, seed: int) -> MemmapTokens:
    """Synthetic token features (float32), written chunk by chunk (reused if the file exists with this shape)."""
    if path.exists():
        mm = MemmapTokens(path)
        if (mm.n_samples, mm.n_tokens, mm.n_features) == (n, s, d):
            return mm
    mix = np.random.default_rng([seed, 0]).standard_normal((20, d)).astype(np.float32)

    def fill(lo: int, hi: int) -> np.ndarray:
        rng = np.random.default_rng([seed, 1, lo])
        z = rng.standard_normal((hi - lo, s, 20), dtype=np.float32)
        eps = rng.standard_normal((hi - lo, s, d), dtype=np.float32)
        return (z @ mix + 0.5 * eps) / np.float32(math.sqrt(d))

    return write_tokens(path, (n, s, d), fill, chunk=512, desc="writing tokens")


def teacher_labels(head: StreamedGatedAttention, c: int, seed: int) -> torch.Tensor:
    """Labels of a planted gated-attention teacher (2 heads per gate) with Gumbel noise."""
    m, d = head.n_gates, head.n_features
    gen = torch.Generator().manual_seed(seed + 7)
    q = torch.linalg.qr(torch.randn(m, d * d, 2, generator=gen)).Q
    b = torch.randn(m, d * c, 2, generator=gen)
    h = head.subspace_features(q)
    logits = torch.einsum("qnjl,jlbq->nb", h, b.reshape(m, d, c, 2))
    logits = 3.0 * logits / logits.std()
    gumbel = -torch.log(-torch.log(torch.rand(logits.shape, generator=gen).clamp_min(1e-12)))
    return (logits + gumbel).argmax(dim=1)


def main() -> None:
    p = base_parser(__doc__)
    p.set_defaults(threads=2)
    p.add_argument("--beta-frac", type=float, default=0.3, help="β as a fraction of the estimated β_max")
    p.add_argument("--tol", type=float, default=1e-3, help="target full relative duality gap")
    p.add_argument("--n", type=int, default=None, help="number of samples (default: the paper's 50,000)")
    p.add_argument(
        "--direction-samples", type=int, default=1000, help="samples for β_max and the first directions (0: all)"
    )
    p.add_argument(
        "--warm-samples",
        type=int,
        nargs="*",
        default=[1000, 10000],
        help="solve on these many first samples first, in turn (none: no warm start)",
    )
    p.add_argument("--rank0", type=int, default=8)
    p.add_argument("--grow", type=int, default=8)
    p.add_argument("--max-rank", type=int, default=24)
    p.add_argument("--max-time", type=float, default=None, help="stop after the first certificate past this (s)")
    args = p.parse_args()
    set_threads(args.threads)
    n, s, d, c, m = (2000, 49, 20, 10, 5) if args.quick else (50_000, 196, 100, 100, 5)
    n = args.n if args.n is not None else n
    n_dir = min(args.direction_samples, n // 4) if args.quick else args.direction_samples
    n_dir = n_dir if n_dir > 0 else n  # 0: every adjoint uses all samples
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tokens = make_tokens(OUT_DIR / f"paper_tokens_{n}x{s}x{d}_seed{args.seed}.npy", n, s, d, args.seed)
    gates = sample_attention_gates(d, m, args.seed, torch.float64).float()
    head = StreamedGatedAttention(tokens, gates, c, scale=1.0, dtype=torch.float32, progress=True)
    y = teacher_labels(head, c, args.seed)
    loss = CrossEntropyLoss(y)
    t_data = time.perf_counter() - t0
    print(f"data ready in {t_data:.0f}s ({n}x{s}x{d} float32, {len(torch.unique(y))} classes present)", flush=True)

    t1 = time.perf_counter()
    g0 = loss.grad(torch.zeros(n, c, dtype=torch.float32))
    pairs = head.adjoint_pairs(g0, n_dir)
    # one scan gives both β_max (estimated on n_dir samples) and the solver's first directions
    tops = [top_singular_pairs(head.expand_pairs(pairs, j), k=args.rank0, tol=1e-4) for j in range(m)]
    beta_max = max(float(t[0][0]) for t in tops) * (n / n_dir)
    basis0 = torch.stack([t[1] for t in tops])
    del pairs, tops
    beta = args.beta_frac * beta_max
    t_beta = time.perf_counter() - t1
    print(f"β_max ≈ {beta_max:.4g} (on {n_dir} samples, {t_beta:.0f}s); β = {beta:.4g}", flush=True)

    solver = SubspaceSolver(
        tol=args.tol,
        rank0=args.rank0,
        grow=args.grow,
        max_rank=args.max_rank,
        inner_tol=0.1 * args.tol,
        direction_samples=n_dir,
        warm_samples=[v for v in args.warm_samples if v < n] or None,
        max_time=args.max_time,
        seed=args.seed,
        verbose=True,
    )
    res = solver.run(head, loss, beta, basis0=basis0)
    t_total = time.perf_counter() - t1
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    cert = res.certificate
    with torch.no_grad():
        z_rank = [
            int((torch.linalg.svdvals(res.coef[j].double()) > 1e-6 * float(res.coef.abs().max())).sum())
            for j in range(m)
        ]
    row = {
        "n": n,
        "s": s,
        "d": d,
        "c": c,
        "gates": m,
        "beta": beta,
        "beta_max_est": beta_max,
        "beta_frac": args.beta_frac,
        "status": res.status,
        "rel_gap": cert.rel_gap if cert else None,
        "primal": cert.primal if cert else None,
        "dual": cert.dual if cert else None,
        "sigma_over_beta": cert.grad_dual_norm / beta if cert else None,
        "rounds": res.n_rounds,
        "basis_rank": int(res.basis.shape[-1]),
        "solution_rank_per_gate": z_rank,
        "solve_seconds": t_total,
        "data_seconds": t_data,
        "peak_rss_gb": rss_gb,
        "history": res.history,
    }
    print(
        f"\nstatus {res.status}: relative gap {row['rel_gap']:.3e} after {t_total / 60:.1f} min (plus "
        f"{t_data / 60:.1f} min to write/label the data), peak RSS {rss_gb:.2f} GB, ranks {z_rank}",
        flush=True,
    )
    name = NAME if args.beta_frac == 0.3 else f"{NAME}_beta{args.beta_frac:g}"
    write_json(out_name(name, args.quick), {"machine": machine_info(), "args": vars(args), "result": row})
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.8))
    hist = res.history
    inner_n, cert_n = np.array(hist["inner_samples"]), np.array(hist["samples"])
    for level in sorted(set(cert_n.tolist())):
        full = level == n
        lab = f"N = {int(level)}" + ("" if full else " (warm start, subsample problem)")
        sel, t_in = inner_n == level, np.array(hist["inner_time"]) / 60
        ax[0].plot(t_in[sel], np.array(hist["inner_objective"])[sel], ".-", ms=2, label=lab)
        sel, t_cert = cert_n == level, np.array(hist["time"]) / 60
        ax[0].plot(t_cert[sel], np.array(hist["dual"])[sel], "s", color=ax[0].lines[-1].get_color())
        ax[1].semilogy(t_cert[sel], np.array(hist["rel_gap"])[sel], "o-", label=lab)
    ax[0].set_xlabel("minutes")
    ax[0].set_ylabel("objective (line: primal, ■: certified bound)")
    ax[0].legend(fontsize=7)
    ax[1].axhline(args.tol, color="k", ls="--", lw=0.8)
    ax[1].set_xlabel("minutes")
    ax[1].set_ylabel("certified relative duality gap")
    ax[1].legend(fontsize=7)
    fig.suptitle(f"gated self-attention N={n}, s={s}, d={d}, c={c}, m={m} (synthetic features)")
    fig.tight_layout()
    fig.savefig(OUT_DIR / f"{name.removeprefix('bench_')}{'_quick' if args.quick else ''}.png", dpi=120)


if __name__ == "__main__":
    main()
