"""The ``open_clip`` backend: any open_clip model behind the :class:`DualEncoder` interface.

``ModelConfig(backend="open_clip", name="ViT-B-32", pretrained="openai")`` is the paper's
model. ``pretrained`` is an open_clip tag (downloaded once by open_clip, needs internet) or a
path to a local checkpoint file. The package also registers a tiny config,
``TinyCLIP-test`` (2-layer ViT and text transformer, width 128, 32 px), used by the tests and
smoke runs on CPU.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from tpccma_lib.models.base import DualEncoder, ModelError, check_rgb_images
from tpccma_lib.models.config import ModelConfig

__all__ = ["OpenClipEncoder", "register_bundled_configs"]

_CONFIG_DIR = Path(__file__).parent / "configs"


def register_bundled_configs() -> None:
    """Make the configs shipped in ``tpccma_lib/models/configs`` known to open_clip."""
    import open_clip

    if "TinyCLIP-test" not in open_clip.list_models():
        open_clip.add_model_config(_CONFIG_DIR)


def _check_model_name(name: str) -> None:
    import open_clip

    if name.startswith(("hf-hub:", "local-dir:")):
        return
    known = open_clip.list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=5)
        hint = f" Did you mean {close}?" if close else ""
        raise ModelError(
            f"unknown open_clip model {name!r}.{hint} `open_clip.list_models()` lists all names."
        )


def _load_open_clip(cfg: ModelConfig) -> tuple[Any, Any, Any]:
    import open_clip

    pretrained = cfg.pretrained
    if pretrained is not None and not Path(pretrained).is_file():
        looks_like_path = any(s in pretrained for s in ("/", "\\", ".pt", ".bin", ".safetensors"))
        if looks_like_path:
            raise ModelError(
                f"checkpoint file {pretrained!r} does not exist. Pass an existing file, or an "
                f"open_clip pretrained tag such as {open_clip.list_pretrained_tags_by_model(cfg.name)[:3]}."
            )
        tags = open_clip.list_pretrained_tags_by_model(cfg.name)
        if pretrained not in tags:
            raise ModelError(
                f"{cfg.name!r} has no pretrained tag {pretrained!r}; known tags: {tags}. "
                "Or pass a path to a local checkpoint file."
            )
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            cfg.name, pretrained=pretrained
        )
    except (OSError, RuntimeError, ConnectionError) as exc:
        if pretrained is not None and not Path(pretrained).is_file():
            import os

            offline = [v for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if os.environ.get(v)]
            why = (
                f"{' and '.join(offline)} is set in this process, so nothing was downloaded; "
                "unset it for the one-time download"
                if offline
                else "the download failed (no internet on this machine?)"
            )
            cache = os.environ.get("HF_HOME", "~/.cache/huggingface")
            raise ModelError(
                f"could not fetch the pretrained weights {cfg.name}/{pretrained}: {why} ({exc}). "
                f"`tpccma prepare clip {cfg.name} {pretrained}` fetches them once from the "
                f"Hugging Face Hub into {cache} (run it on a machine with internet and copy "
                "that cache here if this one is offline); or download the checkpoint file and "
                "pass its path as `pretrained`."
            ) from exc
        raise ModelError(
            f"open_clip could not build {cfg.name!r} from {pretrained!r}: {exc}"
        ) from exc
    tokenizer = open_clip.get_tokenizer(cfg.name)
    return model, preprocess, tokenizer


def _set_trainable(model: torch.nn.Module, spec: str) -> None:
    """Choose which parameters train: 'all', 'proj', or 'last:N' (last N blocks + projections)."""
    if spec == "all":
        model.requires_grad_(True)
        return
    model.requires_grad_(False)
    proj_names = ("visual.proj", "text_projection", "visual.ln_post", "ln_final", "logit_scale")
    last_n = 0
    if spec.startswith("last:"):
        try:
            last_n = int(spec.split(":", 1)[1])
        except ValueError as exc:
            raise ModelError(f"trainable={spec!r}: write 'last:N' with an integer N.") from exc
    elif spec != "proj":
        raise ModelError(f"trainable={spec!r}; choose 'all', 'proj' or 'last:N'.")
    for name, p in model.named_parameters():
        if name.startswith(proj_names):
            p.requires_grad_(True)
    if last_n:
        for tower in (model.visual.transformer, model.transformer):
            for block in tower.resblocks[-last_n:]:
                block.requires_grad_(True)


class OpenClipEncoder(DualEncoder):
    """An open_clip CLIP model as a :class:`DualEncoder` (frozen stage = preprocessing)."""

    backend = "open_clip"
    cacheable_inputs = False
    inputs_in_workers = True  # JPEG decoding + resize/crop: CPU work for DataLoader workers

    def __init__(self, cfg: ModelConfig) -> None:
        register_bundled_configs()
        _check_model_name(cfg.name)
        model, preprocess, tokenizer = _load_open_clip(cfg)
        init = float(model.logit_scale.detach().exp()) if cfg.pretrained else cfg.init_logit_scale
        embed_dim = int(model.text_projection.shape[1]) if hasattr(model, "text_projection") else 0
        super().__init__(embed_dim or 512, init, cfg.max_logit_scale)
        self.cfg = cfg
        self.clip = model
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        del self.clip.logit_scale  # one temperature, owned by the DualEncoder
        self.clip.logit_scale = None
        _set_trainable(self.clip, cfg.trainable)
        self.log_logit_scale.requires_grad_(cfg.learn_logit_scale)

    def image_inputs(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        check_rgb_images(images)
        return torch.stack([self.preprocess(Image.fromarray(np.asarray(im))) for im in images])

    def text_inputs(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(texts))

    def encode_image_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.encode_image(inputs), dim=-1)

    def encode_text_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.clip.encode_text(inputs), dim=-1)

    def config(self) -> dict[str, Any]:
        return self.cfg.to_dict()
