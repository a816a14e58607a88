"""The gap numbers of evaluated models with their intervals and sampling floors (notebook 04).

:func:`gap_uncertainty` embeds the test split under each model (and under post-hoc fixes of
one of them, fitted on the validation split) and puts every gap metric beside its bootstrap
interval and the split-half floor of :func:`tpccma_lib.gap.uncertainty.uncertainty_table`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import pandas as pd

from tpccma_lib.gap.posthoc import make_posthoc
from tpccma_lib.gap.uncertainty import UNCERTAINTY_COLUMNS, uncertainty_table

if TYPE_CHECKING:
    from tpccma_lib.experiment import Experiment
    from tpccma_lib.models.base import DualEncoder

__all__ = ["gap_uncertainty"]


def gap_uncertainty(
    exp: Experiment,
    models: Mapping[str, DualEncoder],
    fixes: Sequence[str] = (),
    fixed_model: str = "base",
    *,
    split: str = "test",
    fit_split: str = "val",
    n_boot: int = 100,
    n_repeats: int = 20,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per (model, gap metric): estimate, 95 % bootstrap interval, half-sample value
    and same-modality floor (:func:`tpccma_lib.gap.uncertainty.uncertainty_table`), on ``split``.

    Args:
        models: name -> model; each is embedded on ``split``.
        fixes: post-hoc methods (``tpccma_lib.gap.posthoc``) applied to ``fixed_model``: fitted
            on its ``fit_split`` embeddings, applied to its ``split`` ones; rows named
            ``"<fixed_model> + <fix>"``.
        n_boot, n_repeats, seed: bootstrap resamples, split-half draws, their seed.

    Returns:
        Columns ``model`` then :data:`tpccma_lib.gap.uncertainty.UNCERTAINTY_COLUMNS`, with
        ``n_images`` and ``n_texts`` (the sample the numbers belong to).
    """
    if fixes and fixed_model not in models:
        raise ValueError(
            f"fixes apply to the model {fixed_model!r}, which is not among {sorted(models)}; "
            "pass it in models or set fixed_model."
        )
    embedded = {name: exp.embeddings(model, split) for name, model in models.items()}
    if fixes:
        fit = exp.embeddings(models[fixed_model], fit_split)
        for fix in fixes:
            method = make_posthoc(fix).fit(fit)
            embedded[f"{fixed_model} + {fix}"] = method.transform(embedded[fixed_model])
    frames = []
    for name, emb in embedded.items():
        table = uncertainty_table(emb.image, emb.text, n_repeats, n_boot, seed)
        table.insert(0, "model", name)
        frames.append(table.assign(n_images=emb.n_images, n_texts=emb.n_texts))
    columns = ["model", *UNCERTAINTY_COLUMNS, "n_images", "n_texts"]
    return pd.concat(frames, ignore_index=True)[columns]
