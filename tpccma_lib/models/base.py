"""The dual-encoder interface every backend implements.

A backend splits each modality into two stages:

* a **frozen input stage** (``image_inputs`` / ``text_inputs``): pixels or strings to tensors
  that the trainable part consumes. For the ``towers`` backend these are the pooled features
  of frozen pretrained encoders (worth caching on disk); for ``open_clip`` they are the
  preprocessed pixel tensors and BPE token ids.
* a **trainable stage** (``encode_image_inputs`` / ``encode_text_inputs``): those tensors to
  L2-normalised embeddings of shape (B, embed_dim) in the shared space.

The temperature is stored as CLIP does, as ``log_logit_scale`` (a scalar parameter);
``logit_scale()`` returns ``exp`` of it clamped at ``max_logit_scale`` (100 in CLIP).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["AMP_MODES", "DualEncoder", "ModelError", "check_rgb_images"]

#: Mixed-precision modes of training and embedding (autocast on CUDA; CPU runs fp32).
AMP_MODES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class ModelError(ValueError):
    """A model could not be built or loaded; the message says what to do."""


def check_rgb_images(images: Sequence[np.ndarray], expected_size: int | None = None) -> None:
    """Raise :class:`ModelError` unless every image is an (H, W, 3) uint8 array.

    With ``expected_size`` every image must also be ``expected_size`` x ``expected_size``.
    """
    for i, img in enumerate(images):
        arr = np.asarray(img)
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise ModelError(
                f"image {i} has shape {arr.shape}; expected an RGB array (H, W, 3). "
                "Convert grey or RGBA images with PIL's .convert('RGB') first."
            )
        if arr.dtype != np.uint8:
            raise ModelError(f"image {i} has dtype {arr.dtype}; expected uint8 pixels in 0..255.")
        if expected_size is not None and arr.shape[:2] != (expected_size, expected_size):
            raise ModelError(
                f"image {i} is {arr.shape[0]}x{arr.shape[1]} px but this model expects "
                f"{expected_size}x{expected_size}: render/resize the data at that size or build "
                f"the model with image_size={arr.shape[0]}."
            )


class DualEncoder(nn.Module):
    """Abstract image/text dual encoder into one L2-normalised space of ``embed_dim``."""

    backend: str = "abstract"
    #: True when the frozen input stage is deterministic and worth caching on disk.
    cacheable_inputs: bool = False
    #: True when ``image_inputs`` is CPU work (decoding, resizing) that DataLoader workers can do.
    inputs_in_workers: bool = False
    #: Inference settings of :meth:`encode_images` / :meth:`encode_texts` (see
    #: :meth:`set_inference`): autocast mode on CUDA, and image-decoding worker processes.
    inference_amp: str = "none"
    inference_workers: int = 0

    def __init__(self, embed_dim: int, init_logit_scale: float, max_logit_scale: float) -> None:
        super().__init__()
        if init_logit_scale <= 0 or max_logit_scale <= 0:
            raise ModelError("logit scales must be positive (CLIP uses init 1/0.07, max 100).")
        self.embed_dim = int(embed_dim)
        self.max_logit_scale = float(max_logit_scale)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(init_logit_scale)))

    # ------------------------------------------------------------------ to implement
    def image_inputs(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Frozen stage: list of (H, W, 3) uint8 images -> model input tensor (B, ...)."""
        raise NotImplementedError

    def text_inputs(self, texts: Sequence[str]) -> torch.Tensor:
        """Frozen stage: list of captions -> model input tensor (B, ...)."""
        raise NotImplementedError

    def encode_image_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """Trainable stage: inputs (B, ...) -> normalised image embeddings (B, embed_dim)."""
        raise NotImplementedError

    def encode_text_inputs(self, inputs: torch.Tensor) -> torch.Tensor:
        """Trainable stage: inputs (B, ...) -> normalised text embeddings (B, embed_dim)."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """The model config (a ``ModelConfig`` as dict) that rebuilds this model."""
        raise NotImplementedError

    # ------------------------------------------------------------------ shared
    def logit_scale(self) -> torch.Tensor:
        """The contrastive logit multiplier exp(log_logit_scale), clamped at max_logit_scale."""
        return self.log_logit_scale.exp().clamp(max=self.max_logit_scale)

    def trainable_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters the fine-tune updates (those with ``requires_grad``)."""
        return (p for p in self.parameters() if p.requires_grad)

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """State of the trainable part only (what a checkpoint needs to store)."""
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        names.add("log_logit_scale")
        return {k: v.detach().cpu().clone() for k, v in self.state_dict().items() if k in names}

    @property
    def device(self) -> torch.device:
        return self.log_logit_scale.device

    def set_inference(self, amp: str = "none", workers: int = 0) -> DualEncoder:
        """How :meth:`encode_images` / :meth:`encode_texts` run: ``amp`` ("none", "bf16",
        "fp16") autocasts the forward pass on CUDA (ignored on CPU; embeddings come back
        float32 either way), ``workers`` DataLoader processes decode and preprocess images
        (backends with :attr:`inputs_in_workers`). Returns ``self``."""
        if amp not in AMP_MODES:
            raise ModelError(f"amp must be one of {sorted(AMP_MODES)}, got {amp!r}.")
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ModelError(f"workers must be an integer >= 0, got {workers!r}.")
        self.inference_amp, self.inference_workers = amp, workers
        return self

    def inference_autocast(self) -> contextlib.AbstractContextManager:
        """Autocast per :meth:`set_inference` on CUDA; a no-op context elsewhere."""
        dtype = AMP_MODES[self.inference_amp]
        if dtype is None or self.device.type != "cuda":
            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=dtype)

    @torch.no_grad()
    def encode_images(
        self, images: Sequence[np.ndarray], batch_size: int = 128, progress: bool = False
    ) -> np.ndarray:
        """Images -> (N, embed_dim) float32 normalised embeddings, in batches (decoded in
        :attr:`inference_workers` processes where the backend allows)."""
        from tpccma_lib.data.loading import ordered_map

        starts = range(0, len(images), batch_size)

        def inputs(start: int) -> torch.Tensor:
            end = min(start + batch_size, len(images))
            return self.image_inputs([images[i] for i in range(start, end)])

        workers = self.inference_workers if self.inputs_in_workers else 0
        cuda = self.device.type == "cuda"
        out = []
        batches = ordered_map(inputs, starts, workers, pin_memory=cuda)
        for x in tqdm(batches, total=len(starts), desc="encode images", disable=not progress):
            with self.inference_autocast():
                emb = self.encode_image_inputs(x.to(self.device, non_blocking=cuda))
            out.append(emb.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.embed_dim), np.float32)

    @torch.no_grad()
    def encode_texts(
        self, texts: Sequence[str], batch_size: int = 256, progress: bool = False
    ) -> np.ndarray:
        """Captions -> (N, embed_dim) float32 normalised embeddings, in batches."""
        out = []
        for start in tqdm(
            range(0, len(texts), batch_size), desc="encode texts", disable=not progress
        ):
            x = self.text_inputs(list(texts[start : start + batch_size])).to(self.device)
            with self.inference_autocast():
                out.append(self.encode_text_inputs(x).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.embed_dim), np.float32)
