"""Convex MLP-Mixer heads with token mean pooling (Sahiner et al. 2022, §4.1): linear (Thm 4.1) and gated ReLU
(Thm 4.2). The shared machinery and the fitted attributes are described in
:mod:`attnduality.convex.estimators.tokens`."""

from __future__ import annotations

import numpy as np

from .base import ClassifierTask, RegressorTask
from .tokens import TokenHead

__all__ = ["ConvexMixerClassifier", "ConvexMixerRegressor"]


class _MixerHead(TokenHead):
    """MLP-Mixer heads (:class:`~attnduality.convex.formulations.MixerFormulation`)."""

    _family = "mixer"
    _relu_unavailable = "MLP-Mixer head, Sahiner et al. Thm 4.2"


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

    There is no ``fit_intercept``. ``X`` is (N, s, d). See :mod:`attnduality.convex.estimators.tokens` for the
    fitted attributes and :meth:`to_module` (:class:`~attnduality.nn.token_twins.LinearMixerHead` /
    :class:`~attnduality.nn.token_twins.GatedMixerHead`).
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
