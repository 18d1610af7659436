"""The Burer–Monteiro objective of a nuclear-norm problem and the state of its solver.

For ``min_Z f(A(Z)) + β Σ_j ‖Z_j‖_*`` each block is parametrised as ``Z_j = U_j V_jᵀ`` (Burer & Monteiro 2003), and

    φ(U, V) = f(A(U Vᵀ)) + (β/2)(‖U‖_F² + ‖V‖_F²),   ∂φ/∂U = G V + βU,   ∂φ/∂V = Gᵀ U + βV,

with ``G = A*∇f(A(U Vᵀ))`` as blocks. :class:`FactoredState` holds a point with its predictions, loss value and these
gradients (one adjoint of ``A`` per evaluation, :func:`evaluate_state`), plus the L-BFGS memory and the operator
counts of :class:`~attnduality.convex.solvers.factored.FactoredSolver`; :class:`FactoredResult` is that solver's
result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..penalties import NuclearNorm
from ..problem import CompositeProblem
from .fista import SolveResult
from .lbfgs import MemoryPair

__all__ = [
    "FactoredResult",
    "FactoredState",
    "evaluate_state",
    "factor_blocks",
    "factors_to_z",
    "phi_value",
    "state_counts",
    "with_factors",
]


@dataclass
class FactoredState:
    """A point ``(U, V)`` of the factored problem with what the solver keeps about it."""

    left: torch.Tensor
    """``U`` (B, p, r): ``Z_j = U_j V_jᵀ`` for the B blocks (B = 1 for :class:`NuclearNorm` on a matrix)."""
    right: torch.Tensor
    """``V`` (B, q, r)."""
    pred: torch.Tensor
    """``A(UVᵀ)`` (N, c)."""
    fval: float
    """``f(A(UVᵀ))``."""
    grad_z: torch.Tensor
    """``A*∇f(A(UVᵀ))`` as blocks (B, p, q)."""
    g_left: torch.Tensor
    """``∂φ/∂U = G V + βU``."""
    g_right: torch.Tensor
    """``∂φ/∂V = GᵀU + βV``."""
    memory: list[MemoryPair] = field(default_factory=list)
    """L-BFGS pairs ``(s_U, s_V, y_U, y_V, 1/sᵀy)``, oldest first."""
    n_iter: int = 0
    n_escapes: int = 0
    n_forward: int = 0
    n_adjoint: int = 0
    stalled: bool = False
    """The last line search found no decrease (numerical stationarity)."""
    precond: torch.Tensor | None = None
    """The column scaling (B, 1, r) used as L-BFGS's initial inverse Hessian while the memory lasts."""

    @property
    def rank(self) -> int:
        return int(self.left.shape[-1])


@dataclass
class FactoredResult(SolveResult):
    """:class:`SolveResult` plus the factors and what the rank adaptation did."""

    left: torch.Tensor
    """Balanced factors: ``U_j = P_j S_j^{1/2}``, blocks (B, p, r)."""
    right: torch.Tensor
    """``V_j = W_j S_j^{1/2}`` (B, q, r)."""
    singular_values: torch.Tensor
    """Singular values of every block of ``Z`` (B, r), from the factors' r×r core."""
    rank: int
    """Numerical rank: max over blocks of the number of singular values ``> 1e-6 ·`` the largest of all blocks."""
    n_escapes: int
    """Rank-escape steps taken (the spectral initialisation not counted)."""
    n_forward: int
    n_adjoint: int


def factor_blocks(problem: CompositeProblem) -> tuple[int, int, int]:
    """``(B, p, q)``: the number of blocks of ``Z`` (the product of its leading dimensions) and their shape.

    Raises TypeError unless the penalty is a :class:`NuclearNorm` (or ``BlockNuclearNorm``), ValueError unless ``Z``
    is a matrix or a batch of matrices."""
    if not isinstance(problem.penalty, NuclearNorm):
        raise TypeError(
            f"FactoredSolver needs a NuclearNorm or BlockNuclearNorm penalty, got {type(problem.penalty).__name__}"
        )
    shape = tuple(problem.operator.z_shape)
    if len(shape) < 2:
        raise ValueError(f"Z must be a matrix or a batch of matrices, got shape {shape}")
    return math.prod(shape[:-2]), shape[-2], shape[-1]


def factors_to_z(problem: CompositeProblem, left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """``Z = UVᵀ`` in the operator's shape."""
    return (left @ right.mT).reshape(problem.operator.z_shape)


def phi_value(problem: CompositeProblem, state: FactoredState) -> float:
    """``φ(U, V) = f(A(UVᵀ)) + (β/2)(‖U‖_F² + ‖V‖_F²)`` at the state (no operator call)."""
    sq = float(state.left.square().sum() + state.right.square().sum())
    return state.fval + 0.5 * problem.beta * sq


def evaluate_state(
    problem: CompositeProblem, left: torch.Tensor, right: torch.Tensor, pred: torch.Tensor, **counts: int
) -> FactoredState:
    """The state at ``(U, V)`` with predictions ``pred = A(UVᵀ)``: one adjoint for the gradient.

    ``counts`` (``n_iter``, ``n_escapes``, ``n_forward``, ``n_adjoint``; 0 if absent) are carried over, ``n_adjoint``
    plus one; the L-BFGS memory is empty."""
    op, beta = problem.operator, problem.beta
    fval, g = problem.loss.value_grad(pred)
    nb, p, q = factor_blocks(problem)
    gz = op.adjoint(g).reshape(nb, p, q)
    return FactoredState(
        left=left,
        right=right,
        pred=pred,
        fval=float(fval),
        grad_z=gz,
        g_left=gz @ right + beta * left,
        g_right=gz.mT @ left + beta * right,
        n_adjoint=counts.get("n_adjoint", 0) + 1,
        n_forward=counts.get("n_forward", 0),
        n_iter=counts.get("n_iter", 0),
        n_escapes=counts.get("n_escapes", 0),
    )


def state_counts(state: FactoredState) -> dict[str, int]:
    """The iteration, escape and operator counts of a state, as keyword arguments of :func:`evaluate_state`."""
    return {
        "n_iter": state.n_iter,
        "n_escapes": state.n_escapes,
        "n_forward": state.n_forward,
        "n_adjoint": state.n_adjoint,
    }


def with_factors(
    problem: CompositeProblem, state: FactoredState, left: torch.Tensor, right: torch.Tensor
) -> FactoredState:
    """The state at other factors of the same ``Z`` (no operator call; the L-BFGS memory is dropped)."""
    beta = problem.beta
    new = FactoredState(
        **{**state.__dict__, "left": left, "right": right, "memory": [], "stalled": False, "precond": None}
    )
    new.g_left = state.grad_z @ right + beta * left
    new.g_right = state.grad_z.mT @ left + beta * right
    return new
