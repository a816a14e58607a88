"""R², R² tables, Pareto fronts, relative change; result rows; the evaluation suite."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import linregress

from tpccma_lib.embeddings import Embeddings
from tpccma_lib.evaluation.analysis import (
    AnalysisError,
    linear_fit,
    pareto_front,
    r2_table,
    r_squared,
    relative_change,
)
from tpccma_lib.evaluation.records import make_row, metrics_wide, rows_to_frame
from tpccma_lib.evaluation.suite import evaluate_embeddings

# ------------------------------------------------------------------ R²


def test_r_squared_matches_scipy(rng: np.random.Generator) -> None:
    x = rng.normal(size=20)
    y = 0.7 * x + rng.normal(scale=0.5, size=20)
    reference = linregress(x, y)
    assert r_squared(x, y) == pytest.approx(reference.rvalue**2)
    fit = linear_fit(x, y)
    assert fit["slope"] == pytest.approx(reference.slope)
    assert fit["intercept"] == pytest.approx(reference.intercept)
    assert fit["r"] == pytest.approx(reference.rvalue)
    # R² = 1 - SS_res / SS_tot, from the residuals of the fitted line
    residual = y - (fit["slope"] * x + fit["intercept"])
    assert fit["r2"] == pytest.approx(1 - residual @ residual / np.sum((y - y.mean()) ** 2))


def test_r_squared_of_an_exact_line_is_one_and_errors() -> None:
    x = np.arange(5.0)
    assert r_squared(x, -3 * x + 2) == pytest.approx(1.0)
    assert np.isnan(r_squared(x, np.ones(5)))
    with pytest.raises(AnalysisError, match="at least 3"):
        r_squared([1.0, 2.0], [3.0, 4.0])
    with pytest.raises(AnalysisError, match="constant"):
        r_squared(np.ones(4), np.arange(4.0))
    with pytest.raises(AnalysisError, match="finite"):
        r_squared([1.0, np.nan, 3.0], [1.0, 2.0, 3.0])


def test_r2_table_regresses_every_pair(rng: np.random.Generator) -> None:
    n = 12
    distribution_gap = rng.uniform(size=n)
    raw_gap = rng.uniform(size=n)
    df = pd.DataFrame(
        {
            "distribution_gap": distribution_gap,
            "raw_gap": raw_gap,
            "accuracy": 1 - distribution_gap + 0.01 * rng.normal(size=n),
            "cider": 0.5 * raw_gap + rng.normal(scale=0.2, size=n),
        }
    )
    df.loc[3, "cider"] = np.nan  # dropped for the cider pairs only
    table = r2_table(df, ["accuracy", "cider"], ["distribution_gap", "raw_gap"])
    assert len(table) == 4
    for row in table.itertuples():
        pair = df[[row.gap_metric, row.task_metric]].dropna()
        reference = linregress(pair[row.gap_metric], pair[row.task_metric])
        assert row.r2 == pytest.approx(reference.rvalue**2)
        assert row.slope == pytest.approx(reference.slope)
        assert row.n == len(pair)
    assert table.set_index(["task_metric", "gap_metric"]).loc[("cider", "raw_gap"), "n"] == n - 1
    with pytest.raises(AnalysisError, match="not in the table"):
        r2_table(df, ["zero_shot"], ["raw_gap"])


# ------------------------------------------------------------------ Pareto, relative change


def test_pareto_front_hand_example() -> None:
    # gap (minimise) vs accuracy (maximise)
    #   A (0.2, 0.90)  front: nothing has smaller gap and higher accuracy
    #   B (0.5, 0.80)  dominated by A
    #   C (0.1, 0.70)  front: smallest gap
    #   D (0.2, 0.85)  dominated by A (same gap, lower accuracy)
    #   E (0.6, 0.95)  front: highest accuracy
    #   F (0.1, 0.70)  identical to C: also on the front
    #   G (NaN, 0.99)  never on the front
    df = pd.DataFrame(
        {
            "gap": [0.2, 0.5, 0.1, 0.2, 0.6, 0.1, np.nan],
            "accuracy": [0.90, 0.80, 0.70, 0.85, 0.95, 0.70, 0.99],
        }
    )
    mask = pareto_front(df, "gap", "accuracy")
    np.testing.assert_array_equal(mask, [True, False, True, False, True, True, False])
    # maximise both: E dominates everything else that is valid
    both_max = pareto_front(df, "gap", "accuracy", minimize_x=False, maximize_y=True)
    np.testing.assert_array_equal(both_max, [False, False, False, False, True, False, False])
    # minimise both: C and F (smallest gap, smallest accuracy) dominate
    both_min = pareto_front(df, "gap", "accuracy", minimize_x=True, maximize_y=False)
    np.testing.assert_array_equal(both_min, [False, False, True, False, False, True, False])


def test_pareto_front_matches_brute_force(rng: np.random.Generator) -> None:
    df = pd.DataFrame({"x": rng.integers(0, 5, 40), "y": rng.integers(0, 5, 40)})
    mask = pareto_front(df, "x", "y")
    for i in range(len(df)):
        xi, yi = df.x[i], df.y[i]
        dominated = any(
            (df.x[j] <= xi and df.y[j] >= yi) and (df.x[j] < xi or df.y[j] > yi)
            for j in range(len(df))
        )
        assert mask[i] == (not dominated)


def test_relative_change() -> None:
    assert relative_change(0.318, 0.516) == pytest.approx((0.516 - 0.318) / 0.318)
    assert relative_change(-2.0, -1.0) == pytest.approx(0.5)
    np.testing.assert_allclose(relative_change(np.array([1.0, 4.0]), [0.5, 5.0]), [-0.5, 0.25])
    with pytest.raises(AnalysisError, match="base is 0"):
        relative_change(0.0, 1.0)


# ------------------------------------------------------------------ rows


def _meta_emb(rng: np.random.Generator, **meta: object) -> Embeddings:
    return Embeddings.from_arrays(rng.normal(size=(3, 4)), rng.normal(size=(3, 4)), meta=meta)


def test_make_row_and_frame(rng: np.random.Generator) -> None:
    emb = _meta_emb(rng, dataset="shapes", split="test", seed=np.int64(3), other="x")
    row = make_row(emb, "zero_shot", "accuracy", np.float32(0.5), n_images=10)
    assert row == {
        "dataset": "shapes",
        "split": "test",
        "model": None,
        "checkpoint": None,
        "seed": 3,
        "posthoc": None,
        "task": "zero_shot",
        "metric": "accuracy",
        "value": 0.5,
        "n_images": 10,
    }
    assert type(row["seed"]) is int and type(row["value"]) is float
    with pytest.raises(ValueError, match="overwrite"):
        make_row(emb, "t", "m", 1.0, seed=4)
    frame = rows_to_frame([row, make_row(emb, "retrieval", "i2t_R@1", 0.25, std=0.1)])
    assert list(frame.columns[:9]) == [
        "dataset",
        "split",
        "model",
        "checkpoint",
        "seed",
        "posthoc",
        "task",
        "metric",
        "value",
    ]
    assert frame["value"].tolist() == [0.5, 0.25]
    assert np.isnan(frame["std"][0]) and np.isnan(frame["n_images"][1])
    assert list(rows_to_frame([]).columns) == list(frame.columns[:9])


def test_metrics_wide_pivots_one_row_per_configuration(rng: np.random.Generator) -> None:
    a = _meta_emb(rng, dataset="shapes", posthoc="identity")
    b = _meta_emb(rng, dataset="shapes", posthoc="mean_center")
    rows = [
        make_row(a, "zero_shot", "accuracy", 0.9),
        make_row(a, "gap", "raw_gap", 0.8),
        make_row(b, "zero_shot", "accuracy", 0.7),
        make_row(b, "gap", "raw_gap", 0.1),
    ]
    wide = metrics_wide(rows).set_index("posthoc")
    assert wide.loc["identity", "zero_shot/accuracy"] == 0.9
    assert wide.loc["mean_center", "gap/raw_gap"] == 0.1
    assert wide["model"].isna().all()
    assert len(wide) == 2
    with pytest.raises(ValueError, match="more than once"):
        metrics_wide([*rows, make_row(a, "zero_shot", "accuracy", 0.5)])


# ------------------------------------------------------------------ suite


def test_evaluate_embeddings_runs_every_available_task() -> None:
    from tpccma_lib.evaluation.captioning import CaptionDecoderConfig, train_text_decoder

    rng = np.random.default_rng(5)
    labels = np.arange(12) % 3
    centres = np.eye(3, 8)
    images = centres[labels] + 0.1 * rng.normal(size=(12, 8))
    owner = np.repeat(np.arange(12), 2)
    texts = centres[labels[owner]] + 0.1 * rng.normal(size=(24, 8))
    meta = {"dataset": "toy", "split": "test", "model": "m", "seed": 0}
    emb = Embeddings.from_arrays(images, texts, owner, labels, ["a", "b", "c"], meta=meta)

    basic = evaluate_embeddings(emb, seeds=(0,))
    assert {r["task"] for r in basic} == {"retrieval", "clustering"}

    words = ["red", "green", "blue"]
    references = [[f"a {words[c]} thing", f"one {words[c]} shape"] for c in labels]
    decoder = train_text_decoder(
        texts,
        [c for refs in references for c in refs],
        CaptionDecoderConfig(d_model=16, n_heads=2, n_layers=1, prefix_length=1, steps=3),
        progress=False,
    )
    rows = evaluate_embeddings(
        emb, class_embeddings=centres, decoder=decoder, references=references, seeds=(0, 1)
    )
    assert {r["task"] for r in rows} == {"retrieval", "clustering", "zero_shot", "captioning"}
    assert all(r["dataset"] == "toy" and r["model"] == "m" for r in rows)
    accuracy = next(r for r in rows if r["metric"] == "accuracy")["value"]
    assert accuracy == pytest.approx(1.0)  # images sit on their class centres
    assert {r["metric"] for r in rows if r["task"] == "captioning"} == {
        "CIDEr",
        "BLEU-4",
        "ROUGE-L",
    }
    with pytest.raises(ValueError, match="both decoder and references"):
        evaluate_embeddings(emb, decoder=decoder)
