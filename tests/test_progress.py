"""Progress output: plain lines in logs, tqdm's interface, silence when disabled."""

from __future__ import annotations

import io

import pytest

from attnduality.progress import PlainProgress, progress


def test_plain_progress_prints_a_few_lines_without_carriage_returns() -> None:
    out = io.StringIO()
    bar = PlainProgress(range(1000), "Adam", every=0.0, stream=out)
    assert list(bar) == list(range(1000))
    bar.set_postfix(loss="0.1")
    text = out.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and "\x1b" not in text
    assert lines[0].startswith("Adam: 0/1000 (0%)") and lines[-1].startswith("Adam: 1000/1000 (100%)")
    assert len(lines) == 5  # start, each quarter


def test_plain_progress_resumes_from_initial_and_rate_limits() -> None:
    out = io.StringIO()
    list(PlainProgress(range(300, 400), "train", initial=300, total=400, every=3600.0, stream=out))
    lines = out.getvalue().splitlines()
    assert lines == [lines[0], lines[-1]] and lines[0].startswith("train: 300/400 (75%)")
    assert lines[-1].startswith("train: 400/400 (100%)")


def test_progress_is_plain_when_stderr_is_not_a_terminal_and_silent_when_disabled(
    capsys: pytest.CaptureFixture[str],
) -> None:
    bar = progress(range(3), "x")  # pytest's captured stderr is not a terminal
    assert isinstance(bar, PlainProgress) and list(bar) == [0, 1, 2]
    assert capsys.readouterr().err.startswith("x: 0/3 (0%)")
    quiet = progress(range(3), "y", enabled=False, total=3)
    quiet.set_postfix(a=1)
    assert list(quiet) == [0, 1, 2] and capsys.readouterr().err == ""


def test_plain_progress_driven_by_update_prints_start_and_end() -> None:
    out = io.StringIO()
    bar = PlainProgress(desc="train", total=8, every=3600.0, stream=out)
    for _ in range(8):
        bar.update()
        bar.set_postfix(loss="0.5")
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("train: 0/8 (0%)")
    assert lines[1].startswith("train: 8/8 (100%)") and lines[1].endswith("[loss=0.5]")
