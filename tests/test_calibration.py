"""The CMA-weight calibration never reads the test split (weights are not tuned on test)."""

import importlib.util
import math
from pathlib import Path

import pytest

from tests.test_runs import tiny_experiment
from tpccma_lib.training.loop import TrainConfig

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "calibrate_cma_weights.py"


def _calibration_module():
    spec = importlib.util.spec_from_file_location("calibrate_cma_weights", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class ReadTestSplit(AssertionError):
    pass


def test_calibration_reads_validation_only(tmp_path):
    calibration = _calibration_module()
    assert calibration.SPLIT == "val"
    exp = tiny_experiment(tmp_path)
    real_split = exp.split

    def guarded_split(name):
        if name == "test":
            raise ReadTestSplit("the calibration read the test split")
        return real_split(name)

    exp.split = guarded_split
    rows = calibration.calibrate(
        exp,
        weights=((10.0, 100.0),),
        alphas=(0.0, 0.5),
        drift_lrs=(),
        finetune=TrainConfig(steps=4, batch_size=16, lr=1e-3, warmup_steps=1),
    )
    assert [r["alpha_target"] for r in rows] == ["base", 0.0, 0.5]
    for row in rows:
        for key in ("raw_gap", "distribution_gap", "zero_shot_accuracy"):
            assert math.isfinite(row[key]), (row, key)
    calibration.write_rows(rows, tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_text().count("\n") == 1 + len(rows)  # header + rows


def test_the_guard_would_catch_a_test_split_read(tmp_path):
    """The guard is live: measuring on the test split trips it."""
    exp = tiny_experiment(tmp_path)
    real_split = exp.split
    exp.split = lambda name: (
        (_ for _ in ()).throw(ReadTestSplit(name)) if name == "test" else real_split(name)
    )
    with pytest.raises(ReadTestSplit):
        exp.embeddings(exp.base_model(), "test")


def test_readme_calibration_block_is_generated_from_the_committed_csv():
    from tpccma_lib.app.readme import calibration_section

    root = SCRIPT.parents[1]
    readme = (root / "README.md").read_text(encoding="utf-8")
    block = readme.split("<!-- calibration:start -->")[1].split("<!-- calibration:end -->")[0]
    csv = root / "benchmarks" / "results" / "cma_weight_calibration.csv"
    assert block.strip() == calibration_section(csv).strip()
    assert "validation split" in block and "test split is never read" in block
