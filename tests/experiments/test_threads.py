"""The runner's thread policy: idle cores when the run starts, settings restored afterwards."""

from __future__ import annotations

import pytest
import torch

from attnduality.experiments.threads import auto_threads, idle_cpus, resolve_threads, thread_limit


def test_auto_threads_is_between_one_and_torchs_default() -> None:
    idle = idle_cpus(0.05)
    assert idle is None or 0.0 <= idle <= (__import__("os").cpu_count() or 1) + 1e-9
    assert 1 <= auto_threads() <= torch.get_num_threads()
    assert resolve_threads(None) is None and resolve_threads(3) == 3


@pytest.mark.parametrize("bad", [0, -2, 1.5, "many", True])
def test_bad_thread_counts_raise(bad: object) -> None:
    with pytest.raises(ValueError, match="threads must be 'auto', None or an integer >= 1"):
        resolve_threads(bad)  # type: ignore[arg-type]


def test_thread_limit_restores_the_callers_setting() -> None:
    before = torch.get_num_threads()
    with thread_limit(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with thread_limit(None):
        assert torch.get_num_threads() == before
