"""Joint clustering: ARI/NMI/modality ARI on synthetic data with a known answer."""

from __future__ import annotations

from math import comb

import numpy as np
import pytest
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

from tpccma_lib.embeddings import Embeddings
from tpccma_lib.evaluation.clustering import (
    ClusteringError,
    joint_clustering,
    joint_clustering_rows,
    joint_points,
    mixed_cluster_fraction,
)


def pair_counting_ari(a: np.ndarray, b: np.ndarray) -> float:
    """Adjusted Rand index from the contingency table (Hubert & Arabie 1985), by hand."""
    table = np.array([[np.sum((a == i) & (b == j)) for j in np.unique(b)] for i in np.unique(a)])
    sum_cells = sum(comb(int(n), 2) for n in table.ravel())
    sum_rows = sum(comb(int(n), 2) for n in table.sum(axis=1))
    sum_cols = sum(comb(int(n), 2) for n in table.sum(axis=0))
    expected = sum_rows * sum_cols / comb(len(a), 2)
    maximum = (sum_rows + sum_cols) / 2
    return (sum_cells - expected) / (maximum - expected)


def _aligned(n_per_class: int = 6, n_classes: int = 3, captions_per_image: int = 2) -> Embeddings:
    """Images and captions of class c sit tightly around the same centre: perfect clusters."""
    rng = np.random.default_rng(1)
    centres = 10 * np.eye(n_classes, 8)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    images = centres[labels] + 0.1 * rng.normal(size=(labels.size, 8))
    owner = np.repeat(np.arange(labels.size), captions_per_image)
    texts = centres[labels[owner]] + 0.1 * rng.normal(size=(owner.size, 8))
    return Embeddings.from_arrays(
        images, texts, owner, labels, [f"c{i}" for i in range(n_classes)], normalize=False
    )


def _modality_split(n: int = 12) -> Embeddings:
    """All images near +10 e0, all captions near -10 e0; the class signal is tiny."""
    rng = np.random.default_rng(2)
    labels = np.arange(n) % 2
    signal = 0.2 * np.eye(2, 6)[labels]
    images = np.array([10.0, 0, 0, 0, 0, 0]) + signal + 0.05 * rng.normal(size=(n, 6))
    texts = np.array([-10.0, 0, 0, 0, 0, 0]) + signal + 0.05 * rng.normal(size=(n, 6))
    return Embeddings.from_arrays(images, texts, None, labels, ["a", "b"], normalize=False)


def test_pair_counting_ari_agrees_with_sklearn(rng: np.random.Generator) -> None:
    a, b = rng.integers(0, 3, size=30), rng.integers(0, 4, size=30)
    assert pair_counting_ari(a, b) == pytest.approx(adjusted_rand_score(a, b))


def test_perfect_clusters_give_ari_one() -> None:
    emb = _aligned()
    result = joint_clustering(emb, seeds=(0, 1, 2))
    assert result["k"] == 3
    assert result["ari"] == pytest.approx(1.0)
    assert result["nmi"] == pytest.approx(1.0)
    assert result["ari_std"] == pytest.approx(0.0, abs=1e-12)
    assert result["mixed_fraction"] == pytest.approx(1.0)
    # Each cluster = one class, half images and half captions: ARI of such a partition
    # against the modality labels, computed independently.
    points, labels, modality = joint_points(emb)
    assert result["modality_ari"] == pytest.approx(pair_counting_ari(modality, labels))
    assert result["modality_ari"] < 0.05


def test_modality_split_gives_modality_ari_one() -> None:
    emb = _modality_split()
    result = joint_clustering(emb, seeds=(0, 1))
    assert result["modality_ari"] == pytest.approx(1.0)
    assert result["mixed_fraction"] == pytest.approx(0.0)
    _, labels, modality = joint_points(emb)
    # clusters == modality, so the class ARI is the ARI of class labels vs modality
    assert result["ari"] == pytest.approx(adjusted_rand_score(labels, modality))


def test_per_seed_values_match_kmeans_run_directly(rng: np.random.Generator) -> None:
    labels = rng.integers(0, 4, size=25)
    owner = np.repeat(np.arange(25), 3)
    emb = Embeddings.from_arrays(
        rng.normal(size=(25, 5)), rng.normal(size=(75, 5)), owner, labels, list("abcd")
    )
    seeds = (0, 1, 2, 3)
    result = joint_clustering(emb, seeds=seeds, captions="all")
    points, classes, modality = joint_points(emb, "all")
    assert points.shape == (100, 5)
    for i, seed in enumerate(seeds):
        clusters = KMeans(n_clusters=4, n_init=1, random_state=seed).fit_predict(points)
        assert result["per_seed"]["ari"][i] == pytest.approx(pair_counting_ari(classes, clusters))
        assert result["per_seed"]["modality_ari"][i] == pytest.approx(
            pair_counting_ari(modality, clusters)
        )
    for metric in ("ari", "nmi", "modality_ari", "mixed_fraction"):
        values = np.array(result["per_seed"][metric])
        assert result[metric] == pytest.approx(values.mean())
        assert result[f"{metric}_std"] == pytest.approx(
            np.sqrt(np.mean((values - values.mean()) ** 2))
        )
    assert len(set(result["per_seed"]["ari"])) > 1, "seeds should give different k-means runs"


def test_first_caption_balances_modalities() -> None:
    emb = _aligned(n_per_class=4, n_classes=2, captions_per_image=5)
    points, labels, modality = joint_points(emb, "first")
    assert (modality == 0).sum() == (modality == 1).sum() == 8
    np.testing.assert_array_equal(points[8:], emb.text[::5])
    np.testing.assert_array_equal(labels[8:], emb.image_labels)
    _, _, modality_all = joint_points(emb, "all")
    assert (modality_all == 1).sum() == 40


def test_unlabelled_images_and_their_captions_are_left_out() -> None:
    emb = _aligned(n_per_class=3, n_classes=2, captions_per_image=2)
    labels = emb.image_labels.copy()
    labels[[0, 4]] = -1
    points, classes, modality = joint_points(emb.replace(image_labels=labels), "all")
    assert points.shape[0] == 4 + 8
    assert (classes >= 0).all()


def test_mixed_fraction_threshold_by_hand() -> None:
    # cluster 0: 1 text of 10 (10 %, mixed); cluster 1: 5 images (pure);
    # cluster 2: 1 text of 11 (9.1 %, not mixed); cluster 3: 3 texts, 3 images (mixed)
    clusters = np.array([0] * 10 + [1] * 5 + [2] * 11 + [3] * 6)
    modality = np.array([1] + [0] * 9 + [0] * 5 + [1] + [0] * 10 + [0, 1] * 3)
    assert mixed_cluster_fraction(clusters, modality) == pytest.approx(2 / 4)
    assert mixed_cluster_fraction(clusters, modality, min_minority=0.5) == pytest.approx(1 / 4)


def test_errors_and_rows() -> None:
    emb = _aligned()
    with pytest.raises(ClusteringError, match="No labelled images"):
        joint_clustering(emb.replace(image_labels=-np.ones(emb.n_images, dtype=int)))
    with pytest.raises(ClusteringError, match="captions must be"):
        joint_clustering(emb, captions="some")  # type: ignore[arg-type]
    with pytest.raises(ClusteringError, match="k must lie"):
        joint_clustering(emb, k=1000)
    rows = joint_clustering_rows(emb.replace(meta={"dataset": "toy"}), seeds=(0, 1))
    assert [r["metric"] for r in rows] == ["ari", "nmi", "modality_ari", "mixed_fraction"]
    assert all(r["task"] == "clustering" and r["dataset"] == "toy" for r in rows)
    assert rows[0]["value"] == pytest.approx(1.0) and rows[0]["n_seeds"] == 2
    assert rows[0]["std"] == pytest.approx(0.0, abs=1e-12)
