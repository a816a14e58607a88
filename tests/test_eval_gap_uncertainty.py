"""evaluation.gap_uncertainty: every evaluated model's gap numbers with interval and floor."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tpccma_lib.embeddings import Embeddings
from tpccma_lib.evaluation.gap_uncertainty import gap_uncertainty
from tpccma_lib.gap.metrics import decompose
from tpccma_lib.gap.posthoc import make_posthoc


def _emb(rng: np.random.Generator, n: int, shift: float) -> Embeddings:
    image = rng.normal(size=(n, 6)) + np.r_[shift, np.zeros(5)]
    text = rng.normal(size=(3 * n, 6)) * np.linspace(0.5, 1.5, 6)
    return Embeddings.from_arrays(image, text, np.arange(3 * n) // 3)


def test_gap_uncertainty_models_and_fixes() -> None:
    rng = np.random.default_rng(0)
    data = {
        ("base", "test"): _emb(rng, 120, 2.0),
        ("base", "val"): _emb(rng, 80, 2.0),
        ("tuned", "test"): _emb(rng, 120, 0.2),
    }
    exp = SimpleNamespace(embeddings=lambda model, split: data[(model, split)])
    models = {"base": "base", "finetuned": "tuned"}  # stand-ins: the fake exp embeds by name
    table = gap_uncertainty(exp, models, fixes=("coral_mean",), n_boot=40, n_repeats=5)
    assert table.model.unique().tolist() == ["base", "finetuned", "base + coral_mean"]
    assert (table.n_images == 120).all() and (table.n_texts == 360).all()
    fixed = make_posthoc("coral_mean").fit(data[("base", "val")]).transform(data[("base", "test")])
    expected = decompose(fixed).centroid_gap
    got = table[(table.model == "base + coral_mean") & (table.metric == "centroid_gap")]
    assert float(got.estimate.iloc[0]) == pytest.approx(expected, rel=1e-9)
    base = table[(table.model == "base") & (table.metric == "centroid_gap")].iloc[0]
    assert base.half_sample > base.floor + 5 * base.floor_std  # a real gap sits above its floor
    with pytest.raises(ValueError, match="fixes apply to the model 'base'"):
        gap_uncertainty(exp, {"finetuned": "tuned"}, fixes=("shift",))
