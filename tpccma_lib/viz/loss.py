"""Figures of notebook 02 (the CMA loss), built from :mod:`tpccma_lib.teaching.toy` results.

    gap_shift_figure         L_clip(lambda) - L_clip(0) along the gap, one line per logit scale
    sphere_figure            3-D scatter of toy clouds on S^2, one scene per state
    gradient_field_figure    descent directions (-gradient) of a loss term at each text point
    training_curves_figure   one metric per panel, one line per objective, over steps

Coordinates are rounded to 4 decimals (smaller notebooks, same picture); every number a
figure shows is also printed, rounded, by the notebook.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tpccma_lib.embeddings import Embeddings
from tpccma_lib.viz.gap import MODALITY_COLORS, VizError

__all__ = [
    "gap_shift_figure",
    "sphere_figure",
    "gradient_field_figure",
    "training_curves_figure",
    "METRIC_TITLES",
]

_DECIMALS = 4
#: Axis titles of the metrics :func:`tpccma_lib.teaching.toy.optimize_alignment` records.
METRIC_TITLES = {
    "centroid_gap": "centroid gap ||μ_img − μ_txt||",
    "distribution_gap": "distribution gap (Bures)",
    "loss_clip_train": "contrastive loss (train batches)",
    "loss_clip_eval": "contrastive loss (eval pairs)",
    "mean_R@1": "mean R@1 (eval)",
}


def _rounded(values: Any) -> np.ndarray:
    return np.round(np.asarray(values, dtype=np.float64), _DECIMALS)


def gap_shift_figure(curve: Sequence[Mapping[str, float]], title: str = "") -> go.Figure:
    """Lines of ``loss_change`` against ``shift``, one per ``logit_scale``.

    Args:
        curve: the first output of :func:`tpccma_lib.teaching.toy.gap_shift_curve` (rows with
            ``logit_scale``, ``shift``, ``loss_change``).
    """
    if not curve:
        raise VizError("gap_shift_figure needs the rows of toy.gap_shift_curve (got none).")
    fig = go.Figure()
    for scale in sorted({row["logit_scale"] for row in curve}):
        rows = sorted((r for r in curve if r["logit_scale"] == scale), key=lambda r: r["shift"])
        fig.add_trace(
            go.Scatter(
                x=_rounded([r["shift"] for r in rows]),
                y=_rounded([r["loss_change"] for r in rows]),
                mode="lines+markers",
                name=f"logit scale {scale:g}",
            )
        )
    fig.add_vline(x=0.0, line_dash="dot", line_color="gray")
    fig.add_vline(x=1.0, line_dash="dot", line_color="gray")
    fig.update_layout(
        title=title,
        xaxis_title="shift λ along the gap (0: as trained, 1: means moved to their midpoint)",
        yaxis_title="L_clip(λ) − L_clip(0)",
        height=420,
    )
    return fig


def _sphere_mesh(resolution: int = 16) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lines of latitude and longitude of the unit sphere, NaN-separated, for Scatter3d."""
    t = np.linspace(0, 2 * np.pi, 4 * resolution + 1)
    xs, ys, zs = [], [], []
    for lat in np.linspace(-np.pi / 2, np.pi / 2, resolution + 1)[1:-1]:
        xs += [*np.cos(lat) * np.cos(t), np.nan]
        ys += [*np.cos(lat) * np.sin(t), np.nan]
        zs += [*np.full_like(t, np.sin(lat)), np.nan]
    u = np.linspace(-np.pi / 2, np.pi / 2, 2 * resolution + 1)
    for lon in np.linspace(0, 2 * np.pi, 2 * resolution + 1)[:-1]:
        xs += [*np.cos(u) * np.cos(lon), np.nan]
        ys += [*np.cos(u) * np.sin(lon), np.nan]
        zs += [*np.sin(u), np.nan]
    return _rounded(xs), _rounded(ys), _rounded(zs)


def _check_3d(emb: Embeddings, name: str) -> None:
    if emb.dim != 3:
        raise VizError(f"{name} has dimension {emb.dim}; the sphere figures need 3-D points.")


def _scene_traces(emb: Embeddings, show_legend: bool) -> list[go.Scatter3d]:
    traces = []
    for modality, points in (("image", emb.image), ("text", emb.text)):
        color = MODALITY_COLORS[modality]
        traces.append(
            go.Scatter3d(
                x=_rounded(points[:, 0]),
                y=_rounded(points[:, 1]),
                z=_rounded(points[:, 2]),
                mode="markers",
                marker={"size": 2.5, "color": color},
                name=modality,
                legendgroup=modality,
                showlegend=show_legend,
            )
        )
        mean = points.mean(axis=0)
        traces.append(
            go.Scatter3d(
                x=_rounded([mean[0]]),
                y=_rounded([mean[1]]),
                z=_rounded([mean[2]]),
                mode="markers",
                marker={"size": 7, "color": color, "symbol": "diamond", "line": {"width": 1}},
                name=f"{modality} mean",
                legendgroup=f"{modality} mean",
                showlegend=show_legend,
            )
        )
    return traces


def sphere_figure(clouds: Mapping[str, Embeddings], title: str = "") -> go.Figure:
    """One 3-D scene per named state (e.g. "start", "centroid term"), images and texts on S^2.

    Diamonds mark the two modality means (inside the ball: a mean of unit vectors is shorter
    than 1). A light wireframe draws the unit sphere.
    """
    if not clouds:
        raise VizError("sphere_figure needs at least one named Embeddings.")
    for name, emb in clouds.items():
        _check_3d(emb, repr(name))
    names = list(clouds)
    fig = make_subplots(
        rows=1,
        cols=len(names),
        specs=[[{"type": "scene"}] * len(names)],
        subplot_titles=names,
        horizontal_spacing=0.01,
    )
    mesh = _sphere_mesh()
    for col, name in enumerate(names, start=1):
        fig.add_trace(
            go.Scatter3d(
                x=mesh[0],
                y=mesh[1],
                z=mesh[2],
                mode="lines",
                line={"color": "lightgray", "width": 1},
                hoverinfo="skip",
                showlegend=False,
            ),
            row=1,
            col=col,
        )
        for trace in _scene_traces(clouds[name], show_legend=col == 1):
            fig.add_trace(trace, row=1, col=col)
    axis = {"range": [-1.05, 1.05], "showticklabels": False, "title": ""}
    fig.update_scenes(xaxis=axis, yaxis=axis, zaxis=axis, aspectmode="cube")
    fig.update_layout(title=title, height=420, margin={"l": 0, "r": 0, "t": 60, "b": 0})
    return fig


def gradient_field_figure(
    emb: Embeddings,
    text_gradients: Mapping[str, np.ndarray],
    title: str = "",
    arrow_length: float = 0.25,
) -> go.Figure:
    """Descent directions ``-gradient`` at every text point, one scene per loss term.

    Each term's arrows are scaled together so that its longest arrow is ``arrow_length``
    (only directions and relative lengths are comparable within a panel).

    Args:
        emb: 3-D toy embeddings (images drawn as points, texts as arrow tails).
        text_gradients: term name -> (N_txt, 3) gradient w.r.t. the text rows.
    """
    _check_3d(emb, "emb")
    if not text_gradients:
        raise VizError("gradient_field_figure needs at least one named gradient.")
    names = list(text_gradients)
    fig = make_subplots(
        rows=1,
        cols=len(names),
        specs=[[{"type": "scene"}] * len(names)],
        subplot_titles=names,
        horizontal_spacing=0.01,
    )
    for col, name in enumerate(names, start=1):
        gradient = np.asarray(text_gradients[name], dtype=np.float64)
        if gradient.shape != emb.text.shape:
            raise VizError(
                f"gradient {name!r} has shape {gradient.shape}; expected {emb.text.shape} "
                "(one row per text point)."
            )
        longest = np.linalg.norm(gradient, axis=1).max()
        step = -gradient * (arrow_length / longest if longest > 0 else 0.0)
        for trace in _scene_traces(emb, show_legend=col == 1):
            fig.add_trace(trace, row=1, col=col)
        tails = emb.text.astype(np.float64)
        # one segment per point, tail -> head, NaN rows break the line between points
        segments = np.concatenate([tails, tails + step, np.full_like(tails, np.nan)], axis=1)
        segments = segments.reshape(-1, 3)
        fig.add_trace(
            go.Scatter3d(
                x=_rounded(segments[:, 0]),
                y=_rounded(segments[:, 1]),
                z=_rounded(segments[:, 2]),
                mode="lines",
                line={"color": "black", "width": 2},
                name="−gradient (text)",
                legendgroup="gradient",
                showlegend=col == 1,
            ),
            row=1,
            col=col,
        )
    axis = {"showticklabels": False, "title": ""}
    fig.update_scenes(xaxis=axis, yaxis=axis, zaxis=axis, aspectmode="data")
    fig.update_layout(title=title, height=420, margin={"l": 0, "r": 0, "t": 60, "b": 0})
    return fig


def training_curves_figure(
    rows: Sequence[Mapping[str, Any]],
    metrics: Sequence[str] = ("centroid_gap", "distribution_gap", "loss_clip_train", "mean_R@1"),
    group: str = "objective",
    title: str = "",
) -> go.Figure:
    """One panel per metric against ``step``, one line per value of ``group``.

    Args:
        rows: e.g. the first output of :func:`tpccma_lib.teaching.toy.compare_objectives`.
        metrics: row keys to draw; a metric no row has is an error.
        group: the key that names a line (its first-seen order is kept).
    """
    if not rows:
        raise VizError("training_curves_figure needs history rows (got none).")
    missing = [m for m in metrics if not any(m in row for row in rows)]
    if missing:
        raise VizError(f"no row has metric(s) {missing}; available: {sorted(rows[0])}.")
    groups = list(dict.fromkeys(row[group] for row in rows))
    n_cols = min(2, len(metrics))
    n_rows = -(-len(metrics) // n_cols)
    fig = make_subplots(
        rows=n_rows,
        cols=n_cols,
        subplot_titles=[METRIC_TITLES.get(m, m) for m in metrics],
        vertical_spacing=0.12,
    )
    palette = ("#7f7f7f", "#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3")
    for index, metric in enumerate(metrics):
        row_index, col_index = divmod(index, n_cols)
        for g, name in enumerate(groups):
            points = [r for r in rows if r[group] == name and metric in r]
            fig.add_trace(
                go.Scatter(
                    x=[int(r["step"]) for r in points],
                    y=_rounded([r[metric] for r in points]),
                    mode="lines",
                    name=str(name),
                    legendgroup=str(name),
                    showlegend=index == 0,
                    line={"color": palette[g % len(palette)]},
                ),
                row=row_index + 1,
                col=col_index + 1,
            )
    fig.update_xaxes(title_text="step", row=n_rows)  # bottom row only: no clash with titles
    fig.update_layout(title=title, height=330 * n_rows)
    return fig
