"""Fault injection on the runner: runs killed at any point resume to the numbers of an uninterrupted run, and
concurrent runs on one output folder are refused rather than mixed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from attnduality.experiments import RunFolderBusyError, run_experiment, unregister_experiment
from attnduality.experiments.runner import _run_lock

CHILD = textwrap.dedent(
    '''
    """A toy experiment with a cached step and a checkpointed loop; killed on request at a chosen write."""
    import os
    import signal
    import sys
    import time
    from dataclasses import dataclass
    from pathlib import Path

    import numpy as np

    from attnduality.experiments import ConfigMismatchError, RunFolderBusyError, register_experiment, run_experiment
    from attnduality.experiments import storage


    @dataclass(frozen=True)
    class ToyConfig:
        scale: float = 1.0
        steps: int = 30


    @register_experiment("toy_faults", about="toy", data="none", config=ToyConfig)
    def toy(ctx):
        cfg = ctx.config
        first = ctx.step("first", lambda: {"v": float(np.random.standard_normal()) * cfg.scale})
        ck = ctx.checkpoint("loop", every=5)
        start = ck.resume()
        acc = ck.extra.get("acc", 0.0)
        for t in range(start, cfg.steps):
            acc += float(np.sin(t * cfg.scale + first["v"]))
            time.sleep(float(os.environ.get("STEP_SLEEP", "0")))
            ck.maybe_save(t, extra={"acc": acc})
        ctx.metric("acc", acc)
        ctx.metric("first", first["v"])


    def _kill_at(spec):
        name, _, count = spec.partition(":")
        seen = {"n": 0}
        original = storage.atomic_write_bytes

        def write(path, data):
            if path.name == name:
                seen["n"] += 1
                if seen["n"] == int(count or 1):
                    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp.write_bytes(data[: len(data) // 2])  # a half-written temporary file
                    os.kill(os.getpid(), signal.SIGKILL)
            original(path, data)

        storage.atomic_write_bytes = write  # every file of a run is written through this one function


    if __name__ == "__main__":
        out, scale = sys.argv[1], float(sys.argv[2])
        if os.environ.get("KILL_AT"):
            _kill_at(os.environ["KILL_AT"])
        barrier = os.environ.get("BARRIER")
        if barrier:
            Path(f"{barrier}.ready.{os.getpid()}").touch()
            while not Path(barrier).exists():
                time.sleep(0.001)
        try:
            run_experiment("toy_faults", out=out, overrides={"scale": scale}, progress=False, threads=None)
        except RunFolderBusyError:
            sys.exit(3)
        except ConfigMismatchError:
            sys.exit(4)
    '''
)


@pytest.fixture(scope="module")
def child(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("child") / "toy_child.py"
    path.write_text(CHILD)
    sys.path.insert(0, str(path.parent))
    import toy_child  # noqa: F401  (registers the experiment in this process too)

    yield path
    sys.path.remove(str(path.parent))
    unregister_experiment("toy_faults")
    sys.modules.pop("toy_child", None)


def _spawn(child: Path, out: Path, scale: float, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(child), str(out), str(scale)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _numbers(results: dict) -> tuple:
    return results["status"], results["metrics"], results["config"]


@pytest.mark.parametrize("kill_at", ["manifest.json:1", "first.json:1", "loop.pt:3", "results.json:1", "timer"])
def test_a_killed_run_resumes_to_the_uninterrupted_numbers(child: Path, tmp_path: Path, kill_at: str) -> None:
    reference = run_experiment("toy_faults", out=tmp_path / "ref", overrides={"scale": 0.7}, progress=False)
    out = tmp_path / "run"
    if kill_at == "timer":
        proc = _spawn(child, out, 0.7, STEP_SLEEP="0.05")
        deadline = time.monotonic() + 60
        while not (out / "checkpoints" / "train" / "loop.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        proc.kill()
    else:
        proc = _spawn(child, out, 0.7, KILL_AT=kill_at)
    proc.wait(timeout=120)
    assert proc.returncode == -9, proc.stderr.read().decode()
    if kill_at == "results.json:1":
        assert not (out / "results.json").exists()  # the half-written temporary file never replaced it
    again = run_experiment("toy_faults", out=out, overrides={"scale": 0.7}, progress=False)
    assert _numbers(again) == _numbers(reference)
    assert json.loads((out / "results.json").read_text())["metrics"] == reference["metrics"]


@pytest.mark.parametrize("scales", [(0.5, 0.5), (0.5, 0.9)], ids=["equal-configs", "different-configs"])
def test_concurrent_runs_on_one_folder_are_refused_not_mixed(
    child: Path, tmp_path: Path, scales: tuple[float, float]
) -> None:
    out, barrier = tmp_path / "run", tmp_path / "go"
    procs = [_spawn(child, out, s, BARRIER=str(barrier), STEP_SLEEP="0.02") for s in scales]
    deadline = time.monotonic() + 60
    while len(list(tmp_path.glob("go.ready.*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)  # until both children have imported everything and wait at the barrier
    barrier.touch()
    codes = [p.wait(timeout=120) for p in procs]
    assert sorted(codes)[0] == 0, [p.stderr.read().decode() for p in procs]
    # the loser was refused: busy while the winner ran, or (different config) a mismatch if it came after
    assert sorted(codes)[1] in ((3, 4) if scales[0] != scales[1] else (0, 3)), codes
    winner = scales[codes.index(0)] if codes.count(0) == 1 else scales[0]
    reference = run_experiment("toy_faults", out=tmp_path / "ref", overrides={"scale": winner}, progress=False)
    assert _numbers(json.loads((out / "results.json").read_text())) == _numbers(reference)


def test_a_held_folder_is_refused_in_process(child: Path, tmp_path: Path) -> None:
    with _run_lock(tmp_path), pytest.raises(RunFolderBusyError, match=f"in use by another run \\(pid {os.getpid()}\\)"):
        run_experiment("toy_faults", out=tmp_path, progress=False)
    run_experiment("toy_faults", out=tmp_path, progress=False)  # the lock is released with its holder
