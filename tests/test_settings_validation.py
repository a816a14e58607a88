"""Bad settings are refused with one clear line, the same way from every entry point.

One table of out-of-range values goes through the library (``TrainConfig``), the notebooks'
papermill parameters (``config_from_params``) and the command line (``tpccma train``): the
dataclasses are the one validation layer all three share.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tests.test_train import fresh, small_cfg, synthetic_inputs
from tpccma_lib import experiment
from tpccma_lib.app.cli import main
from tpccma_lib.embeddings import Embeddings, EmbeddingsError
from tpccma_lib.experiment import config_from_params
from tpccma_lib.gap.posthoc import PosthocError, Procrustes
from tpccma_lib.training.curriculum import CurriculumConfig, CurriculumError
from tpccma_lib.training.loop import TrainConfig, TrainError, train

TINY = ["--n-train", "48", "--n-val", "16", "--n-test", "24", "--embed-dim", "32"]

#: (field, value, words of the error message)
BAD_TRAIN_SETTINGS = [
    ("min_lr_ratio", -5.0, "min_lr_ratio must lie in [0, 1]"),
    ("min_lr_ratio", 1.5, "min_lr_ratio must lie in [0, 1]"),
    ("warmup_steps", -5, "warmup_steps must be >= 0"),
    ("grad_clip", math.nan, "grad_clip must be a finite number"),
    ("grad_clip", math.inf, "grad_clip must be a finite number"),
    ("grad_clip", -1.0, "grad_clip must be >= 0"),
    ("weight_decay", -0.1, "weight_decay must be >= 0"),
    ("lr", math.nan, "lr must be a finite number"),
    ("lr", math.inf, "lr must be a finite number"),
    ("lr", -1.0, "lr must be positive"),
    ("centroid_weight", -1.0, "centroid_weight must be >= 0"),
    ("distribution_weight", math.nan, "distribution_weight must be a finite number"),
    ("seed", -1, "seed must be >= 0"),
    ("eval_every", -1, "eval_every must be >= 0"),
    ("workers", -1, "workers must be >= 0"),
    ("amp", "fp8", "amp must be 'none', 'bf16' or 'fp16'"),
    ("device", "tpu7", "device must be 'auto', 'cpu', 'cuda' or 'cuda:<index>', got 'tpu7'"),
    ("alpha_target", math.nan, "alpha_target must be finite"),
    ("warmup_fraction", math.inf, "warmup_fraction must be finite"),
    ("max_norm_ratio", math.nan, "max_norm_ratio must be a number"),
]


def _ids(rows):
    return [f"{name}={value}" for name, value, _ in rows]


@pytest.mark.parametrize("name, value, message", BAD_TRAIN_SETTINGS, ids=_ids(BAD_TRAIN_SETTINGS))
def test_library_refuses(name, value, message):
    with pytest.raises(TrainError) as info:
        TrainConfig(**{name: value})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name, value, message", BAD_TRAIN_SETTINGS, ids=_ids(BAD_TRAIN_SETTINGS))
def test_notebook_parameters_refuse(name, value, message):
    """What notebooks 03/04 do with their papermill globals."""
    params = {"alpha_target": 0.5, "steps": 30, name: value, "unrelated": object()}
    with pytest.raises(TrainError, match=_escape(message)):
        config_from_params(TrainConfig, params)


@pytest.mark.parametrize("name, value, message", BAD_TRAIN_SETTINGS, ids=_ids(BAD_TRAIN_SETTINGS))
def test_cli_refuses_with_one_line(name, value, message, tmp_path, capsys):
    flag = f"--{name.replace('_', '-')}"
    out = tmp_path / "run"
    code = main(["train", *TINY, "--runs", str(tmp_path), flag, str(value), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not out.exists()  # refused before any work


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": 2.5}, "steps must be an integer"),
        ({"batch_size": True}, "batch_size must be an integer"),
        ({"lr": "0.1"}, "lr must be a number"),
    ],
)
def test_library_refuses_wrong_types(kwargs, message):
    with pytest.raises(TrainError, match=message):
        TrainConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"recovery": math.inf}, "recovery must be finite"),
        ({"conflict_shrink": math.nan}, "conflict_shrink must be finite"),
        ({"max_norm_ratio": -math.inf}, "max_norm_ratio must be > 0"),
        ({"measure_every": 0}, "measure_every must be >= 1"),
    ],
)
def test_curriculum_refuses(kwargs, message):
    with pytest.raises(CurriculumError, match=message):
        CurriculumConfig(**kwargs)


def test_valid_settings_are_unchanged():
    """The defaults and the shipped recipes still pass (no behaviour change on valid input)."""
    TrainConfig()
    TrainConfig(grad_clip=0.0, warmup_steps=0, min_lr_ratio=0.0, weight_decay=0.0)
    TrainConfig(min_lr_ratio=1.0, device="cpu", max_norm_ratio=math.inf)
    TrainConfig(**experiment.PRETRAIN_CONFIG.to_dict())
    TrainConfig(steps=np.int64(30))  # numpy integers from a notebook are integers


def test_batch_larger_than_the_training_set_is_refused_not_clamped(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(TrainError, match=r"batch_size 64 is larger than the training set \(48"):
        train(fresh(), synthetic_inputs(48), small_cfg(batch_size=64), out, progress=False)
    assert not out.exists()
    # equal to the training set is fine
    result = train(
        fresh(), synthetic_inputs(16), small_cfg(batch_size=16, steps=2), out, progress=False
    )
    assert result.final_checkpoint.exists()


def test_cuda_device_without_cuda_is_one_line(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TrainError, match="no CUDA device is visible"):
        train(fresh(), synthetic_inputs(), small_cfg(device="cuda:1"), tmp_path, progress=False)


# --------------------------------------------------------------------------- paths
def _no_work(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the command started its work before checking its output path")

    monkeypatch.setattr(experiment.Experiment, "base_model", fail)
    monkeypatch.setattr(experiment.Experiment, "finetune", fail)


def _a_file(tmp_path: Path) -> Path:
    path = tmp_path / "a_file"
    path.write_text("not a folder")
    return path


def test_unwritable_train_out_is_checked_first(tmp_path, monkeypatch, capsys):
    _no_work(monkeypatch)
    out = _a_file(tmp_path) / "run"  # cannot be created: its parent is a file
    code = main(["train", *TINY, "--runs", str(tmp_path), "--steps", "4", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"cannot write to --out {out}" in err and "Traceback" not in err


def test_train_out_that_is_a_file_is_refused(tmp_path, monkeypatch, capsys):
    _no_work(monkeypatch)
    out = _a_file(tmp_path)
    assert main(["train", *TINY, "--runs", str(tmp_path), "--out", str(out)]) == 2
    assert f"--out {out} is a file, not a folder" in capsys.readouterr().err


def test_unwritable_evaluate_csv_is_checked_before_the_work(tmp_path, monkeypatch, capsys):
    _no_work(monkeypatch)
    csv = _a_file(tmp_path) / "eval.csv"
    code = main(["evaluate", *TINY, "--runs", str(tmp_path), "--csv", str(csv)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"cannot write to --csv {csv}" in err


def test_evaluate_csv_that_is_a_folder_is_refused(tmp_path, monkeypatch, capsys):
    _no_work(monkeypatch)
    assert main(["evaluate", *TINY, "--runs", str(tmp_path), "--csv", str(tmp_path)]) == 2
    assert "is a folder, not a file" in capsys.readouterr().err


def test_unwritable_sweep_out_is_one_line(tmp_path, capsys):
    out = _a_file(tmp_path) / "sweep"
    assert main(["sweep", "--alphas", "0", "--seeds", "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"cannot write to --out {out}" in err and "Traceback" not in err


# --------------------------------------------------------------------------- library inputs
def test_all_zero_embedding_rows_are_refused():
    image = np.eye(4, dtype=np.float32)
    text = image.copy()
    text[2] = 0.0
    with pytest.raises(EmbeddingsError, match=r"Embeddings.text has 1 all-zero row\(s\) .*row 2"):
        Embeddings.from_arrays(image, text)
    with pytest.raises(EmbeddingsError, match="all-zero"):
        Embeddings(image=text, text=image, text_to_image=np.arange(4), image_labels=-np.ones(4))


def test_procrustes_refuses_too_few_pairs(rng):
    image = rng.normal(size=(3, 6))
    emb = Embeddings.from_arrays(image, image + 0.1 * rng.normal(size=(3, 6)))
    with pytest.raises(PosthocError, match="procrustes needs at least D = 6 matched pairs"):
        Procrustes().fit(emb)
    with pytest.raises(PosthocError, match="got 1"):
        Procrustes().fit(Embeddings.from_arrays(image[:1], image[:1]))
    enough = Embeddings.from_arrays(rng.normal(size=(6, 6)), rng.normal(size=(6, 6)))
    Procrustes().fit(enough)


def _escape(text: str) -> str:
    import re

    return re.escape(text)
