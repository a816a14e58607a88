"""Bring your own embeddings: read a ``.npz`` of any dual encoder into :class:`Embeddings`.

The layout (one ``np.savez(path, image=..., text=..., ...)`` call)::

    image          (N, D) float   image embeddings, one row per image              required
    text           (M, D) float   caption (text) embeddings, one row per caption   required
    text_to_image  (M,)   int     caption i describes image text_to_image[i], in [0, N);
                                  default when absent: M == N and caption i <-> image i
    labels         (N,)   int     class index of each image (-1 = unlabelled)      optional
    class_names    (C,)   str     name of each class, indexed by label             optional
    class_text     (C, D) float   embedding of each class's prompt (e.g. "a photo of a {c}."),
                                  row c for class c: needed for zero-shot accuracy and for
                                  joint clustering with class prompts                optional

Rows need not be normalised: they are L2-normalised on load (CLIP compares by cosine), unless
``normalize=False``. ``image_labels`` (the name :meth:`Embeddings.save` writes) is accepted for
``labels`` and a ``meta`` entry is ignored, so a file written by :meth:`Embeddings.save` loads
too. Every problem (a missing or misspelt array, a wrong shape or dtype, NaN/inf or all-zero
rows, an index out of range) raises :class:`~tpccma_lib.embeddings.EmbeddingsError` with one
line naming the file, the array and the fix.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tpccma_lib.embeddings import Embeddings, EmbeddingsError, l2_normalize

__all__ = ["NPZ_ARRAYS", "EmbeddingsFile", "load_embeddings_npz"]

#: Arrays the ``.npz`` layout knows (``image_labels`` and ``meta``: what Embeddings.save adds).
NPZ_ARRAYS = ("image", "text", "text_to_image", "labels", "class_names", "class_text")
_ALSO_ACCEPTED = ("image_labels", "meta")


@dataclass(frozen=True)
class EmbeddingsFile:
    """A loaded ``.npz``: the embeddings and, when given, the class-prompt embeddings.

    Attributes:
        embeddings: images (N, D), captions (M, D), pairing, labels (N,), class names.
        class_text: (C, D) float32 class-prompt embeddings (normalised like the rest), or None.
        path: the file read.
        paired_by_default: True when the file had no ``text_to_image`` (caption i <-> image i).
    """

    embeddings: Embeddings
    class_text: np.ndarray | None
    path: Path
    paired_by_default: bool

    @property
    def has_labels(self) -> bool:
        """At least one image has a class label (>= 0)."""
        return bool((self.embeddings.image_labels >= 0).any())


def _fail(path: Path, message: str) -> EmbeddingsError:
    return EmbeddingsError(f"{path.name}: {message}")


def _float_matrix(path: Path, name: str, arr: np.ndarray, dim: int | None = None) -> np.ndarray:
    if arr.ndim != 2:
        raise _fail(path, f"array {name!r} must be 2-D (rows, D); got shape {arr.shape}.")
    if not np.issubdtype(arr.dtype, np.floating):
        raise _fail(
            path, f"array {name!r} must be float, got dtype {arr.dtype}; save .astype(np.float32)."
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise _fail(path, f"array {name!r} is empty (shape {arr.shape}); save at least one row.")
    if dim is not None and arr.shape[1] != dim:
        raise _fail(
            path,
            f"array {name!r} has dimension {arr.shape[1]} but 'image' has {dim}; both must be "
            "embeddings of the same shared space (after each encoder's projection).",
        )
    arr = arr.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(arr).all(axis=1))
    if bad.size:
        raise _fail(
            path,
            f"array {name!r} has {bad.size} row(s) with NaN or inf (first: row {int(bad[0])}); "
            "drop those samples (and their entries in the other arrays) or fix the encoder.",
        )
    zero = np.flatnonzero(~arr.any(axis=1))
    if zero.size:
        raise _fail(
            path,
            f"array {name!r} has {zero.size} all-zero row(s) (first: row {int(zero[0])}); a zero "
            "vector has no direction: drop those samples.",
        )
    return arr


def _index_vector(path: Path, name: str, arr: np.ndarray, length: int, what: str) -> np.ndarray:
    if arr.ndim != 1 or arr.shape[0] != length:
        raise _fail(
            path,
            f"array {name!r} must have shape ({length},), one entry per {what}; got {arr.shape}.",
        )
    if (
        np.issubdtype(arr.dtype, np.floating)
        and np.isfinite(arr).all()
        and (arr == np.round(arr)).all()
    ):
        arr = arr.astype(np.int64)  # integral floats (a common save mistake) are accepted
    if not np.issubdtype(arr.dtype, np.integer):
        raise _fail(
            path,
            f"array {name!r} must hold integers, got dtype {arr.dtype}; save it with .astype(int).",
        )
    return arr.astype(np.int64)


def load_embeddings_npz(path: str | os.PathLike[str], *, normalize: bool = True) -> EmbeddingsFile:
    """Read and validate a ``.npz`` in the layout of this module's docstring.

    Args:
        path: the file.
        normalize: L2-normalise the rows of ``image``, ``text`` and ``class_text``.
    Returns:
        an :class:`EmbeddingsFile`; ``embeddings.meta`` names the file (``dataset`` = its stem).
    Raises:
        EmbeddingsError: the file is missing, not a ``.npz`` or breaks the layout (one line).
    """
    path = Path(path)
    if not path.is_file():
        raise _fail(
            path, f"no such file {str(path)!r}; save it with np.savez(path, image=..., text=...)."
        )
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {key: np.asarray(z[key]) for key in z.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise _fail(
            path,
            f"not a readable .npz of plain arrays ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
            "write it with np.savez(path, image=..., text=...) (no object arrays).",
        ) from None
    unknown = sorted(set(arrays) - set(NPZ_ARRAYS) - set(_ALSO_ACCEPTED))
    if unknown:
        raise _fail(path, f"unknown array(s) {unknown}; the layout has {list(NPZ_ARRAYS)}.")
    for required in ("image", "text"):
        if required not in arrays:
            raise _fail(
                path,
                f"missing array {required!r} (have {sorted(arrays)}); save the {required} "
                f"embeddings as {required}=<({'N' if required == 'image' else 'M'}, D) float array>.",
            )
    if "labels" in arrays and "image_labels" in arrays:
        raise _fail(path, "has both 'labels' and 'image_labels'; keep one (labels).")
    image = _float_matrix(path, "image", arrays["image"])
    n_images, dim = image.shape
    text = _float_matrix(path, "text", arrays["text"], dim)
    n_texts = text.shape[0]

    paired_by_default = "text_to_image" not in arrays
    if paired_by_default:
        if n_texts != n_images:
            raise _fail(
                path,
                f"{n_images} images but {n_texts} captions and no 'text_to_image': add "
                "text_to_image=<(M,) int array>, the image index each caption describes.",
            )
        text_to_image = np.arange(n_texts, dtype=np.int64)
    else:
        text_to_image = _index_vector(
            path, "text_to_image", arrays["text_to_image"], n_texts, "caption"
        )
        bad = np.flatnonzero((text_to_image < 0) | (text_to_image >= n_images))
        if bad.size:
            raise _fail(
                path,
                f"'text_to_image' must index images in [0, {n_images}); entry {int(bad[0])} is "
                f"{int(text_to_image[bad[0]])} ({bad.size} out of range).",
            )

    label_key = "labels" if "labels" in arrays else "image_labels"
    labels = -np.ones(n_images, dtype=np.int64)
    if label_key in arrays:
        labels = _index_vector(path, label_key, arrays[label_key], n_images, "image")
        if (labels < -1).any():
            raise _fail(path, f"'{label_key}' must be class indices >= 0, or -1 for unlabelled.")

    class_names: tuple[str, ...] = ()
    if "class_names" in arrays:
        names = arrays["class_names"]
        if names.ndim != 1 or not np.issubdtype(names.dtype, np.str_):
            raise _fail(
                path,
                f"'class_names' must be a 1-D array of strings, got shape {names.shape} dtype "
                f"{names.dtype}; save np.asarray(names, dtype=str).",
            )
        class_names = tuple(str(n) for n in names)

    class_text = None
    if "class_text" in arrays:
        class_text = _float_matrix(path, "class_text", arrays["class_text"], dim)
        if class_names and class_text.shape[0] != len(class_names):
            raise _fail(
                path,
                f"'class_text' has {class_text.shape[0]} rows for {len(class_names)} class names; "
                "give one prompt embedding per class, in label order.",
            )
    n_classes = len(class_names) or (class_text.shape[0] if class_text is not None else None)
    if n_classes is not None and labels.max() >= n_classes:
        raise _fail(
            path,
            f"label {int(labels.max())} has no class: only {n_classes} classes in "
            f"{'class_names' if class_names else 'class_text'}.",
        )

    if normalize:
        image, text = l2_normalize(image), l2_normalize(text)
        if class_text is not None:
            class_text = l2_normalize(class_text)
    emb = Embeddings(
        image=image.astype(np.float32),
        text=text.astype(np.float32),
        text_to_image=text_to_image,
        image_labels=labels,
        class_names=class_names,
        meta={"dataset": path.stem, "split": "all", "model": "npz", "source": str(path)},
    )
    return EmbeddingsFile(
        embeddings=emb,
        class_text=None if class_text is None else class_text.astype(np.float32),
        path=path,
        paired_by_default=paired_by_default,
    )
