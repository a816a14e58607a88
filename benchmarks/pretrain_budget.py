"""The base model's pretraining budget, chosen by held-out contrastive loss, not by the gap.

Run from the repository root (about 8 minutes on 2 cores; base models are cached in ``runs/``)::

    .venv/bin/python benchmarks/pretrain_budget.py                  # writes the CSV
    .venv/bin/python benchmarks/pretrain_budget.py --update-readme  # and the README block
    .venv/bin/python benchmarks/pretrain_budget.py --readme-only    # README from the CSV

For each projection head ("linear", "mlp") and initialisation seed, the base model is pretrained
with ``PRETRAIN_CONFIG`` at every budget of :data:`GRID` (the cosine schedule spans the budget,
as a recipe of that length would), and the validation split gives the held-out contrastive loss
(:func:`tpccma_lib.training.budget.held_out_contrastive_loss`) and the gap (raw, centroid,
Bures, Bures / spread). :func:`~tpccma_lib.training.budget.choose_budget` picks, per head, the
budget of lowest mean loss; the gap at 1x, 2x and 4x that budget shows whether the gap is a
property of the recipe or of when training stopped. Only the validation split is read.
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
from tpccma_lib.models import ModelConfig  # noqa: E402
from tpccma_lib.training.budget import choose_budget, held_out_contrastive_loss  # noqa: E402

GRID = (50, 100, 150, 200, 300, 400, 600, 800, 1200)
HEADS = ("linear", "mlp")
SEEDS = (0, 1)
OUT = ROOT / "benchmarks" / "results" / "pretrain_budget.csv"
FIELDS = (
    "head",
    "init_seed",
    "steps",
    "val_loss",
    "centroid_gap",
    "distribution_gap",
    "relative_distribution_gap",
    "seconds",
)


#: ``--smoke``: a few images and steps, to test the script end to end in seconds.
SMOKE_DATA = DataConfig(n_train=48, n_val=24, n_test=24)


def measure(
    head: str, seed: int, steps: int, runs: Path, data: DataConfig | None = None
) -> dict[str, object]:
    """Pretrain (or load the cached) base model and measure it on the validation split."""
    started = time.perf_counter()
    data = data or DataConfig()
    exp = Experiment(
        data,
        ModelConfig(head=head, init_seed=seed),
        runs_dir=runs,
        pretrain=replace(
            PRETRAIN_CONFIG, steps=steps, batch_size=min(PRETRAIN_CONFIG.batch_size, data.n_train)
        ),
        progress=False,
    )
    model = exp.base_model()
    val = exp.embeddings(model, "val")
    gaps = gap_components(val.image, val.text)
    return {
        "head": head,
        "init_seed": seed,
        "steps": steps,
        "val_loss": round(held_out_contrastive_loss(val, float(model.logit_scale().detach())), 5),
        "centroid_gap": round(gaps["centroid_gap"], 5),
        "distribution_gap": round(gaps["distribution_gap"], 5),
        "relative_distribution_gap": round(gaps["relative_distribution_gap"], 5),
        "seconds": round(time.perf_counter() - started, 1),
    }


def run_grid(
    runs: Path,
    heads: tuple[str, ...] = HEADS,
    seeds: tuple[int, ...] = SEEDS,
    grid: tuple[int, ...] = GRID,
    data: DataConfig | None = None,
) -> list[dict[str, object]]:
    """Every (head, seed, budget) of the grid, plus 2x and 4x the chosen budget if missing."""
    rows = [measure(h, s, n, runs, data) for h in heads for s in seeds for n in grid]
    for head in heads:
        chosen = choose_budget(r for r in rows if r["head"] == head)
        for n in (2 * chosen, 4 * chosen):
            if n not in grid:
                rows += [measure(head, s, n, runs, data) for s in seeds]
    return rows


def measure_grid(runs: Path, smoke: bool) -> list[dict[str, object]]:
    """The full grid, or (``smoke``) the MLP head, seed 0, budgets 5 and 10 on tiny data."""
    if smoke:
        return run_grid(runs, ("mlp",), (0,), (5, 10), SMOKE_DATA)
    return run_grid(runs)


def main(argv: list[str] | None = None) -> int:
    return run_cli(
        argv,
        __doc__.split("\n")[0],
        block="budget",
        out=OUT,
        runs=ROOT / "runs",
        fields=FIELDS,
        measure=measure_grid,
    )


if __name__ == "__main__":
    raise SystemExit(main())
