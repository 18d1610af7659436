"""Solvers: FISTA (exact prox, including the cone-constrained ReLU form), the factored (Burer–Monteiro) solver for
nuclear-norm problems, regularisation paths."""

from .factored import FactoredResult, FactoredSolver, FactoredState, spectral_norm_power
from .fista import FISTA, FISTAState, History, SolveResult
from .path import beta_max, solve_path

__all__ = [
    "FISTA",
    "FISTAState",
    "FactoredResult",
    "FactoredSolver",
    "FactoredState",
    "History",
    "SolveResult",
    "beta_max",
    "solve_path",
    "spectral_norm_power",
]
