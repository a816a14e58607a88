"""Tests of tpccma_lib.viz.gap: projections, similarity samples, decomposition and post-hoc
tables, and the figures drawn from them (tiny synthetic embeddings, checked against
scikit-learn, scipy, closed forms and brute-force loops)."""

from __future__ import annotations

import base64
import io
import math
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from scipy.linalg import sqrtm
from sklearn.decomposition import PCA

from tpccma_lib.embeddings import Embeddings
from tpccma_lib.gap.checks import frechet_identity_check, posthoc_gap_effects
from tpccma_lib.gap.metrics import decompose
from tpccma_lib.viz import gap as viz_gap
from tpccma_lib.viz.gap import (
    VizError,
    caption_table,
    cosine_similarities,
    decomposition_figure,
    decomposition_table,
    image_grid_figure,
    pca_2d,
    posthoc_effect_figure,
    project_2d,
    projection_figure,
    similarity_histogram_figure,
    similarity_summary,
)


def _embeddings(
    rng: np.random.Generator, n_images: int = 12, captions: int = 3, dim: int = 6
) -> Embeddings:
    """Images and captions around two different means; captions near their image."""
    image = rng.normal(size=(n_images, dim)) + 2.0 * np.eye(dim)[0]
    t2i = np.repeat(np.arange(n_images), captions)
    text = image[t2i] + 0.5 * rng.normal(size=(t2i.size, dim)) + 2.0 * np.eye(dim)[1]
    return Embeddings.from_arrays(
        image,
        text,
        text_to_image=t2i,
        image_labels=np.arange(n_images) % 3,
        class_names=("a", "b", "c"),
        meta={"dataset": "synthetic", "split": "test"},
    )


def _align_signs(ours: np.ndarray, reference: np.ndarray) -> np.ndarray:
    signs = np.sign(np.sum(ours * reference, axis=0))
    return ours * signs


# --------------------------------------------------------------------------- projection
def test_pca_2d_matches_sklearn(rng: np.random.Generator) -> None:
    x = rng.normal(size=(40, 7)) * np.array([5.0, 3.0, 1.0, 1.0, 0.5, 0.3, 0.1])
    coords, ratio = pca_2d(x)
    reference = PCA(n_components=2, svd_solver="full").fit(x)
    expected = reference.transform(x)
    np.testing.assert_allclose(_align_signs(coords, expected), expected, atol=1e-10)
    np.testing.assert_allclose(ratio, reference.explained_variance_ratio_, rtol=1e-10)


def test_pca_2d_sign_convention_is_deterministic(rng: np.random.Generator) -> None:
    x = rng.normal(size=(30, 5))
    coords, _ = pca_2d(x)
    flipped, _ = pca_2d(-x)  # same axes up to sign: the convention must undo the flip
    np.testing.assert_allclose(flipped, -coords, atol=1e-10)
    _, _, axes = np.linalg.svd(x - x.mean(axis=0), full_matrices=False)
    projected = (x - x.mean(axis=0)) @ axes[:2].T
    np.testing.assert_allclose(np.abs(coords), np.abs(projected), atol=1e-10)


def test_caption_rank_matches_a_loop(rng: np.random.Generator) -> None:
    t2i = rng.integers(0, 5, size=40)
    rank = viz_gap._caption_rank(t2i)
    seen: dict[int, int] = {}
    for k, image in enumerate(t2i):
        assert rank[k] == seen.get(int(image), 0)
        seen[int(image)] = seen.get(int(image), 0) + 1


def test_project_2d_pca_uses_images_and_first_captions(rng: np.random.Generator) -> None:
    emb = _embeddings(rng)
    projection = project_2d(emb, "pca")
    points = projection.points
    first_captions = np.arange(emb.n_texts)[::3]  # 3 captions per image, image order
    assert (points.modality == "image").sum() == emb.n_images
    np.testing.assert_array_equal(points.row[points.modality == "text"], first_captions)
    pooled = np.concatenate([emb.image, emb.text[first_captions]]).astype(np.float64)
    reference = PCA(n_components=2, svd_solver="full").fit(pooled)
    expected = reference.transform(pooled)
    coords = points[["x", "y"]].to_numpy()
    np.testing.assert_allclose(_align_signs(coords, expected), expected, atol=1e-6)
    np.testing.assert_allclose(
        projection.explained_variance_ratio, reference.explained_variance_ratio_, rtol=1e-6
    )
    text_labels = points.label[points.modality == "text"].to_numpy()
    np.testing.assert_array_equal(text_labels, emb.image_labels[emb.text_to_image[first_captions]])
    assert set(points.class_name) == {"a", "b", "c"}


def test_project_2d_all_captions_and_errors(rng: np.random.Generator) -> None:
    emb = _embeddings(rng)
    assert len(project_2d(emb, captions_per_image=None).points) == emb.n_images + emb.n_texts
    assert len(project_2d(emb, captions_per_image=2).points) == emb.n_images + 2 * emb.n_images
    with pytest.raises(VizError, match="unknown projection"):
        project_2d(emb, "umap")
    with pytest.raises(VizError, match="captions_per_image"):
        project_2d(emb, captions_per_image=0)


def test_project_2d_tsne_is_seeded(rng: np.random.Generator) -> None:
    emb = _embeddings(rng, n_images=10, captions=1)
    first = project_2d(emb, "tsne", seed=3)
    again = project_2d(emb, "tsne", seed=3)
    assert first.method == "tsne" and first.explained_variance_ratio is None
    assert first.points.shape[0] == 20
    np.testing.assert_allclose(first.points[["x", "y"]], again.points[["x", "y"]])


def test_projection_figure_traces(rng: np.random.Generator) -> None:
    emb = _embeddings(rng)
    projection = project_2d(emb)
    fig = projection_figure(projection, title="synthetic")
    assert [trace.name for trace in fig.data] == ["image", "text"]
    image_points = projection.points[projection.points.modality == "image"]
    np.testing.assert_allclose(fig.data[0].x, image_points.x, atol=1e-4)
    np.testing.assert_allclose(fig.data[0].y, image_points.y, atol=1e-4)
    symbols = list(fig.data[0].marker.symbol)
    # same class -> same symbol, different classes -> different symbols
    for label, symbol in zip(image_points.label, symbols, strict=True):
        assert symbol == symbols[int(np.flatnonzero(image_points.label == label)[0])]
    assert len(set(symbols)) == 3
    assert "% of variance" in fig.layout.xaxis.title.text


# --------------------------------------------------------------------------- similarities
def test_cosine_similarities_closed_form() -> None:
    """Orthonormal images, captions equal to their image: matched 1, unmatched and
    image-image 0, text-text 1 exactly when both captions describe one image."""
    dim, captions = 8, 4
    image = np.eye(dim)
    t2i = np.repeat(np.arange(dim), captions)
    emb = Embeddings.from_arrays(image * 3.0, image[t2i] * 0.5, text_to_image=t2i)
    sims = cosine_similarities(emb, n_samples=4000, seed=1)
    np.testing.assert_allclose(sims["matched image-text"], 1.0, atol=1e-6)
    assert sims["matched image-text"].size == emb.n_texts
    np.testing.assert_allclose(sims["unmatched image-text"], 0.0, atol=1e-6)
    np.testing.assert_allclose(sims["image-image"], 0.0, atol=1e-6)
    text_text = sims["text-text"]
    assert set(np.round(text_text, 6)) <= {0.0, 1.0}
    share_same = (captions - 1) / (emb.n_texts - 1)  # distinct captions of one image
    assert abs(text_text.mean() - share_same) < 4 * math.sqrt(share_same / 4000)


def test_cosine_similarities_match_brute_force(rng: np.random.Generator) -> None:
    emb = _embeddings(rng)
    sims = cosine_similarities(emb, n_samples=50, seed=0)
    for k in range(emb.n_texts):
        a, b = emb.image[emb.text_to_image[k]], emb.text[k]
        expected = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
        assert sims["matched image-text"][k] == pytest.approx(expected, abs=1e-6)
    again = cosine_similarities(emb, n_samples=50, seed=0)
    for kind in sims:
        np.testing.assert_array_equal(sims[kind], again[kind])
    assert all(np.all(np.abs(v) <= 1 + 1e-6) for v in sims.values())


def test_similarity_summary_matches_numpy(rng: np.random.Generator) -> None:
    sims = {"p": rng.normal(size=101), "q": rng.uniform(size=7)}
    table = similarity_summary(sims)
    assert list(table.pairs) == ["p", "q"]
    for row, values in zip(table.itertuples(), sims.values(), strict=True):
        assert row.n == values.size
        assert row.mean == pytest.approx(np.mean(values))
        assert row.std == pytest.approx(np.std(values))
        assert row.median == pytest.approx(np.median(values))
        assert row.p95 == pytest.approx(np.quantile(values, 0.95))


def test_similarity_histogram_figure(rng: np.random.Generator) -> None:
    emb = _embeddings(rng)
    sims = cosine_similarities(emb, n_samples=500, seed=0)
    fig = similarity_histogram_figure(sims, bins=20)
    assert [trace.name for trace in fig.data] == list(sims)
    axes = {trace.name: trace.xaxis for trace in fig.data}
    assert axes["matched image-text"] == axes["unmatched image-text"] == "x"
    assert axes["image-image"] == axes["text-text"] == "x2"
    for trace in fig.data:
        width = trace.x[1] - trace.x[0]
        assert sum(trace.y) * width == pytest.approx(1.0, abs=1e-2)  # a density


# --------------------------------------------------------------------------- decomposition
def _exact_gaussian_sample(
    rng: np.random.Generator, n: int, mean: np.ndarray, scale: np.ndarray
) -> np.ndarray:
    """Rows whose ML mean is ``mean`` and ML covariance is exactly diag(scale^2)."""
    z = rng.normal(size=(n, mean.size))
    z -= z.mean(axis=0)
    q, _ = np.linalg.qr(z)  # orthonormal, zero-mean columns
    return q * math.sqrt(n) * scale + mean


@pytest.mark.filterwarnings("ignore::tpccma_lib.gap.metrics.UnnormalizedInputWarning")
def test_frechet_identity_check_closed_form(rng: np.random.Generator) -> None:
    """Diagonal covariances commute: W2^2 = ||mu_x - mu_y||^2 + sum (s_x - s_y)^2."""
    dim = 5
    mean_x, mean_y = rng.normal(size=dim), rng.normal(size=dim)
    scale_x, scale_y = rng.uniform(0.5, 2.0, dim), rng.uniform(0.5, 2.0, dim)
    x = _exact_gaussian_sample(rng, 60, mean_x, scale_x)
    y = _exact_gaussian_sample(rng, 80, mean_y, scale_y)
    emb = Embeddings.from_arrays(x, y, text_to_image=np.arange(80) % 60, normalize=False)
    d = decompose(emb)
    check = frechet_identity_check(emb, d)
    expected = np.sum((mean_x - mean_y) ** 2) + np.sum((scale_x - scale_y) ** 2)
    assert check["w2_sq_direct"] == pytest.approx(expected, rel=1e-4)
    assert check["centroid_sq + distribution_sq"] == pytest.approx(expected, rel=1e-4)
    assert check["abs_difference"] < 1e-4 * expected
    assert check["centroid_sq"] == pytest.approx(np.sum((mean_x - mean_y) ** 2), rel=1e-4)


def test_decomposition_table_and_figure(rng: np.random.Generator) -> None:
    emb = _embeddings(rng, n_images=30)
    d = decompose(emb)
    table = decomposition_table(d)
    for row in table.itertuples():
        expected = getattr(d, row.metric)
        assert (math.isnan(row.value) and math.isnan(expected)) or row.value == expected
    assert {"centroid_gap", "distribution_gap", "frechet_distance", "mmd2"} <= set(table.metric)
    fig = decomposition_figure(d)
    distances, centroid_part, shape_part = fig.data
    np.testing.assert_allclose(
        distances.y, [d.raw_gap, d.centroid_gap, d.distribution_gap, d.frechet_distance]
    )
    stacked = np.asarray(centroid_part.y) + np.asarray(shape_part.y)
    np.testing.assert_allclose(stacked[0], d.frechet_distance**2, rtol=1e-9)
    paired_x, paired_y = emb.paired()
    brute = np.mean(np.sum((paired_x.astype(float) - paired_y) ** 2, axis=1))
    np.testing.assert_allclose(stacked[1], brute, rtol=1e-5)
    assert fig.layout.barmode == "stack"


# --------------------------------------------------------------------------- post-hoc effects
def _bures_scipy(x: np.ndarray, y: np.ndarray) -> float:
    sx, sy = np.cov(x, rowvar=False, bias=True), np.cov(y, rowvar=False, bias=True)
    root = np.real(sqrtm(sx))
    value = np.trace(sx) + np.trace(sy) - 2 * np.trace(np.real(sqrtm(root @ sy @ root)))
    return math.sqrt(max(value, 0.0))


def test_posthoc_gap_effects_against_brute_force(rng: np.random.Generator) -> None:
    fit, target = _embeddings(rng, n_images=40), _embeddings(rng, n_images=50)
    methods = ("identity", "mean_center", "procrustes", "coral")
    effects = posthoc_gap_effects(fit, target, methods)
    assert list(effects.method) == [m for m in methods for _ in range(2)]
    assert list(effects.stage) == ["mapped", "renormalized"] * len(methods)
    by = {(r.method, r.stage): r for r in effects.itertuples()}
    image, text = target.image.astype(float), target.text.astype(float)
    base_centroid = np.linalg.norm(image.mean(0) - text.mean(0))
    base_distribution = _bures_scipy(image, text)
    for stage in ("mapped", "renormalized"):
        row = by[("identity", stage)]
        assert row.centroid_gap == pytest.approx(base_centroid, rel=1e-6)
        assert row.distribution_gap == pytest.approx(base_distribution, rel=1e-5)
        assert row.centroid_change_pct == pytest.approx(0.0, abs=1e-6)
    # mean_center is a translation fitted on `fit`: the shape is untouched before renormalising
    mc = by[("mean_center", "mapped")]
    fit_offset = fit.image.astype(float).mean(0) - fit.text.astype(float).mean(0)
    expected_centroid = np.linalg.norm(image.mean(0) - text.mean(0) - fit_offset)
    assert mc.centroid_gap == pytest.approx(expected_centroid, rel=1e-6)
    assert mc.distribution_gap == pytest.approx(base_distribution, rel=1e-5)
    # a rotation keeps unit rows on the sphere: both stages agree
    assert by[("procrustes", "mapped")].distribution_gap == pytest.approx(
        by[("procrustes", "renormalized")].distribution_gap, rel=1e-5
    )
    for row in effects.itertuples():
        assert row.centroid_change_pct == pytest.approx(
            100 * (row.centroid_gap / base_centroid - 1), rel=1e-6, abs=1e-6
        )
        assert row.distribution_change_pct == pytest.approx(
            100 * (row.distribution_gap / base_distribution - 1), rel=1e-4, abs=1e-4
        )
        assert row.relative_distribution_gap == pytest.approx(
            row.distribution_gap / row.spread, rel=1e-9
        )


def test_posthoc_fit_on_target_closes_the_centroid_gap(rng: np.random.Generator) -> None:
    emb = _embeddings(rng, n_images=30)
    effects = posthoc_gap_effects(emb, emb, ["mean_center"])
    mapped = effects[effects.stage == "mapped"].iloc[0]
    assert mapped.centroid_gap == pytest.approx(0.0, abs=1e-9)
    assert mapped.centroid_change_pct == pytest.approx(-100.0, abs=1e-6)


def test_posthoc_effect_figure(rng: np.random.Generator) -> None:
    emb = _embeddings(rng, n_images=30)
    effects = posthoc_gap_effects(emb, emb, ["identity", "shift", "whiten"])
    fig = posthoc_effect_figure(effects, stages=("mapped", "renormalized"))
    assert len(fig.data) == 6
    renorm = effects[effects.stage == "renormalized"]
    centroid_bars = [t for t in fig.data if t.name == "centroid gap"]
    assert [t.xaxis for t in centroid_bars] == ["x", "x2"]
    assert list(centroid_bars[1].x) == ["identity", "shift", "whiten"]
    np.testing.assert_allclose(centroid_bars[1].y, renorm.centroid_change_pct, atol=1e-4)
    assert len(posthoc_effect_figure(effects).data) == 3
    with pytest.raises(VizError, match="not in the table"):
        posthoc_effect_figure(effects, stages=("raw",))


# --------------------------------------------------------------------------- the data
def test_image_grid_figure_round_trips_pixels(rng: np.random.Generator) -> None:
    images = [rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8) for _ in range(5)]
    fig = image_grid_figure(images, titles=["a", "b"], columns=3)
    assert len(fig.data) == 5
    for trace, image in zip(fig.data, images, strict=True):
        prefix = "data:image/png;base64,"
        assert trace.source.startswith(prefix)
        decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(trace.source[len(prefix) :]))))
        np.testing.assert_array_equal(decoded, image)
    assert [a.text for a in fig.layout.annotations][:2] == ["a", "b"]
    assert fig.data[4].xaxis == "x5"  # second row, second column of a 3-column grid
    with pytest.raises(VizError):
        image_grid_figure([])


def test_caption_table_lists_every_caption() -> None:
    dataset = SimpleNamespace(
        labels=np.array([1, -1, 0]),
        class_names=("zero", "one"),
        captions=[["x", "y"], ["z"], ["w", "v", "u"]],
    )
    table = caption_table(dataset, [0, 1])
    assert list(table.caption) == ["x", "y", "z"]
    assert list(table["class"]) == ["one", "one", "-"]
    assert list(table.image) == [0, 0, 1]
