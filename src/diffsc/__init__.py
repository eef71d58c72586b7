"""diffsc: differentiable sparse coding (Bradley & Bagnell, NIPS 2008)."""

from .coding import ConvergenceError, ConvergenceWarning, sparse_code, sparse_code_with_info
from .estimators import SparseCoding, SparseCodingClassifier
from .families import FAMILIES, Family, get_family
from .implicit import pullback
from .learning import LearningResult, learn_basis
from .module import SparseCodingLayer
from .persistence import ModelFileError, load, save
from .priors import PRIORS, Prior, get_prior
from .problem import Problem
from .solvers import SOLVERS, SolveResult, solve
from .supervised import CodePredictor, TrainingResult, train_predictor

__version__ = "0.1.0"

__all__ = [
    "FAMILIES",
    "PRIORS",
    "SOLVERS",
    "CodePredictor",
    "ConvergenceError",
    "ConvergenceWarning",
    "Family",
    "LearningResult",
    "ModelFileError",
    "Prior",
    "Problem",
    "SolveResult",
    "SparseCoding",
    "SparseCodingClassifier",
    "SparseCodingLayer",
    "TrainingResult",
    "get_family",
    "get_prior",
    "learn_basis",
    "load",
    "pullback",
    "save",
    "solve",
    "sparse_code",
    "sparse_code_with_info",
    "train_predictor",
    "__version__",
]
