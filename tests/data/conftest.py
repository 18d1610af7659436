"""Real data sets, loaded once per session. A missing set skips its tests with the loader's message (what is missing
and the command that gets it), unless ATTNDUALITY_REQUIRE_DATA=1 (as in CI), which turns the skip into a failure."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from attnduality.data import MissingDataError, load_fashion_mnist, load_mnist, load_pang_lee, load_uea


def need(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except MissingDataError as e:
        if os.environ.get("ATTNDUALITY_REQUIRE_DATA") == "1":
            raise
        pytest.skip(f"{e} (ATTNDUALITY_REQUIRE_DATA=1 makes this a failure)")


@pytest.fixture(scope="session")
def japanese_vowels() -> Any:
    return need(load_uea, "JapaneseVowels")


@pytest.fixture(scope="session")
def fashion_mnist() -> Any:
    return need(load_fashion_mnist)


@pytest.fixture(scope="session")
def mnist() -> Any:
    return need(load_mnist)


@pytest.fixture(scope="session")
def sentences() -> Any:
    return need(load_pang_lee, "sentences")


@pytest.fixture(scope="session")
def reviews() -> Any:
    return need(load_pang_lee, "reviews")


@pytest.fixture(scope="session")
def load() -> Callable[..., Any]:
    """``load(fn, *args)``: call a loader, skipping (or failing in CI) when its data is missing."""
    return need
