"""Run folders: reuse a finished run only when its settings match, resume an interrupted one."""

import json
import math
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch

from tests.test_train import small_cfg
from tpccma_lib.data.config import DataConfig
from tpccma_lib.embeddings import Embeddings
from tpccma_lib.experiment import Experiment
from tpccma_lib.models import ModelConfig
from tpccma_lib.notebook import repo_root
from tpccma_lib.training.loop import InputSource, TrainConfig
from tpccma_lib.training.runs import (
    RunMismatchError,
    change_vs,
    compare_models,
    gap_monitor,
    load_or_train,
    read_history,
    repo_relative,
    summarize_runs,
    telemetry_summary,
)

torch.set_num_threads(1)


def synthetic_source(n_images=48, per=2, seed=0):
    """Random 'tower features' (1280-d image, 384-d text) with a shared latent."""
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(n_images, 16, generator=g)
    img = torch.relu(latent @ torch.randn(16, 1280, generator=g)) + 0.5
    t2i = np.repeat(np.arange(n_images), per)
    txt = latent[t2i] @ torch.randn(16, 384, generator=g)
    return InputSource.from_frozen(types.SimpleNamespace(image=img, text=txt, text_to_image=t2i))


def tiny_experiment(runs_dir, pretrain_steps=4, data_seed=0):
    """A real Experiment whose training inputs are synthetic features (no towers, no images)."""
    exp = Experiment(
        DataConfig(n_train=48, n_val=8, n_test=8, seed=data_seed),
        ModelConfig(embed_dim=8, init_seed=0),
        runs_dir=runs_dir,
        pretrain=TrainConfig(steps=pretrain_steps, batch_size=16, lr=1e-2, warmup_steps=1),
        progress=False,
    )
    source = synthetic_source()
    exp.input_source = lambda model, split="train": source
    return exp


def cfg(**kw):
    """test_train's small settings, with the validation gap measured every 4 steps."""
    return small_cfg(**{"eval_every": 4, **kw})


def step_eval(model, step):
    return {"step_seen": float(step)}


def weights(model):
    return {k: v.clone() for k, v in model.trainable_state_dict().items()}


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_a_finished_run_is_reused_not_retrained(tmp_path):
    exp = tiny_experiment(tmp_path / "runs")
    out = tmp_path / "run"
    first = load_or_train(exp, cfg(), out, eval_fn=step_eval)
    assert first.resumed_from_step == 0
    stamp = (out / "final.pt").stat().st_mtime_ns
    log = (out / "metrics.jsonl").read_text()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run with the same settings must not train again")

    exp.finetune = no_training
    # log/eval/checkpoint intervals and device do not change the weights: still reusable
    again = load_or_train(exp, cfg(log_every=3, eval_every=0, device="cpu"), out)
    assert again.resumed_from_step == 12
    assert (out / "final.pt").stat().st_mtime_ns == stamp
    assert (out / "metrics.jsonl").read_text() == log
    assert_same_weights(weights(first.model), weights(again.model))
    assert [h["step"] for h in again.history] == [h["step"] for h in first.history]
    # the final eval lives in final.pt, not in metrics.jsonl: it is merged back
    assert again.history[-1]["val_step_seen"] == first.history[-1]["val_step_seen"] == 12.0
    assert again.history == first.history


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (dict(alpha_target=0.05), "alpha_target"),
        (dict(lr=5e-3), "lr"),
        (dict(gradient_aware=False), "gradient_aware"),
    ],
)
def test_a_finished_run_of_other_settings_is_refused(tmp_path, change, expected):
    exp = tiny_experiment(tmp_path / "runs")
    load_or_train(exp, cfg(), tmp_path / "run")
    with pytest.raises(RunMismatchError, match=expected) as info:
        load_or_train(exp, cfg(**change), tmp_path / "run")
    assert "retrain=True" in str(info.value)


def test_other_data_or_base_model_is_refused(tmp_path):
    exp = tiny_experiment(tmp_path / "runs")
    load_or_train(exp, cfg(), tmp_path / "run")
    with pytest.raises(RunMismatchError, match="data seed"):
        load_or_train(tiny_experiment(tmp_path / "runs", data_seed=1), cfg(), tmp_path / "run")
    rebased = tiny_experiment(tmp_path / "runs", pretrain_steps=5)
    assert rebased.base_dir != exp.base_dir
    with pytest.raises(RunMismatchError, match="base model"):
        load_or_train(rebased, cfg(), tmp_path / "run")


def test_retrain_starts_over_with_the_new_settings(tmp_path):
    exp = tiny_experiment(tmp_path / "runs")
    load_or_train(exp, cfg(), tmp_path / "run")
    redone = load_or_train(exp, cfg(alpha_target=0.05), tmp_path / "run", retrain=True)
    assert redone.resumed_from_step == 0
    fresh = load_or_train(exp, cfg(alpha_target=0.05), tmp_path / "fresh")
    assert_same_weights(weights(redone.model), weights(fresh.model))
    reused = load_or_train(exp, cfg(alpha_target=0.05), tmp_path / "run")
    assert reused.resumed_from_step == 12


def test_an_interrupted_run_is_resumed_to_the_same_weights(tmp_path):
    exp = tiny_experiment(tmp_path / "runs")
    full = load_or_train(exp, cfg(), tmp_path / "full")
    load_or_train(exp, cfg(), tmp_path / "cut", stop_after=6)
    assert not (tmp_path / "cut" / "final.pt").exists()
    resumed = load_or_train(exp, cfg(), tmp_path / "cut")
    assert resumed.resumed_from_step == 6
    assert_same_weights(weights(full.model), weights(resumed.model))
    assert [h["step"] for h in read_history(tmp_path / "cut")] == [
        h["step"] for h in read_history(tmp_path / "full")
    ]


def test_read_history_of_an_empty_folder_is_empty(tmp_path):
    assert read_history(tmp_path) == []
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 3}) + "\n\n")
    assert read_history(tmp_path) == [{"step": 3}]


def _bures_scipy(x, y):
    cx, cy = np.cov(x, rowvar=False, bias=True), np.cov(y, rowvar=False, bias=True)
    root = scipy.linalg.sqrtm(cx)
    cross = np.real(scipy.linalg.sqrtm(root @ cy @ root))
    return math.sqrt(max(np.trace(cx) + np.trace(cy) - 2 * np.trace(cross), 0.0))


def test_gap_monitor_matches_independent_formulas(rng):
    image = rng.normal(size=(40, 5)) + np.array([1.0, 0, 0, 0, 0])
    text = rng.normal(size=(60, 5)) * np.array([0.5, 1, 2, 1, 1])
    emb = Embeddings.from_arrays(image, text, text_to_image=np.arange(60) % 40)
    asked = []

    class FakeExperiment:
        def embeddings(self, model, split):
            asked.append(split)
            return emb

    numbers = gap_monitor(FakeExperiment(), "val")(None, 7)
    assert asked == ["val"]
    x, y = emb.image.astype(np.float64), emb.text.astype(np.float64)
    unit_x = x / np.linalg.norm(x, axis=1, keepdims=True)
    unit_y = y / np.linalg.norm(y, axis=1, keepdims=True)
    assert numbers["raw_gap"] == pytest.approx(
        np.linalg.norm(unit_x.mean(0) - unit_y.mean(0)), rel=1e-6
    )
    assert numbers["centroid_gap"] == pytest.approx(np.linalg.norm(x.mean(0) - y.mean(0)), rel=1e-6)
    assert numbers["distribution_gap"] == pytest.approx(_bures_scipy(x, y), rel=1e-5)


def test_telemetry_summary_counts_only_aligned_measured_records():
    history = [
        {"step": 0, "alpha": 0.0},  # warm-up: no telemetry
        {"step": 1, "alpha": 0.0, "grad_cosine": 0.9},  # alpha 0: ignored
        {"step": 2, "alpha": 0.1, "grad_cosine": -0.2, "conflict": 1.0, "projected": 1.0,
         "norm_ratio": 0.5, "applied_norm_ratio": 0.4, "tempering": 1.0},
        {"step": 3, "alpha": 0.2, "grad_cosine": 0.4, "conflict": 0.0, "projected": 0.0,
         "norm_ratio": 3.0, "applied_norm_ratio": 1.0, "tempering": 0.5},
        {"step": 4, "alpha": 0.2, "grad_cosine": 0.1, "conflict": 0.0, "projected": 0.0,
         "norm_ratio": float("inf"), "applied_norm_ratio": 1.0, "tempering": 0.25,
         "lr_conflict_share": 0.5, "lr_mean_multiplier": 0.8, "lr_min_multiplier": 0.5},
        {"step": 5, "alpha": 0.2, "effective_alpha": 0.2},  # unmeasured step
    ]  # fmt: skip
    s = telemetry_summary(history)
    cosines = [-0.2, 0.4, 0.1]
    assert s["aligned_records"] == 3
    assert s["mean_grad_cosine"] == pytest.approx(sum(cosines) / 3)
    assert s["min_grad_cosine"] == pytest.approx(-0.2)
    assert s["conflict_fraction"] == pytest.approx(1 / 3)
    assert s["projected_fraction"] == pytest.approx(1 / 3)
    assert s["median_norm_ratio"] == pytest.approx(1.75)  # inf dropped: median of 0.5, 3.0
    assert s["median_applied_norm_ratio"] == pytest.approx(1.0)
    assert s["mean_tempering"] == pytest.approx((1.0 + 0.5 + 0.25) / 3)
    assert s["lr_conflict_share"] == pytest.approx(0.5)  # the one record that logged the LR rule
    assert (s["mean_lr_multiplier"], s["min_lr_multiplier"]) == pytest.approx((0.8, 0.5))
    empty = telemetry_summary([{"step": 0, "alpha": 0.0}])
    assert empty["aligned_records"] == 0 and math.isnan(empty["mean_grad_cosine"])


def test_repo_relative_never_prints_an_absolute_path(tmp_path):
    inside = repo_root() / "runs" / "finetune" / "alpha0.5-seed0" / "final.pt"
    assert repo_relative(inside) == "runs/finetune/alpha0.5-seed0/final.pt"
    outside = tmp_path / "a" / "b" / "c" / "final.pt"
    text = repo_relative(outside)
    assert text == ".../b/c/final.pt"
    assert not Path(text).is_absolute()


class _LabelledWorld:
    """A fake experiment: two models map the same labelled points differently."""

    def __init__(self, rng):
        self.class_names = ("circle", "square", "star")
        self.centres = np.eye(3, 6) * 3.0
        labels = np.arange(30) % 3
        image = self.centres[labels] + rng.normal(scale=1.5, size=(30, 6))
        text = self.centres[np.repeat(labels, 2)] + rng.normal(size=(60, 6)) + 0.5
        self.test_set = types.SimpleNamespace(
            class_names=self.class_names, prompt_templates=("a {}.", "one {}.")
        )
        self.data = types.SimpleNamespace(label="toy world")
        self.emb = Embeddings.from_arrays(
            image, text, text_to_image=np.repeat(np.arange(30), 2), image_labels=labels,
            class_names=self.class_names,
        )  # fmt: skip

    def split(self, name):
        return self.test_set

    def zero_shot_split(self):
        return self.test_set

    def embeddings(self, model, split):
        return (
            self.emb.replace(image=self.emb.image * model.scale) if model.scale != 1 else self.emb
        )

    def model(self, scale):
        centres = self.centres

        def encode_texts(texts):
            idx = [next(i for i, c in enumerate(self.class_names) if c in t) for t in texts]
            return centres[idx] / 3.0

        return types.SimpleNamespace(scale=scale, encode_texts=encode_texts)


def test_compare_models_matches_brute_force(rng):
    world = _LabelledWorld(rng)
    frame = compare_models(world, {"a": world.model(1.0), "b": world.model(-1.0)})
    assert frame.model.tolist() == ["a", "b"]
    assert set(frame.data) == {"toy world"} and set(frame.split) == {"test"}
    for name, scale in (("a", 1.0), ("b", -1.0)):
        row = frame[frame.model == name].iloc[0]
        x = world.emb.image.astype(np.float64) * scale
        y = world.emb.text.astype(np.float64)
        assert row.centroid_gap == pytest.approx(np.linalg.norm(x.mean(0) - y.mean(0)), rel=1e-6)
        assert row.distribution_gap == pytest.approx(_bures_scipy(x, y), rel=1e-5)
        correct = 0
        for i in range(30):
            scores = [x[i] @ world.centres[c] / np.linalg.norm(x[i]) for c in range(3)]
            correct += int(np.argmax(scores) == world.emb.image_labels[i])
        assert row.zero_shot_accuracy == pytest.approx(correct / 30)
        # recall@1 by brute force: the top caption of each image is one of its own
        xn = x / np.linalg.norm(x, axis=1, keepdims=True)
        yn = y / np.linalg.norm(y, axis=1, keepdims=True)
        owner = world.emb.text_to_image
        i2t = np.mean([owner[np.argmax(yn @ xn[i])] == i for i in range(30)])
        t2i = np.mean([np.argmax(xn @ yn[j]) == owner[j] for j in range(60)])
        assert row["i2t_R@1"] == pytest.approx(i2t)
        assert row["t2i_R@1"] == pytest.approx(t2i)
    assert frame.zero_shot_accuracy[0] != frame.zero_shot_accuracy[1]


def test_change_vs_is_percent_of_the_reference():
    import pandas as pd

    frame = pd.DataFrame(
        {"model": ["base", "tuned"], "raw_gap": [0.4, 0.1], "zero_shot_accuracy": [0.8, 0.76]}
    )
    change = change_vs(frame, "base", ["raw_gap", "zero_shot_accuracy"])
    assert change.model.tolist() == ["tuned"]
    assert change["raw_gap_change_%"][0] == pytest.approx(-75.0)
    assert change["zero_shot_accuracy_change_%"][0] == pytest.approx(-5.0)
    with pytest.raises(ValueError, match="model == 'nope'"):
        change_vs(frame, "nope")


def test_summarize_runs_takes_the_last_measured_gap():
    a = [
        {"step": 0, "phase": 1, "alpha": 0.0, "loss_clip": 9.0, "val_raw_gap": 0.5},
        {"step": 1, "phase": 3, "alpha": 0.1, "grad_cosine": -0.5, "conflict": 1.0,
         "loss_clip": 2.0, "val_raw_gap": 0.3},
        {"step": 2, "phase": 3, "alpha": 0.1, "grad_cosine": 0.5, "conflict": 0.0,
         "loss_clip": 1.0},
    ]  # fmt: skip
    frame = summarize_runs({"a": a, "empty": [{"step": 0, "alpha": 0.0}]})
    assert frame.run.tolist() == ["a", "empty"]
    assert frame.final_val_raw_gap[0] == pytest.approx(0.3)
    assert frame.conflict_fraction[0] == pytest.approx(0.5)
    assert math.isnan(frame.final_val_distribution_gap[0])
    assert math.isnan(frame.mean_grad_cosine[1])
    assert frame.mean_loss_clip_phase3[0] == pytest.approx(1.5)  # phase-1 loss left out
    assert math.isnan(frame.mean_loss_clip_phase3[1])
