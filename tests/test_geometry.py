"""Gap metrics against closed forms and independent implementations (scipy, sklearn, loops)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.linalg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.stats import ortho_group

from tpccma_lib import Embeddings
from tpccma_lib.gap.metrics import (
    GeometryError,
    UnnormalizedInputWarning,
    bures_distance,
    centroid_gap,
    decompose,
    distribution_gap,
    frechet_distance,
    intra_modal_spread,
    mean_and_covariance,
    mean_paired_distance,
    median_heuristic_bandwidth,
    mmd2_linear,
    mmd2_unbiased,
    modality_moments,
    modality_separability,
    paired_decomposition,
    raw_gap,
    relative_gap,
)


# --------------------------------------------------------------------------- helpers
def exact_gaussian_sample(
    rng: np.random.Generator, n: int, mean: np.ndarray, cov: np.ndarray
) -> np.ndarray:
    """n rows whose sample mean and ML covariance equal ``mean`` and ``cov`` exactly."""
    dim = mean.shape[0]
    z = rng.normal(size=(n, dim))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(z.T @ z / n)).T  # ML covariance = I
    return z @ np.linalg.cholesky(cov).T + mean


def random_spd(rng: np.random.Generator, dim: int) -> np.ndarray:
    a = rng.normal(size=(dim, dim))
    return a @ a.T / dim + 0.1 * np.eye(dim)


def bures_by_sqrtm(cov_x: np.ndarray, cov_y: np.ndarray) -> float:
    root = np.real(scipy.linalg.sqrtm(cov_x))
    cross = np.real(scipy.linalg.sqrtm(root @ cov_y @ root))
    return math.sqrt(max(np.trace(cov_x) + np.trace(cov_y) - 2 * np.trace(cross), 0.0))


def rbf(a: np.ndarray, b: np.ndarray, sigma: float) -> float:
    return math.exp(-float(np.sum((a - b) ** 2)) / (2 * sigma**2))


def mmd2_double_loop(x: np.ndarray, y: np.ndarray, sigma: float) -> float:
    m, n = len(x), len(y)
    kxx = sum(rbf(x[i], x[j], sigma) for i in range(m) for j in range(m) if i != j)
    kyy = sum(rbf(y[i], y[j], sigma) for i in range(n) for j in range(n) if i != j)
    kxy = sum(rbf(x[i], y[j], sigma) for i in range(m) for j in range(n))
    return kxx / (m * (m - 1)) + kyy / (n * (n - 1)) - 2 * kxy / (m * n)


def gapped_embeddings(rng, n_img=40, per=2, dim=6, gap=1.5, meta=None) -> Embeddings:
    direction = np.zeros(dim)
    direction[0] = gap
    image = rng.normal(size=(n_img, dim)) + direction
    text = rng.normal(size=(n_img * per, dim)) * 0.7 - direction
    return Embeddings.from_arrays(
        image,
        text,
        text_to_image=np.repeat(np.arange(n_img), per),
        meta=meta or {"dataset": "toy", "split": "test"},
    )


# --------------------------------------------------------------------------- moments
def test_blocked_covariance_equals_unblocked(rng):
    x = rng.normal(size=(203, 7)) * rng.uniform(0.1, 3, size=7) + 50.0  # large offset
    for block_rows in (1, 7, 64, 1000):
        mean, cov = mean_and_covariance(x, block_rows=block_rows)
        np.testing.assert_allclose(mean, x.mean(axis=0), rtol=0, atol=1e-12)
        np.testing.assert_allclose(cov, np.cov(x.T, bias=True), rtol=1e-11, atol=1e-12)
    moments = modality_moments(x, block_rows=13, ddof=1)
    np.testing.assert_allclose(moments.covariance, np.cov(x.T), rtol=1e-11)
    np.testing.assert_allclose(moments.variance, x.var(axis=0, ddof=1), rtol=1e-11)
    norms = np.linalg.norm(x, axis=1)
    assert moments.min_norm == pytest.approx(norms.min()) and moments.max_norm == pytest.approx(
        norms.max()
    )
    unit = x / norms[:, None]
    np.testing.assert_allclose(moments.unit_mean, unit.mean(axis=0), atol=1e-12)


def test_moments_do_not_modify_float64_input(rng):
    x = rng.normal(size=(20, 3))
    before = x.copy()
    modality_moments(x, block_rows=6)
    np.testing.assert_array_equal(x, before)


# --------------------------------------------------------------------------- Bures / Fréchet
def test_bures_closed_form_for_commuting_covariances(rng):
    a, b = rng.uniform(0.1, 2.0, size=5), rng.uniform(0.1, 2.0, size=5)
    expected = math.sqrt(np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
    assert bures_distance(np.diag(a), np.diag(b)) == pytest.approx(expected, rel=1e-10)
    cov = random_spd(rng, 5)  # S_y = c^2 S_x  =>  B = |1 - c| sqrt(tr S_x)
    assert bures_distance(cov, 9.0 * cov) == pytest.approx(2.0 * math.sqrt(np.trace(cov)))


def test_bures_matches_scipy_sqrtm(rng):
    for dim in (1, 3, 8):
        cov_x, cov_y = random_spd(rng, dim), random_spd(rng, dim)
        assert bures_distance(cov_x, cov_y) == pytest.approx(bures_by_sqrtm(cov_x, cov_y), rel=1e-8)
        assert bures_distance(cov_x, cov_y) == pytest.approx(bures_distance(cov_y, cov_x))


def test_bures_of_rank_deficient_covariances(rng):
    u = rng.normal(size=(6, 2))
    cov_x = u @ u.T  # rank 2: tiny negative eigenvalues must be clipped, not NaN
    cov_y = random_spd(rng, 6)
    assert bures_distance(cov_x, cov_x) == pytest.approx(0.0, abs=1e-6)
    assert bures_distance(cov_x, cov_y) == pytest.approx(bures_by_sqrtm(cov_y, cov_x), rel=1e-6)


def test_two_gaussians_with_known_moments(rng):
    dim = 5
    mean_x, mean_y = rng.normal(size=dim), rng.normal(size=dim)
    cov_x, cov_y = random_spd(rng, dim), random_spd(rng, dim)
    x = exact_gaussian_sample(rng, 300, mean_x, cov_x)
    y = exact_gaussian_sample(rng, 200, mean_y, cov_y)
    assert centroid_gap(x, y) == pytest.approx(np.linalg.norm(mean_x - mean_y), rel=1e-10)
    assert distribution_gap(x, y) == pytest.approx(bures_by_sqrtm(cov_x, cov_y), rel=1e-8)
    w2_sq = np.sum((mean_x - mean_y) ** 2) + bures_by_sqrtm(cov_x, cov_y) ** 2
    assert frechet_distance(mean_x, cov_x, mean_y, cov_y, squared=True) == pytest.approx(
        w2_sq, rel=1e-8
    )
    spread = math.sqrt((np.trace(cov_x) + np.trace(cov_y)) / 2)
    assert intra_modal_spread(x, y) == pytest.approx(spread, rel=1e-10)
    assert relative_gap(x, y) == pytest.approx(np.linalg.norm(mean_x - mean_y) / spread)


def test_fréchet_decomposes_exactly(rng):
    x = rng.normal(size=(80, 4)) * [1, 2, 0.5, 1] + 1.0
    y = rng.normal(size=(60, 4)) @ random_spd(rng, 4)
    mx, cx = mean_and_covariance(x)
    my, cy = mean_and_covariance(y)
    total_sq = frechet_distance(mx, cx, my, cy) ** 2
    parts_sq = centroid_gap(x, y) ** 2 + distribution_gap(x, y) ** 2
    assert total_sq == pytest.approx(parts_sq, abs=1e-10)


def test_identical_distribution_has_no_distribution_gap(rng):
    x = rng.normal(size=(100, 6))
    y = x[rng.permutation(100)]
    assert centroid_gap(x, y) == pytest.approx(0.0, abs=1e-12)
    assert distribution_gap(x, y) == pytest.approx(0.0, abs=1e-6)
    sigma = median_heuristic_bandwidth(x, y)
    # Same samples: MMD_u^2 = -2 * (self-similarity of the n diagonal pairs) / n^2 < 0, small.
    assert abs(mmd2_unbiased(x, y, sigma)) < 0.05
    far = rng.normal(size=(100, 6)) * 3.0
    assert mmd2_unbiased(x, far, sigma) > 10 * abs(mmd2_unbiased(x, y, sigma))


def test_pure_translation_is_all_centroid_gap(rng):
    x = rng.normal(size=(150, 5)) @ random_spd(rng, 5)
    shift = np.array([0.5, -1.0, 2.0, 0.0, 0.25])
    y = x + shift
    assert centroid_gap(x, y) == pytest.approx(np.linalg.norm(shift), rel=1e-12)
    assert distribution_gap(x, y) == pytest.approx(0.0, abs=1e-6)
    sigma = median_heuristic_bandwidth(x, y, center=True)
    assert mmd2_unbiased(x, y, sigma, center=True) == pytest.approx(
        mmd2_unbiased(x, x, sigma), abs=1e-12
    )


def test_rotation_of_one_modality(rng):
    x = rng.normal(size=(120, 4)) * [2.0, 1.0, 0.5, 0.2] + [1.0, 0.0, 0.0, 0.0]
    rotation = ortho_group.rvs(4, random_state=1)
    y = x @ rotation
    mean, cov = x.mean(axis=0), np.cov(x.T, bias=True)
    assert centroid_gap(x, y) == pytest.approx(np.linalg.norm(mean - mean @ rotation))
    expected = bures_by_sqrtm(cov, rotation.T @ cov @ rotation)
    assert distribution_gap(x, y) == pytest.approx(expected, rel=1e-7)


# --------------------------------------------------------------------------- paired
def test_paired_decomposition_identity_and_parts(rng):
    x = rng.normal(size=(57, 5)) + 1.0
    y = 0.5 * x + rng.normal(size=(57, 5))
    parts = paired_decomposition(x, y, block_rows=10)
    diff = x - y
    assert parts.mean_sq_distance == pytest.approx(np.mean(np.sum(diff**2, axis=1)), rel=1e-12)
    assert parts.centroid_sq == pytest.approx(np.sum((x.mean(0) - y.mean(0)) ** 2), rel=1e-12)
    residual = (x - x.mean(0)) - (y - y.mean(0))
    assert parts.residual_sq == pytest.approx(np.mean(np.sum(residual**2, axis=1)), rel=1e-12)
    assert abs(parts.mean_sq_distance - (parts.centroid_sq + parts.residual_sq)) < 1e-10
    assert mean_paired_distance(x, y) == pytest.approx(np.mean(np.linalg.norm(diff, axis=1)))


def test_decompose_paired_metrics_follow_embeddings_paired(rng):
    emb = gapped_embeddings(rng, n_img=30, per=3)
    result = decompose(emb, block_rows=7)
    image, text = emb.paired()
    parts = paired_decomposition(image, text)
    assert result.mean_paired_distance == pytest.approx(mean_paired_distance(image, text))
    assert result.paired_sq_distance == pytest.approx(parts.mean_sq_distance, rel=1e-12)
    assert result.paired_residual_sq == pytest.approx(parts.residual_sq, rel=1e-12)
    assert (
        abs(result.paired_sq_distance - result.paired_centroid_sq - result.paired_residual_sq)
        < 1e-10
    )
    assert abs(result.frechet_distance**2 - result.centroid_gap**2 - result.distribution_gap**2) < (
        1e-10
    )


# --------------------------------------------------------------------------- MMD
def test_mmd2_unbiased_matches_double_loop(rng):
    x = rng.normal(size=(13, 3))
    y = rng.normal(size=(9, 3)) * 1.5 + 0.3
    for sigma in (0.5, 1.0, 3.0):
        assert mmd2_unbiased(x, y, sigma) == pytest.approx(mmd2_double_loop(x, y, sigma), abs=1e-12)
    centred = mmd2_double_loop(x - x.mean(0), y - y.mean(0), 1.0)
    assert mmd2_unbiased(x, y, 1.0, center=True) == pytest.approx(centred, abs=1e-12)


def test_median_heuristic_matches_scipy_on_all_points(rng):
    x, y = rng.normal(size=(20, 4)), rng.normal(size=(15, 4)) + 1
    pooled = np.concatenate([x, y])
    expected = np.median(scipy.spatial.distance.pdist(pooled))
    assert median_heuristic_bandwidth(x, y, max_samples=1000) == pytest.approx(expected)


def test_linear_mmd_agrees_with_exact_within_its_error(rng):
    x = rng.normal(size=(3000, 4))
    y = rng.normal(size=(3000, 4)) * [2.0, 1.0, 1.0, 0.5]
    sigma = median_heuristic_bandwidth(x, y)
    exact = mmd2_unbiased(x, y, sigma)
    assert exact > 0.01  # the distributions differ
    for seed in range(3):
        est = mmd2_linear(x, y, sigma, seed=seed, confidence=0.99)
        assert est.n_terms == 1500 and est.estimator == "linear-time"
        assert abs(est.value - exact) <= est.hoeffding_bound
        assert abs(est.value - exact) <= 4 * est.std_error
    expected_bound = math.sqrt(8 * math.log(2 / 0.01) / 1500)
    assert est.hoeffding_bound == pytest.approx(expected_bound)


def test_linear_mmd_terms_by_hand(rng):
    x, y = rng.normal(size=(6, 2)), rng.normal(size=(5, 2)) + 1
    est = mmd2_linear(x, y, 1.3, seed=4)
    gen = np.random.default_rng(4)
    ox, oy = gen.permutation(6)[:4], gen.permutation(5)[:4]
    h = [
        rbf(x[ox[2 * t]], x[ox[2 * t + 1]], 1.3)
        + rbf(y[oy[2 * t]], y[oy[2 * t + 1]], 1.3)
        - rbf(x[ox[2 * t]], y[oy[2 * t + 1]], 1.3)
        - rbf(x[ox[2 * t + 1]], y[oy[2 * t]], 1.3)
        for t in range(2)
    ]
    assert est.value == pytest.approx(np.mean(h), abs=1e-12)
    assert est.std_error == pytest.approx(np.std(h, ddof=1) / math.sqrt(2), rel=1e-9)


def test_decompose_uses_linear_mmd_above_threshold(rng):
    emb = gapped_embeddings(rng, n_img=60, per=1)
    exact = decompose(emb)
    linear = decompose(emb, mmd_max_samples=50)
    assert exact.mmd_estimator == "unbiased-quadratic" and math.isnan(exact.mmd2_std_error)
    assert linear.mmd_estimator == "linear-time" and linear.mmd_n_terms == 30
    assert abs(linear.mmd2 - exact.mmd2) <= linear.mmd2_hoeffding_bound
    image, text = emb.image, emb.text
    sigma = median_heuristic_bandwidth(image, text, center=True)
    assert exact.mmd2 == pytest.approx(mmd2_unbiased(image, text, sigma, center=True), abs=1e-12)


# --------------------------------------------------------------------------- separability
def test_separability_matches_direct_sklearn_fit(rng):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    x = rng.normal(size=(70, 5)) + [0.6, 0, 0, 0, 0]
    y = rng.normal(size=(70, 5))
    features = np.concatenate([x, y])
    labels = np.repeat([0, 1], 70)
    a, b, la, lb = train_test_split(
        features, labels, test_size=0.3, random_state=3, stratify=labels
    )
    scaler = StandardScaler().fit(a)
    clf = LogisticRegression(max_iter=1000).fit(scaler.transform(a), la)
    expected = clf.score(scaler.transform(b), lb)
    assert modality_separability(x, y, seed=3) == pytest.approx(expected)
    assert modality_separability(x + 5.0, y, seed=3) == 1.0


def test_separability_subsamples_balanced_and_seeded(rng):
    x, y = rng.normal(size=(400, 3)), rng.normal(size=(90, 3))
    first = modality_separability(x, y, max_samples=50, seed=1)
    assert first == modality_separability(x, y, max_samples=50, seed=1)
    assert 0.2 <= first <= 0.8  # same distribution: near chance (0.5)


# --------------------------------------------------------------------------- invariances
def _rotated(emb: Embeddings, rotation: np.ndarray) -> Embeddings:
    return emb.replace(image=emb.image @ rotation, text=emb.text @ rotation)


def _permuted(emb: Embeddings, rng: np.random.Generator) -> Embeddings:
    image_order = rng.permutation(emb.n_images)
    text_order = rng.permutation(emb.n_texts)
    new_index = np.argsort(image_order)  # old image i now sits at new_index[i]
    return emb.replace(
        image=emb.image[image_order],
        image_labels=emb.image_labels[image_order],
        text=emb.text[text_order],
        text_to_image=new_index[emb.text_to_image[text_order]],
    )


EXACT_METRICS = (
    "raw_gap",
    "centroid_gap",
    "distribution_gap",
    "frechet_distance",
    "image_total_variance",
    "text_total_variance",
    "spread",
    "relative_gap",
    "mean_paired_distance",
    "paired_sq_distance",
    "paired_centroid_sq",
    "paired_residual_sq",
    "mmd2",
    "mmd_bandwidth",
)  # linear-time MMD and separability depend on a seeded shuffle/split: not order-invariant


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    n_img=st.integers(6, 25),
    per=st.integers(1, 3),
    dim=st.integers(2, 6),
    bandwidth_samples=st.sampled_from([8, 2000]),  # 8: radial subsampling is active
)
def test_exact_metrics_invariant_to_rotation_and_permutation(
    seed, n_img, per, dim, bandwidth_samples
):
    rng = np.random.default_rng(seed)
    emb = gapped_embeddings(rng, n_img=n_img, per=per, dim=dim)
    rotation = ortho_group.rvs(dim, random_state=seed % 1000) if dim > 1 else np.eye(1)
    kw = {"bandwidth_max_samples": bandwidth_samples}
    base = decompose(emb, **kw)
    for other in (decompose(_rotated(emb, rotation), **kw), decompose(_permuted(emb, rng), **kw)):
        for name in EXACT_METRICS:
            assert getattr(other, name) == pytest.approx(getattr(base, name), rel=1e-6, abs=1e-6), (
                name
            )


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 40), block=st.integers(1, 50))
def test_blocked_moments_property(seed, n, block):
    x = np.random.default_rng(seed).normal(size=(n, 3)) * 10 + 5
    mean, cov = mean_and_covariance(x, block_rows=block)
    np.testing.assert_allclose(mean, x.mean(axis=0), atol=1e-10)
    np.testing.assert_allclose(cov, np.cov(x.T, bias=True), atol=1e-9)


# --------------------------------------------------------------------------- inputs
def test_bad_inputs_raise_clear_errors(rng):
    x = rng.normal(size=(10, 4))
    nan = x.copy()
    nan[3, 2] = np.nan
    inf = x.copy()
    inf[9, 0] = np.inf
    with pytest.raises(GeometryError, match="NaN or inf"):
        centroid_gap(nan, x)
    with pytest.raises(GeometryError, match="NaN or inf"):
        distribution_gap(x, inf)
    with pytest.raises(GeometryError, match="NaN or inf"):
        mmd2_unbiased(x, nan, 1.0)
    with pytest.raises(GeometryError, match="NaN or inf"):
        mmd2_linear(nan, x, 1.0)
    with pytest.raises(GeometryError, match="NaN or inf"):
        paired_decomposition(x, inf)
    with pytest.raises(GeometryError, match="dimensions differ"):
        distribution_gap(x, rng.normal(size=(10, 3)))
    with pytest.raises(GeometryError, match="at least 2 samples"):
        distribution_gap(x, x[:1])
    with pytest.raises(GeometryError, match="2-D"):
        centroid_gap(x[0], x)
    with pytest.raises(GeometryError, match="floating point"):
        centroid_gap(x.astype(int), x)
    with pytest.raises(GeometryError, match="one row per pair"):
        paired_decomposition(x, x[:5])
    with pytest.raises(GeometryError, match="bandwidth"):
        mmd2_unbiased(x, x, 0.0)
    with pytest.raises(GeometryError, match="square"):
        bures_distance(np.eye(3), np.ones((3, 2)))
    one = Embeddings.from_arrays(x[:1], x[:1])
    with pytest.raises(GeometryError, match="at least 2 images"):
        decompose(one)


def test_unnormalised_input_warns_and_is_computed_as_given(rng):
    emb = gapped_embeddings(rng)
    scaled = emb.replace(image=emb.image * 3.0)
    with pytest.warns(UnnormalizedInputWarning, match="not unit-norm"):
        result = decompose(scaled)
    assert not result.is_normalized
    image, text = scaled.image, scaled.text
    assert result.centroid_gap == pytest.approx(centroid_gap(image, text), rel=1e-9)
    assert result.raw_gap == pytest.approx(raw_gap(emb.image, emb.text), rel=1e-6)
    assert result.raw_gap != pytest.approx(result.centroid_gap, rel=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fixed = decompose(scaled, normalize=True)
        reference = decompose(emb)
    assert fixed.is_normalized and reference.is_normalized
    assert fixed.centroid_gap == pytest.approx(reference.centroid_gap, rel=1e-6)
    assert reference.raw_gap == pytest.approx(reference.centroid_gap, rel=1e-6)


def test_float16_input_upcasts_and_matches_float32(rng):
    x32 = (rng.normal(size=(300, 8)) + 0.5).astype(np.float32)
    y32 = (rng.normal(size=(200, 8)) * 0.8).astype(np.float32)
    x16, y16 = x32.astype(np.float16), y32.astype(np.float16)
    x_up, y_up = x16.astype(np.float32), y16.astype(np.float32)
    for fn in (centroid_gap, distribution_gap, raw_gap, intra_modal_spread):
        assert fn(x16, y16) == pytest.approx(fn(x_up, y_up), rel=1e-12)  # float64 accumulation
        assert fn(x16, y16) == pytest.approx(fn(x32, y32), rel=2e-3)  # only quantisation
    assert mmd2_unbiased(x16, y16, 2.0) == pytest.approx(mmd2_unbiased(x32, y32, 2.0), abs=1e-3)


def test_result_records(rng):
    emb = gapped_embeddings(rng, meta={"dataset": "toy", "split": "val", "dim": "clash"})
    result = decompose(emb, seed=5)
    row = result.as_row()
    assert list(row)[:3] == ["dataset", "split", "meta.dim"]
    assert row["dataset"] == "toy" and row["meta.dim"] == "clash" and row["dim"] == 6
    assert (row["n_images"], row["n_texts"]) == (emb.n_images, emb.n_texts)
    assert row["seed"] == 5 and set(row) >= set(EXACT_METRICS)
    as_dict = result.as_dict()
    assert as_dict["meta"] == dict(emb.meta) and as_dict["centroid_gap"] == result.centroid_gap
    nested = decompose(emb.replace(meta={"posthoc": {"method": "shift", "params": {"f": 1}}}))
    assert nested.as_row()["posthoc.method"] == "shift"
    assert nested.as_row()["posthoc.params.f"] == 1
    with pytest.raises(AttributeError):
        result.centroid_gap = 0.0  # frozen


def test_degenerate_clouds(rng):
    point_a, point_b = np.zeros((4, 3)), np.ones((5, 3))
    assert relative_gap(point_a, point_b) == math.inf  # zero spread, non-zero gap
    assert math.isnan(relative_gap(point_a, point_a))
    assert distribution_gap(point_a, point_b) == 0.0
    with pytest.raises(GeometryError, match="explicit bandwidth"):
        median_heuristic_bandwidth(point_a, point_a)
    with pytest.raises(GeometryError, match="NaN or inf"):
        median_heuristic_bandwidth(point_a, np.full((4, 3), np.nan))
