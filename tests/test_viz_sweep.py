"""Figure builders of notebooks 04 and 05 (tpccma_lib.viz.sweep) on tiny tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from tpccma_lib.evaluation.tradeoff import (
    R2_GAP_METRICS,
    R2_TASK_METRICS,
    r2_analysis,
    sweep_points,
    tradeoff_summary,
    tradeoff_table,
)
from tpccma_lib.viz.sweep import (
    GAP_COLUMNS,
    caption_gallery,
    config_labels,
    gap_components,
    metric_bars,
    pareto_figure,
    r2_heatmap,
    save_pareto_png,
)


@pytest.fixture
def table() -> pd.DataFrame:
    """A results_table-like frame: base, base + shift, finetuned."""
    return pd.DataFrame(
        {
            "role": ["base", "base", "finetuned"],
            "posthoc": ["identity", "shift", "identity"],
            "raw_gap": [0.4, 0.05, 0.2],
            "centroid_gap": [0.4, 0.05, 0.2],
            "distribution_gap": [0.5, 0.48, 0.3],
            "zero_shot_accuracy": [0.77, 0.78, 0.74],
            "clustering_ari": [0.3, 0.48, 0.5],
            "cider": [0.7, 0.9, 1.1],
        }
    )


def _points(seeds: tuple[int, ...] = (0, 1)) -> pd.DataFrame:
    """sweep_points-ready long rows: alpha 0 / 0.5 / 1 runs, base + two fixes per seed."""
    rows = []
    values = {
        ("gap", "raw_gap"): lambda a, s: 0.5 - 0.4 * a + 0.01 * s,
        ("gap", "centroid_gap"): lambda a, s: 0.5 - 0.4 * a + 0.01 * s,
        ("gap", "distribution_gap"): lambda a, s: 0.4 - 0.2 * a**2,
        ("zero_shot", "accuracy"): lambda a, s: 0.8 - 0.1 * a - 0.01 * s,
        ("clustering", "ari"): lambda a, s: 0.3 + 0.2 * a,
        ("captioning", "CIDEr"): lambda a, s: 0.7 + 0.3 * a + 0.02 * s,
        ("retrieval", "i2t_R@1"): lambda a, s: 0.2 - 0.05 * a,
    }
    for seed in seeds:
        for alpha in (0.0, 0.5, 1.0):
            configs = [("finetuned", "identity", alpha)]
            if alpha == 0.0:
                configs += [
                    ("base", "identity", 0.1),
                    ("base", "shift", 0.9),
                    ("base", "coral", 0.3),
                ]
            for role, posthoc, a in configs:
                for (task, metric), f in values.items():
                    rows.append(
                        {
                            "role": role,
                            "posthoc": posthoc,
                            "task": task,
                            "metric": metric,
                            "value": f(a, seed),
                            "alpha_target": alpha,
                            "train_seed": seed,
                            "run": f"alpha{alpha}-seed{seed}",
                        }
                    )
    return sweep_points(pd.DataFrame(rows))


def test_config_labels(table: pd.DataFrame) -> None:
    assert config_labels(table) == ["base", "base + shift", "finetuned"]


def test_metric_bars_one_trace_per_model(table: pd.DataFrame) -> None:
    fig = metric_bars(table, metrics=("zero_shot_accuracy", "cider", "not_there"), title="t")
    assert isinstance(fig, go.Figure)
    assert [t.name for t in fig.data] == ["base", "base + shift", "finetuned"]
    assert list(fig.data[1].x) == ["zero_shot_accuracy", "cider"]
    assert list(fig.data[1].y) == [0.78, 0.9]
    assert fig.layout.barmode == "group"


def test_gap_components_traces(table: pd.DataFrame) -> None:
    fig = gap_components(table)
    assert [t.name for t in fig.data] == list(GAP_COLUMNS)
    assert list(fig.data[2].y) == table.distribution_gap.tolist()
    assert list(fig.data[0].x) == ["base", "base + shift", "finetuned"]


def test_caption_gallery_images_and_captions() -> None:
    captions = pd.DataFrame(
        {
            "image": [3, 7, 9, 11],
            "class": ["circle", "star", "ring", "heart"],
            "reference": ["a red circle", "a star", "a ring", "one heart"],
            "base": ["b0", "b1", "b2", "b3"],
            "finetuned": ["f0", "f1", "f2", "f3"],
        }
    )
    images = [np.full((8, 8, 3), k * 40, dtype=np.uint8) for k in range(4)]
    fig = caption_gallery(images, captions, columns=3)
    assert [type(t) for t in fig.data] == [go.Image] * 4
    assert np.array_equal(np.asarray(fig.data[2].z), images[2])
    texts = [a.text for a in fig.layout.annotations]
    assert any("test image 11 (heart)" in t for t in texts)  # subplot titles
    captions_text = [t for t in texts if "reference" in t]
    assert len(captions_text) == 4
    assert "f1" in captions_text[1] and "a star" in captions_text[1]
    with pytest.raises(ValueError, match="images"):
        caption_gallery(images[:2], captions)


def test_pareto_figure_traces() -> None:
    tradeoff = tradeoff_table(_points())
    summary = tradeoff_summary(tradeoff)
    fig = pareto_figure(tradeoff, summary, title="shapes")
    names = [t.name for t in fig.data]
    assert names == [
        "runs (each seed)",
        "TPC-CMA (mean over seeds; alpha=0: control)",
        "post-hoc (mean over seeds)",
        "original model",
        "Pareto front",
    ]
    runs = fig.data[0]
    assert len(runs.x) == 6  # 3 alphas x 2 seeds
    mean = fig.data[1]
    assert list(mean.text) == ["alpha=0", "alpha=0.5", "alpha=1"]
    fine = summary[summary.kind == "fine-tuned"].sort_values("alpha_target")
    assert np.allclose(mean.x, fine.gap_reduction_pct)
    assert sorted(fig.data[2].text) == ["coral", "shift"]
    assert len(fig.data[4].x) == int(summary.pareto.sum())
    assert "original model" in fig.layout.xaxis.title.text


def test_pareto_figure_distribution_part() -> None:
    tradeoff = tradeoff_table(_points())
    summary = tradeoff_summary(tradeoff)
    fig = pareto_figure(tradeoff, summary, gap="distribution")
    fine = summary[summary.kind == "fine-tuned"].sort_values("alpha_target")
    assert np.allclose(fig.data[1].x, fine.distribution_reduction_pct)
    assert len(fig.data[4].x) == int(summary.pareto_distribution.sum())
    assert fig.layout.xaxis.title.text.startswith("distribution gap reduction")
    with pytest.raises(ValueError, match="gap must be one of"):
        pareto_figure(tradeoff, summary, gap="centroid")


def test_r2_heatmap_values() -> None:
    r2 = r2_analysis(_points())
    fig = r2_heatmap(r2, points="fine-tuned runs")
    heat = fig.data[0]
    assert list(heat.y) == list(R2_TASK_METRICS[:2]) + list(R2_TASK_METRICS[2:])
    assert list(heat.x) == list(R2_GAP_METRICS)
    part = r2[r2.points == "fine-tuned runs"]
    expected = part[(part.task_metric == "cider") & (part.gap_metric == "distribution_gap")].r2
    i, j = list(heat.y).index("cider"), list(heat.x).index("distribution_gap")
    assert np.asarray(heat.z)[i, j] == pytest.approx(float(expected.iloc[0]), nan_ok=True)


def test_save_pareto_png(tmp_path: Path) -> None:
    tradeoff = tradeoff_table(_points())
    path = save_pareto_png(tradeoff, tradeoff_summary(tradeoff), tmp_path / "sub" / "p.png")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    # deterministic: the same input gives the same bytes (the README image changes only with data)
    again = save_pareto_png(tradeoff, tradeoff_summary(tradeoff), tmp_path / "q.png").read_bytes()
    assert again == data
