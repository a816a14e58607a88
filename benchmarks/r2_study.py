"""Which gap predicts the tasks: R² over models whose centroid and distribution gap move apart.

Run from the repository root (about 25 minutes on one CPU core, ``OMP_NUM_THREADS=1``; the base
models of seeds 0 and 1 are pretrained first when ``runs/`` has none)::

    .venv/bin/python benchmarks/r2_study.py                  # writes both CSVs
    .venv/bin/python benchmarks/r2_study.py --update-readme  # and the README block
    .venv/bin/python benchmarks/r2_study.py --readme-only    # README from the CSV

**Why.** The paper finds that the distribution gap predicts task quality far better than the
raw gap (R² 0.986 vs 0.691). Along an alpha sweep every gap metric falls together (and on the
unit sphere the raw gap *is* the centroid gap), so regressions over a sweep cannot tell them
apart. This study adds models on which the two parts move independently and reports each R²
with a bootstrap interval, and the paired difference R²(distribution gap) - R²(raw gap) with
its own interval: the number that answers the paper's question.

**The models** (for each of :data:`SEEDS`; a seed is its own captioned-shapes world, base
model and fine-tune batch order):

* ``base``: the original model;
* ``posthoc``: each post-hoc fix of :data:`tpccma_lib.gap.posthoc.POSTHOC_METHODS` at its
  default, full-strength settings (e.g. ``shift`` removes the whole centroid offset), fitted on
  the validation split and scored with a caption decoder of its own
  (``EvalConfig.posthoc_captioning="own_decoder"``);
* ``cma``: fine-tunes with both CMA terms at the default weights (lambda_c 10, lambda_d 100),
  alpha in :data:`CMA_ALPHAS` (the paper's two headline values);
* ``centroid_only`` (lambda_d = 0) and ``distribution_only`` (lambda_c = 0): each fine-tuned
  at every alpha of :data:`CANDIDATE_ALPHAS`; the part it targets (centroid gap for the
  first, distribution gap for the second) is measured on the **validation** split, and the
  alphas whose validation value is nearest to each fraction of :data:`TARGET_FRACTIONS` of the
  original model's (one half, one quarter; :func:`choose_alphas`, each candidate used once)
  are kept. The test split is not read for this choice; only the kept models are evaluated;
* ``control``: the alpha = 0 fine-tune (the same steps, no alignment term).

Every fine-tune is the notebook-03 recipe (:data:`tpccma_lib.experiment.FINETUNE_CONFIG`) with
the seed and the weights above. Every model is evaluated once on the test split by
:func:`tpccma_lib.evaluation.model_report.evaluate_model` (gaps, zero-shot accuracy, joint
k-means ARI over 3 k-means seeds, CIDEr of its own text-only caption decoder, R@1). One row per
model goes to ``r2_points.csv`` (beside ``--out``); the R² table
(:func:`tpccma_lib.evaluation.analysis.r2_study_table`: every task metric on every gap metric,
over all models and over the fine-tunes only, :data:`N_BOOT` resamples of the models) goes to
``--out`` (``benchmarks/results/r2_study.csv``), and ``--update-readme`` / ``--readme-only``
regenerate README's ``r2`` block from it, verdict included.

**Runtime.** A fine-tune takes about 10 s and an evaluation about 40 s (most of it the caption
decoder), on one core: 32 evaluated models plus 16 candidate fine-tunes; the run that wrote the
committed CSVs took 23 minutes while another process shared the machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from benchmarks.readme_csv import run_cli, write_rows  # noqa: E402
from tpccma_lib.data.config import DataConfig  # noqa: E402
from tpccma_lib.evaluation.analysis import r2_study_table  # noqa: E402
from tpccma_lib.evaluation.model_report import (  # noqa: E402
    EvalConfig,
    decoder_config_for,
    evaluate_model,
    headline,
)
from tpccma_lib.evaluation.roles import resolve_posthoc  # noqa: E402
from tpccma_lib.experiment import FINETUNE_CONFIG, PRETRAIN_CONFIG, Experiment  # noqa: E402
from tpccma_lib.gap.metrics import decompose  # noqa: E402
from tpccma_lib.training.loop import TrainConfig  # noqa: E402

SEEDS = (0, 1)
CMA_ALPHAS = (0.05, 0.5)
#: kind -> (TrainConfig overrides, the gap part it targets)
SINGLE_TERM: dict[str, tuple[dict[str, float], str]] = {
    "centroid_only": ({"distribution_weight": 0.0}, "centroid_gap"),
    "distribution_only": ({"centroid_weight": 0.0}, "distribution_gap"),
}
CANDIDATE_ALPHAS = (0.05, 0.2, 0.5, 1.0)
TARGET_FRACTIONS = (0.5, 0.25)
POSTHOC = tuple(resolve_posthoc("all"))
GAPS = ("raw_gap", "centroid_gap", "distribution_gap")
TASKS = ("zero_shot_accuracy", "clustering_ari", "cider", "i2t_R@1")
N_BOOT = 2000
LEVEL = 0.95
BOOTSTRAP_SEED = 0
KIND_LABELS = {
    "base": "original models",
    "posthoc": "post-hoc fixes",
    "cma": "fine-tunes with both CMA terms",
    "centroid_only": "λ_c-only fine-tunes",
    "distribution_only": "λ_d-only fine-tunes",
    "control": "α = 0 controls",
}
FINE_TUNES = ("cma", "centroid_only", "distribution_only", "control")
OUT = ROOT / "benchmarks" / "results" / "r2_study.csv"
POINTS_NAME = "r2_points.csv"
POINT_FIELDS = (
    "seed",
    "kind",
    "variant",
    "alpha",
    "centroid_weight",
    "distribution_weight",
    "val_raw_gap",
    "val_distribution_gap",
    *GAPS,
    *TASKS,
    "t2i_R@1",
    "seconds",
)
FIELDS = (
    "scope",
    "points",
    "gap_correlation",
    "task_metric",
    "gap_metric",
    "n",
    "r2",
    "r2_low",
    "r2_high",
    "r",
    "slope",
    "n_valid",
    "reference",
    "r2_minus_reference",
    "difference_low",
    "difference_high",
    "n_boot",
    "level",
    "bootstrap_seed",
)
#: ``--smoke``: tiny data, pretraining, fine-tunes and decoder, to test the script end to end.
SMOKE_SIZES = {"n_train": 96, "n_val": 48, "n_test": 48}


def choose_alphas(
    val_part: dict[float, float], base_part: float, fractions: Sequence[float] = TARGET_FRACTIONS
) -> list[float]:
    """The candidate alphas whose validation value of the targeted gap part is nearest to each
    ``fraction * base_part``, in the order of ``fractions``; each candidate is used once.

    Args:
        val_part: candidate alpha -> the targeted part on the validation split.
        base_part: the original model's value of that part on the validation split.
    """
    left = dict(val_part)
    chosen = []
    for fraction in fractions:
        if not left:
            break
        alpha = min(left, key=lambda a: (abs(left[a] - fraction * base_part), a))
        chosen.append(alpha)
        del left[alpha]
    return chosen


class Study:
    """The models of one seed, each evaluated once on the test split into a point row."""

    def __init__(self, seed: int, runs: Path, tmp: Path, smoke: bool) -> None:
        self.seed, self.tmp, self.smoke = seed, tmp, smoke
        self.exp = Experiment(
            DataConfig(seed=seed, **(SMOKE_SIZES if smoke else {})),
            runs_dir=runs,
            pretrain=replace(PRETRAIN_CONFIG, steps=5, batch_size=16) if smoke else PRETRAIN_CONFIG,
            progress=False,
        )
        recipe = replace(FINETUNE_CONFIG, eval_every=0, seed=seed)
        self.recipe = replace(recipe, steps=20, batch_size=16) if smoke else recipe
        decoder = decoder_config_for(self.exp.data, 20 if smoke else None)
        self.eval_cfg = EvalConfig(decoder=decoder, clustering_seeds=(0,) if smoke else (0, 1, 2))
        self.started = time.perf_counter()

    def val_gaps(self, model: Any) -> dict[str, float]:
        """Raw, centroid and distribution gap on the validation split."""
        d = decompose(self.exp.embeddings(model, "val"))
        return {m: float(getattr(d, m)) for m in GAPS}

    def finetune(self, cfg: TrainConfig, name: str) -> tuple[Any, float]:
        """A fine-tune of the base model and its seconds."""
        t = time.perf_counter()
        model = self.exp.finetune(cfg, self.tmp / f"seed{self.seed}-{name}").model
        return model, time.perf_counter() - t

    def point(
        self, model: Any, kind: str, variant: str, cfg: TrainConfig | None = None,
        posthoc: str = "identity", val: dict[str, float] | None = None, seconds: float = 0.0,
    ) -> dict[str, object]:  # fmt: skip
        """Evaluate ``model`` (with ``posthoc``) on the test split: its row of r2_points.csv."""
        t = time.perf_counter()
        frame = evaluate_model(
            self.exp, model, checkpoint=variant, posthoc=posthoc, cfg=self.eval_cfg
        )
        h = headline(frame)
        seconds += time.perf_counter() - t
        print(
            f"seed {self.seed} {kind:>17} {variant:<14} {seconds:6.1f} s  (seed so far "
            f"{time.perf_counter() - self.started:6.0f} s)",
            flush=True,
        )
        return {
            "seed": self.seed,
            "kind": kind,
            "variant": variant,
            "alpha": "" if cfg is None else cfg.alpha_target,
            "centroid_weight": "" if cfg is None else cfg.centroid_weight,
            "distribution_weight": "" if cfg is None else cfg.distribution_weight,
            "val_raw_gap": "" if val is None else round(val["raw_gap"], 5),
            "val_distribution_gap": "" if val is None else round(val["distribution_gap"], 5),
            **{m: round(h[m], 5) for m in (*GAPS, *TASKS, "t2i_R@1")},
            "seconds": round(seconds, 1),
        }

    def rows(self) -> list[dict[str, object]]:
        """Every model of this seed (see the module docstring), in that order."""
        base = self.exp.base_model()
        base_val = self.val_gaps(base)
        rows = [self.point(base, "base", "original model", val=base_val)]
        for method in POSTHOC[:1] if self.smoke else POSTHOC:
            rows.append(self.point(base, "posthoc", method, posthoc=method))
        runs = [("control", replace(self.recipe, alpha_target=0.0))]
        for alpha in CMA_ALPHAS[1:] if self.smoke else CMA_ALPHAS:
            runs.append(("cma", replace(self.recipe, alpha_target=alpha)))
        for kind, cfg in runs:
            model, seconds = self.finetune(cfg, f"{kind}-alpha{cfg.alpha_target}")
            rows.append(
                self.point(
                    model, kind, f"alpha {cfg.alpha_target:g}", cfg,
                    val=self.val_gaps(model), seconds=seconds,
                )
            )  # fmt: skip
        candidates = CANDIDATE_ALPHAS[1::2] if self.smoke else CANDIDATE_ALPHAS
        for kind, (weights, part) in SINGLE_TERM.items():
            tried: dict[float, tuple[Any, TrainConfig, dict[str, float], float]] = {}
            for alpha in candidates:
                cfg = replace(self.recipe, alpha_target=alpha, **weights)
                model, seconds = self.finetune(cfg, f"{kind}-alpha{alpha}")
                tried[alpha] = (model, cfg, self.val_gaps(model), seconds)
                val = tried[alpha][2]
                print(
                    f"seed {self.seed} {kind} alpha {alpha:g}: validation centroid gap "
                    f"{val['centroid_gap']:.4f}, distribution gap {val['distribution_gap']:.4f} "
                    f"(original {base_val['centroid_gap']:.4f}, "
                    f"{base_val['distribution_gap']:.4f}); {seconds:.1f} s",
                    flush=True,
                )
            kept = choose_alphas(
                {a: t[2][part] for a, t in tried.items()}, base_val[part], TARGET_FRACTIONS
            )
            for alpha in kept:
                model, cfg, val, seconds = tried[alpha]
                rows.append(
                    self.point(model, kind, f"alpha {alpha:g}", cfg, val=val, seconds=seconds)
                )
        return rows


def study_table(points: pd.DataFrame) -> pd.DataFrame:
    """The R² table of the points: over all models, and over the fine-tunes only."""
    scopes = {
        "All models": [True] * len(points),
        "Fine-tunes only": points["kind"].isin(FINE_TUNES).tolist(),
    }
    return r2_study_table(
        points, scopes, TASKS, GAPS, reference="raw_gap", compared="distribution_gap",
        kind_labels=KIND_LABELS, n_boot=N_BOOT, level=LEVEL, seed=BOOTSTRAP_SEED,
    )  # fmt: skip


def measure_all(runs: Path, smoke: bool, points_csv: Path) -> list[dict[str, object]]:
    """Evaluate every model of every seed, write ``points_csv``; the R² table's rows."""
    rows: list[dict[str, object]] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp_name:
        for seed in SEEDS[:1] if smoke else SEEDS:
            rows += Study(seed, runs, Path(tmp_name), smoke).rows()
    write_rows(rows, POINT_FIELDS, points_csv)
    print(f"wrote {points_csv} ({len(rows)} models, {time.perf_counter() - started:.0f} s)")
    table = study_table(pd.DataFrame(rows))
    return [{k: r[k] for k in FIELDS} for r in table.to_dict("records")]


def main(argv: list[str] | None = None) -> int:
    """``run_cli`` with the points CSV written beside ``--out`` (``r2_points.csv``)."""
    if "TPCCMA_THREADS" in os.environ:
        import torch

        torch.set_num_threads(int(os.environ["TPCCMA_THREADS"]))
    peek = argparse.ArgumentParser(add_help=False)
    peek.add_argument("--out", type=Path, default=OUT)
    points_csv = peek.parse_known_args(argv)[0].out.with_name(POINTS_NAME)
    return run_cli(
        argv,
        __doc__.split("\n")[0],
        block="r2",
        out=OUT,
        runs=ROOT / "runs",
        fields=FIELDS,
        measure=lambda runs, smoke: measure_all(runs, smoke, points_csv),
    )


if __name__ == "__main__":
    sys.exit(main())
