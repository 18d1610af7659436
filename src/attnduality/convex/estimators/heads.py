"""Convex token heads (self-attention, MLP-Mixer, (B-)FNO) as scikit-learn estimators (Sahiner et al. 2022, §3–§4).

Inputs are token arrays ``X`` of shape (n_samples, n_tokens, n_features) = (N, s, d); every head maps ``X_i`` to an
(s, c) output whose token mean (global average pooling, inside the loss) is the logit/prediction vector. Each
estimator solves, on the data as given (nothing is rescaled),

    ``min_Z (1/N) Σ_i L(A(Z)_i, y_i) + β · R(Z)``

with the operator ``A`` of :mod:`attnduality.convex.operators.attention` / ``.mixer`` / ``.fno`` and

* ``kind="linear"``: the linear head (Thm 3.1, 4.1, 4.4/4.7); ``R`` is the nuclear norm of the lifted matrix
  (for (B-)FNO the sum of the nuclear norms of the ``B`` group blocks, which is the nuclear norm when ``B = 1``);
* ``kind="gated_relu"``: the gated-ReLU head with fixed random gates (the gated analogue of Thm 3.3, 4.2, 4.5/4.8);
  ``R = Σ_j ‖Z_j‖_*`` over gates (and groups), :class:`~attnduality.convex.penalties.BlockNuclearNorm`.

* ``kind="relu"`` (self-attention only): ReLU attention (Thm 3.3) through the gated program and a cone
  decomposition (Mishkin et al. 2022): the gated program is solved and certified as above, then every gated head is
  split into ReLU heads that reproduce the gated outputs exactly on the training tokens
  (:func:`~attnduality.convex.recovery_attention.relu_attention_from_gated`). ``objective_``/``certificate_`` are
  the gated program's; ``relu_objective_`` is the ReLU head's regularised objective (an upper bound on the ReLU
  optimum over these patterns, ``≥ objective_``); ``predict`` and :meth:`to_module` use the ReLU head. The exact
  cone-constrained nuclear norm of Thm 3.3 is NP-hard to evaluate and is not solved directly.

Each estimator is a face over its formulation (:mod:`attnduality.convex.formulations`), which owns the gates,
masks, operator, penalty and twin; the fitted ``formulation_`` is that object, bound to the data's shapes.
Gates are i.i.d. standard Gaussian, drawn by the formulation's sampler from ``random_state`` in float64 and then
cast (so float32 and float64 fits share them); gates whose 0/1 masks on the training set are all zero or repeat an
earlier gate's masks are dropped (identical masks give identical blocks of the program), and ``gates_`` holds the
gates kept. Gates are part of the model: test-time masks are recomputed from them.

Fitted attributes (as for :class:`~attnduality.convex.estimators.ConvexMLPRegressor`): ``coef_`` (the lifted
solution ``Z``), ``gates_`` (``None`` for ``kind="linear"``), ``objective_``, ``certificate_``, ``status_``,
``n_iter_``, ``history_``, ``solve_time_``, plus ``n_features_in_`` (d) and ``n_tokens_in_`` (s); ``X`` at
prediction time must have the same ``s`` and ``d``. :meth:`to_module` returns the non-convex twin of
:mod:`attnduality.nn.attention_heads` recovered by SVD: its outputs equal the convex model's and
``loss + β · module.weight_decay()`` equals ``objective_``.

There is no ``fit_intercept``: a token head has no bias term in the papers' formulation (an appended constant
feature would enter the attention scores and masks, not act as an intercept), so none is offered.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y

from ...nn.attention_heads import ReLUAttentionHead
from ..formulations import Formulation, get_formulation
from ..losses import Loss
from ..operators import LinearOperator
from ..penalties import Penalty
from ..recovery import regularized_objective
from .base import ClassifierTask, ConvexEstimator, RegressorTask

__all__ = [
    "FormulationClassifier",
    "FormulationRegressor",
    "ConvexAttentionClassifier",
    "ConvexAttentionRegressor",
    "ConvexFNOClassifier",
    "ConvexFNORegressor",
    "ConvexMixerClassifier",
    "ConvexMixerRegressor",
]


_RELU_NA = {"mixer": "MLP-Mixer head, Sahiner et al. Thm 4.2", "fno": "FNO head, Sahiner et al. Thm 4.5/4.8"}


class _TokenHead(ConvexEstimator):
    """Shared machinery of the token heads: 3-D input validation, gates, prediction and recovery, all through the
    head's :class:`~attnduality.convex.formulations.Formulation` (subclasses name its ``_family`` and options)."""

    _family = ""
    _kind_param = "kind"

    # --- parameters -------------------------------------------------------------------------------------
    def _formulation_options(self) -> dict[str, Any]:
        """The formulation's options taken from this estimator's parameters."""
        return {}

    def _formulation(self) -> Formulation:
        """The (unbound) formulation of the current parameters; ``ValueError`` for bad ones."""
        return get_formulation(self._family, kind=self.kind, **self._formulation_options())

    @classmethod
    def _params_of(cls, form: Formulation) -> dict[str, Any]:
        return {"kind": form.kind, **form.options()}

    def _check_params(self) -> None:
        super()._check_params()
        if not isinstance(self.kind, str):
            raise ValueError(f"kind must be a string, got {self.kind!r}")
        self._formulation()

    # --- input validation (3-D token arrays) ------------------------------------------------------------
    def _check_tokens(self, X: Any) -> np.ndarray:
        X = check_array(X, allow_nd=True, ensure_2d=False, dtype=np.float64, input_name="X", estimator=self)
        if X.ndim != 3:
            raise ValueError(f"X must be a 3-D array (n_samples, n_tokens, n_features), got shape {X.shape}")
        if X.shape[1] < 1 or X.shape[2] < 1:
            raise ValueError(
                f"X must have at least one token and one feature (n_samples, n_tokens, n_features), got shape {X.shape}"
            )
        return X

    def _validate_fit_data(self, X: Any, y: Any, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        X = self._check_tokens(X)
        X, y = check_X_y(X, y, allow_nd=True, dtype=np.float64, estimator=self, **kwargs)
        self.n_tokens_in_, self.n_features_in_ = int(X.shape[1]), int(X.shape[2])
        return X, y

    def _validate_predict_X(self, X: Any) -> np.ndarray:
        X = self._check_tokens(X)
        s, d = X.shape[1:]
        name = type(self).__name__
        if d != self.n_features_in_:
            raise ValueError(
                f"X has {d} features per token, but {name} is expecting {self.n_features_in_} features per token "
                "as input"
            )
        if s != self.n_tokens_in_:
            raise ValueError(f"X has {s} tokens, but {name} is expecting {self.n_tokens_in_} tokens as input")
        return X

    def _features(self, x: np.ndarray) -> torch.Tensor:
        return self._tensor(x)

    def _store_options(self, form: Formulation) -> None:
        """Fitted attributes of the family's options (e.g. ``scale_``)."""

    # --- gates ----------------------------------------------------------------------------------------------
    def _gates(self, form: Formulation, xt: torch.Tensor) -> torch.Tensor:
        s, d = int(xt.shape[1]), int(xt.shape[2])
        if self.gates is not None:
            g = self._tensor(form.check_gates(self.gates, s, d))
        else:
            if not isinstance(self.n_gates, numbers.Integral) or isinstance(self.n_gates, bool) or self.n_gates < 1:
                raise ValueError(f"n_gates must be an integer >= 1, got {self.n_gates!r}")
            seed = check_random_state(self.random_state).randint(0, 2**31 - 1)
            g = form.sample_gates(s, d, int(self.n_gates), seed).to(dtype=xt.dtype, device=xt.device)
        return form.distinct_gates(xt, g)

    # --- the convex program ---------------------------------------------------------------------------------
    def _setup_head(self, xt: torch.Tensor, n_outputs: int) -> tuple[LinearOperator, Penalty]:
        form = self._formulation().bind(int(xt.shape[1]), int(xt.shape[2]), n_outputs)
        self.formulation_ = form
        self._store_options(form)
        gates = self._gates(form, xt) if form.gated else None
        self.gates_ = None if gates is None else gates.cpu().numpy()
        return form.operator(xt, gates, n_outputs), form.penalty(xt, gates)

    def _n_outputs(self) -> int:
        return self.formulation_.n_outputs(self.coef_.shape, self.n_features_in_)

    def _raw_predict(self, xt: torch.Tensor) -> torch.Tensor:
        gates = None if self.gates_ is None else self._tensor(self.gates_)
        return self.formulation_.operator(xt, gates, self._n_outputs()).forward(self._tensor(self.coef_))

    def _recover(self) -> torch.nn.Module:
        gates = None if self.gates_ is None else torch.as_tensor(self.gates_)
        return self.formulation_.to_module(torch.as_tensor(self.coef_), gates, self.n_tokens_in_, self.n_features_in_)

    def to_module(self) -> torch.nn.Module:
        """The equivalent non-convex multi-head network (one head per nonzero singular value of each lifted block,
        blocks with fewer heads padded with zero heads): its outputs equal the convex model's and
        ``loss + β · module.weight_decay()`` equals ``objective_``."""
        check_is_fitted(self, "coef_")
        return self._recover().to(dtype=self._torch_dtype)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        return tags


# ----------------------------------------------------------------------------------------------------------------
# Self-attention
# ----------------------------------------------------------------------------------------------------------------
class _AttentionHead(_TokenHead):
    """Self-attention heads (:class:`~attnduality.convex.formulations.AttentionFormulation`)."""

    _family = "attention"

    def _formulation_options(self) -> dict[str, Any]:
        return {"scale": self.scale}

    def _store_options(self, form: Formulation) -> None:
        self.scale_ = float(self.scale)  # the scale of the fitted model (used by predict and to_module)

    def _fit_targets(self, x: np.ndarray, loss: Loss, n_outputs: int) -> None:
        super()._fit_targets(x, loss, n_outputs)
        if self.kind != "relu":
            return
        xt = self._features(x)
        twin = self.formulation_.to_module(
            self._tensor(self.coef_), self._tensor(self.gates_), self.n_tokens_in_, self.n_features_in_, x=xt
        )
        self.relu_w1_ = twin.w1.detach().cpu().numpy()
        self.relu_w2_ = twin.w2.detach().cpu().numpy()
        with torch.no_grad():
            self.relu_objective_ = float(regularized_objective(twin, loss, xt, float(self.beta)))

    def _relu_head(self) -> ReLUAttentionHead:
        return ReLUAttentionHead(torch.as_tensor(self.relu_w1_), torch.as_tensor(self.relu_w2_), scale=self.scale_)

    def _raw_predict(self, xt: torch.Tensor) -> torch.Tensor:
        if self.kind != "relu":
            return super()._raw_predict(xt)
        with torch.no_grad():
            return self._relu_head().to(dtype=xt.dtype, device=xt.device)(xt)

    def _recover(self) -> torch.nn.Module:
        return self._relu_head() if self.kind == "relu" else super()._recover()


_ATTENTION_DOC = """

    Parameters
    ----------
    kind : {"gated_relu", "linear", "relu"}, default="gated_relu"
        ``"linear"``: ``min_Z (1/N) Σ_i L(mean_t X_i Σ_{k,l} G_i[k,l] Z^{(k,l)}, y_i) + β‖Z‖_*`` with
        ``G_i = scale · X_iᵀX_i`` and ``Z`` (d², d·c) (Thm 3.1). ``"gated_relu"``: one block ``Z_j`` per gate
        ``U_j`` (d, d) with token-pair masks ``M_j[t, t'] = 1{x_tᵀ U_j x_t' ≥ 0}`` replacing ``G_i`` by the local
        Grams ``Σ_t' M_j[t, t'] X[t', k] X[t', l]``, penalty ``β Σ_j ‖Z_j‖_*``. ``"relu"``: ReLU attention
        (Thm 3.3) by a cone decomposition of the certified gated solution; fitted ``relu_w1_`` (h, d, d),
        ``relu_w2_`` (h, d, c) and ``relu_objective_``; ``predict`` and ``to_module`` use the ReLU head.
    scale : float, default=1.0
        Multiplies the attention scores, ``scale · X W1 Xᵀ`` (e.g. ``1/s`` or the paper's ``1/√d``); it is passed
        to the operator and to the twin. Nothing else rescales the data; ``scale = a`` is equivalent to β → β/a.
    n_gates : int, default=5
        Number of gates sampled when ``gates`` is None (``kind="gated_relu"`` only; the paper uses 5).
    gates : ndarray of shape (m, d, d), default=None
        Explicit gates (``kind="gated_relu"`` only); overrides ``n_gates`` and ``random_state``.
    beta : float, default=1e-3
        Regularisation strength β > 0 (the loss is averaged over samples).
    loss : str
        ``"squared"`` for the regressor; ``"cross_entropy"`` (default), ``"logistic"`` or ``"squared"`` for the
        classifier.
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
        then Newton from its best point if 300 iterations have not certified the fit (``max_iter`` counts both).
    random_state : int, RandomState instance or None, default=None
        Seeds the gate sampler.
    device : str, default="cpu"
        Torch device of the solve.
    dtype : {"float64", "float32"}, default="float64"
        Torch dtype of the solve.
    verbose : int, default=0
        ``>= 1``: print the solver's iteration, objective and certified gap (against ``tol``) to stderr, at most
        every 2 seconds and when it stops.

    There is no ``fit_intercept`` (a token head has no intercept in this formulation). ``X`` is (N, s, d).
    Fitted ``scale_`` holds the scale used. See :mod:`attnduality.convex.estimators.heads` for the fitted
    attributes and :meth:`to_module`
    (:class:`~attnduality.nn.attention_heads.LinearAttentionHead` /
    :class:`~attnduality.nn.attention_heads.GatedAttentionHead`).
    """


class ConvexAttentionRegressor(RegressorTask, _AttentionHead):
    """Convex self-attention head with token mean pooling for regression, squared loss (Sahiner et al. §3)."""

    __doc__ = (__doc__ or "") + _ATTENTION_DOC

    def __init__(
        self,
        kind: str = "gated_relu",
        scale: float = 1.0,
        n_gates: int = 5,
        gates: np.ndarray | None = None,
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
        self.scale = scale
        self.n_gates = n_gates
        self.gates = gates
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


class ConvexAttentionClassifier(ClassifierTask, _AttentionHead):
    """Convex self-attention head with token mean pooling for classification: cross-entropy, logistic or squared
    loss (Sahiner et al. §3)."""

    __doc__ = (__doc__ or "") + _ATTENTION_DOC

    def __init__(
        self,
        kind: str = "gated_relu",
        scale: float = 1.0,
        n_gates: int = 5,
        gates: np.ndarray | None = None,
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
        self.scale = scale
        self.n_gates = n_gates
        self.gates = gates
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


# ----------------------------------------------------------------------------------------------------------------
# MLP-Mixer
# ----------------------------------------------------------------------------------------------------------------
class _MixerHead(_TokenHead):
    """MLP-Mixer heads (:class:`~attnduality.convex.formulations.MixerFormulation`)."""

    _family = "mixer"

    def _check_params(self) -> None:
        if self.kind == "relu":
            raise ValueError(
                f"kind='relu' is not available for the {_RELU_NA['mixer']} (the paper convexifies its ReLU form only "
                "through gated masks here); use kind='gated_relu' (ReLU masks from fixed random gates) or "
                "kind='linear'"
            )
        super()._check_params()


_MIXER_DOC = """

    Parameters
    ----------
    kind : {"gated_relu", "linear"}, default="gated_relu"
        ``"linear"``: the head ``Σ_h W1_h X W2_h`` (``W1`` (s, s) mixes tokens, ``W2`` (d, c) channels) in its
        convex form, ``Z`` (s², d·c) with ``β‖Z‖_*`` (Thm 4.1; under token pooling only the column sums of its
        blocks reach the outputs, so ``coef_`` is one of many minimisers). ``"gated_relu"``: one block ``Z_j``
        per gate ``U_j`` (s, s) with masks ``1{U_j X ≥ 0}`` (s, d), penalty ``β Σ_j ‖Z_j‖_*``. ``"relu"``
        (cone-constrained) is not implemented yet and raises ``ValueError``.
    n_gates : int, default=20
        Number of gates sampled when ``gates`` is None (``kind="gated_relu"`` only).
    gates : ndarray of shape (m, s, s), default=None
        Explicit gates (``kind="gated_relu"`` only); overrides ``n_gates`` and ``random_state``.
    beta, loss, tol, max_iter, max_time, random_state, device, dtype
        As for :class:`ConvexAttentionRegressor`.

    There is no ``fit_intercept``. ``X`` is (N, s, d). See :mod:`attnduality.convex.estimators.heads` for the
    fitted attributes and :meth:`to_module` (:class:`~attnduality.nn.attention_heads.LinearMixerHead` /
    :class:`~attnduality.nn.attention_heads.GatedMixerHead`).
    """


class ConvexMixerRegressor(RegressorTask, _MixerHead):
    """Convex MLP-Mixer head with token mean pooling for regression, squared loss (Sahiner et al. §4.1)."""

    __doc__ = (__doc__ or "") + _MIXER_DOC

    def __init__(
        self,
        kind: str = "gated_relu",
        n_gates: int = 20,
        gates: np.ndarray | None = None,
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
        self.n_gates = n_gates
        self.gates = gates
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


class ConvexMixerClassifier(ClassifierTask, _MixerHead):
    """Convex MLP-Mixer head with token mean pooling for classification: cross-entropy, logistic or squared loss
    (Sahiner et al. §4.1)."""

    __doc__ = (__doc__ or "") + _MIXER_DOC

    def __init__(
        self,
        kind: str = "gated_relu",
        n_gates: int = 20,
        gates: np.ndarray | None = None,
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
        self.n_gates = n_gates
        self.gates = gates
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


# ----------------------------------------------------------------------------------------------------------------
# (B-)FNO
# ----------------------------------------------------------------------------------------------------------------
class _FNOHead(_TokenHead):
    """(B-)FNO heads (:class:`~attnduality.convex.formulations.FNOFormulation`)."""

    _family = "fno"

    def _check_params(self) -> None:
        if self.kind == "relu":
            raise ValueError(
                f"kind='relu' is not available for the {_RELU_NA['fno']} (the paper convexifies its ReLU form only "
                "through gated masks here); use kind='gated_relu' (ReLU masks from fixed random gates) or "
                "kind='linear'"
            )
        super()._check_params()

    def _formulation_options(self) -> dict[str, Any]:
        return {"blocks": self.blocks, "grid": self.grid}

    def _store_options(self, form: Formulation) -> None:
        self.grid_, self.blocks_ = form.grid, int(form.blocks)


_FNO_DOC = """

    Parameters
    ----------
    kind : {"gated_relu", "linear"}, default="gated_relu"
        ``"linear"``: ``min Σ_i L(mean_t [circ(X_i^{(b)}) Z_b]_b, y_i) + β Σ_b ‖Z_b‖_*`` with ``Z_b`` (s·d/B, c/B)
        (Thm 4.4, B = 1; Thm 4.7; under token pooling this is a (grouped) nuclear-norm linear model on the mean
        token). ``"gated_relu"``: one block ``Z_bj`` per group and gate ``u_bj`` (s, d/B) with token masks
        ``1{circ(X^{(b)}) u_bj ≥ 0}``, penalty ``β Σ_{b,j} ‖Z_bj‖_*``. ``"relu"`` (cone-constrained) is not
        implemented yet and raises ``ValueError``.
    blocks : int, default=1
        Number of groups B of the block-diagonal FNO (B-FNO); ``blocks=1`` is the plain FNO. B must divide the
        number of features d and the number of outputs c; output group b (outputs ``b*c/B:(b+1)*c/B``) sees
        feature group b only.
    grid : sequence of int, default=None
        The token grid (row-major, product = s) of the circular convolutions, e.g. ``(14, 14)`` for image
        patches; default ``(s,)``.
    n_gates : int, default=20
        Number of gates per group sampled when ``gates`` is None (``kind="gated_relu"`` only).
    gates : ndarray of shape (B, m, s, d/B), default=None
        Explicit gates (``kind="gated_relu"`` only); overrides ``n_gates`` and ``random_state``.
    beta, loss, tol, max_iter, max_time, random_state, device, dtype
        As for :class:`ConvexAttentionRegressor`.

    There is no ``fit_intercept``. ``X`` is (N, s, d). Fitted ``grid_`` and ``blocks_`` hold the grid and B used. See
    :mod:`attnduality.convex.estimators.heads` for the other fitted attributes and :meth:`to_module`
    (:class:`~attnduality.nn.attention_heads.LinearFNOHead` / :class:`~attnduality.nn.attention_heads.GatedFNOHead`).
    """


class ConvexFNORegressor(RegressorTask, _FNOHead):
    """Convex (B-)FNO head with token mean pooling for regression, squared loss (Sahiner et al. §4.2)."""

    __doc__ = (__doc__ or "") + _FNO_DOC

    def __init__(
        self,
        kind: str = "gated_relu",
        blocks: int = 1,
        grid: tuple[int, ...] | None = None,
        n_gates: int = 20,
        gates: np.ndarray | None = None,
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
        self.blocks = blocks
        self.grid = grid
        self.n_gates = n_gates
        self.gates = gates
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


class ConvexFNOClassifier(ClassifierTask, _FNOHead):
    """Convex (B-)FNO head with token mean pooling for classification: cross-entropy, logistic or squared loss
    (Sahiner et al. §4.2)."""

    __doc__ = (__doc__ or "") + _FNO_DOC

    def __init__(
        self,
        kind: str = "gated_relu",
        blocks: int = 1,
        grid: tuple[int, ...] | None = None,
        n_gates: int = 20,
        gates: np.ndarray | None = None,
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
        self.blocks = blocks
        self.grid = grid
        self.n_gates = n_gates
        self.gates = gates
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


# ----------------------------------------------------------------------------------------------------------------
# Any registered token formulation
# ----------------------------------------------------------------------------------------------------------------
class _FormulationHead(_TokenHead):
    """A token head given by its formulation (a registry name or a :class:`Formulation` object)."""

    _family = "*"
    _kind_param = None

    def _formulation(self) -> Formulation:
        form = self.formulation
        if isinstance(form, str):
            form = get_formulation(form)
        if not isinstance(form, Formulation):
            raise ValueError(f"formulation must be a registry name or a Formulation, got {form!r}")
        if not form.tokens:
            raise ValueError(f"{form.name} reads (N, d) feature rows, not token arrays; use its own estimator")
        return form

    def _check_params(self) -> None:
        ConvexEstimator._check_params(self)
        self._formulation()


_FORMULATION_DOC = """

    Parameters
    ----------
    formulation : str or Formulation
        A registry name (``"mixer/gated_relu"``, see :func:`~attnduality.convex.formulations.formulation_names`) or
        a formulation object with its options, e.g. ``get_formulation("fno/linear", blocks=2)``.
    n_gates, gates, beta, loss, tol, max_iter, max_time, solver, random_state, device, dtype, verbose
        As for :class:`ConvexAttentionRegressor`; ``gates`` has the formulation's gate shape.

    The family estimators (:class:`ConvexAttentionClassifier`, …) are the same machinery with their options as
    parameters; this one fits any registered token formulation, including one added outside the library.
    """


class FormulationRegressor(RegressorTask, _FormulationHead):
    """Convex token head of any registered formulation, for regression (squared loss)."""

    __doc__ = (__doc__ or "") + _FORMULATION_DOC

    def __init__(
        self,
        formulation: str | Formulation = "attention/gated_relu",
        n_gates: int = 5,
        gates: np.ndarray | None = None,
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
        self.formulation = formulation
        self.n_gates = n_gates
        self.gates = gates
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


class FormulationClassifier(ClassifierTask, _FormulationHead):
    """Convex token head of any registered formulation, for classification (cross-entropy, logistic or squared)."""

    __doc__ = (__doc__ or "") + _FORMULATION_DOC

    def __init__(
        self,
        formulation: str | Formulation = "attention/gated_relu",
        n_gates: int = 5,
        gates: np.ndarray | None = None,
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
        self.formulation = formulation
        self.n_gates = n_gates
        self.gates = gates
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
