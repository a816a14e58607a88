"""The sweep engine: grid parsing, and run_sweep's wiring with a fake notebook runner."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from tpccma_lib.app.sweep import (
    HEADLINE_COLUMNS,
    SUMMARY_COLUMNS,
    SweepError,
    collect,
    default_out_dir,
    parse_grid,
    run_name,
    run_parameters,
    run_paths,
    run_sweep,
    same_run,
)
from tpccma_lib.evaluation.roles import RoleEvaluationError
from tpccma_lib.evaluation.tradeoff import SweepAnalysisError


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


def test_default_out_dir_is_notebook_05s_folder_under_tpccma_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TPCCMA_RUNS", str(tmp_path / "elsewhere"))
    runs = tmp_path / "elsewhere"
    assert default_out_dir() == runs / "sweep"
    assert default_out_dir({"smoke": True}) == runs / "sweep-smoke"
    assert default_out_dir({"smoke": False, "n_test": 200}) == runs / "sweep"
    keyed = default_out_dir({"dataset": "coco", "zero_shot": "cifar10"})
    assert keyed.parent == runs / "sweep" and keyed.name.startswith("coco-")
    smoke_keyed = default_out_dir({"dataset": "coco", "zero_shot": "cifar10", "smoke": True})
    assert smoke_keyed == runs / "sweep-smoke" / keyed.name
    monkeypatch.delenv("TPCCMA_RUNS")
    assert default_out_dir() == Path("runs/sweep")


def _record(tmp_path: Path, parameters: dict[str, Any]) -> dict[str, Any]:
    paths = run_paths(tmp_path, 0.5, 0)
    params_03, params_04 = run_parameters(0.5, 0, paths, parameters)
    return {"parameters_03": params_03, "parameters_04": params_04}


def test_same_run_ignores_spelling_and_sees_real_differences(tmp_path: Path) -> None:
    notebook_05 = {"dataset": "shapes", "amp": "none", "n_train": 3000, "backend": "towers"}
    assert same_run(_record(tmp_path, notebook_05), _record(tmp_path, {}))  # defaults spelled out
    assert not same_run(_record(tmp_path, {"amp": "bf16"}), _record(tmp_path, {}))
    assert not same_run(_record(tmp_path, {"n_train": 300}), _record(tmp_path, {}))
    # smoke: the notebooks replace the data sizes, so passing the shrunk sizes or not is one run
    smoke_05 = {**notebook_05, "smoke": True, "n_train": 300, "n_val": 100, "n_test": 200}
    assert same_run(_record(tmp_path, smoke_05), _record(tmp_path, {"smoke": True}))
    assert not same_run(_record(tmp_path, smoke_05), _record(tmp_path, {}))
    assert not same_run({"parameters_03": "junk"}, _record(tmp_path, {}))


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
    assert p03["ablation"] is False and "ablation" not in p04  # no ablation twin in a sweep
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


def test_smaller_grid_keeps_earlier_rows_in_summary_csv(tmp_path: Path) -> None:
    """A later, smaller grid (notebook 05's stored one) keeps the full sweep's finished rows
    in summary.csv; a row whose run folder lost its done.json is dropped."""
    out = tmp_path / "sweep"
    run_sweep([0.0, 0.1, 0.5], [0, 1], out, runner=FakeRunner(), progress=False)
    run_paths(out, 0.1, 1).done.unlink()
    small = run_sweep([0.0, 0.5], [0], out, runner=FakeRunner(), progress=False)
    assert len(small) == 2  # the returned table is this grid's
    on_disk = pd.read_csv(out / "summary.csv")
    pairs = list(zip(on_disk.alpha_target, on_disk.seed, strict=True))
    assert pairs == [(0.0, 0), (0.0, 1), (0.1, 0), (0.5, 0), (0.5, 1)]
    row = on_disk[(on_disk.alpha_target == 0.1) & (on_disk.seed == 0)].iloc[0]
    assert row.raw_gap == pytest.approx(_expected_headline(0.1, 0)["raw_gap"])


def test_parameters_override_sweep_defaults(tmp_path: Path) -> None:
    runner = FakeRunner()
    run_sweep([0.0], [0], tmp_path, parameters={"ablation": True}, runner=runner, progress=False)
    assert runner.calls[0][0] == "03_curriculum_training"
    assert runner.calls[0][1]["ablation"] is True


def test_a_run_is_the_same_however_its_defaults_are_spelled(tmp_path: Path) -> None:
    """Notebook 05 names every data and model setting, `tpccma sweep` only those on its
    command line: a run made by one is resumed by the other when the settings agree, and
    redone when a setting really differs (amp="bf16" against the notebooks' "none")."""
    out = tmp_path / "sweep"
    spelled_out = {"dataset": "shapes", "root": None, "amp": "none", "workers": 4, "steps": 5}
    spelled_out["ablation"] = False  # the sweep's default for 03; 04 does not declare it
    run_sweep([0.0], [0], out, parameters=spelled_out, runner=FakeRunner(), progress=False)
    resumed = FakeRunner()
    summary = run_sweep([0.0], [0], out, parameters={"steps": 5}, runner=resumed, progress=False)
    assert summary.status.tolist() == ["skipped"] and resumed.calls == []
    redone = FakeRunner()
    other = {"steps": 5, "amp": "bf16"}
    summary = run_sweep([0.0], [0], out, parameters=other, runner=redone, progress=False)
    assert summary.status.tolist() == ["done"] and len(redone.calls) == 2


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


def test_run_sweep_rejects_parameter_no_notebook_declares(tmp_path: Path) -> None:
    with pytest.raises(SweepError, match=r"unknown notebook parameter.*'alpah_target'"):
        run_sweep([0.0], [0], tmp_path, parameters={"alpah_target": 0.1, "steps": 10})


def _write_toy_notebook(path: Path, parameters_source: str, code: str) -> None:
    """A two-cell notebook: a "parameters" cell, then ``code``."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell(parameters_source)
    cell.metadata["tags"] = ["parameters"]
    nb.cells = [cell, nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, path)


def test_notebook_parameters_and_filtering(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """run_notebook passes a notebook only the parameters its parameters cell declares."""
    import papermill

    from tpccma_lib.app import notebooks as notebook_runner

    _write_toy_notebook(
        tmp_path / "99_toy.ipynb", "steps = 3  # how many\nalpha_target = 0.0", "print(steps)"
    )
    monkeypatch.setenv("TPCCMA_NOTEBOOKS", str(tmp_path))
    assert notebook_runner.notebook_parameters("99_toy") == {"steps", "alpha_target"}
    seen: dict[str, Any] = {}
    monkeypatch.setattr(
        papermill, "execute_notebook", lambda src, out, parameters, **kw: seen.update(parameters)
    )
    notebook_runner.run_notebook("99_toy", tmp_path / "out.ipynb", {"steps": 5, "ablation": False})
    assert seen == {"steps": 5}
    with pytest.raises(FileNotFoundError, match="no notebook"):
        notebook_runner.notebook_parameters("98_missing")


def test_run_notebook_threads_leave_process_cwd_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: papermill's ``cwd=`` chdir-ed the whole process, so two notebooks run in
    threads (``tpccma sweep --jobs 2``) left it in notebooks/ and later relative paths there.
    Now each kernel starts in the notebook folder and the process cwd never moves."""
    from tpccma_lib.app import notebooks as notebook_runner

    books = tmp_path / "books"
    books.mkdir()
    code = "import os, pathlib, time\ntime.sleep(pause)\npathlib.Path(out).write_text(os.getcwd())"
    _write_toy_notebook(books / "99_cwd.ipynb", "out = 'x'\npause = 0.0", code)
    monkeypatch.setenv("TPCCMA_NOTEBOOKS", str(books))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    # The second run starts while the first is inside papermill and ends after it: the
    # interleaving under which a process-wide chdir leaves the process in the notebook folder.
    threads = [
        threading.Thread(
            target=notebook_runner.run_notebook,
            args=(
                "99_cwd",
                f"executed/{i}.ipynb",
                {"out": str(tmp_path / f"cwd{i}.txt"), "pause": pause},
            ),
        )
        for i, pause in enumerate((0.0, 4.0))
    ]
    for thread in threads:
        thread.start()
        time.sleep(0.5)
    for thread in threads:
        thread.join()
    assert Path.cwd() == work
    for i in range(2):
        assert (tmp_path / f"cwd{i}.txt").read_text() == str(books.resolve())
        assert (work / "executed" / f"{i}.ipynb").exists()  # relative out_path: from the caller


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


def test_collect_only_named_runs(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    run_sweep([0.0, 0.5], [0, 1], out, runner=FakeRunner(), progress=False)
    rows = collect(out, runs=["alpha0.5-seed1", "alpha0.0-seed1"])
    assert set(zip(rows.alpha_target, rows.train_seed, strict=True)) == {(0.0, 1), (0.5, 1)}
    assert len(collect(out)) > len(rows)


def test_collect_errors_and_empty(tmp_path: Path) -> None:
    with pytest.raises(SweepError, match="run the sweep first"):
        collect(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    assert collect(tmp_path / "empty").empty


# --------------------------------------------------------------------------- run evaluation helpers
def test_resolve_posthoc() -> None:
    from tpccma_lib.evaluation.roles import resolve_posthoc
    from tpccma_lib.gap.posthoc import POSTHOC_METHODS

    assert resolve_posthoc("all") == [m for m in POSTHOC_METHODS if m != "identity"]
    assert resolve_posthoc("none") == [] and resolve_posthoc("") == []
    assert resolve_posthoc(" shift, whiten ,shift,identity") == ["shift", "whiten"]
    assert resolve_posthoc(["coral"]) == ["coral"]
    with pytest.raises(RoleEvaluationError, match="unknown post-hoc"):
        resolve_posthoc("shift,nonsense")


def _long_rows(metrics: dict[tuple[str, str], float], **columns: Any) -> list[dict[str, Any]]:
    return [{**columns, "task": t, "metric": m, "value": v} for (t, m), v in metrics.items()]


def test_results_table_one_row_per_configuration() -> None:
    from tpccma_lib.evaluation.model_report import METRIC_COLUMNS
    from tpccma_lib.evaluation.roles import results_table

    rows = pd.DataFrame(
        _long_rows(_fake_metrics(0.0, 0), role="base", posthoc="identity")
        + _long_rows(_fake_metrics(0.2, 0), role="base", posthoc="shift")
        + _long_rows(_fake_metrics(0.5, 1), role="finetuned", posthoc="identity")
    )
    table = results_table(rows)
    assert list(table.columns) == ["role", "posthoc", *METRIC_COLUMNS]
    assert list(zip(table.role, table.posthoc, strict=True)) == [
        ("base", "identity"),
        ("base", "shift"),
        ("finetuned", "identity"),
    ]
    for (alpha, seed), row in zip(
        [(0.0, 0), (0.2, 0), (0.5, 1)], table.to_dict("records"), strict=True
    ):
        for column, value in _expected_headline(alpha, seed).items():
            assert row[column] == pytest.approx(value)
        assert np.isnan(row["modality_ari"])  # not in the rows: NaN, not an error


def test_metric_columns_cover_headline_and_summary() -> None:
    from tpccma_lib.evaluation.model_report import METRIC_COLUMNS, headline

    assert set(headline(pd.DataFrame(columns=["task", "metric", "value"]))) == set(METRIC_COLUMNS)
    assert set(HEADLINE_COLUMNS) <= set(METRIC_COLUMNS)


class _FakeDecoder:
    def __init__(self, role: str) -> None:
        self.role = role

    def generate(self, embeddings: np.ndarray) -> list[str]:
        return [f"{self.role} caption of {float(e[0]):g}" for e in embeddings]


def test_evaluate_roles_trains_one_decoder_per_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """evaluate_roles trains one decoder per model and hands it to every evaluation of that
    model; evaluate_model uses it for the model itself and trains a fix's own (tested in
    test_fix_decoder_learns_the_fixed_captions)."""
    import tpccma_lib.evaluation.model_report as reporting
    from tpccma_lib.evaluation.roles import evaluate_roles

    fitted: list[str] = []
    seen: list[tuple[str, str, str]] = []

    def fake_fit(exp: Any, model: str, cfg: Any, progress: bool = False) -> _FakeDecoder:
        fitted.append(model)
        return _FakeDecoder(model)

    def fake_eval(
        exp: Any,
        model: str,
        *,
        checkpoint: str,
        posthoc: str,
        decoder: Any,
        cfg: Any,
        progress: bool,
        label: dict[str, Any],
    ) -> pd.DataFrame:
        seen.append((model, posthoc, decoder.role))
        frame = pd.DataFrame(
            _long_rows({("gap", "raw_gap"): 1.0}, posthoc=posthoc, checkpoint=checkpoint)
        )
        for key, value in label.items():
            frame[key] = value
        return frame

    monkeypatch.setattr(reporting, "fit_caption_decoder", fake_fit)
    monkeypatch.setattr(reporting, "evaluate_model", fake_eval)
    result = evaluate_roles(
        object(),
        {"base": ("m0", "base.pt"), "finetuned": ("m1", "ft.pt")},
        posthoc={"base": ["shift", "coral"]},
        label={"alpha_target": 0.5},
    )
    assert fitted == ["m0", "m1"]  # one decoder per model (a fix's own is evaluate_model's)
    assert seen == [
        ("m0", "identity", "m0"),
        ("m0", "shift", "m0"),
        ("m0", "coral", "m0"),
        ("m1", "identity", "m1"),
    ]
    assert list(result.rows.role) == ["base"] * 3 + ["finetuned"]
    assert set(result.rows.alpha_target) == {0.5}
    assert list(result.rows.checkpoint) == ["base.pt"] * 3 + ["ft.pt"]
    assert set(result.decoders) == {"base", "finetuned"}


def test_sample_captions_rows_and_columns() -> None:
    from types import SimpleNamespace

    from tpccma_lib.evaluation.roles import sample_captions

    n_images = 10
    data = SimpleNamespace(
        class_names=("a", "b"),
        labels=np.arange(n_images) % 2,
        captions=[[f"ref {i}", "other"] for i in range(n_images)],
        __len__=None,
    )

    class FakeSet(list):  # len() of the split
        pass

    split = FakeSet(range(n_images))
    split.class_names, split.labels, split.captions = data.class_names, data.labels, data.captions
    image = np.arange(n_images, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    exp = SimpleNamespace(
        split=lambda name: split, embeddings=lambda model, name: SimpleNamespace(image=image)
    )
    table = sample_captions(
        exp, {"base": ("m0", _FakeDecoder("base")), "ft": ("m1", _FakeDecoder("ft"))}, n=4, seed=3
    )
    expected = np.sort(np.random.default_rng(3).choice(n_images, size=4, replace=False))
    assert table.image.tolist() == expected.tolist()
    assert list(table.columns) == ["image", "class", "reference", "base", "ft"]
    assert table.reference.tolist() == [f"ref {i}" for i in expected]
    assert table["class"].tolist() == [("a", "b")[i % 2] for i in expected]
    assert table.ft.tolist() == [f"ft caption of {i:g}" for i in expected]


# --------------------------------------------------------------------------- sweep analysis
def _sweep_rows(alphas: Sequence[float], seeds: Sequence[int]) -> pd.DataFrame:
    """collect()-like rows: fine-tuned per run; base + post-hoc rows in the alpha-0 runs."""
    rows = []
    for seed in seeds:
        for alpha in alphas:
            common = {"alpha_target": alpha, "train_seed": seed, "run": run_name(alpha, seed)}
            rows += _long_rows(
                _fake_metrics(alpha, seed), role="finetuned", posthoc="identity", **common
            )
            if alpha == min(alphas):
                rows += _long_rows(
                    _fake_metrics(0.1, seed), role="base", posthoc="identity", **common
                )
                rows += _long_rows(_fake_metrics(0.9, seed), role="base", posthoc="shift", **common)
    return pd.DataFrame(rows)


def test_sweep_points_kinds_and_names() -> None:
    from tpccma_lib.evaluation.tradeoff import sweep_points

    points = sweep_points(_sweep_rows([0.0, 0.05, 0.5], [0, 1]))
    assert (points.kind == "fine-tuned").sum() == 6
    assert sorted(points[points.kind != "fine-tuned"].name.unique()) == ["base", "shift"]
    assert (points.kind == "post-hoc").sum() == 2  # one per seed
    assert points[points.kind != "fine-tuned"].alpha_target.isna().all()
    hit = points[(points.name == "alpha=0.05") & (points.train_seed == 1)].iloc[0]
    assert hit.raw_gap == pytest.approx(_fake_metrics(0.05, 1)[("gap", "raw_gap")])
    with pytest.raises(SweepAnalysisError, match="no finished runs"):
        sweep_points(pd.DataFrame())


def test_tradeoff_table_against_formula() -> None:
    """Every point against the original (base) model of its seed; fine-tuned points also
    against the alpha = 0 control of their seed; formulas written out again here."""
    from tpccma_lib.evaluation.tradeoff import sweep_points, tradeoff_table

    table = tradeoff_table(sweep_points(_sweep_rows([0.0, 0.5], [0, 1])))

    def expected(metrics: dict, ref: dict) -> dict[str, float]:
        g, d, a, c = (
            ("gap", "raw_gap"),
            ("gap", "distribution_gap"),
            ("zero_shot", "accuracy"),
            ("captioning", "CIDEr"),
        )
        return {
            "gap_reduction_pct": 100 * (ref[g] - metrics[g]) / ref[g],
            "distribution_reduction_pct": 100 * (ref[d] - metrics[d]) / ref[d],
            "accuracy_drop_pct": 100 * (ref[a] - metrics[a]) / ref[a],
            "cider_change_pct": 100 * (metrics[c] - ref[c]) / ref[c],
        }

    for row in table.to_dict("records"):
        seed = row["train_seed"]
        fine = row["kind"] == "fine-tuned"
        own = _fake_metrics(
            row["alpha_target"] if fine else (0.1 if row["kind"] == "base" else 0.9), seed
        )
        for column, value in expected(own, _fake_metrics(0.1, seed)).items():
            assert row[column] == pytest.approx(value), column
            control = row[column + "_vs_control"]
            if fine:
                assert control == pytest.approx(expected(own, _fake_metrics(0.0, seed))[column])
            else:
                assert np.isnan(control)
        assert row["reference"] == f"original model, seed {seed}"
        assert row["control"] == (f"alpha=0, seed {seed}" if fine else "")
    control_rows = table[(table.kind == "fine-tuned") & (table.alpha_target == 0.0)]
    assert np.allclose(control_rows.gap_reduction_pct_vs_control, 0.0)
    assert not np.allclose(control_rows.gap_reduction_pct, 0.0)  # the control moved the gap too
    base_rows = table[table.kind == "base"]
    assert np.allclose(base_rows.gap_reduction_pct, 0.0)


def test_tradeoff_table_without_original_model() -> None:
    """A seed whose base model was not evaluated gets NaN against the original, not a guess."""
    from tpccma_lib.evaluation.tradeoff import sweep_points, tradeoff_table

    points = sweep_points(_sweep_rows([0.0, 0.5], [0]))
    table = tradeoff_table(points[points.kind == "fine-tuned"])
    assert table.gap_reduction_pct.isna().all() and (table.reference == "none").all()
    assert table.gap_reduction_pct_vs_control.notna().all()


def test_tradeoff_summary_means_and_pareto() -> None:
    from tpccma_lib.evaluation.tradeoff import sweep_points, tradeoff_summary, tradeoff_table

    table = tradeoff_table(sweep_points(_sweep_rows([0.0, 0.2, 0.5], [0, 1])))
    summary = tradeoff_summary(table)
    assert summary.kind.tolist()[:3] == ["fine-tuned"] * 3
    assert summary.alpha_target.tolist()[:3] == [0.0, 0.2, 0.5]
    assert set(summary.n_seeds) == {2}
    for row in summary.to_dict("records"):
        part = table[(table.kind == row["kind"]) & (table.name == row["name"])]
        assert row["gap_reduction_pct"] == pytest.approx(part.gap_reduction_pct.mean())
        assert row["distribution_reduction_pct_vs_control"] == pytest.approx(
            part.distribution_reduction_pct_vs_control.mean(), nan_ok=True
        )
    # brute-force Pareto: no other point at least as good in both and better in one
    x = summary.accuracy_drop_pct.to_numpy()
    for flag, column in (
        ("pareto", "gap_reduction_pct"),
        ("pareto_distribution", "distribution_reduction_pct"),
    ):
        y = summary[column].to_numpy()
        for i in range(len(summary)):
            dominated = any(
                x[j] <= x[i] and y[j] >= y[i] and (x[j] < x[i] or y[j] > y[i])
                for j in range(len(summary))
                if j != i
            )
            assert bool(summary[flag][i]) == (not dominated)


def test_r2_analysis_matches_scipy() -> None:
    from scipy.stats import linregress

    from tpccma_lib.evaluation.tradeoff import (
        R2_GAP_METRICS,
        R2_TASK_METRICS,
        r2_analysis,
        sweep_points,
    )

    rng = np.random.default_rng(0)
    points = sweep_points(_sweep_rows([0.0, 0.1, 0.3, 0.6], [0, 1]))
    for column in (*R2_TASK_METRICS, *R2_GAP_METRICS):
        points[column] = points[column] + rng.normal(0, 0.05, len(points))
    r2 = r2_analysis(points)
    assert set(r2.points) == {"fine-tuned runs", "runs + base + post-hoc"}
    assert len(r2) == 2 * len(R2_TASK_METRICS) * len(R2_GAP_METRICS)
    for row in r2.to_dict("records"):
        subset = (
            points if row["points"] != "fine-tuned runs" else points[points.kind == "fine-tuned"]
        )
        expected = linregress(subset[row["gap_metric"]], subset[row["task_metric"]]).rvalue ** 2
        assert row["r2"] == pytest.approx(expected)
        assert row["n"] == len(subset)


def test_r2_analysis_small_sets() -> None:
    from tpccma_lib.evaluation.tradeoff import r2_analysis, sweep_points

    points = sweep_points(_sweep_rows([0.0, 0.5], [0]))  # 2 runs + base + shift
    r2 = r2_analysis(points)
    assert set(r2.points) == {"runs + base + post-hoc"}
    with pytest.raises(SweepAnalysisError, match="at least 3"):
        r2_analysis(points[points.kind == "fine-tuned"])


def test_paper_comparison() -> None:
    from tpccma_lib.evaluation.tradeoff import (
        PAPER_CLAIMS,
        paper_comparison,
        sweep_points,
        tradeoff_summary,
        tradeoff_table,
    )

    summary = tradeoff_summary(tradeoff_table(sweep_points(_sweep_rows([0.0, 0.5], [0, 1]))))
    table = paper_comparison(summary)
    assert table.paper.tolist() == [claim[2] for claim in PAPER_CLAIMS]
    at = {(r["alpha_target"], r["quantity"]): r["ours"] for r in table.to_dict("records")}
    assert np.isnan(at[(0.05, "raw gap")])  # alpha 0.05 not swept
    control = {
        (r["alpha_target"], r["quantity"]): r["ours_vs_control"] for r in table.to_dict("records")
    }
    g5 = [_fake_metrics(0.5, s)[("gap", "raw_gap")] for s in (0, 1)]
    g_original = [_fake_metrics(0.1, s)[("gap", "raw_gap")] for s in (0, 1)]  # the base model
    g_control = [_fake_metrics(0.0, s)[("gap", "raw_gap")] for s in (0, 1)]
    for refs, got in ((g_original, at), (g_control, control)):
        expected = np.mean([100 * (b - a) / a for a, b in zip(refs, g5, strict=True)])
        assert got[(0.5, "raw gap")] == pytest.approx(expected)
    assert at[(0.5, "raw gap")] != pytest.approx(control[(0.5, "raw gap")])
    assert at[(0.5, "clustering ARI")] == pytest.approx(0.3 + 0.2 * 0.5)
    assert at[(0.0, "clustering ARI")] == pytest.approx(0.3)


def test_finetuned_model_missing_checkpoint(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from tpccma_lib.evaluation.roles import finetuned_model

    loaded: list[Path] = []
    exp = SimpleNamespace(load=lambda path: loaded.append(Path(path)) or "model")
    with pytest.raises(FileNotFoundError, match="run notebook 03 first"):
        finetuned_model(exp, tmp_path / "alpha0.5-seed0" / "final.pt")
    ckpt = tmp_path / "final.pt"
    ckpt.write_bytes(b"x")
    assert finetuned_model(exp, ckpt) == "model" and loaded == [ckpt]


def test_compare_roles_changes() -> None:
    from tpccma_lib.evaluation.roles import compare_roles

    table = pd.DataFrame(
        {
            "role": ["base", "base", "finetuned"],
            "posthoc": ["identity", "shift", "identity"],
            "raw_gap": [0.4, 0.1, 0.1],
            "cider": [0.0, 1.0, 0.5],
        }
    )
    out = compare_roles(table, metrics=["raw_gap", "cider"])
    assert out.metric.tolist() == ["raw_gap", "cider"]
    assert out.base.tolist() == [0.4, 0.0]  # the un-fixed base row, not "shift"
    assert out.change.tolist() == pytest.approx([-0.3, 0.5])
    assert out.change_pct[0] == pytest.approx(-75.0)
    assert np.isnan(out.change_pct[1])  # relative to 0: undefined
    with pytest.raises(RoleEvaluationError, match="no un-fixed rows"):
        compare_roles(table, after="nothing", metrics=["raw_gap"])


def test_sweep_runs_skip_the_per_run_extras(tmp_path: Path) -> None:
    """A sweep's notebook 03 trains neither the ablation twin nor the control (the sweep's own
    alpha = 0 runs are the control) and its notebook 04 computes no bootstrap; a parameter the
    user passes still wins."""
    from tpccma_lib.app.sweep import run_parameters, run_paths

    paths = run_paths(tmp_path, 0.5, 0)
    p03, p04 = run_parameters(0.5, 0, paths)
    assert (p03["ablation"], p03["control"], p04["uncertainty"]) == (False, False, False)
    p03, p04 = run_parameters(0.5, 0, paths, parameters={"control": True, "uncertainty": True})
    assert p03["control"] is True and p04["uncertainty"] is True
    assert p03["alpha_target"] == p04["alpha_target"] == 0.5
    # the base model's fixes: every one by default, the user's choice when given, none in the
    # runs that do not evaluate the base model
    assert run_parameters(0.0, 0, paths, with_posthoc=True)[1]["posthoc_methods"] == "all"
    chosen = {"posthoc_methods": "shift"}
    assert run_parameters(0.0, 0, paths, chosen, with_posthoc=True)[1]["posthoc_methods"] == "shift"
    assert run_parameters(0.5, 0, paths, chosen)[1]["posthoc_methods"] == "none"


def test_fix_decoder_learns_the_fixed_captions(monkeypatch: pytest.MonkeyPatch) -> None:
    """A post-hoc fix is captioned by a decoder trained on the fix's text map of the train
    captions (rows renormalised), not on the un-fixed captions."""
    from types import SimpleNamespace

    import tpccma_lib.evaluation.model_report as reporting
    from tpccma_lib.embeddings import Embeddings
    from tpccma_lib.evaluation.captioning import CaptionDecoderConfig
    from tpccma_lib.gap.posthoc import make_posthoc

    rng = np.random.default_rng(0)
    train_text = rng.normal(size=(40, 6)).astype(np.float32)
    train_text /= np.linalg.norm(train_text, axis=1, keepdims=True)
    fit = Embeddings.from_arrays(rng.normal(size=(20, 6)) + 2.0, rng.normal(size=(20, 6)))
    method = make_posthoc("coral_mean").fit(fit)
    captured: list[np.ndarray] = []

    def fake_train(text: np.ndarray, captions: list[str], cfg: Any, **kw: Any) -> str:
        captured.append(np.asarray(text))
        return "decoder"

    monkeypatch.setattr(reporting, "train_text_decoder", fake_train)
    exp = SimpleNamespace(
        text_embeddings=lambda model, split: train_text,
        split=lambda name: SimpleNamespace(flat_captions=lambda: (["c"] * 40, np.arange(40))),
        device="cpu",
    )
    cfg = reporting.EvalConfig(decoder=CaptionDecoderConfig())
    reporting.fit_caption_decoder(exp, "model", cfg, posthoc=method)
    reporting.fit_caption_decoder(exp, "model", cfg)
    expected = method.text_map_.apply(train_text, renormalize=True, dtype=np.float32)
    assert np.allclose(captured[0], expected) and not np.allclose(captured[0], train_text)
    assert np.array_equal(captured[1], train_text)
    with pytest.raises(ValueError, match="posthoc_captioning must be one of"):
        reporting.EvalConfig(posthoc_captioning="base_decoder")
