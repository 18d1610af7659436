"""The ``uea`` experiment through the runner on real JapaneseVowels with tiny models: both protocols, resume, report."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from attnduality.data import MissingDataError, load_uea
from attnduality.experiments import run_experiment
from attnduality.experiments.uea import UEAConfig, protocol_numbers
from attnduality.experiments.uea.data import holdout_split, stratified_subset

TINY: dict[str, Any] = {
    "datasets": ("JapaneseVowels",),
    "seeds": 1,
    "epochs": 2,
    "d_model": 8,
    "heads": 2,
    "ffn": 16,
    "max_train": 45,
    "max_test": 27,
    "spectrum_samples": 2,
}


@pytest.fixture(scope="module", autouse=True)
def _japanese_vowels() -> None:
    try:
        load_uea("JapaneseVowels")
    except MissingDataError as e:
        if os.environ.get("ATTNDUALITY_REQUIRE_DATA") == "1":
            raise
        pytest.skip(f"{e} (ATTNDUALITY_REQUIRE_DATA=1 makes this a failure)")


def test_tiny_run_reports_both_protocols(tmp_path: Path) -> None:
    res = run_experiment("uea", out=tmp_path, overrides=TINY, progress=False)
    assert res["status"] == "complete"
    on_disk = json.loads((tmp_path / "results.json").read_text())
    summary = on_disk["tables"]["summary"]
    assert [r["model"] for r in summary] == ["PrimalFormer", "Primal.+Trans.", "Transformer (softmax)"]
    for r in summary:
        assert r["paper protocol (best test epoch, flawed)"] and r["honest (val-selected epoch)"]
    for m in ("primalformer", "primal+trans", "transformer"):
        for proto in ("paper_protocol", "honest"):
            assert 0.0 <= on_disk["metrics"][f"JapaneseVowels.{m}.{proto}.mean"] <= 1.0
    runs = on_disk["tables"]["runs"]
    assert {(r["model"], r["part"]) for r in runs} == {(m, p) for m in ("primalformer", "primal+trans", "transformer")
                                                       for p in ("holdout", "full")}
    for r in runs:
        assert r["n_test"] == 27 and r["n_fit"] + r["n_val"] == 45
        assert r["best_test"] >= r["last_test"]
        if r["part"] == "holdout":
            assert r["n_val"] >= 9 and r["best_test"] >= r["honest"]  # one per class at least; best-of ≥ selected
        else:
            assert r["n_val"] == 0 and r["honest"] is None
    hist = on_disk["tables"]["history"]
    assert len(hist) == 6 * 2 and all(h["test_acc"] is not None and h["train_loss"] > 0 for h in hist)
    assert all((h["val_acc"] is None) == (h["part"] == "full") for h in hist)
    report = (tmp_path / "report.md").read_text()
    assert "paper protocol (best test epoch, flawed)" in report and "Budget below the paper's" in report
    for fig in ("curves-JapaneseVowels.png", "spectrum-JapaneseVowels.png"):
        assert (tmp_path / fig).stat().st_size > 0 and fig in report
    spec = on_disk["tables"]["spectrum-JapaneseVowels"]
    assert [r["layer"].split("(")[-1] for r in spec] == [
        "PrimalAttention)", "PrimalAttention)", "SoftmaxAttention)", "PrimalAttention)", "SoftmaxAttention)",
        "SoftmaxAttention)",
    ]


def test_interrupted_training_resumes_bit_identically(tmp_path: Path) -> None:
    base = {**TINY, "models": ("primalformer",), "full_train_run": False, "spectrum_samples": 0}
    ref = run_experiment("uea", out=tmp_path / "ref", overrides=base, progress=False)
    # the state after epoch 1 of the same training (the epoch count does not change epoch 1): an interruption there
    run_experiment("uea", out=tmp_path / "one", overrides={**base, "epochs": 1}, progress=False)
    key = "JapaneseVowels/primalformer/seed0/holdout"
    run = tmp_path / "run"
    shutil.copytree(tmp_path / "ref" / "checkpoints", run / "checkpoints")
    (run / "checkpoints" / "steps" / f"{key}.json").unlink()
    shutil.copy(tmp_path / "one" / "checkpoints" / "train" / f"{key}.pt", run / "checkpoints" / "train" / f"{key}.pt")
    assert torch.load(run / "checkpoints" / "train" / f"{key}.pt", weights_only=False)["next"] == 1
    res = run_experiment("uea", out=run, overrides=base, progress=False)
    assert res["steps"][key]["resumed"] is False  # trained, from the checkpoint
    assert torch.load(run / "checkpoints" / "train" / f"{key}.pt", weights_only=False)["next"] == 2

    def strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]

    assert strip(res["tables"]["history"]) == strip(ref["tables"]["history"])
    assert res["metrics"]["JapaneseVowels.primalformer.honest.mean"] == ref["metrics"][
        "JapaneseVowels.primalformer.honest.mean"]
    a = torch.load(tmp_path / "ref" / "checkpoints" / "train" / f"{key}.pt", weights_only=False)["model"]
    b = torch.load(run / "checkpoints" / "train" / f"{key}.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a complete run loads every step
    again = run_experiment("uea", out=run, overrides=base, progress=False)
    assert again["steps"][key]["resumed"] is True


def test_protocol_numbers() -> None:
    test = [0.5, 0.9, 0.7, 0.9]
    val = [0.6, 0.6, 0.8, 0.8]
    pn = protocol_numbers(test, val)
    assert pn["best_test"] == 0.9 and pn["best_test_index"] == 1  # earliest maximum
    assert pn["honest"] == 0.7 and pn["honest_index"] == 2 and pn["honest_val"] == 0.8
    assert pn["last_test"] == 0.9
    assert "honest" not in protocol_numbers(test)
    with pytest.raises(ValueError, match="shape"):
        protocol_numbers(test, val[:2])
    with pytest.raises(ValueError, match="non-empty"):
        protocol_numbers([])


def test_splits_are_stratified_and_disjoint() -> None:
    y = np.repeat(np.arange(9), 30)
    fit, val = holdout_split(y, 0.2, seed=0)
    assert np.intersect1d(fit, val).size == 0 and fit.size + val.size == y.size
    assert (np.bincount(y[val]) == 6).all()
    assert np.array_equal(holdout_split(y, 0.2, seed=0)[1], val)
    sub = stratified_subset(y, 45, np.random.default_rng(0))
    assert sub.size == 45 and (np.bincount(y[sub], minlength=9) == 5).all()


def test_config_defaults_and_validation() -> None:
    cfg = UEAConfig()
    assert (cfg.epochs, cfg.d_model, cfg.layers, cfg.heads, cfg.batch, cfg.lr, cfg.seeds) == (
        100, 512, 2, 8, 16, 1e-3, 3)
    assert cfg.hparams("JapaneseVowels", "primalformer") == (40, 0.5, 5)
    assert cfg.hparams("SelfRegulationSCP2", "primalformer") == (20, 0.0, 10)
    assert cfg.hparams("SelfRegulationSCP1", "primal+trans") == (30, 0.2, 10)
    assert cfg.hparams("JapaneseVowels", "transformer") is None
    # an override naming one model is merged into the defaults
    merged = UEAConfig(rank={"JapaneseVowels": {"primalformer": 8}})
    assert merged.hparams("JapaneseVowels", "primalformer") == (8, 0.5, 5)
    assert merged.hparams("JapaneseVowels", "primal+trans") == (30, 0.2, 5)
    with pytest.raises(ValueError, match="unknown UEA datasets"):
        UEAConfig(datasets=("NoSuchSet",))
    with pytest.raises(ValueError, match="models"):
        UEAConfig(models=("performer",))
    with pytest.raises(ValueError, match="no rank/eta"):
        UEAConfig(datasets=("BasicMotions",))
    assert UEAConfig(datasets=("BasicMotions",), models=("transformer",)).datasets == ("BasicMotions",)
    with pytest.raises(ValueError, match="val_fraction"):
        UEAConfig(val_fraction=1.0)
    with pytest.raises(ValueError, match="divisible"):
        UEAConfig(d_model=10, heads=4)
    with pytest.raises(ValueError, match="layers >= 2"):
        UEAConfig(layers=1)
