"""Split validation, the cache directory, and the set-up's checks and messages (no network)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from attnduality.data import MissingDataError, Split, cache_dir, config_hash
from attnduality.data._sources import SOURCES, fetch, fetched_file, missing
from attnduality.data.setup import main, report


def _split(**kw: object) -> Split:
    args = dict(X_train=np.zeros((4, 3, 2)), y_train=np.array([0, 1, 0, 1]), X_test=np.zeros((2, 3, 2)),
                y_test=np.array([1, 0]), classes=("a", "b"))
    args.update(kw)
    return Split(**args)  # type: ignore[arg-type]


def test_split_validation() -> None:
    s = _split(mask_train=np.ones((4, 3), bool))
    assert s.n_classes == 2 and s.head(2, 1).X_train.shape == (2, 3, 2) and s.head(2, 1).mask_train.shape == (2, 3)
    cases = [
        (dict(y_train=np.array([0, 1, 0])), r"labels must have shape \(4,\)"),
        (dict(y_train=np.array([0, 1, 0, 2])), r"labels must lie in 0..2-1"),
        (dict(y_test=np.array([1.0, 0.0])), "labels must be int64"),
        (dict(X_train=np.full((4, 3, 2), np.nan)), "NaN"),
        (dict(X_test=np.zeros((2, 4, 2))), "differ in shape"),
        (dict(mask_test=np.ones((2, 3), int)), "mask must be bool"),
        (dict(X_train=np.zeros(4)), r"shape \(N, ...\)"),
    ]
    for kw, msg in cases:
        with pytest.raises(ValueError, match=msg):
            _split(**kw)


def test_cache_dir_and_config_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTNDUALITY_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()
    assert cache_dir(tmp_path / "d") == tmp_path / "d"
    assert config_hash({"a": 1, "b": [2]}) == config_hash({"b": [2], "a": 1}) != config_hash({"a": 2, "b": [2]})


def test_missing_and_corrupt_files_name_the_setup_command(tmp_path: Path) -> None:
    with pytest.raises(MissingDataError, match=r"is missing.*python -m attnduality.data.setup pang_lee"):
        fetched_file("pang_lee", "pang_lee/sentences.csv", tmp_path)
    assert sorted(missing("mnist", tmp_path)) == ["mnist/mnist.pkl.gz"]
    try:
        good = fetched_file("pang_lee", "pang_lee/sentences.csv")
    except MissingDataError:
        pytest.skip("Pang & Lee not fetched")
    (tmp_path / "pang_lee").mkdir()
    shutil.copy(good, tmp_path / "pang_lee" / "sentences.csv")
    assert fetched_file("pang_lee", "pang_lee/sentences.csv", tmp_path).is_file()
    with open(tmp_path / "pang_lee" / "sentences.csv", "r+b") as f:
        f.seek(100)
        f.write(b"X")
    with pytest.raises(MissingDataError, match="does not match its SHA-256"):
        fetched_file("pang_lee", "pang_lee/sentences.csv", tmp_path)


def test_fetch_is_a_no_op_when_files_are_intact() -> None:
    if missing("uea"):
        pytest.skip("UEA files not fetched")
    paths = fetch("uea")  # no download: every file is present and verified
    assert len(paths) == len(SOURCES["uea"].files) == 10 and all(p.is_file() for p in paths)
    with pytest.raises(ValueError, match="unknown source"):
        fetch("cifar")


def test_report_and_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    status = report(tmp_path)
    assert status["pang_lee"] == "missing 3 file(s): run python -m attnduality.data.setup pang_lee"
    assert main(["--check", "--cache", str(tmp_path)]) == 1
    assert "python -m attnduality.data.setup mnist" in capsys.readouterr().out
