"""Training figures: the expected traces, the logged numbers drawn unchanged, clear errors."""

import math

import numpy as np
import pytest

from tpccma_lib.training.curriculum import CurriculumConfig, alpha_at, phase_boundaries
from tpccma_lib.viz.gap import VizError
from tpccma_lib.viz.training import (
    alpha_figure,
    compare_runs_figure,
    gap_curves_figure,
    history_frame,
    loss_figure,
    phase_boundary_steps,
    schedule_table,
    telemetry_figure,
)


def tiny_history():
    """Eight logged steps of a run: 2 warm-up, 2 ramp, 4 at target; evals every 4 steps."""
    history = []
    for step in range(8):
        phase = 1 if step < 2 else (2 if step < 4 else 3)
        alpha = {1: 0.0, 2: 0.25 * (step - 1), 3: 0.5}[phase]
        record = {"step": step, "phase": phase, "alpha": alpha, "loss_clip": 2.0 - 0.1 * step,
                  "batch_gap": 0.5 - 0.02 * step}  # fmt: skip
        if alpha > 0:
            cosine = 0.35 - 0.1 * step  # negative from step 4 on
            record.update(
                loss_cma=0.4 - 0.03 * step,
                cma_centroid=0.2 - 0.02 * step,
                cma_distribution=0.2 - 0.01 * step,
                grad_cosine=cosine,
                norm_ratio=0.1 * step,
                applied_norm_ratio=0.1 * step if cosine >= 0 else 0.05 * step,
                conflict=float(cosine < 0),
                projected=float(cosine < 0),
                tempering=1.0,
            )
        if step in (3, 7):
            record.update(val_raw_gap=0.6 - 0.05 * step, val_centroid_gap=0.6 - 0.05 * step,
                          val_distribution_gap=0.4 - 0.01 * step)  # fmt: skip
        history.append(record)
    return history


def trace(fig, name):
    hits = [t for t in fig.data if t.name == name]
    assert len(hits) == 1, [t.name for t in fig.data]
    return hits[0]


def test_schedule_table_is_alpha_at_for_each_shape():
    cfg = CurriculumConfig(alpha_target=0.5, warmup_fraction=0.2, ramp_fraction=0.3)
    table = schedule_table(50, cfg)
    assert list(table.columns) == ["step", "phase", "alpha_linear", "alpha_cosine"]
    for shape in ("linear", "cosine"):
        shaped = CurriculumConfig(
            alpha_target=0.5, warmup_fraction=0.2, ramp_fraction=0.3, ramp_shape=shape
        )
        expected = [alpha_at(s, 50, shaped) for s in range(50)]
        np.testing.assert_allclose(table[f"alpha_{shape}"], expected, rtol=0, atol=0)
    ramp_start, ramp_end = phase_boundaries(50, cfg)
    assert (table.phase == 1).sum() == ramp_start == 10
    assert (table.phase == 3).sum() == 50 - ramp_end == 25
    assert phase_boundary_steps(50, cfg) == {"first_ramp_step": 10, "first_target_step": 25}
    with pytest.raises(VizError, match="ramp shape"):
        schedule_table(10, cfg, shapes=("sigmoid",))


def test_alpha_figure_draws_both_shapes_the_phases_and_the_log():
    cfg = CurriculumConfig(alpha_target=0.5, warmup_fraction=0.25, ramp_fraction=0.25)
    table = schedule_table(8, cfg)
    history = tiny_history()
    fig = alpha_figure(table, history)
    assert [t.name for t in fig.data] == ["linear ramp", "cosine ramp", "logged by the trainer"]
    np.testing.assert_allclose(trace(fig, "cosine ramp").y, table.alpha_cosine, atol=1e-5)
    assert list(trace(fig, "logged by the trainer").y) == [h["alpha"] for h in history]
    assert len(fig.layout.shapes) == 3  # one shaded band per phase
    with pytest.raises(VizError, match="schedule_table"):
        alpha_figure(table[["step", "phase"]])


def test_loss_figure_has_both_losses_and_cma_terms_only_where_logged():
    history = tiny_history()
    fig = loss_figure(history)
    names = [t.name for t in fig.data]
    assert names[0] == "L_clip" and "L_CMA" in names and len(names) == 4
    clip = trace(fig, "L_clip")
    assert list(clip.x) == list(range(8))
    np.testing.assert_allclose(clip.y, [h["loss_clip"] for h in history])
    assert list(trace(fig, "L_CMA").x) == [2, 3, 4, 5, 6, 7]  # alignment on from phase 2
    no_cma = loss_figure([{k: v for k, v in h.items() if k != "loss_cma"} for h in history])
    assert "L_CMA" not in [t.name for t in no_cma.data]
    with pytest.raises(VizError, match="loss_clip"):
        loss_figure([{"step": 0}])


def test_gap_curves_show_the_eval_steps_and_the_baseline():
    history = tiny_history()
    fig = gap_curves_figure(history, baseline={"raw_gap": 0.7, "distribution_gap": 0.45})
    dist = trace(fig, "distribution gap (val)")
    assert list(dist.x) == [3, 7]
    np.testing.assert_allclose(dist.y, [0.37, 0.33])
    assert "centroid gap of the training batch" in [t.name for t in fig.data]
    dotted = [s for s in fig.layout.shapes if s.line.dash == "dot"]
    assert sorted(s.y0 for s in dotted) == [0.45, 0.7]
    with pytest.raises(VizError, match="gap_monitor"):
        gap_curves_figure([{"step": 0, "loss_clip": 1.0}])


def test_telemetry_marks_exactly_the_conflict_steps():
    history = tiny_history()
    fig = telemetry_figure(history, max_norm_ratio=1.0)
    cosine = trace(fig, "gradient cosine")
    assert list(cosine.x) == [2, 3, 4, 5, 6, 7]
    expected_conflicts = [h["step"] for h in history if h.get("grad_cosine", 1) < 0]
    assert list(trace(fig, "conflict").x) == expected_conflicts == [4, 5, 6, 7]
    assert list(trace(fig, "projected (PCGrad)").x) == expected_conflicts
    np.testing.assert_allclose(
        trace(fig, "norm ratio, applied").y, [0.2, 0.3, 0.2, 0.25, 0.3, 0.35]
    )
    assert fig.layout.yaxis2.type == "log"
    with pytest.raises(VizError, match="alpha_target = 0"):
        telemetry_figure([{"step": 0, "alpha": 0.0}])


def test_non_finite_values_become_gaps_not_errors():
    history = tiny_history()
    history[4]["norm_ratio"] = math.inf
    fig = telemetry_figure(history)
    assert trace(fig, "norm ratio, measured").y[2] is None


def test_compare_runs_has_one_line_per_run_and_key():
    a, b = tiny_history(), tiny_history()[:5]
    fig = compare_runs_figure({"scheduler on": a, "off": b}, ["val_raw_gap", "grad_cosine"])
    assert len(fig.data) == 4
    assert [t.showlegend for t in fig.data] == [True, False, True, False]
    assert list(fig.data[2].x) == [3]  # run "off" has one eval step
    with pytest.raises(VizError, match="at least one run"):
        compare_runs_figure({}, ["val_raw_gap"])


def test_history_frame_selects_rows_with_the_keys():
    frame = history_frame(tiny_history(), ["val_raw_gap", "val_distribution_gap"])
    assert frame.step.tolist() == [3, 7]
    np.testing.assert_allclose(frame.val_raw_gap, [0.45, 0.25])
    full = history_frame(tiny_history())
    assert len(full) == 8 and math.isnan(full.loc[0, "grad_cosine"])
    with pytest.raises(VizError, match="non-empty"):
        history_frame([])


def test_history_frame_keeps_the_phase_an_integer():
    frame = history_frame(tiny_history(), ["phase", "alpha"])
    assert frame.phase.tolist() == [1, 1, 2, 2, 3, 3, 3, 3]
    assert frame.phase.dtype.kind == "i"
