"""Where the base model's modality gap comes from: one mechanism removed at a time.

Run from the repository root (about 5 minutes on 2 cores; base models are cached in ``runs/``)::

    .venv/bin/python benchmarks/gap_mechanism.py                  # writes the CSV
    .venv/bin/python benchmarks/gap_mechanism.py --update-readme  # and the README block
    .venv/bin/python benchmarks/gap_mechanism.py --readme-only    # README from the CSV

Each variant changes one thing of the embedded default's base-model recipe (``ModelConfig()``,
``PRETRAIN_CONFIG``, captioned shapes) and is pretrained with two initialisation seeds; the
test split gives the centroid gap, the distribution gap (Bures) and Bures / spread, and, at the
size of half the split, the image-text Bures distance beside its sampling floor (two halves of
the test images; :mod:`tpccma_lib.gap.uncertainty`). Variants (:data:`VARIANTS`):

* ``recipe``: the default (MLP heads, logit scale fixed at CLIP's converged 100, captions that
  name a random subset of the attributes);
* ``learnable temperature``: the logit scale learned from CLIP's initial 1/0.07;
* ``captions name every attribute``: no information imbalance;
* ``both removed``: learnable temperature and complete captions;
* ``linear heads``: the towers' tops frozen, linear projections only (the earlier default);
* ``initialisation only``: the recipe's randomly initialised heads, no training (the cone).
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.readme_csv import run_cli  # noqa: E402
from tpccma_lib.data.config import DataConfig  # noqa: E402
from tpccma_lib.experiment import PRETRAIN_CONFIG, Experiment  # noqa: E402
from tpccma_lib.gap.checks import gap_components  # noqa: E402
from tpccma_lib.gap.uncertainty import half_sample_gap, sampling_floor  # noqa: E402
from tpccma_lib.models import ModelConfig  # noqa: E402

#: name -> (DataConfig overrides, ModelConfig overrides, pretrain?)
VARIANTS: dict[str, tuple[dict, dict, bool]] = {
    "recipe": ({}, {}, True),
    "learnable temperature": ({}, {"init_logit_scale": 1 / 0.07, "learn_logit_scale": True}, True),
    "captions name every attribute": ({"captions": "all"}, {}, True),
    "both removed": (
        {"captions": "all"},
        {"init_logit_scale": 1 / 0.07, "learn_logit_scale": True},
        True,
    ),
    "linear heads": ({}, {"head": "linear"}, True),
    "initialisation only": ({}, {}, False),
}
SEEDS = (0, 1)
FLOOR_REPEATS = 10
OUT = ROOT / "benchmarks" / "results" / "gap_mechanism.csv"
FIELDS = (
    "variant",
    "init_seed",
    "logit_scale",
    "centroid_gap",
    "distribution_gap",
    "relative_distribution_gap",
    "half_distribution_gap",
    "floor_distribution_gap",
    "seconds",
)


#: ``--smoke``: a few images and steps, to test the script end to end in seconds.
SMOKE_SIZES = {"n_train": 48, "n_val": 24, "n_test": 24}


def measure(variant: str, seed: int, runs: Path, smoke: bool = False) -> dict[str, object]:
    """Build (pretrain, or not) one variant's base model and measure it on the test split."""
    data_overrides, model_overrides, pretrain = VARIANTS[variant]
    started = time.perf_counter()
    exp = Experiment(
        DataConfig(**data_overrides, **(SMOKE_SIZES if smoke else {})),
        ModelConfig(init_seed=seed, **model_overrides),
        runs_dir=runs,
        pretrain=replace(PRETRAIN_CONFIG, steps=5, batch_size=16) if smoke else PRETRAIN_CONFIG,
        progress=False,
    )
    model = exp.base_model() if pretrain else exp.new_model()
    test = exp.embeddings(model, "test")
    gaps = gap_components(test.image, test.text)
    half = half_sample_gap(test.image, test.text, n_repeats=FLOOR_REPEATS, seed=seed)
    floor = sampling_floor(test.image, n_repeats=FLOOR_REPEATS, seed=seed)
    return {
        "variant": variant,
        "init_seed": seed,
        "logit_scale": round(float(model.logit_scale().detach()), 3),
        "centroid_gap": round(gaps["centroid_gap"], 5),
        "distribution_gap": round(gaps["distribution_gap"], 5),
        "relative_distribution_gap": round(gaps["relative_distribution_gap"], 5),
        "half_distribution_gap": round(half.mean("distribution_gap"), 5),
        "floor_distribution_gap": round(floor.mean("distribution_gap"), 5),
        "seconds": round(time.perf_counter() - started, 1),
    }


def measure_all(runs: Path, smoke: bool) -> list[dict[str, object]]:
    """Every variant with every seed (``smoke``: the first seed, tiny data, 5 steps)."""
    seeds = SEEDS[:1] if smoke else SEEDS
    return [measure(v, s, runs, smoke) for v in VARIANTS for s in seeds]


def main(argv: list[str] | None = None) -> int:
    return run_cli(
        argv,
        __doc__.split("\n")[0],
        block="mechanism",
        out=OUT,
        runs=ROOT / "runs",
        fields=FIELDS,
        measure=measure_all,
    )


if __name__ == "__main__":
    raise SystemExit(main())
