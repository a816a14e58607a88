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
