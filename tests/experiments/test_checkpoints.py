"""``SolveCheckpoint``: a long solve's iterate saved as it goes, and an interrupted solve restarted from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from attnduality.convex import FISTA, CompositeProblem, CrossEntropyLoss, GatedMLPOperator, NuclearNorm
from attnduality.experiments.checkpoints import SolveCheckpoint


def _problem() -> CompositeProblem:
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.standard_normal((120, 6)))
    y = torch.tensor(rng.integers(0, 3, 120))
    masks = (x @ torch.tensor(rng.standard_normal((6, 4))) >= 0).double()
    return CompositeProblem(CrossEntropyLoss(y), GatedMLPOperator(x, masks, 3), NuclearNorm(), 1e-3)


def test_an_interrupted_solve_restarts_from_its_saved_iterate(tmp_path: Path) -> None:
    problem = _problem()
    full = FISTA(tol=1e-9, max_iter=20_000).run(problem)
    ck = SolveCheckpoint(tmp_path / "solve" / "a.pt", every=0.0)
    assert ck.start("beta=1e-3") is None and ck.load() is None
    first = FISTA(tol=1e-9, max_iter=60).run(problem, callback=ck)  # "interrupted" after 60 iterations
    rec = ck.load()
    assert rec is not None and rec["tag"] == "beta=1e-3" and rec["phase"] == "fista" and rec["n_iter"] == 60
    assert rec["rel_gap"] == pytest.approx(first.history.rel_gap[-1])  # the iterate of the last certificate check
    assert problem.objective(rec["z"].to(torch.float64)) == pytest.approx(first.history.objective[-1], rel=1e-12)
    assert SolveCheckpoint(ck.path).start("beta=2e-3") is None  # another solve's record is not returned
    again = SolveCheckpoint(ck.path, every=0.0)
    saved = again.start("beta=1e-3")
    assert saved is not None and again.before == pytest.approx(rec["seconds"])
    second = FISTA(tol=1e-9, max_iter=20_000).run(problem, z0=saved["z"], callback=again)
    assert second.objective == pytest.approx(full.objective, rel=1e-8) and second.n_iter < full.n_iter
    last = again.load()
    assert last is not None and last["n_iter"] == 60 + second.n_iter  # iterations of the phase, both attempts
    assert last["seconds"] >= rec["seconds"]
    again.clear()
    assert again.load() is None


def test_every_must_be_non_negative(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="every must be a number of seconds >= 0"):
        SolveCheckpoint(tmp_path / "a.pt", every=-1.0)
