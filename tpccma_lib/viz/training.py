"""Figures (and the tables behind them) of a TPC-CMA training run.

Used by notebook 03. The builders take the run's history: the list of records that
:func:`tpccma_lib.training.loop.train` returns in ``TrainResult.history`` and writes to
``metrics.jsonl`` (``step``, ``phase``, ``alpha``, ``loss_clip``, ``loss_cma``, ``cma_centroid``,
``cma_distribution``, ``batch_gap``, the scheduler's telemetry ``grad_cosine``, ``norm_ratio``,
``applied_norm_ratio``, ``conflict``, ``projected``, ``tempering``, and the eval callback's
``val_*`` numbers). A record may lack any of these keys; a figure draws what is there.

    schedule_table        alpha(step) for each ramp shape, with the phase of each step
    alpha_figure          alpha(step) curves with the three phases shaded
    history_frame         the history as a DataFrame (selected keys, rows that have them)
    loss_figure           L_clip, and L_CMA with its centroid and distribution terms
    gap_curves_figure     validation raw / centroid / distribution gap over training
    telemetry_figure      gradient cosine with conflict / projection markers, norm ratios
    compare_runs_figure   one metric per panel, one line per run (e.g. the ablation)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tpccma_lib.training.curriculum import (
    RAMP_SHAPES,
    CurriculumConfig,
    alpha_schedule,
    phase_at,
    phase_boundaries,
)
from tpccma_lib.viz.gap import VizError

__all__ = [
    "GAP_CURVE_KEYS",
    "PHASE_NAMES",
    "alpha_figure",
    "compare_runs_figure",
    "gap_curves_figure",
    "history_frame",
    "loss_figure",
    "phase_boundary_steps",
    "schedule_table",
    "telemetry_figure",
]

#: Names of the curriculum phases, by number.
PHASE_NAMES = {1: "1: warm-up (contrastive)", 2: "2: alpha ramps in", 3: "3: alpha = target"}
_PHASE_FILL = {1: "rgba(127,127,127,0.10)", 2: "rgba(99,110,250,0.10)", 3: "rgba(239,85,59,0.08)"}
#: Validation gap keys drawn by gap_curves_figure, with their legend names.
GAP_CURVE_KEYS = {
    "val_raw_gap": "raw gap (val)",
    "val_centroid_gap": "centroid gap (val)",
    "val_distribution_gap": "distribution gap (val)",
}
# One colour per quantity, the same as in viz.gap (centroid blue, distribution red).
_COLORS = {
    "val_raw_gap": "#7f7f7f",
    "val_centroid_gap": "#636efa",
    "val_distribution_gap": "#ef553b",
    "batch_gap": "#636efa",
    "loss_clip": "#00cc96",
    "loss_cma": "#ab63fa",
    "cma_centroid": "#636efa",
    "cma_distribution": "#ef553b",
    "grad_cosine": "#19d3f3",
    "norm_ratio": "#ffa15a",
    "applied_norm_ratio": "#ab63fa",
}
_INTEGER_KEYS = ("phase",)  # history keys shown as integers by history_frame
_DECIMALS = 5  # figure values are rounded: smaller notebooks, same picture


# --------------------------------------------------------------------------- tables
def schedule_table(
    total_steps: int, cfg: CurriculumConfig, shapes: Sequence[str] = RAMP_SHAPES
) -> pd.DataFrame:
    """alpha(step) of ``cfg`` with each ramp shape in ``shapes``, one row per step.

    Returns:
        columns ``step``, ``phase`` and ``alpha_<shape>`` per shape; (total_steps, 2 + S).
    """
    for shape in shapes:
        if shape not in RAMP_SHAPES:
            raise VizError(f"unknown ramp shape {shape!r}; choose from {RAMP_SHAPES}.")
    steps = np.arange(total_steps)
    frame = pd.DataFrame(
        {"step": steps, "phase": [phase_at(int(s), total_steps, cfg) for s in steps]}
    )
    for shape in shapes:
        frame[f"alpha_{shape}"] = alpha_schedule(total_steps, replace(cfg, ramp_shape=shape))
    return frame


def _check_history(history: Sequence[Mapping[str, Any]], what: str) -> None:
    if len(history) == 0:
        raise VizError(f"{what} needs a non-empty history (the records of TrainResult.history).")
    if any("step" not in h for h in history):
        raise VizError(f"{what}: every history record needs a 'step' key; is this a train log?")


def _as_float(value: Any) -> float:
    if value is None:
        return math.nan
    return float(value)


def history_frame(
    history: Sequence[Mapping[str, Any]], keys: Sequence[str] | None = None
) -> pd.DataFrame:
    """The history as a DataFrame: ``step`` plus ``keys`` (default: every key seen).

    Only records that carry at least one of ``keys`` are kept (e.g. ``keys=["val_raw_gap"]``
    gives the eval steps); a missing value is NaN, booleans become 0.0 / 1.0, ``phase`` stays
    an integer when every kept record has it.
    """
    _check_history(history, "history_frame")
    if keys is None:
        keys = [k for k in dict.fromkeys(k for h in history for k in h) if k != "step"]
    rows = [h for h in history if any(k in h for k in keys)]
    data: dict[str, list[Any]] = {"step": [int(h["step"]) for h in rows]}
    for key in keys:
        values = [_as_float(h.get(key)) for h in rows]
        if key in _INTEGER_KEYS and all(math.isfinite(v) for v in values):
            data[key] = [int(v) for v in values]
        else:
            data[key] = values
    return pd.DataFrame(data)


# --------------------------------------------------------------------------- helpers
def _rounded(values: Sequence[float]) -> list[float | None]:
    out: list[float | None] = []
    for v in values:
        v = float(v)
        out.append(round(v, _DECIMALS) if math.isfinite(v) else None)
    return out


def _series(history: Sequence[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    rows = [h for h in history if key in h and h[key] is not None]
    return [int(h["step"]) for h in rows], [float(h[key]) for h in rows]


def _phase_spans(phases: Sequence[int], steps: Sequence[int]) -> list[tuple[int, float, float]]:
    """(phase, first step, last step + 1) of each run of equal phases."""
    spans: list[tuple[int, float, float]] = []
    for step, phase in zip(steps, phases, strict=True):
        if spans and spans[-1][0] == phase:
            spans[-1] = (phase, spans[-1][1], step + 1)
        else:
            spans.append((phase, step, step + 1))
    return spans


def _shade_phases(fig: go.Figure, spans: Sequence[tuple[int, float, float]], **where: Any) -> None:
    for phase, start, stop in spans:
        fig.add_vrect(
            x0=start,
            x1=stop,
            fillcolor=_PHASE_FILL.get(phase, "rgba(0,0,0,0)"),
            line_width=0,
            layer="below",
            **where,
        )


def _history_spans(history: Sequence[Mapping[str, Any]]) -> list[tuple[int, float, float]]:
    rows = [h for h in history if "phase" in h]
    return _phase_spans([int(h["phase"]) for h in rows], [int(h["step"]) for h in rows])


def _line(history: Sequence[Mapping[str, Any]], key: str, name: str, **kw: Any) -> go.Scatter:
    steps, values = _series(history, key)
    return go.Scatter(
        x=steps,
        y=_rounded(values),
        name=name,
        mode=kw.pop("mode", "lines"),
        line={"color": _COLORS.get(key), **kw.pop("line", {})},
        **kw,
    )


# --------------------------------------------------------------------------- figures
def alpha_figure(
    schedule: pd.DataFrame, history: Sequence[Mapping[str, Any]] | None = None
) -> go.Figure:
    """alpha(step) for each ``alpha_<shape>`` column of :func:`schedule_table`, phases shaded.

    With ``history``, the alpha the trainer logged is overlaid as markers (it must lie on the
    curve of the run's ramp shape).
    """
    columns = [c for c in schedule.columns if c.startswith("alpha_")]
    if not columns or "step" not in schedule or "phase" not in schedule:
        raise VizError("alpha_figure needs the DataFrame of schedule_table(total_steps, cfg).")
    fig = go.Figure()
    _shade_phases(fig, _phase_spans(schedule["phase"].tolist(), schedule["step"].tolist()))
    for column in columns:
        shape = column.removeprefix("alpha_")
        fig.add_trace(
            go.Scatter(
                x=schedule["step"].tolist(),
                y=_rounded(schedule[column]),
                name=f"{shape} ramp",
                mode="lines",
                line={"dash": "solid" if shape == "cosine" else "dash"},
            )
        )
    if history:
        steps, alphas = _series(history, "alpha")
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=_rounded(alphas),
                name="logged by the trainer",
                mode="markers",
                marker={"size": 4, "color": "black"},
            )  # fmt: skip
        )
    fig.update_layout(
        title="alpha(t): warm-up (grey), ramp (blue), alpha = target (red)",
        xaxis_title="step",
        yaxis_title="alpha (weight of L_CMA)",
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def loss_figure(history: Sequence[Mapping[str, Any]]) -> go.Figure:
    """Top: L_clip per logged step. Bottom: L_CMA (unweighted) and its two terms."""
    _check_history(history, "loss_figure")
    if not any("loss_clip" in h for h in history):
        raise VizError("loss_figure: no record has 'loss_clip'; was the run logged (log_every)?")
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=("contrastive loss L_clip", "alignment loss L_CMA (before alpha)"),
    )
    fig.add_trace(_line(history, "loss_clip", "L_clip"), row=1, col=1)
    for key, name in (
        ("loss_cma", "L_CMA"),
        ("cma_centroid", "centroid term ||mu_i - mu_t||^2"),
        ("cma_distribution", "distribution term (Bures^2 / MMD / CORAL)"),
    ):
        if any(key in h for h in history):
            fig.add_trace(_line(history, key, name), row=2, col=1)
    _shade_phases(fig, _history_spans(history), row="all", col=1)
    fig.update_xaxes(title_text="step", row=2, col=1)
    fig.update_layout(title="Losses over training (phases shaded)", legend={"orientation": "h"})
    return fig


def gap_curves_figure(
    history: Sequence[Mapping[str, Any]], baseline: Mapping[str, float] | None = None
) -> go.Figure:
    """Validation raw / centroid / distribution gap at each eval step, plus the batch gap.

    ``baseline`` (e.g. the base model's ``{"raw_gap": ..., "centroid_gap": ...,
    "distribution_gap": ...}`` on the same split) is drawn as dotted horizontal lines.
    """
    _check_history(history, "gap_curves_figure")
    present = [k for k in GAP_CURVE_KEYS if any(k in h for h in history)]
    if not present:
        raise VizError(
            "gap_curves_figure: no record has val_raw_gap / val_centroid_gap / "
            "val_distribution_gap; train with eval_fn=gap_monitor(exp) and eval_every > 0."
        )
    fig = go.Figure()
    _shade_phases(fig, _history_spans(history))
    for key in present:
        fig.add_trace(_line(history, key, GAP_CURVE_KEYS[key], mode="lines+markers"))
    for key, value in (baseline or {}).items():
        curve = f"val_{key}"
        if curve in GAP_CURVE_KEYS and math.isfinite(float(value)):
            fig.add_hline(
                y=round(float(value), _DECIMALS),
                line_dash="dot",
                line_color=_COLORS[curve],
                annotation_text=f"base model: {GAP_CURVE_KEYS[curve].removesuffix(' (val)')}",
            )
    if any("batch_gap" in h for h in history):
        fig.add_trace(
            _line(
                history,
                "batch_gap",
                "centroid gap of the training batch",
                line={"width": 1},
                opacity=0.4,
            )  # fmt: skip
        )
    fig.update_layout(
        title="Gap components over training",
        xaxis_title="step",
        yaxis_title="gap (embedding units)",
        legend={"orientation": "h", "y": -0.2},
    )
    return fig


def telemetry_figure(
    history: Sequence[Mapping[str, Any]], max_norm_ratio: float | None = None
) -> go.Figure:
    """Gradient-conflict telemetry of the steps where alignment was on.

    Top: ``cos(g_clip, g_align)`` with the steps the scheduler called a conflict (red x) and
    the steps it projected (open circles). Bottom: ``||alpha g_CMA|| / ||g_clip||`` as measured
    and as applied after the scheduler (log scale), with the cap ``max_norm_ratio`` if given,
    and, under the per-tensor LR rule, the mean learning-rate multiplier of the tensors.
    """
    _check_history(history, "telemetry_figure")
    rows = [h for h in history if h.get("grad_cosine") is not None]
    if not rows:
        raise VizError(
            "telemetry_figure: no record has 'grad_cosine'; the run had no alignment steps "
            "(alpha_target = 0?) or they were not logged."
        )
    fig = make_subplots(
        rows=2,
        cols=1,
        shared_xaxes=True,
        vertical_spacing=0.08,
        subplot_titles=(
            "cos(g_clip, g_align): below 0 the objectives conflict",
            "||alpha g_CMA|| / ||g_clip||",
        ),
    )
    fig.add_trace(_line(rows, "grad_cosine", "gradient cosine", mode="lines+markers",
                        marker={"size": 3}), row=1, col=1)  # fmt: skip
    for key, name, marker in (
        ("conflict", "conflict", {"symbol": "x", "color": "#d62728", "size": 8}),
        (
            "projected",
            "projected (PCGrad)",
            {"symbol": "circle-open", "color": "black", "size": 10},
        ),
    ):
        hits = [h for h in rows if bool(h.get(key))]
        fig.add_trace(
            go.Scatter(
                x=[int(h["step"]) for h in hits],
                y=_rounded([float(h["grad_cosine"]) for h in hits]),
                name=name,
                mode="markers",
                marker=marker,
            ),
            row=1,
            col=1,
        )
    fig.add_hline(y=0.0, line_dash="dot", line_color="grey", row=1, col=1)
    for key, name in (
        ("norm_ratio", "norm ratio, measured"),
        ("applied_norm_ratio", "norm ratio, applied"),
        ("lr_mean_multiplier", "mean LR multiplier (lr rule)"),
    ):
        if any(key in h for h in rows):
            fig.add_trace(_line(rows, key, name), row=2, col=1)
    if max_norm_ratio is not None and math.isfinite(max_norm_ratio):
        fig.add_hline(y=max_norm_ratio, line_dash="dash", line_color="grey", row=2, col=1)
    fig.update_yaxes(type="log", row=2, col=1)
    fig.update_xaxes(title_text="step", row=2, col=1)
    fig.update_layout(title="Gradient-aware scheduler telemetry", legend={"orientation": "h"})
    return fig


def compare_runs_figure(
    histories: Mapping[str, Sequence[Mapping[str, Any]]], keys: Sequence[str]
) -> go.Figure:
    """One panel per key in ``keys``, one line per run (legend: the run's name)."""
    if not histories:
        raise VizError("compare_runs_figure needs at least one run: {name: history}.")
    if not keys:
        raise VizError("compare_runs_figure needs at least one key to draw.")
    for name, history in histories.items():
        _check_history(history, f"compare_runs_figure (run {name!r})")
    fig = make_subplots(rows=1, cols=len(keys), subplot_titles=list(keys))
    palette = ("#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3")
    for i, (name, history) in enumerate(histories.items()):
        color = palette[i % len(palette)]
        for j, key in enumerate(keys):
            steps, values = _series(history, key)
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=_rounded(values),
                    name=name,
                    legendgroup=name,
                    showlegend=j == 0,
                    mode="lines+markers" if len(steps) < 30 else "lines",
                    line={"color": color},
                ),
                row=1,
                col=j + 1,
            )
            fig.update_xaxes(title_text="step", row=1, col=j + 1)
    fig.update_layout(title="Runs side by side", legend={"orientation": "h", "y": -0.25})
    return fig


def phase_boundary_steps(total_steps: int, cfg: CurriculumConfig) -> dict[str, int]:
    """First step of phase 2 and of phase 3 (for a printed table next to the alpha figure)."""
    ramp_start, ramp_end = phase_boundaries(total_steps, cfg)
    return {"first_ramp_step": ramp_start, "first_target_step": ramp_end}
