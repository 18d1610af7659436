"""The grokking experiment: tiny configs through the runner (metrics, figures, bit-identical resume), the models'
sliced read-out, the convex program's additivity, config validation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from attnduality.data import make_modular
from attnduality.experiments import get_experiment, run_experiment
from attnduality.experiments.grokking import (
    GROKKING_MODELS,
    GrokkingConfig,
    build_grokking_model,
    steps_to_threshold,
)

TINY: dict[str, Any] = {
    "p": 11, "train_fracs": (0.5,), "layers": (1,), "models": ("softmax", "convex"), "seeds": (0,), "steps": 6,
    "batch_size": 32, "d_model": 16, "n_heads": 2, "eval_every": 3, "checkpoint_every": 2, "convex_max_iter": 20,
    "convex_tol": 1e-3,
}


def _run(out: Path, **over: Any) -> dict[str, Any]:
    return run_experiment("grokking", out=out, seed=0, overrides={**TINY, **over}, progress=False)


def test_registered_with_quick_config() -> None:
    exp = get_experiment("grokking")
    quick = exp.make_config(quick=True)
    assert isinstance(quick, GrokkingConfig) and quick.steps < GrokkingConfig().steps
    assert GrokkingConfig().train_fracs == (0.3, 0.5) and GrokkingConfig().layers == (1, 2)


def test_tiny_run_writes_metrics_tables_and_figures(tmp_path: Path) -> None:
    res = _run(tmp_path / "a")
    assert res["status"] == "complete"
    m = res["metrics"]
    for model in ("softmax", "convex"):
        for key in ("steps_train_reached", "steps_train_mean", "steps_test_reached", "steps_test_mean",
                    "final_train_acc_mean", "final_test_acc_mean"):
            assert f"frac0.5.L1.{model}.{key}" in m
        assert 0.0 <= m[f"frac0.5.L1.{model}.final_test_acc_mean"] <= 1.0
    assert "frac0.5.program.train_acc_mean" in m
    rows = res["tables"]["summary"]
    assert [r["model"] for r in rows] == ["softmax", "convex"]
    curves = res["tables"]["curves"]
    assert all(c["step"] == [0, 3, 6] for c in curves)  # evaluated at 0, every eval_every and at the end
    assert {"accuracy.png", "loss.png"} <= set(res["figures"])
    assert "| steps to 99% train |" in (tmp_path / "a" / "report.md").read_text()
    saved = json.loads((tmp_path / "a" / "results.json").read_text())
    assert saved["metrics"] == m


def test_interrupted_training_resumes_bit_identically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = _run(tmp_path / "ref", models=("convex",), convex_program=False)
    calls = {"n": 0}
    original = torch.optim.AdamW.step

    def failing(self: Any, *a: Any, **k: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 4:  # the checkpoint after update 2 (every=2) exists; update 4 never happens
            raise RuntimeError("simulated crash")
        return original(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", failing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(tmp_path / "b", models=("convex",), convex_program=False)
    assert json.loads((tmp_path / "b" / "results.json").read_text())["status"] == "failed"
    monkeypatch.setattr(torch.optim.AdamW, "step", original)
    res = _run(tmp_path / "b", models=("convex",), convex_program=False)
    assert res["tables"]["curves"] == ref["tables"]["curves"]
    again = _run(tmp_path / "b", models=("convex",), convex_program=False)  # everything loaded from checkpoints
    assert all(s["resumed"] for s in again["steps"].values())
    assert again["metrics"] == res["metrics"]


@pytest.mark.parametrize("model", GROKKING_MODELS)
@pytest.mark.parametrize("layers", [1, 2])
def test_sliced_readout_equals_full_network(model: str, layers: int) -> None:
    net = build_grokking_model(model, layers, 13, 11, d_model=16, n_heads=2, seed=3)
    x = torch.as_tensor(make_modular(11, "div", 0.5, 0).X_train)
    with torch.no_grad():
        assert torch.allclose(net(x), net.forward_full(x), atol=1e-6)
    assert net(x).shape == (len(x), 11)


def test_convex_attention_mixing_is_not_decayed() -> None:
    from attnduality.experiments.grokking import _param_groups

    net = build_grokking_model("convex", 2, 13, 11, d_model=16, n_heads=2)
    groups = _param_groups(net, 1.0)
    assert [g["weight_decay"] for g in groups] == [1.0, 0.0] and len(groups[1]["params"]) == 2
    assert len(_param_groups(build_grokking_model("softmax", 1, 13, 11, d_model=16, n_heads=2), 1.0)) == 1


def test_steps_to_threshold() -> None:
    assert steps_to_threshold([0, 50, 100], [0.1, 0.995, 0.9], 0.99) == 50
    assert steps_to_threshold([0, 50], [0.1, 0.5], 0.99) is None


@pytest.mark.parametrize("bad", [{"p": 12}, {"models": ("softmax", "linear")}, {"train_fracs": (1.0,)},
                                 {"layers": (0,)}, {"d_model": 10, "n_heads": 4}, {"steps": 0}, {"seeds": (1, 1)}])
def test_bad_config_raises(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        GrokkingConfig(**bad)
    with pytest.raises(ValueError, match="model must be one of"):
        build_grokking_model("linear", 1, 13, 11)
