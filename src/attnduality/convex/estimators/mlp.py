"""Convex two-layer (gated) ReLU networks (Sahiner et al. eq. (5), (8))."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ..formulations import Formulation, MLPFormulation
from ..losses import Loss
from ..operators import LinearOperator
from ..penalties import ConeGroupL2, Penalty
from ..solvers import SolveResult
from .base import ClassifierTask, ConvexEstimator, RegressorTask, SolveCallback

__all__ = ["ConvexMLPRegressor", "ConvexMLPClassifier"]

_ACTIVATIONS = ("gated_relu", "relu")


class _MLPHead(ConvexEstimator):
    """Convex two-layer network: gated ReLU (eq. (8), block nuclear norm) or ReLU (eq. (5), cone-constrained
    group norm with one group per neuron and output column; FISTA with an exact prox by cone projection)."""

    _family = "mlp"
    kind_param = "activation"

    @classmethod
    def _params_of(cls, form: Formulation) -> dict[str, Any]:
        return {"activation": form.kind, "fit_intercept": bool(form.bias)}

    def _formulation(self) -> MLPFormulation:
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {self.activation!r}")
        return MLPFormulation(kind=self.activation, bias=bool(self.fit_intercept))

    def _setup_head(self, xt: torch.Tensor, n_outputs: int) -> tuple[LinearOperator, Penalty]:
        form = self._formulation()
        self.formulation_ = form
        gates = self._fit_gates(form, xt, 1, int(xt.shape[1]))
        self.gates_ = gates.cpu().numpy()
        return form.operator(xt, gates, n_outputs), form.penalty(xt, gates)

    def _solve(
        self,
        loss: Loss,
        operator: LinearOperator,
        penalty: Penalty,
        z0: torch.Tensor | None = None,
        callback: SolveCallback | None = None,
    ) -> SolveResult:
        result = super()._solve(loss, operator, penalty, z0, callback)
        if isinstance(penalty, ConeGroupL2):
            self.constraint_violation_ = penalty.violation(result.z)
        return result

    def _store_solution(self, result: SolveResult) -> None:
        z = result.z.detach().cpu().numpy()
        if self.activation == "relu":
            self.cone_coef_ = z  # (2, P, d, c): V and W
            self.coef_ = z[0] - z[1]
        else:
            self.coef_ = z

    def _raw_predict(self, xt: torch.Tensor) -> torch.Tensor:
        if self.activation == "relu":
            v = self._tensor(self.cone_coef_)
            p, d, c = v.shape[1:]
            xv = (xt @ v.permute(0, 2, 1, 3).reshape(2, d, p * c)).view(2, -1, p, c)
            return (torch.relu(xv[0]) - torch.relu(xv[1])).sum(1)
        op = self.formulation_.operator(xt, self._tensor(self.gates_), self.coef_.shape[-1])
        return op.forward(self._tensor(self.coef_))

    def to_module(self) -> torch.nn.Module:
        """The equivalent non-convex two-layer network (dead neurons pruned): its predictions equal the convex
        model's, and ``loss + β · module.weight_decay()`` equals ``objective_``."""
        check_is_fitted(self, "coef_")
        z = self.cone_coef_ if self.activation == "relu" else self.coef_
        module = self.formulation_.to_module(torch.as_tensor(z), torch.as_tensor(self.gates_), 1, self.gates_.shape[0])
        return module.to(dtype=self._torch_dtype)


class ConvexMLPRegressor(RegressorTask, _MLPHead):
    """Convex two-layer (gated) ReLU network for regression, squared loss (Sahiner et al. eq. (5)/(8)).

    Gated ReLU solves ``min_Z (1/2N)‖Σ_j D_j X Z_j − Y‖² + β Σ_j ‖Z_j‖_*`` with ``solver`` (``"auto"``: the
    semismooth Newton solver, whose model of the squared loss is exact; ``"fista"``; ``"newton"``);
    ``activation="relu"`` adds the cone constraints ``(2D_j − I) X V_j ≥ 0`` on ``Z_j = V_j − W_j``
    (projection-based exact prox), solved by FISTA.
    """

    def __init__(
        self,
        activation: str = "gated_relu",
        n_gates: int = 100,
        gates: np.ndarray | None = None,
        beta: float = 1e-3,
        loss: str = "squared",
        fit_intercept: bool = False,
        tol: float = 1e-6,
        max_iter: int = 10_000,
        max_time: float | None = None,
        solver: str = "auto",
        random_state: int | None = None,
        device: str = "cpu",
        dtype: str = "float64",
        verbose: int = 0,
    ) -> None:
        self.activation = activation
        self.n_gates = n_gates
        self.gates = gates
        self.beta = beta
        self.loss = loss
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter
        self.max_time = max_time
        self.solver = solver
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.verbose = verbose


class ConvexMLPClassifier(ClassifierTask, _MLPHead):
    """Convex two-layer (gated) ReLU network for classification: cross-entropy, logistic or squared loss."""

    def __init__(
        self,
        activation: str = "gated_relu",
        n_gates: int = 100,
        gates: np.ndarray | None = None,
        beta: float = 1e-3,
        loss: str = "cross_entropy",
        fit_intercept: bool = False,
        tol: float = 1e-6,
        max_iter: int = 10_000,
        max_time: float | None = None,
        solver: str = "auto",
        random_state: int | None = None,
        device: str = "cpu",
        dtype: str = "float64",
        verbose: int = 0,
    ) -> None:
        self.activation = activation
        self.n_gates = n_gates
        self.gates = gates
        self.beta = beta
        self.loss = loss
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter
        self.max_time = max_time
        self.solver = solver
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.verbose = verbose
