"""The fine-tuning experiment end to end at a tiny size (real MiniLM, real Pang & Lee)."""

from __future__ import annotations

import json
import os

import pytest

from attnduality.data import MissingDataError
from attnduality.experiments.hf_finetune import FinetuneConfig
from attnduality.experiments.runner import run_experiment


def _need_data() -> None:
    from attnduality.backbones import load_minilm
    from attnduality.data import load_pang_lee

    try:
        load_pang_lee("sentences")
        load_minilm()
    except MissingDataError as e:
        if os.environ.get("ATTNDUALITY_REQUIRE_DATA") == "1":
            raise
        pytest.skip(f"{e} (ATTNDUALITY_REQUIRE_DATA=1 makes this a failure)")


def test_finetune_runs_both_variants_and_both_protocols(tmp_path) -> None:
    _need_data()
    overrides = {"n_train": 60, "n_test": 40, "max_tokens": 12, "epochs": 2, "batch_size": 16, "rank": 3,
                 "long_lengths": (48,), "long_repeats": 1}  # fmt: skip
    out = tmp_path / "run"
    run_experiment("hf_finetune", seed=0, out=out, overrides=overrides, threads=1)
    res = json.loads((out / "results.json").read_text())
    acc = {r["variant"]: r for r in res["tables"]["accuracy"]}
    assert set(acc) == {"original", "primal"}
    for r in acc.values():
        assert 0.0 <= r["honest test acc."] <= r["best-test-epoch acc. (flawed)"] <= 1.0
        assert r["s/step"] > 0
    assert acc["original"]["new params"] == 0 and acc["primal"]["new params"] > 0
    assert acc["primal"]["trainable params"] > acc["original"]["trainable params"] - acc["primal"]["new params"]
    long = res["tables"]["long"]
    assert {(r["variant"], r["length"]) for r in long} == {("original", 48), ("primal", 48)}
    assert all(r["error"] is None and r["seconds"] > 0 and r["peak_mib"] > 0 for r in long)
    # a rerun on the same folder loads every step from its checkpoint
    run_experiment("hf_finetune", seed=0, out=out, overrides=overrides, threads=1)
    again = json.loads((out / "results.json").read_text())
    assert again["tables"]["accuracy"] == res["tables"]["accuracy"]


def test_bad_config_is_refused() -> None:
    with pytest.raises(ValueError, match="variants must be a non-empty subset"):
        FinetuneConfig(variants=("softmax",))
    with pytest.raises(ValueError, match="train_layers must lie in 1..6"):
        FinetuneConfig(train_layers=7)
