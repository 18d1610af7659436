"""Data: real sets that can be had offline and procedural tasks, each returned as a validated, typed split.

Importing this package needs only NumPy; optional dependencies (aeon) are imported inside the loaders, and every
loader says what is missing and the command that gets it. Cached files live under ``$ATTNDUALITY_CACHE``
(default ``~/.cache/attnduality``); ``python -m attnduality.data.setup`` fetches what pip cannot install.

========================  ============================================  =============================================
loader                    data                                          needs
========================  ============================================  =============================================
``load_uea(name)``        JapaneseVowels (270/370, 12 ch, 9 classes),   ``[data]`` extra (aeon); SCP sets also
                          SelfRegulationSCP1/SCP2, + 4 extra UEA sets   ``python -m attnduality.data.setup uea``
``load_fashion_mnist()``  60,000/10,000 28×28, 10 classes               ``apt-get install dataset-fashion-mnist``
``load_mnist()``          60,000/10,000 28×28, 10 classes               ``python -m attnduality.data.setup mnist``
``load_pang_lee(kind)``   4,000 sentences / 1,500 reviews, 2 classes    ``python -m attnduality.data.setup pang_lee``
``make_listops``          LRA ListOps, lengths 500–2000                 nothing
``make_modular``          a / b mod 97: 9,312 equations                 nothing
``make_sparse_parity``    (n, k)-sparse parity                          nothing
========================  ============================================  =============================================
"""

from ._core import (
    CACHE_ENV,
    DATA_EXTRA,
    MissingDataError,
    Split,
    TextCorpus,
    TextSplit,
    cache_dir,
    cache_key,
    config_hash,
    require_module,
)
from ._sources import fetch
from .algorithmic import make_modular, make_sparse_parity, modular_table
from .images import load_fashion_mnist, load_mnist, pixel_sequence, read_idx
from .listops import make_listops
from .text import byte_sequence, load_pang_lee
from .uea import UEA_SETS, load_uea

__all__ = [
    "CACHE_ENV",
    "DATA_EXTRA",
    "MissingDataError",
    "Split",
    "TextCorpus",
    "TextSplit",
    "UEA_SETS",
    "byte_sequence",
    "cache_dir",
    "cache_key",
    "config_hash",
    "fetch",
    "load_fashion_mnist",
    "load_mnist",
    "load_pang_lee",
    "load_uea",
    "make_listops",
    "make_modular",
    "make_sparse_parity",
    "modular_table",
    "pixel_sequence",
    "read_idx",
    "require_module",
]
