"""The data-parallel demo on real data (scikit-learn's bundled 8×8 digits): a PrimalFormer trained with
:func:`attnduality.distributed.train_classifier`, and a gated-ReLU head solved by FISTA over sharded samples.

Run it under torchrun (``--nproc_per_node 1`` for the single process)::

    torchrun --nproc_per_node 2 --master_addr 127.0.0.1 --master_port 29500 \\
        -m attnduality.distributed demo --task primalformer --out runs/distributed-primalformer

Results and timings: ``docs/results/distributed.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

from ..convex.operators.base import LinearOperator
from ..distributed import ShardedOperator, init_distributed, shard_range, shutdown, train_classifier, world

__all__ = [
    "ConvexDemo",
    "PrimalFormerDemo",
    "build_primalformer",
    "digits_sequences",
    "main",
    "primalformer_data",
    "run_convex",
    "run_primalformer",
]


def digits_sequences(n: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 8×8 digits as sequences: 8 tokens (image rows) of 8 pixels / 16, float64; ``n`` shuffled ones."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.data / 16.0, dtype=torch.float64).reshape(-1, 8, 8)
    y = torch.as_tensor(d.target, dtype=torch.long)
    if n is not None:
        if not isinstance(n, int) or not 1 <= n <= x.shape[0]:
            raise ValueError(f"n must be in [1, {x.shape[0]}], got {n!r}")
        idx = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:n]
        x, y = x[idx], y[idx]
    return x, y


@dataclass(frozen=True)
class PrimalFormerDemo:
    """A small PrimalFormer on digit rows (8 tokens × 8 pixels), float64, dropout 0 (so world sizes agree)."""

    n_train: int = 1024
    n_test: int = 512
    embed_dim: int = 32
    num_heads: int = 2
    num_layers: int = 2
    rank: int = 4
    rank_multi: int = 2
    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-2
    optimizer: str = "radam"
    weight_decay: float = 0.0
    ksvd_weight: float = 0.1
    ksvd_per_sample: bool = False
    ksvd_trace: str = "params"
    padding: bool = False
    """mask a random tail of 0–3 rows of each sequence as padding (exercises the token-count weighting)"""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_train + self.n_test > 1797:
            raise ValueError(f"n_train + n_test must be <= 1797 digits, got {self.n_train + self.n_test}")


def primalformer_data(cfg: PrimalFormerDemo) -> tuple[TensorDataset, tuple[torch.Tensor, ...]]:
    """Training dataset ``(x, [mask,] y)`` and test tensors of the demo (seeded split of the digits)."""
    x, y = digits_sequences(cfg.n_train + cfg.n_test, cfg.seed)
    masks = None
    if cfg.padding:
        tail = torch.randint(0, 4, (x.shape[0],), generator=torch.Generator().manual_seed(cfg.seed + 1))
        masks = torch.arange(8)[None, :] >= (8 - tail)[:, None]
    tr, te = slice(0, cfg.n_train), slice(cfg.n_train, None)
    if masks is None:
        return TensorDataset(x[tr], y[tr]), (x[te], None, y[te])
    return TensorDataset(x[tr], masks[tr], y[tr]), (x[te], masks[te], y[te])


def build_primalformer(cfg: PrimalFormerDemo) -> nn.Module:
    """The demo's PrimalFormer, initialised from ``cfg.seed``, in float64."""
    from ..nn.transformer import PrimalFormer

    torch.manual_seed(cfg.seed)
    return PrimalFormer(
        10,
        cfg.embed_dim,
        cfg.num_heads,
        cfg.num_layers,
        rank=cfg.rank,
        rank_multi=cfg.rank_multi,
        input_dim=8,
        max_len=8,
        dropout=0.0,
        pooling="mean",
    ).double()


def run_primalformer(cfg: PrimalFormerDemo, progress: bool = False) -> dict[str, Any]:
    """Train the demo model in the current process group; final parameters, losses, accuracy and time."""
    dataset, (x_te, m_te, y_te) = primalformer_data(cfg)
    model = build_primalformer(cfg)
    hist = train_classifier(
        model,
        dataset,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        optimizer=cfg.optimizer,
        weight_decay=cfg.weight_decay,
        ksvd_weight=cfg.ksvd_weight,
        ksvd_per_sample=cfg.ksvd_per_sample,
        ksvd_trace=cfg.ksvd_trace,
        seed=cfg.seed,
        progress=progress,
    )
    model.eval()
    with torch.no_grad():
        acc = float((model(x_te, m_te).argmax(1) == y_te).double().mean())
    params = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    return {**hist, "test_accuracy": acc, "params": params}


@dataclass(frozen=True)
class ConvexDemo:
    """A gated-ReLU head on the digits, solved by FISTA over sharded samples (cross-entropy, block nuclear norm).

    ``operator="gated-mlp"``: Sahiner et al. eq. (8) on the flattened 64 pixels, ``n_gates`` gate vectors.
    ``operator="gated-attention"``: the gated attention head with token averaging (Thm 3.3's gated analogue) on the
    8×8 digit rows, ``n_gates`` gate matrices.
    """

    operator: str = "gated-attention"
    n_samples: int = 256
    n_gates: int = 2
    beta: float = 3e-2
    tol: float = 1e-6
    max_iter: int = 5000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.operator not in ("gated-mlp", "gated-attention"):
            raise ValueError(f"operator must be 'gated-mlp' or 'gated-attention', got {self.operator!r}")


def run_convex(cfg: ConvexDemo) -> dict[str, Any]:
    """Solve the demo's convex program with this rank's shard (all of it in one process); objective and certificate."""
    from ..convex.arrangements import gate_masks, sample_gates
    from ..convex.losses import CrossEntropyLoss
    from ..convex.operators.attention import GatedAttentionOperator, sample_attention_gates
    from ..convex.operators.mlp import GatedMLPOperator
    from ..convex.penalties import BlockNuclearNorm
    from ..convex.problem import CompositeProblem
    from ..convex.solvers.fista import FISTA

    x, y = digits_sequences(cfg.n_samples, cfg.seed)
    lo, hi = shard_range(cfg.n_samples)
    if cfg.operator == "gated-mlp":
        flat = x.reshape(x.shape[0], -1)
        gates = sample_gates(flat.shape[1], cfg.n_gates, cfg.seed)
        local: LinearOperator = GatedMLPOperator(flat[lo:hi], gate_masks(flat[lo:hi], gates), 10)
    else:
        gates = sample_attention_gates(x.shape[2], cfg.n_gates, cfg.seed)
        local = GatedAttentionOperator(x[lo:hi], gates, 10)
    problem = CompositeProblem(CrossEntropyLoss(y), ShardedOperator(local), BlockNuclearNorm(), cfg.beta)
    t0 = time.perf_counter()
    res = FISTA(tol=cfg.tol, max_iter=cfg.max_iter).run(problem)
    cert = res.certificate
    return {
        "objective": res.objective,
        "primal": cert.primal,
        "dual": cert.dual,
        "gap": cert.gap,
        "rel_gap": cert.rel_gap,
        "grad_dual_norm": cert.grad_dual_norm,
        "status": res.status,
        "n_iter": res.n_iter,
        "seconds": time.perf_counter() - t0,
        "world": world(),
        "z": res.z.detach().cpu().clone(),
    }


def _summary(res: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in res.items() if k not in ("params", "z")}
    if "params" in res:
        out["param_sum_abs"] = float(sum(v.abs().sum() for v in res["params"].values()))
    if "z" in res:
        out["z_norm"] = float(torch.linalg.vector_norm(res["z"]))
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m attnduality.distributed demo --task primalformer|convex [--seed S] [--out DIR] [--set k=v ...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m attnduality.distributed",
        description="Data-parallel demo on the digits: train a PrimalFormer or solve a sharded convex head.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train a PrimalFormer or solve a sharded convex head on the digits")
    demo.add_argument("--task", choices=("primalformer", "convex"), required=True)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--out", type=Path, default=None, help="directory for results.json (rank 0 writes)")
    demo.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override demo config fields")
    demo.add_argument("--threads", type=int, default=1, help="intra-op threads per process")
    args = parser.parse_args(argv)
    from .runner import apply_overrides, environment_versions, parse_overrides

    torch.set_num_threads(args.threads)
    info = init_distributed()
    try:
        base: Any = PrimalFormerDemo(seed=args.seed) if args.task == "primalformer" else ConvexDemo(seed=args.seed)
        cfg = apply_overrides(base, parse_overrides(args.set))
        t0 = time.perf_counter()
        res = run_primalformer(cfg, progress=True) if args.task == "primalformer" else run_convex(cfg)
        wall = time.perf_counter() - t0
        summary = _summary(res)
        if info.rank == 0:
            record = {
                "experiment": f"distributed-demo-{args.task}",
                "config": dataclasses.asdict(cfg),
                "seed": args.seed,
                "world": info.world,
                "backend": info.backend,
                "device": info.device,
                "threads_per_process": args.threads,
                "wall_seconds": wall,
                "results": summary,
                "versions": environment_versions(),
            }
            out = args.out or Path("runs") / f"distributed-{args.task}-world{info.world}-seed{args.seed}"
            out.mkdir(parents=True, exist_ok=True)
            (out / "results.json").write_text(json.dumps(record, indent=2))
            keys = ("world", "seconds", "test_accuracy", "param_sum_abs", "objective", "rel_gap", "n_iter", "status")
            print(json.dumps({k: summary[k] for k in keys if k in summary}))
            print(f"wrote {out / 'results.json'}", file=sys.stderr)
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
