"""The README's set-up commands and examples are what CI and users run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_readme_opens_with_two_setup_commands() -> None:
    bash = _blocks("bash")
    assert len(bash) >= 2
    main_job, tests = bash[0].strip(), bash[1].strip()
    assert main_job.startswith("pip install torch==2.13.0 && ") and "attnduality run quickstart" in main_job
    assert tests.startswith("pip install torch==2.13.0 && ") and "pytest" in tests
    # the first two fenced blocks come before any prose section
    assert README.index(bash[1]) < README.index("## ")


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _blocks("bash")[1].strip() in [line.strip() for line in ci]


def test_readme_python_examples_run() -> None:
    for code in _blocks("python"):
        exec(compile(code, "README.md", "exec"), {})
