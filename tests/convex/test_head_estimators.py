"""The convex token-head estimators (self-attention, MLP-Mixer, (B-)FNO; linear and gated ReLU).

* every estimator × kind (and B-FNO) converges on a tiny problem with a certified relative gap ≤ tol;
* the certified objective equals an independent cvxpy program whose linear map is built with explicit loops from the
  theorems' definitions (the builders of ``test_attention_operators.py``), for a regressor and a classifier of each
  family;
* ``to_module()`` twins reproduce the predictions (on training and on fresh data) and the regularised objective;
* bad inputs and parameters raise ``ValueError`` with a clear message; use before fit raises ``NotFittedError``.
"""

from __future__ import annotations

import functools
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from test_attention_operators import attention_map, cvx_solve, fno_map, mixer_map

from attnduality.convex import (
    ConvexAttentionClassifier,
    ConvexAttentionRegressor,
    ConvexFNOClassifier,
    ConvexFNORegressor,
    ConvexMixerClassifier,
    ConvexMixerRegressor,
    CrossEntropyLoss,
    SquaredLoss,
    regularized_objective,
)
from attnduality.convex.recovery_attention import (
    attention_factors,
    cone_shift,
    cone_split,
    relu_attention_from_gated,
)
from attnduality.nn.token_twins import GatedAttentionHead, GatedFNOHead, LinearMixerHead, ReLUAttentionHead

N, S = 20, 4
TOL = 1e-8
FAST = dict(beta=1e-2, tol=TOL, n_gates=3, random_state=0)


def _data(d: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed + 10 * d).standard_normal((N, S, d))


Y_REG = np.random.default_rng(1).standard_normal((N, 2))
Y_CLF3 = np.array(["a", "b", "c", "b"] * 5)
Y_CLF2 = np.array([0, 1] * 10)

# id: (estimator class, parameters, d, targets, compare with cvxpy)
CASES = {
    "attn-reg-linear": (ConvexAttentionRegressor, dict(kind="linear"), 2, Y_REG[:, 0], True),
    "attn-reg-gated": (ConvexAttentionRegressor, dict(kind="gated_relu"), 2, Y_REG, False),
    "attn-clf-linear": (ConvexAttentionClassifier, dict(kind="linear"), 2, Y_CLF2, False),
    "attn-clf-gated": (ConvexAttentionClassifier, dict(kind="gated_relu", scale=0.5), 3, Y_CLF3, True),
    "mixer-reg-linear": (ConvexMixerRegressor, dict(kind="linear"), 3, Y_REG, False),
    "mixer-reg-gated": (ConvexMixerRegressor, dict(kind="gated_relu"), 3, Y_REG, True),
    "mixer-clf-linear": (ConvexMixerClassifier, dict(kind="linear"), 3, Y_CLF3, True),
    "mixer-clf-gated": (ConvexMixerClassifier, dict(kind="gated_relu"), 3, Y_CLF3, False),
    "fno-reg-linear": (ConvexFNORegressor, dict(kind="linear"), 3, Y_REG, False),
    "fno-reg-gated": (ConvexFNORegressor, dict(kind="gated_relu"), 3, Y_REG, True),
    "fno-clf-linear": (ConvexFNOClassifier, dict(kind="linear"), 3, Y_CLF3, True),
    "fno-clf-gated": (ConvexFNOClassifier, dict(kind="gated_relu"), 3, Y_CLF3, False),
    "bfno-reg-linear": (ConvexFNORegressor, dict(kind="linear", blocks=2), 2, Y_REG, False),
    "bfno-reg-gated": (ConvexFNORegressor, dict(kind="gated_relu", blocks=2), 2, Y_REG, True),
    "bfno-clf-linear": (ConvexFNOClassifier, dict(kind="linear", blocks=2, grid=(2, 2)), 2, Y_CLF2, False),
    "bfno-clf-gated": (ConvexFNOClassifier, dict(kind="gated_relu", blocks=2, grid=(2, 2)), 2, Y_CLF2, True),
}
IDS = list(CASES)
CVX_IDS = [k for k, v in CASES.items() if v[4]]
ESTIMATORS = [ConvexAttentionRegressor, ConvexAttentionClassifier, ConvexMixerRegressor, ConvexMixerClassifier]
ESTIMATORS += [ConvexFNORegressor, ConvexFNOClassifier]


@functools.cache
def _fitted(case: str):
    cls, params, d, y, _ = CASES[case]
    return cls(**FAST, **params).fit(_data(d), y)


def _is_regressor(est) -> bool:
    return "Regressor" in type(est).__name__


def _loss(est, y):
    if _is_regressor(est):
        return SquaredLoss(torch.tensor(y.reshape(len(y), -1), dtype=torch.float64))
    return CrossEntropyLoss(torch.as_tensor(np.searchsorted(est.classes_, y)))


def _scores(est, x: np.ndarray) -> np.ndarray:
    return est.predict(x) if _is_regressor(est) else est.decision_function(x)


def _twin_scores(est, module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = module(torch.tensor(x)).numpy()
    if _is_regressor(est):
        return out[:, 0] if est._y_ndim == 1 else out
    return out[:, 1] - out[:, 0] if out.shape[1] == 2 else out


# ----------------------------------------------------------------------------------------------------------------
# Fits: convergence, twins, cvxpy
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", IDS)
def test_fit_converges_and_twin_matches(case):
    cls, params, d, y, _ = CASES[case]
    est = _fitted(case)
    x = _data(d)
    assert est.status_ == "converged" and est.certificate_.rel_gap <= est.tol
    assert est.n_iter_ >= 1 and est.history_.n_iter[-1] == est.n_iter_
    assert est.objective_ == pytest.approx(est.certificate_.primal, rel=1e-12)
    assert est.n_features_in_ == d and est.n_tokens_in_ == S
    assert np.isfinite(est.coef_).all() and np.abs(est.coef_).max() > 0
    if params["kind"] == "linear":
        assert est.gates_ is None
    else:
        assert est.gates_.ndim == (4 if cls in (ConvexFNORegressor, ConvexFNOClassifier) else 3)
        assert est.gates_.shape[1 if est.gates_.ndim == 4 else 0] <= FAST["n_gates"]
    if "blocks" in params:
        assert est.blocks_ == 2 and est.coef_.shape[0] == 2
        assert est.grid_ == params.get("grid", (S,))

    module = est.to_module()
    assert all(p.dtype == torch.float64 for p in module.parameters())
    x_new = _data(d, seed=5)
    for xx in (x, x_new):  # test-time masks are recomputed from the stored gates
        ref = _scores(est, xx)
        np.testing.assert_allclose(_twin_scores(est, module, xx), ref, rtol=1e-8, atol=1e-8 * np.abs(ref).max())
    with torch.no_grad():
        twin_obj = float(regularized_objective(module, _loss(est, y), torch.tensor(x), est.beta))
    assert twin_obj == pytest.approx(est.objective_, rel=1e-8)
    if not _is_regressor(est):
        assert est.predict(x).shape == (N,) and set(est.predict(x)) <= set(est.classes_)
        np.testing.assert_allclose(est.predict_proba(x).sum(1), 1.0, rtol=1e-12)
    else:
        assert est.predict(x).shape == y.shape


@pytest.mark.parametrize(
    "case", ["attn-clf-gated", "attn-reg-linear", "mixer-reg-gated", "fno-clf-gated", "bfno-reg-gated"]
)
def test_adam_on_the_twin_never_beats_the_certified_optimum(case):
    """From random starts (the twin of the solution, re-initialised), Adam's regularised objective on the twin never
    drops below the certificate's dual lower bound (it would, were the convex program not the global optimum)."""
    _, _, d, y, _ = CASES[case]
    est = _fitted(case)
    x = torch.tensor(_data(d))
    loss = _loss(est, y)
    lower = est.certificate_.dual
    best = np.inf
    for seed in range(3):
        twin = est.to_module()
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in twin.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        opt = torch.optim.Adam(twin.parameters(), lr=0.02)
        for _ in range(150):
            opt.zero_grad()
            obj = regularized_objective(twin, loss, x, est.beta)
            assert obj.item() >= lower * (1 - 1e-9)
            obj.backward()
            opt.step()
        best = min(best, obj.item())
    assert best >= lower * (1 - 1e-9) and lower <= est.objective_


def _explicit_map(est, x: np.ndarray, c: int) -> np.ndarray:
    gates = est.gates_
    if isinstance(est, (ConvexAttentionRegressor, ConvexAttentionClassifier)):
        return est.scale * attention_map(x, gates, c)
    if isinstance(est, (ConvexMixerRegressor, ConvexMixerClassifier)):
        return mixer_map(x, gates, c)
    return fno_map(x, gates, c, est.blocks_, est.grid_ if len(est.grid_) == 2 else None)


@pytest.mark.parametrize("case", CVX_IDS)
def test_objective_matches_cvxpy(case):
    _, _, d, y, _ = CASES[case]
    est = _fitted(case)
    x = _data(d)
    if _is_regressor(est):
        y_cvx = y.reshape(N, -1)
        c = y_cvx.shape[1]
    else:
        y_cvx = np.searchsorted(est.classes_, y)
        c = len(est.classes_)
    op = SimpleNamespace(n_samples=N, n_outputs=c, z_shape=est.coef_.shape)
    loss = "squared" if _is_regressor(est) else "cross_entropy"
    p_cvx, _ = cvx_solve(_explicit_map(est, x, c), op, y_cvx, loss, est.beta)
    assert est.objective_ == pytest.approx(p_cvx, rel=1e-5)
    assert est.certificate_.dual <= p_cvx + 1e-7 * abs(p_cvx)


@pytest.mark.parametrize("case", IDS)
def test_fista_and_newton_reach_the_same_certified_optimum(case):
    """Every head family: FISTA and Newton agree (the default "auto", checked against cvxpy above, is FISTA then
    Newton when FISTA has not certified in 300 iterations)."""
    cls, params, d, y, _ = CASES[case]
    newton = cls(**FAST, **params, solver="newton").fit(_data(d), y)
    fista = cls(**FAST, **params, solver="fista", max_iter=50_000).fit(_data(d), y)
    assert fista.status_ == "converged" and newton.status_ == "converged"
    assert fista.objective_ == pytest.approx(newton.objective_, rel=1e-7)
    assert newton.certificate_.dual <= fista.objective_ * (1 + 1e-12)
    assert fista.certificate_.dual <= newton.objective_ * (1 + 1e-12)


def test_attention_scale_is_explicit():
    """``scale = a`` with β equals ``scale = 1`` with β/a (positive homogeneity); nothing else rescales the data."""
    x, y = _data(2), Y_REG
    a = ConvexAttentionRegressor(kind="linear", scale=0.5, beta=2e-2, tol=TOL).fit(x, y)
    b = ConvexAttentionRegressor(kind="linear", scale=1.0, beta=4e-2, tol=TOL).fit(x, y)
    assert a.objective_ == pytest.approx(b.objective_, rel=1e-6)
    np.testing.assert_allclose(a.predict(x), b.predict(x), rtol=1e-4, atol=1e-6)
    assert a.scale_ == 0.5 and a.to_module().scale == 0.5
    pred = a.predict(x)
    a.set_params(scale=3.0)  # the fitted model keeps the scale it was fitted with
    np.testing.assert_array_equal(a.predict(x), pred)
    assert a.to_module().scale == 0.5


def test_gates_explicit_deduplicated_and_dtype_independent():
    x, y = _data(3), Y_REG
    base = _fitted("mixer-reg-gated")
    again = ConvexMixerRegressor(gates=base.gates_, beta=FAST["beta"], tol=TOL).fit(x, y)
    np.testing.assert_array_equal(again.gates_, base.gates_)
    np.testing.assert_allclose(again.coef_, base.coef_, rtol=0, atol=1e-12)
    # positive multiples give identical masks: one block is kept
    u = np.random.default_rng(3).standard_normal((3, 3))
    dup = ConvexAttentionClassifier(gates=np.stack([u, 2 * u, u]), beta=0.1, tol=1e-6).fit(x, Y_CLF3)
    np.testing.assert_array_equal(dup.gates_, u[None])
    assert isinstance(dup.to_module(), GatedAttentionHead)
    # gates are sampled in float64 and cast, so float32 fits use the same gates
    f32 = ConvexFNORegressor(**{**FAST, "tol": 1e-4}, dtype="float32").fit(x, y)
    f64 = ConvexFNORegressor(**{**FAST, "tol": 1e-4}).fit(x, y)
    np.testing.assert_array_equal(f32.gates_, f64.gates_.astype(np.float32))
    assert f32.coef_.dtype == np.float32 and isinstance(f32.to_module(), GatedFNOHead)
    assert next(f32.to_module().parameters()).dtype == torch.float32


def test_linear_mixer_twin_type_and_tags():
    est = _fitted("mixer-clf-linear")
    assert isinstance(est.to_module(), LinearMixerHead)
    tags = est.__sklearn_tags__()
    assert tags.input_tags.three_d_array and not tags.input_tags.two_d_array


# ----------------------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------------------
def _targets(cls):
    return Y_REG if "Regressor" in cls.__name__ else Y_CLF2


def _with(a, idx, value):
    a = np.array(a, dtype=np.float64)
    a[idx] = value
    return a


X2 = _data(2)
BAD_DATA = [
    (
        "2d-X",
        lambda: X2[:, :, 0],
        re.escape("X must be a 3-D array (n_samples, n_tokens, n_features), got shape (20, 4)"),
    ),
    ("4d-X", lambda: X2[..., None], re.escape("X must be a 3-D array (n_samples, n_tokens, n_features), got shape")),
    ("nan-X", lambda: _with(X2, (0, 1, 1), np.nan), "Input X contains NaN"),
    ("inf-X", lambda: _with(X2, (3, 0, 1), np.inf), "Input X contains infinity"),
    ("no-tokens", lambda: X2[:, :0], "X must have at least one token and one feature"),
    ("no-features", lambda: X2[:, :, :0], "X must have at least one token and one feature"),
    ("empty", lambda: X2[:0], r"0 sample\(s\)"),
    ("lengths", lambda: X2[:-1], r"inconsistent numbers of samples: \[19, 20\]"),
]


@pytest.mark.parametrize("make,match", [b[1:] for b in BAD_DATA], ids=[b[0] for b in BAD_DATA])
@pytest.mark.parametrize("cls", ESTIMATORS)
def test_bad_data_raises(cls, make, match):
    with pytest.raises(ValueError, match=match):
        cls(**FAST).fit(make(), _targets(cls))


BAD_PARAMS = [
    ("kind", dict(kind="tanh"), r"kind must be one of \('linear', 'gated_relu'(, 'relu')?\), got 'tanh'"),
    ("beta-negative", dict(beta=-1.0), re.escape("beta must be a finite number > 0, got -1.0")),
    ("beta-zero", dict(beta=0.0), "beta must be > 0"),
    ("n-gates", dict(n_gates=0), "n_gates must be an integer >= 1, got 0"),
    ("dtype", dict(dtype="float16"), "dtype must be one of"),
]


@pytest.mark.parametrize("params,match", [b[1:] for b in BAD_PARAMS], ids=[b[0] for b in BAD_PARAMS])
@pytest.mark.parametrize("cls", ESTIMATORS)
def test_bad_parameters_raise(cls, params, match):
    with pytest.raises(ValueError, match=match):
        cls(**FAST).set_params(**params).fit(X2, _targets(cls))


@pytest.mark.parametrize("cls", [c for c in ESTIMATORS if "Attention" not in c.__name__])
def test_relu_is_attention_only(cls):
    with pytest.raises(ValueError, match="kind='relu' is not available for the .*; use kind='gated_relu'"):
        cls(**FAST).set_params(kind="relu").fit(X2, _targets(cls))


@pytest.mark.parametrize(
    "cls,gates,match",
    [
        (
            ConvexAttentionRegressor,
            np.ones((3, 2, 3)),
            r"shape \(m, 2, 2\), i.e. \(m, d, d\) with d = n_features, with m >= 1 gates; got shape \(3, 2, 3\)",
        ),
        (ConvexAttentionClassifier, np.ones((2, 2)), r"\(m, d, d\) with d = n_features.* got shape \(2, 2\)"),
        (
            ConvexMixerRegressor,
            np.ones((3, 2, 2)),
            r"gates must be an array of shape \(m, 4, 4\), i.e. \(m, s, s\) with s = n_tokens.* \(3, 2, 2\)",
        ),
        (ConvexMixerClassifier, np.ones((0, 4, 4)), r"got shape \(0, 4, 4\)"),
        (
            ConvexFNORegressor,
            np.ones((1, 3, 4, 3)),
            r"gates must be an array of shape \(1, m, 4, 2\), .* got shape \(1, 3, 4, 3\)",
        ),
        (ConvexFNOClassifier, np.ones((3, 4, 2)), r"\(B, m, s, d/B\)"),
    ],
)
def test_wrong_gate_shape_raises(cls, gates, match):
    with pytest.raises(ValueError, match=match):
        cls(**FAST, gates=gates).fit(X2, _targets(cls))
    with pytest.raises(ValueError, match="gates contain NaN or inf"):
        good = {"Attention": (2, 2, 2), "Mixer": (2, 4, 4), "FNO": (1, 2, 4, 2)}
        shape = next(v for k, v in good.items() if k in cls.__name__)
        cls(**FAST, gates=_with(np.ones(shape), (0,) * len(shape), np.inf)).fit(X2, _targets(cls))


def test_family_specific_parameters():
    y = Y_REG
    for bad in (0.0, -1.0, float("nan"), "1"):
        with pytest.raises(ValueError, match="scale must be a finite number > 0"):
            ConvexAttentionRegressor(scale=bad).fit(X2, y)
    with pytest.raises(ValueError, match=re.escape("blocks=3 must divide both the number of features d = 2")):
        ConvexFNORegressor(blocks=3).fit(X2, y)
    with pytest.raises(ValueError, match=re.escape("number of outputs c = 1")):
        ConvexFNOClassifier(blocks=2, loss="logistic").fit(X2, Y_CLF2)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="blocks must be an integer >= 1"):
            ConvexFNORegressor(blocks=bad).fit(X2, y)
    with pytest.raises(ValueError, match=re.escape("grid (3, 2) has 6 tokens but X has n_tokens = 4")):
        ConvexFNORegressor(grid=(3, 2)).fit(X2, y)
    with pytest.raises(ValueError, match="grid must be None or a sequence of positive integers"):
        ConvexFNORegressor(grid=(2.5, 2)).fit(X2, y)
    with pytest.raises(ValueError, match="supports loss='squared' only"):
        ConvexMixerRegressor(loss="cross_entropy").fit(X2, y)


@pytest.mark.parametrize("cls", [c for c in ESTIMATORS if "Classifier" in c.__name__])
def test_one_class_raises(cls):
    with pytest.raises(ValueError, match="y has only one class"):
        cls(**FAST).fit(X2, np.zeros(N))


@pytest.mark.parametrize("case", ["attn-reg-linear", "attn-clf-gated", "mixer-reg-gated", "fno-clf-linear"])
def test_predict_validates_shapes(case):
    est = _fitted(case)
    d = CASES[case][2]
    x = _data(d)
    with pytest.raises(
        ValueError, match=f"X has {d + 1} features per token, but {type(est).__name__} is expecting {d}"
    ):
        est.predict(np.concatenate([x, x[..., :1]], axis=2))
    with pytest.raises(ValueError, match=f"X has 3 tokens, but {type(est).__name__} is expecting 4 tokens"):
        est.predict(x[:, :3])
    with pytest.raises(ValueError, match="X must be a 3-D array"):
        est.predict(x[:, :, 0])
    with pytest.raises(ValueError, match="Input X contains NaN"):
        est.predict(_with(x, (1, 1, 0), np.nan))
    assert _scores(est, x[:3]).shape[0] == 3


@pytest.mark.parametrize("cls", ESTIMATORS)
def test_not_fitted_and_clone(cls):
    est = cls(**FAST)
    with pytest.raises(NotFittedError):
        est.predict(X2)
    with pytest.raises(NotFittedError):
        est.to_module()
    if hasattr(est, "decision_function"):
        with pytest.raises(NotFittedError):
            est.decision_function(X2)
        with pytest.raises(NotFittedError):
            est.predict_proba(X2)
    params = est.get_params()
    assert "fit_intercept" not in params and {"kind", "n_gates", "gates", "beta", "loss", "tol"} <= set(params)
    twin = clone(est)
    assert twin.get_params() == params and twin is not est
    twin.set_params(kind="linear", beta=0.5)
    assert twin.get_params()["kind"] == "linear" and cls(**twin.get_params()).get_params() == twin.get_params()
    fitted = twin.fit(X2, _targets(cls))
    assert not hasattr(clone(fitted), "coef_")


# ----------------------------------------------------------------------------------------------------------------
# ReLU self-attention (Thm 3.3) through the gated program and a cone decomposition
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls,y", [(ConvexAttentionClassifier, Y_CLF3), (ConvexAttentionRegressor, Y_REG)])
def test_relu_attention_reproduces_gated_on_training_tokens(cls, y):
    x = _data(3, seed=5)
    kw = dict(FAST, scale=0.7)
    gated = cls(kind="gated_relu", **kw).fit(x, y)
    relu = cls(kind="relu", **kw).fit(x, y)
    # same certified gated program
    assert relu.status_ == "converged" and relu.certificate_.rel_gap <= TOL
    np.testing.assert_allclose(relu.coef_, gated.coef_, rtol=0, atol=1e-12)
    assert relu.objective_ == pytest.approx(gated.objective_, rel=1e-12)
    # a true ReLU head (no gates): scores are relu(scale · X W1 Xᵀ)
    twin = relu.to_module()
    assert isinstance(twin, ReLUAttentionHead) and not hasattr(twin, "gates")
    xt = torch.as_tensor(x)
    raw = 0.7 * torch.einsum("nta,hak,nuk->nhtu", xt, twin.w1.detach(), xt)
    torch.testing.assert_close(twin.scores(xt).detach(), torch.relu(raw), rtol=0, atol=0)
    # equal outputs on the training tokens, and the predictions use the ReLU head
    twin_out = twin(xt).detach().numpy()
    gated_out = gated.to_module()(xt).detach().numpy()
    np.testing.assert_allclose(twin_out, gated_out, rtol=0, atol=1e-9 * max(1.0, np.abs(gated_out).max()))
    decide = relu.decision_function if cls is ConvexAttentionClassifier else relu.predict
    fresh = _data(3, seed=99)
    np.testing.assert_allclose(decide(fresh), twin(torch.as_tensor(fresh)).detach().numpy(), rtol=0, atol=1e-12)
    # off the training set the ReLU head computes its own masks: a different model from the gated one
    gated_decide = gated.decision_function if cls is ConvexAttentionClassifier else gated.predict
    assert np.abs(decide(fresh) - gated_decide(fresh)).max() > 1e-6
    # the ReLU head's objective: reported exactly, an upper bound on the gated optimum, balanced heads
    if cls is ConvexAttentionClassifier:
        loss = CrossEntropyLoss(torch.as_tensor(np.searchsorted(relu.classes_, y)))
    else:
        loss = SquaredLoss(torch.as_tensor(y))
    with torch.no_grad():
        obj = float(regularized_objective(twin, loss, xt, FAST["beta"]))
    assert obj == pytest.approx(relu.relu_objective_, rel=1e-10)
    assert relu.relu_objective_ >= relu.objective_ * (1 - 1e-12)
    n1 = torch.linalg.vector_norm(twin.w1.detach().flatten(1), dim=1)
    n2 = torch.linalg.vector_norm(twin.w2.detach().flatten(1), dim=1)
    torch.testing.assert_close(n1, n2, rtol=1e-10, atol=1e-14)


def test_cone_split_puts_both_parts_in_the_gate_cone():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(15, 4, 3, generator=gen, dtype=torch.float64)
    gate = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    w1 = torch.randn(4, 3, 3, generator=gen, dtype=torch.float64)
    b = cone_split(w1, gate, x)
    sign = torch.where(torch.einsum("nta,ab,nub->ntu", x, gate, x) >= 0, 1.0, -1.0).to(x.dtype)
    for part in (b, w1 + b):
        slack = sign[:, None] * torch.einsum("nta,hab,nub->nhtu", x, part, x)
        assert float(slack.min()) >= -1e-9 * float(slack.abs().max())
    # a head already in the cone needs no split
    assert float(cone_split(gate[None] * 2.0, gate, x).abs().max()) == 0.0
    # minimum norm: no shorter multiple of B is feasible (some constraint is active), and B beats the gate shift
    for i in range(w1.shape[0]):
        slack = sign * torch.einsum("nta,ab,nub->ntu", x, 0.99 * b[i], x)
        need = (-(sign * torch.einsum("nta,ab,nub->ntu", x, w1[i], x))).clamp_min(0)
        assert bool((slack < need - 1e-12).any())
    tau = cone_shift(w1, gate, x)
    assert bool((torch.linalg.vector_norm(b.flatten(1), dim=1) <= tau * torch.linalg.norm(gate) * (1 + 1e-9)).all())


def test_relu_attention_from_gated_validates_shapes():
    z = torch.zeros(2, 4, 6, dtype=torch.float64)
    gates = torch.zeros(2, 2, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"z must be \(m, d², d·c\) with m = 3"):
        relu_attention_from_gated(z, torch.zeros(3, 2, 2, dtype=torch.float64), torch.zeros(5, 3, 2))
    with pytest.raises(ValueError, match=r"x must be \(N, s, d\) with d = 2"):
        relu_attention_from_gated(z, gates, torch.zeros(5, 3, 4))
    empty = relu_attention_from_gated(z, gates, torch.zeros(5, 3, 2, dtype=torch.float64))
    assert empty.n_heads == 0


@pytest.mark.parametrize("case", ["attn-reg-linear", "attn-clf-gated"])
def test_multi_head_factors_q_k_v_w(case):
    """Recovery to per-head Q, K, V, W: ``Σ_h σ(X Q_h K_hᵀ Xᵀ) X V_h W_h`` is the twin's output."""
    _, _, d, _, _ = CASES[case]
    twin = _fitted(case).to_module()
    f = attention_factors(twin.w1.detach(), twin.w2.detach())
    w1, w2 = f.merged()
    torch.testing.assert_close(w1, twin.w1.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(w2, twin.w2.detach(), rtol=1e-10, atol=1e-12)
    assert f.q.shape[-2:] == (d, d) and f.v.shape[-2] == d and f.w.shape[-1] == twin.w2.shape[-1]
    # the balanced split attains the nuclear norm: ½(‖Q‖² + ‖K‖²) = ‖W1‖_* per head
    half = 0.5 * (f.q.square().sum((-2, -1)) + f.k.square().sum((-2, -1)))
    torch.testing.assert_close(half, torch.linalg.matrix_norm(w1, ord="nuc"), rtol=1e-10, atol=1e-12)
    x = torch.tensor(_data(d, seed=3))
    if isinstance(twin, GatedAttentionHead):
        masks = twin.masks(x)  # (N, m, s, s)
        scores = masks.unsqueeze(2) * torch.einsum("nta,jhar,jhkr,nuk->njhtu", x, f.q, f.k, x)
        out = torch.einsum("njhtu,nul,jhlr,jhrb->ntb", twin.scale * scores, x, f.v, f.w).mean(1)
    else:
        scores = torch.einsum("nta,har,hkr,nuk->nhtu", x, f.q, f.k, x)
        out = torch.einsum("nhtu,nul,hlr,hrb->ntb", twin.scale * scores, x, f.v, f.w).mean(1)
    torch.testing.assert_close(out, twin(x).detach(), rtol=1e-9, atol=1e-11)
    with pytest.raises(ValueError, match="expected w1"):
        attention_factors(twin.w1.detach()[..., :1], twin.w2.detach())


@pytest.mark.parametrize("case", ["attn-reg-linear", "attn-clf-gated", "mixer-clf-gated", "fno-reg-gated"])
def test_beta_max_is_the_smallest_beta_with_zero_solution(case):
    cls, params, d, y, _ = CASES[case]
    x = _data(d)
    est = cls(**FAST, **params)
    bmax = est.beta_max(x, y)
    assert bmax > 0 and np.isfinite(bmax)
    with pytest.raises(NotFittedError):  # computed on a clone
        est.predict(x)
    above = clone(est).set_params(beta=1.01 * bmax).fit(x, y)
    assert np.abs(above.coef_).max() == 0.0
    below = clone(est).set_params(beta=0.9 * bmax).fit(x, y)
    assert np.abs(below.coef_).max() > 1e-6


def test_beta_max_for_mlp_and_token_lasso():
    from attnduality.convex import ConvexMLPRegressor, TokenLassoRegressor

    rng = np.random.default_rng(0)
    x2, y2 = rng.standard_normal((30, 3)), rng.standard_normal(30)
    x3, y3 = _data(2), Y_REG[:, 0]
    for est, x, y in [
        (ConvexMLPRegressor(n_gates=8, random_state=0, tol=1e-8), x2, y2),
        (TokenLassoRegressor(tol=1e-8), x3, y3),
    ]:
        bmax = est.beta_max(x, y)
        assert np.abs(clone(est).set_params(beta=1.01 * bmax).fit(x, y).coef_).max() == 0.0
        assert np.abs(clone(est).set_params(beta=0.9 * bmax).fit(x, y).coef_).max() > 1e-6
    with pytest.raises(ValueError, match="beta must be a finite number > 0"):
        ConvexMLPRegressor(beta=-1.0).beta_max(x2, y2)


def test_max_time_stops_with_a_certificate_and_a_warning():
    from sklearn.exceptions import ConvergenceWarning

    cls, params, d, y, _ = CASES["mixer-clf-gated"]
    est = cls(**(FAST | {"tol": 1e-14, "max_time": 1e-3}), **params)
    with pytest.warns(ConvergenceWarning, match="status='max_time'"):
        est.fit(_data(d), y)
    assert est.status_ == "max_time" and est.certificate_.rel_gap > 1e-14
    assert np.isfinite(est.coef_).all() and np.isfinite(est.certificate_.rel_gap)
    for bad in (0.0, -1.0, float("nan"), "1"):
        with pytest.raises(ValueError, match="max_time must be None or a number of seconds > 0"):
            cls(**(FAST | {"max_time": bad}), **params).fit(_data(d), y)


@pytest.mark.parametrize("case", ["attn-clf-gated", "mixer-reg-linear", "bfno-clf-gated"])
@pytest.mark.parametrize("solver", ["fista", "newton"])
def test_coef_init_resumes_a_fit_and_callback_sees_every_check(case, solver):
    """A fit stopped early and restarted from its iterate (``coef_init``) certifies the same optimum as one fit,
    in fewer iterations than from zero; the callback sees the solver's state at every certificate check."""
    cls, params, d, y, _ = CASES[case]
    x = _data(d)
    full = cls(**FAST, **params, solver=solver).fit(x, y)
    seen: list[tuple[int, float]] = []
    saved: list[np.ndarray] = []

    def callback(state, cert):
        seen.append((int(state.n_iter), float(cert.rel_gap)))
        saved.append(state.z.detach().cpu().numpy().copy())

    first = cls(**(FAST | {"tol": 1e-2}), **params, solver=solver).fit(x, y, callback=callback)
    assert seen and seen[-1][1] == pytest.approx(first.certificate_.rel_gap) and seen[-1][1] <= 1e-2
    resumed = cls(**FAST, **params, solver=solver).fit(x, y, coef_init=saved[-1])
    assert resumed.status_ == "converged" and full.status_ == "converged"
    assert resumed.objective_ == pytest.approx(full.objective_, rel=1e-7)
    # Newton solves the squared loss in one outer step whatever the start; FISTA must save iterations
    assert resumed.n_iter_ < full.n_iter_ if solver == "fista" else resumed.n_iter_ <= full.n_iter_
    at_optimum = cls(**FAST, **params, solver=solver).fit(x, y, coef_init=full.coef_)
    assert at_optimum.n_iter_ <= 1 and at_optimum.objective_ == pytest.approx(full.objective_, rel=1e-9)


def test_coef_init_is_checked():
    cls, params, d, y, _ = CASES["attn-clf-gated"]
    x = _data(d)
    shape = _fitted("attn-clf-gated").coef_.shape
    with pytest.raises(ValueError, match=r"coef_init has shape \(2, 2\); this program's variable has shape"):
        cls(**FAST, **params).fit(x, y, coef_init=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="coef_init contains NaN or inf"):
        cls(**FAST, **params).fit(x, y, coef_init=np.full(shape, np.nan))
    with pytest.raises(ValueError, match="coef_init must be an array"):
        cls(**FAST, **params).fit(x, y, coef_init="zeros")
