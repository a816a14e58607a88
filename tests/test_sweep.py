"""The sweep engine: grid parsing, and run_sweep's wiring with a fake notebook runner."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tpccma_lib.sweep import (
    HEADLINE_COLUMNS,
    SUMMARY_COLUMNS,
    SweepError,
    collect,
    parse_grid,
    run_name,
    run_paths,
    run_sweep,
)


# --------------------------------------------------------------------------- parse_grid
def test_parse_grid_values_and_order() -> None:
    alphas, seeds = parse_grid(" 0, 0.01,0.5 ,1.0", "2,0,1")
    assert alphas == [0.0, 0.01, 0.5, 1.0]
    assert all(isinstance(a, float) for a in alphas)
    assert seeds == [2, 0, 1]
    assert all(isinstance(s, int) for s in seeds)


def test_parse_grid_negative_zero_is_zero() -> None:
    alphas, _ = parse_grid("-0", "0")
    assert alphas == [0.0] and str(alphas[0]) == "0.0"


@pytest.mark.parametrize(
    ("alphas", "seeds", "message"),
    [
        ("", "0", "alphas is empty"),
        ("  ", "0", "alphas is empty"),
        ("0,,0.5", "0", "empty entry"),
        ("0,abc", "0", "not a number"),
        ("1.5", "0", "outside [0, 1]"),
        ("-0.1", "0", "outside [0, 1]"),
        ("nan", "0", "outside [0, 1]"),
        ("inf", "0", "outside [0, 1]"),
        ("0.5,0.50", "0", "twice"),
        ("0.5", "", "seeds is empty"),
        ("0.5", "0,1.5", "not an integer"),
        ("0.5", "x", "not an integer"),
        ("0.5", "-1", "negative"),
        ("0.5", "1,1", "twice"),
    ],
)
def test_parse_grid_errors(alphas: str, seeds: str, message: str) -> None:
    with pytest.raises(SweepError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_grid(alphas, seeds)


def test_sweep_error_is_value_error() -> None:
    assert issubclass(SweepError, ValueError)


def test_run_name_matches_notebook_03_default() -> None:
    # notebook 03 names its run f"alpha{alpha_target}-seed{seed}" with a float alpha
    for alpha in (0.0, 0.05, 0.5, 1.0):
        assert run_name(alpha, 3) == f"alpha{alpha}-seed3"
    assert run_name(0, 1) == "alpha0.0-seed1"


# --------------------------------------------------------------------------- fake runner
def _fake_metrics(alpha: float, seed: int) -> dict[tuple[str, str], float]:
    """Numbers a fake notebook 04 writes, a closed form of (alpha, seed)."""
    return {
        ("gap", "raw_gap"): 1.0 - 0.5 * alpha + 0.01 * seed,
        ("gap", "centroid_gap"): 0.8 - 0.6 * alpha,
        ("gap", "distribution_gap"): 0.3 - 0.1 * alpha,
        ("zero_shot", "accuracy"): 0.9 - 0.05 * alpha,
        ("clustering", "ari"): 0.3 + 0.2 * alpha,
        ("captioning", "CIDEr"): 0.5 + alpha,
        ("retrieval", "i2t_R@1"): 0.4 + 0.01 * seed,
        ("retrieval", "t2i_R@1"): 0.2,
    }


class FakeRunner:
    """Stands in for papermill: writes notebook files; notebook 04 writes a results CSV.

    Fails (raises) for the runs in ``fail``; records every call and the kernel environment.
    """

    def __init__(self, fail: set[tuple[float, int]] = frozenset()) -> None:
        self.fail = set(fail)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.threads_env: list[str | None] = []
        self.lock = threading.Lock()

    def __call__(self, name: str, out_path: Path, parameters: dict[str, Any]) -> Path:
        with self.lock:
            self.calls.append((name, dict(parameters)))
            self.threads_env.append(os.environ.get("TPCCMA_THREADS"))
        Path(out_path).write_text(json.dumps({"executed": name}), encoding="utf-8")
        alpha, seed = parameters["alpha_target"], parameters["seed"]
        if name == "03_curriculum_training":
            if (alpha, seed) in self.fail:
                raise RuntimeError(f"training diverged at alpha {alpha}")
            ckpt = Path(parameters["out_dir"]) / "final.pt"
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            ckpt.write_bytes(b"weights")
            return Path(out_path)
        assert Path(parameters["checkpoint"]).exists()
        rows = [
            {"role": "finetuned", "posthoc": "identity", "task": t, "metric": m, "value": v}
            for (t, m), v in _fake_metrics(alpha, seed).items()
        ]
        # rows that must NOT reach the headline: the base model and a post-hoc fix
        rows += [
            {"role": "base", "posthoc": "identity", "task": "gap", "metric": "raw_gap", "value": 9},
            {
                "role": "finetuned",
                "posthoc": "shift",
                "task": "gap",
                "metric": "raw_gap",
                "value": 7,
            },
        ]
        pd.DataFrame(rows).to_csv(parameters["results_csv"], index=False)
        return Path(out_path)


def _expected_headline(alpha: float, seed: int) -> dict[str, float]:
    m = _fake_metrics(alpha, seed)
    return {
        "raw_gap": m[("gap", "raw_gap")],
        "centroid_gap": m[("gap", "centroid_gap")],
        "distribution_gap": m[("gap", "distribution_gap")],
        "zero_shot_accuracy": m[("zero_shot", "accuracy")],
        "clustering_ari": m[("clustering", "ari")],
        "cider": m[("captioning", "CIDEr")],
        "i2t_R@1": m[("retrieval", "i2t_R@1")],
        "t2i_R@1": m[("retrieval", "t2i_R@1")],
    }


# --------------------------------------------------------------------------- run_sweep
def test_run_sweep_records_failure_and_finishes_others(tmp_path: Path) -> None:
    runner = FakeRunner(fail={(0.5, 1)})
    summary = run_sweep(
        [0.0, 0.5], [0, 1], tmp_path / "sweep", jobs=2, runner=runner, progress=False
    )
    assert list(summary.columns) == list(SUMMARY_COLUMNS)
    assert list(zip(summary.alpha_target, summary.seed, strict=True)) == [
        (0.0, 0),
        (0.0, 1),
        (0.5, 0),
        (0.5, 1),
    ]
    status = dict(
        zip(zip(summary.alpha_target, summary.seed, strict=True), summary.status, strict=True)
    )
    assert status == {(0.0, 0): "done", (0.0, 1): "done", (0.5, 0): "done", (0.5, 1): "failed"}
    failed = summary[summary.status == "failed"].iloc[0]
    assert "RuntimeError" in failed.error and "diverged at alpha 0.5" in failed.error
    assert failed.notebook == "alpha0.5-seed1/03_curriculum_training.ipynb"
    assert (tmp_path / "sweep" / failed.notebook).exists()  # the executed copy is kept
    assert np.isnan(failed.raw_gap)
    assert not run_paths(tmp_path / "sweep", 0.5, 1).done.exists()
    # finished runs: headline numbers of the fine-tuned, un-fixed rows only
    for row in summary[summary.status == "done"].to_dict("records"):
        expected = _expected_headline(row["alpha_target"], row["seed"])
        for column in HEADLINE_COLUMNS:
            assert row[column] == pytest.approx(expected[column]), column
        assert row["notebook"] == f"{row['run_dir']}/04_evaluation.ipynb"
        assert run_paths(tmp_path / "sweep", row["alpha_target"], row["seed"]).done.exists()
    # summary.csv holds the same table
    on_disk = pd.read_csv(tmp_path / "sweep" / "summary.csv")
    assert list(on_disk.status) == list(summary.status)
    assert on_disk.raw_gap[0] == pytest.approx(summary.raw_gap[0])


def test_run_sweep_parameters_and_threads(tmp_path: Path) -> None:
    runner = FakeRunner()
    out = tmp_path / "sweep"
    run_sweep([0.5, 0.0], [3], out, jobs=2, parameters={"steps": 7}, runner=runner, progress=False)
    by_run = {(p["alpha_target"], name): p for name, p in runner.calls}
    assert len(runner.calls) == 4
    p03, p04 = by_run[(0.5, "03_curriculum_training")], by_run[(0.5, "04_evaluation")]
    paths = run_paths(out, 0.5, 3)
    assert p03["steps"] == 7 and p04["steps"] == 7
    assert p03["seed"] == 3 and p03["out_dir"] == str(paths.finetune_dir)
    assert p04["checkpoint"] == str(paths.checkpoint)
    assert p04["results_csv"] == str(paths.results_csv)
    assert Path(p04["results_csv"]).is_absolute()
    # post-hoc rows only from the smallest alpha's run (the base is shared by all alphas)
    assert by_run[(0.0, "04_evaluation")]["posthoc_methods"] == "all"
    assert by_run[(0.0, "04_evaluation")]["include_base"] is True
    assert p04["posthoc_methods"] == "none" and p04["include_base"] is False
    # the smallest alpha of a seed runs first (it may pretrain the seed's base model)
    assert runner.calls[0][1]["alpha_target"] == 0.0
    # every kernel started with one thread when jobs > 1, and the variable is restored after
    assert runner.threads_env == ["1"] * 4


def test_run_sweep_one_job_leaves_threads_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TPCCMA_THREADS", raising=False)
    runner = FakeRunner()
    run_sweep([0.0], [0], tmp_path / "s", jobs=1, runner=runner, progress=False)
    assert runner.threads_env == [None, None]


def test_kernel_env_restored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TPCCMA_THREADS", "4")
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    run_sweep([0.0], [0], tmp_path / "s", jobs=2, runner=FakeRunner(), progress=False)
    assert os.environ["TPCCMA_THREADS"] == "4"
    assert "OMP_NUM_THREADS" not in os.environ


def test_rerun_skips_finished_and_retries_failed(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    run_sweep([0.0, 0.2], [0], out, runner=FakeRunner(fail={(0.2, 0)}), progress=False)
    second = FakeRunner()
    summary = run_sweep([0.0, 0.2], [0], out, runner=second, progress=False)
    assert dict(zip(summary.alpha_target, summary.status, strict=True)) == {
        0.0: "skipped",
        0.2: "done",
    }
    assert {p["alpha_target"] for _, p in second.calls} == {0.2}  # only the failed one re-ran
    skipped = summary[summary.status == "skipped"].iloc[0]
    assert skipped.raw_gap == pytest.approx(_expected_headline(0.0, 0)["raw_gap"])
    third = FakeRunner()
    again = run_sweep([0.0, 0.2], [0], out, runner=third, progress=False)
    assert third.calls == [] and set(again.status) == {"skipped"}


def test_rerun_with_other_parameters_redoes_run(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    run_sweep([0.0], [0], out, parameters={"steps": 5}, runner=FakeRunner(), progress=False)
    runner = FakeRunner()
    summary = run_sweep([0.0], [0], out, parameters={"steps": 6}, runner=runner, progress=False)
    assert summary.status.tolist() == ["done"] and len(runner.calls) == 2


def test_missing_csv_is_a_failure(tmp_path: Path) -> None:
    def runner(name: str, out_path: Path, parameters: dict[str, Any]) -> Path:
        Path(out_path).write_text("{}", encoding="utf-8")
        return Path(out_path)

    summary = run_sweep([0.0], [0], tmp_path / "s", runner=runner, progress=False)
    assert summary.status.tolist() == ["failed"]
    assert "results.csv" in summary.error[0]


def test_run_sweep_rejects_bad_jobs_and_empty_grid(tmp_path: Path) -> None:
    with pytest.raises(SweepError, match="jobs"):
        run_sweep([0.0], [0], tmp_path, jobs=0, runner=FakeRunner())
    with pytest.raises(SweepError, match="empty"):
        run_sweep([], [0], tmp_path, runner=FakeRunner())


def test_done_marker_written_atomically(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    run_sweep([0.0], [0], out, runner=FakeRunner(), progress=False)
    paths = run_paths(out, 0.0, 0)
    record = json.loads(paths.done.read_text(encoding="utf-8"))
    assert record["parameters_04"]["results_csv"] == str(paths.results_csv)
    assert sorted(p.name for p in paths.run_dir.iterdir() if p.name.startswith(".")) == []


# --------------------------------------------------------------------------- collect
def test_collect_rows_of_finished_runs(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    run_sweep([0.0, 0.5], [0], out, runner=FakeRunner(fail={(0.5, 0)}), progress=False)
    rows = collect(out)
    per_csv = len(pd.read_csv(run_paths(out, 0.0, 0).results_csv))
    assert len(rows) == per_csv  # the failed run contributes nothing
    assert set(rows.alpha_target) == {0.0} and set(rows.train_seed) == {0}
    assert set(rows.run) == {"alpha0.0-seed0"}
    hit = rows[(rows.role == "finetuned") & (rows.posthoc == "identity") & (rows.metric == "ari")]
    assert hit.value.iloc[0] == pytest.approx(_fake_metrics(0.0, 0)[("clustering", "ari")])


def test_collect_errors_and_empty(tmp_path: Path) -> None:
    with pytest.raises(SweepError, match="run the sweep first"):
        collect(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    assert collect(tmp_path / "empty").empty
