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

Gates are i.i.d. standard Gaussian, drawn by the operator modules' samplers from ``random_state`` in float64 and then
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

import hashlib
import math
import numbers
from typing import Any

import numpy as np
import torch
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_array, check_is_fitted, check_X_y

from ...nn.attention_heads import ReLUAttentionHead
from ..losses import Loss
from ..operators import LinearOperator
from ..operators.attention import (
    GatedAttentionOperator,
    LinearAttentionOperator,
    attention_masks,
    sample_attention_gates,
)
from ..operators.fno import FNOOperator, GatedFNOOperator, fno_masks, sample_fno_gates
from ..operators.mixer import GatedMixerOperator, LinearMixerOperator, mixer_masks, sample_mixer_gates
from ..penalties import BlockNuclearNorm, NuclearNorm, Penalty
from ..recovery import regularized_objective
from ..recovery_attention import (
    gated_attention_to_module,
    gated_fno_to_module,
    gated_mixer_to_module,
    linear_attention_to_module,
    linear_fno_to_module,
    linear_mixer_to_module,
    relu_attention_from_gated,
)
from .base import ClassifierTask, ConvexEstimator, RegressorTask

__all__ = [
    "ConvexAttentionClassifier",
    "ConvexAttentionRegressor",
    "ConvexFNOClassifier",
    "ConvexFNORegressor",
    "ConvexMixerClassifier",
    "ConvexMixerRegressor",
]

_KINDS = ("linear", "gated_relu")
_MASK_CHUNK = 1 << 22  # mask entries per chunk when deduplicating gates


class _TokenHead(ConvexEstimator):
    """Shared machinery of the token heads: 3-D input validation, gates, operator, penalty, prediction, recovery.

    Subclasses set :attr:`_head_name` and :attr:`_gate_axis` and define :meth:`_gate_shape`, :meth:`_sample_gates`,
    :meth:`_masks`, :meth:`_operator`, :meth:`_linear_penalty`, :meth:`_n_outputs` and :meth:`_recover`.
    """

    _head_name = "head"
    _kinds: tuple[str, ...] = _KINDS
    _gate_axis = 0  # the axis of the gate tensor that indexes gates

    # --- parameters -------------------------------------------------------------------------------------
    def _check_params(self) -> None:
        super()._check_params()
        if self.kind == "relu" and "relu" not in self._kinds:
            raise ValueError(
                f"kind='relu' is not available for the {self._head_name} (the paper convexifies its ReLU form only "
                "through gated masks here); use kind='gated_relu' (ReLU masks from fixed random gates) or kind='linear'"
            )
        if self.kind not in self._kinds:
            raise ValueError(f"kind must be one of {self._kinds}, got {self.kind!r}")

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

    # --- family hooks -------------------------------------------------------------------------------------
    def _check_shapes(self, n_tokens: int, n_features: int, n_outputs: int) -> None:
        """Family-specific checks that need the data shapes (e.g. FNO groups and grid)."""

    def _gate_shape(self, n_tokens: int, n_features: int) -> tuple[int, ...]:
        """The gate tensor's shape with ``-1`` on the gate axis."""
        raise NotImplementedError

    def _gate_shape_doc(self) -> str:
        raise NotImplementedError

    def _sample_gates(self, n_tokens: int, n_features: int, n_gates: int, seed: int) -> torch.Tensor:
        raise NotImplementedError

    def _masks(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """The gates' 0/1 masks on ``x`` as (n, m, …) (gate axis second)."""
        raise NotImplementedError

    def _operator(self, x: torch.Tensor, gates: torch.Tensor | None, n_outputs: int) -> LinearOperator:
        raise NotImplementedError

    def _linear_penalty(self) -> Penalty:
        return NuclearNorm()

    def _n_outputs(self) -> int:
        raise NotImplementedError

    def _recover(self, z: torch.Tensor, gates: torch.Tensor | None) -> torch.nn.Module:
        raise NotImplementedError

    # --- gates ----------------------------------------------------------------------------------------------
    def _gates(self, xt: torch.Tensor) -> torch.Tensor:
        s, d = int(xt.shape[1]), int(xt.shape[2])
        expected = self._gate_shape(s, d)
        if self.gates is not None:
            gates = np.asarray(self.gates, dtype=np.float64)
            ok = gates.ndim == len(expected) and all(
                (g >= 1) if e == -1 else (g == e) for g, e in zip(gates.shape, expected, strict=True)
            )
            if not ok:
                desc = "(" + ", ".join("m" if e == -1 else str(e) for e in expected) + ")"
                raise ValueError(
                    f"gates must be an array of shape {desc}, i.e. {self._gate_shape_doc()}, with m >= 1 gates; got "
                    f"shape {gates.shape}"
                )
            if not np.isfinite(gates).all():
                raise ValueError("gates contain NaN or inf")
            g = self._tensor(gates)
        else:
            if not isinstance(self.n_gates, numbers.Integral) or isinstance(self.n_gates, bool) or self.n_gates < 1:
                raise ValueError(f"n_gates must be an integer >= 1, got {self.n_gates!r}")
            seed = check_random_state(self.random_state).randint(0, 2**31 - 1)
            # sampled in float64 so that float32 and float64 fits share the same gates
            g = self._sample_gates(s, d, int(self.n_gates), seed).to(dtype=xt.dtype, device=xt.device)
        keep = self._distinct_gates(xt, g)
        idx = torch.as_tensor(keep if keep else [0], dtype=torch.long, device=g.device)
        return g.index_select(self._gate_axis, idx)

    def _distinct_gates(self, xt: torch.Tensor, gates: torch.Tensor) -> list[int]:
        """Indices of the gates whose masks on the training set are not all zero and differ from every earlier
        gate's (first occurrence kept, order preserved); masks are hashed chunk by chunk, never stored whole."""
        m, n = int(gates.shape[self._gate_axis]), int(xt.shape[0])
        per_sample = max(1, self._masks(xt[:1], gates).numel())
        chunk = max(1, _MASK_CHUNK // per_sample)
        hashers = [hashlib.sha256() for _ in range(m)]
        active = np.zeros(m, dtype=bool)
        for lo in range(0, n, chunk):
            masks = self._masks(xt[lo : lo + chunk], gates).transpose(0, 1).reshape(m, -1)
            masks = (masks != 0).cpu().numpy()
            active |= masks.any(axis=1)
            for j in range(m):
                hashers[j].update(np.packbits(masks[j]).tobytes())
        keep: list[int] = []
        seen: set[bytes] = set()
        for j in range(m):
            key = hashers[j].digest()
            if active[j] and key not in seen:
                seen.add(key)
                keep.append(j)
        return keep

    # --- the convex program ---------------------------------------------------------------------------------
    def _setup_head(self, xt: torch.Tensor, n_outputs: int) -> tuple[LinearOperator, Penalty]:
        self._check_shapes(int(xt.shape[1]), int(xt.shape[2]), n_outputs)
        if self.kind == "linear":
            self.gates_ = None
            return self._operator(xt, None, n_outputs), self._linear_penalty()
        gates = self._gates(xt)
        self.gates_ = gates.cpu().numpy()
        return self._operator(xt, gates, n_outputs), BlockNuclearNorm()

    def _raw_predict(self, xt: torch.Tensor) -> torch.Tensor:
        gates = None if self.gates_ is None else self._tensor(self.gates_)
        return self._operator(xt, gates, self._n_outputs()).forward(self._tensor(self.coef_))

    def to_module(self) -> torch.nn.Module:
        """The equivalent non-convex multi-head network (one head per nonzero singular value of each lifted block,
        blocks with fewer heads padded with zero heads): its outputs equal the convex model's and
        ``loss + β · module.weight_decay()`` equals ``objective_``."""
        check_is_fitted(self, "coef_")
        gates = None if self.gates_ is None else torch.as_tensor(self.gates_)
        return self._recover(torch.as_tensor(self.coef_), gates).to(dtype=self._torch_dtype)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.three_d_array = True
        return tags


# ----------------------------------------------------------------------------------------------------------------
# Self-attention
# ----------------------------------------------------------------------------------------------------------------
class _AttentionHead(_TokenHead):
    """Linear self-attention (Thm 3.1, ``Z`` (d², d·c), nuclear norm) or gated-ReLU self-attention (gates ``U_j``
    (d, d), token-pair masks ``1{x_tᵀ U_j x_t' ≥ 0}``, ``Z`` (m, d², d·c), block nuclear norm)."""

    _head_name = "self-attention head, Sahiner et al. Thm 3.3"
    _kinds = ("linear", "gated_relu", "relu")

    def _check_params(self) -> None:
        super()._check_params()
        if (
            not isinstance(self.scale, numbers.Real)
            or isinstance(self.scale, bool)
            or not math.isfinite(self.scale)
            or self.scale <= 0
        ):
            raise ValueError(f"scale must be a finite number > 0, got {self.scale!r}")

    def _check_shapes(self, n_tokens: int, n_features: int, n_outputs: int) -> None:
        self.scale_ = float(self.scale)  # the scale of the fitted model (used by predict and to_module)

    def _gate_shape(self, n_tokens: int, n_features: int) -> tuple[int, ...]:
        return (-1, n_features, n_features)

    def _gate_shape_doc(self) -> str:
        return "(m, d, d) with d = n_features"

    def _sample_gates(self, n_tokens: int, n_features: int, n_gates: int, seed: int) -> torch.Tensor:
        return sample_attention_gates(n_features, n_gates, seed, torch.float64)

    def _masks(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        return attention_masks(x, gates)

    def _operator(self, x: torch.Tensor, gates: torch.Tensor | None, n_outputs: int) -> LinearOperator:
        if gates is None:
            return LinearAttentionOperator(x, n_outputs, scale=self.scale_)
        return GatedAttentionOperator(x, gates, n_outputs, scale=self.scale_)

    def _n_outputs(self) -> int:
        return self.coef_.shape[-1] // self.n_features_in_

    def _fit_targets(self, x: np.ndarray, loss: Loss, n_outputs: int) -> None:
        super()._fit_targets(x, loss, n_outputs)
        if self.kind != "relu":
            return
        xt = self._features(x)
        twin = relu_attention_from_gated(self._tensor(self.coef_), self._tensor(self.gates_), xt, scale=self.scale_)
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

    def _recover(self, z: torch.Tensor, gates: torch.Tensor | None) -> torch.nn.Module:
        if self.kind == "relu":
            return self._relu_head()
        if gates is None:
            return linear_attention_to_module(z, scale=self.scale_)
        return gated_attention_to_module(z, gates, scale=self.scale_)


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
    """Linear MLP-Mixer (Thm 4.1, ``Z`` (s², d·c), nuclear norm) or gated-ReLU Mixer (gates ``U_j`` (s, s), masks
    ``1{U_j X ≥ 0}`` (s, d), ``Z`` (m, s², d·c), block nuclear norm)."""

    _head_name = "MLP-Mixer head, Sahiner et al. Thm 4.2"

    def _gate_shape(self, n_tokens: int, n_features: int) -> tuple[int, ...]:
        return (-1, n_tokens, n_tokens)

    def _gate_shape_doc(self) -> str:
        return "(m, s, s) with s = n_tokens"

    def _sample_gates(self, n_tokens: int, n_features: int, n_gates: int, seed: int) -> torch.Tensor:
        return sample_mixer_gates(n_tokens, n_gates, seed, torch.float64)

    def _masks(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        return mixer_masks(x, gates)

    def _operator(self, x: torch.Tensor, gates: torch.Tensor | None, n_outputs: int) -> LinearOperator:
        if gates is None:
            return LinearMixerOperator(x, n_outputs)
        return GatedMixerOperator(x, gates, n_outputs)

    def _n_outputs(self) -> int:
        return self.coef_.shape[-1] // self.n_features_in_

    def _recover(self, z: torch.Tensor, gates: torch.Tensor | None) -> torch.nn.Module:
        if gates is None:
            return linear_mixer_to_module(z, self.n_features_in_)
        return gated_mixer_to_module(z, gates, self.n_features_in_)


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
    """Linear (B-)FNO (Thm 4.4/4.7, ``Z`` (B, s·d/B, c/B), ``Σ_b ‖Z_b‖_*``) or gated-ReLU (B-)FNO (gates (B, m, s,
    d/B), masks ``1{circ(X^{(b)}) u_bj ≥ 0}``, ``Z`` (B, m, s·d/B, c/B), block nuclear norm)."""

    _head_name = "FNO head, Sahiner et al. Thm 4.5/4.8"
    _gate_axis = 1

    def _check_params(self) -> None:
        super()._check_params()
        if not isinstance(self.blocks, numbers.Integral) or isinstance(self.blocks, bool) or self.blocks < 1:
            raise ValueError(f"blocks must be an integer >= 1, got {self.blocks!r}")
        if self.grid is not None:
            grid = np.asarray(self.grid)
            if (
                grid.ndim != 1
                or grid.size < 1
                or grid.dtype.kind not in "iu"
                or bool((grid < 1).any())
                or any(isinstance(v, bool) for v in np.ravel(self.grid))
            ):
                raise ValueError(f"grid must be None or a sequence of positive integers, got {self.grid!r}")

    def _check_shapes(self, n_tokens: int, n_features: int, n_outputs: int) -> None:
        grid = (n_tokens,) if self.grid is None else tuple(int(v) for v in self.grid)
        if math.prod(grid) != n_tokens:
            raise ValueError(f"grid {grid} has {math.prod(grid)} tokens but X has n_tokens = {n_tokens}")
        b = int(self.blocks)
        if n_features % b or n_outputs % b:
            raise ValueError(
                f"blocks={b} must divide both the number of features d = {n_features} and the number of outputs "
                f"c = {n_outputs} (c = the number of target columns for regression, the number of classes for "
                "classification, 1 with loss='logistic')"
            )
        self.grid_, self.blocks_ = grid, b

    def _gate_shape(self, n_tokens: int, n_features: int) -> tuple[int, ...]:
        return (self.blocks_, -1, n_tokens, n_features // self.blocks_)

    def _gate_shape_doc(self) -> str:
        return "(B, m, s, d/B) with B = blocks, s = n_tokens, d = n_features"

    def _sample_gates(self, n_tokens: int, n_features: int, n_gates: int, seed: int) -> torch.Tensor:
        return sample_fno_gates(n_tokens, n_features, n_gates, seed, groups=self.blocks_, dtype=torch.float64)

    def _masks(self, x: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        return fno_masks(x, gates, self.grid_).transpose(1, 2)  # (n, m, B, s)

    def _operator(self, x: torch.Tensor, gates: torch.Tensor | None, n_outputs: int) -> LinearOperator:
        if gates is None:
            return FNOOperator(x, n_outputs, groups=self.blocks_, grid=self.grid_)
        return GatedFNOOperator(x, gates, n_outputs, grid=self.grid_)

    def _linear_penalty(self) -> Penalty:
        return BlockNuclearNorm()  # Σ_b ‖Z_b‖_* over the B groups (the nuclear norm when B = 1)

    def _n_outputs(self) -> int:
        return int(self.coef_.shape[0]) * int(self.coef_.shape[-1])

    def _recover(self, z: torch.Tensor, gates: torch.Tensor | None) -> torch.nn.Module:
        if gates is None:
            return linear_fno_to_module(z, self.n_tokens_in_, self.grid_)
        return gated_fno_to_module(z, gates, self.grid_)


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
