"""Convex programs for attention-style heads: losses, penalties, operators, solvers and estimators.

Objective convention everywhere: ``(1/N) Σ_i L(f(x_i), y_i) + β · penalty``.
"""

from .arrangements import gate_masks, sample_gates, unique_gates
from .certificates import Certificate, duality_gap
from .estimators import (
    ConvexAttentionClassifier,
    ConvexAttentionRegressor,
    ConvexFNOClassifier,
    ConvexFNORegressor,
    ConvexMixerClassifier,
    ConvexMixerRegressor,
    ConvexMLPClassifier,
    ConvexMLPRegressor,
    FormulationClassifier,
    FormulationRegressor,
    NuclearNormClassifier,
    NuclearNormRegressor,
    TokenLassoClassifier,
    TokenLassoRegressor,
    TokenPath,
    check_formulation,
    make_estimator,
)
from .formulations import Formulation, formulation_names, get_formulation, register_formulation
from .losses import CrossEntropyLoss, LogisticLoss, Loss, SquaredLoss, get_loss
from .operators import (
    DenseOperator,
    GatedMLPOperator,
    GatedTokenOperator,
    LinearOperator,
    ReLUMLPOperator,
    RowStochasticCone,
    SequenceOperator,
    TokenOperator,
)
from .penalties import BlockNuclearNorm, ConeGroupL2, GroupL2, L1Norm, NuclearNorm, Penalty, get_penalty
from .problem import CompositeProblem
from .recovery import gated_mlp_to_module, linear_to_module, regularized_objective, relu_mlp_to_module
from .solvers import FISTA, AutoSolver, FactoredSolver, SemismoothNewton, SolveResult, beta_max, solve_path

__all__ = [
    "AutoSolver",
    "BlockNuclearNorm",
    "Certificate",
    "CompositeProblem",
    "ConeGroupL2",
    "ConvexAttentionClassifier",
    "ConvexAttentionRegressor",
    "ConvexFNOClassifier",
    "ConvexFNORegressor",
    "ConvexMLPClassifier",
    "ConvexMLPRegressor",
    "ConvexMixerClassifier",
    "ConvexMixerRegressor",
    "CrossEntropyLoss",
    "DenseOperator",
    "FISTA",
    "FormulationClassifier",
    "FormulationRegressor",
    "FactoredSolver",
    "Formulation",
    "GatedMLPOperator",
    "GatedTokenOperator",
    "GroupL2",
    "L1Norm",
    "LinearOperator",
    "LogisticLoss",
    "Loss",
    "NuclearNorm",
    "NuclearNormClassifier",
    "NuclearNormRegressor",
    "Penalty",
    "ReLUMLPOperator",
    "RowStochasticCone",
    "SemismoothNewton",
    "SequenceOperator",
    "SolveResult",
    "SquaredLoss",
    "TokenLassoClassifier",
    "TokenLassoRegressor",
    "TokenOperator",
    "TokenPath",
    "beta_max",
    "check_formulation",
    "duality_gap",
    "formulation_names",
    "gate_masks",
    "gated_mlp_to_module",
    "get_formulation",
    "get_loss",
    "get_penalty",
    "linear_to_module",
    "make_estimator",
    "register_formulation",
    "regularized_objective",
    "relu_mlp_to_module",
    "sample_gates",
    "solve_path",
    "unique_gates",
]
