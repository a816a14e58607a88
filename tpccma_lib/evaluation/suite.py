"""Run every evaluation the inputs allow and return all rows: :func:`evaluate_embeddings`.

Which tasks run:

============  ===============================================================  =============
task          needs                                                            module
============  ===============================================================  =============
retrieval     always (images and their captions)                               retrieval
clustering    labelled images (``image_labels >= 0``) of at least 2 classes,   clustering
              in ``clustering`` when given (e.g. CIFAR-10 + class prompts)
zero_shot     ``class_embeddings`` and labelled images                         zero_shot
captioning    ``decoder`` and ``references``                                   captioning
============  ===============================================================  =============

Tasks whose optional inputs are not given are skipped; inputs that are given but cannot be
used (no labelled images for ``class_embeddings``, a decoder of another dimension) raise the
task's own error rather than drop the task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tpccma_lib.embeddings import Embeddings
from tpccma_lib.evaluation.captioning import TextDecoder, captioning_rows
from tpccma_lib.evaluation.clustering import joint_clustering_rows
from tpccma_lib.evaluation.retrieval import retrieval_rows
from tpccma_lib.evaluation.zero_shot import zero_shot_rows

__all__ = ["evaluate_embeddings"]


def evaluate_embeddings(
    test: Embeddings,
    *,
    class_embeddings: np.ndarray | None = None,
    zero_shot: Embeddings | None = None,
    clustering: Embeddings | None = None,
    clustering_captions: str = "first",
    decoder: TextDecoder | None = None,
    references: Sequence[Sequence[str]] | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    ks: Sequence[int] = (1, 5, 10),
    clustering_k: int | None = None,
    caption_metrics: Sequence[str] = ("CIDEr", "BLEU-4", "ROUGE-L"),
) -> list[dict[str, Any]]:
    """Evaluate one set of test embeddings on every available task.

    Args:
        test: test-split embeddings (after any post-hoc fix; its ``meta`` names the run).
        class_embeddings: (C, D) zero-shot class embeddings; enables ``zero_shot``.
        zero_shot: embeddings to classify instead of ``test`` (e.g. CIFAR-10 when ``test``
            is COCO); default ``test``.
        clustering: embeddings to cluster jointly instead of ``test`` (e.g. CIFAR-10 images
            with class-prompt texts when ``test`` is COCO); default ``test``.
        clustering_captions: ``"first"`` (first caption per image) or ``"all"`` (every text,
            e.g. every class prompt); see :func:`~tpccma_lib.evaluation.clustering.joint_points`.
        decoder: text-only caption decoder; with ``references`` enables ``captioning``.
        references: ``references[i]`` = reference captions of image ``i`` of ``test``.
        seeds: k-means seeds of the joint clustering.
        ks: the K of retrieval R@K.
        clustering_k: number of clusters (default: number of classes).
        caption_metrics: metrics of the captioning task.

    Returns:
        rows (see :mod:`~tpccma_lib.evaluation.records`) of all tasks that ran.
    """
    rows = retrieval_rows(test, ks)
    cluster_on = clustering if clustering is not None else test
    labels = cluster_on.image_labels[cluster_on.image_labels >= 0]
    if np.unique(labels).size >= 2:
        rows += joint_clustering_rows(
            cluster_on, k=clustering_k, seeds=seeds, captions=clustering_captions
        )
    if class_embeddings is not None:
        rows += zero_shot_rows(zero_shot if zero_shot is not None else test, class_embeddings)
    if (decoder is None) != (references is None):
        raise ValueError(
            "captioning needs both decoder and references (the reference captions of every "
            "test image); pass both or neither."
        )
    if decoder is not None and references is not None:
        rows += captioning_rows(decoder, test, references, metrics=caption_metrics)
    return rows
