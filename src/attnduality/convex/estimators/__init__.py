"""scikit-learn faces of the convex programs: each wires a loss, an operator, a penalty and a solver."""

from .base import ClassifierTask, ConvexEstimator, RegressorTask
from .linear import NuclearNormClassifier, NuclearNormRegressor
from .mlp import ConvexMLPClassifier, ConvexMLPRegressor

__all__ = [
    "ClassifierTask",
    "ConvexEstimator",
    "ConvexMLPClassifier",
    "ConvexMLPRegressor",
    "NuclearNormClassifier",
    "NuclearNormRegressor",
    "RegressorTask",
]
