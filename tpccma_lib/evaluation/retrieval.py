"""Cross-modal retrieval recall R@K, image->text and text->image, by cosine similarity.

Ranking rule: a query's *rank* is the number of wrong candidates that score at least as high
as its best correct candidate (ties count against the query, so a collapsed model whose
embeddings are all equal scores 0, not 100 %). R@K is the fraction of queries with rank < K.

- image -> text: query image ``i``; correct candidates are all captions of ``i`` (any one in
  the top K counts). Images without a caption are not queries.
- text -> image: query caption ``t``; the one correct candidate is ``text_to_image[t]``.

Similarities are computed one block of queries at a time (``block_size`` rows of the
(N_query, N_candidate) matrix in memory), so a 25k-caption test set needs no 25k x 5k matrix.
Values are fractions in [0, 1] (papers print percentages).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from tpccma_lib.embeddings import Embeddings, l2_normalize
from tpccma_lib.evaluation.records import make_row

__all__ = [
    "ranks_from_similarity",
    "recall_at_k",
    "retrieval_ranks",
    "retrieval_recall",
    "retrieval_rows",
]


def ranks_from_similarity(similarity: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """Rank of the best correct candidate of every query.

    Args:
        similarity: (Q, N) scores, higher = more similar.
        correct: (Q, N) bool, True where candidate ``n`` is a right answer for query ``q``;
            every query needs at least one.

    Returns:
        (Q,) int64, ``rank_q = #{n wrong : s_qn >= max_{m correct} s_qm}`` (0 = top).
    """
    similarity = np.asarray(similarity)
    correct = np.asarray(correct, dtype=bool)
    if similarity.shape != correct.shape or similarity.ndim != 2:
        raise ValueError(
            f"similarity {similarity.shape} and correct {correct.shape} must be the same 2-D shape."
        )
    if not correct.any(axis=1).all():
        raise ValueError("every query needs at least one correct candidate (a True in its row).")
    best = np.where(correct, similarity, -np.inf).max(axis=1, keepdims=True)  # (Q, 1)
    return ((similarity >= best) & ~correct).sum(axis=1).astype(np.int64)


def recall_at_k(ranks: np.ndarray, ks: Sequence[int]) -> dict[int, float]:
    """``{K: mean(rank < K)}`` for every K."""
    ranks = np.asarray(ranks)
    return {int(k): float((ranks < k).mean()) for k in ks}


def retrieval_ranks(emb: Embeddings, block_size: int = 1024) -> dict[str, np.ndarray]:
    """Ranks of every image query (``"image_to_text"``) and caption query (``"text_to_image"``).

    Cosine similarity (both modalities L2-normalised here); blocks of ``block_size`` queries.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}.")
    images = l2_normalize(emb.image.astype(np.float32))
    texts = l2_normalize(emb.text.astype(np.float32))
    owner = emb.text_to_image  # (N_txt,)
    queries = np.flatnonzero(np.bincount(owner, minlength=emb.n_images) > 0)
    image_ranks = []
    for start in range(0, queries.size, block_size):
        block = queries[start : start + block_size]
        similarity = images[block] @ texts.T  # (B, N_txt)
        image_ranks.append(ranks_from_similarity(similarity, owner[None, :] == block[:, None]))
    text_ranks = []
    image_ids = np.arange(emb.n_images)
    for start in range(0, emb.n_texts, block_size):
        block = np.arange(start, min(start + block_size, emb.n_texts))
        similarity = texts[block] @ images.T  # (B, N_img)
        text_ranks.append(
            ranks_from_similarity(similarity, image_ids[None, :] == owner[block, None])
        )
    return {
        "image_to_text": np.concatenate(image_ranks),
        "text_to_image": np.concatenate(text_ranks),
    }


def retrieval_recall(
    emb: Embeddings, ks: Sequence[int] = (1, 5, 10), block_size: int = 1024
) -> dict[str, Any]:
    """Recall@K both ways.

    Returns:
        ``{"i2t_R@K": ..., "t2i_R@K": ... for K in ks, "i2t_median_rank", "t2i_median_rank"
        (1-based), "n_image_queries", "n_text_queries"}``.
    """
    ks = [int(k) for k in ks]
    if not ks or min(ks) < 1:
        raise ValueError(f"ks must be positive integers, e.g. (1, 5, 10); got {ks}.")
    ranks = retrieval_ranks(emb, block_size)
    result: dict[str, Any] = {}
    for prefix, key in (("i2t", "image_to_text"), ("t2i", "text_to_image")):
        for k, value in recall_at_k(ranks[key], ks).items():
            result[f"{prefix}_R@{k}"] = value
    for prefix, key in (("i2t", "image_to_text"), ("t2i", "text_to_image")):
        result[f"{prefix}_median_rank"] = float(np.median(ranks[key]) + 1)
    result["n_image_queries"] = int(ranks["image_to_text"].size)
    result["n_text_queries"] = int(ranks["text_to_image"].size)
    return result


def retrieval_rows(
    emb: Embeddings, ks: Sequence[int] = (1, 5, 10), block_size: int = 1024
) -> list[dict[str, Any]]:
    """Rows (task ``"retrieval"``): ``i2t_R@K``, ``t2i_R@K``, and the two median ranks."""
    result = retrieval_recall(emb, ks, block_size)
    extra = {
        "n_image_queries": result.pop("n_image_queries"),
        "n_text_queries": result.pop("n_text_queries"),
    }
    return [make_row(emb, "retrieval", metric, value, **extra) for metric, value in result.items()]
