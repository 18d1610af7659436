"""Solvers: FISTA (exact prox, including the cone-constrained ReLU form), the semismooth Newton solver (proximal
Newton + SSNAL), the factored (Burer–Monteiro) solver for nuclear-norm problems, regularisation paths, and
``make_solver`` (the estimators' ``solver=`` names)."""

from ..linalg import spectral_norm_power
from .factored import FactoredSolver
from .factored_state import FactoredResult, FactoredState
from .fista import FISTA, FISTAState, History, SolveResult
from .newton import NewtonState, SemismoothNewton
from .path import beta_max, solve_path
from .progress import SolveProgress, chain_callbacks
from .select import SOLVERS, AutoSolver, check_solver, make_solver
from .threads import solver_threads

__all__ = [
    "AutoSolver",
    "FISTA",
    "FISTAState",
    "FactoredResult",
    "FactoredSolver",
    "FactoredState",
    "History",
    "NewtonState",
    "SOLVERS",
    "SemismoothNewton",
    "SolveProgress",
    "SolveResult",
    "beta_max",
    "chain_callbacks",
    "check_solver",
    "make_solver",
    "solve_path",
    "solver_threads",
    "spectral_norm_power",
]
