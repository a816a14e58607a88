"""Figures of notebooks 04 (evaluation) and 05 (alpha sweep).

Plotly builders take the tables of :mod:`tpccma_lib.app.sweep` and return a ``go.Figure``:

    metric_bars       grouped bars, one group per metric, one bar per evaluated model
    gap_components    raw, centroid and distribution gap of every evaluated model
    caption_gallery   test images with their reference and generated captions
    pareto_figure     gap reduction vs zero-shot accuracy drop (paper Fig. 4) + post-hoc fixes
    r2_heatmap        R² of each task metric on each gap metric

``save_pareto_png`` draws the Pareto figure with matplotlib (Agg) for the README.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

__all__ = [
    "TASK_METRICS",
    "GAP_COLUMNS",
    "config_labels",
    "metric_bars",
    "gap_components",
    "caption_gallery",
    "pareto_figure",
    "r2_heatmap",
    "save_pareto_png",
]

#: Task metrics of the bar chart (columns of :func:`tpccma_lib.evaluation.roles.results_table`).
TASK_METRICS = (
    "zero_shot_accuracy",
    "clustering_ari",
    "modality_ari",
    "cider",
    "i2t_R@1",
    "t2i_R@1",
)
#: Gap columns of :func:`gap_components`.
GAP_COLUMNS = ("raw_gap", "centroid_gap", "distribution_gap")


def config_labels(table: pd.DataFrame) -> list[str]:
    """``"base"``, ``"base + shift"``, ``"finetuned"``: one label per (role, posthoc) row."""
    labels = []
    for role, posthoc in zip(table["role"], table["posthoc"], strict=True):
        labels.append(str(role) if posthoc in (None, "identity") else f"{role} + {posthoc}")
    return labels


def metric_bars(
    table: pd.DataFrame, metrics: Sequence[str] = TASK_METRICS, title: str = ""
) -> go.Figure:
    """Grouped bars: x = metric, one bar (trace) per evaluated model (row of ``table``).

    Args:
        table: :func:`tpccma_lib.evaluation.roles.results_table` output (``role``, ``posthoc``, metrics).
        metrics: the columns to draw (missing ones are skipped).
    """
    metrics = [m for m in metrics if m in table.columns]
    fig = go.Figure()
    for label, (_, row) in zip(config_labels(table), table.iterrows(), strict=True):
        fig.add_trace(go.Bar(name=label, x=metrics, y=[row[m] for m in metrics]))
    fig.update_layout(barmode="group", title=title, yaxis_title="value", legend_title="model")
    return fig


def gap_components(table: pd.DataFrame, title: str = "") -> go.Figure:
    """Raw, centroid and distribution gap (embedding units) of every evaluated model."""
    labels = config_labels(table)
    fig = go.Figure()
    for column in GAP_COLUMNS:
        if column in table.columns:
            fig.add_trace(go.Bar(name=column, x=labels, y=table[column].to_list()))
    fig.update_layout(
        barmode="group", title=title, yaxis_title="gap (embedding units)", xaxis_tickangle=-30
    )
    return fig


def _wrap(text: str, width: int = 28) -> str:
    words, lines, line = str(text).split(), [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "<br>".join([*lines, line])


def caption_gallery(
    images: Sequence[np.ndarray], captions: pd.DataFrame, title: str = "", columns: int = 3
) -> go.Figure:
    """Images with their reference caption and the captions each model generated.

    Args:
        images: one (H, W, 3) uint8 image per row of ``captions``.
        captions: :func:`tpccma_lib.evaluation.roles.sample_captions` output: ``image``, ``class``,
            ``reference`` and one column per model.
        columns: images per row of the grid.
    """
    if len(images) != len(captions):
        raise ValueError(
            f"{len(images)} images for {len(captions)} caption rows; pass the images of the "
            "table's 'image' indices, in its order."
        )
    roles = [c for c in captions.columns if c not in ("image", "class", "reference")]
    n = len(images)
    rows = max(1, -(-n // columns))
    titles = [
        f"test image {i} ({c})" for i, c in zip(captions["image"], captions["class"], strict=True)
    ]
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=titles, vertical_spacing=0.32)
    for k, (image, (_, row)) in enumerate(zip(images, captions.iterrows(), strict=True)):
        r, c = k // columns + 1, k % columns + 1
        fig.add_trace(go.Image(z=np.asarray(image)), row=r, col=c)
        text = "<br>".join(
            [f"<b>reference</b>: {_wrap(row['reference'])}"]
            + [f"<b>{role}</b>: {_wrap(row[role])}" for role in roles]
        )
        axis = "" if k == 0 else str(k + 1)
        fig.add_annotation(
            text=text,
            xref=f"x{axis} domain",
            yref=f"y{axis} domain",
            x=0.5,
            y=-0.05,
            xanchor="center",
            yanchor="top",
            showarrow=False,
            align="left",
            font={"size": 9},
        )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(title=title, height=420 * rows, margin={"b": 160})
    return fig


#: The two gap parts a Pareto plot can put on its x axis: (tradeoff column, pareto flag, label).
PARETO_GAPS = {
    "raw": ("gap_reduction_pct", "pareto", "raw gap reduction vs original model (%)"),
    "distribution": (
        "distribution_reduction_pct",
        "pareto_distribution",
        "distribution gap reduction vs original model (%)",
    ),
}
_ACCURACY_LABEL = "zero-shot accuracy drop vs original model (%)"


def _pareto_gap(gap: str) -> tuple[str, str, str]:
    if gap not in PARETO_GAPS:
        raise ValueError(f"gap must be one of {sorted(PARETO_GAPS)}, got {gap!r}.")
    return PARETO_GAPS[gap]


def pareto_figure(
    tradeoff: pd.DataFrame, summary: pd.DataFrame, title: str = "", gap: str = "raw"
) -> go.Figure:
    """Gap reduction (%) vs zero-shot accuracy drop (%), both against the original model: the
    sweep (alpha = 0 is the control, the same fine-tune without the alignment loss), the base
    model and its post-hoc fixes.

    Args:
        tradeoff: :func:`tpccma_lib.evaluation.tradeoff.tradeoff_table` (one point per run and seed).
        summary: :func:`tpccma_lib.evaluation.tradeoff.tradeoff_summary` (means over seeds, ``pareto``).
        gap: "raw" or "distribution": which gap part's reduction is on the x axis.

    Traces: "runs (each seed)", "TPC-CMA (mean over seeds)" (a line through the alphas),
    "post-hoc (mean over seeds)", "original model", "Pareto front".
    """
    x, flag, x_label = _pareto_gap(gap)
    fig = go.Figure()
    runs = tradeoff[tradeoff["kind"] == "fine-tuned"]
    fig.add_trace(
        go.Scatter(
            name="runs (each seed)",
            x=runs[x],
            y=runs["accuracy_drop_pct"],
            mode="markers",
            marker={"size": 6, "opacity": 0.4, "color": "#1f77b4"},
            text=[f"{n}, seed {s}" for n, s in zip(runs["name"], runs["train_seed"], strict=True)],
        )
    )
    mean = summary[summary["kind"] == "fine-tuned"].sort_values("alpha_target")
    fig.add_trace(
        go.Scatter(
            name="TPC-CMA (mean over seeds; alpha=0: control)",
            x=mean[x],
            y=mean["accuracy_drop_pct"],
            mode="lines+markers+text",
            text=mean["name"].to_list(),
            textposition="top center",
            marker={"size": 10, "color": "#1f77b4"},
        )
    )
    for kind, symbol, color in (("post-hoc", "diamond", "#d62728"), ("base", "x", "black")):
        points = summary[summary["kind"] == kind]
        fig.add_trace(
            go.Scatter(
                name="post-hoc (mean over seeds)" if kind == "post-hoc" else "original model",
                x=points[x],
                y=points["accuracy_drop_pct"],
                mode="markers+text",
                text=points["name"].to_list(),
                textposition="bottom center",
                marker={"size": 10, "symbol": symbol, "color": color},
            )
        )
    front = summary[summary[flag].astype(bool)].sort_values(x)
    fig.add_trace(
        go.Scatter(
            name="Pareto front",
            x=front[x],
            y=front["accuracy_drop_pct"],
            mode="lines",
            line={"dash": "dot", "color": "gray"},
        )
    )
    fig.update_layout(
        title=title,
        xaxis_title=f"{x_label}  → better",
        yaxis_title=f"{_ACCURACY_LABEL}  ↓ better",
    )
    return fig


def r2_heatmap(r2: pd.DataFrame, points: str | None = None, title: str = "") -> go.Figure:
    """Heatmap of R² (rows: task metrics, columns: gap metrics) of one set of points.

    Args:
        r2: :func:`tpccma_lib.evaluation.tradeoff.r2_analysis` output.
        points: which ``points`` set to draw (default: the first in the table).
    """
    points = points if points is not None else str(r2["points"].iloc[0])
    part = r2[r2["points"] == points]
    grid = part.pivot(index="task_metric", columns="gap_metric", values="r2")
    grid = grid.loc[
        list(dict.fromkeys(part["task_metric"])), list(dict.fromkeys(part["gap_metric"]))
    ]
    fig = go.Figure(
        go.Heatmap(
            z=grid.to_numpy(),
            x=list(grid.columns),
            y=list(grid.index),
            zmin=0,
            zmax=1,
            colorscale="Blues",
            text=np.round(grid.to_numpy(), 3),
            texttemplate="%{text}",
            colorbar={"title": "R²"},
        )
    )
    fig.update_layout(title=title or f"R² of task metric on gap metric ({points})")
    return fig


def _draw_pareto(ax: Any, tradeoff: pd.DataFrame, summary: pd.DataFrame, gap: str) -> None:
    """One panel of :func:`save_pareto_png` (matplotlib axes ``ax``), gap part ``gap``."""
    x, flag, x_label = _pareto_gap(gap)
    runs = tradeoff[tradeoff["kind"] == "fine-tuned"]
    ax.scatter(
        runs[x],
        runs["accuracy_drop_pct"],
        s=14,
        alpha=0.35,
        color="tab:blue",
        label="runs (each seed)",
    )
    mean = summary[summary["kind"] == "fine-tuned"].sort_values("alpha_target")
    ax.plot(
        mean[x],
        mean["accuracy_drop_pct"],
        "o-",
        color="tab:blue",
        label="TPC-CMA (mean over seeds; alpha=0: control)",
    )
    for alpha, px, py in zip(mean["alpha_target"], mean[x], mean["accuracy_drop_pct"], strict=True):
        ax.annotate(f"α={alpha:g}", (px, py), textcoords="offset points", xytext=(2, 5),
                    fontsize=6, rotation=45)  # fmt: skip
    posthoc = summary[summary["kind"] == "post-hoc"]
    ax.scatter(
        posthoc[x],
        posthoc["accuracy_drop_pct"],
        marker="D",
        color="tab:red",
        label="post-hoc fixes of the original model",
    )
    for name, px, py in zip(posthoc["name"], posthoc[x], posthoc["accuracy_drop_pct"], strict=True):
        ax.annotate(
            name, (px, py), textcoords="offset points", xytext=(4, -9), fontsize=7, color="tab:red"
        )
    base = summary[summary["kind"] == "base"]
    ax.scatter(
        base[x], base["accuracy_drop_pct"], marker="x", color="black", s=40, label="original model"
    )
    front = summary[summary[flag].astype(bool)].sort_values(x)
    ax.plot(front[x], front["accuracy_drop_pct"], ":", color="gray", label="Pareto front")
    ax.axhline(0, color="black", lw=0.5)
    ax.axvline(0, color="black", lw=0.5)
    # symmetric log above 5 %: the fine-tunes' drops of a few % and a fix's 60 % on one axis
    ax.set_yscale("symlog", linthresh=5.0)
    ax.set_xlabel(f"{x_label}  → better", fontsize=8)
    ax.set_ylabel(f"{_ACCURACY_LABEL}  ↓ better", fontsize=8)


def save_pareto_png(
    tradeoff: pd.DataFrame,
    summary: pd.DataFrame,
    path: str | os.PathLike[str],
    title: str = "",
    dpi: int = 120,
) -> Path:
    """Draw :func:`pareto_figure`'s content with matplotlib (Agg) into a PNG at ``path``: two
    panels, the raw-gap reduction (left) and the distribution-gap reduction (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 2, figsize=(12.0, 4.8), sharey=True)
    for ax, gap in zip(axes, ("raw", "distribution"), strict=True):
        _draw_pareto(ax, tradeoff, summary, gap)
    axes[0].legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    return path
