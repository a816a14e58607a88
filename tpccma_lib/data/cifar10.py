"""CIFAR-10 in its "python version" batch format, for zero-shot classification.

Expected layout (what ``tpccma prepare cifar10`` produces)::

    root/cifar-10-batches-py/data_batch_1 ... data_batch_5   50,000 train images
    root/cifar-10-batches-py/test_batch                       10,000 test images
    root/cifar-10-batches-py/batches.meta                     class names

Each batch is a pickled dict with ``b"data"``: (N, 3072) uint8, one row per image holding
the red, green and blue 32x32 planes in row-major order, and ``b"labels"``: N ints.
``batches.meta`` holds ``b"label_names"``. CIFAR-10 has no captions.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from tpccma_lib.data.base import CaptionedImageSet, DataSetError

__all__ = ["CIFAR10_FOLDER", "CIFAR10_PROMPT_TEMPLATES", "load_cifar10"]

CIFAR10_FOLDER = "cifar-10-batches-py"
_SPLIT_BATCHES = {
    "train": tuple(f"data_batch_{k}" for k in range(1, 6)),
    "test": ("test_batch",),
}
_IMAGE_SIDE = 32

# CLIP's CIFAR-10 zero-shot prompt ensemble: the 18 templates CLIP (Radford et al. 2021) lists
# for CIFAR-10 in its prompt-engineering notes (openai/CLIP, data/prompts.md). open_clip ships
# ImageNet templates only (``open_clip.zero_shot_metadata``), so the list is written out here.
CIFAR10_PROMPT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a blurry photo of a {}.",
    "a black and white photo of a {}.",
    "a low contrast photo of a {}.",
    "a high contrast photo of a {}.",
    "a bad photo of a {}.",
    "a good photo of a {}.",
    "a photo of a small {}.",
    "a photo of a big {}.",
    "a photo of the {}.",
    "a blurry photo of the {}.",
    "a black and white photo of the {}.",
    "a low contrast photo of the {}.",
    "a high contrast photo of the {}.",
    "a bad photo of the {}.",
    "a good photo of the {}.",
    "a photo of the small {}.",
    "a photo of the big {}.",
)
_HOW_TO_PREPARE = (
    "Run `tpccma prepare cifar10` (needs internet), or unpack cifar-10-python.tar.gz there by hand."
)


def _batch_folder(root: Path) -> Path:
    """``root`` itself if it holds the batches, else ``root / cifar-10-batches-py``."""
    if (root / "batches.meta").is_file():
        return root
    folder = root / CIFAR10_FOLDER
    if not folder.is_dir():
        raise DataSetError(f"CIFAR-10 folder {folder} does not exist. {_HOW_TO_PREPARE}")
    return folder


def _unpickle(path: Path) -> dict[bytes, Any]:
    if not path.is_file():
        raise DataSetError(f"CIFAR-10 file {path} is missing. {_HOW_TO_PREPARE}")
    try:
        with path.open("rb") as handle:
            return pickle.load(handle, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError) as error:
        raise DataSetError(
            f"{path} is not a CIFAR-10 python batch ({error}); download it again with "
            "`tpccma prepare cifar10`."
        ) from error


def _batch_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 32, 32, 3) uint8 and labels (N,) int64 of one batch file."""
    batch = _unpickle(path)
    try:
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except KeyError as error:
        raise DataSetError(f"{path} lacks the key {error} of a CIFAR-10 batch.") from error
    if data.ndim != 2 or data.shape[1] != 3 * _IMAGE_SIDE**2 or len(labels) != len(data):
        raise DataSetError(
            f"{path}: expected data (N, 3072) and N labels, got data {data.shape} and "
            f"{len(labels)} labels."
        )
    images = data.reshape(-1, 3, _IMAGE_SIDE, _IMAGE_SIDE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def load_cifar10(
    root: str | Path | None = None, split: str = "test", max_images: int | None = None
) -> CaptionedImageSet:
    """Load CIFAR-10 ``split`` ("train" or "test") as a caption-less image set.

    Args:
        root: folder holding ``cifar-10-batches-py`` (or that folder itself); default
            ``data_root() / "cifar10"``.
        split: "train" (50,000 images) or "test" (10,000 images).
        max_images: keep only the first ``max_images`` images, in file order.

    Returns:
        A :class:`CaptionedImageSet` with images (N, 32, 32, 3) uint8, empty caption lists,
        labels (N,) int64 in [0, 10), the class names from ``batches.meta`` and CLIP's
        CIFAR-10 prompt ensemble (:data:`CIFAR10_PROMPT_TEMPLATES`).
    """
    if split not in _SPLIT_BATCHES:
        raise DataSetError(
            f"unknown CIFAR-10 split {split!r}; choose one of {tuple(_SPLIT_BATCHES)}."
        )
    if max_images is not None and max_images <= 0:
        raise DataSetError(f"max_images must be positive or None, got {max_images}.")
    if root is None:
        from tpccma_lib.data.prepare import data_root

        root = data_root() / "cifar10"
    folder = _batch_folder(Path(root))
    meta = _unpickle(folder / "batches.meta")
    class_names = tuple(
        name.decode() if isinstance(name, bytes) else str(name)
        for name in meta.get(b"label_names", ())
    )
    if not class_names:
        raise DataSetError(f"{folder / 'batches.meta'} has no b'label_names'.")

    image_parts, label_parts, count = [], [], 0
    for batch_name in _SPLIT_BATCHES[split]:
        images, labels = _batch_arrays(folder / batch_name)
        image_parts.append(images)
        label_parts.append(labels)
        count += len(labels)
        if max_images is not None and count >= max_images:
            break
    images = np.concatenate(image_parts)[:max_images]
    labels = np.concatenate(label_parts)[:max_images]
    return CaptionedImageSet(
        name="cifar10",
        split=split,
        images=images,
        captions=[[] for _ in range(len(labels))],
        labels=labels,
        class_names=class_names,
        prompt_templates=CIFAR10_PROMPT_TEMPLATES,
        meta={"dataset": "cifar10", "split": split, "root": str(folder)},
    )
