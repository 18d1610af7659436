"""Primal-Attention vs softmax attention: forward+backward time and peak memory over the sequence length.

B = 1, embed 512, 8 heads, N = 64 … 16384 (``--quick``: up to 2048), float32. Implementations, each measured in its
own Python process (so peak memory is that implementation's alone):

* ``primal``: :class:`attnduality.nn.PrimalAttention` (s = ``--rank``, rank_multi 10, official defaults);
* ``mha``: :class:`torch.nn.MultiheadAttention` with ``need_weights=False`` (its fused
  ``scaled_dot_product_attention`` path);
* ``explicit``: softmax attention that forms the (B, H, N, N) matrix
  (:class:`attnduality.nn.SoftmaxAttention` with ``implementation="explicit"``); skipped where its estimated peak
  exceeds ``--max-explicit-gib``;
* ``official``: the official Primal-Attention layer (``PrimalAttention_LRA/PrimalFormer/attentions/attention.py``,
  ``primal_cos``, same s and rank_multi), loaded from a local checkout given by ``--official PATH`` or the
  ``PRIMAL_ATTENTION_REPO`` environment variable (never vendored; the row is absent without it). Its row also reports
  the max |difference| between its output and ours given the same weights;
* ``bound``: ``Linear(512 → 1024)`` alone (the query/key projection, ≈ 4·N·D² flops forward, 12·N·D² forward +
  backward), the part of our layer no reformulation removes.

Time: one warm-up call, then the minimum over up to ``--repeats`` calls of ``y = layer(x); y.sum().backward()`` with
``x`` requiring a gradient (a middle layer of a network). Both wall time and the process's CPU time (user + system,
page faults included) are recorded; with one thread the table reports CPU time by default, which other processes on a
shared machine barely disturb (wall time then measures the neighbours' load as much as the layer).

Peak memory: the rise of the process's peak resident set (``VmHWM``, reset through ``/proc/self/clear_refs``) over
its resident set just before one forward+backward; the workers run with ``MALLOC_MMAP_THRESHOLD_=65536`` so that
freed tensors go back to the OS and the peak is that of the live tensors. Inputs, parameters and their gradients
from the warm-up are excluded from the baseline; parameter gradients are freed before the measured call.

    python benchmarks/bench_primal.py [--quick] [--threads 1] [--rank 20] [--official PATH] [--lengths 512 8192]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from _common import base_parser, machine_info, out_name, print_table, set_threads, write_json

NAME = "bench_primal"
D, H = 512, 8
IMPLS = ("primal", "mha", "explicit", "official", "bound")
OFFICIAL_ENV = "PRIMAL_ATTENTION_REPO"
OFFICIAL_FILE = "PrimalAttention_LRA/PrimalFormer/attentions/attention.py"


# ----------------------------------------------------------------------------------------------------------------
# worker: one implementation at one length, in a fresh process
# ----------------------------------------------------------------------------------------------------------------
def _status_mib(key: str) -> float:
    text = Path("/proc/self/status").read_text()
    m = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    if m is None:
        raise RuntimeError(f"{key} not in /proc/self/status")
    return int(m.group(1)) / 1024.0


def _load_official(root: str) -> Any:
    path = Path(root) / OFFICIAL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist (is {root} a PrimalAttention checkout?)")
    spec = importlib.util.spec_from_file_location("_official_lra_attention", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _official_layer(root: str, n: int, rank: int) -> nn.Module:
    config = {
        "attention_grad_checkpointing": False,
        "transformer_dim": D,
        "head_dim": D // H,
        "num_head": H,
        "attn_type": "primal_cos",
        "max_seq_len": n,
        "low_rank": rank,
        "rank_multi": 10,
        "trace_no_x": True,
        "attention_dropout": 0.0,
    }
    return _load_official(root).Attention(config)


def _ours_from_official(official: nn.Module, rank: int) -> nn.Module:
    from attnduality.nn import PrimalAttention

    ours = PrimalAttention(D, H, rank)
    with torch.no_grad():
        ours.qk_proj.weight.copy_(torch.cat([official.W_q.weight, official.W_k.weight]))
        ours.qk_proj.bias.copy_(torch.cat([official.W_q.bias, official.W_k.bias]))
        ours.we.copy_(official.We)
        ours.wr.copy_(official.Wr)
        ours.lambdas.copy_(official.attn.Lambda)
        ours.concat.load_state_dict(official.attn.concate_weight.state_dict())
        ours.out_proj.load_state_dict(official.ff.state_dict())
    return ours


def worker(impl: str, n: int, rank: int, repeats: int, official_root: str | None) -> dict[str, Any]:
    from attnduality.nn import PrimalAttention, SoftmaxAttention

    torch.manual_seed(0)
    x = torch.randn(1, n, D, requires_grad=True)
    record: dict[str, Any] = {"impl": impl, "n": n}
    if impl == "primal":
        layer: nn.Module = PrimalAttention(D, H, rank)
        call = lambda: layer(x)  # noqa: E731
    elif impl == "mha":
        layer = nn.MultiheadAttention(D, H, batch_first=True)
        call = lambda: layer(x, x, x, need_weights=False)[0]  # noqa: E731
    elif impl == "explicit":
        layer = SoftmaxAttention(D, H, implementation="explicit")
        call = lambda: layer(x)  # noqa: E731
    elif impl == "bound":
        layer = nn.Linear(D, 2 * D)
        call = lambda: layer(x)  # noqa: E731
    elif impl == "official":
        if not official_root:
            raise ValueError("official needs --official PATH or PRIMAL_ATTENTION_REPO")
        layer = _official_layer(official_root, n, rank)
        ones = torch.ones(1, n)
        call = lambda: layer(x, ones)[0]  # noqa: E731
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            ours = _ours_from_official(layer, rank)
            record["max_abs_diff_vs_ours"] = float((ours(x) - call()).abs().max())
    else:
        raise ValueError(f"unknown implementation {impl!r}")

    def step() -> tuple[float, float]:
        c0, t0 = time.process_time(), time.perf_counter()
        y = call()
        y.sum().backward()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        x.grad = None
        for p in layer.parameters():
            p.grad = None
        return dt, dc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.cuda.amp.autocast in the official code
        warm = step()[0]
        base = _status_mib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        step()
        record["peak_mib"] = _status_mib("VmHWM") - base
        reps = max(1, min(repeats, int(20.0 / max(warm, 1e-3))))
        walls, cpus = zip(*(step() for _ in range(reps)), strict=True)
    record.update(
        wall_s=min(walls), wall_median_s=sorted(walls)[reps // 2], cpu_s=min(cpus), repeats=reps, warmup_s=warm
    )
    return record


# ----------------------------------------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------------------------------------
def explicit_gib(n: int) -> float:
    """Rough peak of explicit attention: about 3 live (H, N, N) float32 tensors during the backward pass."""
    return 3 * H * n * n * 4 / 2**30


def primal_flops(n: int, rank: int) -> float:
    """Forward flops of our layer (projections, scores, folded output); forward + backward ≈ 3×."""
    s = rank
    qk = 2 * n * D * 2 * D
    scores = 2 * n * 2 * D * s
    folded = 2 * n * 2 * H * s * D if 2 * s * (H - 1) < D else 2 * n * (2 * s * D + D * D)
    return float(qk + scores + folded)


def run_one(impl: str, n: int, args: argparse.Namespace, official: str | None) -> dict[str, Any]:
    env = dict(os.environ)
    env["MALLOC_MMAP_THRESHOLD_"] = "65536"  # freed tensors return to the OS: VmHWM tracks live memory
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(args.threads)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", impl, str(n)]
    cmd += ["--threads", str(args.threads), "--rank", str(args.rank), "--repeats", str(args.repeats)]
    if official:
        cmd += ["--official", official]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        return {"impl": impl, "n": n, "error": proc.stderr.strip().splitlines()[-1:] or [f"rc {proc.returncode}"]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def crossover(results: dict[tuple[str, int], dict[str, Any]], lengths: list[int], other: str, key: str) -> str:
    """Smallest measured N from which ``primal`` stays faster than ``other``, interpolated in log N."""
    rows = [
        (n, results[("primal", n)][key], results[(other, n)][key])
        for n in lengths
        if key in results.get(("primal", n), {}) and key in results.get((other, n), {})
    ]
    if not rows:
        return "n/a"
    if all(p < o for _, p, o in rows):
        return f"< {rows[0][0]} (faster at every measured N)"
    if rows[-1][1] >= rows[-1][2]:
        return f"> {rows[-1][0]} (never faster)"
    i = max(k for k, (_, p, o) in enumerate(rows) if p >= o)
    (n0, p0, o0), (n1, p1, o1) = rows[i], rows[i + 1]
    r0, r1 = math.log(p0 / o0), math.log(p1 / o1)
    n_star = math.exp(math.log(n0) + (math.log(n1) - math.log(n0)) * r0 / (r0 - r1))
    return f"≈ {n_star:.0f} (between {n0} and {n1})"


def main() -> None:
    p = base_parser(__doc__.split("\n")[0])
    p.add_argument("--rank", type=int, default=20, help="s of both primal layers (rank_multi 10)")
    p.add_argument(
        "--repeats", type=int, default=5, help="timed calls per point (fewer for slow points: about 20 s each)"
    )
    p.add_argument("--lengths", type=int, nargs="+", default=None, help="sequence lengths (default 64 … 16384)")
    p.add_argument("--official", default=None, help=f"official checkout (default: ${OFFICIAL_ENV})")
    p.add_argument("--max-explicit-gib", type=float, default=12.0, help="skip explicit attention above this estimate")
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    p.add_argument(
        "--metric",
        choices=("cpu", "wall"),
        default=None,
        help="time reported: process CPU time (default with 1 thread: robust on a shared machine) or wall time",
    )
    p.add_argument("--worker", nargs=2, metavar=("IMPL", "N"), help=argparse.SUPPRESS)
    args = p.parse_args()
    set_threads(args.threads)
    official = args.official or os.environ.get(OFFICIAL_ENV) or None
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]), args.rank, args.repeats, official)))
        return

    metric = args.metric or ("cpu" if args.threads == 1 else "wall")
    key = f"{metric}_s"
    lengths = args.lengths or ([64, 256, 512, 1024, 2048] if args.quick else [2**k for k in range(6, 15)])
    impls = [i for i in args.impls if i != "official" or official]
    if "official" in args.impls and not official:
        print(f"official layer skipped: pass --official PATH or set {OFFICIAL_ENV} to a PrimalAttention checkout")
    results: dict[tuple[str, int], dict[str, Any]] = {}
    for n in lengths:
        for impl in impls:
            if impl == "explicit" and explicit_gib(n) > args.max_explicit_gib:
                results[(impl, n)] = {"impl": impl, "n": n, "skipped": f"est. {explicit_gib(n):.0f} GiB"}
                continue
            r = run_one(impl, n, args, official)
            results[(impl, n)] = r
            brief = r.get("error") or f"wall {r['wall_s']:.4f} s, cpu {r['cpu_s']:.4f} s, {r['peak_mib']:.1f} MiB"
            print(f"N={n:6d} {impl:9s} {brief}", flush=True)

    def cell(impl: str, n: int, key: str) -> Any:
        r = results.get((impl, n), {})
        return r.get(key, r.get("skipped", "error" if "error" in r else "—"))

    headers = ["N"] + [f"{i} s" for i in impls] + [f"{i} MiB" for i in impls]
    headers += ["MHA / primal time", "explicit / primal mem", "primal / bound time", "primal GFLOP/s"]
    rows = []
    for n in lengths:
        pr = results.get(("primal", n), {})
        ratio = lambda a, b: a / b if isinstance(a, float) and isinstance(b, float) else "—"  # noqa: E731
        gflops = 3 * primal_flops(n, args.rank) / pr[key] / 1e9 if key in pr else "—"
        rows.append(
            [n]
            + [cell(i, n, key) for i in impls]
            + [cell(i, n, "peak_mib") for i in impls]
            + [
                ratio(cell("mha", n, key), pr.get(key)),
                ratio(cell("explicit", n, "peak_mib"), pr.get("peak_mib")),
                ratio(pr.get(key), cell("bound", n, key)),
                gflops,
            ]
        )
    title = (
        f"B=1, D={D}, H={H}, s={args.rank}, float32, {args.threads} thread(s), fwd+bwd seconds "
        f"({metric} time, min over repeats), peak MiB"
    )
    table = print_table(headers, rows, title=title)
    cross = {o: crossover(results, lengths, o, key) for o in ("mha", "official") if o in impls}
    for o, c in cross.items():
        print(f"primal faster than {o} from N {c}")
    diffs = {n: results[("official", n)].get("max_abs_diff_vs_ours") for n in lengths if ("official", n) in results}
    if diffs:
        print("max |official - ours| (same weights):", {n: f"{d:.2e}" for n, d in diffs.items() if d is not None})
    payload = {
        "args": vars(args),
        "machine": machine_info(),
        "results": [results[k] for k in sorted(results, key=lambda k: (k[1], k[0]))],
        "crossover": cross,
        "table": table,
    }
    print("wrote", write_json(out_name(NAME, args.quick), payload))


if __name__ == "__main__":
    main()
