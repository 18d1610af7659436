"""Channel pooling and the memory-mapped feature cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from attnduality.backbones import TokenFeatures, pool_channels
from attnduality.backbones.features import build_cached, feature_dir, load_cached


@pytest.mark.parametrize(("d", "d_out"), [(384, 100), (256, 100), (10, 3), (7, 7), (5, 1)])
def test_pool_channels_matches_adaptive_avg_pool1d(d: int, d_out: int) -> None:
    x = torch.randn(3, 4, d, dtype=torch.float64)
    ref = torch.nn.functional.adaptive_avg_pool1d(x.reshape(-1, 1, d), d_out).reshape(3, 4, d_out)
    np.testing.assert_allclose(pool_channels(x.numpy(), d_out), ref.numpy(), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="d_out must lie in"):
        pool_channels(x.numpy(), d + 1)


def test_build_cached_writes_once_and_memory_maps(tmp_path: Path) -> None:
    calls = []

    def fill(X: np.ndarray, mask: np.ndarray) -> None:
        calls.append(1)
        X[:] = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
        mask[:, :2] = True

    path = feature_dir("toy set/1", {"k": 1}, tmp_path)
    assert path.parent == tmp_path / "features" and path.name.startswith("toy_set_1-")
    assert load_cached(path) is None
    a = build_cached(path, (2, 3, 4), {"k": 1}, fill, y=np.array([0, 1]))
    b = build_cached(path, (2, 3, 4), {"k": 1}, fill)
    assert len(calls) == 1 and isinstance(b.X, np.memmap) and not b.X.flags.writeable
    assert np.array_equal(a.X, b.X) and b.mask.sum() == 4 and b.y.tolist() == [0, 1] and b.meta == {"k": 1}
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary folders left
    assert feature_dir("toy set/1", {"k": 2}, tmp_path) != path


def test_failed_fill_leaves_no_cache(tmp_path: Path) -> None:
    def fill(X: np.ndarray, mask: np.ndarray) -> None:
        raise RuntimeError("backbone crashed")

    path = feature_dir("x", {}, tmp_path)
    with pytest.raises(RuntimeError):
        build_cached(path, (1, 1, 1), {}, fill)
    assert not path.exists() and list(path.parent.iterdir()) == []


def test_token_features_validation() -> None:
    with pytest.raises(ValueError, match="bool mask"):
        TokenFeatures(np.zeros((2, 3, 4)), np.ones((2, 3), int), None, None, {})
    with pytest.raises(ValueError, match="labels"):
        TokenFeatures(np.zeros((2, 3, 4)), np.ones((2, 3), bool), np.zeros(3), None, {})
