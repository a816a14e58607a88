"""Per-tensor learning-rate tempering on gradient conflicts (tpccma_lib.training.lr_tempering)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tpccma_lib.training.lr_tempering import (
    LRTempering,
    LRTemperingConfig,
    LRTemperingError,
    param_groups,
)

SHRINK, RECOVERY, FLOOR, EVERY = 0.5, 1.25, 0.05, 10


def _params() -> list[tuple[str, torch.Tensor]]:
    """Tensor A (3,) and tensor B (2, 2)."""
    return [
        ("a", torch.zeros(3, requires_grad=True)),
        ("b", torch.zeros(2, 2, requires_grad=True)),
    ]


def _grads(conflict_on_a: bool) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Contrastive and alignment gradients: on A opposed (cos < 0) when ``conflict_on_a``,
    aligned otherwise; on B always aligned. ||g_align|| / ||g_clip|| = 0.5 everywhere."""
    clip_a = torch.tensor([1.0, 0.0, 0.0])
    align_a = torch.tensor([-0.4, 0.3, 0.0]) if conflict_on_a else torch.tensor([0.4, 0.3, 0.0])
    clip_b = torch.ones(2, 2)
    return [clip_a, clip_b], [align_a, 0.5 * clip_b]


def _tempering(**overrides) -> LRTempering:
    settings = {"shrink": SHRINK, "recovery": RECOVERY, "floor": FLOOR, "measure_every": EVERY}
    return LRTempering(_params(), LRTemperingConfig(**{**settings, **overrides}))


def _run(tempering: LRTempering, steps: range, conflict) -> list[dict]:
    out = []
    for step in steps:
        g_clip, g_align = _grads(conflict(step))
        out.append(tempering.measure(step, g_clip, g_align))
    return out


# --------------------------------------------------------------------------- the rule
def test_conflicting_tensor_shrinks_and_the_other_does_not():
    tempering = _tempering()
    telemetry = _run(tempering, range(31), lambda step: True)  # measurements at 0, 10, 20, 30
    m = tempering.multipliers()
    assert m[0] == pytest.approx(max(SHRINK**4, FLOOR)) and m[1] == 1.0
    assert tempering.measurements == 4
    assert list(tempering.conflict_counts) == [4, 0]
    measured = [t for t in telemetry if t["measured"]]
    assert [t["step"] for t in measured] == [0, 10, 20, 30]
    for k, t in enumerate(measured, start=1):
        assert t["conflict_share"] == 0.5 and t["direction_conflict_share"] == 0.5
        assert t["norm_conflict_share"] == 0.0
        assert t["min_multiplier"] == pytest.approx(SHRINK**k)
        assert t["mean_multiplier"] == pytest.approx((SHRINK**k + 1.0) / 2)
    assert tempering.last_cosines[0] == pytest.approx(-0.8)  # <(1,0,0), (-.4,.3,0)> / 0.5
    assert tempering.last_cosines[1] == pytest.approx(1.0)
    np.testing.assert_allclose(tempering.last_norm_ratios, [0.5, 0.5])


def test_non_measurement_steps_change_nothing():
    tempering = _tempering()
    tempering.measure(0, *_grads(True))
    before = tempering.multipliers()
    for step in range(1, EVERY):
        telemetry = tempering.measure(step, [None, None], [None, None])  # gradients not read
        assert not telemetry["measured"] and math.isnan(telemetry["conflict_share"])
        assert telemetry["min_multiplier"] == SHRINK
    np.testing.assert_array_equal(tempering.multipliers(), before)
    assert tempering.measurements == 1
    assert [tempering.is_measurement_step(s) for s in (0, 5, 10, 25, 30)] == [
        True,
        False,
        True,
        False,
        True,
    ]


def test_recovery_after_the_conflict_ends():
    tempering = _tempering()
    _run(tempering, range(30), lambda step: True)  # 3 conflicts: 0.125
    assert tempering.multipliers()[0] == pytest.approx(SHRINK**3)
    history = []
    for n, step in enumerate(range(30, 150, EVERY), start=1):
        tempering.measure(step, *_grads(False))
        history.append(tempering.multipliers()[0])
        assert history[-1] == pytest.approx(min(SHRINK**3 * RECOVERY**n, 1.0))
    first_back = math.ceil(math.log(1 / SHRINK**3) / math.log(RECOVERY))  # 10 measurements
    assert history[first_back - 2] < 1.0 and history[first_back - 1] == 1.0
    assert tempering.multipliers()[1] == 1.0


def test_rate_steps_make_the_interval_a_cost_setting_not_a_strength():
    """With rate_steps = 20, 40 steps of conflict then 40 clean ones leave the same multiplier
    whether the rule measures every step, every 5th or every 20th: shrink**2 * recovery**2
    (closed form), where per-measurement factors would give shrink**40 (at the floor)."""
    ends, conflicted = [], []
    for every in (1, 5, 20):
        tempering = _tempering(measure_every=every, rate_steps=20, floor=1e-3)
        shrink, recovery = tempering.config.factors()
        assert shrink == pytest.approx(SHRINK ** (every / 20))
        assert recovery == pytest.approx(RECOVERY ** (every / 20))
        _run(tempering, range(40), lambda step: True)
        conflicted.append(tempering.multipliers()[0])
        _run(tempering, range(40, 80), lambda step: False)
        ends.append(tempering.multipliers()[0])
        assert tempering.multipliers()[1] == 1.0
    np.testing.assert_allclose(conflicted, [SHRINK**2] * 3, rtol=1e-9)
    np.testing.assert_allclose(ends, [SHRINK**2 * RECOVERY**2] * 3, rtol=1e-9)
    per_measurement = _tempering(measure_every=1, floor=1e-3)  # rate_steps None: the old rule
    assert per_measurement.config.factors() == (SHRINK, RECOVERY)
    _run(per_measurement, range(40), lambda step: True)
    assert per_measurement.multipliers()[0] == 1e-3  # 0.5**40, held at the floor
    for bad in (0, 2.5, True):
        with pytest.raises(LRTemperingError, match="rate_steps"):
            LRTemperingConfig(rate_steps=bad)


def test_floor_holds_under_a_long_conflict():
    tempering = _tempering()
    for k in range(1, 51):
        tempering.measure(k * EVERY, *_grads(True))
        assert tempering.multipliers()[0] == pytest.approx(max(SHRINK**k, FLOOR))
    assert tempering.multipliers()[0] == FLOOR
    assert tempering.measure(51 * EVERY, *_grads(True))["n_at_floor"] == 1
    # recovery from the floor: n clean measurements give min(floor * recovery**n, 1)
    for n in range(1, 4):
        tempering.measure((51 + n) * EVERY, *_grads(False))
        assert tempering.multipliers()[0] == pytest.approx(FLOOR * RECOVERY**n)


def test_norm_rule_and_zero_or_missing_gradients():
    tempering = _tempering()
    clip = [torch.tensor([1.0, 0.0, 0.0]), torch.ones(2, 2)]
    # same direction, but ||g_align|| = 2 ||g_clip|| on A: a norm problem
    tempering.measure(0, clip, [torch.tensor([2.0, 0.0, 0.0]), 0.5 * torch.ones(2, 2)])
    assert list(tempering.multipliers()) == [SHRINK, 1.0]
    assert list(tempering.last_problems) == [True, False]
    # align_weight scales g_align for the norm rule: 0.5 * 4 = 2 > max_norm_ratio on B
    telemetry = tempering.measure(10, clip, [0.5 * c for c in clip], align_weight=4.0)
    assert telemetry["norm_conflict_share"] == 1.0 and telemetry["direction_conflict_share"] == 0
    # no contrastive gradient (zero or None) or no alignment gradient: nothing to protect
    tempering = _tempering()
    tempering.measure(0, [torch.zeros(3), None], [torch.tensor([5.0, 0, 0]), torch.ones(2, 2)])
    assert list(tempering.multipliers()) == [1.0, 1.0]
    assert tempering.last_norm_ratios[0] == math.inf and tempering.last_cosines[0] == 0.0
    tempering.measure(10, clip, [None, None])
    assert list(tempering.multipliers()) == [1.0, 1.0]
    # math.inf switches the norm rule off
    no_cap = _tempering(max_norm_ratio=math.inf)
    no_cap.measure(0, clip, [100.0 * c for c in clip])
    assert list(no_cap.multipliers()) == [1.0, 1.0]


def test_non_finite_gradients_leave_the_state_alone():
    tempering = _tempering()
    tempering.measure(0, *_grads(True))
    g_clip, g_align = _grads(True)
    g_align[1] = torch.full((2, 2), float("inf"))
    telemetry = tempering.measure(10, g_clip, g_align)
    assert telemetry["measured"] and math.isnan(telemetry["conflict_share"])
    assert list(tempering.multipliers()) == [SHRINK, 1.0] and tempering.measurements == 1


# --------------------------------------------------------------------------- resume
def _conflict_pattern(step: int) -> bool:
    return (step // EVERY) % 4 != 3  # three measurements in conflict, one clean, repeat


def test_exact_resume_through_state_dict():
    straight = _tempering()
    _run(straight, range(30), _conflict_pattern)
    first = _tempering()
    _run(first, range(15), _conflict_pattern)
    state = json.loads(json.dumps(first.state_dict()))  # as a checkpoint would store it
    resumed = _tempering()
    resumed.load_state_dict(state)
    _run(resumed, range(15, 30), _conflict_pattern)
    np.testing.assert_array_equal(resumed.multipliers(), straight.multipliers())
    np.testing.assert_array_equal(resumed.conflict_counts, straight.conflict_counts)
    assert resumed.measurements == straight.measurements == 3
    assert resumed.last_step == straight.last_step == 29
    assert resumed.state_dict() == straight.state_dict()
    # longer: identical over many measurements with recoveries in between
    long_straight, long_first = _tempering(), _tempering()
    _run(long_straight, range(200), _conflict_pattern)
    _run(long_first, range(95), _conflict_pattern)
    long_resumed = _tempering()
    long_resumed.load_state_dict(long_first.state_dict())
    _run(long_resumed, range(95, 200), _conflict_pattern)
    assert long_resumed.state_dict() == long_straight.state_dict()


def test_load_state_dict_refuses_other_states():
    state = _tempering().state_dict()
    three = LRTempering([torch.zeros(3), torch.zeros(2, 2), torch.zeros(1)])
    with pytest.raises(LRTemperingError, match="holds 2 tensors, this object 3"):
        three.load_state_dict(state)
    renamed = LRTempering([("a", torch.zeros(3)), ("c", torch.zeros(2, 2))], _tempering().config)
    with pytest.raises(LRTemperingError, match="names differ"):
        renamed.load_state_dict(state)
    with pytest.raises(LRTemperingError, match=r"other settings \(\['shrink'\]\)"):
        _tempering(shrink=0.7).load_state_dict(state)
    with pytest.raises(LRTemperingError, match="not an LR-tempering state"):
        _tempering().load_state_dict({"tempering": 1.0})
    bad = dict(state, multipliers=[0.01, 1.0])
    with pytest.raises(LRTemperingError, match="outside"):
        _tempering().load_state_dict(bad)


# --------------------------------------------------------------------------- optimiser
def test_param_groups_and_apply_set_group_lrs():
    params = _params()
    groups = param_groups(params, weight_decay=0.1)
    assert [g["name"] for g in groups] == ["a", "b"]
    assert all(len(g["params"]) == 1 and g["weight_decay"] == 0.1 for g in groups)
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    tempering = LRTempering(params, LRTemperingConfig(shrink=SHRINK, measure_every=1))
    tempering.measure(0, *_grads(True))
    tempering.apply(optimizer, 2e-3)
    assert [g["lr"] for g in optimizer.param_groups] == [pytest.approx(1e-3), 2e-3]
    tempering.apply(optimizer, [1e-2, 3e-3])  # one base per group
    assert [g["lr"] for g in optimizer.param_groups] == [pytest.approx(5e-3), 3e-3]
    # one group of both tensors (a layer group): the smaller multiplier
    shared = torch.optim.AdamW([p for _, p in params], lr=1.0)
    tempering.apply(shared, 1.0)
    assert shared.param_groups[0]["lr"] == SHRINK
    with pytest.raises(LRTemperingError, match="holds 1 of the 2 tracked tensors"):
        tempering.apply(torch.optim.AdamW([params[0][1]], lr=1.0), 1.0)
    with pytest.raises(LRTemperingError, match="2 base learning rates for 1"):
        tempering.apply(shared, [1.0, 2.0])


def _descend(tempered: bool, steps: int = 60, base_lr: float = 0.01) -> dict[str, np.ndarray]:
    """AdamW on L_clip = ||a - 1||^2 + ||b - 1||^2 and L_align = 0.5 (||a + 1||^2 + ||b - 1||^2)
    from a = b = 0: on a the two losses pull apart (cosine -1), on b the same way (cosine 1,
    norm ratio 0.5). Returns per-step |delta a|_inf, |delta b|_inf and A's multiplier in force
    for each step."""
    torch.manual_seed(0)
    a = torch.zeros(4, requires_grad=True)
    b = torch.zeros(4, requires_grad=True)
    optimizer = torch.optim.AdamW(param_groups([("a", a), ("b", b)], 0.0), lr=base_lr)
    tempering = LRTempering([("a", a), ("b", b)], LRTemperingConfig(measure_every=5))
    out: dict[str, list[float]] = {"da": [], "db": [], "m_a": []}
    for step in range(steps):
        clip = ((a - 1) ** 2).sum() + ((b - 1) ** 2).sum()
        align = 0.5 * (((a + 1) ** 2).sum() + ((b - 1) ** 2).sum())
        g_clip = torch.autograd.grad(clip, [a, b])
        g_align = torch.autograd.grad(align, [a, b])
        if tempered:
            tempering.measure(step, list(g_clip), list(g_align))
            tempering.apply(optimizer, base_lr)
        out["m_a"].append(float(tempering.multipliers()[0]))
        before = a.detach().clone(), b.detach().clone()
        a.grad, b.grad = g_clip[0] + g_align[0], g_clip[1] + g_align[1]
        optimizer.step()
        out["da"].append(float((a.detach() - before[0]).abs().max()))
        out["db"].append(float((b.detach() - before[1]).abs().max()))
    return {k: np.asarray(v) for k, v in out.items()}


def test_real_optimisation_slows_only_the_conflicting_tensor():
    tempered, plain = _descend(True), _descend(False)
    slowed = tempered["m_a"] < 1.0
    assert slowed.sum() >= 40  # the conflict persists: A stays tempered most of the run
    assert np.all(plain["m_a"] == 1.0)
    # A's step shrinks with its multiplier; B moves as in the untempered run
    assert np.all(tempered["da"][slowed] < tempered["db"][slowed])
    np.testing.assert_allclose(tempered["db"], plain["db"], rtol=1e-6)
    # Adam's step is about lr per coordinate while a gradient keeps its sign, so A moves
    # lr * m_A per step; early on (both runs far from their minima) that is m_A x the plain step
    np.testing.assert_allclose(
        tempered["da"][slowed] / (0.01 * tempered["m_a"][slowed]), 1.0, atol=0.06
    )
    early = slice(0, 10)
    np.testing.assert_allclose(
        tempered["da"][early] / plain["da"][early], tempered["m_a"][early], rtol=0.05
    )
    assert tempered["da"][slowed].sum() < 0.3 * plain["da"][slowed].sum()


# --------------------------------------------------------------------------- validation
def test_config_and_input_errors():
    for kwargs, pattern in [
        ({"conflict_threshold": 1.5}, "cosine and must lie in"),
        ({"max_norm_ratio": 0.0}, "max_norm_ratio must be > 0"),
        ({"shrink": 0.0}, r"shrink must lie in \(0, 1\]"),
        ({"recovery": 0.9}, "recovery must be a finite number >= 1"),
        ({"floor": 0.0}, r"floor must lie in \(0, 1\]"),
        ({"measure_every": 0}, "measure_every must be an int >= 1"),
        ({"shrink": math.nan}, "shrink must be a number"),
    ]:
        with pytest.raises(LRTemperingError, match=pattern):
            LRTemperingConfig(**kwargs)
    assert issubclass(LRTemperingError, ValueError)
    with pytest.raises(LRTemperingError, match="no parameters"):
        LRTempering([])
    with pytest.raises(LRTemperingError, match="listed twice"):
        p = torch.zeros(2)
        LRTempering([p, p])
    with pytest.raises(LRTemperingError, match="pass tensors or"):
        LRTempering([np.zeros(2)])  # type: ignore[list-item]
    tempering = _tempering()
    with pytest.raises(LRTemperingError, match="got 1 contrastive and 2 alignment"):
        tempering.measure(0, [None], [None, None])
    with pytest.raises(LRTemperingError, match=r"has shape \(2,\), the tensor \(3,\)"):
        tempering.measure(0, [torch.zeros(2), None], [None, None])
    with pytest.raises(LRTemperingError, match="step must be an int >= 0"):
        tempering.measure(-1, [None, None], [None, None])
    with pytest.raises(LRTemperingError, match="weight_decay must be finite"):
        param_groups(_params(), -0.1)
