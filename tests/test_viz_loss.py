"""Tests of tpccma_lib.viz.loss: the figures draw exactly the numbers they are given."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import pytest

from tpccma_lib.embeddings import Embeddings
from tpccma_lib.teaching import toy
from tpccma_lib.viz import loss as lossviz
from tpccma_lib.viz.gap import VizError


def test_gap_shift_figure_one_line_per_scale_sorted_by_shift() -> None:
    curve = [
        {"logit_scale": s, "shift": x, "loss": 0.0, "loss_change": s * x}
        for s in (100.0, 10.0)
        for x in (1.0, -0.5, 0.0)
    ]
    fig = lossviz.gap_shift_figure(curve, title="t")
    assert isinstance(fig, go.Figure)
    lines = [t for t in fig.data if isinstance(t, go.Scatter)]
    assert [t.name for t in lines] == ["logit scale 10", "logit scale 100"]
    np.testing.assert_array_equal(lines[1].x, [-0.5, 0.0, 1.0])
    np.testing.assert_allclose(lines[1].y, [-50.0, 0.0, 100.0])
    with pytest.raises(VizError):
        lossviz.gap_shift_figure([])


def test_sphere_figure_one_scene_per_state_with_means() -> None:
    caps = toy.sphere_caps(n=12, seed=0)
    moved = caps.replace(text=caps.image.copy())
    fig = lossviz.sphere_figure({"start": caps, "moved": moved})
    assert [a.text for a in fig.layout.annotations] == ["start", "moved"]
    points = [t for t in fig.data if t.mode == "markers" and t.name == "text"]
    assert len(points) == 2
    np.testing.assert_allclose(points[1].x, np.round(caps.image[:, 0], 4))
    means = [t for t in fig.data if t.name == "image mean"]
    np.testing.assert_allclose(means[0].z, np.round([caps.image[:, 2].mean()], 4))
    assert fig.data[0].mode == "lines"  # the wireframe sphere
    # legend entries appear once, not once per scene
    assert sum(1 for t in fig.data if t.name == "image" and t.showlegend) == 1


def test_sphere_figure_needs_3d() -> None:
    flat = Embeddings.from_arrays(np.eye(4)[:2], np.eye(4)[2:])
    with pytest.raises(VizError, match="3-D"):
        lossviz.sphere_figure({"flat": flat})
    with pytest.raises(VizError):
        lossviz.sphere_figure({})


def test_gradient_field_figure_arrows_point_down_the_gradient() -> None:
    caps = toy.sphere_caps(n=10, seed=1)
    gradient = np.zeros_like(caps.text, dtype=np.float64)
    gradient[:, 0] = np.linspace(1.0, 2.0, 10)  # the longest arrow is the last one
    fig = lossviz.gradient_field_figure(caps, {"term": gradient}, arrow_length=0.5)
    arrows = [t for t in fig.data if t.mode == "lines"][0]
    x = np.asarray(arrows.x, dtype=float).reshape(-1, 3)  # tail, head, NaN per point
    np.testing.assert_allclose(x[:, 0], np.round(caps.text[:, 0], 4), atol=1e-4)
    np.testing.assert_allclose(x[:, 1] - x[:, 0], -0.5 * gradient[:, 0] / 2.0, atol=2e-4)
    assert np.isnan(x[:, 2]).all()
    with pytest.raises(VizError, match="shape"):
        lossviz.gradient_field_figure(caps, {"bad": gradient[:3]})


def test_training_curves_figure_panels_and_lines() -> None:
    rows = [
        {"objective": name, "step": step, "centroid_gap": step * k, "mean_R@1": 0.5}
        for k, name in enumerate(["a", "b"], start=1)
        for step in (0, 10, 20)
    ]
    fig = lossviz.training_curves_figure(rows, metrics=("centroid_gap", "mean_R@1"))
    assert len(fig.data) == 4  # 2 metrics x 2 objectives
    assert [a.text for a in fig.layout.annotations] == [
        lossviz.METRIC_TITLES["centroid_gap"],
        lossviz.METRIC_TITLES["mean_R@1"],
    ]
    b_gap = [t for t in fig.data if t.name == "b"][0]
    np.testing.assert_array_equal(b_gap.x, [0, 10, 20])
    np.testing.assert_allclose(b_gap.y, [0, 20, 40])
    with pytest.raises(VizError, match="loss_clip_train"):
        lossviz.training_curves_figure(rows, metrics=("loss_clip_train",))
    with pytest.raises(VizError):
        lossviz.training_curves_figure([])
