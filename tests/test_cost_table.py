"""The README's cost block: stage arithmetic, the generated block, and the benchmark end to end."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys

import pandas as pd
import pytest

from tpccma_lib.app.readme import (
    COST_CSVS,
    cost_block,
    cost_section,
    replace_section,
    update_cost_section,
)
from tpccma_lib.notebook import repo_root

ROOT = repo_root()
SCRIPT = ROOT / "benchmarks" / "cost_table.py"


@pytest.fixture(scope="module")
def cost_table():
    spec = importlib.util.spec_from_file_location("cost_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_measured(batch=10, s=3.6):
    return {op: (1 if op.startswith("decode") else batch, s) for op in OPERATIONS_OF_FAKE}


OPERATIONS_OF_FAKE = (
    "image_encode",
    "text_encode",
    "train_clip",
    "train_tpccma",
    "decode_jpeg",
    "decode_cifar",
)


def test_component_hours_closed_form(cost_table):
    # 1000 items at 3.6 s per batch of 10: 100 batches x 3.6 s = 360 s = 0.1 h
    assert cost_table.component_hours(1000, 10, 3.6) == pytest.approx(0.1)
    assert cost_table.component_hours(5000, 1, 0.0072) == pytest.approx(0.01)


def test_stage_wall_time_cpu_sums_gpu_overlaps_decoding(cost_table):
    hours = {"image_encode": 1.0, "text_encode": 0.5, "decode_jpeg": 4.0}
    assert cost_table.wall_hours(hours, "cpu", 1) == pytest.approx(5.5)
    assert cost_table.wall_hours(hours, "cuda", 8) == pytest.approx(1.5)  # 4 / 8 < 1.5
    assert cost_table.wall_hours(hours, "cuda", 2) == pytest.approx(2.0)  # decoding bound


def test_reproduction_work_matches_the_library_defaults(cost_table):
    w = cost_table.reproduction_work()
    assert w["captions_per_image"] == 5
    assert w["coco_train"] * w["captions_per_image"] == 566_435
    assert w["prompts"] == 180  # 10 CIFAR-10 classes x 18 templates
    assert (w["steps"], w["train_batch"]) == (300, 256)
    assert len(w["sweep"]) == 14
    by_alpha = {a: k for a, _, k in w["sweep"]}
    assert by_alpha[0.0] == 300  # alpha_target 0: every step is contrastive only
    assert 0 < w["finetune_contrastive_steps"] == by_alpha[0.5] < 300


def test_stage_rows_are_items_over_batch_times_seconds(cost_table):
    w = cost_table.reproduction_work()
    rows = cost_table.stage_rows(_fake_measured(), w, "cpu")
    test = {r.get("operation", ""): r for r in rows if r["stage"] == "embed COCO test"}
    assert test["image_encode"]["items"] == 5000
    assert test["image_encode"]["hours"] == pytest.approx(5000 / 10 * 3.6 / 3600)  # 0.5 h
    assert test["text_encode"]["hours"] == pytest.approx(25000 / 10 * 3.6 / 3600)  # 2.5 h
    assert test["decode_jpeg"]["hours"] == pytest.approx(5000 / 1 * 3.6 / 3600)  # 5 h
    assert test[""]["hours"] == pytest.approx(8.0)  # the stage: the sum on a CPU
    finetune = {r.get("operation", ""): r for r in rows if r["stage"] == "fine-tune one run"}
    assert finetune["train_clip"]["items"] + finetune["train_tpccma"]["items"] == 300 * 256
    assert finetune["decode_jpeg"]["items"] == 300 * 256
    # the full reproduction is the sum of its two parts
    total = {r["stage"]: r["hours"] for r in rows if r["kind"] == "stage"}
    assert total["full reproduction"] == pytest.approx(
        total["`tpccma train` + `tpccma report`"] + total["`tpccma sweep`"]
    )


def _write_fake_csv(cost_table, path, device="cpu"):
    meta = {
        "device": device,
        "device_name": "Test CPU, 2 cores",
        "amp": "none",
        "model": "ViT-B-32",
        "image_size": 224,
        "threads": 2,
        "workers": 1,
        "torch": "0.0",
        "measured_at": "2026-01-01 00:00 UTC",
        "load_avg": "0.10 / 0.20",
    }
    labels = {op: op.replace("_", " ") for op in OPERATIONS_OF_FAKE}
    rows = cost_table.build_rows(_fake_measured(), {}, meta, "median of 5", 1, labels)
    cost_table.write_csv(rows, path)


def test_cost_section_renders_the_csv(cost_table, tmp_path):
    path = tmp_path / "cost_vitb32_cpu.csv"
    _write_fake_csv(cost_table, path)
    text = cost_section(path)
    assert "Test CPU, 2 cores" in text and "2026-01-01 00:00 UTC" in text
    assert "| image encode | 10 | 3.6 | 2.78 |" in text  # 10 / 3.6 items/s
    assert "| decode jpeg | 1 | 3.6 | 0.278 |" in text
    assert "| embed COCO test | 5,000 images + 25,000 captions, per model | 8.0 h |" in text
    block = cost_block([path])
    assert block.startswith(text) and "No GPU has measured these yet" in block
    readme = tmp_path / "README.md"
    readme.write_text("a\n<!-- cost:start -->\nold\n<!-- cost:end -->\nb\n", encoding="utf-8")
    assert update_cost_section(readme, [path]) == ["cost"]
    assert (
        readme.read_text(encoding="utf-8")
        == f"a\n<!-- cost:start -->\n{block}\n<!-- cost:end -->\nb\n"
    )


def test_cost_block_with_a_gpu_table_drops_the_no_gpu_line(cost_table, tmp_path):
    cpu, gpu = tmp_path / "cpu.csv", tmp_path / "cuda.csv"
    _write_fake_csv(cost_table, cpu)
    _write_fake_csv(cost_table, gpu, device="cuda")
    block = cost_block([cpu, gpu])
    assert "No GPU has measured" not in block
    assert "estimated wall time on one Test CPU, 2 cores" in block


def test_committed_csv_arithmetic():
    frame = pd.read_csv(ROOT / COST_CSVS[0], keep_default_na=False)
    measured = frame[frame.kind == "measured"].set_index("operation")
    assert set(measured.index) == set(OPERATIONS_OF_FAKE)
    assert (measured.device == "cpu").all() and (measured.model == "ViT-B-32").all()
    parts = frame[frame.kind == "component"]
    for r in parts.itertuples():
        assert float(r.s_per_batch) == pytest.approx(float(measured.loc[r.operation].s_per_batch))
        expected = int(r.items) / int(r.batch) * float(r.s_per_batch) / 3600
        assert float(r.hours) == pytest.approx(expected, rel=1e-5)
    for r in frame[frame.kind == "stage"].itertuples():
        mine = parts[parts.stage == r.stage].hours.astype(float).sum()
        assert float(r.hours) == pytest.approx(mine, rel=1e-5)  # CPU: the sum


def test_readme_cost_block_is_the_generated_one():
    """README's cost block is exactly what `update_cost_section` writes from the committed CSVs."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert replace_section(text, "cost", cost_block()) == text, (
        "README's cost block differs from the committed CSV: run "
        "`python benchmarks/cost_table.py --update-readme` (or update_cost_section)."
    )


def test_benchmark_smoke_end_to_end(tmp_path):
    out = tmp_path / "cost.csv"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(out), "--threads", "1"],
        check=True,
        cwd=ROOT,
        env=env,
        timeout=180,
        capture_output=True,
    )
    with open(out, newline="") as fh:
        rows = list(csv.DictReader(fh))
    measured = {r["operation"]: r for r in rows if r["kind"] == "measured"}
    assert set(measured) == set(OPERATIONS_OF_FAKE)
    assert all(float(r["s_per_batch"]) > 0 for r in measured.values())
    assert {r["model"] for r in rows} == {"TinyCLIP-test"}
    assert "full reproduction" in {r["stage"] for r in rows if r["kind"] == "stage"}
    assert "| full reproduction |" in cost_section(out)
