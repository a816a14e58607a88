"""Uncertainty of the gap numbers: a finite-sample floor and bootstrap confidence intervals.

Inputs are ``image`` (N, D) and ``text`` (M, D) embeddings, normally L2-normalised rows, any
floating dtype (float64 arithmetic inside). The metrics are those of :mod:`tpccma_lib.gap.metrics`
(ML covariances, divisor N):

    centroid_gap      = ||mu_img - mu_txt||
    distribution_gap  = B(S_img, S_txt)                         (Bures distance)
    spread            = sqrt(0.5 (tr S_img + tr S_txt))
    scale_free_bures  = distribution_gap / spread               (unitless)

Two questions a gap number must answer before it is compared with another:

* **Is it above the floor?** :func:`sampling_floor` splits the rows of *one* modality into two
  random halves and measures the "gap" between them. The halves come from the same distribution,
  so whatever they show is sampling noise (and, for Bures, the upward bias of sample
  covariances when N is not much larger than D). A gap below this floor cannot be told from 0.
  The floor belongs to N/2-row samples: for the centroid gap its expected square is
  ``4 tr S / N``, twice the ``2 tr S / N`` of two independent N-row samples, and the Bures bias
  grows as the sample shrinks. Compare it like for like with :func:`half_sample_gap`, the
  image-text gap measured on N/2-row subsamples.
* **How precise is it?** :func:`bootstrap_gap` resamples image rows and text rows independently
  (with replacement, each modality to its own size) and reports percentile (default) or basic
  intervals. Pairing is ignored on purpose: each gap metric is a function of the two marginal
  distributions. Resampling with replacement repeats rows, which lowers the effective sample
  size; statistics with a finite-sample bias (the Bures distance when N is not >> D, the
  centroid gap when it is not much larger than its noise) then sit higher in the bootstrap than
  in the data, and the percentile interval can lie entirely above the estimate. The
  ``boot_mean`` column shows that shift; ``method="basic"`` subtracts it once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from tpccma_lib.gap.metrics import (
    GeometryError,
    _check_matrix,
    bures_distance,
    modality_moments,
)
from tpccma_lib.linalg import bures_distance_sq

__all__ = [
    "BOOTSTRAP_METHODS",
    "BOOTSTRAP_METRICS",
    "FLOOR_METRICS",
    "GapBootstrap",
    "GapInterval",
    "GapUncertaintyError",
    "SamplingFloor",
    "UNCERTAINTY_COLUMNS",
    "bootstrap_gap",
    "half_sample_gap",
    "point_estimates",
    "sampling_floor",
    "scale_free_bures",
    "uncertainty_table",
]

#: Metrics of :func:`bootstrap_gap`, in table order.
BOOTSTRAP_METRICS = ("centroid_gap", "distribution_gap", "scale_free_bures")
#: Interval constructions of :func:`bootstrap_gap`.
BOOTSTRAP_METHODS = ("percentile", "basic")
#: Metrics of :func:`sampling_floor`, in table order (raw_gap: Liang's gap, rows normalised).
FLOOR_METRICS = ("centroid_gap", "distribution_gap", "scale_free_bures", "raw_gap")


class GapUncertaintyError(GeometryError):
    """Bad input to a floor or bootstrap; the message says what was wrong and how to fix it."""


# --------------------------------------------------------------------------- validation
def _as_rows(x: np.ndarray, name: str, min_rows: int) -> np.ndarray:
    """``x`` checked as in :mod:`tpccma_lib.gap.metrics` (2-D, floating, ``min_rows``), float64,
    and finite."""
    try:
        x = _check_matrix(x, name, min_rows=min_rows)
    except GeometryError as exc:
        raise GapUncertaintyError(str(exc)) from exc
    x = x.astype(np.float64, copy=False)
    if not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise GapUncertaintyError(
            f"{name} has {bad} row(s) with NaN or inf; drop them (a blank caption or a "
            "corrupted image) before measuring the gap."
        )
    return x


def _as_pair(image: np.ndarray, text: np.ndarray, min_rows: int) -> tuple[np.ndarray, np.ndarray]:
    image = _as_rows(image, "image", min_rows)
    text = _as_rows(text, "text", min_rows)
    if image.shape[1] != text.shape[1]:
        raise GapUncertaintyError(
            f"image and text dimensions differ: {image.shape[1]} vs {text.shape[1]}; pass "
            "embeddings of the same shared space."
        )
    return image, text


def _check_count(value: int, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise GapUncertaintyError(f"{name} must be an int >= {minimum}, got {value!r}.")
    return int(value)


def _ratio(numerator: float, denominator: float) -> float:
    if denominator > 0:
        return numerator / denominator
    return math.inf if numerator > 0 else math.nan


# --------------------------------------------------------------------------- point estimates
def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean (D,), ML covariance (D, D)) of rows (n, D), two-pass, float64."""
    mean = x.mean(axis=0)
    centred = x - mean
    cov = centred.T @ centred / x.shape[0]
    return mean, 0.5 * (cov + cov.T)


def _metrics(
    mean_x: np.ndarray, cov_x: np.ndarray, mean_y: np.ndarray, cov_y: np.ndarray
) -> tuple[float, float, float]:
    """(centroid gap, Bures distance, Bures / spread) from the moments of two samples."""
    gap = float(np.linalg.norm(mean_x - mean_y))
    bures = math.sqrt(bures_distance_sq(cov_x, cov_y))
    spread = math.sqrt(0.5 * (float(np.trace(cov_x)) + float(np.trace(cov_y))))
    return gap, bures, _ratio(bures, spread)


def point_estimates(image: np.ndarray, text: np.ndarray) -> dict[str, float]:
    """The metrics of :data:`BOOTSTRAP_METRICS` on all rows, computed exactly as
    :func:`tpccma_lib.gap.metrics.decompose` computes them (same moments, same Bures)."""
    image, text = _as_pair(image, text, min_rows=2)
    img = modality_moments(image, name="image")
    txt = modality_moments(text, name="text")
    assert img.covariance is not None and txt.covariance is not None
    bures = bures_distance(img.covariance, txt.covariance)
    spread = math.sqrt(0.5 * (img.total_variance + txt.total_variance))
    return {
        "centroid_gap": float(np.linalg.norm(img.mean - txt.mean)),
        "distribution_gap": bures,
        "scale_free_bures": _ratio(bures, spread),
    }


def scale_free_bures(image: np.ndarray, text: np.ndarray) -> float:
    """Bures distance / spread, spread = sqrt(0.5 (tr S_img + tr S_txt)): unitless.

    Absolute Bures falls when both clouds shrink, even if their shapes do not become more alike;
    this ratio does not. image (N, D), text (M, D), N, M >= 2. NaN when both clouds are points.
    """
    return point_estimates(image, text)["scale_free_bures"]


# --------------------------------------------------------------------------- sampling floor
@dataclass(frozen=True)
class SamplingFloor:
    """Split-half null of one modality.

    ``values[metric]`` is (n_repeats,): the metric between the two halves on each split.
    Metrics: :data:`FLOOR_METRICS`. ``n_half`` rows per half (one row is dropped when N is odd).
    """

    n_rows: int
    n_half: int
    n_repeats: int
    seed: int
    values: Mapping[str, np.ndarray] = field(repr=False)

    def mean(self, metric: str) -> float:
        """Mean of ``metric`` over the splits: the floor."""
        return float(np.mean(self._values(metric)))

    def std(self, metric: str) -> float:
        """Standard deviation of ``metric`` over the splits (ddof=1; 0 for one split)."""
        values = self._values(metric)
        return float(np.std(values, ddof=1)) if values.size > 1 else 0.0

    def to_frame(self) -> pd.DataFrame:
        """One row per metric: metric, floor_mean, floor_std, n_repeats, n_rows, n_half."""
        return pd.DataFrame(
            [
                {
                    "metric": metric,
                    "floor_mean": self.mean(metric),
                    "floor_std": self.std(metric),
                    "n_repeats": self.n_repeats,
                    "n_rows": self.n_rows,
                    "n_half": self.n_half,
                }
                for metric in FLOOR_METRICS
            ]
        )

    def _values(self, metric: str) -> np.ndarray:
        if metric not in self.values:
            raise GapUncertaintyError(f"unknown metric {metric!r}; choose from {FLOOR_METRICS}.")
        return self.values[metric]


def _split_half(
    x: np.ndarray, y: np.ndarray | None, n_repeats: int, seed: int, blas_threads: int | None
) -> tuple[int, dict[str, np.ndarray]]:
    """Metrics between half a and half b, ``n_repeats`` times. y None: both halves from x
    (disjoint rows); else half a from x and half b from y, ``n_half = min(N, M) // 2`` each."""
    n_half = x.shape[0] // 2 if y is None else min(x.shape[0], y.shape[0]) // 2
    unit_x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-300)
    unit_y = (
        unit_x if y is None else y / np.maximum(np.linalg.norm(y, axis=1, keepdims=True), 1e-300)
    )
    rng = np.random.default_rng(seed)
    out = {metric: np.empty(n_repeats) for metric in FLOOR_METRICS}
    with threadpool_limits(limits=blas_threads):
        for r in range(n_repeats):
            if y is None:
                order = rng.permutation(x.shape[0])
                rows_a, rows_b = order[:n_half], order[n_half : 2 * n_half]
                half_b, unit_b = x[rows_b], unit_x[rows_b]
            else:
                rows_a = rng.permutation(x.shape[0])[:n_half]
                rows_b = rng.permutation(y.shape[0])[:n_half]
                half_b, unit_b = y[rows_b], unit_y[rows_b]
            mean_a, cov_a = _moments(x[rows_a])
            mean_b, cov_b = _moments(half_b)
            gap, bures, ratio = _metrics(mean_a, cov_a, mean_b, cov_b)
            out["centroid_gap"][r] = gap
            out["distribution_gap"][r] = bures
            out["scale_free_bures"][r] = ratio
            raw = unit_x[rows_a].mean(axis=0) - unit_b.mean(axis=0)
            out["raw_gap"][r] = float(np.linalg.norm(raw))
    return n_half, out


def sampling_floor(
    x: np.ndarray, n_repeats: int = 20, seed: int = 0, *, blas_threads: int | None = 1
) -> SamplingFloor:
    """Finite-sample floor of the gap metrics for one modality ``x`` (N, D), N >= 4.

    Each repeat draws a random permutation (``np.random.default_rng(seed)``), takes its first
    ``N // 2`` rows as half a and the next ``N // 2`` as half b, and measures centroid gap,
    Bures distance, Bures / spread and the raw gap (rows L2-normalised) between a and b.

    The floor belongs to N/2-row samples, which are noisier (and, for Bures, more biased) than
    the N-row samples a full gap is measured on; compare it with :func:`half_sample_gap`
    (the image-text gap at the same N/2 size), not with the full-size estimate.

    ``blas_threads``: BLAS threads during the loop (the D x D eigendecompositions run fastest
    single-threaded on busy cores); None leaves the setting alone.
    """
    x = _as_rows(x, "x", min_rows=4)
    n_repeats = _check_count(n_repeats, "n_repeats", 1)
    n_half, out = _split_half(x, None, n_repeats, seed, blas_threads)
    return SamplingFloor(
        n_rows=x.shape[0], n_half=n_half, n_repeats=n_repeats, seed=seed, values=out
    )


def half_sample_gap(
    image: np.ndarray,
    text: np.ndarray,
    n_repeats: int = 20,
    seed: int = 0,
    *,
    blas_threads: int | None = 1,
) -> SamplingFloor:
    """The image-text gap at the floor's sample size: like-for-like with :func:`sampling_floor`.

    Each repeat draws ``n_half = min(N, M) // 2`` distinct image rows and ``n_half`` distinct
    text rows and measures the :data:`FLOOR_METRICS` between them. Returned in a
    :class:`SamplingFloor` (``n_rows = min(N, M)``) so ``gap.mean(m) - floor.mean(m)`` is the
    part of metric m that sampling at this size does not explain.
    """
    image, text = _as_pair(image, text, min_rows=4)
    n_repeats = _check_count(n_repeats, "n_repeats", 1)
    n_half, out = _split_half(image, text, n_repeats, seed, blas_threads)
    n_rows = min(image.shape[0], text.shape[0])
    return SamplingFloor(n_rows=n_rows, n_half=n_half, n_repeats=n_repeats, seed=seed, values=out)


# --------------------------------------------------------------------------- bootstrap
@dataclass(frozen=True)
class GapInterval:
    """Bootstrap interval of one metric (same units as the metric)."""

    metric: str
    estimate: float  # on all rows (equals geometry.decompose's)
    low: float  # percentile: (1 - level) / 2 quantile of the bootstrap values
    high: float  # percentile: (1 + level) / 2 quantile
    level: float
    n_boot: int
    boot_mean: float  # mean of the bootstrap values; far from estimate = biased statistic
    method: str = "percentile"  # "percentile" or "basic"

    def contains(self, value: float) -> bool:
        """low <= value <= high."""
        return self.low <= value <= self.high


@dataclass(frozen=True)
class GapBootstrap:
    """Result of :func:`bootstrap_gap`: one :class:`GapInterval` per metric and the raw
    bootstrap values (``samples[metric]``, shape (n_boot,))."""

    intervals: tuple[GapInterval, ...]
    samples: Mapping[str, np.ndarray] = field(repr=False)
    n_images: int
    n_texts: int
    seed: int

    def __getitem__(self, metric: str) -> GapInterval:
        for interval in self.intervals:
            if interval.metric == metric:
                return interval
        raise KeyError(f"unknown metric {metric!r}; choose from {BOOTSTRAP_METRICS}.")

    def to_frame(self) -> pd.DataFrame:
        """Columns metric, estimate, low, high, level, n_boot, boot_mean, method; a row per metric."""
        return pd.DataFrame([vars(interval) for interval in self.intervals])


def _check_level(level: float) -> float:
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 1:
        raise GapUncertaintyError(
            f"level must be a number in (0, 1) (0.95 for a 95 % interval), got {level!r}."
        )
    return float(level)


def bootstrap_gap(
    image: np.ndarray,
    text: np.ndarray,
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
    *,
    method: Literal["percentile", "basic"] = "percentile",
    blas_threads: int | None = 1,
) -> GapBootstrap:
    """Bootstrap intervals of centroid gap, Bures distance and Bures / spread.

    Each of ``n_boot`` resamples draws N image rows and M text rows with replacement,
    independently (``np.random.default_rng(seed)``, image indices then text indices), and
    recomputes the three metrics from the resampled moments. With ``q_lo, q_hi`` the
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of the resampled values:

    - ``method="percentile"``: ``[q_lo, q_hi]``;
    - ``method="basic"`` (reverse percentile): ``[2 est - q_hi, 2 est - q_lo]``, low clipped
      at 0. It subtracts the bootstrap's estimate of the plug-in bias (``boot_mean - est``),
      which the percentile interval doubles instead; prefer it when ``boot_mean`` sits far
      from the estimate (small N / D). Neither removes all of the Bures bias at N ~ 4 D.

    Args:
        image: (N, D), text: (M, D), N, M >= 2, finite.
        n_boot: resamples; at least ``ceil(2 / (1 - level))`` so each tail holds a resample.
        seed: the result is a deterministic function of the data and the seed.
        level: coverage in (0, 1).
        method: "percentile" or "basic" (see above).
        blas_threads: BLAS threads during the loop (None: leave alone); see
            :func:`sampling_floor`.
    Cost: per resample two (n, D) x (D, n) products and one Bures (two D x D eigensolves).
    """
    level = _check_level(level)
    if method not in BOOTSTRAP_METHODS:
        raise GapUncertaintyError(f"method must be one of {BOOTSTRAP_METHODS}, got {method!r}.")
    n_boot = _check_count(n_boot, "n_boot", 1)
    needed = math.ceil(2.0 / (1.0 - level) - 1e-9)
    if n_boot < needed:
        raise GapUncertaintyError(
            f"n_boot={n_boot} is too few for a {level:g} interval: each tail needs at least one "
            f"resample, so use n_boot >= {needed} (1000 for publication-grade intervals)."
        )
    image, text = _as_pair(image, text, min_rows=2)
    estimates = point_estimates(image, text)
    n_img, n_txt = image.shape[0], text.shape[0]
    rng = np.random.default_rng(seed)
    samples = {metric: np.empty(n_boot) for metric in BOOTSTRAP_METRICS}
    with threadpool_limits(limits=blas_threads):
        for b in range(n_boot):
            mean_x, cov_x = _moments(image[rng.integers(0, n_img, size=n_img)])
            mean_y, cov_y = _moments(text[rng.integers(0, n_txt, size=n_txt)])
            values = _metrics(mean_x, cov_x, mean_y, cov_y)
            for metric, value in zip(BOOTSTRAP_METRICS, values, strict=True):
                samples[metric][b] = value
    tail = (1.0 - level) / 2.0
    intervals = []
    for metric in BOOTSTRAP_METRICS:
        low, high = np.quantile(samples[metric], [tail, 1.0 - tail])
        if method == "basic":
            estimate = estimates[metric]
            low, high = max(2.0 * estimate - high, 0.0), 2.0 * estimate - low
        intervals.append(
            GapInterval(
                metric=metric,
                estimate=estimates[metric],
                low=float(low),
                high=float(high),
                level=level,
                n_boot=n_boot,
                boot_mean=float(np.mean(samples[metric])),
                method=method,
            )
        )
    return GapBootstrap(
        intervals=tuple(intervals), samples=samples, n_images=n_img, n_texts=n_txt, seed=seed
    )


# --------------------------------------------------------------------------- one table
#: Columns of :func:`uncertainty_table`.
UNCERTAINTY_COLUMNS = (
    "metric",
    "estimate",
    "ci_low",
    "ci_high",
    "half_sample",
    "floor",
    "floor_std",
)


def uncertainty_table(
    image: np.ndarray,
    text: np.ndarray,
    n_repeats: int = 20,
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
    *,
    blas_threads: int | None = 1,
) -> pd.DataFrame:
    """Every gap number of one image-text pair with its interval and its floor, one row per
    metric of :data:`BOOTSTRAP_METRICS`.

    Columns (:data:`UNCERTAINTY_COLUMNS`): ``estimate`` on all rows; ``ci_low``, ``ci_high``
    the percentile bootstrap interval (:func:`bootstrap_gap`); ``half_sample`` the image-text
    value on N/2-row subsamples (:func:`half_sample_gap`) and ``floor`` / ``floor_std`` the
    larger of the two same-modality split-half nulls (:func:`sampling_floor`, image halves and
    text halves) at the same N/2 rows: compare ``half_sample`` with ``floor``, like for like. A
    gap whose ``half_sample`` is within a few ``floor_std`` of ``floor`` cannot be told from 0.
    """
    image, text = _as_pair(image, text, min_rows=4)
    boot = bootstrap_gap(image, text, n_boot, seed, level, blas_threads=blas_threads)
    half = half_sample_gap(image, text, n_repeats, seed, blas_threads=blas_threads)
    n_half = half.n_half
    # the nulls on as many rows as the half-sample gap (2 n_half per modality, drawn at random:
    # captions come grouped by image, so the first rows would be a few images' captions)
    rng = np.random.default_rng(seed)
    floors = [
        sampling_floor(
            x[rng.permutation(x.shape[0])[: 2 * n_half]], n_repeats, seed, blas_threads=blas_threads
        )
        for x in (image, text)
    ]
    rows = []
    for metric in BOOTSTRAP_METRICS:
        interval = boot[metric]
        worst = max(floors, key=lambda f: f.mean(metric))
        rows.append(
            {
                "metric": metric,
                "estimate": interval.estimate,
                "ci_low": interval.low,
                "ci_high": interval.high,
                "half_sample": half.mean(metric),
                "floor": worst.mean(metric),
                "floor_std": worst.std(metric),
            }
        )
    return pd.DataFrame(rows, columns=list(UNCERTAINTY_COLUMNS))
