"""The shared face of the convex token heads (self-attention, MLP-Mixer, (B-)FNO; Sahiner et al. 2022, §3–§4).

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
:mod:`attnduality.nn.token_twins` recovered by SVD: its outputs equal the convex model's and
``loss + β · module.weight_decay()`` equals ``objective_``.

There is no ``fit_intercept``: a token head has no bias term in the papers' formulation (an appended constant
feature would enter the attention scores and masks, not act as an intercept), so none is offered.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y

from ..formulations import Formulation, get_formulation
from ..operators import LinearOperator
from ..penalties import Penalty
from .base import ClassifierTask, ConvexEstimator, RegressorTask

__all__ = ["FormulationClassifier", "FormulationRegressor", "TokenHead"]


class TokenHead(ConvexEstimator):
    """Shared machinery of the token heads: 3-D input validation, gates, prediction and recovery, all through the
    head's :class:`~attnduality.convex.formulations.Formulation` (subclasses name its ``_family`` and options)."""

    _family = ""
    kind_param = "kind"
    _relu_unavailable: str | None = None
    """the head's name when its ReLU form is not offered (the error for ``kind="relu"`` names it)"""

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
        if self.kind == "relu" and self._relu_unavailable:
            raise ValueError(
                f"kind='relu' is not available for the {self._relu_unavailable} (the paper convexifies its ReLU form "
                "only through gated masks here); use kind='gated_relu' (ReLU masks from fixed random gates) or "
                "kind='linear'"
            )
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

    # --- the convex program ---------------------------------------------------------------------------------
    def _setup_head(self, xt: torch.Tensor, n_outputs: int) -> tuple[LinearOperator, Penalty]:
        form = self._formulation().bind(int(xt.shape[1]), int(xt.shape[2]), n_outputs)
        self.formulation_ = form
        self._store_options(form)
        gates = self._fit_gates(form, xt, int(xt.shape[1]), int(xt.shape[2])) if form.gated else None
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


class _FormulationHead(TokenHead):
    """A token head given by its formulation (a registry name or a :class:`Formulation` object)."""

    _family = "*"
    kind_param = None

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
