"""Which gap metric predicts task quality? R² tables, Pareto fronts, relative changes.

The paper's central analysis regresses each task metric (zero-shot accuracy, clustering ARI,
CIDEr, ...) on each gap metric (raw gap, centroid gap, distribution gap) over many models
(an alpha sweep, post-hoc fixes) and compares the R² of the simple linear fits
(distribution gap 0.986 vs raw gap 0.691 in the paper). The inputs here are *wide* tables:
one row per evaluated configuration, one column per metric
(:func:`~tpccma_lib.evaluation.records.metrics_wide` builds one from result rows).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "AnalysisError",
    "linear_fit",
    "pareto_front",
    "r2_table",
    "r_squared",
    "relative_change",
]


class AnalysisError(ValueError):
    """Raised for data the analysis cannot use; the message says the fix."""


def linear_fit(x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Least-squares line ``y ~ slope * x + intercept`` and its R².

    Args:
        x, y: (n,) paired observations, n >= 3, finite, ``x`` not constant.

    Returns:
        ``{"slope", "intercept", "r2", "r", "n"}`` with ``r`` Pearson's correlation and
        ``r2 = 1 - SS_res / SS_tot = r^2``; ``r2`` and ``r`` are NaN when ``y`` is constant
        (nothing to explain).
    """
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.shape != y.shape:
        raise AnalysisError(f"x and y must have the same length; got {x.size} and {y.size}.")
    if x.size < 3:
        raise AnalysisError(
            f"a line through {x.size} point(s) fits trivially; R² needs at least 3 points "
            "(evaluate more models, seeds or alphas)."
        )
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise AnalysisError("x and y must be finite; drop the NaN/inf rows first.")
    dx, dy = x - x.mean(), y - y.mean()
    sxx, syy, sxy = float(dx @ dx), float(dy @ dy), float(dx @ dy)
    if sxx == 0.0:
        raise AnalysisError("x is constant: a regression on it is undefined; vary the gap metric.")
    slope = sxy / sxx
    r = sxy / np.sqrt(sxx * syy) if syy > 0 else float("nan")
    return {
        "slope": slope,
        "intercept": float(y.mean() - slope * x.mean()),
        "r2": float(r * r),
        "r": float(r),
        "n": int(x.size),
    }


def r_squared(x: np.ndarray, y: np.ndarray) -> float:
    """R² of the simple linear regression of ``y`` on ``x`` (= squared Pearson correlation)."""
    return linear_fit(x, y)["r2"]


def r2_table(
    df: pd.DataFrame, task_metrics: Sequence[str], gap_metrics: Sequence[str]
) -> pd.DataFrame:
    """Regress every task metric on every gap metric.

    Args:
        df: wide table, one row per configuration.
        task_metrics: columns to explain (y).
        gap_metrics: columns to explain them with (x).

    Returns:
        DataFrame with one row per (task_metric, gap_metric): ``r2``, ``r``, ``slope``,
        ``intercept``, ``n`` (rows where both are finite; other rows are dropped per pair).
    """
    missing = [c for c in [*task_metrics, *gap_metrics] if c not in df.columns]
    if missing:
        raise AnalysisError(f"columns {missing} not in the table; it has {list(df.columns)}.")
    records = []
    for task in task_metrics:
        for gap in gap_metrics:
            pair = df[[gap, task]].apply(pd.to_numeric, errors="coerce")
            pair = pair[np.isfinite(pair).all(axis=1)]
            fit = linear_fit(pair[gap].to_numpy(), pair[task].to_numpy())
            records.append({"task_metric": task, "gap_metric": gap, **fit})
    columns = ["task_metric", "gap_metric", "r2", "r", "slope", "intercept", "n"]
    return pd.DataFrame.from_records(records, columns=columns)


def pareto_front(
    df: pd.DataFrame, x: str, y: str, minimize_x: bool = True, maximize_y: bool = True
) -> np.ndarray:
    """Non-dominated rows of a trade-off (e.g. x = remaining gap, y = zero-shot accuracy).

    Point ``i`` is dominated when some ``j`` is at least as good in both coordinates and
    strictly better in one ("good" = small x when ``minimize_x``, large y when ``maximize_y``).
    Identical points do not dominate each other; rows with NaN are never on the front.

    Returns:
        (len(df),) bool mask, True on the Pareto front.
    """
    xs = pd.to_numeric(df[x], errors="coerce").to_numpy(dtype=np.float64)
    ys = pd.to_numeric(df[y], errors="coerce").to_numpy(dtype=np.float64)
    gx = -xs if minimize_x else xs  # larger = better in both from here on
    gy = ys if maximize_y else -ys
    valid = np.isfinite(gx) & np.isfinite(gy)
    front = valid.copy()
    for i in np.flatnonzero(valid):
        others = valid.copy()
        others[i] = False
        no_worse = (gx >= gx[i]) & (gy >= gy[i])
        better = (gx > gx[i]) | (gy > gy[i])
        if (others & no_worse & better).any():
            front[i] = False
    return front


def relative_change(base: float | np.ndarray, new: float | np.ndarray) -> float | np.ndarray:
    """``(new - base) / |base|``: +0.571 = "+57.1 %", -0.666 = "cut by 66.6 %".

    Works element-wise on arrays. A zero ``base`` is an error (the change is undefined).
    """
    base_arr = np.asarray(base, dtype=np.float64)
    new_arr = np.asarray(new, dtype=np.float64)
    if (base_arr == 0).any():
        raise AnalysisError("relative_change: base is 0, so a relative change is undefined.")
    change = (new_arr - base_arr) / np.abs(base_arr)
    return float(change) if change.ndim == 0 else change
