"""conflict_rule="lr": the paper's scheduler inside the trainer (per-tensor learning rates)."""

import json

import pytest
import torch

from tests.test_train import fresh, small_cfg, synthetic_inputs
from tpccma_lib.training.loop import LR_RULE_RATE_STEPS, _Setup, lr_tempering_config, train


def _log(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_one_parameter_group_per_tensor_and_multipliers_applied():
    model = fresh()
    cfg = small_cfg(conflict_rule="lr", measure_every=1)
    run = _Setup.of(model, synthetic_inputs(), cfg)
    tempering = run.objective.lr_tempering
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert tempering is not None and list(tempering.names) == trainable
    assert len(run.optimizer.param_groups) == len(trainable)
    assert tempering.config == lr_tempering_config(cfg)
    assert tempering.config.rate_steps == LR_RULE_RATE_STEPS == 20  # shrink per 20 steps
    assert tempering.config.factors()[0] == pytest.approx(cfg.conflict_shrink ** (1 / 20))
    tempering._multipliers[:] = 1.0
    tempering._multipliers[0] = 0.25  # as if the first tensor had conflicted twice
    run.objective.set_lr(run.optimizer, 1e-2)
    lrs = [group["lr"] for group in run.optimizer.param_groups]
    assert lrs[0] == 0.25e-2 and all(lr == 1e-2 for lr in lrs[1:])


def test_other_rules_keep_one_group():
    run = _Setup.of(fresh(), synthetic_inputs(), small_cfg(conflict_rule="pcgrad"))
    assert run.objective.lr_tempering is None and len(run.optimizer.param_groups) == 1
    ablation = small_cfg(conflict_rule="lr", gradient_aware=False)
    run = _Setup.of(fresh(), synthetic_inputs(), ablation)
    assert run.objective.lr_tempering is None  # the ablation switch turns the rule off


def test_the_rule_moves_learning_rates_and_logs_telemetry(tmp_path):
    cfg = small_cfg(conflict_rule="lr", measure_every=1, log_every=1, max_norm_ratio=0.05)
    result = train(fresh(), synthetic_inputs(), cfg, tmp_path, progress=False)
    records = [r for r in _log(tmp_path) if r["alpha"] > 0]
    assert records, "phase 3 never reached"
    for r in records:
        assert 0.0 <= r["lr_conflict_share"] <= 1.0
        assert cfg.min_tempering <= r["lr_min_multiplier"] <= r["lr_mean_multiplier"] <= 1.0
    # a tight norm cap (0.05) makes tensors conflict, so some learning rate went down
    assert max(r["lr_conflict_share"] for r in records) > 0
    assert min(r["lr_min_multiplier"] for r in records) < 1.0
    assert result.history[-1]["step"] == cfg.steps - 1


def test_rule_lr_changes_the_weights_against_plain_sum(tmp_path):
    """With a binding rule the run differs from the ablation (no scheduler) run."""
    data = synthetic_inputs()
    rule = small_cfg(conflict_rule="lr", measure_every=1, max_norm_ratio=0.05)
    plain = small_cfg(
        conflict_rule="lr", measure_every=1, max_norm_ratio=0.05, gradient_aware=False
    )
    a = train(fresh(), data, rule, tmp_path / "a", progress=False).model.trainable_state_dict()
    b = train(fresh(), data, plain, tmp_path / "b", progress=False).model.trainable_state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_interrupted_lr_rule_run_resumes_exactly(tmp_path):
    data = synthetic_inputs()
    cfg = small_cfg(conflict_rule="lr", measure_every=2, max_norm_ratio=0.05)
    full = train(fresh(), data, cfg, tmp_path / "full", progress=False)
    train(fresh(), data, cfg, tmp_path / "resumed", progress=False, stop_after=8)
    payload = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=False)
    assert "lr_tempering" in payload["scheduler"]  # the multipliers travel with the checkpoint
    resumed = train(fresh(), data, cfg, tmp_path / "resumed", progress=False)
    assert resumed.resumed_from_step == 8
    for name, tensor in full.model.trainable_state_dict().items():
        torch.testing.assert_close(
            resumed.model.trainable_state_dict()[name], tensor, rtol=0, atol=0, msg=name
        )
