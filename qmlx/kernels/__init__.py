"""Kernels and kernel ridge regression (float64, blocked): exact (Cholesky) and Nyström/FALKON (CG)."""

from __future__ import annotations

from qmlx.kernels.distances import distance_matrix
from qmlx.kernels.kernels import KERNELS, kernel_from_distances, kernel_matrices, kernel_matrix
from qmlx.kernels.krr import KernelRidge, KernelSolveError, cholesky_solve
from qmlx.kernels.model import KRRModel, is_krr_file, load_krr, save_krr
from qmlx.kernels.nystrom import NystromKernelRidge
from qmlx.kernels.search import (
    GridSearchResult,
    KernelProvider,
    fit_predict,
    fit_predict_subset,
    learning_curve,
    select_hyperparameters,
)

__all__ = [
    "KERNELS",
    "GridSearchResult",
    "KRRModel",
    "KernelProvider",
    "KernelRidge",
    "KernelSolveError",
    "NystromKernelRidge",
    "cholesky_solve",
    "distance_matrix",
    "fit_predict",
    "fit_predict_subset",
    "is_krr_file",
    "kernel_from_distances",
    "kernel_matrices",
    "kernel_matrix",
    "learning_curve",
    "load_krr",
    "save_krr",
    "select_hyperparameters",
]
