"""Experiments runnable from the command line (``attnduality run NAME``)."""

from .quickstart import run_quickstart

EXPERIMENTS = {
    "quickstart": (
        run_quickstart,
        "convex gated-ReLU MLP vs Adam on its non-convex twin; scikit-learn digits (bundled with scikit-learn)",
    ),
}

__all__ = ["EXPERIMENTS", "run_quickstart"]
