"""The `tpccma` command end to end on a tiny embedded default (real towers, tiny data)."""

import pandas as pd
import pytest

from tpccma_lib import experiment
from tpccma_lib.app.cli import main
from tpccma_lib.training.loop import TrainConfig

TINY = ["--n-train", "48", "--n-val", "16", "--n-test", "24", "--embed-dim", "32"]


@pytest.fixture(autouse=True)
def short_pretraining(monkeypatch):
    monkeypatch.setattr(
        experiment,
        "PRETRAIN_CONFIG",
        TrainConfig(steps=30, batch_size=48, alpha_target=0.0, warmup_steps=2, log_every=10),
    )


@pytest.mark.slow
def test_pretrain_train_evaluate(tmp_path, capsys):
    runs = str(tmp_path / "runs")
    assert main(["pretrain", *TINY, "--runs", runs]) == 0
    out = capsys.readouterr().out
    assert "raw modality gap" in out and "zero-shot accuracy" in out and "captioned-shapes" in out
    run_dir = tmp_path / "ft"
    assert (
        main(
            [
                "train",
                *TINY,
                "--runs",
                runs,
                "--steps",
                "12",
                "--batch-size",
                "16",
                "--alpha-target",
                "0.5",
                "--out",
                str(run_dir),
            ]
        )
        == 0
    )
    assert (run_dir / "final.pt").exists() and (run_dir / "metrics.jsonl").exists()
    csv = tmp_path / "eval.csv"
    assert (
        main(
            [
                "evaluate",
                *TINY,
                "--runs",
                runs,
                "--checkpoint",
                str(run_dir / "final.pt"),
                "--posthoc",
                "mean_center",
                "--captioning",
                "false",
                "--csv",
                str(csv),
            ]
        )
        == 0
    )
    frame = pd.read_csv(csv)
    assert set(frame.task) >= {"gap", "retrieval", "clustering", "zero_shot"}
    assert (frame.posthoc == "mean_center").all()
    assert frame.checkpoint.str.endswith("final.pt").all()


def test_errors_are_reported_not_raised(tmp_path, capsys):
    code = main(
        [
            "train",
            *TINY,
            "--runs",
            str(tmp_path),
            "--alpha-target",
            "2",
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert code == 2
    assert "alpha_target must lie in [0, 1]" in capsys.readouterr().err
    code = main(
        ["evaluate", *TINY, "--runs", str(tmp_path), "--checkpoint", str(tmp_path / "missing.pt")]
    )
    assert code == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_unknown_dataset_is_clear(tmp_path, capsys):
    assert main(["pretrain", "--dataset", "imagenet", "--runs", str(tmp_path)]) == 2
    assert "unknown dataset" in capsys.readouterr().err


@pytest.mark.parametrize(("flag", "kept"), [([], False), (["--keep-checkpoint"], True)])
def test_train_passes_keep_checkpoint(tmp_path, monkeypatch, capsys, flag, kept):
    import types

    seen = {}

    def fake_finetune(self, cfg, out, **kwargs):
        seen.update(kwargs)
        return types.SimpleNamespace(
            resumed_from_step=0, wall_time_s=0.0, final_checkpoint=f"{out}/final.pt"
        )

    monkeypatch.setattr(experiment.Experiment, "finetune", fake_finetune)
    assert main(["train", *TINY, "--out", str(tmp_path / "run"), *flag]) == 0
    assert seen["keep_checkpoint"] is kept and seen["resume"] is True
