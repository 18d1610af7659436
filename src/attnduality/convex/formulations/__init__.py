"""The formulation registry: one object per convex head (see :mod:`.base`), one module per family.

Adding a head = one module with a :class:`Formulation` subclass decorated with :func:`register_formulation`, imported
here; the estimators' shared machinery, the CLI, the transfer experiment and the registry-parametrised tests then
pick it up.
"""

from .attention import AttentionFormulation
from .base import (
    Formulation,
    distinct_gate_indices,
    formulation_families,
    formulation_names,
    get_formulation,
    register_formulation,
)
from .fno import FNOFormulation
from .linear import LinearFormulation
from .mixer import MixerFormulation
from .mlp import MLPFormulation
from .token_lasso import TokenLassoFormulation

__all__ = [
    "AttentionFormulation",
    "FNOFormulation",
    "Formulation",
    "LinearFormulation",
    "MLPFormulation",
    "MixerFormulation",
    "TokenLassoFormulation",
    "distinct_gate_indices",
    "formulation_families",
    "formulation_names",
    "get_formulation",
    "register_formulation",
]
