"""Zero-shot classification: each image gets the class whose prompt embedding is nearest.

Class embeddings are CLIP's prompt ensemble (:func:`class_text_embeddings`): for class ``c``
with prompts ``t_1..t_T`` (templates filled with the class name),

    w_c = normalize( mean_t normalize(encode_text(t)) )          w_c in R^D

and image ``i`` is predicted as ``argmax_c cos(x_i, w_c)``. Top-1 accuracy is measured over
the images with a label (``image_labels >= 0``); per-class accuracy, balanced accuracy (mean
of the per-class accuracies) and chance level ``1/C`` come with it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tpccma_lib.embeddings import Embeddings, l2_normalize
from tpccma_lib.evaluation.records import make_row

__all__ = [
    "ZeroShotError",
    "class_text_embeddings",
    "zero_shot_accuracy",
    "zero_shot_predictions",
    "zero_shot_rows",
]


class ZeroShotError(ValueError):
    """Raised for inputs zero-shot classification cannot use; the message says the fix."""


def _fill(template: str | Callable[[str], str], name: str) -> str:
    if callable(template):
        return str(template(name))
    if "{}" not in template and "{c}" not in template:
        raise ZeroShotError(
            f"Prompt template {template!r} has no '{{}}' (or '{{c}}') placeholder for the class "
            "name; write it like 'a photo of a {}.'."
        )
    return template.replace("{c}", "{}").format(name)


def class_text_embeddings(
    encode_text: Callable[[list[str]], np.ndarray],
    class_names: Sequence[str],
    templates: Sequence[str | Callable[[str], str]] = ("a photo of a {}.",),
) -> np.ndarray:
    """Prompt-ensemble class embeddings, as CLIP builds its zero-shot classifier.

    Args:
        encode_text: list of ``n`` strings -> (n, D) text embeddings (any norm).
        class_names: the ``C`` class names, in label order.
        templates: ``T`` prompt templates with a ``{}`` placeholder (or callables
            ``name -> prompt``).

    Returns:
        (C, D) float32, row ``c`` = normalize(mean over templates of normalize(encode(prompt))).
    """
    names = [str(n) for n in class_names]
    if not names:
        raise ZeroShotError("class_names is empty: give the names of the classes, in label order.")
    if not templates:
        raise ZeroShotError("templates is empty: give at least one, e.g. ('a photo of a {}.',).")
    prompts = [_fill(t, name) for name in names for t in templates]
    encoded = np.asarray(encode_text(prompts), dtype=np.float64)
    if encoded.ndim != 2 or encoded.shape[0] != len(prompts):
        raise ZeroShotError(
            f"encode_text returned shape {encoded.shape} for {len(prompts)} prompts; it must "
            "return one row per prompt, (n_prompts, D)."
        )
    per_prompt = l2_normalize(encoded).reshape(len(names), len(templates), -1)  # (C, T, D)
    return l2_normalize(per_prompt.mean(axis=1)).astype(np.float32)


def _check(emb: Embeddings, class_embeddings: np.ndarray) -> np.ndarray:
    weights = np.asarray(class_embeddings, dtype=np.float64)
    if weights.ndim != 2 or weights.shape[0] == 0:
        raise ZeroShotError(
            f"class_embeddings must be a non-empty (C, D) matrix; got shape {weights.shape}."
        )
    if weights.shape[1] != emb.dim:
        raise ZeroShotError(
            f"class_embeddings have dimension {weights.shape[1]} but the images have {emb.dim}; "
            "encode the prompts with the same model (and projection) as the images."
        )
    n_classes = weights.shape[0]
    if emb.class_names and len(emb.class_names) != n_classes:
        raise ZeroShotError(
            f"{n_classes} class embeddings for {len(emb.class_names)} class names "
            f"({list(emb.class_names)[:5]}...); build one embedding per class, in label order."
        )
    labels = emb.image_labels
    if not (labels >= 0).any():
        raise ZeroShotError(
            "No labelled images (every image_labels entry is -1): zero-shot accuracy needs a "
            "data set with classes (e.g. the shape classes or CIFAR-10)."
        )
    if labels.max() >= n_classes:
        raise ZeroShotError(
            f"image label {int(labels.max())} has no class embedding (only {n_classes} given)."
        )
    return weights


def zero_shot_predictions(emb: Embeddings, class_embeddings: np.ndarray) -> np.ndarray:
    """(N_img,) int64 predicted class of every image: ``argmax_c cos(image_i, w_c)``.

    Ties go to the lower class index.
    """
    weights = l2_normalize(_check(emb, class_embeddings))
    scores = l2_normalize(emb.image.astype(np.float64)) @ weights.T  # (N_img, C)
    return scores.argmax(axis=1).astype(np.int64)


def zero_shot_accuracy(emb: Embeddings, class_embeddings: np.ndarray) -> dict[str, Any]:
    """Top-1 zero-shot accuracy of the labelled images.

    Args:
        emb: images with ``image_labels`` (``-1`` = unlabelled, skipped).
        class_embeddings: (C, D), e.g. from :func:`class_text_embeddings`.

    Returns:
        dict with ``accuracy`` (fraction in [0, 1]), ``balanced_accuracy`` (mean of the
        per-class accuracies over classes that have images), ``per_class_accuracy``
        (class name -> accuracy, classes without images left out), ``n_images``,
        ``n_classes`` and ``chance`` (= 1 / C).
    """
    predictions = zero_shot_predictions(emb, class_embeddings)
    labelled = emb.image_labels >= 0
    labels, predicted = emb.image_labels[labelled], predictions[labelled]
    n_classes = int(np.asarray(class_embeddings).shape[0])
    names = emb.class_names or tuple(str(c) for c in range(n_classes))
    per_class = {
        names[c]: float((predicted[labels == c] == c).mean())
        for c in range(n_classes)
        if (labels == c).any()
    }
    return {
        "accuracy": float((predicted == labels).mean()),
        "balanced_accuracy": float(np.mean(list(per_class.values()))),
        "per_class_accuracy": per_class,
        "n_images": int(labelled.sum()),
        "n_classes": n_classes,
        "chance": 1.0 / n_classes,
    }


def zero_shot_rows(
    emb: Embeddings, class_embeddings: np.ndarray, per_class: bool = False
) -> list[dict[str, Any]]:
    """Rows (task ``"zero_shot"``): ``accuracy``, ``balanced_accuracy``, ``chance``.

    With ``per_class=True`` also one ``class_accuracy`` row per class (column ``class_name``).
    """
    result = zero_shot_accuracy(emb, class_embeddings)
    common = {"n_images": result["n_images"], "n_classes": result["n_classes"]}
    rows = [
        make_row(emb, "zero_shot", metric, result[metric], **common)
        for metric in ("accuracy", "balanced_accuracy", "chance")
    ]
    if per_class:
        rows += [
            make_row(emb, "zero_shot", "class_accuracy", acc, class_name=name, **common)
            for name, acc in result["per_class_accuracy"].items()
        ]
    return rows
