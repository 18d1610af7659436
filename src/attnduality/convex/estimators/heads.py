"""The convex token-head estimators, by their former module path: :mod:`.attention`, :mod:`.mixer`, :mod:`.fno` and
:mod:`.tokens` hold them."""

from .attention import ConvexAttentionClassifier, ConvexAttentionRegressor
from .fno import ConvexFNOClassifier, ConvexFNORegressor
from .mixer import ConvexMixerClassifier, ConvexMixerRegressor
from .tokens import FormulationClassifier, FormulationRegressor

__all__ = [
    "ConvexAttentionClassifier",
    "ConvexAttentionRegressor",
    "ConvexFNOClassifier",
    "ConvexFNORegressor",
    "ConvexMixerClassifier",
    "ConvexMixerRegressor",
    "FormulationClassifier",
    "FormulationRegressor",
]
