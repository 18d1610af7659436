"""The runner's modules: pinned config hashes, the names ``runner`` re-exports, how the modules import each other."""

from __future__ import annotations

import ast
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import attnduality.experiments as experiments_pkg
from attnduality.experiments import Experiment, RunContext, default_out_dir, run_experiment
from attnduality.experiments import runner as runner_mod
from attnduality.experiments.runner import config_hash

FRAMEWORK = ("checkpoints", "config", "context", "environment", "registry", "report", "runner", "storage", "threads")
PKG_DIR = Path(experiments_pkg.__file__).parent


@dataclass(frozen=True)
class PinConfig:
    n: int = 3
    rate: float = 0.25
    betas: tuple[float, ...] = (1e-3, 1e-2)
    name: str = "x|y"
    limit: int | None = None
    flag: bool = True


def _pin_body(ctx: RunContext) -> None:
    ctx.metric("n", ctx.config.n)


PIN = Experiment(name="pin-hash", about="pinned hashes", data="none", config=PinConfig, run=_pin_body)


# ----------------------------------------------------------------------------------------------------------------
# the config hash names existing run folders: these values must never change
# ----------------------------------------------------------------------------------------------------------------
def test_config_hash_is_pinned() -> None:
    identity = {"experiment": "pin-hash", "config": PinConfig(), "seed": 7, "device": "cpu"}
    assert config_hash(identity) == "2fbc41f6aa115e5d"
    mixed = {
        "a": np.int64(3),
        "b": np.float32(0.5),
        "c": np.arange(3),
        "p": Path("/x"),
        "t": (1, 2.5),
        "nan": math.nan,
        "inf": -math.inf,
        2: None,
    }
    assert config_hash(mixed) == "dab33b451dad3bca"
    assert default_out_dir("pin-hash", 1, True, {"rate": "0.5"}) == Path("runs/pin-hash-quick-seed1-e6f2a6f4")


def test_run_folders_keep_their_config_hash(tmp_path: Path) -> None:
    res = run_experiment(PIN, out=tmp_path / "a", seed=7, progress=False, threads=None)
    manifest = json.loads((tmp_path / "a" / "checkpoints" / "manifest.json").read_text())
    assert res["config_hash"] == manifest["config_hash"] == "2fbc41f6aa115e5d"
    overrides = {"betas": "0.1,1", "limit": "4", "rate": "1e-3"}
    res = run_experiment(PIN, out=tmp_path / "b", seed=2, overrides=overrides, progress=False, threads=None)
    assert res["config"] == {"n": 3, "rate": 0.001, "betas": [0.1, 1.0], "name": "x|y", "limit": 4, "flag": True}
    assert res["config_hash"] == "6352446e2d0f1e76"


# ----------------------------------------------------------------------------------------------------------------
# runner re-exports the public names of the modules it was split into
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("registry", ["DISCOVERY_ERRORS", "EXPERIMENTS", "Experiment", "available_experiments", "get_experiment"]),
        ("registry", ["register_experiment", "unregister_experiment"]),
        ("config", ["apply_overrides", "check_finite_config", "config_hash", "parse_overrides"]),
        ("context", ["RunContext"]),
        ("checkpoints", ["TrainingCheckpoint"]),
        ("environment", ["check_device", "environment_versions"]),
    ],
)
def test_runner_reexports(module: str, names: list[str]) -> None:
    import importlib

    mod = importlib.import_module(f"attnduality.experiments.{module}")
    for name in names:
        assert name in runner_mod.__all__
        assert getattr(runner_mod, name) is getattr(mod, name)


def test_runner_all_is_importable() -> None:
    for name in runner_mod.__all__:
        assert hasattr(runner_mod, name), name
    for name in experiments_pkg.__all__:
        if name != "run_quickstart":
            assert getattr(experiments_pkg, name) is getattr(runner_mod, name)


# ----------------------------------------------------------------------------------------------------------------
# module structure: no private names across modules, no import cycles
# ----------------------------------------------------------------------------------------------------------------
def _relative_imports(module: str) -> list[tuple[str, list[str]]]:
    """(imported sibling module, names) for each run-time ``from .x import ...`` / ``from . import x`` of ``module``."""
    tree = ast.parse((PKG_DIR / f"{module}.py").read_text())
    found: list[tuple[str, list[str]]] = []
    for node in tree.body:  # module level only: imports under ``if TYPE_CHECKING:`` are not run
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [a.name for a in node.names]
            if node.module is None:
                found += [(name, []) for name in names]
            else:
                found.append((node.module, names))
    return found


def test_no_private_imports_across_modules() -> None:
    for module in FRAMEWORK:
        for target, names in _relative_imports(module):
            private = [n for n in names if n.startswith("_")]
            assert not private, f"{module} imports private {private} from {target}"


def test_no_import_cycles() -> None:
    graph = {m: {t for t, _ in _relative_imports(m) if t in FRAMEWORK} for m in FRAMEWORK}
    done: set[str] = set()

    def visit(m: str, path: tuple[str, ...]) -> None:
        assert m not in path, f"import cycle: {' -> '.join((*path, m))}"
        if m in done:
            return
        for t in graph[m]:
            visit(t, (*path, m))
        done.add(m)

    for m in FRAMEWORK:
        visit(m, ())
