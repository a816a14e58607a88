"""One training loop for every backend: contrastive pretraining and TPC-CMA fine-tuning.

Objective at step t:  L = L_clip + alpha(t) * L_CMA,  alpha(t) from the three-phase curriculum
(:mod:`tpccma_lib.training.curriculum`); with ``gradient_aware`` the two gradients are measured on the
trainable parameters and combined by the gradient-aware scheduler. Pretraining is the same
loop with ``alpha_target = 0``.

What the loop provides: AdamW with linear LR warm-up then cosine decay, gradient clipping,
optional bf16/fp16 autocast on CUDA, a tqdm progress bar, one JSON line of metrics per logged
step (``metrics.jsonl``), checkpoints written atomically every ``checkpoint_every`` steps and
**exact resume** (batches are a pure function of (seed, step), so a killed and resumed run
ends with the same weights as an uninterrupted one), and data parallelism over
``torch.distributed`` (launch with ``torchrun``; each rank takes its slice of the global
batch and the losses gather the global batch with autograd).
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from tpccma_lib.atomic import atomic_write_text, remove_stale_temp_files
from tpccma_lib.data.loading import ordered_map
from tpccma_lib.locks import RunLockedError, run_lock
from tpccma_lib.models.base import AMP_MODES, DualEncoder, ModelError
from tpccma_lib.models.factory import load_checkpoint, save_checkpoint
from tpccma_lib.settings import Settings
from tpccma_lib.training.curriculum import (
    CurriculumConfig,
    GradientAwareScheduler,
    alpha_at,
    phase_at,
)
from tpccma_lib.training.distributed import rank_and_world
from tpccma_lib.training.losses import ClipLoss, CMALoss
from tpccma_lib.training.lr_tempering import LRTempering, LRTemperingConfig, param_groups

__all__ = [
    "TrainConfig",
    "TrainError",
    "RunLockedError",
    "PairBatcher",
    "InputSource",
    "train",
    "TrainResult",
    "weights_digest",
    "data_digest",
]


class TrainError(ValueError):
    """Bad training settings or an incompatible resume; the message says what to change."""


#: TrainConfig fields that must be integers / finite numbers (the curriculum checks its own).
_INT_FIELDS = (
    "steps",
    "batch_size",
    "warmup_steps",
    "seed",
    "checkpoint_every",
    "log_every",
    "eval_every",
    "workers",
)
_FLOAT_FIELDS = (
    "lr",
    "weight_decay",
    "min_lr_ratio",
    "grad_clip",
    "centroid_weight",
    "distribution_weight",
)


def _check_device_spec(spec: Any) -> None:
    """Refuse a device string torch cannot parse ('tpu7'), with the accepted forms."""
    if spec == "auto":
        return
    try:
        torch.device(spec)
    except (RuntimeError, TypeError, ValueError):
        raise TrainError(
            f"device must be 'auto', 'cpu', 'cuda' or 'cuda:<index>', got {spec!r}."
        ) from None


@dataclass
class TrainConfig(Settings):
    """All settings of one training run (CLI flags and papermill parameters map onto these)."""

    settings_error: ClassVar[type[Exception]] = TrainError

    steps: int = 300  # optimisation steps in the whole run
    batch_size: int = 256  # global batch (image-caption pairs), split across ranks
    lr: float = 1e-3  # peak AdamW learning rate
    weight_decay: float = 0.1  # AdamW weight decay
    warmup_steps: int = 10  # linear LR warm-up steps, then cosine decay to min_lr_ratio * lr
    min_lr_ratio: float = 0.1  # final LR as a fraction of the peak
    grad_clip: float = 1.0  # max global gradient norm (0 disables)
    amp: str = "none"  # "none", "bf16" or "fp16" (autocast on CUDA; statistics stay fp32)
    device: str = "auto"  # "auto" (CUDA if present), "cpu", "cuda", "cuda:1", ...
    workers: int = 4  # DataLoader processes decoding images (open_clip; 0: the main process)
    seed: int = 0  # fixes batch order and caption choice
    alpha_target: float = 0.0  # weight of L_CMA in phase 3 (0 = contrastive only)
    warmup_fraction: float = 0.2  # phase 1: fraction of steps with the contrastive loss only
    ramp_fraction: float = 0.3  # phase 2: fraction of steps over which alpha ramps to alpha_target
    ramp_shape: str = "cosine"  # "linear" or "cosine" ramp
    gradient_aware: bool = True  # gradient-aware scheduling of the alignment term (ablation switch)
    conflict_rule: str = "lr"  # "lr" (the paper's rule: slow the conflicting tensors' learning
    # rates, lr_tempering.LRTempering), "pcgrad" (project the conflicting part), "scale" (temper
    # alpha)
    measure_every: int = 20  # measure the two gradients every k steps (two backward passes
    # there, one elsewhere: benchmarks/bench_train.py, "clip+cma+default")
    max_norm_ratio: float = 1.0  # "lr": norm problem above it; "pcgrad"/"scale": cap on the ratio
    # ||alpha grad L_CMA|| / ||grad L_clip||
    conflict_threshold: float = 0.0  # gradient cosine below which the two objectives conflict
    recovery: float = 1.25  # "lr": recovery of a multiplier per 20 clean steps (LR_RULE_RATE_
    # STEPS), up to 1; "scale": per clean measurement
    conflict_shrink: float = 0.5  # "lr": multiplier factor per 20 problem steps; "scale": per
    # measured problem
    min_tempering: float = 0.05  # "lr"/"scale": floor of a multiplier after shrinking
    # lambda_c, lambda_d: only alpha * lambda matters; these put alpha's range 0.01..1 where the gap
    # moves (benchmarks/calibrate_cma_weights.py; README "Choosing the CMA weights")
    centroid_weight: float = 10.0  # lambda_c of the centroid term of L_CMA
    distribution_weight: float = 100.0  # lambda_d of the distribution term of L_CMA
    distribution_term: str = (
        "bures"  # "bures" (default, matches the Bures distribution gap), "mmd", "coral"
    )
    checkpoint_every: int = 100  # write a resumable checkpoint every N steps (and at the end)
    log_every: int = 5  # write a metrics line every N steps
    eval_every: int = 0  # call the eval callback every N steps (0: only at the end)

    def __post_init__(self) -> None:
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TrainError(f"{name} must be an integer, got {value!r}.")
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise TrainError(f"{name} must be a number, got {value!r}.")
            if not math.isfinite(value):
                raise TrainError(f"{name} must be a finite number, got {value}.")
        if self.steps < 1:
            raise TrainError(f"steps must be >= 1, got {self.steps}.")
        if self.batch_size < 4:
            raise TrainError(
                f"batch_size must be >= 4 (the CMA statistics need it), got {self.batch_size}."
            )
        if self.lr <= 0:
            raise TrainError(f"lr must be positive, got {self.lr}.")
        for name in (
            "weight_decay",
            "warmup_steps",
            "grad_clip",
            "seed",
            "eval_every",
            "workers",
            "centroid_weight",
            "distribution_weight",
        ):
            if getattr(self, name) < 0:
                hint = " (0 disables clipping)" if name == "grad_clip" else ""
                raise TrainError(f"{name} must be >= 0{hint}, got {getattr(self, name)}.")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise TrainError(
                f"min_lr_ratio must lie in [0, 1] (the final LR as a fraction of lr), got "
                f"{self.min_lr_ratio}."
            )
        if self.amp not in ("none", "bf16", "fp16"):
            raise TrainError(f"amp must be 'none', 'bf16' or 'fp16', got {self.amp!r}.")
        _check_device_spec(self.device)
        for name in ("checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise TrainError(f"{name} must be >= 1, got {getattr(self, name)}.")
        self.curriculum()  # validates alpha_target, phase fractions, shapes

    def curriculum(self) -> CurriculumConfig:
        """The curriculum part of these settings (validated there): every field of
        ``CurriculumConfig`` under the same name here, except ``rule`` = ``conflict_rule``."""
        names = CurriculumConfig.field_names() - {"rule"}
        try:
            return CurriculumConfig(
                rule=self.conflict_rule, **{name: getattr(self, name) for name in names}
            )
        except ValueError as exc:
            raise TrainError(str(exc)) from exc


# ---------------------------------------------------------------------- data
@dataclass(frozen=True)
class InputSource:
    """Where the trainable stage's inputs come from.

    ``image_fn(indices) -> Tensor (B, ...)`` and ``text_fn(indices) -> Tensor (B, ...)`` map
    image / caption indices to model inputs: rows of cached tower features for the embedded
    default, preprocessed pixels and tokens for open_clip.
    """

    image_fn: Callable[[np.ndarray], torch.Tensor]
    text_fn: Callable[[np.ndarray], torch.Tensor]
    text_to_image: np.ndarray  # (N_txt,) int64
    n_images: int
    in_workers: bool = False  # image_fn is CPU work (decoding) for DataLoader workers

    @classmethod
    def from_frozen(cls, inputs: Any) -> InputSource:
        """From :class:`tpccma_lib.data.features.FrozenInputs` (cached tower features)."""
        img, txt = inputs.image, inputs.text
        return cls(
            image_fn=lambda idx: img[torch.as_tensor(idx)],
            text_fn=lambda idx: txt[torch.as_tensor(idx)],
            text_to_image=np.asarray(inputs.text_to_image),
            n_images=int(img.shape[0]),
        )

    @classmethod
    def from_dataset(cls, model: DualEncoder, dataset: Any) -> InputSource:
        """Preprocess on the fly (open_clip): images and captions of a ``CaptionedImageSet``."""
        texts, t2i = dataset.flat_captions()
        return cls(
            image_fn=lambda idx: model.image_inputs([dataset.images[int(i)] for i in idx]),
            text_fn=lambda idx: model.text_inputs([texts[int(i)] for i in idx]),
            text_to_image=np.asarray(t2i, dtype=np.int64),
            n_images=len(dataset),
            in_workers=model.inputs_in_workers,
        )


class PairBatcher:
    """Deterministic batches of (image, one of its captions) pairs; a pure function of step.

    Each epoch visits the images in a permutation drawn from ``rng(seed, epoch)`` and pairs
    each with a caption drawn uniformly from its captions (as CLIP training on COCO does).
    The last partial batch of an epoch is dropped, so every batch has ``batch_size`` pairs.
    """

    def __init__(
        self, text_to_image: np.ndarray, n_images: int, batch_size: int, seed: int
    ) -> None:
        if n_images < 2:
            raise TrainError(f"training needs at least 2 images, got {n_images}.")
        self.batch_size = min(batch_size, n_images)
        self.seed = seed
        self.n_images = n_images
        order = np.argsort(text_to_image, kind="stable")
        counts = np.bincount(text_to_image, minlength=n_images)
        if (counts == 0).any():
            raise TrainError(
                f"{int((counts == 0).sum())} image(s) have no caption; drop them first."
            )
        self._caption_start = np.concatenate([[0], np.cumsum(counts)[:-1]])
        self._caption_count = counts
        self._caption_order = order
        self.steps_per_epoch = n_images // self.batch_size

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(image indices, caption indices), each (batch_size,), for global step ``step``."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(self.n_images)
        pick = rng.random(self.n_images)  # one caption choice per image this epoch
        imgs = perm[pos * self.batch_size : (pos + 1) * self.batch_size]
        offset = (pick[imgs] * self._caption_count[imgs]).astype(np.int64)
        caps = self._caption_order[self._caption_start[imgs] + offset]
        return imgs, caps


# ---------------------------------------------------------------------- helpers
def _resolve_device(spec: str) -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    _check_device_spec(spec)
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TrainError("device='cuda' but no CUDA device is visible; use device='cpu' or 'auto'.")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise TrainError(
            f"device={spec!r} but only {torch.cuda.device_count()} CUDA device(s) are visible "
            "(indices from 0); pick another index or device='auto'."
        )
    return dev


def _lr_factor(step: int, cfg: TrainConfig) -> float:
    """LR multiplier: linear warm-up over ``warmup_steps``, then cosine to ``min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def _allreduce_mean(
    grads: list[torch.Tensor | None], params: list[torch.nn.Parameter]
) -> list[torch.Tensor]:
    out = [g if g is not None else torch.zeros_like(p) for g, p in zip(grads, params, strict=True)]
    _, world = rank_and_world()
    if world > 1:
        for g in out:
            dist.all_reduce(g)
            g.div_(world)
    return out


@dataclass
class TrainResult:
    """What a run leaves: the trained model, its log and where its checkpoints are."""

    model: DualEncoder
    history: list[dict[str, Any]]
    out_dir: Path
    final_checkpoint: Path
    resumed_from_step: int
    wall_time_s: float


def weights_digest(model: DualEncoder) -> str:
    """A short content hash of the model's trainable weights (which base model a run starts from)."""
    h = hashlib.sha256()
    for name, tensor in sorted(model.trainable_state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:20]


def data_digest(data: InputSource) -> dict[str, Any]:
    """Sizes and caption->image pairing of the training inputs (a cheap identity of the data)."""
    t2i = np.ascontiguousarray(np.asarray(data.text_to_image, dtype=np.int64))
    return {
        "n_images": int(data.n_images),
        "n_texts": int(t2i.shape[0]),
        "pairing": hashlib.sha256(t2i.tobytes()).hexdigest()[:20],
    }


def _config_fingerprint(
    model: DualEncoder,
    cfg: TrainConfig,
    data: dict[str, Any] | None = None,
    init_weights: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What a resumed run must share with the run that wrote the checkpoint.

    The model and train config (without the keys that do not change the weights), the data
    (sizes, pairing and, from :class:`~tpccma_lib.experiment.Experiment`, the data config) and
    the digest of the weights the run started from (the base model's identity).
    """
    d = cfg.to_dict()
    for volatile in ("checkpoint_every", "log_every", "eval_every", "device", "workers"):
        d.pop(volatile)
    out: dict[str, Any] = {"model_config": model.config(), "train_config": d}
    if data is not None:
        out["data"] = data
    if init_weights is not None:
        out["init_weights"] = init_weights
    if extra:
        out["extra"] = extra
    return out


def _flat(prefix: str, value: Any) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (readable keys for the mismatch message)."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flat(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: value}


def _check_resume(payload: dict[str, Any], now: dict[str, Any], path: Path) -> None:
    """Refuse to resume a checkpoint made with other settings, data or base model.

    Parts the checkpoint does not record (written by an older version) are not compared.
    """
    saved = payload.get("fingerprint", {})
    if saved.get("model_config") != now["model_config"]:
        raise ModelError(
            f"checkpoint {path} belongs to another model ({saved.get('model_config')}); "
            "use a new out_dir or the matching model."
        )
    changed: dict[str, tuple[Any, Any]] = {}
    sections = (
        ("train_config", ""),
        ("data", "data "),
        ("extra", ""),
        ("init_weights", "base model weights digest"),
    )
    for section, label in sections:
        if section not in saved:
            continue
        if section == "init_weights":
            if saved[section] != now.get(section):
                changed[label] = (saved[section], now.get(section))
            continue
        old, new = _flat("", saved.get(section, {})), _flat("", now.get(section, {}))
        for k in set(old) | set(new):
            if old.get(k) != new.get(k):
                changed[f"{label}{k}"] = (old.get(k), new.get(k))
    if changed:
        raise TrainError(
            f"cannot resume from {path}: the settings changed since it was written ("
            + ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in sorted(changed.items()))
            + "). Use a new out_dir, restore the old settings, or pass resume=False "
            "(--no-resume) to start over."
        )


def _read_log(log_path: Path) -> list[dict[str, Any]]:
    """Records of ``metrics.jsonl`` for a resume.

    A cut-off or invalid *last* line (what a crash during the append leaves) is dropped with a
    warning; an invalid line before it is an error naming the file and line.
    """
    lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    history = []
    for pos, (lineno, line) in enumerate(numbered):
        try:
            record = json.loads(line)
            if not isinstance(record, dict) or "step" not in record:
                raise ValueError("not a metrics record")
        except ValueError as exc:
            if pos == len(numbered) - 1:
                warnings.warn(
                    f"{log_path}: dropping the cut-off last line {lineno} ({exc}); an "
                    "interrupted write left it. The run resumes from its checkpoint.",
                    stacklevel=3,
                )
                break
            raise TrainError(
                f"{log_path} line {lineno} is not a valid metrics record ({exc}); fix or "
                "delete that line, or start over with resume=False (--no-resume)."
            ) from None
        history.append(record)
    return history


# ---------------------------------------------------------------------- the loop
def train(
    model: DualEncoder,
    data: InputSource,
    cfg: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    resume: bool = True,
    eval_fn: Callable[[DualEncoder, int], dict[str, float]] | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    extra_checkpoint: dict[str, Any] | None = None,
    fingerprint_extra: dict[str, Any] | None = None,
    keep_checkpoint: bool = False,
) -> TrainResult:
    """Train ``model``'s trainable parameters on pairs from ``data``.

    Args:
        model: any :class:`DualEncoder`; only parameters with ``requires_grad`` change.
        data: where batches come from (:class:`InputSource`).
        cfg: the run's settings.
        out_dir: receives ``checkpoint.pt`` (resumable), ``final.pt`` and ``metrics.jsonl``.
        resume: continue from ``out_dir/checkpoint.pt`` when present (config must match).
            A finished run (``final.pt`` of the same fingerprint) is not trained again: its
            weights are loaded from ``final.pt`` and ``resumed_from_step == cfg.steps``.
        eval_fn: called as ``eval_fn(model, step)`` every ``eval_every`` steps and at the end;
            its numbers are logged (e.g. the gap decomposition on validation data).
        stop_after: stop (after checkpointing) once this step count is reached, to simulate
            an interrupted run in tests.
        extra_checkpoint: more entries to store in ``final.pt`` (e.g. data config).
        fingerprint_extra: more settings a resume must match (e.g. the data config); the
            fingerprint always covers the model and train config, the data's sizes and pairing
            and the digest of the weights the run starts from.
        keep_checkpoint: keep ``checkpoint.pt`` (weights + optimizer state, about 3x the
            weights) once ``final.pt`` is written; by default it is deleted, since only
            ``final.pt`` and ``metrics.jsonl`` are read by later stages.
    Returns:
        a :class:`TrainResult`.
    Raises:
        TrainError: bad settings (e.g. a batch larger than the training set) or a resume from a
            checkpoint of other settings, data or base model.
        RunLockedError: another process is training into ``out_dir``.
    """
    out_dir = Path(out_dir)
    rank, _ = rank_and_world()
    if data.n_images >= 2 and cfg.batch_size > data.n_images:
        raise TrainError(
            f"batch_size {cfg.batch_size} is larger than the training set ({data.n_images} "
            f"images); use a batch_size <= {data.n_images} or more training data."
        )
    options = {
        "resume": resume,
        "eval_fn": eval_fn,
        "progress": progress,
        "stop_after": stop_after,
        "extra_checkpoint": extra_checkpoint,
        "fingerprint_extra": fingerprint_extra,
        "keep_checkpoint": keep_checkpoint,
    }
    if rank != 0:  # rank 0 holds the lock for the whole group
        return _train(model, data, cfg, out_dir, **options)
    with run_lock(out_dir):
        remove_stale_temp_files(out_dir)
        return _train(model, data, cfg, out_dir, **options)


@dataclass
class _Objective:
    """The run's losses and how their gradients combine: the three gradient paths.

    alpha = 0: the contrastive gradient alone. alpha > 0 on a measurement step of the
    gradient-aware scheduler: the contrastive and alignment gradients separately, combined by
    the scheduler's rule. Otherwise: one gradient of ``L_clip + alpha_eff L_CMA``.
    Gradients are averaged over ranks (DDP) before they are combined.
    """

    params: list[torch.nn.Parameter]
    clip_loss: ClipLoss
    cma_loss: CMALoss
    scheduler: GradientAwareScheduler
    scaler: torch.amp.GradScaler
    lr_tempering: LRTempering | None = None  # conflict_rule "lr": per-tensor LR multipliers

    @classmethod
    def of(
        cls,
        cfg: TrainConfig,
        named_params: list[tuple[str, torch.nn.Parameter]],
        curriculum: CurriculumConfig,
        fp16: bool,
    ) -> _Objective:
        """The objective ``cfg`` describes (loss scaling only for fp16 autocast)."""
        params = [p for _, p in named_params]
        cma = CMALoss(
            centroid_weight=cfg.centroid_weight,
            distribution_weight=cfg.distribution_weight,
            distribution_term=cfg.distribution_term,
        )
        scaler = torch.amp.GradScaler("cuda", enabled=fp16)
        tempering = None
        if curriculum.gradient_aware and curriculum.rule == "lr":
            tempering = LRTempering(named_params, lr_tempering_config(cfg))
        scheduler = GradientAwareScheduler(curriculum)
        return cls(params, ClipLoss(), cma, scheduler, scaler, tempering)

    def _grad(self, loss: torch.Tensor, retain_graph: bool = False) -> list[torch.Tensor]:
        g = torch.autograd.grad(
            self.scaler.scale(loss), self.params, retain_graph=retain_graph, allow_unused=True
        )
        return list(g)

    def set_lr(self, optimizer: torch.optim.Optimizer, lr: float) -> None:
        """The schedule's ``lr`` on every group, times each tensor's multiplier (rule "lr")."""
        if self.lr_tempering is not None:
            self.lr_tempering.apply(optimizer, lr)
        else:
            for group in optimizer.param_groups:
                group["lr"] = lr

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's state (checkpoint key ``scheduler``), with the LR multipliers of
        rule "lr" under ``lr_tempering``."""
        state = self.scheduler.state_dict()
        if self.lr_tempering is not None:
            state = {**state, "lr_tempering": self.lr_tempering.state_dict()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        state = dict(state)
        tempering = state.pop("lr_tempering", None)
        self.scheduler.load_state_dict(state)
        if self.lr_tempering is not None:
            if tempering is None:
                raise TrainError("the checkpoint has no LR-tempering state; start a fresh run.")
            self.lr_tempering.load_state_dict(tempering)

    def gradients(
        self, step: int, alpha: float, img_emb: torch.Tensor, txt_emb: torch.Tensor, l_clip: Any
    ) -> tuple[list[torch.Tensor], dict[str, float], dict[str, Any]]:
        """(gradient per parameter, CMA loss values to log, scheduler telemetry)."""
        if alpha <= 0:
            return _allreduce_mean(self._grad(l_clip), self.params), {}, {}
        cma = self.cma_loss(img_emb, txt_emb)
        if self.scheduler.needs_separate_grads(step):
            g_clip = self._grad(l_clip, retain_graph=True)
            g_align = self._grad(alpha * cma.total)
            g_clip = _allreduce_mean(g_clip, self.params)
            g_align = _allreduce_mean(g_align, self.params)
            lr_measured = None
            if self.lr_tempering is not None:  # reads g_clip before combine overwrites it
                lr_measured = _lr_telemetry(self.lr_tempering.measure(step, g_clip, g_align))
            grads, telemetry = self.scheduler.combine(step, g_clip, g_align, reuse_clip=True)
            telemetry.update(lr_measured or {})
        else:
            a_eff = self.scheduler.effective_alpha(alpha)
            grads = _allreduce_mean(self._grad(l_clip + a_eff * cma.total), self.params)
            telemetry = {"effective_alpha": a_eff}
        logged = {
            "loss_cma": float(cma.total.detach()),
            "cma_centroid": float(cma.centroid),
            "cma_distribution": float(cma.distribution),
        }
        return grads, logged, telemetry


#: The lr rule's ``conflict_shrink`` and ``recovery`` are rates per this many steps (the default
#: ``measure_every``), so measuring every k steps applies ``shrink**(k / 20)``: the interval
#: then sets how often the rule looks, not how hard it brakes (measured: benchmarks/matched_gap.py).
LR_RULE_RATE_STEPS = 20


def lr_tempering_config(cfg: TrainConfig) -> LRTemperingConfig:
    """The per-tensor LR rule's settings from a run's: conflict_threshold, max_norm_ratio,
    measure_every, shrink = conflict_shrink, recovery, floor = min_tempering, and
    ``rate_steps`` = :data:`LR_RULE_RATE_STEPS`."""
    return LRTemperingConfig(
        conflict_threshold=cfg.conflict_threshold,
        max_norm_ratio=cfg.max_norm_ratio,
        shrink=cfg.conflict_shrink,
        recovery=cfg.recovery,
        floor=cfg.min_tempering,
        measure_every=cfg.measure_every,
        rate_steps=LR_RULE_RATE_STEPS,
    )


def _lr_telemetry(measured: dict[str, Any]) -> dict[str, Any]:
    """What a log line records of the LR rule: the share of tensors in conflict and the
    multipliers (mean, min, how many at the floor)."""
    keys = ("conflict_share", "mean_multiplier", "min_multiplier", "n_at_floor")
    return {f"lr_{k}": measured[k] for k in keys}


def _apply_gradients(
    grads: list[torch.Tensor],
    params: list[torch.nn.Parameter],
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    grad_clip: float,
) -> dict[str, float]:
    """One optimiser step with ``grads`` (clipped to ``grad_clip`` when > 0); the grad norm."""
    for p, g in zip(params, grads, strict=True):
        p.grad = g
    scaler.unscale_(optimizer)
    logged = {}
    if grad_clip > 0:
        logged["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, grad_clip))
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    return logged


def _resume_state(
    out_dir: Path,
    fingerprint: dict[str, Any],
    model: DualEncoder,
    optimizer: torch.optim.Optimizer,
    objective: _Objective,
    resume: bool,
) -> tuple[int, list[dict[str, Any]]]:
    """(first step, log records before it): from ``checkpoint.pt`` when resuming, else (0, [])
    and an old log and ``final.pt`` removed. A checkpoint of other settings, data or base is
    refused."""
    ckpt_path, log_path = out_dir / "checkpoint.pt", out_dir / "metrics.jsonl"
    if resume and ckpt_path.exists():
        payload = load_checkpoint(ckpt_path)
        _check_resume(payload, fingerprint, ckpt_path)
        model.load_state_dict(payload["state_dict"], strict=False)
        optimizer.load_state_dict(payload["optimizer"])
        objective.load_state_dict(payload["scheduler"])
        start_step = int(payload["step"])
        history = []
        if log_path.exists():
            history = [h for h in _read_log(log_path) if h["step"] < start_step]
        return start_step, history
    if rank_and_world()[0] == 0:  # starting over: an old log and final.pt are stale
        log_path.unlink(missing_ok=True)
        (out_dir / "final.pt").unlink(missing_ok=True)
    return 0, []


def _log_values(
    model: DualEncoder, l_clip: Any, img_emb: torch.Tensor, txt_emb: torch.Tensor, telemetry: dict
) -> dict[str, Any]:
    """What a logged step records beyond the losses: batch gap, logit scale, telemetry."""
    with torch.no_grad():
        batch_gap = float((img_emb.float().mean(0) - txt_emb.float().mean(0)).norm())
    return {
        "loss_clip": float(l_clip.detach()),
        "batch_gap": batch_gap,
        "logit_scale": float(model.logit_scale().detach()),
        **{
            k: (float(v) if isinstance(v, (int, float, bool, torch.Tensor)) else v)
            for k, v in telemetry.items()
        },
    }


def _finish(
    model: DualEncoder,
    cfg: TrainConfig,
    final_path: Path,
    history: list[dict[str, Any]],
    eval_fn: Callable[[DualEncoder, int], dict[str, float]] | None,
    extra_checkpoint: dict[str, Any] | None,
    fingerprint: dict[str, Any],
) -> None:
    """The final evaluation (added to the last log record) and ``final.pt`` (rank 0), which
    records the run's ``fingerprint`` so a rerun can tell it is finished."""
    final_eval = {}
    if eval_fn is not None:
        final_eval = {f"val_{k}": v for k, v in eval_fn(model, cfg.steps).items()}
        if history:
            history[-1].update(final_eval)
    if rank_and_world()[0] == 0:
        extra = {
            "train_config": cfg.to_dict(),
            "step": cfg.steps,
            "final_eval": final_eval,
            "fingerprint": fingerprint,
        }
        save_checkpoint(final_path, model, **extra, **(extra_checkpoint or {}))


@dataclass
class _Setup:
    """What a run is made of once: device, trainable parameters, objective, optimiser, batches."""

    rank: int
    world: int
    device: torch.device
    params: list[torch.nn.Parameter]
    curriculum: CurriculumConfig
    amp_dtype: torch.dtype | None
    objective: _Objective
    optimizer: torch.optim.Optimizer
    batcher: PairBatcher

    @classmethod
    def of(cls, model: DualEncoder, data: InputSource, cfg: TrainConfig) -> _Setup:
        """Move ``model`` to its device and build the rest (errors for settings that cannot run)."""
        rank, world = rank_and_world()
        if cfg.batch_size % world:
            raise TrainError(
                f"batch_size {cfg.batch_size} must be divisible by the world size {world}."
            )
        device = _resolve_device(cfg.device)
        if device.type == "cuda" and world > 1:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        model.to(device)
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        params = [p for _, p in named]
        if not params:
            raise TrainError("the model has no trainable parameters; check ModelConfig.trainable.")
        curriculum = cfg.curriculum()
        amp_dtype = AMP_MODES[cfg.amp]
        if amp_dtype is not None and device.type != "cuda":
            warnings.warn(
                f"amp={cfg.amp!r} is ignored on device {device}: mixed precision runs on CUDA "
                "only here, so this run trains in fp32.",
                stacklevel=4,
            )
            amp_dtype = None
        objective = _Objective.of(cfg, named, curriculum, fp16=amp_dtype == torch.float16)
        groups = (  # rule "lr": one group per tensor, each with its own learning rate
            param_groups(named, cfg.weight_decay) if objective.lr_tempering is not None else params
        )
        optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        batcher = PairBatcher(data.text_to_image, data.n_images, cfg.batch_size, cfg.seed)
        if batcher.batch_size % world:
            raise TrainError(f"{data.n_images} images cannot be split evenly over {world} ranks.")
        return cls(
            rank, world, device, params, curriculum, amp_dtype, objective, optimizer, batcher
        )

    def host_inputs(self, data: InputSource, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's share of step ``step``'s batch on the host: (image, text) inputs."""
        img_idx, cap_idx = self.batcher.batch(step)
        local = self.batcher.batch_size // self.world
        mine = slice(self.rank * local, (self.rank + 1) * local)
        return data.image_fn(img_idx[mine]), data.text_fn(cap_idx[mine])

    def input_stream(
        self, data: InputSource, steps: range, workers: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(image, text) inputs of each step in ``steps``, on the device; decoded ahead in
        ``workers`` DataLoader processes when the source decodes images (same batches as 0)."""
        cuda = self.device.type == "cuda"
        host = ordered_map(
            lambda step: self.host_inputs(data, step),
            steps,
            workers if data.in_workers else 0,
            pin_memory=cuda,
        )
        for x_img, x_txt in host:
            yield x_img.to(self.device, non_blocking=cuda), x_txt.to(self.device, non_blocking=cuda)

    def autocast(self) -> torch.autocast:
        """Mixed precision (bf16/fp16) on CUDA when asked; a no-op context otherwise."""
        return torch.autocast(
            self.device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
        )


def _finished_run(
    out_dir: Path, fingerprint: dict[str, Any], model: DualEncoder, cfg: TrainConfig
) -> TrainResult | None:
    """The result of a finished run in ``out_dir`` (weights loaded from ``final.pt`` into
    ``model``), or None when there is none or its ``final.pt`` records no fingerprint (written
    by an older version). A finished run of other settings is refused like a checkpoint."""
    final_path = out_dir / "final.pt"
    if not final_path.exists():
        return None
    started = time.perf_counter()
    payload = load_checkpoint(final_path)
    if "fingerprint" not in payload:
        return None
    _check_resume(payload, fingerprint, final_path)
    model.load_state_dict(payload["state_dict"], strict=False)
    log_path = out_dir / "metrics.jsonl"
    history = _read_log(log_path) if log_path.exists() else []
    final_eval = dict(payload.get("final_eval") or {})
    if history and final_eval:  # _finish adds the final eval to the last record in memory only
        history[-1] = {**history[-1], **final_eval}
    return TrainResult(
        model, history, out_dir, final_path, cfg.steps, time.perf_counter() - started
    )


def _train(
    model: DualEncoder,
    data: InputSource,
    cfg: TrainConfig,
    out_dir: Path,
    *,
    resume: bool,
    eval_fn: Callable[[DualEncoder, int], dict[str, float]] | None,
    progress: bool,
    stop_after: int | None,
    extra_checkpoint: dict[str, Any] | None,
    fingerprint_extra: dict[str, Any] | None,
    keep_checkpoint: bool,
) -> TrainResult:
    """The body of :func:`train` (``out_dir`` locked by rank 0)."""
    started = time.perf_counter()
    run = _Setup.of(model, data, cfg)
    rank, objective, optimizer = run.rank, run.objective, run.optimizer
    log_path = out_dir / "metrics.jsonl"
    fingerprint = _config_fingerprint(
        model, cfg, data_digest(data), weights_digest(model), fingerprint_extra
    )
    if resume:
        finished = _finished_run(out_dir, fingerprint, model, cfg)
        if finished is not None:
            return finished
    start_step, history = _resume_state(out_dir, fingerprint, model, optimizer, objective, resume)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(log_path, "".join(json.dumps(h) + "\n" for h in history))
    model.train()
    end_step = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    bar = tqdm(
        range(start_step, end_step),
        initial=start_step,
        total=cfg.steps,
        desc=f"train alpha_target={cfg.alpha_target}",
        disable=not progress or rank != 0,
    )
    stream = run.input_stream(data, range(start_step, end_step), cfg.workers)
    for step, (x_img, x_txt) in zip(bar, stream, strict=True):
        alpha = alpha_at(step, cfg.steps, run.curriculum)
        with run.autocast():
            img_emb = model.encode_image_inputs(x_img)
            txt_emb = model.encode_text_inputs(x_txt)
            l_clip = objective.clip_loss(img_emb, txt_emb, model.logit_scale())
        record: dict[str, Any] = {
            "step": step,
            "phase": phase_at(step, cfg.steps, run.curriculum),
            "alpha": alpha,
            "lr": cfg.lr * _lr_factor(step, cfg),  # the schedule's (rule "lr": x multipliers)
        }
        grads, cma_values, telemetry = objective.gradients(step, alpha, img_emb, txt_emb, l_clip)
        objective.set_lr(optimizer, record["lr"])  # after this step's measurement
        record.update(cma_values)
        record.update(
            _apply_gradients(grads, run.params, optimizer, objective.scaler, cfg.grad_clip)
        )

        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            record.update(_log_values(model, l_clip, img_emb, txt_emb, telemetry))
            if eval_fn and cfg.eval_every and done % cfg.eval_every == 0 and done != cfg.steps:
                record.update({f"val_{k}": v for k, v in eval_fn(model, done).items()})
                model.train()
            history.append(record)
            if rank == 0:
                with open(log_path, "a") as fh:
                    fh.write(json.dumps(record) + "\n")
            bar.set_postfix(
                loss=f"{record['loss_clip']:.3f}",
                alpha=f"{alpha:.3f}",
                gap=f"{record['batch_gap']:.3f}",
            )
        if rank == 0 and (done % cfg.checkpoint_every == 0 or done == end_step):
            save_checkpoint(
                out_dir / "checkpoint.pt",
                model,
                optimizer=optimizer.state_dict(),
                scheduler=objective.state_dict(),
                step=done,
                fingerprint=fingerprint,
                train_config=cfg.to_dict(),
            )
    bar.close()

    final_path = out_dir / "final.pt"
    if end_step == cfg.steps:
        _finish(model, cfg, final_path, history, eval_fn, extra_checkpoint, fingerprint)
        if rank == 0 and not keep_checkpoint:  # optimizer state: no later stage reads it
            (out_dir / "checkpoint.pt").unlink(missing_ok=True)
    return TrainResult(
        model, history, out_dir, final_path, start_step, time.perf_counter() - started
    )
