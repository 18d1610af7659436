"""PyTorch modules: the non-convex twins of the convex heads."""

from .heads import GatedReLUMLP, ReLUMLP

__all__ = ["GatedReLUMLP", "ReLUMLP"]
