"""The training loop: exact resume, clear errors, the curriculum reaches the model."""

import json
import types

import numpy as np
import pytest
import torch

from tpccma_lib.models import ModelConfig, ModelError, create_model
from tpccma_lib.training.loop import InputSource, PairBatcher, TrainConfig, TrainError, train


def synthetic_inputs(n_images=48, per=2, seed=0):
    """Random 'tower features' with a shared latent so pairs are learnable."""
    g = torch.Generator().manual_seed(seed)
    latent = torch.randn(n_images, 16, generator=g)
    img = torch.relu(latent @ torch.randn(16, 1280, generator=g)) + 0.5
    t2i = np.repeat(np.arange(n_images), per)
    txt = latent[t2i] @ torch.randn(16, 384, generator=g) + 0.1 * torch.randn(
        n_images * per, 384, generator=g
    )
    return InputSource.from_frozen(types.SimpleNamespace(image=img, text=txt, text_to_image=t2i))


def small_cfg(**kw):
    base = dict(
        steps=12,
        batch_size=16,
        lr=1e-2,
        warmup_steps=2,
        checkpoint_every=4,
        log_every=2,
        alpha_target=0.5,
        warmup_fraction=0.25,
        ramp_fraction=0.25,
    )
    base.update(kw)
    return TrainConfig(**base)


def fresh():
    return create_model(ModelConfig(embed_dim=8, init_seed=0))


def test_batches_are_a_pure_function_of_step():
    t2i = np.repeat(np.arange(10), 3)
    a, b = PairBatcher(t2i, 10, 4, seed=1), PairBatcher(t2i, 10, 4, seed=1)
    for step in (0, 1, 5, 17):
        np.testing.assert_array_equal(a.batch(step)[0], b.batch(step)[0])
        imgs, caps = a.batch(step)
        np.testing.assert_array_equal(t2i[caps], imgs)  # each caption describes its image
    epoch0 = np.concatenate([a.batch(s)[0] for s in range(a.steps_per_epoch)])
    assert len(set(epoch0.tolist())) == len(epoch0)  # no image twice in an epoch


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path):
    data = synthetic_inputs()
    full = train(fresh(), data, small_cfg(), tmp_path / "full", progress=False)
    partial = train(fresh(), data, small_cfg(), tmp_path / "resumed", progress=False, stop_after=6)
    assert not (tmp_path / "resumed" / "final.pt").exists()
    assert partial.resumed_from_step == 0
    resumed = train(fresh(), data, small_cfg(), tmp_path / "resumed", progress=False)
    assert resumed.resumed_from_step == 6
    for (name, a), b in zip(
        full.model.trainable_state_dict().items(),
        resumed.model.trainable_state_dict().values(),
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    steps = [
        json.loads(line)["step"]
        for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == sorted(set(steps))  # no duplicated log lines after the resume


def test_resume_with_changed_config_is_refused(tmp_path):
    data = synthetic_inputs()
    train(fresh(), data, small_cfg(), tmp_path, progress=False, stop_after=4)
    with pytest.raises(TrainError, match="alpha_target: 0.5 -> 0.05"):
        train(fresh(), data, small_cfg(alpha_target=0.05), tmp_path, progress=False)
    with pytest.raises(ModelError, match="another model"):
        train(create_model(ModelConfig(embed_dim=16)), data, small_cfg(), tmp_path, progress=False)
    # resume=False starts over instead
    result = train(
        fresh(), data, small_cfg(alpha_target=0.05), tmp_path, progress=False, resume=False
    )
    assert result.resumed_from_step == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"alpha_target": 1.5}, "alpha_target must lie in"),
        ({"alpha_target": -0.1}, "alpha_target must lie in"),
        ({"warmup_fraction": 0.7, "ramp_fraction": 0.5}, "exceeds 1"),
        ({"ramp_shape": "step"}, "ramp_shape"),
        ({"steps": 0}, "steps"),
        ({"batch_size": 2}, "batch_size"),
        ({"amp": "fp8"}, "amp"),
    ],
)
def test_bad_settings_are_clear(kwargs, message):
    with pytest.raises(TrainError, match=message):
        small_cfg(**kwargs)


def test_alpha_follows_the_curriculum_and_closes_the_batch_gap(tmp_path):
    data = synthetic_inputs(n_images=64)
    cfg = small_cfg(steps=40, batch_size=32, log_every=1, alpha_target=1.0, lr=5e-3)
    result = train(fresh(), data, cfg, tmp_path / "a", progress=False)
    alphas = [h["alpha"] for h in result.history]
    assert alphas[0] == 0.0 and alphas[-1] == 1.0
    assert all(b >= a for a, b in zip(alphas, alphas[1:], strict=False))
    assert {h["phase"] for h in result.history} == {1, 2, 3}
    aligned = [h for h in result.history if h["alpha"] > 0]
    assert all("loss_cma" in h for h in aligned)
    # the scheduler measures the two gradients on steps step % measure_every == 0 only
    measured = [h for h in aligned if h["step"] % cfg.measure_every == 0]
    assert measured and all("grad_cosine" in h for h in measured)
    assert not any("grad_cosine" in h for h in aligned if h["step"] % cfg.measure_every)
    contrastive = train(
        fresh(),
        data,
        small_cfg(steps=40, batch_size=32, log_every=1, alpha_target=0.0, lr=5e-3),
        tmp_path / "b",
        progress=False,
    )
    assert result.history[-1]["batch_gap"] < contrastive.history[-1]["batch_gap"]


def test_final_checkpoint_records_settings(tmp_path):
    result = train(
        fresh(),
        synthetic_inputs(),
        small_cfg(),
        tmp_path,
        progress=False,
        extra_checkpoint={"data_config": {"dataset": "synthetic"}},
    )
    payload = torch.load(result.final_checkpoint, weights_only=False)
    assert payload["train_config"]["alpha_target"] == 0.5
    assert payload["model_config"]["embed_dim"] == 8
    assert payload["data_config"] == {"dataset": "synthetic"}


def test_no_trainable_parameters_is_an_error(tmp_path):
    model = fresh().requires_grad_(False)
    with pytest.raises(TrainError, match="no trainable parameters"):
        train(model, synthetic_inputs(), small_cfg(), tmp_path, progress=False)


# --------------------------------------------------------------------------- finished runs
def _same_weights(a, b):
    for (name, x), y in zip(
        a.trainable_state_dict().items(), b.trainable_state_dict().values(), strict=True
    ):
        torch.testing.assert_close(x, y, rtol=0, atol=0, msg=name)


def test_a_finished_run_keeps_only_final_pt_unless_asked(tmp_path):
    data = synthetic_inputs()
    dropped = train(fresh(), data, small_cfg(), tmp_path / "drop", progress=False)
    kept = train(
        fresh(), data, small_cfg(), tmp_path / "keep", progress=False, keep_checkpoint=True
    )
    assert not (tmp_path / "drop" / "checkpoint.pt").exists()
    assert (tmp_path / "drop" / "final.pt").exists()
    assert torch.load(tmp_path / "keep" / "checkpoint.pt", weights_only=False)["step"] == 12
    # keeping or dropping the optimizer state changes neither the weights nor the log
    _same_weights(dropped.model, kept.model)
    log = (tmp_path / "drop" / "metrics.jsonl").read_text()
    assert log == (tmp_path / "keep" / "metrics.jsonl").read_text() and log
    assert dropped.history == kept.history
    # an interrupted run keeps its checkpoint: it is what the resume reads
    train(fresh(), data, small_cfg(), tmp_path / "cut", progress=False, stop_after=6)
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=False)["step"] == 6


def test_rerunning_a_finished_run_returns_it_without_training(tmp_path):
    data = synthetic_inputs()
    calls = []

    def eval_fn(model, step):
        calls.append(step)
        return {"step_seen": float(step)}

    cfg = small_cfg(eval_every=4)
    first = train(fresh(), data, cfg, tmp_path, progress=False, eval_fn=eval_fn)
    assert not (tmp_path / "checkpoint.pt").exists()
    payload = torch.load(first.final_checkpoint, weights_only=False)
    assert payload["fingerprint"]["train_config"]["alpha_target"] == 0.5
    stamp = first.final_checkpoint.stat().st_mtime_ns
    log = (tmp_path / "metrics.jsonl").read_text()
    n_calls = len(calls)
    again = train(fresh(), data, small_cfg(eval_every=0, log_every=3), tmp_path, progress=False,
                  eval_fn=eval_fn)  # fmt: skip
    assert again.resumed_from_step == cfg.steps
    assert len(calls) == n_calls  # nothing evaluated, nothing trained
    assert first.final_checkpoint.stat().st_mtime_ns == stamp
    assert (tmp_path / "metrics.jsonl").read_text() == log
    _same_weights(first.model, again.model)
    assert again.history == first.history  # the final eval merged back from final.pt
    assert again.history[-1]["val_step_seen"] == 12.0


def test_rerunning_a_finished_run_with_other_settings_is_refused(tmp_path):
    data = synthetic_inputs()
    train(fresh(), data, small_cfg(), tmp_path, progress=False)
    stamp = (tmp_path / "final.pt").stat().st_mtime_ns
    with pytest.raises(TrainError, match=r"final\.pt: the settings changed.*alpha_target: 0.5"):
        train(fresh(), data, small_cfg(alpha_target=0.05), tmp_path, progress=False)
    with pytest.raises(TrainError, match="data n_images: 48 -> 40"):
        train(fresh(), synthetic_inputs(40), small_cfg(), tmp_path, progress=False)
    assert (tmp_path / "final.pt").stat().st_mtime_ns == stamp
    redone = train(fresh(), data, small_cfg(alpha_target=0.05), tmp_path, progress=False,
                   resume=False)  # fmt: skip
    assert redone.resumed_from_step == 0


def test_starting_over_then_interrupted_resumes_not_refused(tmp_path):
    data = synthetic_inputs()
    train(fresh(), data, small_cfg(), tmp_path, progress=False)
    other = small_cfg(alpha_target=0.05)
    train(fresh(), data, other, tmp_path, progress=False, resume=False, stop_after=4)
    assert not (tmp_path / "final.pt").exists()  # the old run's final.pt went with its log
    resumed = train(fresh(), data, other, tmp_path, progress=False)
    assert resumed.resumed_from_step == 4
