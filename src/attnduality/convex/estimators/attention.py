"""Convex self-attention heads with token mean pooling (Sahiner et al. 2022, §3): linear (Thm 3.1), gated ReLU and
ReLU attention (Thm 3.3) through the certified gated program and a cone decomposition. The shared machinery and the
fitted attributes are described in :mod:`attnduality.convex.estimators.tokens`."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ...nn.token_twins import ReLUAttentionHead
from ..formulations import Formulation
from ..losses import Loss
from ..recovery import regularized_objective
from .base import ClassifierTask, RegressorTask, SolveCallback
from .tokens import TokenHead

__all__ = ["ConvexAttentionClassifier", "ConvexAttentionRegressor"]


class _AttentionHead(TokenHead):
    """Self-attention heads (:class:`~attnduality.convex.formulations.AttentionFormulation`)."""

    _family = "attention"

    def _formulation_options(self) -> dict[str, Any]:
        return {"scale": self.scale}

    def _store_options(self, form: Formulation) -> None:
        self.scale_ = float(self.scale)  # the scale of the fitted model (used by predict and to_module)

    def _fit_targets(
        self, x: np.ndarray, loss: Loss, n_outputs: int, coef_init: Any = None, callback: SolveCallback | None = None
    ) -> None:
        super()._fit_targets(x, loss, n_outputs, coef_init, callback)
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

    There is no ``fit_intercept`` (a token head has no intercept in this formulation). ``X`` is (N, s, d).
    Fitted ``scale_`` holds the scale used. See :mod:`attnduality.convex.estimators.tokens` for the fitted
    attributes and :meth:`to_module`
    (:class:`~attnduality.nn.token_twins.LinearAttentionHead` /
    :class:`~attnduality.nn.token_twins.GatedAttentionHead`).
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
