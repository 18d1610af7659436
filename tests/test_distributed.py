"""Data-parallel training and sharded FISTA: 2 processes on loopback (gloo, float64) reproduce 1 process.

One ``launch`` starts both processes once and runs every distributed case (process start-up dominates the cost);
the single-process references are computed here: an independent plain training loop on the same global batches,
and FISTA on the unsharded operator.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from attnduality.convex.operators.mlp import GatedMLPOperator
from attnduality.distributed import (
    ConvexDemo,
    GlobalBatchLoader,
    PrimalFormerDemo,
    ShardedOperator,
    build_primalformer,
    digits_sequences,
    init_distributed,
    is_main,
    launch,
    primalformer_data,
    run_convex,
    run_jobs,
    run_primalformer,
    shard_range,
    train_classifier,
    world,
)
from attnduality.experiments.runner import TrainingCheckpoint
from attnduality.nn.primal import ksvd_loss

TINY = PrimalFormerDemo(n_train=48, n_test=16, embed_dim=8, rank=2, rank_multi=2, epochs=2, batch_size=16)
TRAIN_CASES = {
    "batch-ksvd-params-radam": TINY,
    "batch-ksvd-data-padding-adam": replace(TINY, optimizer="adam", ksvd_trace="data", padding=True),
    "per-sample-ksvd-padding-adamw": replace(
        TINY, optimizer="adamw", weight_decay=0.01, ksvd_per_sample=True, padding=True
    ),
    "no-ksvd-adamw": replace(TINY, optimizer="adamw", weight_decay=0.01, ksvd_weight=0.0),
}
CONVEX_CASES = {
    "gated-mlp": ConvexDemo(operator="gated-mlp", n_samples=63, n_gates=3, beta=1e-2, tol=1e-8, max_iter=1000),
    "gated-attention": ConvexDemo(
        operator="gated-attention", n_samples=41, n_gates=1, beta=3e-2, tol=1e-8, max_iter=1000
    ),
}


def reference_training(cfg: PrimalFormerDemo) -> tuple[dict[str, torch.Tensor], list[float]]:
    """Plain single-process loop: global batch t of epoch e is randperm(n, seed + e)[t·B:(t+1)·B]."""
    dataset, _ = primalformer_data(cfg)
    model = build_primalformer(cfg)
    opt_cls = {"radam": torch.optim.RAdam, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.optimizer]
    opt = opt_cls(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    tensors, n, b = dataset.tensors, len(dataset), cfg.batch_size
    losses = []
    for epoch in range(cfg.epochs):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed + epoch))
        for t in range(n // b):
            idx = perm[t * b : (t + 1) * b]
            x, y = tensors[0][idx], tensors[-1][idx]
            mask = tensors[1][idx] if len(tensors) == 3 else None
            loss = F.cross_entropy(model(x, mask), y)
            if cfg.ksvd_weight > 0:
                loss = loss + cfg.ksvd_weight * ksvd_loss(model, per_sample=cfg.ksvd_per_sample, trace=cfg.ksvd_trace)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, losses


@pytest.fixture(scope="module")
def two_process_results() -> dict[str, list]:
    jobs = [(run_primalformer, cfg) for cfg in TRAIN_CASES.values()]
    jobs += [(run_convex, cfg) for cfg in CONVEX_CASES.values()]
    per_rank = launch(run_jobs, 2, jobs)
    names = [*TRAIN_CASES, *CONVEX_CASES]
    return {name: [per_rank[r][i] for r in range(2)] for i, name in enumerate(names)}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_primalformer_two_processes_equal_single_process(two_process_results: dict, case: str) -> None:
    cfg = TRAIN_CASES[case]
    r0, r1 = two_process_results[case]
    assert r0["world"] == r1["world"] == 2 and r0["steps"] == 6
    for k in r0["params"]:  # DDP keeps the replicas identical
        assert torch.equal(r0["params"][k], r1["params"][k]), k
    ref_params, ref_losses = reference_training(cfg)
    moved = max(float((ref_params[k] - build_primalformer(cfg).state_dict()[k]).abs().max()) for k in ref_params)
    assert moved > 1e-4  # the steps did change the parameters
    for k, ref in ref_params.items():
        assert torch.allclose(r0["params"][k], ref, rtol=0, atol=1e-10), (k, float((r0["params"][k] - ref).abs().max()))
    assert r0["losses"] == pytest.approx(ref_losses, rel=1e-10, abs=1e-12)
    single = run_primalformer(cfg)  # train_classifier itself in one process
    for k, ref in ref_params.items():
        assert torch.allclose(single["params"][k], ref, rtol=0, atol=1e-10), k
    if cfg.ksvd_weight == 0:  # Λ gets no gradient: AdamW skips it (no decay) on 1 and 2 processes alike
        lam = [k for k in ref_params if k.endswith("lambdas")]
        init = build_primalformer(cfg).state_dict()
        assert lam and all(torch.equal(r0["params"][k], init[k]) for k in lam)


@pytest.mark.parametrize("case", list(CONVEX_CASES))
def test_sharded_fista_equals_single_process(two_process_results: dict, case: str) -> None:
    cfg = CONVEX_CASES[case]
    r0, r1 = two_process_results[case]
    assert r0["world"] == 2
    assert torch.equal(r0["z"], r1["z"]) and r0["objective"] == r1["objective"]  # replicated iterate, same steps
    single = run_convex(cfg)
    assert single["world"] == 1 and single["status"] == "converged"
    assert r0["status"] == single["status"] and r0["n_iter"] == single["n_iter"]
    for key in ("objective", "primal", "dual", "grad_dual_norm"):
        assert r0[key] == pytest.approx(single[key], rel=1e-10), key
    assert abs(r0["gap"] - single["gap"]) <= 1e-10 * single["primal"]
    assert float((r0["z"] - single["z"]).abs().max()) <= 1e-10 * float(single["z"].abs().max())


# ----------------------------------------------------------------------------------------------------------------
# single-process pieces
# ----------------------------------------------------------------------------------------------------------------
def test_single_process_helpers_are_no_ops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    info = init_distributed()
    assert (info.rank, info.world, info.backend) == (0, 1, None) and world() == 1 and is_main()
    monkeypatch.setenv("WORLD_SIZE", "2")
    for var in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(ValueError, match="RANK"):
        init_distributed()
    with pytest.raises(ValueError, match="backend"):
        init_distributed(backend="mpi")


@pytest.mark.parametrize("p", [1, 2, 4])
def test_global_batches_do_not_depend_on_world_size(p: int) -> None:
    n, b, seed = 37, 8, 3
    ds = torch.utils.data.TensorDataset(torch.arange(n))
    loaders = [GlobalBatchLoader(ds, b, seed=seed, num_replicas=p, rank=r) for r in range(p)]
    for epoch in range(2):
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
        for loader in loaders:
            loader.set_epoch(epoch)
        steps = [list(loader) for loader in loaders]
        assert all(len(s) == n // b for s in steps)
        for t in range(n // b):
            got = sorted(int(i) for s in steps for i in s[t][0])
            assert got == sorted(perm[t * b : (t + 1) * b].tolist())


def test_loader_and_training_reject_bad_input() -> None:
    ds = torch.utils.data.TensorDataset(torch.zeros(10, 8, 8, dtype=torch.float64), torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible"):
        GlobalBatchLoader(ds, 5, seed=0, num_replicas=2, rank=0)
    with pytest.raises(ValueError, match="fewer"):
        GlobalBatchLoader(ds, 16, seed=0)
    model = build_primalformer(TINY)
    for kw, match in (
        ({"optimizer": "sgd"}, "optimizer"),
        ({"epochs": 0}, "epochs"),
        ({"lr": -1.0}, "lr"),
        ({"ksvd_trace": "x"}, "ksvd_trace"),
    ):
        args = {"epochs": 1, "batch_size": 4, "lr": 1e-3, "seed": 0, **kw}
        with pytest.raises(ValueError, match=match):
            train_classifier(model, ds, **args)
    with pytest.raises(ValueError, match="PrimalAttention"):
        train_classifier(torch.nn.Linear(8, 10), ds, epochs=1, batch_size=4, lr=1e-3, ksvd_weight=0.1, seed=0)


def test_shard_range_and_pass_through_operator() -> None:
    assert [shard_range(10, r, 3) for r in range(3)] == [(0, 4), (4, 7), (7, 10)]
    with pytest.raises(ValueError, match="cannot be sharded"):
        shard_range(2, 0, 3)
    x = torch.randn(12, 5, dtype=torch.float64)
    op = GatedMLPOperator(x, (x[:, :3] > 0).double(), 2)
    sharded = ShardedOperator(op)
    z = torch.randn(op.z_shape, dtype=torch.float64)
    g = torch.randn(12, 2, dtype=torch.float64)
    assert sharded.n_samples == 12 and torch.equal(sharded.forward(z), op.forward(z))
    assert torch.equal(sharded.adjoint(g), op.adjoint(g))
    with pytest.raises(ValueError, match="rows"):
        sharded.adjoint(g[:5])


def test_ksvd_batch_form_is_not_a_sum_over_samples() -> None:
    """Why DDP needs the global-J construction: the mean of per-half J² is not the full batch's J²."""
    model = build_primalformer(TINY)
    x, _ = digits_sequences(16, 0)
    with torch.no_grad():
        model(x)
        full = float(ksvd_loss(model))
        halves = []
        for part in (x[:8], x[8:]):
            model(part)
            halves.append(float(ksvd_loss(model)))
    assert abs(sum(halves) / 2 - full) > 1e-6 * abs(full)


def test_ksvd_loss_sees_layers_inside_ddp(tmp_path: Path) -> None:
    if dist.is_initialized():
        pytest.skip("a process group is already active")
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        model = build_primalformer(TINY)
        ddp = DistributedDataParallel(model, static_graph=True)
        x, _ = digits_sequences(8, 0)
        ddp(x)
        assert len(list(ddp.modules())) == len(list(model.modules())) + 1
        assert torch.equal(ksvd_loss(ddp), ksvd_loss(model))
    finally:
        dist.destroy_process_group()


def test_training_resumes_bit_identically(tmp_path: Path) -> None:
    cfg = replace(TINY, epochs=2)
    dataset, _ = primalformer_data(cfg)
    full_model = build_primalformer(cfg)
    full = train_classifier(full_model, dataset, epochs=2, batch_size=16, lr=1e-3, ksvd_weight=0.1, seed=0)
    ck = TrainingCheckpoint(tmp_path / "train.pt", every=2)
    part_model = build_primalformer(cfg)
    train_classifier(part_model, dataset, epochs=1, batch_size=16, lr=1e-3, ksvd_weight=0.1, seed=0, checkpoint=ck)
    resumed_model = build_primalformer(cfg)  # a fresh process would start here: step 2 of 6 is in the file
    resumed = train_classifier(
        resumed_model, dataset, epochs=2, batch_size=16, lr=1e-3, ksvd_weight=0.1, seed=0, checkpoint=ck
    )
    assert resumed["losses"] == full["losses"]
    for k, v in full_model.state_dict().items():
        assert torch.equal(resumed_model.state_dict()[k], v), k


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
    reason="torchrun not found",
)
def test_torchrun_demo_cli(tmp_path: Path) -> None:
    from attnduality.distributed import free_port

    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    cmd = [
        torchrun,
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "attnduality.distributed",
        "demo",
        "--task",
        "convex",
        "--out",
        str(tmp_path),
        "--set",
        "n_samples=40",
        "n_gates=2",
        "operator=gated-mlp",
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / "results.json").exists()
