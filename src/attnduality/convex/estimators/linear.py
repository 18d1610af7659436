"""The nuclear-norm linear head (Sahiner et al. eq. (6)), the papers' linear baseline."""

from __future__ import annotations

from typing import Any

import torch
from sklearn.utils.validation import check_is_fitted

from ..formulations import Formulation, LinearFormulation
from ..operators import LinearOperator
from ..penalties import Penalty
from .base import ClassifierTask, ConvexEstimator, RegressorTask

__all__ = ["NuclearNormClassifier", "NuclearNormRegressor"]


class _LinearHead(ConvexEstimator):
    """``min_W (1/N) Σ L(x_iᵀ W, y_i) + β ‖W‖_*`` (Sahiner et al. eq. (6)): the papers' linear head."""

    _family = "linear"

    @classmethod
    def _params_of(cls, form: Formulation) -> dict[str, Any]:
        return {"fit_intercept": bool(form.bias)}

    def _setup_head(self, xt: torch.Tensor, n_outputs: int) -> tuple[LinearOperator, Penalty]:
        form = LinearFormulation(bias=bool(self.fit_intercept))
        self.formulation_ = form
        return form.operator(xt, None, n_outputs), form.penalty(xt, None)

    def _raw_predict(self, xt: torch.Tensor) -> torch.Tensor:
        return xt @ self._tensor(self.coef_)

    def to_module(self) -> torch.nn.Module:
        """The equivalent two-layer linear network (one hidden unit per nonzero singular value of ``coef_``): its
        outputs equal the convex model's and ``loss + β · module.weight_decay()`` equals ``objective_``."""
        check_is_fitted(self, "coef_")
        return self.formulation_.to_module(torch.as_tensor(self.coef_), None, 1, int(self.coef_.shape[0])).to(
            dtype=self._torch_dtype
        )


class NuclearNormClassifier(ClassifierTask, _LinearHead):
    """Multiclass linear classifier with a nuclear-norm penalty on its (d, c) weight matrix."""

    def __init__(
        self,
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


class NuclearNormRegressor(RegressorTask, _LinearHead):
    """Multi-output linear regression with a nuclear-norm penalty (reduced-rank regression, convex form)."""

    def __init__(
        self,
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
