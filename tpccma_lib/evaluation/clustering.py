"""Joint clustering: do images and captions of one class fall into the same k-means cluster?

The paper's test of a shared space: cluster the *union* of image and text embeddings with
k-means and compare the clusters with

- the class labels (``ari``, ``nmi``; a caption inherits the class of its image) — high when
  clusters follow meaning, whatever the modality;
- the modality (``modality_ari``: ARI between the clusters and the image/text indicator) —
  1 when the clusters split exactly by modality, the signature of a large modality gap;
- ``mixed_fraction``: the fraction of non-empty clusters that hold both modalities, a cluster
  counting as mixed when its minority modality is at least ``min_minority`` (default 10 %) of
  its members (a few stray points do not make a cluster shared).

Points: every labelled image (``image_labels >= 0``) and, with ``captions="first"`` (default),
the first caption of each of those images, so both modalities weigh the same (with five
captions per image text would otherwise outnumber images 5:1 and dominate the centroids);
``captions="all"`` uses every caption. k-means is scikit-learn's Euclidean k-means on the
vectors as given (unit vectors from an encoder; the output of a post-hoc fix is used
unchanged), ``n_init=1`` per seed so the seeds give different local optima; every metric is
reported as mean and (population, ``ddof=0``) standard deviation over the seeds.

Joint clustering on CIFAR-10 (the full reproduction; ``DataConfig(zero_shot="cifar10")``):
CIFAR-10 has no captions, so the text side is the class prompts — every CLIP CIFAR-10 template
filled with every class name, embedded by the model's text encoder, each carrying its class
(:meth:`tpccma_lib.experiment.Experiment.labelled_embeddings`). k-means with k = 10 runs over the
test images together with those prompt embeddings (``captions="all"``) and ARI is measured
against the shared class labels. Reference protocol: ModGap's joint k-means over image and
text embeddings of one label space (the paper reports ARI 0.318 -> 0.516 on this task).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from tpccma_lib.embeddings import Embeddings
from tpccma_lib.evaluation.records import make_row

__all__ = [
    "CLUSTERING_METRICS",
    "ClusteringError",
    "joint_clustering",
    "joint_clustering_rows",
    "joint_points",
    "mixed_cluster_fraction",
]

#: Metrics :func:`joint_clustering` reports (each as mean and ``_std``).
CLUSTERING_METRICS: tuple[str, ...] = ("ari", "nmi", "modality_ari", "mixed_fraction")


class ClusteringError(ValueError):
    """Raised for inputs joint clustering cannot use; the message says the fix."""


def joint_points(
    emb: Embeddings, captions: Literal["first", "all"] = "first"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The points joint clustering sees.

    Returns:
        points (N, D) float64 (labelled images first, then their captions),
        class labels (N,) int64, modality (N,) int64 (0 = image, 1 = text).
    """
    if captions not in ("first", "all"):
        raise ClusteringError(f"captions must be 'first' or 'all', got {captions!r}.")
    labelled = emb.image_labels >= 0
    if not labelled.any():
        raise ClusteringError(
            "No labelled images (image_labels all -1): joint clustering compares clusters with "
            "class labels; use a data set with classes."
        )
    text_index = np.flatnonzero(labelled[emb.text_to_image])
    if captions == "first":
        _, first = np.unique(emb.text_to_image[text_index], return_index=True)
        text_index = text_index[np.sort(first)]
    if text_index.size == 0:
        raise ClusteringError("The labelled images have no captions; nothing to cluster jointly.")
    image_index = np.flatnonzero(labelled)
    points = np.concatenate([emb.image[image_index], emb.text[text_index]]).astype(np.float64)
    labels = np.concatenate([emb.image_labels[image_index], emb.text_labels[text_index]])
    modality = np.repeat([0, 1], [image_index.size, text_index.size]).astype(np.int64)
    return points, labels, modality


def mixed_cluster_fraction(
    clusters: np.ndarray, modality: np.ndarray, min_minority: float = 0.10
) -> float:
    """Fraction of non-empty clusters whose minority modality is >= ``min_minority`` of them.

    Args:
        clusters: (N,) cluster id of every point.
        modality: (N,) 0/1 modality of every point.
        min_minority: share of the smaller modality that makes a cluster mixed.
    """
    clusters, modality = np.asarray(clusters), np.asarray(modality)
    mixed = []
    for cluster in np.unique(clusters):
        members = modality[clusters == cluster]
        text_share = members.mean()
        mixed.append(min(text_share, 1.0 - text_share) >= min_minority)
    return float(np.mean(mixed))


def joint_clustering(
    emb: Embeddings,
    k: int | None = None,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    captions: Literal["first", "all"] = "first",
    min_minority: float = 0.10,
) -> dict[str, Any]:
    """k-means on images and captions together, scored against classes and modality.

    Args:
        emb: embeddings with class labels.
        k: number of clusters; default the number of classes (``len(class_names)``, or the
            number of distinct labels when the names are missing).
        seeds: one k-means run (``n_init=1``) per seed.
        captions: ``"first"`` (one caption per image, balanced) or ``"all"``.
        min_minority: threshold of :func:`mixed_cluster_fraction`.

    Returns:
        dict with, for each metric ``m`` in ``ari, nmi, modality_ari, mixed_fraction``:
        ``m`` (mean over seeds) and ``m_std``; plus ``per_seed`` (metric -> list), ``k``,
        ``seeds``, ``n_images``, ``n_texts``.
    """
    points, labels, modality = joint_points(emb, captions)
    if k is None:
        k = len(emb.class_names) or int(np.unique(labels).size)
    if not 2 <= k <= points.shape[0]:
        raise ClusteringError(
            f"k = {k} clusters for {points.shape[0]} points; k must lie in [2, n_points]."
        )
    if len(seeds) == 0:
        raise ClusteringError("seeds is empty: give at least one k-means seed, e.g. (0, 1, 2).")
    per_seed: dict[str, list[float]] = {m: [] for m in CLUSTERING_METRICS}
    for seed in seeds:
        clusters = KMeans(n_clusters=k, n_init=1, random_state=int(seed)).fit_predict(points)
        per_seed["ari"].append(float(adjusted_rand_score(labels, clusters)))
        per_seed["nmi"].append(float(normalized_mutual_info_score(labels, clusters)))
        per_seed["modality_ari"].append(float(adjusted_rand_score(modality, clusters)))
        per_seed["mixed_fraction"].append(mixed_cluster_fraction(clusters, modality, min_minority))
    result: dict[str, Any] = {}
    for metric, values in per_seed.items():
        result[metric] = float(np.mean(values))
        result[f"{metric}_std"] = float(np.std(values))
    result.update(
        per_seed=per_seed,
        k=int(k),
        seeds=[int(s) for s in seeds],
        n_images=int((modality == 0).sum()),
        n_texts=int((modality == 1).sum()),
    )
    return result


def joint_clustering_rows(
    emb: Embeddings,
    k: int | None = None,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    captions: Literal["first", "all"] = "first",
    min_minority: float = 0.10,
) -> list[dict[str, Any]]:
    """Rows (task ``"clustering"``): one per metric, value = mean over seeds, column ``std``."""
    result = joint_clustering(emb, k, seeds, captions, min_minority)
    extra = {
        "k": result["k"],
        "n_seeds": len(result["seeds"]),
        "captions": captions,
        "n_images": result["n_images"],
        "n_texts": result["n_texts"],
    }
    return [
        make_row(emb, "clustering", m, result[m], std=result[f"{m}_std"], **extra)
        for m in CLUSTERING_METRICS
    ]
