"""Forward operators of the convex heads (one module per head family)."""

from .base import LinearOperator
from .linear import DenseOperator
from .mlp import GatedMLPOperator
from .relu import ReLUMLPOperator
from .token import GatedTokenOperator, RowStochasticCone, SequenceOperator, TokenOperator

__all__ = [
    "LinearOperator",
    "DenseOperator",
    "GatedMLPOperator",
    "ReLUMLPOperator",
    "GatedTokenOperator",
    "RowStochasticCone",
    "SequenceOperator",
    "TokenOperator",
]
