"""The ``transfer`` experiment through the runner on real data (Pang & Lee on the real MiniLM, Fashion-MNIST on a tiny
ViT pre-trained here on 6,000 MNIST images) with tiny heads: table, certificates, Adam vs the certified bound, the
claim verdict, resume, config checks and the helpers."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from attnduality.data import MissingDataError, load_fashion_mnist, load_mnist, load_pang_lee
from attnduality.experiments import run_experiment
from attnduality.experiments.transfer import (
    HEADS,
    TransferConfig,
    claim_verdict,
    effective_blocks,
    grid_edge,
    mcnemar_p,
)

TINY: dict[str, Any] = {
    "n_train": 60,
    "n_test": 30,
    "pool_dim": 10,
    "max_tokens": 8,
    "beta_fracs": (0.1, 0.03),
    "gates_attention": 2,
    "gates_mlp": 4,
    "gates_mixer": 1,
    "gates_fno": 2,
    "tol": 1e-3,
    "val_tol": 1e-2,
    "max_iter": 150,
    "adam_steps": 12,
    "checkpoint_every": 5,
    # a tiny ViT (7×7 patches → 16 tokens on a 4×4 grid, d = 32), pre-trained on 6,000 MNIST images for one epoch
    "vit_epochs": 1,
    "vit_pretrain_n": 6000,
    "vit_patch_size": 7,
    "vit_dim": 32,
    "vit_depth": 2,
    "vit_heads": 2,
}


@pytest.fixture(scope="module", autouse=True)
def _data() -> None:
    try:
        from attnduality.backbones import load_minilm

        load_pang_lee("sentences")
        load_fashion_mnist()
        load_mnist()
        load_minilm()
    except MissingDataError as e:
        if os.environ.get("ATTNDUALITY_REQUIRE_DATA") == "1":
            raise
        pytest.skip(f"{e} (ATTNDUALITY_REQUIRE_DATA=1 makes this a failure)")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("transfer")
    return out, run_experiment("transfer", out=out, overrides=TINY, progress=False)


def test_tiny_run_table_certificates_adam_and_report(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    out, res = tiny_run
    assert res["status"] == "complete"
    on_disk = json.loads((out / "results.json").read_text())
    rows = on_disk["tables"]["heads"]
    assert [(r["dataset"], r["head"]) for r in rows] == [(d, h) for d in ("pang_lee", "fashion_mnist") for h in HEADS]
    for r in rows:
        assert 0.0 <= r["test_acc"] <= 1.0 and 0.0 <= r["val_acc"] <= 1.0 and r["beta_frac"] in (0.1, 0.03)
        assert r["status"] in ("converged", "max_iter") and r["rel_gap"] >= 0 and r["objective"] >= r["lower_bound"]
        assert len(r["val_fits"]) == 2 and r["params"] >= 0 and r["lifted_vars"] > 0
        assert r["beta_edge"] == {0.1: "largest", 0.03: "smallest"}[r["beta_frac"]]  # a 2-point grid: always an end
        # Adam on the twin can approach but never undercut the certified lower bound
        assert r["adam_below_bound"] is False and r["adam_objective"] >= r["lower_bound"] * (1 - 1e-9)
        assert 0.0 <= r["adam_test_acc"] <= 1.0
    by = {(r["dataset"], r["head"]): r for r in rows}
    assert by["pang_lee", "bfno_gated"]["B"] == 2  # B = 5 divides neither c = 2 nor gcd(10, 2): the largest divisor
    assert by["fashion_mnist", "bfno_gated"]["B"] == 5 and by["fashion_mnist", "fno_gated"]["B"] == 1
    assert by["pang_lee", "attn_gated"]["gates"] <= 2 and by["pang_lee", "logreg"]["gates"] is None
    m = on_disk["metrics"]
    assert m["pang_lee.n_fit"] + m["pang_lee.n_val"] == 60 and m["pang_lee.n_test"] == 30
    assert m["fashion_mnist.n_tokens"] == 16 and m["pang_lee.n_tokens"] <= 8 and m["adam.runs_below_lower_bound"] == 0
    assert isinstance(m["pang_lee.claim_holds"], bool) and 0.0 <= m["fashion_mnist.claim_mcnemar_p"] <= 1.0
    report = (out / "report.md").read_text()
    for text in ("SUBSTITUTES", "Budget (below the paper's)", "## Claim: attention-style convex heads beat",
                 f"**β at an end of the grid** [0.1, 0.03] for {len(rows)} of {len(rows)} heads",
                 "on this substitute", "B-FNO uses B = 2 (the requested 5 does not divide"):
        assert text in report
    for fig in ("accuracy.png", "adam.png", "pang_lee-block-norms.png", "fashion_mnist-spectrum.png"):
        assert (out / fig).stat().st_size > 0 and fig in report
    # the best self-attention head on validation is read: spectrum share and agreement with the logistic baseline
    assert 0.0 < m["pang_lee.interpret.top_share"] <= 1.0
    assert 0.0 <= m["fashion_mnist.interpret.agreement_with_logreg"] <= 1.0
    assert "learned (pang_lee).** Effective rank per block" in report
    # every certified refit started from its validation path's solution at the selected β; the paths' checkpoints,
    # kept for that, are gone once the refits are done
    for ds, head in by:
        fit = torch.load(out / "checkpoints" / "steps" / ds / head / "fit.pt", weights_only=False)["value"]
        assert fit["warm_started"] is True and fit["resumed_at_gap"] is None
    assert not list((out / "checkpoints" / "solve").rglob("*.pt"))
    # Adam was checkpointed mid-way (every 5 steps of 12)
    ck = torch.load(out / "checkpoints" / "train" / "fashion_mnist" / "attn_gated" / "adam.pt", weights_only=False)
    assert ck["next"] == 10 and len(ck["extra"]["objs"]) == 10


def test_rerun_loads_every_step(tiny_run: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    out, res = tiny_run
    again = tmp_path / "again"
    shutil.copytree(out, again)
    res2 = run_experiment("transfer", out=again, overrides=TINY, progress=False)
    assert res2["steps"] and all(s["resumed"] for s in res2["steps"].values())
    assert res2["tables"]["heads"] == res["tables"]["heads"]


def test_linear_fno_is_the_logistic_baseline_under_pooling(tmp_path: Path) -> None:
    """Without padding (ViT tokens) the linear FNO under token pooling is the nuclear-norm linear model on the mean
    token with β scaled like β_max (under GAP linear B-FNO is grouped-linear): same β/β_max, same predictions."""
    over = {**TINY, "datasets": ("fashion_mnist",), "heads": ("logreg", "fno_linear"), "beta_fracs": (0.05,),
            "adam_steps": 0, "tol": 1e-7, "max_iter": 5000}
    res = run_experiment("transfer", out=tmp_path, overrides=over, progress=False)
    rows = {r["head"]: r for r in res["tables"]["heads"]}
    assert rows["logreg"]["val_acc"] is None and "adam_test_acc" not in rows["logreg"]
    assert rows["fno_linear"]["objective"] == pytest.approx(rows["logreg"]["objective"], rel=1e-5)
    preds = [torch.load(tmp_path / "checkpoints" / "steps" / "fashion_mnist" / h / "fit.pt",
                        weights_only=False)["value"]["test_pred"] for h in ("logreg", "fno_linear")]
    assert np.array_equal(preds[0], preds[1])


def test_config_validation() -> None:
    TransferConfig()
    TransferConfig.quick()
    bad = [
        ({"datasets": ("cifar100",)}, "unknown datasets"),
        ({"datasets": ()}, "datasets must be"),
        ({"heads": ("logreg", "softmax")}, "unknown heads"),
        ({"heads": ("mlp", "mlp")}, "without repeats"),
        ({"n_train": 10}, "n_train must be >= 20"),
        ({"n_test": 0}, "n_test must be a positive integer"),
        ({"beta_fracs": (0.1, 1.5)}, "beta_fracs"),
        ({"beta_fracs": ()}, "beta_fracs"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"pool_dim": 0}, "pool_dim"),
        ({"max_tokens": 1}, "max_tokens"),
        ({"tol": 0.0}, "tol"),
        ({"dtype": "float16"}, "dtype"),
        ({"adam_steps": -1}, "adam_steps"),
        ({"adam_lr": 0.0}, "adam_lr"),
        ({"minilm_layer": 9}, "minilm_layer"),
    ]
    for kw, msg in bad:
        with pytest.raises(ValueError, match=msg):
            TransferConfig(**kw)
    with pytest.raises(ValueError, match="unknown config key"):
        run_experiment("transfer", out="unused", overrides={"n_gates": 3}, progress=False)


def test_sizes_beyond_the_data_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="exceeds the 1000 Pang & Lee test sentences"):
        run_experiment("transfer", out=tmp_path / "a", progress=False,
                       overrides={**TINY, "datasets": ("pang_lee",), "n_test": 5000})
    with pytest.raises(ValueError, match="pool_dim=40 exceeds the ViT width 32"):
        run_experiment("transfer", out=tmp_path / "b", progress=False,
                       overrides={**TINY, "datasets": ("fashion_mnist",), "pool_dim": 40})


def test_helpers() -> None:
    assert effective_blocks(5, 100, 100) == 5 and effective_blocks(5, 20, 2) == 2 and effective_blocks(5, 16, 10) == 2
    assert effective_blocks(5, 7, 3) == 1
    a = np.array([True] * 30 + [False] * 10)
    assert mcnemar_p(a, a) == 1.0
    assert grid_edge(0.003, (0.3, 0.1, 0.003)) == "smallest" and grid_edge(0.3, (0.3, 0.1, 0.003)) == "largest"
    assert grid_edge(0.1, (0.3, 0.1, 0.003)) is None and grid_edge(0.1, (0.1,)) is None
    b = np.array([False] * 12 + [True] * 18 + [False] * 10)  # a right and b wrong on 12, never the other way
    assert mcnemar_p(a, b) == pytest.approx(2 * 0.5**12)
    with pytest.raises(ValueError, match="differ in shape"):
        mcnemar_p(a, a[:5])
    rows = [{"head": "logreg", "test_acc": 18 / 40}, {"head": "mlp", "test_acc": 10 / 40},
            {"head": "attn_linear", "test_acc": 30 / 40}, {"head": "attn_gated", "test_acc": 30 / 40},
            {"head": "fno_linear", "test_acc": 17 / 40}]
    correct = {"logreg": b, "mlp": np.arange(40) < 10, "attn_linear": a, "attn_gated": a,
               "fno_linear": np.arange(40) < 17}
    v = claim_verdict(rows, correct)
    assert v["holds"] and v["best_baseline"] == "logreg" and v["n_above"] == 2 and v["n_attention"] == 3
    v = claim_verdict(rows[:2] + rows[4:], correct)  # only the linear FNO, below the baseline
    assert not v["holds"] and v["n_above"] == 0
    assert claim_verdict(rows[:2], correct)["decided"] is False


def test_solve_resumed_in_fista_counts_its_earlier_iterations() -> None:
    """A validation-path solve or a refit resumed in auto's FISTA phase runs only the FISTA iterations still due
    before Newton, as one uninterrupted ``solver="auto"`` would (``AutoSolver.switch_iter`` = 300)."""
    from attnduality.experiments.transfer.heads import _resumed_phases

    assert _resumed_phases(None, 0, 5000) == [("auto", 5000)]
    assert _resumed_phases("newton", 0, 5000) == [("newton", 5000)]
    assert _resumed_phases("fista", 120, 5000) == [("fista", 180), ("newton", 4820)]
    assert _resumed_phases("fista", 300, 5000) == [("newton", 5000)]  # saved at the switch


def test_solves_interrupted_mid_way_resume_from_their_iterates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run killed inside the validation path (mid-solve and between points) and inside the certified refit goes on
    from the saved iterates (``checkpoints/solve/``) and ends with the same certified fits as an uninterrupted run."""
    from attnduality.experiments.checkpoints import SolveCheckpoint
    from attnduality.experiments.context import RunContext

    over = {**TINY, "datasets": ("fashion_mnist",), "heads": ("attn_gated",), "adam_steps": 0,
            "val_tol": 1e-7, "tol": 1e-7, "max_iter": 5000}
    ref = run_experiment("transfer", out=tmp_path / "ref", overrides=over, progress=False)["tables"]["heads"][0]

    real_solve_checkpoint, real_save = RunContext.solve_checkpoint, SolveCheckpoint.save
    saves: list[tuple[str, str]] = []
    fired: set[str] = set()

    def every_check(self: RunContext, key: str, every: float = 60.0) -> SolveCheckpoint:
        return real_solve_checkpoint(self, key, every=0.0)

    def save_then_die(self: SolveCheckpoint, z: torch.Tensor, phase: str, rel_gap: float, n_iter: int = 0) -> None:
        real_save(self, z, phase, rel_gap, n_iter)
        saves.append((self.path.name, phase))
        path_saves = [ph for name, ph in saves if name == "val-path.pt"]
        events = {
            "inside the first point": path_saves == ["fista", "fista"],
            "inside the second point": "done" in path_saves and path_saves[-1] == "fista",
            "inside the refit": sum(name == "fit.pt" for name, _ in saves) == 2,
        }
        for event, now in events.items():
            if now and event not in fired:
                fired.add(event)
                raise KeyboardInterrupt(event)

    monkeypatch.setattr(RunContext, "solve_checkpoint", every_check)
    monkeypatch.setattr(SolveCheckpoint, "save", save_then_die)
    out, runs = tmp_path / "killed", 0
    while True:
        runs += 1
        try:
            res = run_experiment("transfer", out=out, overrides=over, progress=False)
            break
        except KeyboardInterrupt:
            assert runs <= 3
    row = res["tables"]["heads"][0]
    assert runs == 4 and len(fired) == 3
    assert row["status"] == ref["status"] == "converged" and row["beta_frac"] == ref["beta_frac"]
    assert row["objective"] == pytest.approx(ref["objective"], rel=1e-6)
    assert row["test_acc"] == ref["test_acc"] and row["val_acc"] == ref["val_acc"]
    for a, b in zip(row["val_fits"], ref["val_fits"], strict=True):
        assert a["rel_gap"] <= 1e-7 and a["status"] == "converged"
        assert a["val_acc"] == b["val_acc"]
    fit = torch.load(out / "checkpoints" / "steps" / "fashion_mnist" / "attn_gated" / "fit.pt", weights_only=False)
    assert fit["value"]["resumed_at_gap"] is not None and fit["value"]["warm_started"] is True
    assert not (out / "checkpoints" / "solve" / "fashion_mnist" / "attn_gated" / "fit.pt").exists()  # cleared
