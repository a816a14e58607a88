"""One container for every captioned image data set: :class:`CaptionedImageSet`.

A data set is a sequence of RGB images, the reference captions of each image, an optional
class label per image, and the zero-shot prompt ensemble of its classes. The captioned
shapes world, COCO captions and CIFAR-10 all load into this one shape, so the encoders
and the evaluation never need to know which data set they see.

Glossary:
    images      ``N`` images; ``images[i]`` is an (H, W, 3) uint8 RGB array
    captions    ``captions[i]`` is the list of reference captions of image ``i`` (may be empty)
    labels      (N,) int64 class index of each image, -1 where the data set has no classes
    attributes  optional per-image records (one dict per image), e.g. the rendered scene
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CaptionedImageSet", "DataSetError", "ImageFileSequence", "take_prefix"]


class DataSetError(ValueError):
    """Raised for a missing or malformed data set; the message says what to do next."""


class ImageFileSequence(Sequence):
    """A lazy sequence of image files: ``seq[i]`` opens file ``i`` with PIL as RGB.

    Nothing is read until an item is asked for, so a split of 100k COCO images costs only
    its list of paths. Slicing returns another lazy ``ImageFileSequence``.

    Args:
        paths: the image files, in data-set order.
    """

    def __init__(self, paths: Sequence[str | Path]) -> None:
        self.paths: tuple[Path, ...] = tuple(Path(p) for p in paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return ImageFileSequence(self.paths[index])
        return load_rgb(self.paths[index])

    def __iter__(self) -> Iterator[np.ndarray]:
        for path in self.paths:
            yield load_rgb(path)

    def __repr__(self) -> str:
        return f"ImageFileSequence({len(self.paths)} files)"


def load_rgb(path: Path) -> np.ndarray:
    """Open one image file and return it as an (H, W, 3) uint8 RGB array."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except FileNotFoundError as error:
        raise DataSetError(
            f"Image file {path} is missing. Re-run `tpccma prepare` for this data set, "
            "or put the file back where the caption file expects it."
        ) from error


class _SequenceView(Sequence):
    """The first ``n`` items of a sequence that does not support slicing itself."""

    def __init__(self, base: Sequence, n: int) -> None:
        self.base, self.n = base, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self.n))]
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} images")
        return self.base[index % self.n]


def take_prefix(items: Sequence, n: int) -> Sequence:
    """The first ``n`` items of ``items``: a slice where it slices, else a lazy view."""
    try:
        prefix = items[:n]
    except (TypeError, KeyError):
        return _SequenceView(items, n)
    return prefix


@dataclass
class CaptionedImageSet:
    """Images with their reference captions, class labels and zero-shot prompts.

    Attributes:
        name: data set name, e.g. ``"captioned-shapes"``, ``"coco-karpathy"``, ``"cifar10"``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        images: N images; ``images[i]`` is an (H, W, 3) uint8 RGB array. A numpy array
            (N, H, W, 3) for rendered data, an :class:`ImageFileSequence` for files on disk.
        captions: per image, its reference captions (an empty list where there are none).
        labels: (N,) int64 class index per image, ``-1`` where the data set has no classes.
        class_names: names of the classes, indexed by label.
        prompt_templates: zero-shot prompt ensemble; each contains ``"{}"`` for a class name.
        meta: provenance (data set, split, seed, source files).
        attributes: optional per-image records (a list of N dicts), e.g. the rendered scene.
    """

    name: str
    split: str
    images: Sequence[np.ndarray]
    captions: list[list[str]]
    labels: np.ndarray
    class_names: tuple[str, ...] = ()
    prompt_templates: tuple[str, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict)
    attributes: list[dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        n_images = len(self.images)
        if n_images == 0:
            raise DataSetError(f"{self.name}/{self.split} has no images; ask for at least one.")
        if len(self.captions) != n_images:
            raise DataSetError(
                f"{self.name}/{self.split}: {n_images} images but {len(self.captions)} caption "
                "lists; give one (possibly empty) list of captions per image."
            )
        for i, image_captions in enumerate(self.captions):
            if isinstance(image_captions, str) or not all(
                isinstance(caption, str) for caption in image_captions
            ):
                raise DataSetError(
                    f"{self.name}/{self.split}: captions[{i}] must be a list of strings, "
                    f"got {image_captions!r}."
                )
        labels = np.asarray(self.labels)
        if labels.shape != (n_images,) or not np.issubdtype(labels.dtype, np.integer):
            raise DataSetError(
                f"{self.name}/{self.split}: labels must be an integer array of shape "
                f"({n_images},), got dtype {labels.dtype} and shape {labels.shape}."
            )
        self.labels = labels.astype(np.int64, copy=False)
        self.class_names = tuple(self.class_names)
        n_classes = len(self.class_names)
        bad = (self.labels < -1) | (self.labels >= n_classes)
        if bad.any():
            raise DataSetError(
                f"{self.name}/{self.split}: label {int(self.labels[bad][0])} is outside "
                f"[0, {n_classes}) for {n_classes} class names; use -1 for 'no class'."
            )
        self.prompt_templates = tuple(self.prompt_templates)
        for template in self.prompt_templates:
            if "{}" not in template:
                raise DataSetError(
                    f"{self.name}: prompt template {template!r} has no '{{}}' placeholder "
                    "for the class name."
                )
        if self.attributes is not None and len(self.attributes) != n_images:
            raise DataSetError(
                f"{self.name}/{self.split}: {len(self.attributes)} attribute records for "
                f"{n_images} images; give one record per image or None."
            )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def has_labels(self) -> bool:
        """True when every image has a class label (zero-shot classification applies)."""
        return bool(self.class_names) and bool((self.labels >= 0).all())

    def flat_captions(self) -> tuple[list[str], np.ndarray]:
        """All captions in one list, and which image each describes.

        Returns:
            texts: the N_txt captions, image 0's first, then image 1's, ...
            text_to_image: (N_txt,) int64, index of the image each caption describes.
        """
        texts = [caption for image_captions in self.captions for caption in image_captions]
        counts = [len(image_captions) for image_captions in self.captions]
        text_to_image = np.repeat(np.arange(len(self), dtype=np.int64), counts)
        return texts, text_to_image

    def subset(self, n: int) -> CaptionedImageSet:
        """The first ``n`` images (with their captions, labels and records).

        Raises:
            DataSetError: if ``n`` is not in ``[1, len(self)]``.
        """
        if not 1 <= n <= len(self):
            raise DataSetError(
                f"subset({n}) of {self.name}/{self.split}: n must be between 1 and {len(self)}."
            )
        return dataclasses.replace(
            self,
            images=take_prefix(self.images, n),
            captions=[list(c) for c in self.captions[:n]],
            labels=self.labels[:n].copy(),
            meta={**self.meta, "subset_of": len(self)},
            attributes=None if self.attributes is None else list(self.attributes[:n]),
        )

    def __repr__(self) -> str:
        n_captions = sum(len(c) for c in self.captions)
        return (
            f"CaptionedImageSet({self.name}/{self.split}: {len(self)} images, "
            f"{n_captions} captions, {len(self.class_names)} classes)"
        )
