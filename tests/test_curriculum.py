"""Tests of tpccma_lib.training.curriculum: the alpha schedule and the gradient-aware scheduler."""

from __future__ import annotations

import io
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tpccma_lib.training.curriculum import (
    TELEMETRY_KEYS,
    CurriculumConfig,
    CurriculumError,
    GradientAwareScheduler,
    alpha_at,
    alpha_schedule,
    phase_at,
    phase_boundaries,
)

torch.set_num_threads(1)


def _cfg(**kw) -> CurriculumConfig:
    return CurriculumConfig(**kw)


def _flat(grads) -> np.ndarray:
    return np.concatenate([np.asarray(g, dtype=np.float64).ravel() for g in grads])


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _tensors(*arrays) -> list[torch.Tensor]:
    return [torch.tensor(a, dtype=torch.float64) for a in arrays]


# ---------------------------------------------------------------------- config
def test_config_round_trip_through_dict():
    cfg = _cfg(alpha_target=0.5, ramp_shape="linear", rule="scale", measure_every=3, recovery=1.2)
    d = cfg.to_dict()
    assert d["alpha_target"] == 0.5 and d["rule"] == "scale"
    assert CurriculumConfig.from_dict(d) == cfg


def test_config_from_dict_rejects_unknown_keys():
    with pytest.raises(CurriculumError, match="unknown CurriculumConfig keys"):
        CurriculumConfig.from_dict({"alpha_target": 0.1, "alpha_tagret": 0.2})


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"alpha_target": -0.1}, "alpha_target must lie in"),
        ({"alpha_target": 1.5}, "alpha_target must lie in"),
        ({"alpha_target": math.nan}, "finite"),
        ({"warmup_fraction": -0.1}, "warmup_fraction must lie in"),
        ({"ramp_fraction": 1.2}, "ramp_fraction must lie in"),
        ({"warmup_fraction": 0.6, "ramp_fraction": 0.5}, "exceeds 1"),
        ({"ramp_shape": "exp"}, "ramp_shape must be one of"),
        ({"rule": "gradnorm"}, "rule must be one of"),
        ({"measure_every": 0}, "measure_every must be >= 1"),
        ({"measure_every": 2.0}, "measure_every must be an int"),
        ({"conflict_threshold": 1.5}, "conflict_threshold"),
        ({"max_norm_ratio": 0.0}, "max_norm_ratio must be > 0"),
        ({"max_norm_ratio": math.nan}, "max_norm_ratio must be a number"),
        ({"recovery": 0.9}, "recovery must be >= 1"),
        ({"conflict_shrink": 0.0}, "conflict_shrink"),
        ({"min_tempering": 0.0}, "min_tempering"),
        ({"gradient_aware": "yes"}, "gradient_aware"),
    ],
)
def test_config_errors(kw, message):
    with pytest.raises(CurriculumError, match=message):
        _cfg(**kw)


def test_config_error_is_a_value_error():
    with pytest.raises(ValueError):
        _cfg(alpha_target=2.0)


def test_config_accepts_the_edges():
    _cfg(alpha_target=0.0, warmup_fraction=0.0, ramp_fraction=0.0)
    _cfg(alpha_target=1.0, warmup_fraction=0.7, ramp_fraction=0.3, max_norm_ratio=math.inf)


# ---------------------------------------------------------------------- alpha schedule
def test_phases_and_linear_alpha_exact_values():
    cfg = _cfg(alpha_target=0.6, warmup_fraction=0.2, ramp_fraction=0.3, ramp_shape="linear")
    phases = [phase_at(s, 10, cfg) for s in range(10)]
    assert phases == [1, 1, 2, 2, 2, 3, 3, 3, 3, 3]
    alphas = [alpha_at(s, 10, cfg) for s in range(10)]
    expected = [0, 0, 0, 0.6 / 3, 0.6 * 2 / 3, 0.6, 0.6, 0.6, 0.6, 0.6]
    np.testing.assert_allclose(alphas, expected, rtol=0, atol=1e-15)
    assert alphas[5] == 0.6  # exactly alpha_target in phase 3


def test_cosine_alpha_exact_values():
    cfg = _cfg(alpha_target=0.4, warmup_fraction=0.2, ramp_fraction=0.3, ramp_shape="cosine")
    alphas = [alpha_at(s, 10, cfg) for s in range(10)]
    # (1 - cos(pi p)) / 2 at p = 0, 1/3, 2/3 is 0, 1/4, 3/4
    np.testing.assert_allclose(alphas[:6], [0, 0, 0, 0.1, 0.3, 0.4], rtol=0, atol=1e-15)


def test_ramp_with_fractional_boundaries():
    # w T = 1.75, (w + r) T = 5.25: phase 2 = steps 2..5, ramp evaluated in real time
    cfg = _cfg(alpha_target=1.0, warmup_fraction=0.25, ramp_fraction=0.5, ramp_shape="linear")
    assert phase_boundaries(7, cfg) == (2, 6)
    assert [phase_at(s, 7, cfg) for s in range(7)] == [1, 1, 2, 2, 2, 2, 3]
    for step in range(2, 6):
        assert alpha_at(step, 7, cfg) == pytest.approx((step - 1.75) / 3.5, abs=1e-15)


def test_boundaries_are_robust_to_float_products():
    # 0.29 * 100 = 28.999999999999996 in floating point; the boundary is still step 29
    cfg = _cfg(alpha_target=0.5, warmup_fraction=0.29, ramp_fraction=0.01)
    assert phase_at(28, 100, cfg) == 1
    assert phase_at(29, 100, cfg) == 2
    assert phase_at(30, 100, cfg) == 3


def test_empty_ramp_jumps_to_target_and_empty_phase_3():
    jump = _cfg(alpha_target=0.3, warmup_fraction=0.5, ramp_fraction=0.0)
    assert [alpha_at(s, 4, jump) for s in range(4)] == [0.0, 0.0, 0.3, 0.3]
    assert {phase_at(s, 4, jump) for s in range(4)} == {1, 3}
    no_plateau = _cfg(alpha_target=0.3, warmup_fraction=0.0, ramp_fraction=1.0, ramp_shape="linear")
    assert [phase_at(s, 4, no_plateau) for s in range(4)] == [2, 2, 2, 2]
    np.testing.assert_allclose(alpha_schedule(4, no_plateau), [0, 0.075, 0.15, 0.225], atol=1e-15)


def test_alpha_target_zero_gives_all_zeros():
    for shape in ("linear", "cosine"):
        cfg = _cfg(alpha_target=0.0, ramp_shape=shape)
        schedule = alpha_schedule(57, cfg)
        assert schedule.shape == (57,)
        assert not schedule.any()


def test_alpha_schedule_matches_alpha_at():
    cfg = _cfg(alpha_target=0.5, warmup_fraction=0.1, ramp_fraction=0.4)
    schedule = alpha_schedule(33, cfg)
    assert schedule.dtype == np.float64
    assert schedule.tolist() == [alpha_at(s, 33, cfg) for s in range(33)]


@pytest.mark.parametrize("step", [-1, 10])
def test_step_out_of_range(step):
    with pytest.raises(CurriculumError, match="step must lie in"):
        alpha_at(step, 10, _cfg())
    with pytest.raises(CurriculumError, match="step must lie in"):
        phase_at(step, 10, _cfg())


def test_total_steps_must_be_positive():
    with pytest.raises(CurriculumError, match="total_steps must be >= 1"):
        alpha_schedule(0, _cfg())


hundredths = st.integers(0, 100).map(lambda k: k / 100)


@settings(max_examples=150, deadline=None)
@given(
    warmup=hundredths,
    ramp=hundredths,
    target=hundredths,
    total=st.integers(1, 120),
    shape=st.sampled_from(["linear", "cosine"]),
)
def test_schedule_properties(warmup, ramp, target, total, shape):
    if warmup + ramp > 1:
        ramp = 1 - warmup
    cfg = _cfg(alpha_target=target, warmup_fraction=warmup, ramp_fraction=ramp, ramp_shape=shape)
    schedule = alpha_schedule(total, cfg)
    assert np.all(np.diff(schedule) >= 0)  # monotone non-decreasing
    assert np.all((schedule >= 0) & (schedule <= target))
    # phases against exact rational arithmetic: phase 1 iff step/T < w, phase 3 iff >= w + r
    w, r = Fraction(str(warmup)), Fraction(str(ramp))
    for step in range(total):
        t = Fraction(step, total)
        expected = 1 if t < w else (2 if t < w + r else 3)
        assert phase_at(step, total, cfg) == expected
        if expected == 1:
            assert schedule[step] == 0.0
        if expected == 3:
            assert schedule[step] == target


# ---------------------------------------------------------------------- pcgrad
def test_pcgrad_hand_computed_2d_example():
    # g_clip = (1, 0), g_align = (-1, 1): cos = -1/sqrt(2); projected g_align = (0, 1)
    sched = GradientAwareScheduler(_cfg(max_norm_ratio=2.0))
    grads, tel = sched.combine(0, _tensors([1.0], [0.0]), _tensors([-1.0], [1.0]))
    np.testing.assert_allclose(_flat(grads), [1.0, 1.0], atol=1e-15)
    assert tel["grad_cosine"] == pytest.approx(-1 / math.sqrt(2))
    assert tel["norm_ratio"] == pytest.approx(math.sqrt(2))
    assert tel["conflict"] and tel["projected"] and tel["measured"]
    assert tel["tempering"] == 1.0
    assert tel["applied_norm_ratio"] == pytest.approx(1.0)
    assert set(tel) == set(TELEMETRY_KEYS)


def test_pcgrad_projection_then_cap_hand_computed():
    # g_clip = (1, 0), g_align = (-3, 4): projected (0, 4), norm 4 > 1 * 1, scaled by 1/4
    sched = GradientAwareScheduler(_cfg(max_norm_ratio=1.0))
    grads, tel = sched.combine(0, _tensors([1.0, 0.0]), _tensors([-3.0, 4.0]))
    np.testing.assert_allclose(_flat(grads), [1.0, 1.0], atol=1e-15)
    assert tel["grad_cosine"] == pytest.approx(-0.6)
    assert tel["tempering"] == pytest.approx(0.25)
    assert tel["applied_norm_ratio"] == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(8))
def test_pcgrad_alignment_part_never_opposes_clip(seed):
    rng = np.random.default_rng(seed)
    shapes = [(3, 2), (4,), (1,)]
    clip = [rng.normal(size=s) for s in shapes]
    align = [rng.normal(size=s) for s in shapes]
    sched = GradientAwareScheduler(_cfg(max_norm_ratio=math.inf))
    grads, tel = sched.combine(0, _tensors(*clip), _tensors(*align))
    g_clip, g_align = _flat(clip), _flat(align)
    applied_align = _flat(grads) - g_clip
    original_cos = _cos(g_clip, g_align)
    assert tel["grad_cosine"] == pytest.approx(original_cos)
    assert tel["norm_ratio"] == pytest.approx(np.linalg.norm(g_align) / np.linalg.norm(g_clip))
    if original_cos < 0:
        assert tel["projected"]
        assert abs(applied_align @ g_clip) < 1e-12
        expected = g_align - (g_align @ g_clip) / (g_clip @ g_clip) * g_clip
        np.testing.assert_allclose(applied_align, expected, atol=1e-12)
    else:
        assert not tel["projected"]
        np.testing.assert_allclose(applied_align, g_align, atol=1e-12)
    assert applied_align @ g_clip >= -1e-12


def test_pcgrad_untouched_without_conflict_and_under_cap():
    clip = _tensors([1.0, 2.0], [0.5])
    align = _tensors([0.3, 0.1], [0.2])  # positive dot, ratio < 1
    grads, tel = GradientAwareScheduler(_cfg()).combine(0, clip, align)
    for g, c, a in zip(grads, clip, align, strict=True):
        assert torch.equal(g, c + a)
    assert not tel["conflict"] and not tel["projected"] and tel["tempering"] == 1.0


def test_pcgrad_norm_cap_without_conflict():
    clip = _tensors([1.0, 0.0])
    align = _tensors([3.0, 3.0])  # cos > 0, ratio 3 sqrt(2)
    grads, tel = GradientAwareScheduler(_cfg(max_norm_ratio=0.5)).combine(0, clip, align)
    applied = _flat(grads) - np.array([1.0, 0.0])
    assert np.linalg.norm(applied) == pytest.approx(0.5)
    assert _cos(applied, np.array([3.0, 3.0])) == pytest.approx(1.0)  # direction kept
    assert tel["tempering"] == pytest.approx(0.5 / (3 * math.sqrt(2)))
    assert not tel["projected"]


def test_pcgrad_positive_threshold_projects_weakly_aligned_gradients():
    clip = _tensors([1.0, 0.0])
    align = _tensors([0.05, 1.0])  # cos ~ 0.05 < 0.1
    sched = GradientAwareScheduler(_cfg(conflict_threshold=0.1, max_norm_ratio=math.inf))
    grads, tel = sched.combine(0, clip, align)
    assert tel["conflict"] and tel["projected"]
    np.testing.assert_allclose(_flat(grads), [1.0, 1.0], atol=1e-15)


def test_pcgrad_acts_on_measurement_steps_only():
    sched = GradientAwareScheduler(_cfg(measure_every=2, max_norm_ratio=math.inf))
    clip, align = _tensors([1.0, 0.0]), _tensors([-1.0, 1.0])
    measured, tel0 = sched.combine(4, clip, align)
    plain, tel1 = sched.combine(5, clip, align)
    np.testing.assert_allclose(_flat(measured), [1.0, 1.0])
    np.testing.assert_allclose(_flat(plain), [0.0, 1.0])  # plain sum between measurements
    assert tel0["measured"] and not tel1["measured"] and not tel1["projected"]
    assert [sched.needs_separate_grads(s) for s in range(5)] == [True, False, True, False, True]
    assert sched.effective_alpha(0.3) == 0.3


# ---------------------------------------------------------------------- scale
def _scalar_pair(cos_sign: float, ratio: float) -> tuple[list, list]:
    """g_clip = (1,), g_align = (cos_sign * ratio,): cosine +-1, norm ratio ``ratio``."""
    return _tensors([1.0]), _tensors([cos_sign * ratio])


def test_scale_shrink_and_recovery_sequence():
    cfg = _cfg(rule="scale", measure_every=2, conflict_shrink=0.5, recovery=1.25, max_norm_ratio=2)
    sched = GradientAwareScheduler(cfg)
    # (step, cosine sign, ratio, expected s after the step), worked by hand:
    plan = [
        (0, -1, 1.0, 0.5),  # conflict: 1 * 0.5
        (1, -1, 1.0, 0.5),  # not a measurement step: frozen
        (2, +1, 1.0, 0.625),  # recovery: 0.5 * 1.25
        (3, +1, 9.0, 0.625),  # frozen, even though the ratio is large
        (4, +1, 4.0, 0.5),  # recovery to 0.78125, capped at 2 / 4
        (6, +1, 1.0, 0.625),
        (8, +1, 1.0, 0.78125),
        (10, +1, 1.0, 0.9765625),
        (12, +1, 1.0, 1.0),  # 1.220703125 clipped to 1
    ]
    for step, sign, ratio, expected in plan:
        clip, align = _scalar_pair(sign, ratio)
        grads, tel = sched.combine(step, clip, align)
        assert sched.tempering == pytest.approx(expected, abs=1e-15), step
        assert tel["tempering"] == sched.tempering
        assert float(grads[0]) == pytest.approx(1.0 + expected * sign * ratio)
        assert not tel["projected"]
    assert sched.measurements == 7
    assert sched.conflicts == 1


def test_scale_tempering_floor_and_effective_alpha():
    cfg = _cfg(rule="scale", conflict_shrink=0.1, min_tempering=0.01, max_norm_ratio=math.inf)
    sched = GradientAwareScheduler(cfg)
    for step in range(5):
        sched.combine(step, *_scalar_pair(-1, 1.0))
    assert sched.tempering == pytest.approx(0.01)
    assert sched.effective_alpha(0.5) == pytest.approx(0.005)
    assert 0 < sched.tempering <= 1


def test_single_backward_with_effective_alpha_equals_combine_between_measurements():
    torch.manual_seed(0)
    weight = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    x = torch.randn(5, 4, dtype=torch.float64)
    out = x @ weight.T + bias
    l_clip = (out**2).mean()
    l_cma = -out.sum(0).norm()  # a second, conflicting objective
    params = [weight, bias]
    alpha = 0.7
    sched = GradientAwareScheduler(_cfg(rule="scale", measure_every=3, max_norm_ratio=0.2))
    g_clip = torch.autograd.grad(l_clip, params, retain_graph=True)
    g_align = torch.autograd.grad(alpha * l_cma, params, retain_graph=True)
    sched.combine(0, g_clip, g_align)  # measurement: sets s < 1
    assert sched.tempering < 1
    assert not sched.needs_separate_grads(1)
    combined, _ = sched.combine(1, g_clip, g_align)
    single = torch.autograd.grad(l_clip + sched.effective_alpha(alpha) * l_cma, params)
    for a, b in zip(combined, single, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------- ablation, edge cases
@pytest.mark.parametrize("rule", ["pcgrad", "scale"])
def test_ablation_switch_returns_the_plain_sum_with_telemetry(rule):
    rng = np.random.default_rng(3)
    clip = rng.normal(size=6)
    align = -2 * clip + 0.1 * rng.normal(size=6)  # strong conflict, ratio ~2
    cfg = _cfg(gradient_aware=False, rule=rule, max_norm_ratio=0.1)
    sched = GradientAwareScheduler(cfg)
    grads, tel = sched.combine(0, _tensors(clip), _tensors(align))
    np.testing.assert_allclose(_flat(grads), clip + align, atol=1e-15)
    assert tel["grad_cosine"] == pytest.approx(_cos(clip, align))
    assert tel["conflict"] and not tel["projected"] and tel["tempering"] == 1.0
    assert sched.effective_alpha(0.4) == 0.4
    assert sched.needs_separate_grads(0)


def test_none_gradients_are_zeros():
    sched = GradientAwareScheduler(_cfg(max_norm_ratio=math.inf))
    clip = [torch.tensor([1.0, 0.0]), None, None]
    align = [torch.tensor([-1.0, 0.0]), torch.tensor([0.0, 2.0]), None]
    grads, tel = sched.combine(0, clip, align)
    ref, ref_tel = GradientAwareScheduler(_cfg(max_norm_ratio=math.inf)).combine(
        0, [clip[0], torch.zeros(2)], align[:2]
    )
    assert grads[2] is None
    for a, b in zip(grads[:2], ref, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12, atol=1e-12)
    assert tel == ref_tel
    # cos = -1/sqrt(5): the part along g_clip is removed, (0, 2) stays
    np.testing.assert_allclose(_flat(grads[:2]), [1.0, 0.0, 0.0, 2.0], atol=1e-7)


@pytest.mark.parametrize("rule", ["pcgrad", "scale"])
def test_zero_gradients_give_no_nan(rule):
    sched = GradientAwareScheduler(_cfg(rule=rule))
    zero, some = _tensors([0.0, 0.0]), _tensors([3.0, -4.0])
    grads, tel = sched.combine(0, zero, some)  # nothing to protect: alignment applied as is
    np.testing.assert_allclose(_flat(grads), [3.0, -4.0])
    assert tel["grad_cosine"] == 0.0 and not tel["conflict"]
    assert tel["norm_ratio"] == math.inf
    grads, tel = sched.combine(1, some, zero)
    np.testing.assert_allclose(_flat(grads), [3.0, -4.0])
    assert tel["norm_ratio"] == 0.0 and tel["grad_cosine"] == 0.0
    grads, tel = sched.combine(2, zero, zero)
    np.testing.assert_allclose(_flat(grads), [0.0, 0.0])
    for value in tel.values():
        assert not (isinstance(value, float) and math.isnan(value))
    assert 0 < sched.tempering <= 1


@pytest.mark.parametrize("rule", ["pcgrad", "scale"])
def test_non_finite_gradients_leave_the_state_alone(rule):
    sched = GradientAwareScheduler(_cfg(rule=rule, max_norm_ratio=math.inf))
    sched.combine(0, *_scalar_pair(-1, 1.0))  # one real conflict first
    before = sched.state_dict()
    grads, tel = sched.combine(1, _tensors([math.inf, 1.0]), _tensors([1.0, 1.0]))
    assert sched.state_dict() == before
    assert math.isnan(tel["grad_cosine"]) and not tel["conflict"] and not tel["projected"]
    assert not math.isfinite(float(grads[0][0]))  # the overflow stays visible to GradScaler


@pytest.mark.parametrize("rule", ["pcgrad", "scale", "lr"])
@pytest.mark.parametrize("conflict", [False, True])
def test_reuse_clip_gives_the_same_result_and_only_then_writes_the_inputs(rule, conflict):
    rng = np.random.default_rng(11)
    shapes = [(3, 2), (4,), (1,)]
    clip = [rng.normal(size=s) for s in shapes]
    align = [(-3.0 if conflict else 0.2) * c + 0.1 * rng.normal(size=c.shape) for c in clip]
    cfg = _cfg(rule=rule, max_norm_ratio=0.5)
    kept_clip, kept_align = _tensors(*clip), _tensors(*align)
    fresh, tel = GradientAwareScheduler(cfg).combine(0, kept_clip, kept_align)
    for kept, original in zip(kept_clip + kept_align, clip + align, strict=True):
        np.testing.assert_array_equal(kept.numpy(), original)  # inputs untouched by default
    reused_clip = _tensors(*clip)
    reused, reused_tel = GradientAwareScheduler(cfg).combine(
        0, reused_clip, _tensors(*align), reuse_clip=True
    )
    assert reused_tel == tel
    for a, b in zip(reused, fresh, strict=True):
        assert torch.equal(a, b)  # bit for bit
    trivial = rule == "lr" or not conflict  # coefficients 1 and 1: the sum, into g_clip
    assert (reused[0].data_ptr() == reused_clip[0].data_ptr()) == trivial


def test_dot_products_match_float64_reference_on_large_float32_tensors():
    rng = np.random.default_rng(5)
    clip = [rng.normal(size=(300, 700)).astype(np.float32), rng.normal(size=5).astype(np.float32)]
    align = [(-0.5 * c + rng.normal(size=c.shape)).astype(np.float32) for c in clip]
    _, tel = GradientAwareScheduler(_cfg(max_norm_ratio=math.inf)).combine(
        0, [torch.from_numpy(c) for c in clip], [torch.from_numpy(a) for a in align]
    )
    c64, a64 = _flat(clip), _flat(align)
    assert tel["grad_cosine"] == pytest.approx(_cos(c64, a64), rel=1e-5)
    assert tel["norm_ratio"] == pytest.approx(np.linalg.norm(a64) / np.linalg.norm(c64), rel=1e-5)


def test_mismatched_gradient_lists_are_errors():
    sched = GradientAwareScheduler(_cfg())
    with pytest.raises(CurriculumError, match="same parameter order"):
        sched.combine(0, [torch.zeros(2)], [torch.zeros(3)])
    with pytest.raises(CurriculumError, match="one gradient"):
        sched.combine(0, [torch.zeros(2)], [torch.zeros(2), torch.zeros(1)])


def test_dtype_is_preserved():
    sched = GradientAwareScheduler(_cfg())
    grads, _ = sched.combine(0, [torch.ones(3, dtype=torch.float32)], [-torch.ones(3)])
    assert grads[0].dtype == torch.float32


# ---------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("rule", ["pcgrad", "scale"])
def test_state_dict_round_trip_gives_the_same_future(rule):
    cfg = _cfg(rule=rule, measure_every=2, recovery=1.1, max_norm_ratio=3.0)
    rng = np.random.default_rng(7)
    clips = rng.normal(size=(12, 5))
    aligns = rng.normal(size=(12, 5))
    aligns[:6] -= 2 * clips[:6]  # conflicts before the checkpoint move the "scale" state
    stream = list(zip(clips, aligns, strict=True))
    original = GradientAwareScheduler(cfg)
    for step, (c, a) in enumerate(stream[:6]):
        original.combine(step, _tensors(c), _tensors(a))
    assert original.conflicts > 0
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    resumed = GradientAwareScheduler(cfg)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    fresh = GradientAwareScheduler(cfg)
    differs = False
    for step, (c, a) in enumerate(stream[6:], start=6):
        g1, t1 = original.combine(step, _tensors(c), _tensors(a))
        g2, t2 = resumed.combine(step, _tensors(c), _tensors(a))
        g3, _ = fresh.combine(step, _tensors(c), _tensors(a))
        assert t1 == t2
        assert all(torch.equal(x, y) for x, y in zip(g1, g2, strict=True))
        differs |= not all(torch.equal(x, y) for x, y in zip(g1, g3, strict=True))
    assert original.state_dict() == resumed.state_dict()
    if rule == "scale":
        assert differs  # the state matters: a fresh scheduler would have diverged


def test_load_state_dict_rejects_other_settings_and_junk():
    state = GradientAwareScheduler(_cfg(rule="scale")).state_dict()
    with pytest.raises(CurriculumError, match="different settings"):
        GradientAwareScheduler(_cfg(rule="pcgrad")).load_state_dict(state)
    with pytest.raises(CurriculumError, match="not a gradient-scheduler state"):
        GradientAwareScheduler(_cfg()).load_state_dict({"tempering": 1.0})


def test_scheduler_requires_a_config():
    with pytest.raises(CurriculumError, match="CurriculumConfig"):
        GradientAwareScheduler({"rule": "scale"})
