"""Cost of one operator pass (forward + adjoint) of every transfer head at a chosen size (issue 15 planning).

The transfer experiment's solves need hundreds to thousands of passes over the training set per head; this times
one pass on random token features of the given shape (lifted features recomputed chunk by chunk unless they fit
``--cache-gb``, as in the experiment), so that a run's size can be chosen before it is started. Prints seconds per
pass and the lifted feature memory each head would need to cache.

    python benchmarks/bench_transfer_cost.py --n 2400 --s 32 --d 100 --c 2 [--heads attn_gated ...] [--threads 1]
"""

from __future__ import annotations

import time

import numpy as np
import torch

from _common import base_parser, machine_info, out_name, print_table, set_threads, write_json
from attnduality.convex.operators import features
from attnduality.experiments.transfer import HEADS, TransferConfig, effective_blocks, head_operator, sample_head_gates

NAME = "bench_transfer_cost"


def main() -> None:
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2400)
    p.add_argument("--s", type=int, default=32)
    p.add_argument("--d", type=int, default=100)
    p.add_argument("--c", type=int, default=2)
    p.add_argument("--grid", type=int, nargs="+", default=None, help="token grid of the FNO heads (default: (s,))")
    p.add_argument("--heads", nargs="+", default=list(HEADS))
    p.add_argument("--gates-attention", type=int, default=5)
    p.add_argument("--gates-mlp", type=int, default=100)
    p.add_argument("--gates-mixer", type=int, default=100)
    p.add_argument("--gates-fno", type=int, default=100)
    p.add_argument("--bfno-blocks", type=int, default=5)
    p.add_argument(
        "--cache-gb",
        type=float,
        default=0.0,
        help="keep lifted features in memory up to this size, as the experiment's cache_gb does (0: the library "
        "default of 128 MiB)",
    )
    args = p.parse_args()
    set_threads(args.threads)
    if args.cache_gb > 0:
        features.CACHE_LIMIT = max(features.CACHE_LIMIT, int(args.cache_gb * 2**30 // 8))
    cfg = TransferConfig(
        gates_attention=args.gates_attention,
        gates_mlp=args.gates_mlp,
        gates_mixer=args.gates_mixer,
        gates_fno=args.gates_fno,
        bfno_blocks=args.bfno_blocks,
    )
    grid = tuple(args.grid) if args.grid else (args.s,)
    rng = np.random.default_rng(args.seed)
    x_tok = torch.as_tensor(rng.standard_normal((args.n, args.s, args.d)))
    x_mean = x_tok.mean(1)
    rows, records = [], []
    for key in args.heads:
        spec = HEADS[key]
        blocks = effective_blocks(args.bfno_blocks, args.d, args.c) if spec.bfno else 1
        g = sample_head_gates(spec, args.s, args.d, blocks, cfg, args.seed)
        x = x_tok if spec.tokens else x_mean
        t0 = time.perf_counter()
        op = head_operator(spec, x, None if g is None else torch.as_tensor(g), args.c, grid, blocks)
        build = time.perf_counter() - t0
        z = torch.randn(op.z_shape, dtype=torch.float64)
        t0 = time.perf_counter()
        u = op.forward(z)
        op.adjoint(torch.randn_like(u))
        one = time.perf_counter() - t0
        lifted = getattr(op, "n_features_lifted", None)
        cache_gb = None if lifted is None else args.n * lifted * 8 / 2**30
        rec = {"head": key, "build_s": build, "pass_s": one, "z_size": int(np.prod(op.z_shape)), "cache_gb": cache_gb}
        records.append(rec)
        rows.append([key, f"{build:.2f}", f"{one:.2f}", rec["z_size"], "-" if cache_gb is None else f"{cache_gb:.1f}"])
        print(rows[-1], flush=True)
    title = (
        f"one forward + adjoint, N={args.n}, s={args.s}, d={args.d}, c={args.c}, {args.threads} thread(s), "
        f"cache {args.cache_gb:g} GB"
    )
    print_table(["head", "build s", "pass s", "|Z|", "lifted cache GB"], rows, title=title)
    write_json(
        out_name(f"{NAME}_n{args.n}_s{args.s}_d{args.d}_cache{args.cache_gb:g}", False),
        {"machine": machine_info(), "args": vars(args), "records": records},
    )


if __name__ == "__main__":
    main()
