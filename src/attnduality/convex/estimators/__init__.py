"""scikit-learn faces of the convex programs: each wires a loss, an operator, a penalty and a solver."""

from typing import Any

from ..formulations import Formulation, get_formulation
from .attention import ConvexAttentionClassifier, ConvexAttentionRegressor
from .base import ClassifierTask, ConvexEstimator, RegressorTask
from .checks import check_formulation
from .fno import ConvexFNOClassifier, ConvexFNORegressor
from .linear import NuclearNormClassifier, NuclearNormRegressor
from .mixer import ConvexMixerClassifier, ConvexMixerRegressor
from .mlp import ConvexMLPClassifier, ConvexMLPRegressor
from .token_lasso import TokenLassoClassifier, TokenLassoRegressor, TokenPath
from .tokens import FormulationClassifier, FormulationRegressor

_FORMULATION_ESTIMATORS: dict[str, tuple[type[ConvexEstimator], type[ConvexEstimator]]] = {
    cls._family: (cls, reg)
    for cls, reg in (
        (NuclearNormClassifier, NuclearNormRegressor),
        (ConvexMLPClassifier, ConvexMLPRegressor),
        (ConvexAttentionClassifier, ConvexAttentionRegressor),
        (ConvexMixerClassifier, ConvexMixerRegressor),
        (ConvexFNOClassifier, ConvexFNORegressor),
        (TokenLassoClassifier, TokenLassoRegressor),
    )
}


def estimator_classes(family: str) -> tuple[type[ConvexEstimator], type[ConvexEstimator]]:
    """The (classifier, regressor) estimator classes of a formulation family."""
    if family not in _FORMULATION_ESTIMATORS:
        raise ValueError(f"no estimator fits the {family!r} heads; choose from {', '.join(_FORMULATION_ESTIMATORS)}")
    return _FORMULATION_ESTIMATORS[family]


def make_estimator(formulation: Formulation | str, task: str = "classifier", **params: Any) -> ConvexEstimator:
    """The estimator of a formulation (an object or a registry name such as ``"fno/gated_relu"``) for ``task``
    (``"classifier"`` or ``"regressor"``), with the other estimator parameters ``params``: the family's own
    estimator, or :class:`FormulationClassifier` / :class:`FormulationRegressor` for a token family without one."""
    form = get_formulation(formulation) if isinstance(formulation, str) else formulation
    if task not in ("classifier", "regressor"):
        raise ValueError(f"task must be 'classifier' or 'regressor', got {task!r}")
    if form.family not in _FORMULATION_ESTIMATORS and form.tokens:  # a token head without its own estimator
        generic = FormulationRegressor if task == "regressor" else FormulationClassifier
        return generic(formulation=form, **params)
    cls = estimator_classes(form.family)[task == "regressor"]
    return cls.from_formulation(form, **params)


__all__ = [
    "ClassifierTask",
    "ConvexAttentionClassifier",
    "ConvexAttentionRegressor",
    "ConvexEstimator",
    "ConvexFNOClassifier",
    "ConvexFNORegressor",
    "ConvexMLPClassifier",
    "ConvexMLPRegressor",
    "ConvexMixerClassifier",
    "ConvexMixerRegressor",
    "FormulationClassifier",
    "FormulationRegressor",
    "NuclearNormClassifier",
    "NuclearNormRegressor",
    "RegressorTask",
    "TokenLassoClassifier",
    "TokenLassoRegressor",
    "TokenPath",
    "check_formulation",
    "estimator_classes",
    "make_estimator",
]
