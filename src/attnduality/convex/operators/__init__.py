"""Forward operators of the convex heads (one module per head family)."""

from .base import LinearOperator
from .linear import DenseOperator
from .mlp import GatedMLPOperator
from .relu import ReLUMLPOperator

__all__ = ["LinearOperator", "DenseOperator", "GatedMLPOperator", "ReLUMLPOperator"]
