"""attnduality: convex attention heads, convexified transformers and Primal-Attention."""

from . import convex, nn

__version__ = "0.1.0"
__all__ = ["convex", "nn", "__version__"]
