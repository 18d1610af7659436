"""Property-based fuzzing of every convex estimator exported by :mod:`attnduality.convex`.

Random small shapes, scales from 1e-8 to 1e8, float32/float64, NaN/inf anywhere in ``X`` or ``y``, and labels as
ints, strings or floats. Properties: either a ``ValueError``/``TypeError`` whose message names the offending
argument, or a fit with a finite objective and certificate, a truthful ``status_`` (``converged`` ⇒ relative gap
≤ ``tol``) and finite predictions; where a float64 fit converged, the recovered network (``to_module()``) gives the
convex model's outputs.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning

import attnduality.convex as convex

ESTIMATORS = sorted(n for n in convex.__all__ if n.endswith(("Classifier", "Regressor")))
FLAT = {"ConvexMLPClassifier", "ConvexMLPRegressor", "NuclearNormClassifier", "NuclearNormRegressor"}
STATUSES = {"converged", "max_iter", "max_time", "stalled", "diverged"}
KINDS = {
    "ConvexAttention": ["linear", "gated_relu", "relu"],
    "ConvexMixer": ["linear", "gated_relu"],
    "ConvexFNO": ["linear", "gated_relu"],
    "TokenLasso": ["attention", "gated_fc"],
    "Formulation": ["mixer/gated_relu", "fno/linear", "attention/relu"],  # any registered token formulation
}
EXAMPLES = settings().max_examples  # of the loaded profile (tests/fuzz/conftest.py)


def test_every_estimator_is_fuzzed() -> None:
    assert len(ESTIMATORS) == 14 and {n.replace("Classifier", "").replace("Regressor", "") for n in ESTIMATORS} == {
        "ConvexAttention",
        "ConvexFNO",
        "ConvexMLP",
        "ConvexMixer",
        "Formulation",
        "NuclearNorm",
        "TokenLasso",
    }


@st.composite
def _cases(draw: st.DrawFn, name: str) -> dict[str, object]:
    base = name.replace("Classifier", "").replace("Regressor", "")
    classifier = name.endswith("Classifier")
    kinds = KINDS.get(base, [None]) + (["sequence"] if name == "TokenLassoRegressor" else [])
    return {
        "n": draw(st.integers(2, 12)),
        "s": draw(st.integers(1, 3)),
        "d": draw(st.integers(1, 3)),
        "log_scale": draw(st.integers(-8, 8)),
        "dtype": draw(st.sampled_from(["float32", "float64"])),
        "kind": draw(st.sampled_from(kinds)),
        "beta": draw(st.sampled_from([1e-3, 1e-1, 10.0])),
        "labels": draw(st.sampled_from(["int", "str", "float-int", "float"] if classifier else ["float", "str"])),
        "n_classes": draw(st.sampled_from([2, 2, 2, 3, 3, 1])),
        "poison": draw(st.sampled_from([None] * 6 + ["X-nan", "X-inf", "y-nan", "y-inf"])),
        "seed": draw(st.integers(0, 2**16)),
    }


def _data(name: str, case: dict) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(case["seed"])
    n, s, d = case["n"], case["s"], case["d"]
    x = rng.standard_normal((n, d) if name in FLAT else (n, s, d)) * 10.0 ** case["log_scale"]
    labels = case["labels"]
    if name.endswith("Regressor"):
        shape = (n, s) if case["kind"] == "sequence" else (n,)  # sequence outputs: one target per token
        y: np.ndarray = rng.standard_normal(shape) if labels == "float" else np.full(shape, "v1")
    else:
        codes = np.arange(n) % case["n_classes"]
        rng.shuffle(codes)
        y = {
            "int": codes,
            "str": np.array(["cat", "dog", "emu"])[codes],
            "float-int": codes.astype(np.float64),
            "float": codes + 0.5 * rng.random(n) + 0.25,
        }[labels]
    poison = case["poison"]
    if poison is not None:
        value = math.nan if poison.endswith("nan") else math.inf
        if poison.startswith("X"):
            x.flat[rng.integers(x.size)] = value
        else:
            y = y.astype(np.float64) if y.dtype.kind in "iuf" else y.astype(object)
            y[rng.integers(n)] = value
    return x, y


def _expected_errors(name: str, case: dict, y: np.ndarray) -> set[str]:
    """The arguments a ValueError may name (any one of the problems present); empty when the fit must succeed."""
    out = set()
    poison = case["poison"]
    if poison is not None:
        out.add(poison[0])
    if name.endswith("Regressor"):
        if case["labels"] == "str":
            out.add("y")
    elif case["labels"] == "float" or len(np.unique(y.astype(str))) < 2:
        out.add("y")
    return out


def _estimator(name: str, case: dict):
    cls = getattr(convex, name)
    params = {"beta": case["beta"], "tol": 1e-6, "max_iter": 150, "dtype": case["dtype"], "random_state": 0}
    accepted = cls().get_params()
    if "n_gates" in accepted:
        params["n_gates"] = 2
    if case["kind"] is not None:
        params["formulation" if "formulation" in accepted else "kind"] = case["kind"]
    return cls(**params)


def _twin_outputs(est, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The recovered network's outputs and the convex model's raw outputs, both (N, c)."""
    module = est.to_module()
    with torch.no_grad():
        twin = module(torch.as_tensor(x, dtype=module_dtype(module))).double().numpy()
    raw = est._decision(x).detach().double().numpy()
    return twin.reshape(len(x), -1), raw.reshape(len(x), -1)


def module_dtype(module: torch.nn.Module) -> torch.dtype:
    return next(iter(module.parameters())).dtype


@pytest.mark.parametrize("name", ESTIMATORS)
@settings(max_examples=3 * EXAMPLES)
@given(data=st.data())
def test_estimators_on_any_input(name: str, data: st.DataObject) -> None:
    case = data.draw(_cases(name))
    x, y = _data(name, case)
    est = _estimator(name, case)
    expected = _expected_errors(name, case, y)
    if expected:
        with pytest.raises((ValueError, TypeError)) as info:
            est.fit(x, y)
        named = {a for a in expected if re.search(rf"\b{a}\b", str(info.value))}
        assert named, f"{type(info.value).__name__} names none of {sorted(expected)}: {info.value}"
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit(x, y)
    status = est.status_
    event(f"{case['dtype']} {status}")
    assert status in STATUSES
    cert = est.certificate_
    assert math.isfinite(est.objective_) and math.isfinite(cert.rel_gap) and cert.rel_gap >= 0
    assert est.objective_ == cert.primal
    if status == "converged":
        assert cert.rel_gap <= est.tol
    else:
        warned = [str(w.message) for w in caught if issubclass(w.category, ConvergenceWarning)]
        assert len(warned) == 1 and status in warned[0]
    out = est.predict(x)
    assert len(out) == len(x)
    if name.endswith("Regressor"):
        assert np.isfinite(out).all()
    else:
        assert set(np.unique(out)) <= set(np.unique(y))
        assert np.isfinite(est.decision_function(x)).all()
    if status == "converged" and case["dtype"] == "float64" and hasattr(est, "to_module"):
        twin, raw = _twin_outputs(est, x)
        scale = max(np.abs(raw).max(), 1e-300)
        np.testing.assert_allclose(twin, raw, rtol=1e-6, atol=1e-8 * scale)
