"""scikit-learn faces of the convex programs: each wires a loss, an operator, a penalty and a solver."""

from .base import ClassifierTask, ConvexEstimator, RegressorTask
from .heads import (
    ConvexAttentionClassifier,
    ConvexAttentionRegressor,
    ConvexFNOClassifier,
    ConvexFNORegressor,
    ConvexMixerClassifier,
    ConvexMixerRegressor,
)
from .linear import NuclearNormClassifier, NuclearNormRegressor
from .mlp import ConvexMLPClassifier, ConvexMLPRegressor
from .token_lasso import TokenLassoClassifier, TokenLassoRegressor, TokenPath

__all__ = [
    "ClassifierTask",
    "ConvexAttentionClassifier",
    "ConvexAttentionRegressor",
    "ConvexEstimator",
    "ConvexFNOClassifier",
    "ConvexFNORegressor",
    "ConvexMLPClassifier",
    "ConvexMLPRegressor",
    "ConvexMixerClassifier",
    "ConvexMixerRegressor",
    "NuclearNormClassifier",
    "NuclearNormRegressor",
    "RegressorTask",
    "TokenLassoClassifier",
    "TokenLassoRegressor",
    "TokenPath",
]
