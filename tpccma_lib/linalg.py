"""Small dense linear algebra that several ideas share, written once.

* :func:`sym_power` — ``(S + shrinkage I)^p`` of a symmetric PSD (D, D) matrix through ``eigh``;
* :func:`bures_distance_sq` — squared Bures distance of two covariances (the distribution gap);
* :func:`gaussian_ot_map` — the optimal-transport map between two centred Gaussians;
* :func:`percent_change` — ``100 (new / base - 1)``, NaN when the base is not positive.

All in float64 numpy; inputs are assumed finite and symmetric up to rounding (callers validate
and name their own inputs; these raise :class:`SingularMatrixError` where a negative power meets
a singular matrix, and callers turn it into their own error with advice).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "SingularMatrixError",
    "sym_power",
    "bures_distance_sq",
    "gaussian_ot_map",
    "percent_change",
]


class SingularMatrixError(ValueError):
    """A negative matrix power of a singular (or numerically singular) matrix."""


def sym_power(matrix: np.ndarray, power: float, shrinkage: float = 0.0) -> np.ndarray:
    """``(matrix + shrinkage I)^power`` of a symmetric PSD (D, D) matrix, through ``eigh``.

    The matrix is symmetrised first; eigenvalues below 0 (rounding) are clipped to 0. A negative
    power needs every eigenvalue above ``1e-12`` times the largest, else
    :class:`SingularMatrixError` (its message gives the smallest eigenvalue).
    """
    eigenvalues, eigenvectors = np.linalg.eigh(0.5 * (matrix + matrix.T))
    eigenvalues = eigenvalues + shrinkage
    if power < 0 and eigenvalues.min() <= 1e-12 * max(eigenvalues.max(), 1e-300):
        raise SingularMatrixError(
            f"matrix is singular (smallest eigenvalue {eigenvalues.min():.3g}); a negative "
            "power needs a full-rank matrix."
        )
    return (eigenvectors * np.clip(eigenvalues, 0.0, None) ** power) @ eigenvectors.T


def bures_distance_sq(
    cov_x: np.ndarray, cov_y: np.ndarray, root_x: np.ndarray | None = None
) -> float:
    """Squared Bures distance ``tr S_x + tr S_y - 2 tr (S_x^{1/2} S_y S_x^{1/2})^{1/2}`` (>= 0).

    ``root_x``: ``S_x^{1/2}`` when the caller has it already (it reuses it across calls).
    The squared 2-Wasserstein distance between N(0, S_x) and N(0, S_y).
    """
    root_x = sym_power(cov_x, 0.5) if root_x is None else root_x
    middle = root_x @ cov_y @ root_x
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(0.5 * (middle + middle.T)), 0.0, None)).sum()
    return max(float(np.trace(cov_x) + np.trace(cov_y) - 2.0 * cross), 0.0)


def gaussian_ot_map(cov_from: np.ndarray, cov_to: np.ndarray) -> np.ndarray:
    """The symmetric PSD map ``T`` with ``T C_from T = C_to``: ``z -> T z`` sends N(0, C_from)
    to N(0, C_to) at the least mean squared displacement (Gaussian optimal transport).

    ``T = C_to^{1/2} (C_to^{1/2} C_from C_to^{1/2})^{-1/2} C_to^{1/2}``; (D, D) in, (D, D) out.
    Needs ``C_to^{1/2} C_from C_to^{1/2}`` of full rank (:class:`SingularMatrixError`).
    """
    root_to = sym_power(np.asarray(cov_to, np.float64), 0.5)
    middle = root_to @ np.asarray(cov_from, np.float64) @ root_to
    return root_to @ sym_power(middle, -0.5) @ root_to


def percent_change(value: float, base: float) -> float:
    """``100 (value / base - 1)``: -66.6 means "cut by 66.6 %"; NaN when ``base <= 0``."""
    return 100.0 * (value / base - 1.0) if base > 0 else math.nan
