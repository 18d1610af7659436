"""scikit-learn faces of the convex programs: each wires a loss, an operator, a penalty and a solver.

Every estimator minimises ``(1/N) Σ_i L(f(x_i), y_i) + β · penalty`` on the data as given (no rescaling), solves
it with ``solver`` (``"auto"``: FISTA, then the semismooth Newton solver where FISTA is slow to certify the fit, after
100–300 iterations, and Newton alone for the squared loss; ``"fista"``; ``"newton"``; see
:mod:`attnduality.convex.solvers.select`) and exposes
``objective_``, ``certificate_`` (a :class:`~attnduality.convex.certificates.Certificate`), ``status_``,
``n_iter_`` and ``history_``. A solve that does not reach ``tol`` keeps its best iterate, says so in ``status_``
(``max_iter``, ``max_time``, ``stalled``: no progress left at the dtype's precision, or ``diverged``) and raises a
:class:`~sklearn.exceptions.ConvergenceWarning`.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import check_random_state
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

from ..certificates import Certificate
from ..formulations import Formulation
from ..losses import CrossEntropyLoss, LogisticLoss, Loss, SquaredLoss
from ..operators import LinearOperator
from ..penalties import Penalty
from ..problem import CompositeProblem
from ..solvers import SolveProgress, SolveResult, chain_callbacks, check_solver, make_solver
from ..solvers.path import beta_max

SolveCallback = Callable[[Any, Certificate], None]

__all__ = ["ConvexEstimator", "RegressorTask", "ClassifierTask"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class ConvexEstimator(BaseEstimator):
    """Shared fit/predict machinery. Subclasses define the head (operator + penalty) and the task.

    ``_family`` names the estimator's formulation family (:mod:`attnduality.convex.formulations`) and
    ``_params_of`` maps a formulation to the estimator's parameters, so that :meth:`from_formulation` builds the
    estimator of any registered head.
    """

    _family = ""
    kind_param: str | None = None
    """the parameter that holds the formulation's kind (None: the family has one kind)"""

    @classmethod
    def _params_of(cls, form: Formulation) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_formulation(cls, form: Formulation, **params: Any) -> ConvexEstimator:
        """The estimator of this class for ``form`` (its kind and options); ``params`` set the other parameters and
        override the formulation's."""
        if form.family != cls._family:
            raise ValueError(f"{cls.__name__} fits the {cls._family!r} heads, not {form.name!r}")
        return cls(**{**cls._params_of(form), **params})

    def _fit_gates(self, form: Formulation, xt: torch.Tensor, n_tokens: int, n_features: int) -> torch.Tensor:
        """The gates of a fit: ``self.gates`` checked against the formulation's gate shape, or ``n_gates`` sampled
        from ``random_state`` (in float64, so float32 and float64 fits share them), then the distinct ones on ``xt``."""
        if self.gates is not None:
            g = self._tensor(form.check_gates(self.gates, n_tokens, n_features))
        else:
            n_gates = self.n_gates
            if not isinstance(n_gates, numbers.Integral) or isinstance(n_gates, bool) or n_gates < 1:
                raise ValueError(f"n_gates must be an integer >= 1, got {n_gates!r}")
            seed = check_random_state(self.random_state).randint(0, 2**31 - 1)
            g = form.sample_gates(n_tokens, n_features, int(n_gates), seed).to(dtype=xt.dtype, device=xt.device)
        return form.distinct_gates(xt, g)

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
        max_time = self.max_time
        if max_time is not None and (
            not isinstance(max_time, numbers.Real) or isinstance(max_time, bool) or not max_time > 0
        ):
            raise ValueError(f"max_time must be None or a number of seconds > 0, got {max_time!r}")
        check_solver(self.solver)
        verbose = self.verbose
        if not isinstance(verbose, numbers.Integral) or verbose < 0:
            raise ValueError(f"verbose must be an integer >= 0 (or a bool), got {verbose!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {self.dtype!r}")

    @property
    def _torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        a = np.require(a, requirements=["C", "W"])  # torch cannot wrap read-only (e.g. memory-mapped) arrays
        return torch.as_tensor(a, dtype=self._torch_dtype, device=torch.device(self.device))

    # --- input validation hooks (heads on 3-D token inputs override both) ------------------------------
    def _validate_fit_data(self, X: Any, y: Any, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        """Validate and convert the training data; sets ``n_features_in_``. ``kwargs`` go to ``validate_data``."""
        return validate_data(self, X, y, dtype=np.float64, **kwargs)

    def _validate_predict_X(self, X: Any) -> np.ndarray:
        """Validate and convert inputs at prediction time against what ``fit`` saw."""
        return validate_data(self, X, reset=False, dtype=np.float64)

    def _features(self, x: np.ndarray) -> torch.Tensor:
        xt = self._tensor(x)
        if self.fit_intercept:
            xt = torch.cat([xt, torch.ones(xt.shape[0], 1, dtype=xt.dtype, device=xt.device)], dim=1)
        return xt

    # --- head hooks ---------------------------------------------------------------------------------------
    def _setup_head(self, xt: torch.Tensor, n_outputs: int) -> tuple[LinearOperator, Penalty]:
        raise NotImplementedError

    def _solve(
        self,
        loss: Loss,
        operator: LinearOperator,
        penalty: Penalty,
        z0: torch.Tensor | None = None,
        callback: SolveCallback | None = None,
    ) -> SolveResult:
        problem = CompositeProblem(loss, operator, penalty, float(self.beta))
        solver = make_solver(self.solver, problem, self.tol, self.max_iter, self.max_time)
        return solver.run(problem, z0=z0, callback=chain_callbacks(self._progress(), callback))

    def _progress(self) -> SolveProgress | None:
        """The progress printer of ``verbose >= 1`` (``None`` when quiet)."""
        return SolveProgress(self.tol, label=type(self).__name__) if self.verbose else None

    def _start_point(self, coef_init: Any, operator: LinearOperator) -> torch.Tensor | None:
        """``coef_init`` as the solver's starting point, checked against the shape of the program's variable."""
        if coef_init is None:
            return None
        shape = tuple(operator.zeros().shape)
        try:
            z0 = np.asarray(coef_init, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"coef_init must be an array of shape {shape}, got {type(coef_init).__name__}") from None
        if z0.shape != shape:
            raise ValueError(f"coef_init has shape {z0.shape}; this program's variable has shape {shape}")
        if not np.isfinite(z0).all():
            raise ValueError("coef_init contains NaN or inf")
        return self._tensor(z0)

    def _store_solution(self, result: SolveResult) -> None:
        self.coef_ = result.z.detach().cpu().numpy()

    def _raw_predict(self, xt: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # --- fit ----------------------------------------------------------------------------------------------
    def _prepare_fit(self, X: Any, y: Any) -> tuple[np.ndarray, Loss, int]:
        """Validated inputs, the loss on the targets, and the number of outputs (the task's part of ``fit``)."""
        raise NotImplementedError

    def beta_max(self, X: Any, y: Any) -> float:
        """``β_max = R°(A*∇f(0))`` of this estimator's program on ``(X, y)``: the smallest ``beta`` at which
        ``Z = 0`` is optimal, so ``beta`` can be set as a fraction of it. Computed on a clone (``self`` stays
        unfitted); with sampled gates, fix ``random_state`` (or pass ``gates``) so that ``fit`` uses the same ones."""
        est = clone(self)
        est._check_params()
        x, loss, n_outputs = est._prepare_fit(X, y)
        operator, penalty = est._setup_head(est._features(x), n_outputs)
        return float(beta_max(CompositeProblem(loss, operator, penalty, 1.0)))

    def _fit_targets(
        self, x: np.ndarray, loss: Loss, n_outputs: int, coef_init: Any = None, callback: SolveCallback | None = None
    ) -> None:
        xt = self._features(x)
        operator, penalty = self._setup_head(xt, n_outputs)
        result = self._solve(loss, operator, penalty, self._start_point(coef_init, operator), callback)
        self._store_solution(result)
        self.objective_ = float(result.objective)
        self.certificate_ = result.certificate
        self.status_ = result.status
        self.n_iter_ = int(result.n_iter)
        self.history_ = result.history
        self.solve_time_ = float(result.time)
        if result.status == "stalled":
            warnings.warn(
                f"{type(self).__name__} stalled: neither the objective nor its dual bound improved at {self.dtype} "
                f"precision, at a relative duality gap of {result.certificate.rel_gap:.3g} > tol={self.tol:g} after "
                f"{result.n_iter} iterations; the best iterate is kept (dtype='float64' or rescaled features may "
                "certify it)",
                ConvergenceWarning,
                stacklevel=3,
            )
        elif result.status != "converged":
            warnings.warn(
                f"{type(self).__name__} did not converge: status={result.status!r}, relative duality gap "
                f"{result.certificate.rel_gap:.3g} > tol={self.tol:g} after {result.n_iter} iterations",
                ConvergenceWarning,
                stacklevel=3,
            )

    def _decision(self, x: Any) -> torch.Tensor:
        check_is_fitted(self, "coef_")
        x = self._validate_predict_X(x)
        return self._raw_predict(self._features(x))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags


def _check_numeric_targets(y: Any, name: str) -> None:
    """``ValueError`` naming ``y`` when regression targets are strings (class labels belong to a classifier)."""
    try:
        arr = np.asarray(y)
    except (TypeError, ValueError):  # ragged or otherwise unreadable: validation explains
        return
    strings = arr.dtype.kind in "SU" or (
        arr.dtype.kind == "O" and any(isinstance(v, (str, bytes)) for v in arr.reshape(-1).tolist())
    )
    if strings:
        raise ValueError(
            f"y must hold numbers: {name} is a regressor and got string targets (dtype {arr.dtype}); "
            "convert them to floats, or use a classifier for class labels"
        )


def _check_finite_labels(y: Any, name: str) -> None:
    """``ValueError`` naming ``y`` when an object array of class labels holds NaN or inf (numeric arrays are checked
    by scikit-learn's validation, which names ``y``; for object arrays it does not)."""
    try:
        y = np.asarray(y)
    except (TypeError, ValueError):  # ragged or otherwise unreadable: validation explains
        return
    if y.dtype.kind == "O" and any(
        isinstance(v, numbers.Number) and not math.isfinite(abs(v)) for v in y.reshape(-1).tolist()
    ):
        raise ValueError(f"Input y contains NaN or inf: {name} needs finite class labels")


class RegressorTask(RegressorMixin):
    """Squared loss on real targets (N,) or (N, c)."""

    def fit(self, X: Any, y: Any, *, coef_init: Any = None, callback: SolveCallback | None = None) -> RegressorTask:
        """Solve the convex program on ``(X, y)``; returns ``self``.

        ``coef_init``: a starting point for the solver, in the shape of the program's variable (``coef_``; for
        the cone-constrained ReLU MLP, ``cone_coef_``), e.g. the solution at a nearby ``beta`` or a saved iterate
        of an interrupted fit. It changes how long the solve takes, not what it certifies.
        ``callback``: called as ``callback(state, certificate)`` at every certificate check of the solver
        (``state.z`` is the current iterate; see :mod:`attnduality.convex.solvers`)."""
        self._check_params()
        self._fit_targets(*self._prepare_fit(X, y), coef_init=coef_init, callback=callback)
        return self

    def _prepare_fit(self, X: Any, y: Any) -> tuple[np.ndarray, Loss, int]:
        if self.loss != "squared":
            raise ValueError(f"{type(self).__name__} supports loss='squared' only, got {self.loss!r}")
        _check_numeric_targets(y, type(self).__name__)
        X, y = self._validate_fit_data(X, y, multi_output=True, y_numeric=True)
        self._y_ndim = y.ndim
        y2 = y.reshape(len(y), -1)
        return X, SquaredLoss(self._tensor(y2)), y2.shape[1]

    def predict(self, X: Any) -> np.ndarray:
        out = self._decision(X).detach().cpu().numpy().astype(np.float64)
        return out[:, 0] if self._y_ndim == 1 else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


class ClassifierTask(ClassifierMixin):
    """Cross-entropy (default), binary logistic, or squared loss on one-hot targets."""

    def fit(self, X: Any, y: Any, *, coef_init: Any = None, callback: SolveCallback | None = None) -> ClassifierTask:
        """Solve the convex program on ``(X, y)``; returns ``self``. ``coef_init`` and ``callback``: as in
        :meth:`RegressorTask.fit`."""
        self._check_params()
        self._fit_targets(*self._prepare_fit(X, y), coef_init=coef_init, callback=callback)
        return self

    def _prepare_fit(self, X: Any, y: Any) -> tuple[np.ndarray, Loss, int]:
        if self.loss not in ("cross_entropy", "logistic", "squared"):
            raise ValueError(f"loss must be 'cross_entropy', 'logistic' or 'squared', got {self.loss!r}")
        _check_finite_labels(y, type(self).__name__)
        X, y = self._validate_fit_data(X, y)
        kind = type_of_target(y, input_name="y")
        if kind not in ("binary", "multiclass"):
            raise ValueError(
                f"Unknown label type: {kind} targets in y; {type(self).__name__} needs class labels (binary or "
                "multiclass targets)"
            )
        check_classification_targets(y)
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
        return X, loss, n_out

    def decision_function(self, X: Any) -> np.ndarray:
        out = self._decision(X).detach().cpu().numpy().astype(np.float64)
        if out.shape[1] == 1:
            return out[:, 0]
        if out.shape[1] == 2:  # binary: the score of the positive class against the negative one
            return out[:, 1] - out[:, 0]
        return out

    def predict(self, X: Any) -> np.ndarray:
        scores = self.decision_function(X)
        idx = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_[idx]

    def _has_proba(self) -> bool:
        return self.loss != "squared"

    @available_if(_has_proba)
    def predict_proba(self, X: Any) -> np.ndarray:
        s = torch.as_tensor(self.decision_function(X))
        if s.ndim == 1:
            p1 = torch.sigmoid(s)
            return torch.stack([1 - p1, p1], dim=1).numpy()
        return torch.softmax(s, dim=1).numpy()

    @available_if(_has_proba)
    def predict_log_proba(self, X: Any) -> np.ndarray:
        return np.log(self.predict_proba(X))
