"""From a captioned data set to model inputs and :class:`Embeddings`, with a disk cache.

The frozen towers of the embedded default are the slow part (EfficientNet-Lite0 and MiniLM on
CPU), and their outputs never change, so :func:`frozen_inputs` stores them in
``<cache_dir>/<key>.npz``, keyed by the data set's content fingerprint and the towers' version.
A corrupted cache file is reported, deleted and rebuilt, never crashed on.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tpccma_lib.atomic import atomic_write, remove_stale_temp_files
from tpccma_lib.embeddings import Embeddings
from tpccma_lib.models.base import DualEncoder
from tpccma_lib.threads import CACHE_COMPUTE, single_threaded

__all__ = [
    "FrozenInputs",
    "frozen_inputs",
    "embed_dataset",
    "dataset_fingerprint",
    "default_cache_dir",
]


def default_cache_dir() -> Path:
    """``$TPCCMA_CACHE`` or ``<data root>/cache/features``."""
    if "TPCCMA_CACHE" in os.environ:
        return Path(os.environ["TPCCMA_CACHE"])
    from tpccma_lib.data.prepare import data_root

    return data_root() / "cache" / "features"


def dataset_fingerprint(dataset: Any) -> str:
    """A content hash of a ``CaptionedImageSet``: pixels (or file paths) and captions."""
    h = hashlib.sha256()
    h.update(f"{dataset.name}|{dataset.split}|{len(dataset)}".encode())
    images = dataset.images
    if isinstance(images, np.ndarray):
        h.update(np.ascontiguousarray(images).tobytes())
    elif hasattr(images, "paths"):
        for p in images.paths:
            h.update(str(p).encode())
    else:
        for i in range(len(images)):
            h.update(np.ascontiguousarray(images[i]).tobytes())
    h.update(json.dumps(dataset.captions).encode())
    return h.hexdigest()[:20]


@dataclass(frozen=True)
class FrozenInputs:
    """Outputs of a model's frozen stage for one data set (the trainable part's inputs)."""

    image: torch.Tensor  # (N_img, F_img) e.g. 1280-d EfficientNet features
    text: torch.Tensor  # (N_txt, F_txt) e.g. 384-d MiniLM features
    text_to_image: np.ndarray  # (N_txt,) int64


def _compute(model: DualEncoder, dataset: Any, batch_size: int, progress: bool) -> FrozenInputs:
    with single_threaded():  # the cache must not depend on the caller's thread count
        return _compute_batches(model, dataset, batch_size, progress)


def _compute_batches(
    model: DualEncoder, dataset: Any, batch_size: int, progress: bool
) -> FrozenInputs:
    from tqdm.auto import tqdm

    texts, t2i = dataset.flat_captions()
    img_parts, txt_parts = [], []
    n = len(dataset)
    for s in tqdm(
        range(0, n, batch_size),
        desc=f"image features ({dataset.name}/{dataset.split})",
        disable=not progress,
    ):
        img_parts.append(
            model.image_inputs([dataset.images[i] for i in range(s, min(s + batch_size, n))])
        )
    for s in tqdm(range(0, len(texts), 4 * batch_size), desc="text features", disable=not progress):
        txt_parts.append(model.text_inputs(texts[s : s + 4 * batch_size]))
    txt = torch.cat(txt_parts) if txt_parts else torch.zeros(0, 1)
    return FrozenInputs(torch.cat(img_parts), txt, np.asarray(t2i, dtype=np.int64))


def frozen_inputs(
    model: DualEncoder,
    dataset: Any,
    cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 64,
    progress: bool = True,
) -> FrozenInputs:
    """The frozen-stage outputs for every image and caption of ``dataset``, cached on disk.

    Only for backends with ``cacheable_inputs`` (the towers); open_clip preprocesses on the fly.
    """
    if not model.cacheable_inputs:
        raise ValueError(
            f"the {model.backend} backend has no frozen stage to cache; use embed_dataset()."
        )
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = hashlib.sha256(
        f"{dataset_fingerprint(dataset)}|{model.feature_key}|{CACHE_COMPUTE}".encode()
    ).hexdigest()[:24]
    path = cache_dir / f"{dataset.name}-{dataset.split}-{len(dataset)}-{key}.npz"
    if path.exists():
        try:
            with np.load(path, allow_pickle=False) as z:
                cached = FrozenInputs(
                    torch.from_numpy(z["image"]), torch.from_numpy(z["text"]), z["text_to_image"]
                )
            _check_inputs(cached, dataset)
            return cached
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as exc:
            warnings.warn(
                f"feature cache {path} is corrupted ({exc}); deleting and rebuilding it.",
                stacklevel=2,
            )
            path.unlink(missing_ok=True)
    result = _compute(model, dataset, batch_size, progress)
    try:
        _check_inputs(result, dataset)
    except ValueError as exc:
        raise ValueError(
            f"the frozen features of {dataset.name}/{dataset.split} are bad ({exc}); not "
            f"caching them at {path}. Check those images and captions."
        ) from None
    remove_stale_temp_files(path.parent)
    atomic_write(
        path,
        lambda fh: np.savez(
            fh,
            image=result.image.numpy(),
            text=result.text.numpy(),
            text_to_image=result.text_to_image,
        ),
    )
    return result


def _check_inputs(inputs: FrozenInputs, dataset: Any) -> None:
    """Raise ValueError unless ``inputs`` match ``dataset``'s sizes and are finite."""
    n_texts = sum(len(c) for c in dataset.captions)
    if inputs.image.shape[0] != len(dataset):
        raise ValueError(f"{inputs.image.shape[0]} image rows for {len(dataset)} images")
    if inputs.text.shape[0] != n_texts or len(inputs.text_to_image) != n_texts:
        raise ValueError(
            f"{inputs.text.shape[0]} caption rows and {len(inputs.text_to_image)} pairings "
            f"for {n_texts} captions"
        )
    for name, rows in (("image", inputs.image), ("caption", inputs.text)):
        bad = int((~torch.isfinite(rows)).reshape(rows.shape[0], -1).any(dim=1).sum())
        if bad:
            raise ValueError(f"{bad} {name} row(s) with NaN or inf")


def _encode_cached(
    model: DualEncoder, inputs: FrozenInputs, batch_size: int, dev: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """The trainable stage over cached frozen features, in batches -> (image, text) on CPU."""
    img = torch.cat(
        [
            model.encode_image_inputs(inputs.image[s : s + batch_size].to(dev)).cpu()
            for s in range(0, inputs.image.shape[0], batch_size)
        ]
    )
    txt = torch.cat(
        [
            model.encode_text_inputs(inputs.text[s : s + batch_size].to(dev)).cpu()
            for s in range(0, inputs.text.shape[0], batch_size)
        ]
    )
    return img, txt


@torch.no_grad()
def embed_dataset(
    model: DualEncoder,
    dataset: Any,
    inputs: FrozenInputs | None = None,
    meta: dict[str, Any] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> Embeddings:
    """Embed every image and caption of ``dataset`` -> :class:`Embeddings` (normalised).

    For cacheable backends the frozen features come from ``inputs`` or the disk cache; the
    trainable heads run on them in batches. ``meta`` is merged into the provenance record.
    """
    was_training = model.training
    model.eval()
    if model.cacheable_inputs:
        inputs = (
            inputs
            if inputs is not None
            else frozen_inputs(model, dataset, cache_dir, progress=progress)
        )
        dev = model.device
        with model.inference_autocast():
            img, txt = _encode_cached(model, inputs, batch_size, dev)
        image, text, t2i = img.float().numpy(), txt.float().numpy(), inputs.text_to_image
    else:
        texts, t2i = dataset.flat_captions()
        image = model.encode_images(
            dataset.images, batch_size=min(batch_size, 64), progress=progress
        )
        text = model.encode_texts(texts, batch_size=batch_size, progress=progress)
    model.train(was_training)
    record = {
        "dataset": dataset.name,
        "split": dataset.split,
        "model": f"{model.backend}:{model.config().get('name')}",
        **(meta or {}),
    }
    return Embeddings(
        image=image,
        text=text,
        text_to_image=np.asarray(t2i),
        image_labels=dataset.labels,
        class_names=tuple(dataset.class_names),
        meta=record,
    )
