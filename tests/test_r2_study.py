"""The bootstrap R² study: R² and paired R² differences with intervals, the script, the block."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import linregress

from tpccma_lib.app.readme import CSV_SECTIONS, r2_section
from tpccma_lib.evaluation.analysis import (
    AnalysisError,
    bootstrap_r2,
    bootstrap_r2_difference,
    bootstrap_r2_table,
    r2_difference_verdict,
    r2_study_section,
    r2_study_table,
)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _noisy_line(rng: np.random.Generator, n: int, noise: float = 0.5) -> tuple:
    x = rng.uniform(0, 1, size=n)
    return x, 2.0 * x + noise * rng.normal(size=n)


def _script():
    spec = importlib.util.spec_from_file_location("r2_study", ROOT / "benchmarks" / "r2_study.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ bootstrap R²


def test_estimate_is_scipy_r2_and_interval_holds_it(rng: np.random.Generator) -> None:
    x, y = _noisy_line(rng, 30)
    result = bootstrap_r2(x, y, n_boot=500, seed=3)
    assert result.estimate == pytest.approx(linregress(x, y).rvalue ** 2, rel=1e-12)
    assert result.low <= result.estimate <= result.high
    assert 0.0 <= result.low < result.high <= 1.0
    assert (result.n_points, result.n_boot, result.n_valid, result.level) == (30, 500, 500, 0.95)


def test_interval_is_the_percentiles_of_resampled_scipy_fits(rng: np.random.Generator) -> None:
    """Resamples drawn by default_rng(seed).integers(0, n, (n_boot, n)), each fitted by scipy."""
    x, y = _noisy_line(rng, 12)
    n_boot, seed = 200, 7
    index = np.random.default_rng(seed).integers(0, 12, size=(n_boot, 12))
    expected = [linregress(x[i], y[i]).rvalue ** 2 for i in index]
    low, high = np.percentile(expected, [2.5, 97.5])
    result = bootstrap_r2(x, y, n_boot=n_boot, seed=seed)
    assert (result.low, result.high) == pytest.approx((low, high), rel=1e-9)
    narrow = bootstrap_r2(x, y, n_boot=n_boot, seed=seed, level=0.5)
    assert result.low <= narrow.low <= narrow.high <= result.high


def test_interval_narrows_with_more_points(rng: np.random.Generator) -> None:
    widths = []
    for n in (20, 200, 2000):  # the same noisy line (true R² 0.57), ever more points
        result = bootstrap_r2(*_noisy_line(rng, n), n_boot=1000, seed=0)
        widths.append(result.high - result.low)
    assert widths[0] > 2 * widths[1] > 4 * widths[2]


def test_same_seed_same_resamples_other_seed_other_interval(rng: np.random.Generator) -> None:
    x, y = _noisy_line(rng, 20)
    assert bootstrap_r2(x, y, seed=1) == bootstrap_r2(x, y, seed=1)
    assert bootstrap_r2(x, y, seed=1).low != bootstrap_r2(x, y, seed=2).low


def test_resamples_with_a_single_x_value_are_skipped() -> None:
    # three points: 3 of the 27 equally likely resamples repeat one point (no R²)
    x, y = np.array([0.0, 1.0, 2.0]), np.array([0.0, 2.0, 1.0])
    result = bootstrap_r2(x, y, n_boot=2000, seed=0)
    assert 0.05 < 1 - result.n_valid / result.n_boot < 0.2
    assert np.isfinite([result.low, result.high]).all()


# ------------------------------------------------------------------ paired difference


def test_difference_of_identical_predictors_is_zero(rng: np.random.Generator) -> None:
    x, y = _noisy_line(rng, 25)
    diff = bootstrap_r2_difference(x, x.copy(), y, n_boot=500)
    assert (diff.estimate, diff.low, diff.high) == (0.0, 0.0, 0.0)
    assert not diff.excludes(0.0)


def test_difference_is_positive_when_y_follows_the_first_x_only(
    rng: np.random.Generator,
) -> None:
    first, second = rng.uniform(size=40), rng.uniform(size=40)
    y = 3.0 * first + 0.2 * rng.normal(size=40)
    diff = bootstrap_r2_difference(first, second, y, n_boot=1000, seed=0)
    expected = linregress(first, y).rvalue ** 2 - linregress(second, y).rvalue ** 2
    assert diff.estimate == pytest.approx(expected, rel=1e-12)
    assert diff.low > 0.5 and diff.excludes(0.0)
    reverse = bootstrap_r2_difference(second, first, y, n_boot=1000, seed=0)
    assert reverse.high < -0.5
    # paired: the same resamples as the single fits, so the bounds are the negated ones
    assert (reverse.low, reverse.high) == pytest.approx((-diff.high, -diff.low))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (([1.0, 2.0], [1.0, 3.0]), "at least 3"),
        (([1.0, 2.0, 3.0], [1.0, 2.0]), "same length"),
        (([2.0, 2.0, 2.0], [1.0, 2.0, 4.0]), "x is constant"),
        (([1.0, 2.0, 3.0], [5.0, 5.0, 5.0]), "y is constant"),
        (([1.0, np.nan, 3.0], [1.0, 2.0, 4.0]), "finite"),
    ],
)
def test_bad_input_is_a_clear_error(args: tuple, message: str) -> None:
    with pytest.raises(AnalysisError, match=message):
        bootstrap_r2(*args)
    with pytest.raises(ValueError, match=message):  # AnalysisError is a ValueError
        bootstrap_r2_difference(args[0], args[0], args[1])


def test_bad_settings_and_mismatched_predictors_are_errors() -> None:
    x, y = np.arange(5.0), np.array([1.0, 3.0, 2.0, 5.0, 4.0])
    with pytest.raises(AnalysisError, match="n_boot"):
        bootstrap_r2(x, y, n_boot=0)
    with pytest.raises(AnalysisError, match="level"):
        bootstrap_r2(x, y, level=1.0)
    with pytest.raises(AnalysisError, match="same length"):
        bootstrap_r2_difference(x, x[:4], y)
    with pytest.raises(AnalysisError, match="x is constant"):
        bootstrap_r2_difference(x, np.ones(5), y)


# ------------------------------------------------------------------ tables, verdicts, block


def _points(rng: np.random.Generator, n: int = 30) -> pd.DataFrame:
    """Models whose tasks follow the distribution gap, with raw = centroid gap."""
    raw, dist = rng.uniform(0.0, 0.5, size=n), rng.uniform(0.1, 0.6, size=n)
    return pd.DataFrame(
        {
            "seed": np.repeat([0, 1], n // 2),
            "kind": np.tile(["base", "cma", "cma"], n // 3),
            "raw_gap": raw,
            "centroid_gap": raw,
            "distribution_gap": dist,
            "cider": 1.2 - dist + 0.02 * rng.normal(size=n),
            "i2t_R@1": 0.2 + 0.05 * rng.normal(size=n),
        }
    )


def test_table_pairs_every_gap_with_scipy_and_the_reference(rng: np.random.Generator) -> None:
    points = _points(rng)
    points.loc[4, "cider"] = np.nan  # dropped for cider only
    gaps = ["raw_gap", "centroid_gap", "distribution_gap"]
    table = bootstrap_r2_table(points, ["cider", "i2t_R@1"], gaps, n_boot=300, seed=5)
    assert len(table) == 6
    for row in table.itertuples():
        pair = points[[row.gap_metric, row.task_metric]].dropna()
        assert row.r2 == pytest.approx(linregress(pair.iloc[:, 0], pair.iloc[:, 1]).rvalue ** 2)
        assert row.n == len(pair)
    cider = table[table.task_metric == "cider"].set_index("gap_metric")
    kept = points.dropna()
    direct = bootstrap_r2_difference(
        kept["distribution_gap"], kept["raw_gap"], kept["cider"], n_boot=300, seed=5
    )
    assert cider.loc["distribution_gap", "difference_low"] == pytest.approx(direct.low)
    assert cider.loc["distribution_gap", "difference_low"] > 0.5
    assert np.isnan(cider.loc["raw_gap", "r2_minus_reference"])
    assert cider.loc["centroid_gap", "r2_minus_reference"] == 0.0


def test_table_gives_nan_for_a_constant_task_and_errors_for_missing_columns() -> None:
    frame = pd.DataFrame({"raw_gap": [0.1, 0.2, 0.3, 0.4], "acc": [0.5] * 4})
    table = bootstrap_r2_table(frame, ["acc"], ["raw_gap"], n_boot=10)
    assert np.isnan(table["r2"].iloc[0]) and table["n_valid"].iloc[0] == 0
    with pytest.raises(AnalysisError, match="not in the table"):
        bootstrap_r2_table(frame, ["cider"], ["raw_gap"])
    with pytest.raises(AnalysisError, match="reference"):
        bootstrap_r2_table(frame, ["acc"], ["raw_gap"], reference="distribution_gap")


def test_verdict_reads_the_interval() -> None:
    assert r2_difference_verdict("CIDEr", 0.3, 0.1, 0.5).startswith(
        "the distribution gap predicts CIDEr better than the raw gap"
    )
    assert r2_difference_verdict("CIDEr", -0.3, -0.5, -0.1).startswith(
        "the raw gap predicts CIDEr better than the distribution gap"
    )
    holds = r2_difference_verdict("CIDEr", 0.1, -0.2, 0.4)
    assert "cannot be told apart" in holds and "[-0.200, +0.400] holds 0" in holds
    assert "no R²" in r2_difference_verdict("CIDEr", np.nan, np.nan, np.nan)


def test_section_renders_scopes_tables_and_verdicts(rng: np.random.Generator, tmp_path) -> None:
    points = _points(rng)
    scopes = {"All models": [True] * len(points), "Fine-tunes only": points["kind"] == "cma"}
    table = r2_study_table(
        points,
        scopes,
        ["cider", "i2t_R@1"],
        ["raw_gap", "centroid_gap", "distribution_gap"],
        kind_labels={"base": "original models", "cma": "CMA fine-tunes"},
        n_boot=300,
    )
    assert table["gap_correlation"].abs().max() < 0.6  # independent gaps in this example
    path = tmp_path / "r2_study.csv"
    table.to_csv(path, index=False)
    block = r2_study_section(path)
    lead = "**All models**: 30 models (seeds 0, 1): original models (10), CMA fine-tunes (20)"
    assert lead in block
    assert "**Fine-tunes only**: 20 models" in block
    assert block.count("| CIDEr | ") == 2
    assert (
        "**Verdict, all models:** the distribution gap predicts CIDEr better than the raw gap (the "
        "95 % interval of the R² difference lies above 0); the distribution gap and the raw gap "
        "cannot be told apart on R@1 i→t (the 95 % interval of the R² difference holds 0)."
    ) in block
    assert CSV_SECTIONS["r2"] is r2_section and r2_section(path) == block


def test_alphas_are_chosen_from_the_validation_values_given() -> None:
    choose = _script().choose_alphas
    # centroid gap on the validation split by alpha; the original model's is 0.49
    val = {0.05: 0.28, 0.2: 0.15, 0.5: 0.08, 1.0: 0.06}
    assert choose(val, 0.49, (0.5, 0.25)) == [0.05, 0.2]
    assert choose({0.1: 0.2, 0.3: 0.21}, 1.0, (0.5, 0.25)) == [0.3, 0.1]  # each once
    assert choose({0.1: 0.2}, 1.0, (0.5, 0.25)) == [0.1]


def test_script_runs_end_to_end(tmp_path, monkeypatch) -> None:
    """The study at smoke size: every kind of model, one alpha kept per single-term kind (of two
    candidates: the unkept one is never evaluated), both CSVs, and a block that renders."""
    module = _script()
    monkeypatch.setattr(module, "TARGET_FRACTIONS", (0.5,))
    evaluated = []
    original = module.evaluate_model

    def counting(exp, model, **kwargs):
        evaluated.append(kwargs["checkpoint"])
        return original(exp, model, **kwargs)

    monkeypatch.setattr(module, "evaluate_model", counting)
    out = tmp_path / "study.csv"
    assert module.main(["--smoke", "--out", str(out), "--runs", str(tmp_path / "runs")]) == 0
    points = pd.read_csv(tmp_path / "r2_points.csv")
    assert points["kind"].tolist() == [
        "base", "posthoc", "control", "cma", "centroid_only", "distribution_only",
    ]  # fmt: skip
    assert len(evaluated) == len(points)
    assert points[["zero_shot_accuracy", "i2t_R@1"]].stack().between(0, 1).all()
    single = points[points["kind"].isin(["centroid_only", "distribution_only"])]
    assert (single["centroid_weight"] * single["distribution_weight"] == 0).all()
    study = pd.read_csv(out)
    assert study["scope"].unique().tolist() == ["All models", "Fine-tunes only"]
    assert study.groupby("scope")["n"].max().tolist() == [6, 4]
    assert "**Fine-tunes only**: 4 models (seed 0)" in r2_study_section(out)


def test_readme_block_is_generated_from_the_committed_csv() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- r2:start -->")[1].split("<!-- r2:end -->")[0]
    assert block.strip() == r2_section(RESULTS / "r2_study.csv").strip()
