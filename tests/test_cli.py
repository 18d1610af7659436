"""The command line: `attnduality list` and the quickstart main job (quick configuration)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attnduality.cli import main


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    assert "quickstart" in capsys.readouterr().out


def test_help_lists_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "quickstart" in out and "--seed" in out


def test_unknown_experiment_is_an_error() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "no-such-experiment"])
    assert exc.value.code == 2


def test_quickstart_quick(tmp_path: Path) -> None:
    assert main(["run", "quickstart", "--quick", "--seed", "1", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["config"]["seed"] == 1
    convex = res["convex"]
    assert convex["status"] == "converged" and convex["relative_gap"] <= 1e-6
    assert convex["test_accuracy"] > 0.9
    # no non-convex run ends below the certified lower bound on the optimum
    assert all(run["best_objective"] >= convex["lower_bound"] - 1e-12 for run in res["adam"])
    assert (tmp_path / "report.md").read_text().startswith("# Quickstart")
    assert (tmp_path / "objective.png").stat().st_size > 1000
