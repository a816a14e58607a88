"""Retrieval R@K on hand-built similarity matrices and embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from tpccma_lib.embeddings import Embeddings
from tpccma_lib.evaluation.retrieval import (
    ranks_from_similarity,
    recall_at_k,
    retrieval_ranks,
    retrieval_recall,
    retrieval_rows,
)


def test_ranks_from_a_hand_built_similarity_matrix() -> None:
    similarity = np.array(
        [
            [0.9, 0.8, 0.1, 0.8],  # correct: 1 (0.8); 0.9 beats it, 0.8 ties -> rank 2
            [0.2, 0.5, 0.7, 0.6],  # correct: 1, 3 -> best 0.6; only 0.7 beats it -> rank 1
            [0.3, 0.3, 0.3, 0.1],  # correct: 0 (0.3); two ties -> rank 2
        ]
    )
    correct = np.array(
        [[False, True, False, False], [False, True, False, True], [True, False, False, False]]
    )
    ranks = ranks_from_similarity(similarity, correct)
    np.testing.assert_array_equal(ranks, [2, 1, 2])
    assert recall_at_k(ranks, (1, 2, 3)) == pytest.approx({1: 0.0, 2: 1 / 3, 3: 1.0})
    with pytest.raises(ValueError, match="at least one correct"):
        ranks_from_similarity(similarity, np.zeros_like(correct))


def _circle_case() -> Embeddings:
    """Images and captions as unit vectors in the plane; cosine = cos(angle difference).

    Images (deg): I0 0, I1 90, I2 180, I3 270, I4 45 (I4 has no caption).
    Captions: t0 10 (I0), t1 60 (I0), t2 100 (I1), t3 250 (I2), t4 300 (I3).

    text -> image: t0 nearest I0 -> rank 0; t1: I4 15, I1 30, I0 60 -> rank 2;
    t2: I1 -> 0; t3: I3 20, I2 70 -> rank 1; t4: I3 -> 0.
    image -> text: I0 best own t0 (10) -> 0; I1 own t2 (10) -> 0; I2 own t3 (70), t2 at 80 -> 0;
    I3 own t4 (30), t3 at 20 beats it -> 1. I4 is not a query.
    """

    def unit(degrees: list[float]) -> np.ndarray:
        radians = np.deg2rad(degrees)
        return np.stack([np.cos(radians), np.sin(radians)], axis=1)

    return Embeddings.from_arrays(
        unit([0, 90, 180, 270, 45]),
        unit([10, 60, 100, 250, 300]),
        text_to_image=np.array([0, 0, 1, 2, 3]),
    )


def test_recall_on_constructed_embeddings() -> None:
    emb = _circle_case()
    ranks = retrieval_ranks(emb)
    np.testing.assert_array_equal(ranks["image_to_text"], [0, 0, 0, 1])
    np.testing.assert_array_equal(ranks["text_to_image"], [0, 2, 0, 1, 0])
    result = retrieval_recall(emb, ks=(1, 2, 3))
    assert result["i2t_R@1"] == pytest.approx(3 / 4)
    assert result["i2t_R@2"] == pytest.approx(1.0)
    assert result["t2i_R@1"] == pytest.approx(3 / 5)
    assert result["t2i_R@2"] == pytest.approx(4 / 5)
    assert result["t2i_R@3"] == pytest.approx(1.0)
    assert result["i2t_median_rank"] == pytest.approx(1.0)
    assert result["t2i_median_rank"] == pytest.approx(1.0)
    assert (result["n_image_queries"], result["n_text_queries"]) == (4, 5)


def _brute_force_ranks(emb: Embeddings) -> tuple[list[int], list[int]]:
    """Sort every query's candidates and find the first correct one (no ties in random data)."""
    images = emb.image / np.linalg.norm(emb.image, axis=1, keepdims=True)
    texts = emb.text / np.linalg.norm(emb.text, axis=1, keepdims=True)
    image_ranks = []
    for i in range(emb.n_images):
        own = set(np.flatnonzero(emb.text_to_image == i))
        if not own:
            continue
        order = np.argsort(-(texts @ images[i]))
        image_ranks.append(next(pos for pos, t in enumerate(order) if t in own))
    text_ranks = []
    for t in range(emb.n_texts):
        order = list(np.argsort(-(images @ texts[t])))
        text_ranks.append(order.index(emb.text_to_image[t]))
    return image_ranks, text_ranks


@pytest.mark.parametrize("block_size", [1, 7, 4096])
def test_blocked_ranks_match_brute_force(rng: np.random.Generator, block_size: int) -> None:
    owner = np.sort(rng.integers(0, 30, size=70))  # 0-5 captions per image, some none
    emb = Embeddings.from_arrays(rng.normal(size=(30, 6)), rng.normal(size=(70, 6)), owner)
    image_ranks, text_ranks = _brute_force_ranks(emb)
    ranks = retrieval_ranks(emb, block_size=block_size)
    np.testing.assert_array_equal(ranks["image_to_text"], image_ranks)
    np.testing.assert_array_equal(ranks["text_to_image"], text_ranks)
    result = retrieval_recall(emb, ks=(1, 5, 10), block_size=block_size)
    for k in (1, 5, 10):
        assert result[f"i2t_R@{k}"] == pytest.approx(np.mean(np.array(image_ranks) < k))
        assert result[f"t2i_R@{k}"] == pytest.approx(np.mean(np.array(text_ranks) < k))


def test_collapsed_embeddings_score_zero_not_one() -> None:
    same = np.ones((4, 3))
    emb = Embeddings.from_arrays(same, same)
    result = retrieval_recall(emb, ks=(1,))
    assert result["i2t_R@1"] == 0.0 and result["t2i_R@1"] == 0.0


def test_rows_and_errors() -> None:
    emb = _circle_case().replace(meta={"dataset": "circle", "posthoc": "identity"})
    rows = retrieval_rows(emb, ks=(1, 2))
    metrics = [r["metric"] for r in rows]
    assert metrics == [
        "i2t_R@1",
        "i2t_R@2",
        "t2i_R@1",
        "t2i_R@2",
        "i2t_median_rank",
        "t2i_median_rank",
    ]
    assert rows[0]["value"] == pytest.approx(0.75) and rows[0]["posthoc"] == "identity"
    assert rows[0]["n_image_queries"] == 4
    with pytest.raises(ValueError, match="ks must be positive"):
        retrieval_recall(emb, ks=(0,))
    with pytest.raises(ValueError, match="block_size"):
        retrieval_recall(emb, block_size=0)
