"""scikit-learn faces of the convex programs: each wires a loss, an operator, a penalty and a solver.

Every estimator minimises ``(1/N) Σ_i L(f(x_i), y_i) + β · penalty`` on the data as given (no rescaling) and
exposes ``objective_``, ``certificate_`` (a :class:`~attnduality.convex.certificates.Certificate`),
``status_``, ``n_iter_`` and ``history_``. A solve that does not reach ``tol`` keeps its best iterate, says so in
``status_`` and raises a :class:`~sklearn.exceptions.ConvergenceWarning`.
"""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

from ..nn.heads import ReLUMLP
from .arrangements import gate_masks, sample_gates, unique_gates
from .losses import CrossEntropyLoss, LogisticLoss, Loss, SquaredLoss
from .operators import DenseOperator, GatedMLPOperator, LinearOperator, ReLUMLPOperator
from .penalties import BlockNuclearNorm, ConeGroupL2, NuclearNorm, Penalty
from .problem import CompositeProblem
from .recovery import gated_mlp_to_module, relu_mlp_to_module
from .solvers import FISTA, SolveResult

__all__ = [
    "ConvexMLPRegressor",
    "ConvexMLPClassifier",
    "NuclearNormClassifier",
    "NuclearNormRegressor",
]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_ACTIVATIONS = ("gated_relu", "relu")


class _ConvexEstimator(BaseEstimator):
    """Shared fit/predict machinery. Subclasses define the head (operator + penalty) and the task."""

    # --- parameters -------------------------------------------------------------------------------------
    def _check_params(self) -> None:
        if not isinstance(self.beta, numbers.Real) or not math.isfinite(self.beta) or self.beta < 0:
            raise ValueError(f"beta must be a finite number > 0, got {self.beta!r}")
        if self.beta == 0:
            raise ValueError(
                "beta must be > 0: with beta = 0 there is no duality-gap certificate and the cross-entropy "
                "optimum may lie at infinity"
            )
        if not isinstance(self.tol, numbers.Real) or not (self.tol > 0):
            raise ValueError(f"tol must be > 0, got {self.tol!r}")
        if not isinstance(self.max_iter, numbers.Integral) or self.max_iter < 1:
            raise ValueError(f"max_iter must be an integer >= 1, got {self.max_iter!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")

    @property
    def _torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        a = np.require(a, requirements=["C", "W"])  # torch cannot wrap read-only (e.g. memory-mapped) arrays
        return torch.as_tensor(a, dtype=self._torch_dtype, device=torch.device(self.device))

    def _features(self, x: np.ndarray) -> torch.Tensor:
        xt = self._tensor(x)
        if self.fit_intercept:
            xt = torch.cat([xt, torch.ones(xt.shape[0], 1, dtype=xt.dtype, device=xt.device)], dim=1)
        return xt

    # --- head hooks ---------------------------------------------------------------------------------------
    def _setup_head(self, xt: torch.Tensor, n_outputs: int) -> tuple[LinearOperator, Penalty]:
        raise NotImplementedError

    def _solve(self, loss: Loss, operator: LinearOperator, penalty: Penalty) -> SolveResult:
        solver = FISTA(tol=self.tol, max_iter=self.max_iter)
        return solver.run(CompositeProblem(loss, operator, penalty, float(self.beta)))

    def _store_solution(self, result: SolveResult) -> None:
        self.coef_ = result.z.detach().cpu().numpy()

    def _raw_predict(self, xt: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # --- fit ----------------------------------------------------------------------------------------------
    def _fit_targets(self, x: np.ndarray, loss: Loss, n_outputs: int) -> None:
        xt = self._features(x)
        operator, penalty = self._setup_head(xt, n_outputs)
        result = self._solve(loss, operator, penalty)
        self._store_solution(result)
        self.objective_ = float(result.objective)
        self.certificate_ = result.certificate
        self.status_ = result.status
        self.n_iter_ = int(result.n_iter)
        self.history_ = result.history
        self.solve_time_ = float(result.time)
        if result.status != "converged":
            warnings.warn(
                f"{type(self).__name__} did not converge: status={result.status!r}, relative duality gap "
                f"{result.certificate.rel_gap:.3g} > tol={self.tol:g} after {result.n_iter} iterations",
                ConvergenceWarning,
                stacklevel=3,
            )

    def _decision(self, x: Any) -> torch.Tensor:
        check_is_fitted(self, "coef_")
        x = validate_data(self, x, reset=False, dtype=np.float64)
        return self._raw_predict(self._features(x))

    def __sklearn_tags__(self):  # noqa: ANN204
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags


class _RegressorTask(RegressorMixin):
    """Squared loss on real targets (N,) or (N, c)."""

    def fit(self, X: Any, y: Any) -> _RegressorTask:  # noqa: N803
        """Solve the convex program on ``(X, y)``; returns ``self``."""
        self._check_params()
        if self.loss != "squared":
            raise ValueError(f"{type(self).__name__} supports loss='squared' only, got {self.loss!r}")
        X, y = validate_data(self, X, y, dtype=np.float64, multi_output=True, y_numeric=True)  # noqa: N806
        self._y_ndim = y.ndim
        y2 = y.reshape(len(y), -1)
        self._fit_targets(X, SquaredLoss(self._tensor(y2)), y2.shape[1])
        return self

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        out = self._decision(X).detach().cpu().numpy().astype(np.float64)
        return out[:, 0] if self._y_ndim == 1 else out

    def __sklearn_tags__(self):  # noqa: ANN204
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class _ClassifierTask(ClassifierMixin):
    """Cross-entropy (default), binary logistic, or squared loss on one-hot targets."""

    def fit(self, X: Any, y: Any) -> _ClassifierTask:  # noqa: N803
        """Solve the convex program on ``(X, y)``; returns ``self``."""
        self._check_params()
        if self.loss not in ("cross_entropy", "logistic", "squared"):
            raise ValueError(f"loss must be 'cross_entropy', 'logistic' or 'squared', got {self.loss!r}")
        X, y = validate_data(self, X, y, dtype=np.float64)  # noqa: N806
        check_classification_targets(y)
        if type_of_target(y) not in ("binary", "multiclass"):
            raise ValueError(f"{type(self).__name__} needs binary or multiclass targets, got {type_of_target(y)}")
        enc = LabelEncoder().fit(y)
        self.classes_ = enc.classes_
        k = len(self.classes_)
        if k < 2:
            raise ValueError(f"y has only one class ({self.classes_[0]!r}); a classifier needs at least 2 classes")
        idx = enc.transform(y)
        if self.loss == "logistic":
            if k != 2:
                raise ValueError(f"loss='logistic' is binary, but y has {k} classes; use loss='cross_entropy'")
            loss: Loss = LogisticLoss(self._tensor((2.0 * idx - 1.0)[:, None]))
            n_out = 1
        elif self.loss == "squared":
            loss = SquaredLoss(self._tensor(np.eye(k)[idx]))
            n_out = k
        else:
            loss = CrossEntropyLoss(torch.as_tensor(idx, device=torch.device(self.device)))
            n_out = k
        self._fit_targets(X, loss, n_out)
        return self

    def decision_function(self, X: Any) -> np.ndarray:  # noqa: N803
        out = self._decision(X).detach().cpu().numpy().astype(np.float64)
        if out.shape[1] == 1:
            return out[:, 0]
        if out.shape[1] == 2:  # binary: the score of the positive class against the negative one
            return out[:, 1] - out[:, 0]
        return out

    def predict(self, X: Any) -> np.ndarray:  # noqa: N803
        scores = self.decision_function(X)
        idx = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_[idx]

    def _has_proba(self) -> bool:
        return self.loss != "squared"

    @available_if(_has_proba)
    def predict_proba(self, X: Any) -> np.ndarray:  # noqa: N803
        s = torch.as_tensor(self.decision_function(X))
        if s.ndim == 1:
            p1 = torch.sigmoid(s)
            return torch.stack([1 - p1, p1], dim=1).numpy()
        return torch.softmax(s, dim=1).numpy()

    @available_if(_has_proba)
    def predict_log_proba(self, X: Any) -> np.ndarray:  # noqa: N803
        return np.log(self.predict_proba(X))


# --------------------------------------------------------------------------------------------------------------
# Heads
# --------------------------------------------------------------------------------------------------------------
class _MLPHead(_ConvexEstimator):
    """Convex two-layer network: gated ReLU (eq. (8), block nuclear norm) or ReLU (eq. (5), cone-constrained
    group norm with one group per neuron and output column; FISTA with an exact prox by cone projection)."""

    def _gates(self, xt: torch.Tensor) -> torch.Tensor:
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {_ACTIVATIONS}, got {self.activation!r}")
        d = xt.shape[1]
        if self.gates is not None:
            gates = np.asarray(self.gates, dtype=np.float64)
            if gates.ndim != 2 or gates.shape[0] != d or gates.shape[1] < 1:
                raise ValueError(
                    f"gates must be a ({d}, P) array with P >= 1 (d = n_features"
                    f"{' + 1 for the intercept' if self.fit_intercept else ''}), got shape {gates.shape}"
                )
            if not np.isfinite(gates).all():
                raise ValueError("gates contain NaN or inf")
            g = self._tensor(gates)
        else:
            if not isinstance(self.n_gates, numbers.Integral) or self.n_gates < 1:
                raise ValueError(f"n_gates must be an integer >= 1, got {self.n_gates!r}")
            seed = check_random_state(self.random_state).randint(0, 2**31 - 1)
            # sampled in float64 so that float32 and float64 fits share the same gates
            g = sample_gates(d, int(self.n_gates), seed, torch.float64).to(dtype=xt.dtype, device=xt.device)
        kept = unique_gates(xt, g)
        return kept if kept.shape[1] > 0 else g[:, :1]

    def _setup_head(self, xt: torch.Tensor, n_outputs: int) -> tuple[LinearOperator, Penalty]:
        gates = self._gates(xt)
        self.gates_ = gates.cpu().numpy()
        masks = gate_masks(xt, gates)
        if self.activation == "relu":
            return ReLUMLPOperator(xt, masks, n_outputs), ConeGroupL2(xt, masks)
        return GatedMLPOperator(xt, masks, n_outputs), BlockNuclearNorm()

    def _solve(self, loss: Loss, operator: LinearOperator, penalty: Penalty) -> SolveResult:
        result = super()._solve(loss, operator, penalty)
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
        gates = self._tensor(self.gates_)
        op = GatedMLPOperator(xt, gate_masks(xt, gates), self.coef_.shape[-1])
        return op.forward(self._tensor(self.coef_))

    def to_module(self) -> torch.nn.Module:
        """The equivalent non-convex two-layer network (dead neurons pruned): its predictions equal the convex
        model's, and ``loss + β · module.weight_decay()`` equals ``objective_``."""
        check_is_fitted(self, "coef_")
        if self.activation == "relu":
            v = torch.as_tensor(self.cone_coef_)
            module: ReLUMLP = relu_mlp_to_module(v[0], v[1], bias=self.fit_intercept)
        else:
            module = gated_mlp_to_module(torch.as_tensor(self.coef_), torch.as_tensor(self.gates_), self.fit_intercept)
        return module.to(dtype=self._torch_dtype)


class ConvexMLPRegressor(_RegressorTask, _MLPHead):
    """Convex two-layer (gated) ReLU network for regression, squared loss (Sahiner et al. eq. (5)/(8)).

    Gated ReLU solves ``min_Z (1/2N)‖Σ_j D_j X Z_j − Y‖² + β Σ_j ‖Z_j‖_*`` with FISTA; ``activation="relu"`` adds
    the cone constraints ``(2D_j − I) X V_j ≥ 0`` on ``Z_j = V_j − W_j`` (projection-based exact prox).
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
        random_state: int | None = None,
        device: str = "cpu",
        dtype: str = "float64",
    ) -> None:
        self.activation = activation
        self.n_gates = n_gates
        self.gates = gates
        self.beta = beta
        self.loss = loss
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state
        self.device = device
        self.dtype = dtype


class ConvexMLPClassifier(_ClassifierTask, _MLPHead):
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
        random_state: int | None = None,
        device: str = "cpu",
        dtype: str = "float64",
    ) -> None:
        self.activation = activation
        self.n_gates = n_gates
        self.gates = gates
        self.beta = beta
        self.loss = loss
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state
        self.device = device
        self.dtype = dtype


class _LinearHead(_ConvexEstimator):
    """``min_W (1/N) Σ L(x_iᵀ W, y_i) + β ‖W‖_*`` (Sahiner et al. eq. (6)): the papers' linear head."""

    def _setup_head(self, xt: torch.Tensor, n_outputs: int) -> tuple[LinearOperator, Penalty]:
        return DenseOperator(xt, n_outputs), NuclearNorm()

    def _raw_predict(self, xt: torch.Tensor) -> torch.Tensor:
        return xt @ self._tensor(self.coef_)


class NuclearNormClassifier(_ClassifierTask, _LinearHead):
    """Multiclass linear classifier with a nuclear-norm penalty on its (d, c) weight matrix."""

    def __init__(
        self,
        beta: float = 1e-3,
        loss: str = "cross_entropy",
        fit_intercept: bool = False,
        tol: float = 1e-6,
        max_iter: int = 10_000,
        random_state: int | None = None,
        device: str = "cpu",
        dtype: str = "float64",
    ) -> None:
        self.beta = beta
        self.loss = loss
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state
        self.device = device
        self.dtype = dtype


class NuclearNormRegressor(_RegressorTask, _LinearHead):
    """Multi-output linear regression with a nuclear-norm penalty (reduced-rank regression, convex form)."""

    def __init__(
        self,
        beta: float = 1e-3,
        loss: str = "squared",
        fit_intercept: bool = False,
        tol: float = 1e-6,
        max_iter: int = 10_000,
        random_state: int | None = None,
        device: str = "cpu",
        dtype: str = "float64",
    ) -> None:
        self.beta = beta
        self.loss = loss
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
