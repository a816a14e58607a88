"""Build models from a :class:`ModelConfig`; save and load checkpoints atomically."""

from __future__ import annotations

import os
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import torch

from tpccma_lib.atomic import atomic_write
from tpccma_lib.models.base import DualEncoder, ModelError
from tpccma_lib.models.config import ModelConfig

__all__ = ["create_model", "save_checkpoint", "load_checkpoint", "load_model", "atomic_torch_save"]

CHECKPOINT_FORMAT = "tpccma-checkpoint-v1"


def create_model(cfg: ModelConfig | dict[str, Any] | None = None, **overrides: Any) -> DualEncoder:
    """Build a dual encoder. ``create_model()`` is the embedded default (towers backend)."""
    if cfg is None:
        cfg = ModelConfig(**overrides)
    elif isinstance(cfg, dict):
        cfg = ModelConfig.from_dict({**cfg, **overrides})
    elif overrides:
        cfg = ModelConfig(**{**cfg.to_dict(), **overrides})
    if cfg.backend == "towers":
        from tpccma_lib.models.towers import TowersEncoder

        return TowersEncoder(cfg)
    from tpccma_lib.models.open_clip_backend import OpenClipEncoder

    return OpenClipEncoder(cfg)


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> Path:
    """``torch.save`` through :func:`tpccma_lib.atomic.atomic_write`: a temporary file in the
    same folder, fsynced and renamed over ``path``; removed on failure (a full disk raises
    :class:`~tpccma_lib.atomic.DiskFullError`)."""
    return atomic_write(path, lambda handle: torch.save(obj, handle))


def save_checkpoint(path: str | os.PathLike[str], model: DualEncoder, **extra: Any) -> Path:
    """Write the model's config and trainable weights (plus ``extra``) atomically.

    ``extra`` holds anything else to keep: optimizer state, step, train config (dataclasses
    are stored with ``asdict``), metrics.
    """
    payload = {
        "format": CHECKPOINT_FORMAT,
        "model_config": model.config(),
        "state_dict": model.trainable_state_dict(),
    }
    for k, v in extra.items():
        payload[k] = asdict(v) if is_dataclass(v) and not isinstance(v, type) else v
    return atomic_torch_save(payload, path)


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (clear error if missing/corrupt)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {path}. Create one with `tpccma pretrain` (base model) or "
            "`tpccma train` (fine-tune), or check the path."
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ModelError(f"checkpoint {path} is unreadable ({exc}); re-create it.") from exc
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ModelError(
            f"{path} is not a tpccma checkpoint (format {payload.get('format') if isinstance(payload, dict) else type(payload)}). "
            "For open_clip weights use ModelConfig(backend='open_clip', pretrained=<file>)."
        )
    return payload


def load_model(
    path: str | os.PathLike[str], expect: ModelConfig | None = None
) -> tuple[DualEncoder, dict[str, Any]]:
    """Rebuild the model stored in a checkpoint; return (model, the whole checkpoint dict).

    With ``expect``, a checkpoint of another model (different backend, name, dimension or
    head) is an error rather than a silent switch.
    """
    payload = load_checkpoint(path)
    cfg = ModelConfig.from_dict(payload["model_config"])
    if expect is not None:
        keys = ("backend", "name", "embed_dim", "head", "image_size", "pretrained")
        diff = {
            k: (getattr(cfg, k), getattr(expect, k))
            for k in keys
            if getattr(cfg, k) != getattr(expect, k)
        }
        if diff:
            raise ModelError(
                f"checkpoint {path} holds another model: "
                + ", ".join(f"{k}={a!r} (expected {b!r})" for k, (a, b) in diff.items())
                + ". Point to a checkpoint of this model or change the model config."
            )
    model = create_model(cfg)
    missing, unexpected = model.load_state_dict(payload["state_dict"], strict=False)
    if unexpected:
        raise ModelError(f"checkpoint {path} has weights this model lacks: {unexpected[:5]}")
    trainable = set(model.trainable_state_dict())
    not_loaded = trainable & set(missing)
    if not_loaded:
        raise ModelError(f"checkpoint {path} lacks trainable weights {sorted(not_loaded)[:5]}")
    return model, payload
