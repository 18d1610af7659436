"""The nuclear-norm linear head (Sahiner et al. eq. (6)), the papers' linear baseline."""

from __future__ import annotations

import torch

from ..operators import DenseOperator, LinearOperator
from ..penalties import NuclearNorm, Penalty
from .base import ClassifierTask, ConvexEstimator, RegressorTask

__all__ = ["NuclearNormClassifier", "NuclearNormRegressor"]


class _LinearHead(ConvexEstimator):
    """``min_W (1/N) Σ L(x_iᵀ W, y_i) + β ‖W‖_*`` (Sahiner et al. eq. (6)): the papers' linear head."""

    def _setup_head(self, xt: torch.Tensor, n_outputs: int) -> tuple[LinearOperator, Penalty]:
        return DenseOperator(xt, n_outputs), NuclearNorm()

    def _raw_predict(self, xt: torch.Tensor) -> torch.Tensor:
        return xt @ self._tensor(self.coef_)


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
