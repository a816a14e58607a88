"""Figures of the gap explorer (notebook 06): both modalities in a fixed 2-D view.

    explorer_figure         one explorer state; ``widget=True`` gives a ``go.FigureWidget``
    update_explorer_figure  move the traces of such a figure IN PLACE to a new state
    explorer_panels         several states side by side (the static version for reports)
    alpha_curve_figure      read-outs against alpha (the slider swept), from ``alpha_curve``

Trace order of an explorer figure (what :func:`update_explorer_figure` relies on): images,
captions, the centroid-gap segment, image mean, caption mean. Coordinates are rounded to
``COORD_DECIMALS`` (smaller notebooks, the same picture).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tpccma_lib.teaching.explorer import READOUTS, ExplorerResult, ProjectedPoints

__all__ = [
    "COORD_DECIMALS",
    "EXPLORER_TRACES",
    "MODALITY_COLORS",
    "alpha_curve_figure",
    "explorer_figure",
    "explorer_panels",
    "update_explorer_figure",
]

MODALITY_COLORS = {"image": "#1f77b4", "text": "#ff7f0e", "gap": "#444444"}
COORD_DECIMALS = 4
#: Names of the traces of an explorer figure, in order.
EXPLORER_TRACES = ("images", "captions", "centroid gap", "image mean", "caption mean")

_READOUT_TITLES = {
    "raw_gap": "raw gap",
    "centroid_gap": "centroid gap",
    "distribution_gap": "distribution gap (Bures)",
    "zero_shot_accuracy": "zero-shot accuracy",
    "clustering_ari": "joint-clustering ARI",
    "modality_ari": "modality ARI",
}


def _round(values: np.ndarray) -> list[float]:
    return np.round(np.asarray(values, dtype=np.float64), COORD_DECIMALS).tolist()


def _hover(points: ProjectedPoints) -> list[str]:
    names = points.class_names
    return [names[c] if 0 <= c < len(names) else "unlabelled" for c in points.labels.tolist()]


def _trace_data(points: ProjectedPoints) -> list[dict[str, list[float]]]:
    """x/y of the five traces, in EXPLORER_TRACES order."""
    ci, ct = points.image_centroid, points.text_centroid
    return [
        {"x": _round(points.image_xy[:, 0]), "y": _round(points.image_xy[:, 1])},
        {"x": _round(points.text_xy[:, 0]), "y": _round(points.text_xy[:, 1])},
        {"x": _round([ci[0], ct[0]]), "y": _round([ci[1], ct[1]])},
        {"x": _round([ci[0]]), "y": _round([ci[1]])},
        {"x": _round([ct[0]]), "y": _round([ct[1]])},
    ]


def _traces(points: ProjectedPoints, showlegend: bool = True) -> list[go.Scatter]:
    data = _trace_data(points)
    hover = _hover(points)
    styles = [
        {"mode": "markers", "marker": {"color": MODALITY_COLORS["image"], "size": 6,
                                       "opacity": 0.6}, "text": hover},
        {"mode": "markers", "marker": {"color": MODALITY_COLORS["text"], "size": 6,
                                       "opacity": 0.6, "symbol": "diamond"}, "text": hover},
        {"mode": "lines", "line": {"color": MODALITY_COLORS["gap"], "dash": "dash", "width": 2}},
        {"mode": "markers", "marker": {"color": MODALITY_COLORS["image"], "size": 16,
                                       "symbol": "star", "line": {"width": 1, "color": "black"}}},
        {"mode": "markers", "marker": {"color": MODALITY_COLORS["text"], "size": 16,
                                       "symbol": "star", "line": {"width": 1, "color": "black"}}},
    ]  # fmt: skip
    return [
        go.Scatter(name=name, showlegend=showlegend, legendgroup=name, **xy, **style)
        for name, xy, style in zip(EXPLORER_TRACES, data, styles, strict=True)
    ]


def _title(result: ExplorerResult) -> str:
    s, m = result.settings, result.metrics
    return (
        f"alpha = {s.alpha:.2f} (lambda_c {s.centroid_weight:.2f}, lambda_d "
        f"{s.distribution_weight:.2f}), post-hoc: {s.method} | gap {m['raw_gap']:.3f}, "
        f"distribution gap {m['distribution_gap']:.3f}"
    )


def explorer_figure(
    result: ExplorerResult, *, widget: bool = False, label: str = ""
) -> go.Figure | go.FigureWidget:
    """Images, their first captions and both means in the explorer's fixed PCA plane.

    Args:
        result: an explorer state (``GapExplorer.explore``).
        widget: return a ``go.FigureWidget`` (for :func:`update_explorer_figure` in a live UI).
        label: data set / split named in the axis title.
    """
    points = result.projection
    fig = (go.FigureWidget if widget else go.Figure)(data=_traces(points))
    (x_range, y_range) = points.axis_range
    fig.update_layout(
        title={"text": _title(result), "font": {"size": 13}},
        xaxis={"title": f"PC 1 of the base embeddings{' - ' + label if label else ''}",
               "range": list(x_range), "zeroline": False},
        yaxis={"title": "PC 2", "range": list(y_range), "zeroline": False},
        width=760, height=520, margin={"l": 60, "r": 20, "t": 60, "b": 60},
        legend={"orientation": "h", "y": -0.15}, template="plotly_white",
    )  # fmt: skip
    return fig


def update_explorer_figure(fig: go.Figure | go.FigureWidget, result: ExplorerResult) -> None:
    """Move the traces of ``fig`` (from :func:`explorer_figure`) to ``result``, in place.

    One ``batch_update``: the front end receives a single message with the new x/y, hover
    text, axis ranges and title; the figure object (and its widget view) stays the same.
    """
    if len(fig.data) != len(EXPLORER_TRACES):
        raise ValueError(
            f"expected a figure with the {len(EXPLORER_TRACES)} explorer traces "
            f"{EXPLORER_TRACES}; build it with explorer_figure(result, widget=True)."
        )
    points = result.projection
    hover = _hover(points)
    with fig.batch_update():
        for trace, xy in zip(fig.data, _trace_data(points), strict=True):
            trace.x, trace.y = xy["x"], xy["y"]
        fig.data[0].text = hover
        fig.data[1].text = hover
        fig.layout.xaxis.range = list(points.axis_range[0])
        fig.layout.yaxis.range = list(points.axis_range[1])
        fig.layout.title.text = _title(result)


def explorer_panels(
    results: Sequence[ExplorerResult], titles: Sequence[str] | None = None, label: str = ""
) -> go.Figure:
    """Several explorer states side by side on shared axes (a static view of the sliders)."""
    if not results:
        raise ValueError("explorer_panels needs at least one explorer state.")
    titles = list(titles) if titles is not None else [_title(r) for r in results]
    fig = make_subplots(
        rows=1, cols=len(results), subplot_titles=titles, shared_xaxes=True, shared_yaxes=True
    )
    for col, result in enumerate(results, start=1):
        for trace in _traces(result.projection, showlegend=col == 1):
            fig.add_trace(trace, row=1, col=col)
    ranges = np.array([r.projection.axis_range for r in results])  # (n, 2, 2)
    fig.update_xaxes(range=[ranges[:, 0, 0].min(), ranges[:, 0, 1].max()], zeroline=False)
    fig.update_yaxes(range=[ranges[:, 1, 0].min(), ranges[:, 1, 1].max()], zeroline=False)
    fig.update_layout(
        title={"text": f"Both modalities in a fixed PCA plane{' - ' + label if label else ''}",
               "font": {"size": 13}},
        width=330 * len(results) + 80, height=430, template="plotly_white",
        legend={"orientation": "h", "y": -0.12}, margin={"t": 90},
    )  # fmt: skip
    fig.update_annotations(font_size=11)
    return fig


def alpha_curve_figure(frame: pd.DataFrame, label: str = "") -> go.Figure:
    """Gap read-outs (left) and task read-outs (right) against alpha, from ``alpha_curve``."""
    missing = [c for c in ("alpha", *READOUTS) if c not in frame.columns]
    if missing:
        raise ValueError(f"frame lacks column(s) {missing}; build it with teaching.alpha_curve.")
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=("gap (embedding units)", "tasks (higher is better)")
    )
    for col, names in ((1, READOUTS[:3]), (2, READOUTS[3:])):
        for name in names:
            fig.add_trace(
                go.Scatter(
                    x=_round(frame["alpha"]),
                    y=_round(frame[name]),
                    mode="lines+markers",
                    name=_READOUT_TITLES[name],
                    line={"dash": "dot"} if name == "raw_gap" else None,
                ),
                row=1,
                col=col,
            )
    fig.update_xaxes(title_text="alpha (how far the text moves toward the images)")
    fig.update_layout(
        title={"text": f"The slider swept{' - ' + label if label else ''}", "font": {"size": 13}},
        width=900, height=420, template="plotly_white",
    )  # fmt: skip
    return fig
