"""Tests of the gap explorer (tpccma_lib.teaching.explorer), its figures and its widget wiring.

Numbers are checked against independent computations on the same inputs: scipy's ``sqrtm``
for the Bures map and distance, ``geometry.decompose``, ``zero_shot_accuracy``,
``joint_clustering``, the post-hoc methods themselves and scikit-learn's PCA.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import plotly.graph_objects as go
import pytest
import scipy.linalg
from sklearn.decomposition import PCA

from tpccma_lib.embeddings import Embeddings, l2_normalize
from tpccma_lib.evaluation.clustering import joint_clustering
from tpccma_lib.evaluation.zero_shot import zero_shot_accuracy
from tpccma_lib.gap.metrics import decompose
from tpccma_lib.gap.posthoc import POSTHOC_METHODS, make_posthoc
from tpccma_lib.teaching.explorer import (
    READOUTS,
    ExplorerSettings,
    GapExplorer,
    GaussianTransport,
    PCAProjection,
    TeachingError,
    alpha_curve,
    readout_table,
)
from tpccma_lib.teaching.widgets import build_explorer_ui, readout_html
from tpccma_lib.viz.teaching import (
    EXPLORER_TRACES,
    alpha_curve_figure,
    explorer_figure,
    explorer_panels,
    update_explorer_figure,
)

N_CLASSES, DIM = 4, 12


def _world(seed: int, n_images: int = 120, captions: int = 2) -> tuple[Embeddings, np.ndarray]:
    """Synthetic captioned images with a modality gap and a different text shape.

    Returns the embeddings and (C, D) class prompt embeddings (text-side class centres).
    """
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((N_CLASSES, DIM))
    image_offset, text_offset = 1.5 * rng.standard_normal(DIM), 1.5 * rng.standard_normal(DIM)
    stretch = np.diag(rng.uniform(0.3, 1.5, DIM))  # text cloud has another shape
    labels = np.arange(n_images) % N_CLASSES
    image = centers[labels] + image_offset + 0.5 * rng.standard_normal((n_images, DIM))
    t2i = np.repeat(np.arange(n_images), captions)
    noise = rng.standard_normal((t2i.size, DIM)) @ stretch
    text = centers[labels[t2i]] + text_offset + 0.4 * noise
    prompts = l2_normalize(centers + text_offset)
    emb = Embeddings.from_arrays(
        image,
        text,
        text_to_image=t2i,
        image_labels=labels,
        class_names=[f"class{c}" for c in range(N_CLASSES)],
        meta={"dataset": "synthetic", "split": "test"},
    )
    return emb, prompts


@pytest.fixture(scope="module")
def world() -> tuple[Embeddings, Embeddings, np.ndarray]:
    view, prompts = _world(0)
    fit, _ = _world(0, n_images=160)  # same world (same offsets), other samples
    fit = fit.replace(meta={"split": "val"})
    return view, fit, prompts


@pytest.fixture(scope="module")
def explorer(world) -> GapExplorer:
    view, fit, prompts = world
    return GapExplorer(view, prompts, fit, cluster_images=80, label="synthetic, test split")


def _bures_scipy(cov_x: np.ndarray, cov_y: np.ndarray) -> float:
    root = np.real(scipy.linalg.sqrtm(cov_x))
    cross = np.real(np.trace(scipy.linalg.sqrtm(root @ cov_y @ root)))
    return math.sqrt(max(np.trace(cov_x) + np.trace(cov_y) - 2 * cross, 0.0))


def _mean(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).mean(axis=0)


def _cov(x: np.ndarray) -> np.ndarray:
    return np.cov(np.asarray(x, dtype=np.float64).T, bias=True)


# --------------------------------------------------------------------------- settings
@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"alpha": -0.1}, "alpha must be a number in [0, 1]"),
        ({"alpha": 1.5}, "alpha must be a number in [0, 1]"),
        ({"alpha": float("nan")}, "alpha must be a number in [0, 1]"),
        ({"alpha": True}, "alpha must be a number in [0, 1]"),
        ({"centroid_weight": 2.0}, "centroid_weight must be"),
        ({"distribution_weight": -1.0}, "distribution_weight must be"),
        ({"n_points": 9}, "n_points must be at least 10"),
        ({"n_points": 20.0}, "n_points must be an integer"),
        ({"method": "no-such-fix"}, "unknown post-hoc method 'no-such-fix'"),
    ],
)
def test_bad_settings_raise_clear_errors(changes, fragment):
    with pytest.raises(TeachingError, match=None) as info:
        ExplorerSettings(**changes)
    assert fragment in str(info.value)
    assert isinstance(info.value, ValueError)


def test_too_many_points_names_the_limit(explorer):
    with pytest.raises(TeachingError, match=r"only 120 images"):
        explorer.explore(n_points=121)


def test_explorer_rejects_mismatched_inputs(world):
    view, fit, prompts = world
    with pytest.raises(TeachingError, match="class_embeddings must be"):
        GapExplorer(view, prompts[:, :5], fit)
    other = Embeddings.from_arrays(np.ones((3, 5)) + np.eye(3, 5), np.eye(3, 5) + 0.5)
    with pytest.raises(TeachingError, match="dimensions"):
        GapExplorer(view, prompts, other)
    with pytest.raises(TeachingError, match="eps must be"):
        GaussianTransport.fit(view, eps=-1.0)


def test_singular_text_covariance_needs_a_ridge():
    rng = np.random.default_rng(1)
    image = rng.standard_normal((30, 6))
    text = np.zeros((30, 6))
    text[:, :2] = rng.standard_normal((30, 2))  # rank 2 in 6 dimensions
    emb = Embeddings.from_arrays(image, text + 3.0, normalize=False)
    with pytest.raises(TeachingError, match="singular"):
        GaussianTransport.fit(emb, eps=0.0)
    assert np.isfinite(GaussianTransport.fit(emb, eps=1e-3).transport).all()


# --------------------------------------------------------------------------- the move
def test_transport_map_against_scipy(world):
    _, fit, _ = world
    transport = GaussianTransport.fit(fit, eps=0.0)
    cov_i, cov_t = _cov(fit.image), _cov(fit.text)
    root_t = np.real(scipy.linalg.sqrtm(cov_t))
    inv_root_t = np.linalg.inv(root_t)
    expected = inv_root_t @ np.real(scipy.linalg.sqrtm(root_t @ cov_i @ root_t)) @ inv_root_t
    np.testing.assert_allclose(transport.transport, expected, atol=1e-8)
    np.testing.assert_allclose(transport.transport @ cov_t @ transport.transport, cov_i, atol=1e-9)


def test_alpha_one_closes_the_centroid_gap_before_renormalisation(world):
    view, fit, prompts = world
    explorer = GapExplorer(view, prompts, fit, transport_eps=0.0)
    moved = explorer.moved_text(ExplorerSettings(alpha=1.0), split="fit")
    np.testing.assert_allclose(_mean(moved), _mean(fit.image), atol=1e-10)
    # ...and with the distribution weight 1 the whole Gaussian fit matches: Bures ~ 0.
    assert _bures_scipy(_cov(fit.image), _cov(moved)) < 1e-5
    before = np.linalg.norm(_mean(fit.image) - _mean(fit.text))
    assert before > 0.3  # there was a gap to close


@pytest.mark.parametrize("centroid_weight, distribution_weight", [(1.0, 1.0), (0.5, 0.0), (0, 1)])
def test_move_walks_the_wasserstein_geodesic(world, centroid_weight, distribution_weight):
    """Before renormalisation: centroid gap (1 - a lc)|delta|, Bures (1 - a ld) B0 (scipy)."""
    view, fit, prompts = world
    explorer = GapExplorer(view, prompts, fit, transport_eps=0.0)
    cov_i = _cov(fit.image)
    gap0 = np.linalg.norm(_mean(fit.image) - _mean(fit.text))
    bures0 = _bures_scipy(cov_i, _cov(fit.text))
    for alpha in (0.0, 0.3, 0.7, 1.0):
        settings = ExplorerSettings(alpha, centroid_weight, distribution_weight)
        moved = explorer.moved_text(settings, split="fit")
        gap = np.linalg.norm(_mean(fit.image) - _mean(moved))
        assert gap == pytest.approx((1 - alpha * centroid_weight) * gap0, abs=1e-9)
        bures = _bures_scipy(cov_i, _cov(moved))
        assert bures == pytest.approx((1 - alpha * distribution_weight) * bures0, abs=1e-5)


def test_alpha_zero_reproduces_the_base_metrics(explorer, world):
    view, _, prompts = world
    result = explorer.explore(alpha=0.0)
    np.testing.assert_allclose(result.embeddings.text, view.text, atol=1e-6)
    np.testing.assert_array_equal(result.embeddings.image, view.image)
    base = decompose(view)
    m = result.metrics
    assert m["raw_gap"] == pytest.approx(base.raw_gap, abs=1e-6)
    assert m["centroid_gap"] == pytest.approx(base.centroid_gap, abs=1e-6)
    assert m["distribution_gap"] == pytest.approx(base.distribution_gap, abs=1e-6)
    assert m["distribution_gap"] == pytest.approx(
        _bures_scipy(_cov(view.image), _cov(view.text)), abs=1e-5
    )
    assert m["zero_shot_accuracy"] == zero_shot_accuracy(view, prompts)["accuracy"]
    clusters = joint_clustering(view.subset_images(explorer.cluster_index), seeds=(0,))
    assert m["clustering_ari"] == pytest.approx(clusters["ari"], abs=1e-12)
    assert m["modality_ari"] == pytest.approx(clusters["modality_ari"], abs=1e-12)
    assert set(m) == set(READOUTS)


def test_gap_shrinks_monotonically_with_alpha(explorer):
    frame = alpha_curve(explorer, np.linspace(0.0, 1.0, 6))
    for name in ("raw_gap", "centroid_gap", "distribution_gap"):
        values = frame[name].to_numpy()
        assert (np.diff(values) < 0).all(), (name, values)
    assert frame["raw_gap"].iloc[-1] < 0.2 * frame["raw_gap"].iloc[0]
    # At alpha = 0 the clusters split by modality; closing the gap mixes them.
    assert frame["modality_ari"].iloc[0] > frame["modality_ari"].iloc[-1]


def test_weights_pick_which_part_of_the_gap_closes(explorer):
    base = explorer.explore(alpha=0.0).metrics
    centroid_only = explorer.explore(alpha=1.0, distribution_weight=0.0).metrics
    shape_only = explorer.explore(alpha=1.0, centroid_weight=0.0).metrics
    assert centroid_only["centroid_gap"] < 0.2 * base["centroid_gap"]
    assert shape_only["centroid_gap"] > 0.5 * base["centroid_gap"]
    assert shape_only["distribution_gap"] < centroid_only["distribution_gap"]


def test_class_prompts_move_like_captions(explorer, world):
    view, fit, prompts = world
    settings = ExplorerSettings(0.6, 0.8, 0.5, n_points=50)
    result = explorer.explore(settings)
    t = explorer.transport
    moved_prompts = l2_normalize(
        prompts
        + 0.6 * 0.8 * t.offset
        + 0.6 * 0.5 * (prompts - t.text_mean) @ (t.transport - np.eye(DIM))
    )
    expected = zero_shot_accuracy(result.embeddings, moved_prompts)["accuracy"]
    assert result.metrics["zero_shot_accuracy"] == expected


@pytest.mark.parametrize("method", ["mean_center", "coral", "whiten"])
def test_posthoc_method_is_fitted_on_the_moved_fit_split(explorer, world, method):
    view, fit, _ = world
    settings = ExplorerSettings(alpha=0.4, method=method, n_points=50)
    result = explorer.explore(settings)
    moved_fit = fit.replace(text=l2_normalize(explorer.moved_text(settings, "fit")))
    moved_view = view.replace(text=l2_normalize(explorer.moved_text(settings, "view")))
    expected = make_posthoc(method).fit(moved_fit).transform(moved_view)
    np.testing.assert_allclose(result.embeddings.image, expected.image, atol=1e-6)
    np.testing.assert_allclose(result.embeddings.text, expected.text, atol=1e-6)
    # the cached image-covariance root must follow the images (whiten changes them)
    reference = decompose(result.embeddings).distribution_gap
    assert result.metrics["distribution_gap"] == pytest.approx(reference, abs=1e-6)


def test_every_posthoc_method_runs(explorer):
    for method in POSTHOC_METHODS:
        metrics = explorer.explore(alpha=0.5, method=method).metrics
        assert all(np.isfinite(metrics[name]) for name in READOUTS), method


def test_n_points_changes_only_the_view_and_reuses_the_cache(explorer):
    a = explorer.explore(alpha=0.35, n_points=30)
    b = explorer.explore(alpha=0.35, n_points=60)
    assert b.embeddings is a.embeddings
    assert a.metrics == b.metrics
    assert a.projection.image_xy.shape == (30, 2) and b.projection.text_xy.shape == (60, 2)
    np.testing.assert_array_equal(a.projection.image_xy, b.projection.image_xy[:30])


def test_projection_uses_first_captions_and_fixed_pca(explorer, world):
    view, _, _ = world
    result = explorer.explore(alpha=0.0, n_points=view.n_images)
    order = explorer.display_order
    _, first = np.unique(view.text_to_image, return_index=True)
    points = np.concatenate([view.image, view.text[first]]).astype(np.float64)
    reference = PCA(n_components=2).fit(points)
    signs = np.sign(np.sum(reference.components_ * explorer.projector.components, axis=1))
    expected = reference.transform(view.image[order]) * signs
    np.testing.assert_allclose(result.projection.image_xy, expected, atol=1e-8)
    np.testing.assert_allclose(
        explorer.projector.explained_variance_ratio, reference.explained_variance_ratio_, atol=1e-10
    )
    np.testing.assert_allclose(
        result.projection.text_centroid, explorer.projector(_mean(view.text)), atol=1e-12
    )
    (x0, x1), (y0, y1) = result.projection.axis_range
    xy = result.projection.image_xy
    assert x0 <= xy[:, 0].min() and xy[:, 0].max() <= x1 and y0 <= xy[:, 1].min()


def test_pca_projection_needs_enough_points():
    with pytest.raises(TeachingError, match="N >= 3"):
        PCAProjection.fit(np.ones((2, 4)))


def test_readout_table_rows(explorer):
    results = [explorer.explore(alpha=a) for a in (0.0, 1.0)]
    frame = readout_table(results)
    assert list(frame.columns[:4]) == ["alpha", "centroid_weight", "distribution_weight", "method"]
    assert frame["raw_gap"].tolist() == [r.metrics["raw_gap"] for r in results]


def test_from_experiment_wires_splits_and_prompts(world):
    view, fit, prompts = world

    class Model:
        def encode_texts(self, texts):
            return np.stack([prompts[int(t[-2])] for t in texts])  # "... class<c>."

    exp = SimpleNamespace(
        data=SimpleNamespace(zero_shot="same", label="synthetic world"),
        base_model=Model,
        embeddings=lambda model, split: {"test": view, "val": fit}[split],
        zero_shot_split=lambda: SimpleNamespace(
            prompt_templates=("a photo of a {}.",), class_names=view.class_names
        ),
    )
    explorer = GapExplorer.from_experiment(exp, cluster_images=40)
    assert explorer.label == "synthetic world, test split"
    assert explorer.fit_embeddings is fit and explorer.view is view
    np.testing.assert_allclose(explorer.class_embeddings, prompts, atol=1e-6)


# --------------------------------------------------------------------------- figures
def test_figure_traces_follow_the_projection(explorer):
    result = explorer.explore(alpha=0.5, n_points=25)
    fig = explorer_figure(result)
    assert isinstance(fig, go.Figure) and not isinstance(fig, go.FigureWidget)
    assert tuple(t.name for t in fig.data) == EXPLORER_TRACES
    np.testing.assert_allclose(fig.data[0].x, result.projection.image_xy[:, 0], atol=1e-4)
    np.testing.assert_allclose(fig.data[1].y, result.projection.text_xy[:, 1], atol=1e-4)
    np.testing.assert_allclose(fig.data[4].x, [result.projection.text_centroid[0]], atol=1e-4)


def test_update_moves_traces_in_place(explorer):
    fig = explorer_figure(explorer.explore(alpha=0.0, n_points=40), widget=True)
    assert isinstance(fig, go.FigureWidget)
    before = np.array(fig.data[1].x)
    target = explorer.explore(alpha=1.0, n_points=40)
    trace = fig.data[1]
    update_explorer_figure(fig, target)
    assert fig.data[1] is trace
    np.testing.assert_allclose(fig.data[1].x, target.projection.text_xy[:, 0], atol=1e-4)
    assert not np.allclose(fig.data[1].x, before)
    with pytest.raises(ValueError, match="explorer traces"):
        update_explorer_figure(go.Figure(), target)


def test_static_panels_and_alpha_curve(explorer):
    results = [explorer.explore(alpha=a, n_points=20) for a in (0.0, 0.5, 1.0)]
    fig = explorer_panels(results, titles=["a", "b", "c"])
    assert len(fig.data) == 3 * len(EXPLORER_TRACES)
    frame = alpha_curve(explorer, [0.0, 1.0])
    curve = alpha_curve_figure(frame)
    np.testing.assert_allclose(curve.data[0].y, frame["raw_gap"], atol=1e-4)
    with pytest.raises(ValueError, match="lacks column"):
        alpha_curve_figure(frame.drop(columns=["raw_gap"]))


# --------------------------------------------------------------------------- widgets
def test_widget_controls_update_figure_and_readout(explorer):
    ui = build_explorer_ui(explorer)
    assert ui.controls["method"].options[0] == "identity"
    assert set(ui.controls["method"].options) == set(POSTHOC_METHODS)
    assert ui.controls["n_points"].max == explorer.n_images
    figure, trace = ui.figure, ui.figure.data[1]
    before_x, before_html = np.array(trace.x), ui.readout.value
    ui.controls["alpha"].value = 0.8
    assert ui.figure is figure and ui.figure.data[1] is trace
    expected = explorer.explore(alpha=0.8, n_points=ui.controls["n_points"].value)
    np.testing.assert_allclose(trace.x, expected.projection.text_xy[:, 0], atol=1e-4)
    assert not np.allclose(trace.x, before_x)
    assert ui.readout.value != before_html
    assert "data-metric='raw_gap' " in ui.readout.value
    assert f">{expected.metrics['raw_gap']:.3f}<" in ui.readout.value
    ui.controls["n_points"].value = 30
    assert len(ui.figure.data[0].x) == 30


def test_widget_shows_errors_instead_of_raising(explorer, monkeypatch):
    ui = build_explorer_ui(explorer)

    def broken(settings):
        raise TeachingError("this setting is broken")

    monkeypatch.setattr(explorer, "explore", broken)
    ui.controls["alpha"].value = 0.3
    assert "this setting is broken" in ui.readout.value


def test_readout_html_marks_missing_values():
    text = readout_html({"raw_gap": 0.1234, "zero_shot_accuracy": math.nan}, label="a & b")
    assert ">0.123<" in text and ">n/a<" in text and "a &amp; b" in text
