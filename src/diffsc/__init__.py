"""diffsc: differentiable sparse coding (Bradley & Bagnell, NIPS 2008)."""

from .coding import ConvergenceError, ConvergenceWarning, sparse_code, sparse_code_with_info
from .families import FAMILIES, Family, get_family
from .implicit import pullback
from .priors import PRIORS, Prior, get_prior
from .problem import Problem
from .solvers import SOLVERS, SolveResult, solve

__version__ = "0.1.0"

__all__ = [
    "FAMILIES",
    "PRIORS",
    "SOLVERS",
    "ConvergenceError",
    "ConvergenceWarning",
    "Family",
    "Prior",
    "Problem",
    "SolveResult",
    "get_family",
    "get_prior",
    "pullback",
    "solve",
    "sparse_code",
    "sparse_code_with_info",
    "__version__",
]
