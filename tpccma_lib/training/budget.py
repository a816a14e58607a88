"""How long to pretrain the base model, decided without looking at the modality gap.

The embedded mini-CLIP's base model is the one the paper's "original CLIP" stands for, so its
pretraining budget must come from the contrastive task, not from the gap it leaves (a budget
picked for a large gap would make the gap an artefact of when training stopped). The criterion
is early stopping on a held-out contrastive loss:

* :func:`held_out_contrastive_loss` is CLIP's symmetric InfoNCE over the whole validation split
  as one batch (each image with its first caption), at the model's own logit scale;
* :func:`choose_budget` returns the step budget with the lowest loss averaged over
  initialisation seeds (ties: the shorter budget).

``benchmarks/pretrain_budget.py`` runs the grid and writes the README's budget block, including
the gap the chosen budget leaves at 1x, 2x and 4x its length.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from tpccma_lib.embeddings import Embeddings
from tpccma_lib.training.losses import clip_contrastive_loss

__all__ = ["held_out_contrastive_loss", "choose_budget", "BudgetError"]


class BudgetError(ValueError):
    """Raised for an empty or malformed budget grid."""


def held_out_contrastive_loss(emb: Embeddings, logit_scale: float) -> float:
    """Symmetric InfoNCE (nats) of ``emb``'s first-caption pairs as one batch of N_img pairs.

    emb: normalised embeddings of a held-out split; logit_scale: the multiplier (e.g. 100).
    Computed in float64; chance level is ``log(N_img)``.
    """
    image, text = emb.first_caption_pairs()  # (N, D) each, row i paired with row i
    if image.shape[0] < 2:
        raise BudgetError("the held-out contrastive loss needs at least 2 image-caption pairs.")
    loss = clip_contrastive_loss(
        torch.from_numpy(np.asarray(image, dtype=np.float64)),
        torch.from_numpy(np.asarray(text, dtype=np.float64)),
        float(logit_scale),
    )
    return float(loss)


def choose_budget(rows: Iterable[Mapping[str, Any]]) -> int:
    """The ``steps`` whose ``val_loss`` (mean over the rows of that budget, e.g. init seeds) is
    lowest; the shorter budget wins a tie. rows: dicts with ``steps`` and ``val_loss``."""
    by_budget: dict[int, list[float]] = {}
    for row in rows:
        loss = float(row["val_loss"])
        if not np.isfinite(loss):
            raise BudgetError(f"budget {row['steps']} has a non-finite validation loss {loss}.")
        by_budget.setdefault(int(row["steps"]), []).append(loss)
    if not by_budget:
        raise BudgetError("choose_budget got no rows; run the budget grid first.")
    return min(sorted(by_budget), key=lambda steps: float(np.mean(by_budget[steps])))
