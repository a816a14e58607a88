"""Numbers behind notebook 01's checks: the Fréchet identity by a second route, and what each
post-hoc fix does to the two gap components.

    frechet_identity_check  W2^2 from the raw arrays (scipy sqrtm) vs centroid^2 + Bures^2
    posthoc_gap_effects     centroid and distribution gap after each post-hoc fix (fit on one
                            split, applied to another), before and after renormalisation

The figures that draw these tables are in :mod:`tpccma_lib.viz.gap`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from tpccma_lib.embeddings import Embeddings
from tpccma_lib.gap.metrics import GapDecomposition, bures_distance, modality_moments
from tpccma_lib.gap.posthoc import POSTHOC_METHODS, make_posthoc
from tpccma_lib.linalg import percent_change

__all__ = ["frechet_identity_check", "gap_components", "posthoc_gap_effects"]


def frechet_identity_check(emb: Embeddings, decomposition: GapDecomposition) -> dict[str, float]:
    """Check ``W2^2 = centroid_gap^2 + distribution_gap^2`` by a second, independent route.

    The direct value is the FID formula on the raw arrays: ``||mu_img - mu_txt||^2 +
    tr S_img + tr S_txt - 2 tr sqrtm(S_img S_txt)`` with ``np.cov(bias=True)`` and
    ``scipy.linalg.sqrtm`` of the (non-symmetric) product, where ``decompose`` uses the
    symmetric form through eigh.

    Returns:
        centroid_sq, distribution_sq (from ``decomposition``), their sum, w2_sq_direct,
        abs_difference (float64).
    """
    from scipy.linalg import sqrtm

    image, text = emb.image.astype(np.float64), emb.text.astype(np.float64)
    cov_image, cov_text = (
        np.cov(image, rowvar=False, bias=True),
        np.cov(text, rowvar=False, bias=True),
    )
    cross = np.real(np.trace(sqrtm(cov_image @ cov_text)))
    mean_sq = float(np.sum((image.mean(axis=0) - text.mean(axis=0)) ** 2))
    direct = mean_sq + float(np.trace(cov_image) + np.trace(cov_text) - 2.0 * cross)
    centroid_sq = decomposition.centroid_gap**2
    distribution_sq = decomposition.distribution_gap**2
    total = centroid_sq + distribution_sq
    return {
        "centroid_sq": centroid_sq,
        "distribution_sq": distribution_sq,
        "centroid_sq + distribution_sq": total,
        "w2_sq_direct": direct,
        "abs_difference": abs(total - direct),
    }


def gap_components(image: np.ndarray, text: np.ndarray) -> dict[str, float]:
    """Centroid gap, distribution (Bures) gap and spread of (N_img, D) and (N_txt, D) arrays.

    ``spread`` = sqrt((tr S_img + tr S_txt) / 2) (also returned as ``trace_cov_image`` and
    ``trace_cov_text``); ``relative_distribution_gap`` = Bures / spread is scale-free (scaling
    both covariances by c scales Bures and spread by sqrt(c)).
    """
    mi = modality_moments(image, name="image")
    mt = modality_moments(text, name="text")
    assert mi.covariance is not None and mt.covariance is not None
    spread = math.sqrt(0.5 * (mi.total_variance + mt.total_variance))
    distribution = bures_distance(mi.covariance, mt.covariance)
    return {
        "centroid_gap": float(np.linalg.norm(mi.mean - mt.mean)),
        "distribution_gap": distribution,
        "spread": spread,
        "relative_distribution_gap": distribution / spread if spread > 0 else math.nan,
        "trace_cov_image": float(mi.total_variance),
        "trace_cov_text": float(mt.total_variance),
    }


def posthoc_gap_effects(
    fit: Embeddings, target: Embeddings, methods: Sequence[str] | None = None
) -> pd.DataFrame:
    """Centroid and distribution gap of ``target`` after each post-hoc fix fitted on ``fit``.

    Each method (default: every name in ``POSTHOC_METHODS``, default parameters) is fitted on
    ``fit`` and applied to ``target`` (never fitted on it). Two stages per method:
    "mapped" (the affine map alone, :meth:`PosthocMethod.map_arrays`) and "renormalized"
    (rows back on the unit sphere, :meth:`PosthocMethod.transform`, what is reported).

    Returns:
        One row per (method, stage): centroid_gap, distribution_gap (Bures), spread
        sqrt((tr S_img + tr S_txt)/2), relative_distribution_gap = distribution_gap / spread,
        and centroid_change_pct, distribution_change_pct, relative_distribution_change_pct
        = 100 (value / value(target) - 1) of the matching column.
    """
    methods = tuple(POSTHOC_METHODS) if methods is None else tuple(methods)
    baseline = gap_components(target.image, target.text)
    rows = []
    for name in methods:
        method = make_posthoc(name).fit(fit)
        mapped = method.map_arrays(target.image, target.text)
        renormalized = method.transform(target)
        for stage, (image, text) in (
            ("mapped", mapped),
            ("renormalized", (renormalized.image, renormalized.text)),
        ):
            gaps = gap_components(image, text)
            rows.append(
                {
                    "method": name,
                    "stage": stage,
                    **gaps,
                    "centroid_change_pct": percent_change(
                        gaps["centroid_gap"], baseline["centroid_gap"]
                    ),
                    "distribution_change_pct": percent_change(
                        gaps["distribution_gap"], baseline["distribution_gap"]
                    ),
                    "relative_distribution_change_pct": percent_change(
                        gaps["relative_distribution_gap"], baseline["relative_distribution_gap"]
                    ),
                }
            )
    return pd.DataFrame(rows)
