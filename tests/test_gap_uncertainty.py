"""Sampling floor and bootstrap intervals of the gap metrics (tpccma_lib.gap.uncertainty)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from tpccma_lib.embeddings import Embeddings, l2_normalize
from tpccma_lib.gap.metrics import GeometryError, decompose
from tpccma_lib.gap.uncertainty import (
    BOOTSTRAP_METRICS,
    FLOOR_METRICS,
    GapUncertaintyError,
    bootstrap_gap,
    half_sample_gap,
    point_estimates,
    sampling_floor,
    scale_free_bures,
)


def _sphere(rng: np.random.Generator, n: int, dim: int, shift: float = 0.0) -> np.ndarray:
    """n unit vectors: a Gaussian cloud (scales 0.5..1.5) moved by ``shift`` along e_0."""
    x = rng.normal(size=(n, dim)) * np.linspace(0.5, 1.5, dim)
    x[:, 0] += shift
    return l2_normalize(x)


def _separated(rng: np.random.Generator, n: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    image = _sphere(rng, n, dim, shift=3.0)
    text = l2_normalize(
        rng.normal(size=(n, dim)) * np.linspace(1.5, 0.3, dim) - 2.0 * np.eye(dim)[1]
    )
    return image, text


# --------------------------------------------------------------------------- point estimates
def test_point_estimates_equal_geometry_decompose(rng):
    emb = Embeddings.from_arrays(*_separated(rng, 300, 12))  # stored as float32
    image, text = emb.image, emb.text
    dec = decompose(emb)
    est = point_estimates(image, text)
    assert est["centroid_gap"] == pytest.approx(dec.centroid_gap, rel=1e-12)
    assert est["distribution_gap"] == pytest.approx(dec.distribution_gap, rel=1e-12)
    assert est["scale_free_bures"] == pytest.approx(dec.distribution_gap / dec.spread, rel=1e-12)
    assert scale_free_bures(image, text) == est["scale_free_bures"]
    boot = bootstrap_gap(image, text, n_boot=40, seed=1)
    for metric in BOOTSTRAP_METRICS:
        assert boot[metric].estimate == est[metric]


def test_scale_free_bures_ignores_a_common_scale(rng):
    image, text = _separated(rng, 400, 6)
    full, half = point_estimates(image, text), point_estimates(0.5 * image, 0.5 * text)
    assert half["distribution_gap"] == pytest.approx(0.5 * full["distribution_gap"], rel=1e-9)
    assert half["scale_free_bures"] == pytest.approx(full["scale_free_bures"], rel=1e-9)


# --------------------------------------------------------------------------- floor
def test_floor_shrinks_as_one_over_sqrt_n(rng):
    dim = 8
    small = sampling_floor(_sphere(rng, 200, dim), n_repeats=60, seed=0)
    large = sampling_floor(_sphere(rng, 3200, dim), n_repeats=60, seed=0)
    ratio = small.mean("centroid_gap") / large.mean("centroid_gap")
    assert 3.3 < ratio < 4.8, ratio
    bures_ratio = small.mean("distribution_gap") / large.mean("distribution_gap")
    assert 3.3 < bures_ratio < 4.8, bures_ratio  # D = 8: Bures noise also ~ 1 / sqrt(N)
    # halves of N rows: E ||mean_a - mean_b||^2 = 4 tr S / N
    x = _sphere(rng, 3200, dim)
    floor = sampling_floor(x, n_repeats=200, seed=3)
    expected = 4.0 * np.trace(np.cov(x.T, bias=True)) / x.shape[0]
    assert np.mean(floor.values["centroid_gap"] ** 2) == pytest.approx(expected, rel=0.15)


def test_floor_shapes_and_raw_gap_on_unit_rows(rng):
    x = _sphere(rng, 101, 5)
    floor = sampling_floor(x, n_repeats=7, seed=2)
    assert (floor.n_rows, floor.n_half, floor.n_repeats) == (101, 50, 7)
    for metric in FLOOR_METRICS:
        assert floor.values[metric].shape == (7,)
        assert np.all(floor.values[metric] > 0)
    # on unit rows Liang's raw gap is the centroid gap
    np.testing.assert_allclose(floor.values["raw_gap"], floor.values["centroid_gap"], rtol=1e-12)
    frame = floor.to_frame()
    assert list(frame["metric"]) == list(FLOOR_METRICS)
    assert frame.loc[0, "floor_mean"] == pytest.approx(floor.mean("centroid_gap"))
    with pytest.raises(GapUncertaintyError, match="unknown metric"):
        floor.mean("nope")


def test_half_sample_gap_matches_floor_under_the_null_and_exceeds_it_otherwise(rng):
    image, text = _sphere(rng, 1200, 10), _sphere(rng, 1200, 10)
    floor = sampling_floor(image, n_repeats=30, seed=0)
    null = half_sample_gap(image, text, n_repeats=30, seed=0)
    for metric in ("centroid_gap", "distribution_gap"):
        assert null.mean(metric) == pytest.approx(floor.mean(metric), rel=0.25)
    far_image, far_text = _separated(rng, 1200, 10)
    far = half_sample_gap(far_image, far_text, n_repeats=30, seed=0)
    assert far.n_half == 600
    for metric in ("centroid_gap", "distribution_gap"):
        assert far.mean(metric) > 3 * floor.mean(metric)


# --------------------------------------------------------------------------- bootstrap
def test_same_distribution_interval_reaches_the_floor(rng):
    image, text = _sphere(rng, 1000, 16), _sphere(rng, 1000, 16)
    floor = sampling_floor(image, n_repeats=30, seed=0)
    ci = bootstrap_gap(image, text, n_boot=200, seed=0)["centroid_gap"]
    # the centroid gap of two samples of one distribution is sampling noise: its interval
    # overlaps the floor band (mean +- 2 std), so it cannot be told from 0
    band_low = floor.mean("centroid_gap") - 2 * floor.std("centroid_gap")
    band_high = floor.mean("centroid_gap") + 2 * floor.std("centroid_gap")
    assert ci.low <= band_high and ci.high >= band_low
    assert ci.low < floor.mean("centroid_gap")


def test_separated_clouds_interval_excludes_zero_and_the_floor(rng):
    image, text = _separated(rng, 1000, 16)
    boot = bootstrap_gap(image, text, n_boot=100, seed=0)
    for metric in ("centroid_gap", "distribution_gap"):
        floor_high = max(
            sampling_floor(x, n_repeats=20, seed=0).mean(metric)
            + 3 * sampling_floor(x, n_repeats=20, seed=0).std(metric)
            for x in (image, text)
        )
        assert boot[metric].low > 0
        assert boot[metric].low > floor_high, (metric, boot[metric], floor_high)


@pytest.mark.parametrize("method", ["percentile", "basic"])
def test_intervals_contain_the_estimate_when_n_is_much_larger_than_d(rng, method):
    image, text = _separated(rng, 4000, 4)
    boot = bootstrap_gap(image, text, n_boot=100, seed=0, level=0.9, method=method)
    frame = boot.to_frame()
    assert list(frame.columns) == [
        "metric", "estimate", "low", "high", "level", "n_boot", "boot_mean", "method",
    ]  # fmt: skip
    assert list(frame["metric"]) == list(BOOTSTRAP_METRICS)
    for interval in boot.intervals:
        assert interval.low < interval.estimate < interval.high, interval
        assert interval.contains(interval.estimate)
        assert (interval.level, interval.n_boot, interval.method) == (0.9, 100, method)
        # a 90 % interval spans about 3.3 bootstrap standard deviations
        std = float(np.std(boot.samples[interval.metric]))
        assert 2.5 * std < interval.high - interval.low < 4.0 * std


def test_bures_bias_shows_in_boot_mean_and_basic_interval_corrects_it(rng):
    # N = 4 D: sample covariances are noisy, the plug-in Bures is biased up, and resampling
    # with replacement (repeated rows) biases it further: the percentile interval sits above
    image, text = _separated(rng, 160, 40)
    pct = bootstrap_gap(image, text, n_boot=60, seed=0)["distribution_gap"]
    basic = bootstrap_gap(image, text, n_boot=60, seed=0, method="basic")["distribution_gap"]
    assert pct.boot_mean > pct.estimate
    assert pct.low > pct.estimate  # the documented failure mode of the percentile interval
    assert basic.high < pct.low
    assert basic.high - basic.low == pytest.approx(pct.high - pct.low, rel=1e-9)


def test_bootstrap_is_deterministic_under_a_seed(rng):
    image, text = _separated(rng, 200, 6)
    one = bootstrap_gap(image, text, n_boot=40, seed=7)
    two = bootstrap_gap(image, text, n_boot=40, seed=7)
    other = bootstrap_gap(image, text, n_boot=40, seed=8)
    for metric in BOOTSTRAP_METRICS:
        np.testing.assert_array_equal(one.samples[metric], two.samples[metric])
        assert not np.array_equal(one.samples[metric], other.samples[metric])
    assert one.intervals == two.intervals
    np.testing.assert_array_equal(
        sampling_floor(image, n_repeats=5, seed=3).values["distribution_gap"],
        sampling_floor(image, n_repeats=5, seed=3).values["distribution_gap"],
    )


def test_bootstrap_of_1000_by_256_is_seconds_not_minutes(rng):
    image, text = _separated(rng, 1000, 256)
    start = time.perf_counter()
    boot = bootstrap_gap(image, text, n_boot=40, seed=0)
    elapsed = time.perf_counter() - start
    assert boot["distribution_gap"].n_boot == 40
    assert elapsed < 15.0, f"40 resamples of 1000 x 256 took {elapsed:.1f} s"


# --------------------------------------------------------------------------- errors
def test_errors_say_what_to_fix(rng):
    image, text = _sphere(rng, 50, 4), _sphere(rng, 50, 4)
    assert issubclass(GapUncertaintyError, ValueError)
    assert issubclass(GapUncertaintyError, GeometryError)
    with pytest.raises(GapUncertaintyError, match="dimensions differ: 4 vs 5"):
        bootstrap_gap(image, _sphere(rng, 50, 5), n_boot=40)
    with pytest.raises(GapUncertaintyError, match="image has 1 row"):
        bootstrap_gap(image[:1], text, n_boot=40)
    with pytest.raises(GapUncertaintyError, match="x has 3 row.*at least 4"):
        sampling_floor(image[:3])
    with pytest.raises(GapUncertaintyError, match="2-D array"):
        sampling_floor(image[0])
    with pytest.raises(GapUncertaintyError, match="floating point"):
        sampling_floor(np.ones((10, 3), dtype=np.int64))
    for level in (0.0, 1.0, 1.5, -0.1, math.nan, True):
        with pytest.raises(GapUncertaintyError, match=r"level must be a number in \(0, 1\)"):
            bootstrap_gap(image, text, n_boot=40, level=level)
    with pytest.raises(GapUncertaintyError, match="n_boot >= 40"):
        bootstrap_gap(image, text, n_boot=10)
    with pytest.raises(GapUncertaintyError, match="method must be one of"):
        bootstrap_gap(image, text, n_boot=40, method="bca")  # type: ignore[arg-type]
    with pytest.raises(GapUncertaintyError, match="n_repeats must be an int >= 1"):
        sampling_floor(image, n_repeats=0)
    for bad in (math.nan, math.inf):
        dirty = text.copy()
        dirty[7, 2] = bad
        with pytest.raises(GapUncertaintyError, match="text has 1 row.*NaN or inf; drop them"):
            bootstrap_gap(image, dirty, n_boot=40)
        with pytest.raises(GapUncertaintyError, match="NaN or inf"):
            sampling_floor(dirty)
        with pytest.raises(GapUncertaintyError, match="NaN or inf"):
            scale_free_bures(dirty, image)


def test_uncertainty_table_same_distribution_sits_on_its_floor() -> None:
    """Images and texts from one distribution: every half-sample gap is within the floor's noise;
    a real shift puts the centroid gap far above it, with an interval around the estimate."""
    from tpccma_lib.gap.uncertainty import UNCERTAINTY_COLUMNS, uncertainty_table

    rng = np.random.default_rng(3)
    image, text = _sphere(rng, 400, 8), _sphere(rng, 1200, 8)
    table = uncertainty_table(image, text, n_repeats=30, n_boot=100, seed=1).set_index("metric")
    assert list(table.reset_index().columns) == list(UNCERTAINTY_COLUMNS)
    for metric in BOOTSTRAP_METRICS:
        row = table.loc[metric]
        assert abs(row.half_sample - row.floor) < 4 * row.floor_std + 1e-3, metric
    shifted = uncertainty_table(_sphere(rng, 400, 8, shift=1.0), text, n_boot=100).set_index(
        "metric"
    )
    centroid = shifted.loc["centroid_gap"]
    assert centroid.half_sample > centroid.floor + 5 * centroid.floor_std
    assert centroid.ci_low < centroid.estimate < centroid.ci_high


def test_uncertainty_table_estimates_match_decompose() -> None:
    """The table's estimates are geometry.decompose's numbers and Bures / spread (numpy)."""
    from tpccma_lib.gap.uncertainty import uncertainty_table

    rng = np.random.default_rng(4)
    emb = Embeddings.from_arrays(
        _sphere(rng, 300, 6, shift=0.5), _sphere(rng, 900, 6), np.arange(900) // 3
    )
    image, text = emb.image, emb.text
    table = uncertainty_table(image, text, n_repeats=5, n_boot=40).set_index("metric")
    dec = decompose(emb)
    assert table.loc["centroid_gap", "estimate"] == pytest.approx(dec.centroid_gap, rel=1e-9)
    assert table.loc["distribution_gap", "estimate"] == pytest.approx(
        dec.distribution_gap, rel=1e-6
    )
    x, y = image.astype(np.float64), text.astype(np.float64)
    spread = math.sqrt(0.5 * (np.trace(np.cov(x.T, bias=True)) + np.trace(np.cov(y.T, bias=True))))
    assert table.loc["scale_free_bures", "estimate"] == pytest.approx(
        dec.distribution_gap / spread, rel=1e-6
    )
    with pytest.raises(GapUncertaintyError):
        uncertainty_table(image[:3], text)
