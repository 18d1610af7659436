"""The quickstart experiment: the stacked Adam twin is the library's twin, resumes exactly, and validates its config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from attnduality.convex import CrossEntropyLoss, regularized_objective
from attnduality.experiments import quickstart as qs
from attnduality.experiments import run_experiment
from attnduality.nn import GatedReLUMLP

TINY = {"n_gates": 6, "adam_steps": 30, "adam_seeds": 2, "tol": 1e-4, "checkpoint_every": 10}


def _problem(seed: int = 0, n: int = 40, d: int = 5, p: int = 3, k: int = 2, c: int = 3) -> tuple:
    rng = np.random.default_rng(seed)
    x = torch.as_tensor(rng.standard_normal((n, d)))
    y = torch.as_tensor(rng.integers(0, c, n))
    wide = torch.as_tensor(rng.standard_normal((d, p))).repeat_interleave(k, dim=1)
    w1 = torch.as_tensor(rng.standard_normal((3, d, p * k)))
    w2 = torch.as_tensor(rng.standard_normal((3, p * k, c)))
    return x, y, wide, w1, w2


def test_stacked_twin_objective_is_the_twins_regularised_objective() -> None:
    x, y, wide, w1, w2 = _problem()
    twin = qs._StackedTwin(x, y, wide, w1.clone(), w2.clone(), beta=0.03)
    got = twin.objectives().detach()
    for s in range(3):
        want = regularized_objective(GatedReLUMLP(wide, w1[s], w2[s]), CrossEntropyLoss(y), x, 0.03).detach()
        assert abs(float(got[s]) - float(want)) <= 1e-12 * float(want)


def test_stacked_adam_updates_each_seed_as_if_it_ran_alone() -> None:
    x, y, wide, w1, w2 = _problem(1)
    twin = qs._StackedTwin(x, y, wide, w1.clone(), w2.clone(), beta=0.01)
    opt = torch.optim.Adam([twin.w1, twin.w2], lr=1e-2)
    alone = GatedReLUMLP(wide, w1[1].clone(), w2[1].clone())
    opt1 = torch.optim.Adam(alone.parameters(), lr=1e-2)
    loss = CrossEntropyLoss(y)
    for _ in range(15):
        opt.zero_grad()
        twin.objectives().sum().backward()
        opt.step()
        opt1.zero_grad()
        regularized_objective(alone, loss, x, 0.01).backward()
        opt1.step()
    torch.testing.assert_close(twin.w1[1].detach(), alone.w1.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(twin.w2[1].detach(), alone.w2.detach(), rtol=1e-10, atol=1e-12)


def test_interrupted_adam_resumes_to_the_same_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = run_experiment("quickstart", out=tmp_path / "full", overrides=TINY, progress=False)
    calls = {"n": 0}
    original = qs._StackedTwin.objectives

    def failing(self: qs._StackedTwin) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] == 17:  # after the checkpoint at step 10, before the one at step 20
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(qs._StackedTwin, "objectives", failing)
    with pytest.raises(KeyboardInterrupt):
        run_experiment("quickstart", out=tmp_path / "cut", overrides=TINY, progress=False)
    cut = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert cut["status"] == "interrupted"
    monkeypatch.setattr(qs._StackedTwin, "objectives", original)
    again = run_experiment("quickstart", out=tmp_path / "cut", overrides=TINY, progress=False)
    assert again["steps"]["convex"]["resumed"] is True
    assert again["tables"]["adam"] == full["tables"]["adam"] and again["metrics"].keys() == full["metrics"].keys()
    for key, value in full["metrics"].items():
        if not key.endswith("seconds"):
            assert again["metrics"][key] == value, key


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ({"beta": float("inf")}, "beta must be a finite number > 0"),
        ({"beta": float("nan")}, "beta must be a finite number > 0"),
        ({"adam_lr": -1.0}, "adam_lr must be a finite number > 0"),
        ({"adam_dtype": "float16"}, "adam_dtype must be one of"),
        ({"adam_seeds": 0}, "adam_seeds must be an integer >= 1"),
        ({"tol": 0.0}, "tol must be in"),
    ],
)
def test_config_is_validated_before_any_work(tmp_path: Path, override: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        run_experiment("quickstart", out=tmp_path, overrides=override, progress=False)
    assert not (tmp_path / "results.json").exists()


def test_what_this_shows_reports_a_run_below_the_bound_as_a_bug() -> None:
    cfg = qs.QuickstartConfig()
    convex = {
        "objective": 1.0,
        "lower_bound": 0.9999999,
        "relative_gap": 1e-7,
        "status": "converged",
        "test_accuracy": 0.9,
        "gates": [[0.0] * 4],
    }
    runs = [{"final_objective": 1.001, "test_accuracy": 0.8}, {"final_objective": 1.01, "test_accuracy": 0.85}]
    text = qs._what_this_shows(cfg, convex, runs, below=0)
    assert "1.0e-03 to 1.0e-02 above that bound" in text and "None went below it" in text and "4 gates" in text
    assert "please report this as a bug" in qs._what_this_shows(cfg, convex, runs, below=1)
    unconverged = qs._what_this_shows(cfg, {**convex, "status": "max_iter", "relative_gap": 0.1}, runs, below=0)
    assert "**not** certified (status max_iter" in unconverged
