import pandas as pd
import pytest

from tpccma_lib.readme import replace_section, sweep_table, update_readme


def test_replace_section_keeps_markers():
    text = "a\n<!-- results:start -->\nold\n<!-- results:end -->\nb"
    out = replace_section(text, "results", "new")
    assert out == "a\n<!-- results:start -->\nnew\n<!-- results:end -->\nb"
    with pytest.raises(ValueError, match="markers"):
        replace_section("no markers", "results", "x")


def test_sweep_table_averages_finished_runs_only(tmp_path):
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
    (tmp_path / "runs" / "sweep").mkdir(parents=True)
    summary.to_csv(tmp_path / "runs" / "sweep" / "summary.csv", index=False)
    readme = tmp_path / "README.md"
    readme.write_text(
        "<!-- base:start --><!-- base:end -->\n<!-- results:start --><!-- results:end -->"
    )
    assert update_readme(readme, tmp_path / "runs", base_text="gap 0.432") == ["base", "results"]
    text = readme.read_text()
    assert "gap 0.432" in text and "| 0.500 | 1 |" in text and "captioned shapes" in text
