"""Token lasso: the convex attention programs of Ergen, Neyshabur & Mehta (2022) as scikit-learn estimators.

Every estimator solves, on the data as given, ``min_Z (1/N) Σ_i L(A(Z)_i, y_i) + β R(Z)`` (the library's
convention: the paper's ``Σ_i L`` corresponds to β/N; the printed stray ½ on the loss of eq. (9) is dropped) with the
operators of :mod:`attnduality.convex.operators.token`:

* ``kind="attention"``, ``penalty="group"``: eq. (9) for one output (group lasso, one group per token) and eq. (12)
  for c outputs (one group per token and output). Equivalent to the multi-head attention-only network (8)/(11) with
  output weight decay ``‖b_j‖_1²``, for any loss on the output vector (the paper's Theorem 2 writes the loss as a sum
  over outputs, which is where its separability assumption enters).
* ``kind="attention"``, ``penalty="nuclear"``: per-token nuclear norm ``Σ_k ‖Z_k‖_*`` — the exact convex form of
  (11) with ``‖b_j‖_2²`` output decay, the joint multi-class variant (derived here, not in the paper).
  Identical to ``"group"`` when c = 1.
* ``kind="gated_fc"``: attention followed by an FC layer with gated ReLU (§3.4, whose equations are not public;
  reconstructed here) with sampled gates ``g_p`` and masks ``1{x_ikᵀ g_p ≥ 0}``; groups per
  (token, gate[, output]); exact for the model restricted to the gates kept (``gates_``).
* ``kind="sequence"`` (regressor only): sequence outputs ``Y_i`` (n, c) (App. A.7, eq. (33)), made exact by the
  equal-row-sum constraint the printed program lacks (derived; :class:`~attnduality.convex.operators.token.
  RowStochasticCone`). Targets are ``Y_i`` flattened row-major: ``y`` of shape (N, n·c).

Inputs: ``X`` (N, n, d) token arrays, or 2-D ``X`` (N, F) read as ``n_tokens`` tokens of F / n_tokens features
(``n_tokens=None``: every column is a one-feature token).

Fitted attributes, as for the other convex estimators: ``coef_`` (``Z``: (n, d, c), (n, P, d, c) or
(2, d, c, n, n)), ``gates_`` ((d, P) or ``None``), ``objective_``, ``certificate_``, ``status_``, ``n_iter_``,
``history_``, ``solve_time_``, ``n_features_in_`` (d for 3-D input, F for 2-D input), ``n_tokens_in_``; plus
``support_`` (the token indices used), ``token_norms_`` (n,), ``heads_needed_`` (h*: heads of the recovered
network), ``is_exact_`` (``n_heads`` is None or ≥ h*: ``objective_`` *equals* the optimum of the ``n_heads``-head
non-convex problem; otherwise it is only a **lower bound**, and a warning says so) and ``n_heads_`` (heads of
:meth:`to_module`). :meth:`to_module` returns the recovered non-convex twin of :mod:`attnduality.nn.token_lasso_twins`
(support-index recovery, Prop. 1 corrected); :meth:`regularization_path` solves along a β grid.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y, validate_data

from ..formulations import Formulation, TokenLassoFormulation
from ..losses import Loss
from ..operators import LinearOperator
from ..penalties import Penalty
from ..problem import CompositeProblem
from ..recovery_token import (
    KINDS,
    PENALTIES,
    heads_needed,
    token_norms,
    token_support,
)
from ..solvers import SolveResult, beta_max, make_solver, solve_path
from .base import ClassifierTask, ConvexEstimator, RegressorTask, SolveCallback

__all__ = ["TokenLassoClassifier", "TokenLassoRegressor", "TokenPath"]


@dataclass
class TokenPath:
    """A warm-started regularisation path of a token program, one entry per β (in the order of ``betas``)."""

    betas: np.ndarray
    objective: np.ndarray
    rel_gap: np.ndarray
    status: list[str]
    n_tokens: np.ndarray
    """Number of tokens used (``len(support_)``)."""
    n_groups: np.ndarray
    """Number of nonzero groups of the penalty (token × output / token blocks / (token, gate) blocks / C^± blocks)."""
    heads_needed: np.ndarray
    """``h*`` at each β."""
    token_norms: np.ndarray
    """(n_betas, n): ``‖Z_k‖_F`` per token."""
    beta_max: float
    """The smallest β with ``Z = 0`` optimal."""
    coefs: list[np.ndarray] = field(default_factory=list)


def _ndim(x: Any) -> int:
    """The number of dimensions of an array-like; 2 when it cannot be read as an array (validation then explains)."""
    if hasattr(x, "ndim"):
        return int(x.ndim)
    try:
        return int(np.asarray(x).ndim)
    except (TypeError, ValueError):
        return 2


def _is_int(v: Any, low: int) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool) and int(v) >= low


class _TokenLasso(ConvexEstimator):
    """Shared machinery: parameters, token input validation, operators, recovery, paths."""

    _sequence_ok = True
    _family = "token_lasso"
    kind_param = "kind"

    @classmethod
    def _params_of(cls, form: Formulation) -> dict[str, Any]:
        return {"kind": form.kind, "penalty": form.penalty_kind, "n_heads": form.n_heads}

    # --- parameters -------------------------------------------------------------------------------------
    def _check_params(self) -> None:
        super()._check_params()
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.penalty not in PENALTIES:
            raise ValueError(f"penalty must be one of {PENALTIES}, got {self.penalty!r}")
        if self.kind == "sequence":
            if not self._sequence_ok:
                raise ValueError("kind='sequence' (sequence outputs, App. A.7) is regression only")
            if self.penalty != "group":
                raise ValueError("kind='sequence' has its own penalty (App. A.7); use penalty='group' (the default)")
        if self.n_heads is not None and not _is_int(self.n_heads, 1):
            raise ValueError(f"n_heads must be None or an integer >= 1, got {self.n_heads!r}")
        if self.n_tokens is not None and not _is_int(self.n_tokens, 1):
            raise ValueError(f"n_tokens must be None or an integer >= 1, got {self.n_tokens!r}")
        if self.kind == "gated_fc" and self.gates is None and not _is_int(self.n_gates, 1):
            raise ValueError(f"n_gates must be an integer >= 1, got {self.n_gates!r}")

    # --- input validation -------------------------------------------------------------------------------
    def _check_3d(self, X: Any) -> np.ndarray:
        X = check_array(X, allow_nd=True, ensure_2d=False, dtype=np.float64, input_name="X", estimator=self)
        if X.ndim != 3 or X.shape[1] < 1 or X.shape[2] < 1:
            raise ValueError(
                f"X must be (n_samples, n_tokens, n_features) with n_tokens, n_features >= 1, got shape {X.shape}"
            )
        return X

    def _split_2d(self, X: np.ndarray) -> np.ndarray:
        n = X.shape[1] if self.n_tokens is None else int(self.n_tokens)
        if X.shape[1] % n:
            raise ValueError(f"X has {X.shape[1]} columns, which is not a multiple of n_tokens={n}")
        return X.reshape(X.shape[0], n, X.shape[1] // n)

    def _check_ndim(self, X: Any) -> None:
        """``ValueError`` saying which shapes are taken for X of 4 or more dimensions (1-D: scikit-learn's message)."""
        if _ndim(X) > 3:
            shape = getattr(X, "shape", None)
            shape = tuple(shape) if shape is not None else np.shape(X)
            raise ValueError(
                f"X must be a 3-D array (n_samples, n_tokens, n_features) or 2-D (n_samples, n_tokens · n_features), "
                f"got dim {len(shape)}: shape {shape}"
            )

    def _validate_fit_data(self, X: Any, y: Any, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        self._check_ndim(X)
        if _ndim(X) == 3:
            X = self._check_3d(X)
            X, y = check_X_y(X, y, allow_nd=True, dtype=np.float64, estimator=self, **kwargs)
            if self.n_tokens is not None and self.n_tokens != X.shape[1]:
                raise ValueError(f"X has {X.shape[1]} tokens but n_tokens={self.n_tokens}")
            self.n_features_in_ = int(X.shape[2])
            self.__dict__.pop("feature_names_in_", None)
            tokens = X
        else:
            X, y = validate_data(self, X, y, dtype=np.float64, **kwargs)
            tokens = self._split_2d(X)
        self._fit_2d = _ndim(X) == 2
        self.n_tokens_in_ = int(tokens.shape[1])
        self._token_dim = int(tokens.shape[2])
        return tokens, y

    def _validate_predict_X(self, X: Any) -> np.ndarray:
        n, d = self.n_tokens_in_, self._token_dim
        name = type(self).__name__
        self._check_ndim(X)
        if _ndim(X) == 3:
            X = self._check_3d(X)
            if X.shape[1:] != (n, d):
                raise ValueError(f"X has tokens of shape {X.shape[1:]}, but {name} is expecting {(n, d)}")
            return X
        if self._fit_2d:
            X = validate_data(self, X, reset=False, dtype=np.float64)
        else:
            X = check_array(X, dtype=np.float64, estimator=self)
            if X.shape[1] != n * d:
                raise ValueError(f"X has {X.shape[1]} features, but {name} is expecting {n * d} features as input")
        return X.reshape(X.shape[0], n, d)

    def _features(self, x: np.ndarray) -> torch.Tensor:
        return self._tensor(x)

    # --- the convex program -------------------------------------------------------------------------------
    def _formulation(self) -> TokenLassoFormulation:
        n_heads = None if self.n_heads is None else int(self.n_heads)
        return TokenLassoFormulation(kind=self.kind, penalty_kind=self.penalty, n_heads=n_heads)

    def _setup_head(self, xt: torch.Tensor, n_outputs: int) -> tuple[LinearOperator, Penalty]:
        form = self._formulation().bind(int(xt.shape[1]), int(xt.shape[2]), n_outputs)
        self.formulation_ = form
        gates = self._fit_gates(form, xt, int(xt.shape[1]), int(xt.shape[2])) if form.gated else None
        self.gates_ = None if gates is None else gates.cpu().numpy()
        self._n_channels = form.n_channels(int(xt.shape[1]), n_outputs)
        return form.operator(xt, gates, n_outputs), form.penalty(xt, gates)

    def _raw_predict(self, xt: torch.Tensor) -> torch.Tensor:
        gates = None if self.gates_ is None else self._tensor(self.gates_)
        n_outputs = self.formulation_.n_outputs(self.coef_.shape, int(xt.shape[2]))
        return self.formulation_.operator(xt, gates, n_outputs).forward(self._tensor(self.coef_))

    # --- solution, width, recovery ------------------------------------------------------------------------
    def _summary(self, z: torch.Tensor) -> dict[str, Any]:
        h = heads_needed(z, self.kind, self.penalty)
        if self.kind == "sequence" or self.penalty == "group":
            groups = h
        else:
            blocks = z.reshape(-1, *z.shape[-2:])
            norms = torch.linalg.vector_norm(blocks, dim=(1, 2))
            groups = int((norms > float(norms.max()) * blocks[0].numel() * torch.finfo(z.dtype).eps).sum())
        return dict(
            support=token_support(z, self.kind),
            norms=token_norms(z, self.kind).cpu().numpy(),
            heads=h,
            groups=groups,
        )

    def _store_solution(self, result: SolveResult) -> None:
        z = result.z.detach()
        self.coef_ = z.cpu().numpy()
        s = self._summary(z.cpu())
        self.support_, self.token_norms_, self.heads_needed_ = s["support"], s["norms"], int(s["heads"])
        self.is_exact_ = self.n_heads is None or int(self.n_heads) >= self.heads_needed_
        self.n_heads_ = self.heads_needed_ if self.n_heads is None else max(int(self.n_heads), self.heads_needed_)
        if not self.is_exact_:
            warnings.warn(
                f"{type(self).__name__}: the convex solution needs h* = {self.heads_needed_} heads but n_heads = "
                f"{self.n_heads}; objective_ = {result.objective:.6g} is only a lower bound on the optimum of the "
                f"{self.n_heads}-head non-convex problem, not its value",
                UserWarning,
                stacklevel=4,
            )

    def to_module(self) -> torch.nn.Module:
        """The recovered non-convex network (support-index recovery): its predictions equal the convex model's and
        ``loss + β · module.weight_decay()`` equals ``objective_``. It has ``n_heads_`` heads (zero heads pad up to
        ``n_heads``); raises ``ValueError`` when ``n_heads < heads_needed_`` (then no such network exists)."""
        check_is_fitted(self, "coef_")
        gates = None if self.gates_ is None else torch.as_tensor(self.gates_)
        module = self.formulation_.to_module(torch.as_tensor(self.coef_), gates, self.n_tokens_in_, 0)
        return module.to(dtype=self._torch_dtype)

    # --- regularisation path ------------------------------------------------------------------------------
    def _solve(
        self,
        loss: Loss,
        operator: LinearOperator,
        penalty: Penalty,
        z0: torch.Tensor | None = None,
        callback: SolveCallback | None = None,
    ) -> SolveResult:
        request = self.__dict__.pop("_path_request", None)
        if request is None:
            return super()._solve(loss, operator, penalty, z0, callback)
        betas, n_betas, eps, keep_coefs = request
        problem = CompositeProblem(loss, operator, penalty, float(self.beta))
        bmax = beta_max(problem)
        if betas is None:
            if not bmax > 0:
                raise ValueError("beta_max is 0 (the targets are fitted by Z = 0); pass betas explicitly")
            betas = bmax * np.logspace(0.0, math.log10(eps), int(n_betas))
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or betas.size == 0 or not np.isfinite(betas).all() or (betas <= 0).any():
            raise ValueError("betas must be a non-empty 1-D sequence of finite numbers > 0")
        solver = make_solver(self.solver, problem, self.tol, self.max_iter, self.max_time)  # max_time per β
        results = solve_path(problem, betas.tolist(), solver)
        summaries = [self._summary(r.z.detach().cpu()) for r in results]
        self._path = TokenPath(
            betas=betas,
            objective=np.array([r.objective for r in results]),
            rel_gap=np.array([r.certificate.rel_gap for r in results]),
            status=[r.status for r in results],
            n_tokens=np.array([len(s["support"]) for s in summaries]),
            n_groups=np.array([s["groups"] for s in summaries]),
            heads_needed=np.array([s["heads"] for s in summaries]),
            token_norms=np.stack([s["norms"] for s in summaries]),
            beta_max=float(bmax),
            coefs=[r.z.detach().cpu().numpy() for r in results] if keep_coefs else [],
        )
        bad = [b for b, r in zip(betas, results, strict=True) if not r.converged]
        if bad:
            warnings.warn(
                f"{type(self).__name__}.regularization_path: {len(bad)} of {len(betas)} solves did not reach "
                f"tol={self.tol:g} (first at beta={bad[0]:.3g})",
                ConvergenceWarning,
                stacklevel=4,
            )
        return results[int(np.argmin(betas))]

    def regularization_path(
        self,
        X: Any,
        y: Any,
        betas: Any = None,
        *,
        n_betas: int = 20,
        eps: float = 1e-3,
        keep_coefs: bool = False,
    ) -> TokenPath:
        """Solve the program for every β in ``betas`` (default: ``n_betas`` values spaced geometrically from
        ``beta_max`` down to ``eps · beta_max``), largest first, each warm-started from the previous solution
        (:func:`~attnduality.convex.solvers.solve_path`). ``self`` is not modified. Returns a :class:`TokenPath`:
        the number of active tokens, groups and heads ``h*`` per β is the token sparsity of the abstract."""
        if not _is_int(n_betas, 1) or not (0 < eps < 1):
            raise ValueError(f"n_betas must be an integer >= 1 and 0 < eps < 1, got {n_betas!r}, {eps!r}")
        est = clone(self)
        est._path_request = (betas, n_betas, eps, keep_coefs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # the path reports its own convergence
            warnings.simplefilter("ignore", UserWarning)
            est.fit(X, y)
        return est._path

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        return tags


_PARAMS_DOC = """

    Parameters
    ----------
    kind : {"attention", "gated_fc", "sequence"}, default="attention"
        The program: attention-only (eq. (9)/(12)), attention + gated-ReLU FC (§3.4, derived), or sequence outputs
        (App. A.7, corrected; regressor only). See :mod:`attnduality.convex.estimators.token_lasso`.
    penalty : {"group", "nuclear"}, default="group"
        ``"group"``: one group per token and output (eq. (9)/(12); output decay ``‖b_j‖_1²``); ``"nuclear"``: the
        nuclear norm of each token's (d, c) block (derived here; output decay ``‖b_j‖_2²``). Same program
        when c = 1.
    n_heads : int, default=None
        Width h of the non-convex network to compare with. ``None``: as many heads as the solution needs
        (``is_exact_`` is True). With ``n_heads < heads_needed_`` the convex value is only a lower bound.
    n_gates : int, default=20
        Gates sampled when ``gates`` is None (``kind="gated_fc"`` only); duplicates on the training tokens are dropped.
    gates : ndarray of shape (d, P), default=None
        Explicit gate vectors (``kind="gated_fc"`` only).
    n_tokens : int, default=None
        For 2-D ``X`` (N, F): the number of tokens (F must be a multiple); ``None`` reads every column as a token.
    beta : float, default=1e-3
        Regularisation strength β > 0 (the loss is averaged over samples).
    loss : str
        ``"squared"`` for the regressor; ``"cross_entropy"`` (default), ``"logistic"`` or ``"squared"`` (one-hot
        targets) for the classifier.
    tol : float, default=1e-6
        Target relative duality gap of the solve.
    max_iter : int, default=10000
        Maximum number of solver iterations (FISTA iterations or proximal Newton steps).
    max_time : float or None, default=None
        Wall-clock limit of the solve in seconds; a fit stopped by it says so (``status_ == "max_time"``, a
        ``ConvergenceWarning``) and keeps its certificate. A solve that stops improving at the dtype's precision
        (float32 on badly scaled data) ends early with ``status_ == "stalled"``, also with a warning.
    solver : {"auto", "fista", "newton"}, default="auto"
        ``"newton"``: proximal Newton with a semismooth Newton augmented-Lagrangian inner solver
        (:mod:`attnduality.convex.solvers.newton`); ``"fista"``: accelerated proximal gradient; ``"auto"``: FISTA,
        then Newton from its best point where FISTA is slow to certify the fit, after 100–300 iterations (``max_iter``
        counts both); Newton alone for the squared loss (regressors).
    random_state : int, RandomState instance or None, default=None
        Seeds the gate sampler.
    device : str, default="cpu"
        Torch device of the solve.
    dtype : {"float64", "float32"}, default="float64"
        Torch dtype of the solve.
    verbose : int, default=0
        ``>= 1``: print the solver's iteration, objective and certified gap (against ``tol``) to stderr, at most
        every 2 seconds and when it stops.
    """


class TokenLassoRegressor(RegressorTask, _TokenLasso):
    """Convex attention (token group lasso) for regression, squared loss (Ergen et al. 2022, eq. (9), (12), A.7)."""

    __doc__ = (__doc__ or "") + _PARAMS_DOC

    def __init__(
        self,
        kind: str = "attention",
        penalty: str = "group",
        n_heads: int | None = None,
        n_gates: int = 20,
        gates: np.ndarray | None = None,
        n_tokens: int | None = None,
        beta: float = 1e-3,
        loss: str = "squared",
        tol: float = 1e-6,
        max_iter: int = 10_000,
        max_time: float | None = None,
        solver: str = "auto",
        random_state: int | None = None,
        device: str = "cpu",
        dtype: str = "float64",
        verbose: int = 0,
    ) -> None:
        self.kind = kind
        self.penalty = penalty
        self.n_heads = n_heads
        self.n_gates = n_gates
        self.gates = gates
        self.n_tokens = n_tokens
        self.beta = beta
        self.loss = loss
        self.tol = tol
        self.max_iter = max_iter
        self.max_time = max_time
        self.solver = solver
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.verbose = verbose


class TokenLassoClassifier(ClassifierTask, _TokenLasso):
    """Convex attention (token group lasso) for classification: cross-entropy, logistic or squared loss (Ergen et al.
    2022, eq. (9), (12); ``penalty="nuclear"`` is the joint multi-class variant, derived here)."""

    __doc__ = (__doc__ or "") + _PARAMS_DOC
    _sequence_ok = False

    def __init__(
        self,
        kind: str = "attention",
        penalty: str = "group",
        n_heads: int | None = None,
        n_gates: int = 20,
        gates: np.ndarray | None = None,
        n_tokens: int | None = None,
        beta: float = 1e-3,
        loss: str = "cross_entropy",
        tol: float = 1e-6,
        max_iter: int = 10_000,
        max_time: float | None = None,
        solver: str = "auto",
        random_state: int | None = None,
        device: str = "cpu",
        dtype: str = "float64",
        verbose: int = 0,
    ) -> None:
        self.kind = kind
        self.penalty = penalty
        self.n_heads = n_heads
        self.n_gates = n_gates
        self.gates = gates
        self.n_tokens = n_tokens
        self.beta = beta
        self.loss = loss
        self.tol = tol
        self.max_iter = max_iter
        self.max_time = max_time
        self.solver = solver
        self.random_state = random_state
        self.device = device
        self.dtype = dtype
        self.verbose = verbose
