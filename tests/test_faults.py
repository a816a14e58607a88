"""Fault injection: writes cut off or out of space, cut-off logs, concurrent runs, Ctrl-C.

Each test injects one fault the way it happens in practice (a writer that dies half way, a
full disk, a power cut during the log append, a second sweep into the same folder, SIGINT to
a sweep) and checks that nothing is silently wrong and that the next run can go on.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from tests.test_runs import tiny_experiment
from tests.test_sweep import FakeRunner
from tests.test_train import fresh, small_cfg, synthetic_inputs
from tpccma_lib.app.sweep import run_paths, run_sweep
from tpccma_lib.atomic import (
    DiskFullError,
    atomic_write,
    atomic_write_text,
    remove_stale_temp_files,
)
from tpccma_lib.locks import LOCK_NAME, RunLockedError, run_lock
from tpccma_lib.models import factory
from tpccma_lib.models.factory import atomic_torch_save, load_checkpoint
from tpccma_lib.training import loop as train_module
from tpccma_lib.training.loop import TrainError, train

REPO = Path(__file__).resolve().parent.parent


def _temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# --------------------------------------------------------------------------- the atomic writer
def test_writer_dying_half_way_keeps_the_old_file_and_no_temp_file(tmp_path):
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")

    def dies(handle):
        handle.write(b"half of the new conte")
        raise KeyboardInterrupt  # a kill while writing

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, dies)
    assert target.read_bytes() == b"old"
    assert _temp_files(tmp_path) == []


def test_disk_full_is_reported_as_such_and_cleaned_up(tmp_path):
    target = tmp_path / "summary.csv"

    def full(handle):
        handle.write(b"a,b\n")
        raise _enospc()

    with pytest.raises(DiskFullError, match=f"no space left on device while writing {target}"):
        atomic_write(target, full)
    assert not target.exists()
    assert _temp_files(tmp_path) == []


def test_disk_full_inside_torch_save_is_recognised(tmp_path):
    """torch.save turns the file object's ENOSPC into 'RuntimeError: unexpected pos'."""

    class FullAfter:
        def __init__(self, handle, limit):
            self.handle, self.limit, self.written = handle, limit, 0

        def write(self, data):
            self.written += len(data)
            if self.written > self.limit:
                raise _enospc()
            return self.handle.write(data)

        def flush(self):
            self.handle.flush()

    target = tmp_path / "checkpoint.pt"
    payload = {"w": torch.zeros(20_000)}
    with pytest.raises(DiskFullError, match="no space left on device"):
        atomic_write(target, lambda fh: torch.save(payload, FullAfter(fh, 1000)))
    assert _temp_files(tmp_path) == []


def test_atomic_torch_save_disk_full_leaves_no_temp_file(tmp_path, monkeypatch):
    def save_then_full(obj, f):
        if isinstance(f, (str, os.PathLike)):  # the old writer passed a path
            Path(f).write_bytes(b"PK partial")
        else:
            f.write(b"PK partial")
        raise _enospc()

    monkeypatch.setattr(factory.torch, "save", save_then_full)
    target = tmp_path / "checkpoint.pt"
    with pytest.raises(DiskFullError, match=f"while writing {target}"):
        atomic_torch_save({"x": 1}, target)
    assert list(tmp_path.iterdir()) == []


def test_written_files_get_ordinary_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "done.json", "{}")
        sweep_out = tmp_path / "sweep"
        run_sweep([0.0], [0], sweep_out, runner=FakeRunner(), progress=False)
    finally:
        os.umask(old)
    for path in (
        tmp_path / "done.json",
        sweep_out / "summary.csv",
        run_paths(sweep_out, 0.0, 0).done,
    ):
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_stale_temp_files_of_dead_processes_are_removed(tmp_path):
    dead, alive = _dead_pid(), os.getpid()
    stale = tmp_path / f".checkpoint.pt.{dead}.tmp"
    stale_new_style = tmp_path / f".final.pt.{dead}.3.tmp"
    live = tmp_path / f".checkpoint.pt.{alive}.tmp"
    other = tmp_path / "notes.tmp"
    for path in (stale, stale_new_style, live, other):
        path.write_bytes(b"x")
    stale_folder, live_folder = tmp_path / f".0a1b2c.{dead}.tmp", tmp_path / f".0a1b2c.{alive}.tmp"
    for folder in (stale_folder, live_folder):  # an entry written as a folder, then renamed
        folder.mkdir()
        (folder / "rows.pkl").write_bytes(b"x")
    assert sorted(remove_stale_temp_files(tmp_path)) == sorted(
        [stale, stale_new_style, stale_folder]
    )
    assert live.exists() and other.exists() and live_folder.exists()
    assert not stale_folder.exists()


def test_a_training_run_removes_stale_temp_files_in_its_folder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = out / f".checkpoint.pt.{_dead_pid()}.tmp"
    stale.write_bytes(b"25 MB of a killed run's checkpoint")
    train(fresh(), synthetic_inputs(), small_cfg(steps=4), out, progress=False)
    assert not stale.exists()
    assert _temp_files(out) == []


# --------------------------------------------------------------------------- training faults
def test_kill_during_a_checkpoint_write_then_resume_is_exact(tmp_path, monkeypatch):
    data = synthetic_inputs()
    full = train(fresh(), data, small_cfg(), tmp_path / "full", progress=False)
    out = tmp_path / "killed"
    real_save = torch.save
    calls = {"n": 0}

    def killed_on_second_checkpoint(obj, f):
        calls["n"] += 1
        if calls["n"] == 2:
            f.write(b"PK half a checkpoint")
            raise KeyboardInterrupt  # SIGINT / kill in the middle of the write
        real_save(obj, f)

    monkeypatch.setattr(factory.torch, "save", killed_on_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train(fresh(), data, small_cfg(), out, progress=False)
    monkeypatch.undo()
    assert _temp_files(out) == []
    assert not (out / LOCK_NAME).exists()  # the lock went with the process
    assert load_checkpoint(out / "checkpoint.pt")["step"] == 4  # the last complete one
    resumed = train(fresh(), data, small_cfg(), out, progress=False)
    assert resumed.resumed_from_step == 4
    for a, b in zip(
        full.model.trainable_state_dict().values(),
        resumed.model.trainable_state_dict().values(),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_disk_full_during_training_is_one_clear_error(tmp_path, monkeypatch):
    def full(obj, f):
        f.write(b"PK")
        raise _enospc()

    monkeypatch.setattr(factory.torch, "save", full)
    out = tmp_path / "run"
    with pytest.raises(DiskFullError, match=f"no space left on device while writing {out}"):
        train(fresh(), synthetic_inputs(), small_cfg(), out, progress=False)
    assert _temp_files(out) == []
    assert not (out / LOCK_NAME).exists()


def _cut_last_line(log: Path) -> None:
    text = log.read_text()
    log.write_text(text[: len(text) - 40])  # the append was cut off by a power cut


def test_cut_off_last_log_line_does_not_block_resume(tmp_path):
    data = synthetic_inputs()
    full = train(fresh(), data, small_cfg(), tmp_path / "full", progress=False)
    out = tmp_path / "cut"
    train(fresh(), data, small_cfg(), out, progress=False, stop_after=8)
    log = out / "metrics.jsonl"
    _cut_last_line(log)
    with pytest.warns(UserWarning, match=rf"{log}.*cut-off last line"):
        resumed = train(fresh(), data, small_cfg(), out, progress=False)
    assert resumed.resumed_from_step == 8
    records = [json.loads(line) for line in log.read_text().splitlines()]
    expected = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").open()]
    # the step of the cut line is lost from the log (its checkpoint is not), nothing else
    assert [r["step"] for r in records] == [r["step"] for r in expected if r["step"] != 7]
    assert records[-1] == expected[-1]
    assert full.history[-1]["step"] == resumed.history[-1]["step"]


def test_invalid_line_inside_the_log_names_file_and_line(tmp_path):
    data = synthetic_inputs()
    out = tmp_path / "run"
    train(fresh(), data, small_cfg(), out, progress=False, stop_after=8)
    log = out / "metrics.jsonl"
    lines = log.read_text().splitlines()
    lines[1] = lines[1][:25]
    log.write_text("\n".join(lines) + "\n")
    with pytest.raises(TrainError, match=rf"{log} line 2 is not a valid metrics record"):
        train(fresh(), data, small_cfg(), out, progress=False)


def test_log_rewrite_at_resume_is_atomic(tmp_path, monkeypatch):
    data = synthetic_inputs()
    out = tmp_path / "run"
    train(fresh(), data, small_cfg(), out, progress=False, stop_after=8)
    log = out / "metrics.jsonl"
    before = log.read_bytes()

    def full(path, text):
        raise DiskFullError(errno.ENOSPC, f"no space left on device while writing {path}")

    monkeypatch.setattr(train_module, "atomic_write_text", full)
    with pytest.raises(DiskFullError):
        train(fresh(), data, small_cfg(), out, progress=False)
    assert log.read_bytes() == before  # not truncated by a half-done rewrite


# --------------------------------------------------------------------------- resume fingerprint
def test_resume_with_other_data_is_refused(tmp_path):
    train(fresh(), synthetic_inputs(48), small_cfg(), tmp_path, progress=False, stop_after=4)
    with pytest.raises(TrainError, match="data n_images: 48 -> 40"):
        train(fresh(), synthetic_inputs(40), small_cfg(), tmp_path, progress=False)


def test_resume_from_another_base_model_is_refused(tmp_path):
    data = synthetic_inputs()
    train(fresh(), data, small_cfg(), tmp_path, progress=False, stop_after=4)
    other_base = fresh()
    with torch.no_grad():
        next(p for p in other_base.parameters() if p.requires_grad).add_(0.01)
    with pytest.raises(TrainError, match="base model weights digest"):
        train(other_base, data, small_cfg(), tmp_path, progress=False)


def test_experiment_resume_with_other_data_config_is_refused(tmp_path):
    """`tpccma train ... --out D`, then the same with another --n-train: refused, not relabelled."""
    out = tmp_path / "run"
    tiny_experiment(tmp_path / "runs").finetune(small_cfg(), out, stop_after=4)
    exp = tiny_experiment(tmp_path / "runs")
    exp.data.n_train = 40  # same synthetic inputs: only the recorded data config differs
    with pytest.raises(TrainError, match="data_config.n_train: 48 -> 40"):
        exp.finetune(small_cfg(), out)
    assert not (out / "final.pt").exists()


def test_corrupted_cached_base_model_is_rebuilt_with_a_warning(tmp_path):
    exp = tiny_experiment(tmp_path / "runs")
    first = exp.base_model().trainable_state_dict()
    final = exp.base_dir / "final.pt"
    final.write_bytes(final.read_bytes()[:100])  # truncated
    with pytest.warns(UserWarning, match=rf"cached base model {final} is unusable"):
        again = exp.base_model().trainable_state_dict()
    for a, b in zip(first.values(), again.values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    load_checkpoint(final)  # readable again


# --------------------------------------------------------------------------- locks
def test_second_training_into_a_locked_folder_gets_a_clear_error(tmp_path):
    out = tmp_path / "run"
    with run_lock(out):
        with pytest.raises(RunLockedError, match=rf"in use by process {os.getpid()}"):
            train(fresh(), synthetic_inputs(), small_cfg(), out, progress=False)
    assert not (out / LOCK_NAME).exists()
    train(fresh(), synthetic_inputs(), small_cfg(steps=4), out, progress=False)  # free again


def test_lock_of_another_process_is_seen(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom tpccma_lib.locks import run_lock\n"
            "with run_lock(sys.argv[1]):\n    print('locked', flush=True)\n    time.sleep(60)",
            str(out),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunLockedError, match=rf"process {holder.pid}"):
            with run_lock(out):
                pass
    finally:
        holder.kill()
        holder.wait()
    with pytest.warns(UserWarning, match=rf"stale lock .* process {holder.pid}"):
        with run_lock(out):  # released by the OS when the holder died; its file is stale
            pass


def test_stale_lock_file_is_broken_with_a_warning(tmp_path):
    import socket

    out = tmp_path / "run"
    out.mkdir()
    dead = _dead_pid()
    (out / LOCK_NAME).write_text(f"{dead} {socket.gethostname()}\n")
    with pytest.warns(UserWarning, match=rf"stale lock .* process {dead}"):
        train(fresh(), synthetic_inputs(), small_cfg(steps=4), out, progress=False)
    assert not (out / LOCK_NAME).exists()


class SlowRunner(FakeRunner):
    """A FakeRunner whose notebook 03 takes ``pause`` seconds (while holding the run)."""

    def __init__(self, pause: float) -> None:
        super().__init__()
        self.pause = pause
        self.started = threading.Event()

    def __call__(self, name: str, out_path: Path, parameters: dict[str, Any]) -> Path:
        if name == "03_curriculum_training":
            self.started.set()
            time.sleep(self.pause)
        return super().__call__(name, out_path, parameters)


def test_two_sweeps_into_one_folder_never_run_a_run_twice(tmp_path):
    out = tmp_path / "sweep"
    first_runner, second_runner = SlowRunner(pause=1.5), SlowRunner(pause=0.0)
    results: dict[str, pd.DataFrame] = {}
    first = threading.Thread(
        target=lambda: results.__setitem__(
            "first", run_sweep([0.0], [0], out, runner=first_runner, progress=False)
        )
    )
    first.start()
    assert first_runner.started.wait(10)
    second = run_sweep([0.0], [0], out, runner=second_runner, progress=False)
    first.join()
    assert list(results["first"].status) == ["done"]
    assert list(second.status) == ["failed"]
    assert f"in use by process {os.getpid()}" in second.error[0]
    assert second_runner.calls == []  # the shared run was not started a second time
    assert len(first_runner.calls) == 2


# --------------------------------------------------------------------------- Ctrl-C
_SWEEP_SCRIPT = textwrap.dedent(
    """
    import subprocess, sys
    from pathlib import Path

    sys.path.insert(0, sys.argv[2])
    from tests.test_sweep import FakeRunner
    from tpccma_lib.app import cli
    from tpccma_lib.app import notebooks as notebook_runner

    fake = FakeRunner()

    def runner(name, out_path, parameters):
        if name == "03_curriculum_training" and parameters["alpha_target"] > 0:
            Path(out_path).write_text("{}")
            print("kernel started", flush=True)
            # stands in for a notebook kernel that runs for minutes
            subprocess.run(
                [sys.executable, "-c", "import time; time.sleep(120)  # ipykernel stand-in"],
                check=True,
            )
        return fake(name, out_path, parameters)

    notebook_runner.run_notebook = runner
    sys.exit(cli.main(["sweep", "--alphas", "0,0.5,1", "--seeds", "0", "--out", sys.argv[1]]))
    """
)


def test_ctrl_c_stops_a_sweep_within_seconds(tmp_path):
    out = tmp_path / "sweep"
    script = tmp_path / "sweep_script.py"
    script.write_text(_SWEEP_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(out), str(REPO)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        for line in proc.stdout:
            if "kernel started" in line:
                break
        time.sleep(0.5)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        stopped_after = time.monotonic() - started
    finally:
        proc.kill()
        proc.wait()
    err = proc.stderr.read()
    assert proc.returncode == 130, err
    assert stopped_after < 10, stopped_after
    assert "alpha0.5-seed0" in err and "interrupted" in err
    summary = pd.read_csv(out / "summary.csv")
    status = dict(zip(summary.alpha_target, summary.status, strict=True))
    assert status == {0.0: "done", 0.5: "interrupted", 1.0: "cancelled"}
    assert run_paths(out, 0.0, 0).done.exists()  # the finished run stays
    assert not run_paths(out, 0.5, 0).done.exists()  # the cut-off run is redone next time
    assert not run_paths(out, 1.0, 0).run_dir.exists()  # the queued run never started
    assert not (run_paths(out, 0.5, 0).run_dir / LOCK_NAME).exists()
    # the rerun redoes the interrupted and cancelled runs and skips the finished one
    again = run_sweep([0.0, 0.5, 1.0], [0], out, runner=FakeRunner(), progress=False)
    assert list(again.status) == ["skipped", "done", "done"]


def test_failed_runs_make_the_sweep_command_fail(tmp_path, monkeypatch, capsys):
    from tpccma_lib.app import cli
    from tpccma_lib.app import notebooks as notebook_runner

    monkeypatch.setattr(notebook_runner, "run_notebook", FakeRunner(fail={(0.5, 0)}))
    code = cli.main(["sweep", "--alphas", "0,0.5", "--seeds", "0", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1
    assert "1 of 2 runs failed" in err
    assert "alpha0.5-seed0: RuntimeError: training diverged at alpha 0.5" in err
    assert "alpha0.0-seed0" not in err


def test_sweep_refuses_bad_values_before_any_kernel_starts(tmp_path, monkeypatch, capsys):
    from tpccma_lib.app import cli
    from tpccma_lib.app import notebooks as notebook_runner

    runner = FakeRunner()
    monkeypatch.setattr(notebook_runner, "run_notebook", runner)
    code = cli.main(
        ["sweep", "--alphas", "0,0.5", "--seeds", "0", "--out", str(tmp_path), "--param", "lr=-1"]
    )
    assert code == 2
    assert "lr must be positive" in capsys.readouterr().err
    assert runner.calls == []


# --------------------------------------------------------------------------- minor ones
def test_nan_in_the_feature_cache_names_the_file_and_is_rebuilt(tmp_path):
    from tpccma_lib.data import make_captioned_shapes
    from tpccma_lib.data.features import frozen_inputs
    from tpccma_lib.models import ModelConfig, create_model

    model = create_model(ModelConfig(embed_dim=8))
    data = make_captioned_shapes("train", 6, image_size=64, seed=0)
    good = frozen_inputs(model, data, cache_dir=tmp_path, progress=False)
    (path,) = tmp_path.glob("*.npz")
    with np.load(path) as z:
        arrays = dict(z)
    arrays["image"][2, 5] = np.nan
    np.savez(path, **arrays)
    with pytest.warns(UserWarning, match=rf"feature cache {path} is corrupted .*NaN"):
        again = frozen_inputs(model, data, cache_dir=tmp_path, progress=False)
    torch.testing.assert_close(again.image, good.image)
    assert _temp_files(tmp_path) == []
