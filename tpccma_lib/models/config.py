"""``ModelConfig``: the one settings object that builds any backend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tpccma_lib.models.base import ModelError
from tpccma_lib.settings import Settings

__all__ = ["ModelConfig", "BACKENDS"]

BACKENDS = ("towers", "open_clip")


@dataclass
class ModelConfig(Settings):
    """Settings of a dual encoder. Saved (``to_dict``) in every checkpoint and result."""

    settings_error: ClassVar[type[Exception]] = ModelError
    #: checkpoints written before the heads' seed got its own name (commit 79a9758)
    renamed_keys: ClassVar[dict[str, str]] = {"seed": "init_seed"}

    backend: str = "towers"  # "towers" (embedded default, CPU) or "open_clip" (real CLIP)
    name: str = (
        "effnetlite0-minilm"  # towers: the tower pair; open_clip: a model name, e.g. "ViT-B-32"
    )
    pretrained: str | None = (
        None  # open_clip: a pretrained tag ("openai") or a local checkpoint file
    )
    embed_dim: int = 256  # towers: dimension D of the shared space
    head: str = "mlp"  # towers: trainable heads, "mlp" (2-layer GELU) or "linear" (see README)
    image_size: int = 64  # towers: input size in px the image tower sees (data is rendered at it)
    init_logit_scale: float = 100.0  # initial contrastive logit multiplier (CLIP converges to 100)
    max_logit_scale: float = 100.0  # clamp of the logit multiplier (CLIP: 100)
    learn_logit_scale: bool = False  # train the temperature too (see README: why fixed by default)
    trainable: str = "all"  # open_clip: "all", "proj" (projections only) or "last:N" blocks + proj
    init_seed: int = 0  # towers: seed of the random initialisation of the trainable heads

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ModelError(f"unknown backend {self.backend!r}; choose one of {BACKENDS}.")
        if self.head not in ("linear", "mlp"):
            raise ModelError(f"unknown head {self.head!r}; choose 'linear' or 'mlp'.")
        if self.embed_dim < 2:
            raise ModelError(f"embed_dim must be >= 2, got {self.embed_dim}.")
        if self.image_size < 32:
            raise ModelError(f"image_size must be >= 32 px, got {self.image_size}.")
