"""The one container that flows between every stage: :class:`Embeddings`.

Images and captions live in one shared space of dimension ``D``. A data set has
``N_img`` images and ``N_txt`` captions (COCO and the captioned shapes have five
captions per image), so the two matrices need not have the same number of rows;
``text_to_image`` says which image each caption describes.

Glossary (used across the library):
    image      (N_img, D) float32, rows L2-normalised, the image embeddings
    text       (N_txt, D) float32, rows L2-normalised, the caption embeddings
    image_labels (N_img,) int, class index of each image (shape class / CIFAR class), or -1
    text_to_image (N_txt,) int, index into ``image`` of the image the caption describes
    class_names  names of the classes, indexed by label
    meta       provenance: data set, split, model, checkpoint, seed, post-hoc method
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Embeddings", "EmbeddingsError", "l2_normalize"]


class EmbeddingsError(ValueError):
    """Raised for malformed embeddings; the message says what is wrong and how to fix it."""


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Return ``x`` with every row scaled to unit L2 norm. x: (N, D)."""
    x = np.asarray(x)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, eps)


@dataclass(frozen=True)
class Embeddings:
    """Image and caption embeddings of one split, with labels and pairing.

    Construct with :meth:`from_arrays` (validates and, by default, L2-normalises) or
    directly (validated in ``__post_init__``). Every stage (gap metrics, post-hoc fixes,
    evaluation) takes an ``Embeddings`` and, where it transforms, returns a new one.
    """

    image: np.ndarray  # (N_img, D) float32
    text: np.ndarray  # (N_txt, D) float32
    text_to_image: np.ndarray  # (N_txt,) int64, which image each caption describes
    image_labels: np.ndarray  # (N_img,) int64, class index, -1 when unknown
    class_names: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)

    # ------------------------------------------------------------------ construction
    def __post_init__(self) -> None:
        image = np.asarray(self.image)
        text = np.asarray(self.text)
        for name, arr in (("image", image), ("text", text)):
            if arr.ndim != 2:
                raise EmbeddingsError(
                    f"Embeddings.{name} must be a 2-D array (N, D); got shape {arr.shape}. "
                    "Stack per-sample vectors into one matrix first."
                )
            if arr.shape[0] == 0:
                raise EmbeddingsError(
                    f"Embeddings.{name} is empty (0 rows): encode at least one sample."
                )
            if not np.issubdtype(arr.dtype, np.floating):
                raise EmbeddingsError(f"Embeddings.{name} must be floating point, got {arr.dtype}.")
            if not np.isfinite(arr).all():
                bad = int((~np.isfinite(arr)).any(axis=1).sum())
                raise EmbeddingsError(
                    f"Embeddings.{name} has {bad} row(s) with NaN or inf; check the encoder "
                    "inputs (a blank caption or a corrupted image) before building Embeddings."
                )
            zero = np.flatnonzero(~arr.any(axis=1))
            if zero.size:
                raise EmbeddingsError(
                    f"Embeddings.{name} has {zero.size} all-zero row(s) (first: row "
                    f"{int(zero[0])}); a zero vector has no direction, so it cannot be "
                    "normalised or compared. Drop those samples or check the encoder."
                )
        if image.shape[1] != text.shape[1]:
            raise EmbeddingsError(
                f"image and text dimensions differ: {image.shape[1]} vs {text.shape[1]}; "
                "both modalities must be projected into the same shared space."
            )
        t2i = np.asarray(self.text_to_image, dtype=np.int64).reshape(-1)
        if t2i.shape[0] != text.shape[0]:
            raise EmbeddingsError(
                f"text_to_image has {t2i.shape[0]} entries for {text.shape[0]} captions; "
                "give one image index per caption."
            )
        if t2i.size and (t2i.min() < 0 or t2i.max() >= image.shape[0]):
            raise EmbeddingsError(
                f"text_to_image indices must lie in [0, {image.shape[0]}); got range "
                f"[{t2i.min()}, {t2i.max()}]."
            )
        labels = np.asarray(self.image_labels, dtype=np.int64).reshape(-1)
        if labels.shape[0] != image.shape[0]:
            raise EmbeddingsError(
                f"image_labels has {labels.shape[0]} entries for {image.shape[0]} images."
            )
        object.__setattr__(self, "image", image.astype(np.float32, copy=False))
        object.__setattr__(self, "text", text.astype(np.float32, copy=False))
        object.__setattr__(self, "text_to_image", t2i)
        object.__setattr__(self, "image_labels", labels)
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "meta", dict(self.meta))

    @classmethod
    def from_arrays(
        cls,
        image: np.ndarray,
        text: np.ndarray,
        text_to_image: np.ndarray | None = None,
        image_labels: np.ndarray | None = None,
        class_names: tuple[str, ...] | list[str] = (),
        meta: Mapping[str, Any] | None = None,
        normalize: bool = True,
    ) -> Embeddings:
        """Build from raw arrays. Without ``text_to_image`` captions pair 1:1 with images."""
        image = np.asarray(image, dtype=np.float64)
        text = np.asarray(text, dtype=np.float64)
        if text_to_image is None:
            if image.ndim == 2 and text.ndim == 2 and image.shape[0] != text.shape[0]:
                raise EmbeddingsError(
                    f"{image.shape[0]} images and {text.shape[0]} captions: pass text_to_image "
                    "to say which image each caption describes."
                )
            text_to_image = np.arange(text.shape[0] if text.ndim == 2 else 0)
        if image_labels is None:
            image_labels = -np.ones(image.shape[0] if image.ndim == 2 else 0, dtype=np.int64)
        if normalize and image.ndim == 2 and text.ndim == 2:
            image, text = l2_normalize(image), l2_normalize(text)
        return cls(
            image=image,
            text=text,
            text_to_image=np.asarray(text_to_image),
            image_labels=np.asarray(image_labels),
            class_names=tuple(class_names),
            meta=dict(meta or {}),
        )

    # ------------------------------------------------------------------ views
    @property
    def dim(self) -> int:
        """Dimension D of the shared space."""
        return int(self.image.shape[1])

    @property
    def n_images(self) -> int:
        return int(self.image.shape[0])

    @property
    def n_texts(self) -> int:
        return int(self.text.shape[0])

    @property
    def text_labels(self) -> np.ndarray:
        """(N_txt,) class of each caption, inherited from the image it describes."""
        return self.image_labels[self.text_to_image]

    def paired(self) -> tuple[np.ndarray, np.ndarray]:
        """(image[text_to_image], text): two (N_txt, D) arrays, row i a matched pair."""
        return self.image[self.text_to_image], self.text

    def first_caption_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """One caption per image (the first one): two (N_img', D) arrays of matched pairs."""
        _, first = np.unique(self.text_to_image, return_index=True)
        first = np.sort(first)
        return self.image[self.text_to_image[first]], self.text[first]

    def is_normalized(self, atol: float = 1e-3) -> bool:
        """True when every row of both modalities has unit L2 norm (within ``atol``)."""
        return bool(
            np.allclose(np.linalg.norm(self.image, axis=1), 1.0, atol=atol)
            and np.allclose(np.linalg.norm(self.text, axis=1), 1.0, atol=atol)
        )

    def replace(self, **changes: Any) -> Embeddings:
        """A copy with some fields replaced (validated again). ``meta`` updates are merged."""
        if "meta" in changes:
            changes["meta"] = {**self.meta, **changes["meta"]}
        return dataclasses.replace(self, **changes)

    def normalized(self) -> Embeddings:
        """A copy with both modalities L2-normalised row-wise."""
        return self.replace(image=l2_normalize(self.image), text=l2_normalize(self.text))

    def subset_images(self, image_index: np.ndarray) -> Embeddings:
        """Keep the given images and exactly the captions that describe them."""
        image_index = np.asarray(image_index, dtype=np.int64)
        remap = -np.ones(self.n_images, dtype=np.int64)
        remap[image_index] = np.arange(image_index.size)
        keep = remap[self.text_to_image] >= 0
        return dataclasses.replace(
            self,
            image=self.image[image_index],
            image_labels=self.image_labels[image_index],
            text=self.text[keep],
            text_to_image=remap[self.text_to_image[keep]],
        )

    def __repr__(self) -> str:
        return (
            f"Embeddings(n_images={self.n_images}, n_texts={self.n_texts}, dim={self.dim}, "
            f"classes={len(self.class_names)}, meta={dict(self.meta)})"
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write to a ``.npz`` file atomically (temporary file + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                image=self.image,
                text=self.text,
                text_to_image=self.text_to_image,
                image_labels=self.image_labels,
                class_names=np.asarray(self.class_names, dtype=str),
                meta=np.asarray(json.dumps(dict(self.meta), default=str)),
            )
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Embeddings:
        """Read a file written by :meth:`save`."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(
                f"No embeddings file at {path}. Run the notebook or `tpccma` command that "
                "writes it first (see README)."
            )
        with np.load(path, allow_pickle=False) as z:
            return cls(
                image=z["image"],
                text=z["text"],
                text_to_image=z["text_to_image"],
                image_labels=z["image_labels"],
                class_names=tuple(str(c) for c in z["class_names"]),
                meta=json.loads(str(z["meta"])),
            )
