"""UEA loaders on the real files, checked against the archive's published sizes."""

from __future__ import annotations

import numpy as np
import pytest

from attnduality.data import UEA_SETS, load_uea


def test_japanese_vowels_official_split(japanese_vowels) -> None:
    s = japanese_vowels
    assert s.X_train.shape == (270, 29, 12) and s.X_test.shape == (370, 29, 12)
    assert s.X_train.dtype == np.float32 and s.y_train.dtype == np.int64
    assert s.classes == tuple("123456789")
    assert np.bincount(s.y_train).tolist() == [30] * 9
    assert np.bincount(s.y_test).tolist() == [31, 35, 88, 44, 29, 24, 40, 50, 29]
    # unequal lengths: 7..26 steps (train), 7..29 (test); padding is zero and masked out
    lt, le = s.mask_train.sum(1), s.mask_test.sum(1)
    assert (lt.min(), lt.max(), le.min(), le.max()) == (7, 26, 7, 29)
    assert np.array_equal(lt, s.meta["lengths_train"])
    assert not s.X_train[~s.mask_train].any() and not s.X_test[~s.mask_test].any()
    assert np.all(np.abs(s.X_train[s.mask_train]).sum(1) > 0)
    # masks are prefixes
    assert np.array_equal(s.mask_test, np.arange(29)[None] < le[:, None])


def test_japanese_vowels_first_series_matches_the_ts_file(japanese_vowels) -> None:
    from importlib.util import find_spec
    from pathlib import Path

    root = Path(next(iter(find_spec("aeon").submodule_search_locations)))
    lines = (root / "datasets/data/JapaneseVowels/JapaneseVowels_TRAIN.ts").read_text().splitlines()
    first = next(ln for ln in lines if ln and not ln.startswith(("#", "@")))
    *dims, label = first.split(":")
    x = np.array([[float(v) for v in d.split(",")] for d in dims])  # (12, T)
    assert japanese_vowels.classes[japanese_vowels.y_train[0]] == label
    T = x.shape[1]
    np.testing.assert_allclose(japanese_vowels.X_train[0, :T], x.T.astype(np.float32))


@pytest.mark.parametrize(("name", "train", "test"), [
    ("SelfRegulationSCP1", (268, 896, 6), (293, 896, 6)),
    ("SelfRegulationSCP2", (200, 1152, 7), (180, 1152, 7)),
])
def test_self_regulation_scp(load, name: str, train: tuple[int, ...], test: tuple[int, ...]) -> None:
    s = load(load_uea, name)
    assert s.X_train.shape == train and s.X_test.shape == test
    assert s.classes == ("negativity", "positivity") and s.mask_train is None
    assert np.isfinite(s.X_train).all() and s.X_train.std() > 0
    assert set(np.unique(s.y_test)) == {0, 1}


def test_extra_uea_sets_have_known_sizes(load) -> None:
    for name in ("BasicMotions", "FingerMovements", "HandMovementDirection", "EyesOpenShut"):
        s, info = load(load_uea, name), UEA_SETS[name]
        assert s.X_train.shape == (info.n_train, info.length, info.channels)
        assert s.X_test.shape[0] == info.n_test and s.n_classes == info.n_classes


def test_second_load_comes_from_the_npz_cache(japanese_vowels) -> None:
    from attnduality.data import cache_dir

    assert (cache_dir() / "uea" / "JapaneseVowels.npz").is_file()
    again = load_uea("JapaneseVowels")
    assert np.array_equal(again.X_test, japanese_vowels.X_test)


def test_unknown_set_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="unknown UEA set 'Heartbeat'"):
        load_uea("Heartbeat")
