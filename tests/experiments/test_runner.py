"""The experiment runner: resumable steps, mid-training checkpoints, config-mismatch detection, outputs, registry."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from attnduality.experiments import (
    DISCOVERY_ERRORS,
    EXPERIMENTS,
    ConfigMismatchError,
    Experiment,
    RunContext,
    TrainingCheckpoint,
    apply_overrides,
    available_experiments,
    get_experiment,
    parse_overrides,
    register_experiment,
    run_experiment,
    unregister_experiment,
)

CALLS: Counter[str] = Counter()
FAIL: dict[str, Any] = {"step": None, "epoch": None}


class Interrupted(RuntimeError):
    pass


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    FAIL.update(step=None, epoch=None)


# ----------------------------------------------------------------------------------------------------------------
# a toy experiment: keyed steps drawing from the global RNGs
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepsConfig:
    n_steps: int = 4
    scale: float = 1.0
    tags: tuple[str, ...] = ("a", "b")
    limit: int | None = None
    flag: bool = False

    @classmethod
    def quick(cls) -> StepsConfig:
        return cls(n_steps=2)


def _steps_body(ctx: RunContext) -> None:
    total = 0.0
    for i in ctx.progress(range(ctx.config.n_steps), desc="steps"):

        def work(i: int = i) -> dict[str, Any]:
            CALLS[f"step{i}"] += 1
            if FAIL["step"] == i:
                raise Interrupted(f"interrupted at step {i}")
            # global RNGs are seeded per step, so a skipped earlier step does not change these numbers
            return {
                "value": ctx.config.scale * float(np.random.standard_normal() + torch.randn(()).item()),
                "vec": np.arange(3) * i,
            }

        res = ctx.step(f"step{i}", work)
        total += res["value"]
        ctx.metric(f"value.{i}", res["value"])
    ctx.metric("total", total)
    ctx.table("values", [{"i": i, "value": ctx.metrics[f"value.{i}"]} for i in range(ctx.config.n_steps)])
    ctx.note("A toy experiment.")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([ctx.metrics[f"value.{i}"] for i in range(ctx.config.n_steps)])
    ctx.figure("values", fig)


STEPS = Experiment(
    name="toy-steps", about="toy steps", data="random numbers", config=StepsConfig, run=_steps_body, title="Toy steps"
)


def test_interrupted_run_resumes_without_recomputing(tmp_path: Path) -> None:
    ref = run_experiment(STEPS, out=tmp_path / "ref", progress=False)
    assert ref["status"] == "complete"
    CALLS.clear()

    FAIL["step"] = 2
    with pytest.raises(Interrupted):
        run_experiment(STEPS, out=tmp_path / "run", progress=False)
    failed = json.loads((tmp_path / "run" / "results.json").read_text())
    assert failed["status"] == "failed" and "interrupted at step 2" in failed["error"]
    assert "Status: failed" in (tmp_path / "run" / "report.md").read_text()
    assert CALLS == Counter(step0=1, step1=1, step2=1)

    FAIL["step"] = None
    res = run_experiment(STEPS, out=tmp_path / "run", progress=False)
    assert CALLS == Counter(step0=1, step1=1, step2=2, step3=1)  # steps 0 and 1 were loaded, not recomputed
    assert res["status"] == "complete"
    assert [res["steps"][f"step{i}"]["resumed"] for i in range(4)] == [True, True, False, False]
    on_disk = json.loads((tmp_path / "run" / "results.json").read_text())
    assert on_disk["metrics"] == ref["metrics"] == res["metrics"]
    assert on_disk["tables"] == ref["tables"]

    # a third run loads everything
    run_experiment(STEPS, out=tmp_path / "run", progress=False)
    assert CALLS == Counter(step0=1, step1=1, step2=2, step3=1)


def test_results_and_report(tmp_path: Path) -> None:
    res = run_experiment(STEPS, out=tmp_path, seed=3, progress=False)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(res))
    for key in (
        "config",
        "seed",
        "device",
        "versions",
        "git",
        "metrics",
        "tables",
        "figures",
        "steps",
        "total_seconds",
        "status",
        "config_hash",
    ):
        assert key in on_disk
    assert on_disk["seed"] == 3 and on_disk["config"]["n_steps"] == 4 and on_disk["config"]["tags"] == ["a", "b"]
    assert {"python", "torch", "numpy", "attnduality"} <= set(on_disk["versions"])
    assert all(v["seconds"] >= 0 for v in on_disk["steps"].values())
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("# Toy steps\n")
    assert "| i | value |" in report and "![values](values.png)" in report and "A toy experiment." in report
    assert "## Configuration" in report and "| n_steps | 4 |" in report
    assert (tmp_path / "values.png").stat().st_size > 500
    assert sorted(p.name for p in (tmp_path / "checkpoints" / "steps").iterdir()) == [f"step{i}.json" for i in range(4)]


def test_seeds_differ_and_steps_are_reproducible(tmp_path: Path) -> None:
    a = run_experiment(STEPS, out=tmp_path / "a", seed=0, progress=False)
    b = run_experiment(STEPS, out=tmp_path / "b", seed=1, progress=False)
    c = run_experiment(STEPS, out=tmp_path / "c", seed=0, progress=False)
    assert a["metrics"] == c["metrics"] and a["metrics"] != b["metrics"]


def test_config_mismatch_is_refused(tmp_path: Path) -> None:
    run_experiment(STEPS, out=tmp_path, progress=False)
    with pytest.raises(ConfigMismatchError, match=r"n_steps: 4 -> 3.*--fresh"):
        run_experiment(STEPS, out=tmp_path, overrides={"n_steps": "3"}, progress=False)
    with pytest.raises(ConfigMismatchError, match="seed"):
        run_experiment(STEPS, out=tmp_path, seed=5, progress=False)
    with pytest.raises(ConfigMismatchError):
        run_experiment(STEPS, out=tmp_path, quick=True, progress=False)
    CALLS.clear()
    res = run_experiment(STEPS, out=tmp_path, overrides={"n_steps": "3"}, fresh=True, progress=False)
    assert res["config"]["n_steps"] == 3 and CALLS == Counter(step0=1, step1=1, step2=1)


def test_overrides_are_parsed_by_type() -> None:
    cfg = apply_overrides(
        StepsConfig(), parse_overrides(["n_steps=7", "scale=0.5", "tags=x,y,z", "limit=none", "flag=true"])
    )
    assert cfg == StepsConfig(n_steps=7, scale=0.5, tags=("x", "y", "z"), limit=None, flag=True)
    assert apply_overrides(StepsConfig(), {"limit": "3", "n_steps": "1e1"}) == StepsConfig(limit=3, n_steps=10)
    with pytest.raises(ValueError, match="unknown config key 'nope'; valid keys: n_steps"):
        apply_overrides(StepsConfig(), {"nope": "1"})
    with pytest.raises(ValueError, match="n_steps must be an integer"):
        apply_overrides(StepsConfig(), {"n_steps": "2.5"})
    with pytest.raises(ValueError, match="boolean"):
        apply_overrides(StepsConfig(), {"flag": "maybe"})
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["n_steps"])
    assert STEPS.make_config(quick=True) == StepsConfig(n_steps=2)


def test_step_storage_and_key_rules(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def body(ctx: RunContext) -> None:
        seen["tensor"] = ctx.step("tensor", lambda: {"w": torch.arange(4.0)})  # not JSON-able: torch.save
        seen["json"] = ctx.step("nested/json", lambda: {"x": np.float64(0.1), "n": np.int64(3), "t": (1, 2)})
        with pytest.raises(ValueError, match="unique"):
            ctx.step("tensor", lambda: 1)
        with pytest.raises(ValueError, match="checkpoint key"):
            ctx.step("../escape", lambda: 1)
        with pytest.raises(ValueError, match="not JSON-able"):
            ctx.step("strict", lambda: torch.zeros(1), storage="json")
        with pytest.raises(ValueError, match="scalar"):
            ctx.metric("bad", [1, 2])

    exp = Experiment(name="toy-storage", about="a", data="b", config=StepsConfig, run=body)
    run_experiment(exp, out=tmp_path, progress=False)
    assert torch.equal(seen["tensor"]["w"], torch.arange(4.0))
    assert seen["json"] == {"x": 0.1, "n": 3, "t": [1, 2]}  # returned as loaded, on the first run too
    assert (tmp_path / "checkpoints" / "steps" / "tensor.pt").exists()
    assert (tmp_path / "checkpoints" / "steps" / "nested" / "json.json").exists()
    first = dict(seen)
    seen.clear()
    run_experiment(exp, out=tmp_path, progress=False)
    assert torch.equal(seen["tensor"]["w"], first["tensor"]["w"]) and seen["json"] == first["json"]


# ----------------------------------------------------------------------------------------------------------------
# mid-loop training checkpoints
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 23
    every: int = 5


def _train_body(ctx: RunContext) -> None:
    cfg: TrainConfig = ctx.config

    def train() -> dict[str, Any]:
        gen = torch.Generator().manual_seed(ctx.seed)
        rng = np.random.default_rng(ctx.seed)
        x = torch.randn(64, 5, generator=gen)
        y = x @ torch.randn(5, 1, generator=gen)
        model = torch.nn.Sequential(
            torch.nn.Linear(5, 8), torch.nn.Dropout(0.2), torch.nn.ReLU(), torch.nn.Linear(8, 1)
        )
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=7, gamma=0.5)
        ck = ctx.checkpoint("train", every=cfg.every)
        start = ck.resume(model=model, optimizer=opt, scheduler=sched, generators=[gen, rng])
        losses = list(ck.extra.get("losses", []))
        for epoch in ctx.progress(range(start, cfg.epochs), desc="epochs", initial=start, total=cfg.epochs):
            CALLS["epoch"] += 1
            if FAIL["epoch"] == epoch:
                raise Interrupted(f"interrupted at epoch {epoch}")
            idx = torch.randperm(64, generator=gen)[:16]  # a generator's state
            noise = float(rng.standard_normal())  # a NumPy generator's state
            opt.zero_grad()
            loss = ((model(x[idx]) - y[idx]) ** 2).mean() * (1 + 0.01 * noise)  # dropout: the global torch RNG
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            ck.maybe_save(
                epoch, model=model, optimizer=opt, scheduler=sched, generators=[gen, rng], extra={"losses": losses}
            )
        return {"state": {k: v.clone() for k, v in model.state_dict().items()}, "losses": losses}

    res = ctx.step("train", train, storage="torch")
    ctx.metric("final_loss", res["losses"][-1])


TRAIN = Experiment(
    name="toy-train", about="toy training", data="random regression", config=TrainConfig, run=_train_body
)


def _final_state(out: Path) -> dict[str, Any]:
    return torch.load(out / "checkpoints" / "steps" / "train.pt", weights_only=False)["value"]


def test_training_resumes_bit_identically(tmp_path: Path) -> None:
    ref = run_experiment(TRAIN, out=tmp_path / "ref", progress=False)
    assert CALLS["epoch"] == 23
    CALLS.clear()

    FAIL["epoch"] = 13  # the last checkpoint before it was saved after epoch 9
    with pytest.raises(Interrupted):
        run_experiment(TRAIN, out=tmp_path / "run", progress=False)
    assert CALLS["epoch"] == 14
    ck = TrainingCheckpoint(tmp_path / "run" / "checkpoints" / "train" / "train.pt")
    assert ck.load()["next"] == 10

    FAIL["epoch"] = None
    CALLS.clear()
    res = run_experiment(TRAIN, out=tmp_path / "run", progress=False)
    assert CALLS["epoch"] == 13  # epochs 10..22 only
    a, b = _final_state(tmp_path / "ref"), _final_state(tmp_path / "run")
    assert a["losses"] == b["losses"]
    assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
    assert res["metrics"] == ref["metrics"]


def test_training_checkpoint_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="every"):
        TrainingCheckpoint(tmp_path / "x.pt", every=0)
    ck = TrainingCheckpoint(tmp_path / "x.pt", every=2)
    assert ck.load() is None and ck.resume() == 0
    assert not ck.maybe_save(0) and ck.maybe_save(1, extra={"a": 1})
    assert ck.load()["next"] == 2
    with pytest.raises(ValueError, match="generator"):
        ck.resume(generators=[torch.Generator()])
    ck.save({"anything": 1})
    assert ck.load() == {"anything": 1}


# ----------------------------------------------------------------------------------------------------------------
# registry
# ----------------------------------------------------------------------------------------------------------------
def test_registry() -> None:
    assert "quickstart" in available_experiments() and available_experiments() == sorted(EXPERIMENTS)
    assert not DISCOVERY_ERRORS, f"experiment modules failed to import: {DISCOVERY_ERRORS}"
    for name in available_experiments():
        exp = get_experiment(name)
        assert exp.name == name and exp.about and exp.data
        exp.make_config(quick=False), exp.make_config(quick=True)  # both variants construct
    with pytest.raises(ValueError, match="unknown experiment 'nope'; available: .*quickstart"):
        get_experiment("nope")

    @register_experiment("toy-registered", about="a", data="b", config=StepsConfig)
    def body(ctx: RunContext) -> None:
        ctx.metric("x", 1)

    try:
        assert "toy-registered" in available_experiments()
        with pytest.raises(ValueError, match="already registered"):
            register_experiment(
                Experiment(name="toy-registered", about="a", data="b", config=StepsConfig, run=_steps_body)
            )
        with pytest.raises(ValueError, match="config"):
            register_experiment("toy-x", about="a", data="b")
    finally:
        unregister_experiment("toy-registered")
    assert "toy-registered" not in available_experiments()
    with pytest.raises(ValueError, match="name"):
        Experiment(name="Bad Name", about="a", data="b", config=StepsConfig, run=_steps_body)
    with pytest.raises(ValueError, match="dataclass"):
        Experiment(name="bad", about="a", data="b", config=dict, run=_steps_body)


def test_bad_run_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="seed"):
        run_experiment(STEPS, out=tmp_path, seed=-1)
    with pytest.raises(ValueError, match="device"):
        run_experiment(STEPS, out=tmp_path, device="nonsense")
    with pytest.raises(ValueError, match="StepsConfig"):
        run_experiment(STEPS, out=tmp_path, config=TrainConfig())
