"""The student-teacher experiment on the frozen MiniLM: a tiny config through the runner (metrics, figures, the
teacher rebuilt exactly, the certified bound, resume), the [CLS] attention and the sparsity statistics."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

from attnduality.data import MissingDataError
from attnduality.experiments import get_experiment, run_experiment
from attnduality.experiments.student_teacher import StudentTeacherConfig, attention_stats, cls_attention
from attnduality.nn import SoftmaxAttention

TINY: dict[str, Any] = {
    "n_sentences": 40, "max_length": 10, "seeds": (0,), "layer_steps": 4, "layer_batch": 8, "head_steps": 4,
    "head_batch": 8, "twin_heads": 4, "beta_fracs": (0.3, 0.1), "fista_max_iter": 20, "fista_check_every": 5,
    "eval_every": 2, "checkpoint_every": 2, "eval_train_sentences": 8,
}


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


def test_registered_with_quick_config() -> None:
    cfg = get_experiment("student-teacher").make_config(quick=True)
    assert isinstance(cfg, StudentTeacherConfig) and cfg.n_sentences < StudentTeacherConfig().n_sentences


def test_tiny_run_and_resume(tmp_path: Path) -> None:
    _need_data()
    out = tmp_path / "st"
    res = run_experiment("student-teacher", out=out, seed=0, overrides=TINY, progress=False)
    assert res["status"] == "complete"
    m = res["metrics"]
    assert m["teacher_reconstruction_max_abs"] < 1e-4  # the rebuilt last layer is the teacher's
    for key in ("layer.softmax.final_test_rel_mean", "layer.convex.final_test_rel_mean",
                "layer.convex.attention_entropy", "head.softmax.final_test_rel_mean", "head.twin.final_test_rel_mean",
                "head.program.objective", "head.program.rel_gap", "head.program.heads_needed",
                "head.program.token_norm_entropy", "head.beta_max"):
        assert key in m, key
    assert m["head.twin_runs_below_lower_bound"] == 0  # the certified bound holds for the non-convex twin
    assert m["layer.convex.attention_entropy"] <= 1.0 + 1e-9
    assert {"test_error.png", "attention_maps.png", "token_maps.png"} <= set(res["figures"])
    chosen = [r for r in res["tables"]["convex program"] if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["val_rel"] == min(r["val_rel"] for r in res["tables"]["convex program"])
    again = run_experiment("student-teacher", out=out, seed=0, overrides=TINY, progress=False)
    assert all(s["resumed"] for s in again["steps"].values())
    assert again["metrics"] == m


def test_cls_attention_is_the_first_row() -> None:
    torch.manual_seed(0)
    attn = SoftmaxAttention(384, 12, implementation="explicit")
    x = torch.randn(3, 7, 384)
    pad = torch.zeros(3, 7, dtype=torch.bool)
    pad[1, 5:] = True
    with torch.no_grad():
        out, w = cls_attention(attn, x, pad)
        assert torch.allclose(out, attn(x, pad)[:, 0], atol=1e-5)
        assert torch.allclose(w, attn.attention_matrix(x, pad)[:, :, 0], atol=1e-6)
    assert float(w[1, :, 5:].abs().max()) == 0.0


def test_attention_stats_uniform_and_one_hot() -> None:
    n = 6
    uniform = torch.full((2, 3, n, n), 1.0 / n)
    s = attention_stats(uniform)
    assert s["entropy"] == pytest.approx(1.0) and s["effective_keys"] == pytest.approx(n)
    one_hot = torch.eye(n).expand(2, 3, n, n)
    s = attention_stats(one_hot)
    assert s["entropy"] == pytest.approx(0.0, abs=1e-12) and s["max_weight"] == pytest.approx(1.0)
    pad = torch.zeros(2, n, dtype=torch.bool)
    pad[:, 3:] = True
    w = torch.zeros(2, 3, n, n)
    w[..., :3] = 1.0 / 3
    assert attention_stats(w, pad)["entropy"] == pytest.approx(1.0)  # normalised by the real keys only


@pytest.mark.parametrize("bad", [{"n_sentences": 5000}, {"layer_models": ("linear",)}, {"beta_fracs": (1.5,)},
                                 {"n_heads": 5}, {"seeds": ()}, {"test_frac": 0.0}, {"head_steps": 0}])
def test_bad_config_raises(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        StudentTeacherConfig(**bad)
