"""Fashion-MNIST (Debian package) and MNIST (set-up fetch) on the real files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from attnduality.data import MissingDataError, load_fashion_mnist, pixel_sequence, read_idx


def test_fashion_mnist_official_split(fashion_mnist) -> None:
    s = fashion_mnist
    assert s.X_train.shape == (60000, 28, 28) and s.X_test.shape == (10000, 28, 28)
    assert s.X_train.dtype == np.uint8 and s.y_test.dtype == np.int64
    assert np.bincount(s.y_train).tolist() == [6000] * 10 and np.bincount(s.y_test).tolist() == [1000] * 10
    assert s.classes[9] == "Ankle boot" and s.X_train.max() == 255
    assert s.y_train[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]  # the published file order
    assert s.y_test[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert 72.5 < s.X_train.mean() < 73.5  # mean pixel 72.94


def test_mnist_official_split(mnist) -> None:
    s = mnist
    assert s.X_train.shape == (60000, 28, 28) and s.X_test.shape == (10000, 28, 28)
    assert np.bincount(s.y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert np.bincount(s.y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert s.X_train.dtype == np.uint8 and s.X_train.max() == 255 and s.X_train[0].min() == 0


def test_missing_fashion_mnist_names_the_apt_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTNDUALITY_FASHION_MNIST_DIR", str(tmp_path))
    with pytest.raises(MissingDataError, match="apt-get install -y dataset-fashion-mnist"):
        load_fashion_mnist()


def test_read_idx_round_trip_and_corruption(tmp_path: Path) -> None:
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    good = bytes([0, 0, 8, 3]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape) + arr.tobytes()
    (tmp_path / "a.gz").write_bytes(gzip.compress(good))
    assert np.array_equal(read_idx(tmp_path / "a.gz"), arr)
    (tmp_path / "short").write_bytes(good[:-1])
    with pytest.raises(ValueError, match="header says"):
        read_idx(tmp_path / "short")
    (tmp_path / "float").write_bytes(bytes([0, 0, 0x0D, 1]) + (1).to_bytes(4, "big") + b"\0" * 4)
    with pytest.raises(ValueError, match="not an IDX file of unsigned bytes"):
        read_idx(tmp_path / "float")


def test_pixel_sequence_pads_to_1024_tokens(fashion_mnist) -> None:
    seq = pixel_sequence(fashion_mnist.X_test[:5])
    assert seq.shape == (5, 1024) and seq.dtype == np.int64 and seq.max() <= 255
    img = seq.reshape(5, 32, 32)
    assert np.array_equal(img[:, 2:30, 2:30], fashion_mnist.X_test[:5]) and not img[:, :2].any()
    assert pixel_sequence(fashion_mnist.X_test[:2], None).shape == (2, 784)
    with pytest.raises(ValueError, match="smaller than the image"):
        pixel_sequence(fashion_mnist.X_test[:2], 20)
