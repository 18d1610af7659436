"""Solvers: FISTA (exact prox, including the cone-constrained ReLU form), regularisation paths."""

from .fista import FISTA, FISTAState, History, SolveResult
from .path import beta_max, solve_path

__all__ = [
    "FISTA",
    "FISTAState",
    "History",
    "SolveResult",
    "beta_max",
    "solve_path",
]
