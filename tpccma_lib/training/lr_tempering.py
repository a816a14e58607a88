"""Per-tensor learning-rate tempering: the paper's gradient-aware scheduler rule.

The paper's scheduler "monitors the norm and direction of gradients from the alignment loss
versus the contrastive loss; if conflicts are detected, it temporarily reduces the learning rate
on problematic parameters". :class:`LRTempering` does that per parameter tensor ``i``. On a
measurement step (``step % measure_every == 0``), with ``g_c`` the gradient of L_clip and
``g_a`` that of ``alpha L_CMA`` on tensor i::

    cos_i   = <g_c, g_a> / (||g_c|| ||g_a||)          (0 when either is zero)
    ratio_i = ||g_a|| / ||g_c||                       (inf when only g_c is zero)
    problem = cos_i < conflict_threshold  or  (||g_c|| > 0 and ratio_i > max_norm_ratio)
    m_i    <- max(m_i * shrink, floor)      if problem
    m_i    <- min(m_i * recovery, 1)        otherwise

where, with ``rate_steps`` set, ``shrink`` and ``recovery`` are rates per ``rate_steps`` steps and
a measurement every ``k`` steps applies ``shrink**(k / rate_steps)`` and
``recovery**(k / rate_steps)`` (each measured state stands for the ``k`` steps up to the next
measurement), so the measurement interval is a cost setting, not part of the rule's strength:
20 problem measurements one step apart shrink ``m`` as much as one measurement after 20 steps.
Without ``rate_steps`` (None) the factors act per measurement, as written above.

The optimiser applies ``lr_i = base_lr * m_i`` through one parameter group per tensor
(:func:`param_groups`, :meth:`LRTempering.apply`). Between measurements the multipliers are
frozen (the trainer may then skip the two separate backward passes); recovery happens on the
next measurements without a problem, which makes the reduction temporary. After k consecutive
problem measurements from 1, ``m = max(shrink**k, floor)``; from the floor, ``n`` clean ones
give ``min(floor * recovery**n, 1)``.

Conventions shared with :class:`tpccma_lib.training.curriculum.GradientAwareScheduler`: a missing
(None) gradient counts as zeros; a tensor where either gradient is zero has no direction to
compare and never has a direction conflict; when only ``g_c`` is zero there is no contrastive
direction to protect, so the norm rule does not fire; non-finite gradients (an fp16 overflow
that GradScaler will skip) leave every multiplier alone and report NaN.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "LRTempering",
    "LRTemperingConfig",
    "LRTemperingError",
    "STATE_FORMAT",
    "param_groups",
]

STATE_FORMAT = "tpccma-lr-tempering-v1"

ParamsLike = Iterable[Tensor] | Iterable[tuple[str, Tensor]]


class LRTemperingError(ValueError):
    """Bad settings, inputs or state; the message says what was wrong and how to fix it."""


@dataclass(frozen=True)
class LRTemperingConfig:
    """Settings of :class:`LRTempering` (see the module docstring for the rule)."""

    conflict_threshold: float = 0.0  # cos(g_clip, g_align) below this = direction conflict
    max_norm_ratio: float = 1.0  # ||alpha g_align|| / ||g_clip|| above this = norm problem
    shrink: float = 0.5  # m <- m * shrink on a measured problem, in (0, 1]
    recovery: float = 1.25  # m <- min(1, m * recovery) on a clean measurement, >= 1
    floor: float = 0.05  # lowest multiplier, in (0, 1]
    measure_every: int = 10  # measure on steps with step % measure_every == 0
    rate_steps: int | None = None  # shrink/recovery per this many steps (None: per measurement)

    def __post_init__(self) -> None:
        for name in ("conflict_threshold", "max_norm_ratio", "shrink", "recovery", "floor"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                raise LRTemperingError(f"{name} must be a number, got {value!r}.")
        if not -1.0 <= self.conflict_threshold <= 1.0:
            raise LRTemperingError(
                f"conflict_threshold is a cosine and must lie in [-1, 1], got "
                f"{self.conflict_threshold}."
            )
        if self.max_norm_ratio <= 0:
            raise LRTemperingError(
                f"max_norm_ratio must be > 0 (math.inf: no norm rule), got {self.max_norm_ratio}."
            )
        if not 0.0 < self.shrink <= 1.0:
            raise LRTemperingError(f"shrink must lie in (0, 1] (1 = never), got {self.shrink}.")
        if not 1.0 <= self.recovery < math.inf:
            raise LRTemperingError(
                f"recovery must be a finite number >= 1 (1 = never recover), got {self.recovery}."
            )
        if not 0.0 < self.floor <= 1.0:
            raise LRTemperingError(f"floor must lie in (0, 1], got {self.floor}.")
        every = self.measure_every
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise LRTemperingError(f"measure_every must be an int >= 1, got {every!r}.")
        rate = self.rate_steps
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int) or rate < 1):
            raise LRTemperingError(
                f"rate_steps must be None (factors per measurement) or an int >= 1 (factors "
                f"per that many steps), got {rate!r}."
            )

    def factors(self) -> tuple[float, float]:
        """(shrink, recovery) applied by one measurement: the configured ones, raised to
        ``measure_every / rate_steps`` when ``rate_steps`` is set."""
        if self.rate_steps is None:
            return float(self.shrink), float(self.recovery)
        exponent = self.measure_every / self.rate_steps
        return float(self.shrink) ** exponent, float(self.recovery) ** exponent


def _named(params: ParamsLike) -> list[tuple[str, Tensor]]:
    items = list(params)
    if not items:
        raise LRTemperingError("no parameters given; pass the trainable tensors of the model.")
    named: list[tuple[str, Tensor]] = []
    for i, item in enumerate(items):
        if isinstance(item, Tensor):
            named.append((f"param{i}", item))
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Tensor):
            named.append((str(item[0]), item[1]))
        else:
            raise LRTemperingError(
                f"parameter {i} is a {type(item).__name__}; pass tensors or (name, tensor) pairs "
                "(e.g. model.named_parameters())."
            )
    if len({id(p) for _, p in named}) != len(named):
        raise LRTemperingError("a tensor is listed twice; pass each parameter once.")
    return named


def param_groups(params: ParamsLike, weight_decay: float) -> list[dict[str, Any]]:
    """One optimiser parameter group per tensor, so :meth:`LRTempering.apply` can give each
    its own learning rate: ``[{"params": [p], "weight_decay": weight_decay, "name": name}]``.
    Pass the result to ``torch.optim.AdamW(groups, lr=base_lr)``, in the same order as the
    tensors given to :class:`LRTempering`."""
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)):
        raise LRTemperingError(f"weight_decay must be a number, got {weight_decay!r}.")
    if not 0.0 <= weight_decay < math.inf:
        raise LRTemperingError(f"weight_decay must be finite and >= 0, got {weight_decay}.")
    return [
        {"params": [p], "weight_decay": float(weight_decay), "name": name}
        for name, p in _named(params)
    ]


class LRTempering:
    """Per-tensor learning-rate multipliers from the conflict of two gradients.

    Args:
        params: the tensors (or ``(name, tensor)`` pairs) whose gradients :meth:`measure` gets,
            in the same order as its gradient lists.
        config: the rule's settings (default :class:`LRTemperingConfig`).
    """

    def __init__(self, params: ParamsLike, config: LRTemperingConfig | None = None) -> None:
        config = LRTemperingConfig() if config is None else config
        if not isinstance(config, LRTemperingConfig):
            raise LRTemperingError(
                f"config must be an LRTemperingConfig, got {type(config).__name__}."
            )
        self.config = config
        named = _named(params)
        self.names: tuple[str, ...] = tuple(name for name, _ in named)
        self._params: list[Tensor] = [p for _, p in named]
        self._index = {id(p): i for i, p in enumerate(self._params)}
        self._multipliers = np.ones(len(named))
        self.measurements = 0  # measurement steps that updated the multipliers
        self.conflict_counts = np.zeros(len(named), dtype=np.int64)  # problems per tensor
        self.last_step: int | None = None  # last step passed to measure()
        self.last_cosines = np.full(len(named), np.nan)  # of the last measurement
        self.last_norm_ratios = np.full(len(named), np.nan)
        self.last_problems = np.zeros(len(named), dtype=bool)

    # ------------------------------------------------------------------ queries
    @property
    def n_tensors(self) -> int:
        """Number of tracked tensors."""
        return len(self._params)

    def is_measurement_step(self, step: int) -> bool:
        """True on steps ``step % measure_every == 0`` (then pass separate gradients)."""
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 0:
            raise LRTemperingError(f"step must be an int >= 0, got {step!r}.")
        return step % self.config.measure_every == 0

    def multipliers(self) -> np.ndarray:
        """(n_tensors,) current learning-rate multipliers in [floor, 1] (a copy)."""
        return self._multipliers.copy()

    # ------------------------------------------------------------------ the rule
    def measure(
        self,
        step: int,
        g_clip: Sequence[Tensor | None],
        g_align: Sequence[Tensor | None],
        align_weight: float = 1.0,
    ) -> dict[str, Any]:
        """Update the multipliers on a measurement step; return telemetry.

        Args:
            step: 0-based global step. On other steps nothing changes and the gradients are
                not read (None lists are fine).
            g_clip: per-tensor gradients of L_clip (None = zeros), same order as the params.
            g_align: per-tensor gradients of the alignment term as it enters the loss
                (``alpha L_CMA``); None = zeros.
            align_weight: factor applied to ``g_align`` for the norm rule (pass alpha when
                ``g_align`` is the gradient of the unweighted L_CMA), >= 0.
        Returns:
            ``measured`` (bool), ``step``, ``conflict_share`` (tensors with a problem / all;
            NaN when not measured or non-finite), ``direction_conflict_share``,
            ``norm_conflict_share``, ``mean_multiplier``, ``min_multiplier``,
            ``n_at_floor`` (tensors at the floor), Python scalars.
        """
        measured = self.is_measurement_step(step)
        self.last_step = int(step)
        nan = math.nan
        shares = {"conflict_share": nan, "direction_conflict_share": nan}
        shares["norm_conflict_share"] = nan
        if measured:
            shares = self._measure(g_clip, g_align, align_weight)
        return {
            "measured": measured,
            "step": int(step),
            **shares,
            "mean_multiplier": float(self._multipliers.mean()),
            "min_multiplier": float(self._multipliers.min()),
            "n_at_floor": int(np.sum(self._multipliers <= self.config.floor)),
        }

    def _measure(
        self,
        g_clip: Sequence[Tensor | None],
        g_align: Sequence[Tensor | None],
        align_weight: float,
    ) -> dict[str, float]:
        n = self.n_tensors
        if len(g_clip) != n or len(g_align) != n:
            raise LRTemperingError(
                f"got {len(g_clip)} contrastive and {len(g_align)} alignment gradients for "
                f"{n} tensors; pass one entry (a tensor or None) per tracked tensor, in order."
            )
        weight = float(align_weight)
        if not 0.0 <= weight < math.inf:
            raise LRTemperingError(f"align_weight must be finite and >= 0, got {align_weight}.")
        dot, clip_sq, align_sq = self._dot_and_norms(g_clip, g_align)
        align_sq = align_sq * weight**2
        dot = dot * weight
        if not (
            np.isfinite(dot).all() and np.isfinite(clip_sq).all() and np.isfinite(align_sq).all()
        ):
            self.last_cosines[:] = np.nan
            self.last_norm_ratios[:] = np.nan
            self.last_problems[:] = False
            nan = math.nan
            return {
                "conflict_share": nan,
                "direction_conflict_share": nan,
                "norm_conflict_share": nan,
            }
        clip_norm, align_norm = np.sqrt(clip_sq), np.sqrt(align_sq)
        both = (clip_norm > 0) & (align_norm > 0)
        cosine = np.zeros(n)
        cosine[both] = np.clip(dot[both] / (clip_norm[both] * align_norm[both]), -1.0, 1.0)
        ratio = np.where(align_norm > 0, np.inf, 0.0)
        has_clip = clip_norm > 0
        ratio[has_clip] = align_norm[has_clip] / clip_norm[has_clip]
        cfg = self.config
        direction = both & (cosine < cfg.conflict_threshold)
        norm = has_clip & (ratio > cfg.max_norm_ratio)
        problem = direction | norm
        m = self._multipliers
        shrink, recovery = cfg.factors()
        self._multipliers = np.where(
            problem, np.maximum(m * shrink, cfg.floor), np.minimum(m * recovery, 1.0)
        )
        self.measurements += 1
        self.conflict_counts += problem
        self.last_cosines, self.last_norm_ratios, self.last_problems = cosine, ratio, problem
        return {
            "conflict_share": float(problem.mean()),
            "direction_conflict_share": float(direction.mean()),
            "norm_conflict_share": float(norm.mean()),
        }

    def _dot_and_norms(
        self, g_clip: Sequence[Tensor | None], g_align: Sequence[Tensor | None]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per tensor <g_c, g_a>, ||g_c||^2, ||g_a||^2 as (n,) float64, one device sync."""
        rows: list[Tensor] = []
        for i, (gc, ga) in enumerate(zip(g_clip, g_align, strict=True)):
            param = self._params[i]
            for g, kind in ((gc, "contrastive"), (ga, "alignment")):
                if g is not None and g.shape != param.shape:
                    raise LRTemperingError(
                        f"{kind} gradient {i} ({self.names[i]}) has shape {tuple(g.shape)}, the "
                        f"tensor {tuple(param.shape)}; pass the gradients in parameter order."
                    )
            device = (gc if gc is not None else ga if ga is not None else param).device
            zero = torch.zeros((), dtype=torch.float32, device=device)
            c = None if gc is None else gc.detach().reshape(-1).float()
            a = None if ga is None else ga.detach().reshape(-1).float()
            rows.append(
                torch.stack(
                    [
                        zero if c is None or a is None else torch.dot(c, a),
                        zero if c is None else torch.dot(c, c),
                        zero if a is None else torch.dot(a, a),
                    ]
                )
            )
        devices = {r.device for r in rows}
        if len(devices) > 1:
            rows = [r.cpu() for r in rows]
        stats = torch.stack(rows).double().cpu().numpy()  # (n, 3)
        return stats[:, 0], stats[:, 1], stats[:, 2]

    # ------------------------------------------------------------------ optimiser
    def apply(self, optimizer: torch.optim.Optimizer, base_lr: float | Sequence[float]) -> None:
        """Set each group's ``lr = base_lr * multiplier`` of its tensors.

        ``base_lr``: one learning rate (the schedule's value this step) or one per group. A
        group holding several tracked tensors gets the smallest of their multipliers; a group
        with none of them gets ``base_lr`` unchanged. Build the groups with
        :func:`param_groups` for one tensor per group.
        """
        groups = optimizer.param_groups
        if isinstance(base_lr, (int, float)) and not isinstance(base_lr, bool):
            bases = [float(base_lr)] * len(groups)
        else:
            bases = [float(b) for b in base_lr]
            if len(bases) != len(groups):
                raise LRTemperingError(
                    f"got {len(bases)} base learning rates for {len(groups)} parameter groups; "
                    "pass one float or one per group."
                )
        for base in bases:
            if not 0.0 <= base < math.inf:
                raise LRTemperingError(f"base_lr must be finite and >= 0, got {base}.")
        seen = 0
        for group, base in zip(groups, bases, strict=True):
            idx = [self._index[id(p)] for p in group["params"] if id(p) in self._index]
            seen += len(idx)
            group["lr"] = base * (float(self._multipliers[idx].min()) if idx else 1.0)
        if seen != self.n_tensors:
            raise LRTemperingError(
                f"the optimiser holds {seen} of the {self.n_tensors} tracked tensors; build it "
                "from param_groups() of the same parameters given to LRTempering."
            )

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed for an exact resume, as plain Python values."""
        return {
            "format": STATE_FORMAT,
            "names": list(self.names),
            "multipliers": [float(m) for m in self._multipliers],
            "conflict_counts": [int(c) for c in self.conflict_counts],
            "measurements": int(self.measurements),
            "last_step": self.last_step,
            "config": dataclasses.asdict(self.config),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output. Refuses a state of another number of tensors,
        other tensor names or other settings (the message says which)."""
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            found = state.get("format") if isinstance(state, Mapping) else type(state).__name__
            raise LRTemperingError(
                f"not an LR-tempering state (format {found!r}); pass the dict that "
                "LRTempering.state_dict() returned."
            )
        multipliers = np.asarray(state["multipliers"], dtype=np.float64)
        if multipliers.shape != (self.n_tensors,):
            raise LRTemperingError(
                f"the state holds {multipliers.size} tensors, this object {self.n_tensors}; "
                "resume with the same list of trainable parameters (same model and "
                "trainable settings)."
            )
        names = tuple(state["names"])
        if names != self.names:
            diff = [f"{a}!={b}" for a, b in zip(names, self.names, strict=True) if a != b]
            raise LRTemperingError(
                f"the state's tensor names differ from this object's ({diff[:3]}); resume with "
                "the parameters in the same order."
            )
        saved = dict(state["config"])
        current = dataclasses.asdict(self.config)
        if saved != current:
            keys = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
            raise LRTemperingError(
                f"the state was made with other settings ({keys}); resume with the same "
                "LRTemperingConfig or start a fresh run."
            )
        floor = self.config.floor
        if not np.all((multipliers >= floor - 1e-12) & (multipliers <= 1.0)):
            raise LRTemperingError(f"saved multipliers lie outside [floor={floor}, 1].")
        counts = np.asarray(state["conflict_counts"], dtype=np.int64)
        if counts.shape != (self.n_tensors,):
            raise LRTemperingError("conflict_counts does not match the number of tensors.")
        self._multipliers = multipliers.copy()
        self.conflict_counts = counts.copy()
        self.measurements = int(state["measurements"])
        last = state.get("last_step")
        self.last_step = None if last is None else int(last)
