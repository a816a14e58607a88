"""The three-phase curriculum alpha(step) and the gradient-aware scheduler.

TPC-CMA fine-tunes with ``L = L_clip + alpha(step) * L_CMA`` and brings the alignment term in
gradually. With ``T`` total steps, ``w = warmup_fraction`` and ``r = ramp_fraction``:

- phase 1, warm-up: steps with ``step / T < w``; ``alpha = 0`` (contrastive loss only);
- phase 2, ramp: steps with ``w <= step / T < w + r``;
  ``alpha = alpha_target * shape((step - w T) / (r T))`` with ``shape(p) = p`` (linear) or
  ``(1 - cos(pi p)) / 2`` (cosine);
- phase 3, the rest: ``alpha = alpha_target``.

So the first step of phase 2 is ``ceil(w T)`` and the first step of phase 3 is
``ceil((w + r) T)`` (products rounded to 9 decimals first, so that ``0.29 * 100`` counts as
29). The ramp is a function of the real time ``step / T``: it passes through 0 at ``w T`` and
reaches ``alpha_target`` at ``(w + r) T``, so alpha is continuous at both boundaries and the
first phase-2 step has ``alpha = 0`` when ``w T`` is a whole number.

The :class:`GradientAwareScheduler` looks at the two gradients the trainer measures on the
shared trainable parameters, ``g_clip = grad L_clip`` and ``g_align = grad (alpha L_CMA)``,
and decides how much of ``g_align`` to apply (rules in its docstring). The paper names this
step with phase 3; here it guards every step on which alignment is on (phases 2 and 3): during
the ramp alpha is small, so the rules rarely bind, and one rule everywhere is easier to audit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from tpccma_lib.settings import Settings

__all__ = [
    "CurriculumConfig",
    "CurriculumError",
    "GradientAwareScheduler",
    "TELEMETRY_KEYS",
    "alpha_at",
    "alpha_schedule",
    "phase_at",
    "phase_boundaries",
]

RAMP_SHAPES = ("linear", "cosine")
CONFLICT_RULES = ("pcgrad", "scale", "lr")

#: Keys of the telemetry dict returned by :meth:`GradientAwareScheduler.combine`.
TELEMETRY_KEYS = (
    "measured",  # bool: a measurement step (step % measure_every == 0)
    "grad_cosine",  # cos(g_clip, g_align) as given; 0 when either is zero
    "norm_ratio",  # ||g_align|| / ||g_clip|| as given (alpha included); inf if only g_clip = 0
    "conflict",  # bool: both non-zero and grad_cosine < conflict_threshold
    "projected",  # bool: the part of g_align along g_clip was removed (pcgrad)
    "tempering",  # factor on the (projected) alignment gradient actually applied
    "applied_norm_ratio",  # ||applied alignment part|| / ||g_clip||
)


class CurriculumError(ValueError):
    """Bad curriculum settings or scheduler inputs; the message says what to change."""


@dataclass(frozen=True)
class CurriculumConfig(Settings):
    """Settings of the alpha schedule and the gradient-aware scheduler.

    ``alpha_target`` must lie in [0, 1]: L_CMA is an auxiliary term weighed against the
    contrastive loss L_clip, which must stay the main objective (alpha > 1 would let alignment
    outweigh the task it is meant to keep), and [0, 1] is the range the paper sweeps
    (0.05 and 0.5 are its headline settings).
    """

    settings_error: ClassVar[type[Exception]] = CurriculumError

    alpha_target: float = 0.0  # weight of L_CMA in phase 3, in [0, 1]
    warmup_fraction: float = 0.2  # phase 1: fraction of the run with the contrastive loss only
    ramp_fraction: float = 0.3  # phase 2: fraction of the run over which alpha rises 0 -> target
    ramp_shape: str = "cosine"  # "linear" or "cosine" (half-cosine, zero slope at both ends)
    gradient_aware: bool = True  # ablation switch: False applies g_clip + g_align unchanged
    rule: str = "pcgrad"  # "pcgrad" (project g_align off g_clip), "scale" (temper alpha) or
    # "lr" (per-tensor learning rates, lr_tempering.LRTempering; the sum g_clip + g_align here)
    measure_every: int = 1  # k: measure the two gradients on steps with step % k == 0
    conflict_threshold: float = 0.0  # cos(g_clip, g_align) below this counts as a conflict
    max_norm_ratio: float = 1.0  # cap on ||alpha g_cma|| / ||g_clip|| (math.inf: no cap)
    recovery: float = 1.05  # "scale": s <- min(1, s * recovery) on a measurement without conflict
    conflict_shrink: float = 0.5  # "scale": s <- s * conflict_shrink on a measured conflict
    min_tempering: float = 1e-3  # "scale": floor of s after shrinking (the cap may go lower)

    def __post_init__(self) -> None:
        for name in (
            "alpha_target",
            "warmup_fraction",
            "ramp_fraction",
            "conflict_threshold",
            "recovery",
            "conflict_shrink",
            "min_tempering",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise CurriculumError(f"{name} must be a number, got {value!r}.")
            if not math.isfinite(value):
                raise CurriculumError(f"{name} must be finite, got {value}.")
        if not 0.0 <= self.alpha_target <= 1.0:
            raise CurriculumError(
                f"alpha_target must lie in [0, 1], got {self.alpha_target}: L_CMA is an "
                "auxiliary term weighed against L_clip (the paper sweeps 0..1; 0 = contrastive "
                "only)."
            )
        for name in ("warmup_fraction", "ramp_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise CurriculumError(
                    f"{name} must lie in [0, 1] (a fraction of the run), got {value}."
                )
        if self.warmup_fraction + self.ramp_fraction > 1.0 + 1e-12:
            raise CurriculumError(
                f"warmup_fraction + ramp_fraction = "
                f"{self.warmup_fraction + self.ramp_fraction:g} exceeds 1: phases 1 and 2 "
                "would not fit in the run. Shorten one of them (phase 3 takes the rest)."
            )
        if self.ramp_shape not in RAMP_SHAPES:
            raise CurriculumError(
                f"ramp_shape must be one of {RAMP_SHAPES}, got {self.ramp_shape!r}."
            )
        if self.rule not in CONFLICT_RULES:
            raise CurriculumError(f"rule must be one of {CONFLICT_RULES}, got {self.rule!r}.")
        if not isinstance(self.gradient_aware, bool):
            raise CurriculumError(
                f"gradient_aware must be True or False, got {self.gradient_aware!r}."
            )
        if isinstance(self.measure_every, bool) or not isinstance(self.measure_every, int):
            raise CurriculumError(f"measure_every must be an int, got {self.measure_every!r}.")
        if self.measure_every < 1:
            raise CurriculumError(
                f"measure_every must be >= 1 (measure every k-th step), got {self.measure_every}."
            )
        if not -1.0 <= self.conflict_threshold <= 1.0:
            raise CurriculumError(
                f"conflict_threshold is a cosine and must lie in [-1, 1], got "
                f"{self.conflict_threshold}."
            )
        ratio = self.max_norm_ratio
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or math.isnan(ratio):
            raise CurriculumError(f"max_norm_ratio must be a number, got {ratio!r}.")
        if ratio <= 0:
            raise CurriculumError(
                f"max_norm_ratio must be > 0 (use math.inf for no cap), got {ratio}."
            )
        if self.recovery < 1.0:
            raise CurriculumError(
                f"recovery must be >= 1 (1 = s never recovers), got {self.recovery}."
            )
        if not 0.0 < self.conflict_shrink <= 1.0:
            raise CurriculumError(
                f"conflict_shrink must lie in (0, 1] (1 = no shrink), got {self.conflict_shrink}."
            )
        if not 0.0 < self.min_tempering <= 1.0:
            raise CurriculumError(f"min_tempering must lie in (0, 1], got {self.min_tempering}.")


# ---------------------------------------------------------------------- alpha schedule
def _first_step_at(fraction: float, total_steps: int) -> int:
    """First step with ``step / total_steps >= fraction`` (product rounded to 9 decimals)."""
    return math.ceil(round(fraction * total_steps, 9))


def _check_step(step: int, total_steps: int) -> None:
    if total_steps < 1:
        raise CurriculumError(f"total_steps must be >= 1, got {total_steps}.")
    if not 0 <= step < total_steps:
        raise CurriculumError(
            f"step must lie in [0, total_steps) = [0, {total_steps}), got {step}."
        )


def phase_boundaries(total_steps: int, cfg: CurriculumConfig) -> tuple[int, int]:
    """First step of phase 2 and first step of phase 3 in a run of ``total_steps``.

    Returns:
        ``(ceil(w T), ceil((w + r) T))``; equal values mean an empty phase 2, a value of
        ``total_steps`` an empty later phase.
    """
    if total_steps < 1:
        raise CurriculumError(f"total_steps must be >= 1, got {total_steps}.")
    ramp_start = _first_step_at(cfg.warmup_fraction, total_steps)
    ramp_end = _first_step_at(cfg.warmup_fraction + cfg.ramp_fraction, total_steps)
    return min(ramp_start, total_steps), min(ramp_end, total_steps)


def phase_at(step: int, total_steps: int, cfg: CurriculumConfig) -> int:
    """Curriculum phase (1, 2 or 3) of 0-based ``step`` in a run of ``total_steps``."""
    _check_step(step, total_steps)
    ramp_start, ramp_end = phase_boundaries(total_steps, cfg)
    if step < ramp_start:
        return 1
    if step < ramp_end:
        return 2
    return 3


def _ramp_shape(progress: float, shape: str) -> float:
    if shape == "linear":
        return progress
    return 0.5 * (1.0 - math.cos(math.pi * progress))


def alpha_at(step: int, total_steps: int, cfg: CurriculumConfig) -> float:
    """Weight alpha of L_CMA at 0-based ``step`` (pure function of its arguments).

    Phase 1: 0. Phase 2: ``alpha_target * shape(p)``, ``p = (step - w T) / (r T)`` clipped to
    [0, 1]. Phase 3: exactly ``alpha_target``.
    """
    phase = phase_at(step, total_steps, cfg)
    if phase == 1:
        return 0.0
    if phase == 3:
        return float(cfg.alpha_target)
    ramp_steps = cfg.ramp_fraction * total_steps  # > 0 here: phase 2 is not empty
    progress = (step - cfg.warmup_fraction * total_steps) / ramp_steps
    progress = min(1.0, max(0.0, progress))
    return float(cfg.alpha_target * _ramp_shape(progress, cfg.ramp_shape))


def alpha_schedule(total_steps: int, cfg: CurriculumConfig) -> np.ndarray:
    """``alpha_at(step)`` for every step, shape (total_steps,) float64 (for plots)."""
    if total_steps < 1:
        raise CurriculumError(f"total_steps must be >= 1, got {total_steps}.")
    return np.array([alpha_at(s, total_steps, cfg) for s in range(total_steps)], dtype=np.float64)


# ---------------------------------------------------------------------- gradient scheduler
GradList = Sequence[Tensor | None]


def _fill_none(clip_grads: GradList, align_grads: GradList) -> tuple[list, list]:
    """Pair up the two lists; a None next to a tensor becomes zeros, two Nones stay None."""
    if len(clip_grads) != len(align_grads):
        raise CurriculumError(
            f"clip_grads has {len(clip_grads)} entries but align_grads has {len(align_grads)}: "
            "pass one gradient (or None) per trainable parameter, in the same order, to both."
        )
    clip_out, align_out = [], []
    for i, (gc, ga) in enumerate(zip(clip_grads, align_grads, strict=True)):
        if gc is None and ga is not None:
            gc = torch.zeros_like(ga)
        elif ga is None and gc is not None:
            ga = torch.zeros_like(gc)
        elif gc is not None and ga is not None and gc.shape != ga.shape:
            raise CurriculumError(
                f"gradient {i} has shape {tuple(gc.shape)} for L_clip but {tuple(ga.shape)} "
                "for L_CMA: both lists must follow the same parameter order."
            )
        clip_out.append(gc)
        align_out.append(ga)
    return clip_out, align_out


def _dot_and_norms(clip: list, align: list) -> tuple[float, float, float]:
    """<g_clip, g_align>, ||g_clip||^2, ||g_align||^2 over all parameters.

    Per tensor a dot product of the flattened gradients (no temporary of the tensor's size) in
    their dtype promoted to at least float32 (float64 stays float64), summed over tensors in
    float64 with one device sync.
    """
    rows = []
    for gc, ga in zip(clip, align, strict=True):
        if gc is None:
            continue
        dtype = torch.promote_types(torch.promote_types(gc.dtype, ga.dtype), torch.float32)
        c, a = gc.reshape(-1).to(dtype), ga.reshape(-1).to(dtype)
        rows.append(torch.stack([torch.dot(c, a), torch.dot(c, c), torch.dot(a, a)]))
    if not rows:
        return 0.0, 0.0, 0.0
    dot, clip_sq, align_sq = torch.stack(rows).double().sum(0).tolist()  # (P, 3) -> 3
    return dot, clip_sq, align_sq


def _weighted_sum(
    gc: Tensor, clip_coef: float, ga: Tensor, align_coef: float, into_gc: bool
) -> Tensor:
    """``clip_coef g_clip + align_coef g_align``; when both coefficients are 1 (every step of
    the "lr" rule) the plain sum, the same values in one pass, written into ``gc`` if
    ``into_gc`` (no allocation of the tensor's size, which dominates on CPU)."""
    if clip_coef == 1.0 and align_coef == 1.0:
        return gc.add_(ga) if into_gc and gc.is_contiguous() else gc + ga
    return gc * clip_coef + ga * align_coef


class GradientAwareScheduler:
    """Combine the contrastive and the alignment gradients so that alignment never dominates.

    Inputs of :meth:`combine` are the (already globally averaged) gradients of the shared
    trainable parameters: ``g_clip = grad L_clip`` and ``g_align = grad (alpha L_CMA)``, as
    lists of tensors (None for a parameter a loss does not touch: treated as zeros). Writing
    ``c = cos(g_clip, g_align)``, ``r = ||g_align|| / ||g_clip||`` and ``m = max_norm_ratio``,
    the applied gradient is ``g_clip + t * g_align'`` where:

    - ``rule="pcgrad"`` (PCGrad, Yu et al. 2020, one-sided): if ``c < conflict_threshold``,
      ``g_align' = g_align - (<g_align, g_clip> / ||g_clip||^2) g_clip`` (only the alignment
      gradient is projected, so the contrastive objective keeps priority; for threshold 0 the
      result is orthogonal to ``g_clip``), else ``g_align' = g_align``; then
      ``t = min(1, m ||g_clip|| / ||g_align'||)`` caps the applied ratio at ``m``. Stateless.
    - ``rule="scale"``: ``g_align' = g_align`` and ``t = s``, a tempering factor in (0, 1]
      carried across steps (start 1). On a measurement step (``step % measure_every == 0``)::

          s <- s * conflict_shrink             if c < conflict_threshold   (conflict)
          s <- min(1, s * recovery)            otherwise                   (recovery)
          s <- max(s, min_tempering)
          s <- min(s, m / r)                   (cap: ||s g_align|| <= m ||g_clip||)

      and the new ``s`` applies to this step. Between measurements ``s`` is frozen and the
      trainer may skip the two separate backward passes: it can do one backward of
      ``L_clip + effective_alpha(alpha) * L_CMA`` (see :meth:`needs_separate_grads`).
    - ``rule="lr"``: ``g_clip + g_align`` unchanged (``t = 1``) here; the trainer slows the
      conflicting tensors instead, through their learning rates
      (:class:`tpccma_lib.training.lr_tempering.LRTempering`, the paper's wording).
    - ``gradient_aware=False`` (ablation): ``g_clip + g_align`` unchanged (``t = 1``); the
      telemetry is still computed.

    With ``rule="pcgrad"`` and ``measure_every = k > 1`` the projection and the cap act on
    measurement steps only and the plain sum is applied in between, so that a trainer that calls
    :meth:`combine` on every step and one that takes the single-backward path between
    measurements make the same updates; ``k = 1`` is textbook PCGrad. Zero norms give no NaN:
    a zero gradient has cosine 0 and never conflicts; when ``g_clip = 0`` there is no
    contrastive direction to protect, so ``g_align`` is applied as is (and ``r = inf``).
    Non-finite gradients (an fp16 overflow, a step ``GradScaler`` will skip) leave the state
    alone: the sum ``g_clip + s g_align`` is returned with NaN cosine and ratios.
    """

    def __init__(self, cfg: CurriculumConfig) -> None:
        if not isinstance(cfg, CurriculumConfig):
            raise CurriculumError(
                f"GradientAwareScheduler needs a CurriculumConfig, got {type(cfg).__name__}."
            )
        self.cfg = cfg
        self.tempering = 1.0  # s of the "scale" rule
        self.measurements = 0  # measurement steps seen
        self.conflicts = 0  # of which had a conflict

    # ------------------------------------------------------------------ cheap path
    def is_measurement_step(self, step: int) -> bool:
        """True on steps ``step % measure_every == 0``."""
        if step < 0:
            raise CurriculumError(f"step must be >= 0, got {step}.")
        return step % self.cfg.measure_every == 0

    def needs_separate_grads(self, step: int) -> bool:
        """Whether the trainer must pass separate ``g_clip`` and ``g_align`` at this step.

        True on measurement steps (also in the ablation, for its telemetry). On other steps one
        backward of ``L_clip + effective_alpha(alpha) * L_CMA`` gives the same update.
        """
        return self.is_measurement_step(step)

    def effective_alpha(self, alpha: float) -> float:
        """Alpha to use between measurements: ``alpha * s`` for "scale", else ``alpha``."""
        if self.cfg.gradient_aware and self.cfg.rule == "scale":
            return float(alpha) * self.tempering
        return float(alpha)

    # ------------------------------------------------------------------ full path
    def combine(
        self, step: int, clip_grads: GradList, align_grads: GradList, reuse_clip: bool = False
    ) -> tuple[list[Tensor | None], dict[str, Any]]:
        """Gradient to apply and telemetry (keys :data:`TELEMETRY_KEYS`).

        Args:
            step: 0-based global step (decides measurement steps; the "scale" state moves
                only on those).
            clip_grads: per-parameter gradients of L_clip (None = zeros).
            align_grads: per-parameter gradients of ``alpha * L_CMA`` (None = zeros).
            reuse_clip: the result may be written into the ``clip_grads`` tensors (saves a
                gradient-sized allocation per tensor; the caller must not read them after).
        Returns:
            ``(grads, telemetry)``: one tensor per parameter (None where both inputs were
            None), same dtype and device as the inputs; telemetry of Python floats and bools.
        """
        measured = self.is_measurement_step(step)
        clip, align = _fill_none(clip_grads, align_grads)
        dot, clip_sq, align_sq = _dot_and_norms(clip, align)
        clip_norm, align_norm = math.sqrt(clip_sq), math.sqrt(align_sq)
        both = clip_norm > 0 and align_norm > 0
        cosine = dot / (clip_norm * align_norm) if both else 0.0
        cosine = min(1.0, max(-1.0, cosine))
        if clip_norm > 0:
            ratio = align_norm / clip_norm
        else:
            ratio = math.inf if align_norm > 0 else 0.0
        conflict = both and cosine < self.cfg.conflict_threshold
        # inf/NaN gradients (an fp16 overflow that GradScaler will skip): no rule, no update
        finite = math.isfinite(dot) and math.isfinite(clip_sq) and math.isfinite(align_sq)
        if not finite:
            cosine = ratio = math.nan
            conflict = False
        aware = self.cfg.gradient_aware and finite

        projection = 0.0  # coefficient of g_clip removed from g_align
        projected = False
        tempering = 1.0
        if aware and self.cfg.rule == "pcgrad" and measured:
            projected_sq = align_sq
            if conflict:
                projected = True
                projection = dot / clip_sq
                projected_sq = max(0.0, align_sq - dot * dot / clip_sq)
            applied_norm = math.sqrt(projected_sq)
            if clip_norm > 0 and applied_norm > self.cfg.max_norm_ratio * clip_norm:
                tempering = self.cfg.max_norm_ratio * clip_norm / applied_norm
        elif self.cfg.gradient_aware and self.cfg.rule == "scale":
            if aware and measured:
                self._update_tempering(conflict, ratio)
            tempering = self.tempering
        if measured and finite:
            self.measurements += 1
            self.conflicts += int(conflict)

        # applied = g_clip + t (g_align - projection g_clip) = (1 - t projection) g_clip + t g_align
        clip_coef = 1.0 - tempering * projection
        grads = [
            None if gc is None else _weighted_sum(gc, clip_coef, ga, tempering, reuse_clip)
            for gc, ga in zip(clip, align, strict=True)
        ]
        applied_sq = tempering**2 * max(
            0.0, align_sq - 2 * projection * dot + projection**2 * clip_sq
        )
        if not finite:
            applied_ratio = math.nan
        elif clip_norm > 0:
            applied_ratio = math.sqrt(applied_sq) / clip_norm
        else:
            applied_ratio = math.inf if applied_sq > 0 else 0.0
        telemetry = {
            "measured": measured,
            "grad_cosine": cosine,
            "norm_ratio": ratio,
            "conflict": conflict,
            "projected": projected,
            "tempering": tempering,
            "applied_norm_ratio": applied_ratio,
        }
        return grads, telemetry

    def _update_tempering(self, conflict: bool, ratio: float) -> None:
        cfg = self.cfg
        if conflict:
            s = self.tempering * cfg.conflict_shrink
        else:
            s = min(1.0, self.tempering * cfg.recovery)
        s = max(s, cfg.min_tempering)
        if 0.0 < ratio < math.inf:
            s = min(s, cfg.max_norm_ratio / ratio)
        self.tempering = s

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed for an exact resume (plain Python values)."""
        return {
            "format": "tpccma-gradient-scheduler-v1",
            "tempering": self.tempering,
            "measurements": self.measurements,
            "conflicts": self.conflicts,
            "config": self.cfg.to_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output; the saved config must match this one."""
        if state.get("format") != "tpccma-gradient-scheduler-v1":
            raise CurriculumError(
                f"not a gradient-scheduler state (format {state.get('format')!r}); pass the "
                "dict that GradientAwareScheduler.state_dict() returned."
            )
        saved = dict(state["config"])
        if saved != self.cfg.to_dict():
            diff = sorted(k for k in saved if saved[k] != self.cfg.to_dict().get(k))
            raise CurriculumError(
                f"the checkpoint's scheduler was built with different settings ({diff}); "
                "resume with the same CurriculumConfig or start a fresh run."
            )
        tempering = float(state["tempering"])
        if not 0.0 < tempering <= 1.0:
            raise CurriculumError(f"saved tempering factor {tempering} is outside (0, 1].")
        self.tempering = tempering
        self.measurements = int(state["measurements"])
        self.conflicts = int(state["conflicts"])
