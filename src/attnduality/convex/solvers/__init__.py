"""Solvers: FISTA (exact prox), the augmented Lagrangian for cone constraints, regularisation paths."""

from .al import AugmentedLagrangian, ConstrainedSolveResult
from .fista import FISTA, FISTAState, History, SolveResult
from .path import beta_max, solve_path

__all__ = [
    "FISTA",
    "FISTAState",
    "History",
    "SolveResult",
    "AugmentedLagrangian",
    "ConstrainedSolveResult",
    "beta_max",
    "solve_path",
]
