"""Input validation of the estimators, unconverged fits, and use before fit."""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning, NotFittedError

from attnduality.convex import ConvexMLPClassifier, ConvexMLPRegressor, NuclearNormClassifier, NuclearNormRegressor

RNG = np.random.default_rng(0)
X = RNG.standard_normal((20, 3))
Y_CLF = np.array([0, 1] * 10)
Y_REG = RNG.standard_normal(20)

ESTIMATORS = [
    ("mlp-reg", ConvexMLPRegressor(n_gates=5, random_state=0), Y_REG),
    ("mlp-clf", ConvexMLPClassifier(n_gates=5, random_state=0), Y_CLF),
    ("nuc-clf", NuclearNormClassifier(), Y_CLF),
    ("nuc-reg", NuclearNormRegressor(), Y_REG),
]
IDS = [e[0] for e in ESTIMATORS]
PARAMS = [e[1:] for e in ESTIMATORS]
CLASSIFIERS = [(e, y) for _, e, y in ESTIMATORS if "Classifier" in type(e).__name__]
MLPS = [(e, y) for _, e, y in ESTIMATORS if "MLP" in type(e).__name__]


def _with(a, idx, value):
    a = np.array(a, dtype=np.float64)
    a[idx] = value
    return a


BAD_DATA = [
    ("nan-X", lambda y: (_with(X, (0, 0), np.nan), y), "Input X contains NaN"),
    ("inf-X", lambda y: (_with(X, (3, 1), np.inf), y), "Input X contains infinity"),
    ("neg-inf-X", lambda y: (_with(X, (3, 1), -np.inf), y), "Input X contains infinity"),
    ("nan-y", lambda y: (X, _with(y, 2, np.nan)), "Input y contains NaN"),
    ("inf-y", lambda y: (X, _with(y, 2, np.inf)), "Input y contains infinity"),
    ("1d-X", lambda y: (X[:, 0], y), "Expected 2D array, got 1D array"),
    ("3d-X", lambda y: (X[:, :, None], y), "Found array with dim 3"),
    ("mismatched-lengths", lambda y: (X, y[:-1]), r"inconsistent numbers of samples: \[20, 19\]"),
    ("empty", lambda y: (X[:0], y[:0]), r"0 sample\(s\)"),
    ("no-features", lambda y: (X[:, :0], y), r"0 feature\(s\)"),
]


@pytest.mark.parametrize("make,match", [b[1:] for b in BAD_DATA], ids=[b[0] for b in BAD_DATA])
@pytest.mark.parametrize("est,y", PARAMS, ids=IDS)
def test_bad_data_raises(est, y, make, match):
    xb, yb = make(y)
    with pytest.raises(ValueError, match=match):
        clone(est).fit(xb, yb)


BAD_PARAMS = [
    ("beta-negative", dict(beta=-1.0), "beta must be a finite number > 0, got -1.0"),
    ("beta-nan", dict(beta=float("nan")), "beta must be a finite number > 0, got nan"),
    ("beta-inf", dict(beta=float("inf")), "beta must be a finite number > 0, got inf"),
    ("beta-string", dict(beta="0.1"), "beta must be a finite number > 0"),
    ("beta-zero", dict(beta=0.0), "beta must be > 0: with beta = 0 there is no duality-gap certificate"),
    ("tol-zero", dict(tol=0.0), "tol must be > 0"),
    ("max-iter-zero", dict(max_iter=0), "max_iter must be an integer >= 1"),
    ("max-iter-float", dict(max_iter=10.5), "max_iter must be an integer >= 1"),
    ("dtype", dict(dtype="float16"), "dtype must be one of"),
    ("loss", dict(loss="hinge"), "hinge"),
]


@pytest.mark.parametrize("params,match", [b[1:] for b in BAD_PARAMS], ids=[b[0] for b in BAD_PARAMS])
@pytest.mark.parametrize("est,y", PARAMS, ids=IDS)
def test_bad_parameters_raise(est, y, params, match):
    with pytest.raises(ValueError, match=re.escape(match) if "(" in match else match):
        clone(est).set_params(**params).fit(X, y)


@pytest.mark.parametrize("est,y", [(e, y) for _, e, y in ESTIMATORS if "Regressor" in type(e).__name__])
def test_regressors_support_squared_loss_only(est, y):
    with pytest.raises(ValueError, match="supports loss='squared' only, got 'cross_entropy'"):
        clone(est).set_params(loss="cross_entropy").fit(X, y)


@pytest.mark.parametrize("est,y", CLASSIFIERS)
def test_classifier_targets(est, y):
    with pytest.raises(ValueError, match="(single|one) class"):
        clone(est).fit(X, np.zeros(20))
    with pytest.raises(ValueError, match="Unknown label type: continuous"):
        clone(est).fit(X, Y_REG)
    with pytest.raises(ValueError, match="loss='logistic' is binary, but y has 3 classes"):
        clone(est).set_params(loss="logistic").fit(X, np.arange(20) % 3)
    with pytest.raises(ValueError, match="loss must be 'cross_entropy', 'logistic' or 'squared', got 'hinge'"):
        clone(est).set_params(loss="hinge").fit(X, y)


@pytest.mark.parametrize("est,y", MLPS)
def test_mlp_gate_validation(est, y):
    def fit(**params):
        return clone(est).set_params(**params).fit(X, y)

    with pytest.raises(ValueError, match=re.escape("gates must be an array of shape (3, m), i.e. (d, P) with d = n_")):
        fit(gates=np.ones((4, 5)))
    with pytest.raises(ValueError, match=re.escape("+ 1 for the intercept, with m >= 1 gates; got shape (3, 5)")):
        fit(gates=np.ones((3, 5)), fit_intercept=True)
    with pytest.raises(ValueError, match=re.escape("got shape (3,)")):
        fit(gates=np.ones(3))
    with pytest.raises(ValueError, match=re.escape("got shape (3, 0)")):
        fit(gates=np.ones((3, 0)))
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(ValueError, match="gates contain NaN or inf"):
            fit(gates=_with(np.ones((3, 4)), (1, 2), bad))
    with pytest.raises(ValueError, match=r"activation must be one of \('gated_relu', 'relu'\), got 'tanh'"):
        fit(activation="tanh")
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match=f"n_gates must be an integer >= 1, got {bad}"):
            fit(n_gates=bad)
    # the intercept column makes (d + 1, P) gates valid
    fitted = fit(gates=RNG.standard_normal((4, 5)), fit_intercept=True)
    assert fitted.gates_.shape[0] == 4


@pytest.mark.parametrize("est,y", PARAMS, ids=IDS)
def test_predict_with_wrong_number_of_features(est, y):
    fitted = clone(est).fit(X, y)
    with pytest.raises(ValueError, match="X has 2 features, but .* is expecting 3 features"):
        fitted.predict(X[:, :2])
    with pytest.raises(ValueError, match="Input X contains NaN"):
        fitted.predict(_with(X, (0, 0), np.nan))


@pytest.mark.parametrize("est,y", PARAMS, ids=IDS)
def test_not_fitted(est, y):
    e = clone(est)
    with pytest.raises(NotFittedError):
        e.predict(X)
    if hasattr(e, "decision_function"):
        with pytest.raises(NotFittedError):
            e.decision_function(X)
        with pytest.raises(NotFittedError):
            e.predict_proba(X)
    if hasattr(e, "to_module"):
        with pytest.raises(NotFittedError):
            e.to_module()


@pytest.mark.parametrize("est,y", PARAMS, ids=IDS)
def test_unconverged_fit_is_reported(est, y):
    # FISTA: the Newton solver certifies the squared loss in one step (its max_iter reporting: test_newton.py)
    e = clone(est).set_params(max_iter=2, tol=1e-10, beta=1e-3, solver="fista")
    with pytest.warns(ConvergenceWarning, match=r"did not converge: status='max_iter', relative duality gap"):
        e.fit(X, y)
    assert e.status_ == "max_iter"
    assert e.n_iter_ == 2
    assert e.certificate_.rel_gap > e.tol
    assert e.history_.n_iter[-1] == 2
    numbers = [e.objective_, e.certificate_.primal, e.certificate_.dual, e.certificate_.gap, e.certificate_.rel_gap]
    assert all(math.isfinite(v) for v in numbers)
    assert np.isfinite(e.coef_).all()
    if "Regressor" in type(e).__name__:
        assert np.isfinite(e.predict(X)).all()
    else:
        assert np.isfinite(e.decision_function(X)).all()
        proba = e.predict_proba(X)
        np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-12)
    # a converged fit raises no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        ok = clone(est).set_params(beta=0.1, tol=1e-6).fit(X, y)
    assert ok.status_ == "converged" and ok.certificate_.rel_gap <= 1e-6


def test_classifier_outputs_and_label_handling():
    y = np.array(["b", "a", "c", "a"] * 5)
    for est in (ConvexMLPClassifier(n_gates=5, random_state=0, beta=0.05), NuclearNormClassifier(beta=0.05)):
        est.fit(X, y)
        np.testing.assert_array_equal(est.classes_, ["a", "b", "c"])
        dec = est.decision_function(X)
        assert dec.shape == (20, 3)
        np.testing.assert_array_equal(est.predict(X), est.classes_[dec.argmax(1)])
        proba = est.predict_proba(X)
        np.testing.assert_allclose(proba, np.exp(dec) / np.exp(dec).sum(1, keepdims=True), rtol=1e-12)
        np.testing.assert_allclose(est.predict_log_proba(X), np.log(proba), rtol=1e-12)
    # logistic: one output, ±1 encoding of the two sorted classes, sigmoid probabilities
    yb = np.array(["no", "yes"])[Y_CLF]
    est = ConvexMLPClassifier(loss="logistic", n_gates=5, random_state=0, beta=0.05).fit(X, yb)
    dec = est.decision_function(X)
    assert dec.shape == (20,) and est.coef_.shape[-1] == 1
    np.testing.assert_array_equal(est.predict(X), np.where(dec > 0, "yes", "no"))
    np.testing.assert_allclose(est.predict_proba(X)[:, 1], 1 / (1 + np.exp(-dec)), rtol=1e-12)
    # squared loss on one-hot targets has no probabilities
    est = ConvexMLPClassifier(loss="squared", n_gates=5, random_state=0).fit(X, Y_CLF)
    assert not hasattr(est, "predict_proba")
    assert est.coef_.shape[-1] == 2


def test_regressor_output_shapes():
    y2 = np.c_[Y_REG, -Y_REG]
    for est in (ConvexMLPRegressor(n_gates=5, random_state=0), NuclearNormRegressor()):
        assert clone(est).fit(X, Y_REG).predict(X).shape == (20,)
        assert clone(est).fit(X, Y_REG[:, None]).predict(X).shape == (20, 1)
        assert clone(est).fit(X, y2).predict(X).shape == (20, 2)


def test_random_state_controls_the_gates():
    a = ConvexMLPRegressor(n_gates=6, random_state=3).fit(X, Y_REG)
    b = ConvexMLPRegressor(n_gates=6, random_state=3).fit(X, Y_REG)
    c = ConvexMLPRegressor(n_gates=6, random_state=4).fit(X, Y_REG)
    np.testing.assert_array_equal(a.gates_, b.gates_)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert a.gates_.shape != c.gates_.shape or not np.array_equal(a.gates_, c.gates_)


@pytest.mark.parametrize("loss", ["cross_entropy", "squared"])
@pytest.mark.parametrize("cls", [ConvexMLPClassifier, NuclearNormClassifier])
def test_binary_decision_function_is_one_dimensional(cls, loss):
    est = cls(loss=loss, beta=0.05).fit(X, Y_CLF)
    dec = est.decision_function(X)
    assert dec.shape == (20,)
    np.testing.assert_array_equal(est.predict(X), est.classes_[(dec > 0).astype(int)])


def test_verbose_prints_the_certificate_as_plain_lines(capsys):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((80, 4))
    y = (X[:, 0] > 0).astype(int)
    est = ConvexMLPClassifier(n_gates=4, beta=1e-2, random_state=0, verbose=1).fit(X, y)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert "\r" not in err
    assert lines[0].startswith("ConvexMLPClassifier: iteration 0, objective ")
    assert "tol 1e-06" in lines[-1]
    last_gap = float(re.search(r"certified gap (\S+) ", lines[-1]).group(1))
    assert last_gap <= 1e-6 and est.status_ == "converged"
    ConvexMLPClassifier(n_gates=4, beta=1e-2, random_state=0).fit(X, y)
    assert capsys.readouterr().err == ""
    with pytest.raises(ValueError, match="verbose"):
        ConvexMLPClassifier(verbose=-1).fit(X, y)


def _all_regressors() -> list[tuple[type, np.ndarray]]:
    """Every regressor exported by attnduality.convex, with inputs of its documented shape."""
    import attnduality.convex as convex

    tokens = RNG.standard_normal((12, 4, 3))
    out = []
    for name in sorted(convex.__all__):
        if name.endswith("Regressor"):
            cls = getattr(convex, name)
            out.append((cls, X if name in ("ConvexMLPRegressor", "NuclearNormRegressor") else tokens))
    return out


REGRESSORS = _all_regressors()


@pytest.mark.parametrize(
    "y",
    [
        np.array(list("abcd") * 3),
        np.array(list("abcd") * 3, dtype=object),
        np.array(["1.5"] * 12),
        [b"x"] * 12,
        np.array([1.0] * 11 + ["a"], dtype=object),
    ],
    ids=["unicode", "object", "numeric-strings", "bytes", "mixed-object"],
)
@pytest.mark.parametrize("cls,x", REGRESSORS, ids=[c.__name__ for c, _ in REGRESSORS])
def test_regressors_refuse_string_targets(cls, x, y):
    assert len(REGRESSORS) == 7  # every regressor of attnduality.convex, FormulationRegressor included
    n = len(y)
    with pytest.raises(ValueError, match=r"^y must hold numbers: .*string targets"):
        cls(max_iter=5).fit(x[:n], y)


@pytest.mark.parametrize("cls,x", REGRESSORS, ids=[c.__name__ for c, _ in REGRESSORS])
def test_regressors_accept_numeric_object_targets(cls, x):
    y = np.array(list(RNG.standard_normal(len(x))), dtype=object)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = cls(max_iter=5).fit(x, y)
    assert np.isfinite(est.predict(x)).all()


def test_token_lasso_names_the_shapes_it_takes():
    from attnduality.convex import TokenLassoClassifier, TokenLassoRegressor

    x4 = RNG.standard_normal((12, 4, 3, 2))
    for est, y in ((TokenLassoRegressor(), RNG.standard_normal(12)), (TokenLassoClassifier(), np.arange(12) % 2)):
        with pytest.raises(
            ValueError, match=re.escape("(n_samples, n_tokens, n_features)") + r".*got dim 4: shape \(12, 4, 3, 2\)"
        ):
            est.fit(x4, y)
        with pytest.raises(ValueError, match="Reshape your data"):
            est.fit(RNG.standard_normal(12), y)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.set_params(max_iter=5).fit(x4[..., 0], y)
        with pytest.raises(ValueError, match=r"got dim 4: shape \(12, 4, 3, 2\)"):
            est.predict(x4)


@pytest.mark.parametrize(
    "y",
    [
        np.array(["a", "b"] * 9 + ["a", np.nan], dtype=object),
        np.array([0.0, 1.0] * 9 + [1.0, np.inf]),
        np.array([0.0, 1.0] * 9 + [1.0, np.nan]),
    ],
    ids=["object-nan", "float-inf", "float-nan"],
)
@pytest.mark.parametrize("est", [e for e, _ in CLASSIFIERS], ids=lambda e: type(e).__name__)
def test_classifiers_name_y_when_labels_are_not_finite(est, y):
    with pytest.raises(ValueError, match=r"^Input y contains (NaN|infinity)"):
        clone(est).fit(X, y)


@pytest.mark.parametrize("est", [e for e, _ in CLASSIFIERS], ids=lambda e: type(e).__name__)
def test_classifiers_name_y_for_continuous_labels(est):
    with pytest.raises(ValueError, match=r"Unknown label type: continuous targets in y; .* needs class labels"):
        clone(est).fit(X, Y_REG)
