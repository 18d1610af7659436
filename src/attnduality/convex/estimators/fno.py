"""Convex (B-)FNO heads with token mean pooling (Sahiner et al. 2022, §4.2): linear (Thm 4.4/4.7) and gated ReLU
(Thm 4.5/4.8), ``blocks`` = B. The shared machinery and the fitted attributes are described in
:mod:`attnduality.convex.estimators.tokens`."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..formulations import Formulation
from .base import ClassifierTask, RegressorTask
from .tokens import TokenHead

__all__ = ["ConvexFNOClassifier", "ConvexFNORegressor"]


class _FNOHead(TokenHead):
    """(B-)FNO heads (:class:`~attnduality.convex.formulations.FNOFormulation`)."""

    _family = "fno"
    _relu_unavailable = "FNO head, Sahiner et al. Thm 4.5/4.8"

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
    :mod:`attnduality.convex.estimators.tokens` for the other fitted attributes and :meth:`to_module`
    (:class:`~attnduality.nn.token_twins.LinearFNOHead` / :class:`~attnduality.nn.token_twins.GatedFNOHead`).
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
