from pathlib import Path

import pandas as pd
import pytest

from tpccma_lib.app.readme import DEFAULT_GRID, replace_section, sweep_table, update_readme


def test_replace_section_keeps_markers():
    text = "a\n<!-- results:start -->\nold\n<!-- results:end -->\nb"
    out = replace_section(text, "results", "new")
    assert out == "a\n<!-- results:start -->\nnew\n<!-- results:end -->\nb"
    with pytest.raises(ValueError, match="markers"):
        replace_section("no markers", "results", "x")


def test_sweep_table_averages_finished_runs_only():
    summary = pd.DataFrame(
        {
            "alpha_target": [0.0, 0.0, 0.5, 0.5],
            "seed": [0, 1, 0, 1],
            "status": ["done", "done", "done", "failed"],
            "raw_gap": [0.4, 0.2, 0.1, 9.0],
        }
    )
    table = sweep_table(summary)
    assert table["raw gap"].tolist() == pytest.approx([0.3, 0.1])
    assert table["seeds"].tolist() == [2, 1]


def _summary(alphas, seeds, status="done"):
    rows = [
        {"alpha_target": a, "seed": s, "status": status, "raw_gap": 0.1 + a}
        for a in alphas
        for s in seeds
    ]
    return pd.DataFrame(rows)


def _with_run_dirs(summary, sweep):
    """``summary`` with the ``run_dir`` column a sweep writes (one folder per alpha and seed)."""
    summary["run_dir"] = [
        str(sweep / f"alpha{a:g}-seed{s}")
        for a, s in zip(summary.alpha_target, summary.seed, strict=True)
    ]
    return summary


def _readme(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(
        "<!-- base:start --><!-- base:end -->\n<!-- results:start --><!-- results:end -->"
    )
    return readme


def test_update_readme_needs_every_run_of_the_default_grid(tmp_path):
    alphas, seeds = DEFAULT_GRID
    readme = _readme(tmp_path)
    before = readme.read_text()
    with pytest.raises(FileNotFoundError, match="tpccma sweep"):
        update_readme(readme, tmp_path / "sweep", base_text="gap 0.432")
    (tmp_path / "sweep").mkdir()
    # notebook 05's small grid (3 alphas, seed 0) must not replace the full sweep's table
    _summary([0.0, 0.05, 0.5], [0]).to_csv(tmp_path / "sweep" / "summary.csv", index=False)
    with pytest.raises(ValueError, match=r"alpha 0.01 seed 0.*alpha 1 seed 1"):
        update_readme(readme, tmp_path / "sweep", base_text="gap 0.432")
    assert readme.read_text() == before  # nothing written on failure


def test_update_readme_writes_only_the_default_grid(tmp_path):
    alphas, seeds = DEFAULT_GRID
    extra = _summary([0.3], [0, 1, 2])  # another grid's runs in the same folder are left out
    full = pd.concat([_summary(alphas, seeds), extra, _summary([0.5], [2], "failed")])
    (tmp_path / "sweep").mkdir()
    full.to_csv(tmp_path / "sweep" / "summary.csv", index=False)
    readme = _readme(tmp_path)
    assert update_readme(readme, tmp_path / "sweep", base_text="gap 0.432") == ["base", "results"]
    text = readme.read_text()
    assert "gap 0.432" in text and "captioned shapes" in text
    assert "| 0.500 | 2 | 0.600 |" in text and "\n| 0.300 |" not in text
    assert text.count("\n| ") == 1 + len(alphas)  # header, one row per alpha


def test_readme_command_is_the_only_writer_of_readme():
    """The main job (`tpccma report`) never rewrites README.md: only `tpccma readme` does."""
    import inspect

    from tpccma_lib.app import cli

    assert "update_readme" not in inspect.getsource(cli._cmd_report)
    assert "update_readme" in inspect.getsource(cli._cmd_readme)


def test_control_sentences_compare_with_the_alpha_zero_fine_tune():
    from tpccma_lib.app.readme import control_sentences

    rows = pd.DataFrame(
        {
            "alpha_target": [0.0, 0.0, 0.5, 0.5],
            "seed": [0, 1, 0, 1],
            "raw_gap": [0.4, 0.6, 0.2, 0.3],  # mean 0.5 -> 0.25: -50 %
            "zero_shot_accuracy": [0.80, 0.80, 0.79, 0.78],  # -1.5 points
            "cider": [1.0, 1.0, 1.2, 1.3],  # +25 %
        }
    )
    text = control_sentences(rows, alphas=(0.5, 0.05))
    assert "α = 0.5: raw gap -50 %, zero-shot accuracy -1.5 points, CIDEr +25 %" in text
    assert "0.05" not in text  # not in the rows: left out
    assert control_sentences(rows[rows["alpha_target"] > 0]) == ""


def _run_with_base_rows(sweep: Path, alpha: float, seed: int, base: dict[str, float]) -> str:
    """A finished run folder whose results.csv holds the base model's rows (as the smallest
    alpha's run of a seed writes them) and one fine-tuned row; returns the folder's name."""
    import json

    run = sweep / f"alpha{alpha:g}-seed{seed}"
    run.mkdir(parents=True)
    rows = [
        {"role": role, "posthoc": "identity", "task": task, "metric": metric, "value": value}
        for role, scale in (("base", 1.0), ("finetuned", 0.5))
        for (task, metric), value in {
            ("gap", "raw_gap"): base["raw_gap"] * scale,
            ("gap", "distribution_gap"): base["distribution_gap"] * scale,
            ("zero_shot", "accuracy"): base["zero_shot_accuracy"],
            ("captioning", "CIDEr"): base["cider"],
        }.items()
    ]
    pd.DataFrame(rows).to_csv(run / "results.csv", index=False)
    params = {"alpha_target": alpha, "seed": seed}
    (run / "done.json").write_text(json.dumps({"parameters_04": params}))
    return run.name


def test_results_block_puts_the_original_model_first(tmp_path):
    """The results block: the original model's row (read from the runs that evaluated it, mean
    over seeds) above the sweep's rows, and changes against it and against the alpha=0 control."""
    from tpccma_lib.app.readme import original_model_row, results_body

    alphas, seeds = DEFAULT_GRID
    sweep = tmp_path / "sweep"
    summary = _with_run_dirs(_summary(alphas, seeds), sweep)
    summary["zero_shot_accuracy"] = 0.80 - 0.02 * summary["alpha_target"]
    for seed, raw in zip(seeds, (0.60, 0.40), strict=True):  # mean 0.5
        base = {"raw_gap": raw, "distribution_gap": 0.3, "zero_shot_accuracy": 0.82, "cider": 1.0}
        _run_with_base_rows(sweep, 0.0, seed, base)
    original = original_model_row(sweep, summary)
    assert original["raw_gap"] == pytest.approx(0.5) and original["seeds"] == 2
    assert original["zero_shot_accuracy"] == pytest.approx(0.82)
    body = results_body(summary, original)
    table_rows = [line for line in body.splitlines() if line.startswith("| ")]
    assert table_rows[1].startswith("| original model | 2 | 0.500 |")
    assert table_rows[2].startswith("| 0.000 | 2 | 0.100 |")
    # raw gap 0.5 -> 0.15 at alpha 0.05 (-70 %); against the control 0.1 -> 0.15 (+50 %)
    assert "Against the original model" in body and "α = 0.05: raw gap -70 %" in body
    assert "zero-shot accuracy -2.1 points" in body  # 0.82 -> 0.799
    assert "Against the α = 0 fine-tune" in body and "α = 0.05: raw gap +50 %" in body
    # a sweep folder without the base rows: the block has no original row, and says nothing of it
    (tmp_path / "empty").mkdir()
    assert original_model_row(tmp_path / "empty", summary.assign(run_dir="x")) is None
    assert "original model |" not in results_body(summary, None)


def test_results_block_says_how_far_the_seeds_lie_apart():
    """The spread sentence: per metric the largest max - min over seeds at one alpha (pandas
    by hand here), and nothing with one seed."""
    from tpccma_lib.app.readme import seed_spread_sentence

    rows = pd.DataFrame(
        {
            "alpha_target": [0.0, 0.0, 0.5, 0.5, 0.5],
            "seed": [0, 1, 0, 1, 2],
            "status": ["done", "done", "done", "skipped", "failed"],
            "raw_gap": [0.40, 0.43, 0.20, 0.21, 9.0],  # the failed run is not counted
            "zero_shot_accuracy": [0.80, 0.79, 0.75, 0.78, 0.0],
        }
    )
    text = seed_spread_sentence(rows)
    assert "raw gap 0.030 (α = 0)" in text and "zero-shot acc. 0.030 (α = 0.5)" in text
    assert seed_spread_sentence(rows[rows.seed == 0]) == ""


def test_readme_figure_is_drawn_from_the_results_table_runs(tmp_path):
    """docs/pareto.png comes from the same runs as the results table (the default grid), and
    not at all while a run of that grid is missing."""
    import json

    from tpccma_lib.app.readme import draw_readme_figure

    alphas, seeds = DEFAULT_GRID
    sweep = tmp_path / "sweep"
    summary = _with_run_dirs(_summary(alphas, seeds), sweep)
    for alpha, seed in zip(summary.alpha_target, summary.seed, strict=True):
        run = sweep / f"alpha{alpha:g}-seed{seed}"
        run.mkdir(parents=True)
        roles = [("finetuned", 1.0 - alpha / 2)] + ([("base", 1.2)] if alpha == 0 else [])
        rows = [
            {"role": role, "posthoc": "identity", "task": t, "metric": m, "value": v * scale}
            for role, scale in roles
            for (t, m), v in {
                ("gap", "raw_gap"): 0.5,
                ("gap", "distribution_gap"): 0.3,
                ("zero_shot", "accuracy"): 0.8,
                ("captioning", "CIDEr"): 1.0,
            }.items()
        ]
        pd.DataFrame(rows).to_csv(run / "results.csv", index=False)
        (run / "done.json").write_text(
            json.dumps({"parameters_04": {"alpha_target": alpha, "seed": seed}})
        )
    summary.to_csv(sweep / "summary.csv", index=False)
    png = draw_readme_figure(tmp_path / "docs" / "pareto.png", sweep)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary[summary.alpha_target != 1.0].to_csv(sweep / "summary.csv", index=False)
    with pytest.raises(ValueError, match="alpha 1 seed 0"):
        draw_readme_figure(tmp_path / "other.png", sweep)
    assert not (tmp_path / "other.png").exists()
