"""COCO captions in the Karpathy split (the standard 113k / 5k / 5k retrieval split).

Expected layout under ``root`` (what ``tpccma prepare coco`` produces)::

    root/dataset_coco.json      Karpathy's caption file (from caption_datasets.zip)
    root/train2014/*.jpg        COCO 2014 train images
    root/val2014/*.jpg          COCO 2014 val images

``dataset_coco.json`` holds ``{"images": [{"filepath": "val2014", "filename": "....jpg",
"split": "train" | "val" | "test" | "restval", "sentences": [{"raw": "..."}, ...],
"cocoid": int}, ...]}``. The Karpathy "train" split is "train" + "restval".
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tpccma_lib.data.base import CaptionedImageSet, DataSetError, ImageFileSequence

__all__ = ["COCO_CAPTION_FILE", "COCO_SPLITS", "load_coco_karpathy"]

COCO_CAPTION_FILE = "dataset_coco.json"
# Karpathy split name -> the entries of dataset_coco.json it is made of.
COCO_SPLITS: dict[str, tuple[str, ...]] = {
    "train": ("train", "restval"),
    "val": ("val",),
    "test": ("test",),
}
_HOW_TO_PREPARE = (
    "Run `tpccma prepare coco` (needs internet), or put the COCO 2014 image folders and "
    f"Karpathy's {COCO_CAPTION_FILE} there by hand."
)


def _read_caption_file(root: Path) -> list[dict]:
    if not root.is_dir():
        raise DataSetError(f"COCO folder {root} does not exist. {_HOW_TO_PREPARE}")
    caption_file = root / COCO_CAPTION_FILE
    if not caption_file.is_file():
        raise DataSetError(f"COCO caption file {caption_file} is missing. {_HOW_TO_PREPARE}")
    try:
        with caption_file.open(encoding="utf-8") as handle:
            entries = json.load(handle)["images"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise DataSetError(
            f"{caption_file} is not a Karpathy caption file (a JSON object with an 'images' "
            f"list): {error}. Download it again with `tpccma prepare coco`."
        ) from error
    return entries


def load_coco_karpathy(
    root: str | Path | None = None,
    split: str = "test",
    max_images: int | None = None,
    captions_per_image: int = 5,
) -> CaptionedImageSet:
    """Load one Karpathy split of COCO captions.

    Args:
        root: folder with ``dataset_coco.json`` and the image folders; default
            ``data_root() / "coco"``.
        split: "train" (includes "restval"), "val" or "test".
        max_images: keep only the first ``max_images`` images of the split (file order).
        captions_per_image: keep at most this many captions per image (COCO has 5-7).

    Returns:
        A :class:`CaptionedImageSet` whose images load lazily from disk, labels all -1
        (COCO captions have no classes) and ``attributes`` holding each image's cocoid
        and file.

    Raises:
        DataSetError: missing folder, caption file or image file (the message names which,
            and how to prepare the data), or bad arguments.
    """
    if split not in COCO_SPLITS:
        raise DataSetError(f"unknown COCO split {split!r}; choose one of {tuple(COCO_SPLITS)}.")
    if max_images is not None and max_images <= 0:
        raise DataSetError(f"max_images must be positive or None, got {max_images}.")
    if captions_per_image <= 0:
        raise DataSetError(f"captions_per_image must be positive, got {captions_per_image}.")
    if root is None:
        from tpccma_lib.data.prepare import data_root

        root = data_root() / "coco"
    root = Path(root)

    entries = [e for e in _read_caption_file(root) if e.get("split") in COCO_SPLITS[split]]
    if max_images is not None:
        entries = entries[:max_images]
    if not entries:
        raise DataSetError(
            f"{root / COCO_CAPTION_FILE} has no images in split {split!r} "
            f"(entries with split in {COCO_SPLITS[split]})."
        )

    paths, captions, records = [], [], []
    for entry in entries:
        path = root / entry["filepath"] / entry["filename"]
        if not path.is_file():
            raise DataSetError(
                f"COCO image {path} is missing (cocoid {entry.get('cocoid')}, listed in "
                f"{COCO_CAPTION_FILE}). {_HOW_TO_PREPARE}"
            )
        sentences = [s["raw"].strip() for s in entry.get("sentences", [])]
        sentences = [s for s in sentences if s][:captions_per_image]
        if not sentences:
            raise DataSetError(f"COCO image {path} has no captions in {COCO_CAPTION_FILE}.")
        paths.append(path)
        captions.append(sentences)
        records.append({"cocoid": entry.get("cocoid"), "file": str(path.relative_to(root))})

    return CaptionedImageSet(
        name="coco-karpathy",
        split=split,
        images=ImageFileSequence(paths),
        captions=captions,
        labels=np.full(len(paths), -1, dtype=np.int64),
        class_names=(),
        prompt_templates=(),
        meta={"dataset": "coco-karpathy", "split": split, "root": str(root)},
        attributes=records,
    )
