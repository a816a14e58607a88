"""``DataConfig``: which data, how much of it, from where, and which data set serves which task."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["DataConfig", "DATASETS", "TASK_DATASETS"]

DATASETS = ("shapes", "coco")

#: Which data set serves which task, per ``(dataset, zero_shot)`` of :class:`DataConfig`.
#: "labelled" tasks (zero-shot, joint clustering) need class labels, which COCO lacks.
TASK_DATASETS: dict[tuple[str, str], dict[str, str]] = {
    ("shapes", "same"): dict.fromkeys(
        ("gap", "retrieval", "captioning", "zero_shot", "clustering"), "captioned-shapes"
    ),
    ("shapes", "cifar10"): {
        **dict.fromkeys(("gap", "retrieval", "captioning"), "captioned-shapes"),
        **dict.fromkeys(("zero_shot", "clustering"), "cifar10"),
    },
    ("coco", "cifar10"): {
        **dict.fromkeys(("gap", "retrieval", "captioning"), "coco-karpathy"),
        **dict.fromkeys(("zero_shot", "clustering"), "cifar10"),
    },
}


@dataclass
class DataConfig:
    """Which data, how much of it, from where, and which data set serves which task.

    ``dataset`` serves the caption tasks (modality gap, retrieval, text-only captioning);
    ``zero_shot`` the labelled tasks (zero-shot classification and joint clustering):
    ``"same"`` = the classes of ``dataset`` itself (the shapes), ``"cifar10"`` = CIFAR-10 test
    with CLIP's CIFAR-10 prompts (the paper's protocol; required with COCO, which has no
    classes). :meth:`tasks` spells the mapping out. ``root`` holds ``coco/`` and ``cifar10/``
    as ``tpccma prepare --root`` writes them. ``device``, ``amp`` and ``workers`` say how
    evaluation embeds (not part of a run's identity: the same data embedded elsewhere is the
    same data). ``amp`` and ``workers`` share their names, and so their flags and notebook
    parameters, with :class:`~tpccma_lib.training.loop.TrainConfig`'s.
    """

    dataset: str = "shapes"  # "shapes" (embedded, procedural) or "coco" (Karpathy split)
    n_train: int = 3000  # training images (shapes: rendered; coco: first n of the split, 0 = all)
    n_val: int = 500  # validation images (monitoring during training)
    n_test: int = 1000  # held-out images every reported number uses
    image_size: int = 64  # shapes: rendered size in px (= the image tower's input size)
    seed: int = 0  # shapes: the world's seed (same seed, same bytes)
    captions: str = "subset"  # shapes: captions name a random subset of attributes, or "all"
    zero_shot: str = "same"  # zero-shot data: "same" (the shape classes) or "cifar10"
    root: str | None = None  # holds coco/ and cifar10/ (default: $TPCCMA_DATA or ./data)
    device: str = "auto"  # where evaluation embeds: "auto" (CUDA if present), "cpu", "cuda"
    amp: str = "none"  # embedding autocast on CUDA: "none", "bf16", "fp16" (CPU: always fp32)
    workers: int = 4  # DataLoader processes decoding images when embedding (open_clip)

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ValueError(f"unknown dataset {self.dataset!r}; choose one of {DATASETS}.")
        for name in ("n_train", "n_val", "n_test"):
            if getattr(self, name) < (0 if self.dataset == "coco" else 1):
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}.")
        if self.captions not in ("subset", "all"):
            raise ValueError(f"captions must be 'subset' or 'all', got {self.captions!r}.")
        if self.captions != "subset" and self.dataset != "shapes":
            raise ValueError(
                "captions='all' is an ablation of the shapes data; use dataset='shapes'."
            )
        if self.zero_shot not in ("same", "cifar10"):
            raise ValueError(f"zero_shot must be 'same' or 'cifar10', got {self.zero_shot!r}.")
        if (self.dataset, self.zero_shot) not in TASK_DATASETS:
            raise ValueError(
                f"dataset={self.dataset!r} has no classes, so zero-shot accuracy and joint "
                "clustering need another data set: set zero_shot='cifar10' (the paper's "
                "protocol; notebook parameter / flag `zero_shot`)."
            )
        if self.amp not in ("none", "bf16", "fp16"):
            raise ValueError(f"amp must be 'none', 'bf16' or 'fp16', got {self.amp!r}.")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int):
            raise ValueError(f"workers must be an integer, got {self.workers!r}.")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0, got {self.workers}.")
        if self.device != "auto":
            import torch

            try:
                torch.device(self.device)
            except RuntimeError as exc:
                raise ValueError(
                    f"device must be 'auto', 'cpu', 'cuda' or 'cuda:<index>', got {self.device!r}."
                ) from exc

    def tasks(self) -> dict[str, str]:
        """Task -> the data set it is measured on (gap, retrieval, captioning, zero_shot,
        clustering)."""
        return dict(TASK_DATASETS[(self.dataset, self.zero_shot)])

    def identity(self) -> dict[str, Any]:
        """The settings that decide the data (what run folders and checkpoints are keyed by):
        every field but ``device``, ``amp`` and ``workers`` (how it is embedded)."""
        out = asdict(self)
        for how in ("device", "amp", "workers"):
            out.pop(how)
        return out

    @property
    def label(self) -> str:
        """How results name this data set (with the caveat that shapes stand in for COCO)."""
        if self.dataset == "shapes":
            label = f"captioned-shapes (seed {self.seed}, {self.image_size} px; stand-in for COCO/CIFAR-10)"
        else:
            label = "COCO captions (Karpathy split)"
        if self.zero_shot == "cifar10":
            label += " + CIFAR-10 test (zero-shot, joint clustering)"
        return label
