"""scikit-learn's estimator checks on every estimator (small and fast settings)."""

from __future__ import annotations

import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks

from attnduality.convex import ConvexMLPClassifier, ConvexMLPRegressor, NuclearNormClassifier, NuclearNormRegressor

FAST = dict(tol=1e-5, max_iter=2000)

ESTIMATORS = [
    ConvexMLPRegressor(n_gates=20, random_state=0, **FAST),
    ConvexMLPClassifier(n_gates=20, random_state=0, **FAST),
    NuclearNormClassifier(**FAST),
    NuclearNormRegressor(**FAST),
]


# With β = 1e-3 and max_iter = 2000 (kept small for speed) several checks' unscaled data sets stop at max_iter; the
# checks are about the API, not about convergence, which test_solvers.py and test_cvxpy_agreement.py cover.
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks(ESTIMATORS)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
