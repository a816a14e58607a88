"""Which gap metric predicts task quality? R² tables, Pareto fronts, relative changes.

The paper's central analysis regresses each task metric (zero-shot accuracy, clustering ARI,
CIDEr, ...) on each gap metric (raw gap, centroid gap, distribution gap) over many models
(an alpha sweep, post-hoc fixes) and compares the R² of the simple linear fits
(distribution gap 0.986 vs raw gap 0.691 in the paper). The inputs here are *wide* tables:
one row per evaluated configuration, one column per metric
(:func:`~tpccma_lib.evaluation.records.metrics_wide` builds one from result rows).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "AnalysisError",
    "BootstrapInterval",
    "bootstrap_r2",
    "bootstrap_r2_difference",
    "bootstrap_r2_table",
    "linear_fit",
    "pareto_front",
    "r2_difference_verdict",
    "r2_study_section",
    "r2_study_table",
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


# ---------------------------------------------------------------- bootstrap R²
@dataclass(frozen=True)
class BootstrapInterval:
    """A statistic on all points and its percentile bootstrap interval.

    ``estimate`` is the statistic on the ``n_points`` points as given; ``low`` and ``high`` are
    the ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles of it over the ``n_valid`` of
    ``n_boot`` resamples on which it is defined (a resample that repeats a single x or a single
    y value has no R²; both bounds are NaN when no resample has one).
    """

    estimate: float
    low: float
    high: float
    level: float
    n_points: int
    n_boot: int
    n_valid: int

    def excludes(self, value: float = 0.0) -> bool:
        """True when ``value`` lies outside ``[low, high]`` (False for NaN bounds)."""
        return bool(self.low > value or self.high < value)


def _bootstrap_inputs(
    xs: Sequence[np.ndarray], y: np.ndarray, n_boot: int, level: float
) -> tuple[list[np.ndarray], np.ndarray]:
    """Checked float64 copies of the x's and y, each (n,); errors say what to fix."""
    arrays = [np.asarray(a, dtype=np.float64).reshape(-1) for a in (*xs, y)]
    sizes = [a.size for a in arrays]
    if len(set(sizes)) != 1:
        raise AnalysisError(f"x and y must have the same length; got lengths {sizes}.")
    if sizes[0] < 3:
        raise AnalysisError(
            f"a line through {sizes[0]} point(s) fits trivially; R² needs at least 3 points "
            "(evaluate more models, seeds or alphas)."
        )
    if not all(np.isfinite(a).all() for a in arrays):
        raise AnalysisError("x and y must be finite; drop the NaN/inf rows first.")
    if any(np.ptp(a) == 0 for a in arrays[:-1]):
        raise AnalysisError("x is constant: a regression on it is undefined; vary the gap metric.")
    if np.ptp(arrays[-1]) == 0:
        raise AnalysisError("y is constant: there is nothing for R² to explain.")
    if int(n_boot) < 1:
        raise AnalysisError(f"n_boot must be at least 1, got {n_boot}.")
    if not 0.0 < level < 1.0:
        raise AnalysisError(f"level must lie strictly between 0 and 1, got {level}.")
    return arrays[:-1], arrays[-1]


def _resample_index(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) indices drawn with replacement; the same (n, n_boot, seed), the same draws."""
    return np.random.default_rng(seed).integers(0, n, size=(int(n_boot), n))


def _resampled_r2(x: np.ndarray, y: np.ndarray, index: np.ndarray) -> np.ndarray:
    """(B,) R² of ``y`` on ``x`` (each (n,)) over the rows of ``index`` (B, n); NaN where the
    resampled x or y is constant."""
    xs, ys = x[index], y[index]
    dx = xs - xs.mean(axis=1, keepdims=True)
    dy = ys - ys.mean(axis=1, keepdims=True)
    sxx, syy = np.einsum("ij,ij->i", dx, dx), np.einsum("ij,ij->i", dy, dy)
    sxy = np.einsum("ij,ij->i", dx, dy)
    defined = (np.ptp(xs, axis=1) > 0) & (np.ptp(ys, axis=1) > 0)
    r2 = np.full(index.shape[0], np.nan)
    r2[defined] = np.clip(sxy[defined] ** 2 / (sxx[defined] * syy[defined]), 0.0, 1.0)
    return r2


def _interval(estimate: float, replicates: np.ndarray, level: float, n: int) -> BootstrapInterval:
    valid = replicates[np.isfinite(replicates)]
    if valid.size:
        low, high = np.percentile(valid, [50 * (1 - level), 50 * (1 + level)])
    else:
        low = high = float("nan")
    return BootstrapInterval(
        estimate=float(estimate),
        low=float(low),
        high=float(high),
        level=float(level),
        n_points=n,
        n_boot=replicates.size,
        n_valid=int(valid.size),
    )


def bootstrap_r2(
    x: np.ndarray, y: np.ndarray, *, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> BootstrapInterval:
    """R² of the least-squares line ``y ~ x`` with a percentile bootstrap interval.

    The points (pairs ``(x_i, y_i)``) are resampled with replacement ``n_boot`` times by a
    ``numpy.random.default_rng(seed)``; calls with the same number of points, ``n_boot`` and
    ``seed`` draw the same resamples (so R² of several x's against one y are paired).

    Args:
        x, y: (n,) paired observations, n >= 3, finite, neither constant.
        n_boot: number of resamples.
        level: coverage of the interval (0.95: the 2.5 and 97.5 percentiles).
        seed: seed of the resampling generator.

    Returns:
        :class:`BootstrapInterval`; ``estimate`` is R² on all points (= Pearson r²).
    """
    (xa,), ya = _bootstrap_inputs([x], y, n_boot, level)
    replicates = _resampled_r2(xa, ya, _resample_index(ya.size, n_boot, seed))
    return _interval(linear_fit(xa, ya)["r2"], replicates, level, ya.size)


def bootstrap_r2_difference(
    x_first: np.ndarray,
    x_second: np.ndarray,
    y: np.ndarray,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> BootstrapInterval:
    """R²(y ~ x_first) - R²(y ~ x_second), both fitted on the same resamples of the points.

    The paired difference answers "does ``x_first`` predict ``y`` better than ``x_second``":
    an interval above 0 says yes, below 0 says the reverse, across 0 says the points cannot
    tell. A resample counts when both R² are defined on it.

    Args:
        x_first, x_second, y: (n,) observations of the same n points, n >= 3, finite, none
            constant.
        n_boot, level, seed: as in :func:`bootstrap_r2` (same seed, same resamples).

    Returns:
        :class:`BootstrapInterval` of the difference.
    """
    (xa, xb), ya = _bootstrap_inputs([x_first, x_second], y, n_boot, level)
    index = _resample_index(ya.size, n_boot, seed)
    replicates = _resampled_r2(xa, ya, index) - _resampled_r2(xb, ya, index)
    estimate = linear_fit(xa, ya)["r2"] - linear_fit(xb, ya)["r2"]
    return _interval(estimate, replicates, level, ya.size)


def _undefined_row(task: str, gap: str, reference: str, n: int) -> dict[str, object]:
    nan = float("nan")
    numbers = ("r2", "r2_low", "r2_high", "r", "slope")
    differences = ("r2_minus_reference", "difference_low", "difference_high")
    return {
        "task_metric": task,
        "gap_metric": gap,
        "n": n,
        **dict.fromkeys(numbers, nan),
        "n_valid": 0,
        "reference": reference,
        **dict.fromkeys(differences, nan),
    }


def bootstrap_r2_table(
    df: pd.DataFrame,
    task_metrics: Sequence[str],
    gap_metrics: Sequence[str],
    *,
    reference: str = "raw_gap",
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """:func:`r2_table` with bootstrap intervals and paired differences against ``reference``.

    Per task metric, the rows where it and every gap metric are finite are used for all its
    fits, and every fit of one task draws the same resamples (one ``seed``), so the R² of
    different gap metrics are compared on the same points.

    Args:
        df: wide table, one row per model (n rows).
        task_metrics: columns to explain (y).
        gap_metrics: columns to explain them with (x); must contain ``reference``.
        reference: the gap metric every other one is compared against.
        n_boot, level, seed: as in :func:`bootstrap_r2`.

    Returns:
        One row per (task_metric, gap_metric): ``n``, ``r2``, ``r2_low``, ``r2_high``, ``r``,
        ``slope``, ``n_valid``, ``reference``, and ``r2_minus_reference`` with
        ``difference_low`` / ``difference_high`` (NaN on the reference's own row). A pair
        without an R² (fewer than 3 models, or a constant column) gets NaN numbers and
        ``n_valid`` 0 instead of an error.
    """
    missing = [c for c in [*task_metrics, *gap_metrics] if c not in df.columns]
    if missing:
        raise AnalysisError(f"columns {missing} not in the table; it has {list(df.columns)}.")
    if reference not in gap_metrics:
        raise AnalysisError(
            f"reference {reference!r} must be one of the gap metrics {gap_metrics}."
        )
    records = []
    for task in task_metrics:
        cols = [*dict.fromkeys([*gap_metrics, task])]
        block = df[cols].apply(pd.to_numeric, errors="coerce")
        block = block[np.isfinite(block.to_numpy(dtype=np.float64)).all(axis=1)]
        y = block[task].to_numpy()
        for gap in gap_metrics:
            x = block[gap].to_numpy()
            xs = block[[gap, reference]].to_numpy()
            if len(y) < 3 or np.ptp(y) == 0 or (np.ptp(xs, axis=0) == 0).any():
                records.append(_undefined_row(task, gap, reference, len(y)))
                continue  # no R² (too few models, or a constant column): NaN, not an error
            fit = linear_fit(x, y)
            r2 = bootstrap_r2(x, y, n_boot=n_boot, level=level, seed=seed)
            row = {
                "task_metric": task,
                "gap_metric": gap,
                "n": fit["n"],
                "r2": r2.estimate,
                "r2_low": r2.low,
                "r2_high": r2.high,
                "r": fit["r"],
                "slope": fit["slope"],
                "n_valid": r2.n_valid,
                "reference": reference,
                "r2_minus_reference": float("nan"),
                "difference_low": float("nan"),
                "difference_high": float("nan"),
            }
            if gap != reference:
                diff = bootstrap_r2_difference(
                    x, block[reference].to_numpy(), y, n_boot=n_boot, level=level, seed=seed
                )
                row.update(
                    r2_minus_reference=diff.estimate,
                    difference_low=diff.low,
                    difference_high=diff.high,
                )
            records.append(row)
    return pd.DataFrame.from_records(records)


def _side(low: float, high: float) -> int:
    """+1: the interval lies above 0; -1: below 0; 0: it holds 0 (or is NaN)."""
    return 1 if low > 0 else -1 if high < 0 else 0


def r2_difference_verdict(
    task: str,
    difference: float,
    low: float,
    high: float,
    level: float = 0.95,
    first: str = "distribution gap",
    second: str = "raw gap",
) -> str:
    """The sentence a paired R² difference supports, read off its interval.

    ``difference`` = R²(task ~ first) - R²(task ~ second) with interval ``[low, high]``: an
    interval above 0 says ``first`` predicts ``task`` better, below 0 ``second``, and one that
    holds 0 says the two cannot be told apart on these points.
    """
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{task} has no R² here (a constant column, or fewer than 3 models)"
    numbers = (
        f"R² difference {difference:+.3f}, {100 * level:g} % interval [{low:+.3f}, {high:+.3f}]"
    )
    side = _side(low, high)
    if side > 0:
        return f"the {first} predicts {task} better than the {second} ({numbers} excludes 0)"
    if side < 0:
        return f"the {second} predicts {task} better than the {first} ({numbers} excludes 0)"
    return f"the {first} and the {second} cannot be told apart on {task} ({numbers} holds 0)"


def r2_study_table(
    points: pd.DataFrame,
    scopes: dict[str, Sequence[bool]],
    task_metrics: Sequence[str],
    gap_metrics: Sequence[str],
    *,
    reference: str = "raw_gap",
    compared: str = "distribution_gap",
    kind_labels: dict[str, str] | None = None,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """The R² study over several sets of models: :func:`bootstrap_r2_table` per scope.

    Args:
        points: one row per model (n rows): the task and gap metric columns, and optionally
            ``kind`` (what the model is) and ``seed`` (which world), which name each scope's
            models in its ``points`` text.
        scopes: scope name -> (n,) bool mask of the models it pools.
        task_metrics, gap_metrics, reference, n_boot, level, seed: see
            :func:`bootstrap_r2_table`.
        compared: the gap metric whose Pearson correlation with ``reference`` over a scope's
            models is reported (``gap_correlation``): near +-1, the two cannot be told apart.
        kind_labels: ``kind`` value -> plural words for the ``points`` text.

    Returns:
        :func:`bootstrap_r2_table`'s rows with ``scope``, ``points``, ``gap_correlation``
        first and ``n_boot``, ``level``, ``bootstrap_seed`` last (what
        :func:`r2_study_section` renders).
    """
    frames = []
    for scope, mask in scopes.items():
        chosen = points[np.asarray(mask, dtype=bool)]
        words = f"{len(chosen)} models"
        if "seed" in chosen:
            seeds = sorted(chosen["seed"].unique())
            words += f" (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})"
        if "kind" in chosen:
            counts = chosen["kind"].value_counts(sort=False)
            words += ": " + ", ".join(
                f"{(kind_labels or {}).get(k, k)} ({n})" for k, n in counts.items()
            )
        table = bootstrap_r2_table(
            chosen, task_metrics, gap_metrics, reference=reference, n_boot=n_boot,
            level=level, seed=seed,
        )  # fmt: skip
        pair = chosen[[reference, compared]].apply(pd.to_numeric, errors="coerce").dropna()
        table.insert(0, "gap_correlation", linear_fit(pair[reference], pair[compared])["r"])
        table.insert(0, "points", words)
        table.insert(0, "scope", scope)
        table["n_boot"], table["level"], table["bootstrap_seed"] = int(n_boot), level, seed
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


#: What the paper reports (arXiv 2604.00279): R² of task quality on each gap metric.
PAPER_R2 = {"distribution_gap": 0.986, "raw_gap": 0.691}

#: How tables name the gap and task metrics (README blocks share it).
METRIC_LABELS = {
    "raw_gap": "raw gap",
    "centroid_gap": "centroid gap",
    "distribution_gap": "distribution gap",
    "zero_shot_accuracy": "zero-shot acc.",
    "clustering_ari": "joint k-means ARI",
    "cider": "CIDEr",
    "i2t_R@1": "R@1 i→t",
    "t2i_R@1": "R@1 t→i",
}


def _with_interval(value: float, low: float, high: float, signed: bool = False) -> str:
    if not np.isfinite(value):
        return "—"
    f = "{:+.3f}" if signed else "{:.3f}"
    return f"{f.format(value)} [{f.format(low)}, {f.format(high)}]"


def _names(items: Sequence[str]) -> str:
    """``a``, ``a and b``, ``a, b and c``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _scope_verdict(
    scope: str, sides: dict[str, int | None], level: float, first: str, second: str
) -> str:
    """One sentence for a scope: the tasks ``first`` predicts better than ``second`` (the
    interval of the R² difference above 0), worse (below 0), and those it cannot tell apart."""
    groups = {k: [t for t, side in sides.items() if side == k] for k in (1, -1, 0, None)}
    interval = f"the {100 * level:g} % interval of the R² difference"
    parts = []
    if groups[1]:
        parts.append(
            f"the {first} predicts {_names(groups[1])} better than the {second} ({interval} "
            "lies above 0)"
        )
    if groups[-1]:
        parts.append(
            f"the {second} predicts {_names(groups[-1])} better than the {first} ({interval} "
            "lies below 0)"
        )
    if groups[0]:
        what = "any task metric" if len(groups[0]) == len(sides) else _names(groups[0])
        parts.append(
            f"the {first} and the {second} cannot be told apart on {what} ({interval} holds 0)"
        )
    if groups[None]:
        parts.append(f"{_names(groups[None])} has no R² here")
    return f"**Verdict, {scope[0].lower() + scope[1:]}:** " + "; ".join(parts) + "."


def r2_study_section(csv_path: str | os.PathLike[str]) -> str:
    """The README's ``r2`` block from ``benchmarks/r2_study.py``'s CSV: per scope (a set of
    models), the R² of every task metric on every gap metric with its bootstrap interval, the
    paired difference against the reference gap, and the verdict read off each interval."""
    frame = pd.read_csv(csv_path)
    first = frame.iloc[0]
    level, reference = float(first["level"]), str(first["reference"])
    gaps = list(dict.fromkeys(frame["gap_metric"]))
    compared = [g for g in gaps if g != reference]
    target = "distribution_gap" if "distribution_gap" in compared else compared[-1]
    label = METRIC_LABELS.get
    lines = [
        f"Measured by `benchmarks/r2_study.py` on the test split of captioned shapes "
        f"(`{Path(csv_path).name}`; the models' numbers in `r2_points.csv`): a least-squares line "
        f"of each task metric on each gap metric, R² with its {100 * level:g} % percentile "
        f"bootstrap interval over {int(first['n_boot'])} resamples of the models (seed "
        f"{int(first['bootstrap_seed'])}); the last column is the paired difference "
        f"R²({label(target, target)}) − R²({label(reference, reference)}) on the same resamples. "
        f"The paper reports R² {PAPER_R2['distribution_gap']} for the distribution gap and "
        f"{PAPER_R2['raw_gap']} for the raw gap.",
    ]
    verdicts = []
    for scope, rows in frame.groupby("scope", sort=False):
        head = rows.iloc[0]
        lines += [
            "",
            f"**{scope}**: {head['points']}; over these models the {label(reference, reference)}"
            f" and the {label(target, target)} correlate r = {float(head['gap_correlation']):.2f}.",
            "",
            "| task | n | "
            + " | ".join(f"R² {label(g, g)}" for g in gaps)
            + f" | R² difference ({label(target, target).split()[0]} − "
            f"{label(reference, reference).split()[0]}) |",
            "|" + "---|" * (len(gaps) + 3),
        ]
        sides: dict[str, int | None] = {}
        for task, task_rows in rows.groupby("task_metric", sort=False):
            by_gap = task_rows.set_index("gap_metric")
            cells = [_with_interval(*by_gap.loc[g, ["r2", "r2_low", "r2_high"]]) for g in gaps]
            diff = by_gap.loc[target, ["r2_minus_reference", "difference_low", "difference_high"]]
            lines.append(
                f"| {label(task, task)} | {int(by_gap['n'].iloc[0])} | "
                + " | ".join(cells)
                + f" | {_with_interval(*diff, signed=True)} |"
            )
            low, high = float(diff.iloc[1]), float(diff.iloc[2])
            defined = np.isfinite(low) and np.isfinite(high)
            sides[label(task, task)] = _side(low, high) if defined else None
        verdicts.append(
            _scope_verdict(
                str(scope), sides, level, label(target, target), label(reference, reference)
            )
        )
    for verdict in verdicts:
        lines += ["", verdict]
    return "\n".join(lines)
