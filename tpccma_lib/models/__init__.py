"""Dual-encoder backends behind one interface and one factory.

>>> from tpccma_lib.models import ModelConfig, create_model
>>> model = create_model(ModelConfig())          # embedded default (towers), CPU
>>> clip = create_model(ModelConfig(backend="open_clip", name="ViT-B-32", pretrained="openai"))
"""

from tpccma_lib.models.base import DualEncoder, ModelError, check_rgb_images
from tpccma_lib.models.config import BACKENDS, ModelConfig
from tpccma_lib.models.factory import (
    atomic_torch_save,
    create_model,
    load_checkpoint,
    load_model,
    save_checkpoint,
)

__all__ = [
    "BACKENDS",
    "DualEncoder",
    "ModelConfig",
    "ModelError",
    "atomic_torch_save",
    "check_rgb_images",
    "create_model",
    "load_checkpoint",
    "load_model",
    "save_checkpoint",
]
