"""Scheduler rules and curricula compared at matched gap, not at matched alpha.

Run from the repository root (about 15 minutes on 2 idle CPU cores; the base model is
pretrained first when ``runs/`` has none)::

    .venv/bin/python benchmarks/matched_gap.py [--update-readme]

**Why.** Two training rules compared at the same alpha can end at different gaps, and then "the
rule protects the contrastive objective" and "the rule aligns less" cannot be told apart. Here
every variant runs at the alpha that brings the **validation** distribution gap to one target,
and only then is it compared on the tasks.

**What it does.** For each variant of :data:`VARIANTS` (the default rule, the same rule
measured on every step, the other rules, no scheduler, and CMA from step 0 without the three
phases) it searches alpha in ``[0, ALPHA_HI]``
with :func:`tpccma_lib.training.matched_gap.find_alpha_for_target` (regula falsi, at most
``MAX_EVALS`` fine-tunes, tolerance ``TOL``) so that the validation distribution gap is
``1 - REDUCTION`` times the original model's. Every fine-tune is the notebook-03 recipe
(:data:`tpccma_lib.experiment.FINETUNE_CONFIG`, seed 0) with the variant's settings; the
alpha = 0 run (the control: the same for every variant, since alpha = 0 never uses the
scheduler) is trained once. The search reads only the validation split; the test split is read
once per reported model: gaps, zero-shot accuracy, joint k-means ARI (3 k-means seeds), CIDEr
of a caption decoder trained on that model's train captions, and R@1
(:func:`tpccma_lib.evaluation.model_report.evaluate_model`), with the original model and the
control in the same table. Result: ``benchmarks/results/matched_gap.csv``; ``--update-readme``
(or ``--readme-only``) regenerates README's ``matched`` block from it.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.readme_csv import run_cli  # noqa: E402
from tpccma_lib.app.sweep import HEADLINE_COLUMNS  # noqa: E402
from tpccma_lib.data.config import DataConfig  # noqa: E402
from tpccma_lib.evaluation.model_report import (  # noqa: E402
    EvalConfig,
    decoder_config_for,
    evaluate_model,
    headline,
)
from tpccma_lib.experiment import FINETUNE_CONFIG, PRETRAIN_CONFIG, Experiment  # noqa: E402
from tpccma_lib.gap.metrics import decompose  # noqa: E402
from tpccma_lib.training.loop import TrainConfig  # noqa: E402
from tpccma_lib.training.matched_gap import MatchedGapError, find_alpha_for_target  # noqa: E402

#: variant -> TrainConfig overrides of FINETUNE_CONFIG (the first is the default recipe).
VARIANTS: dict[str, dict[str, Any]] = {
    "lr rule (default)": {},
    "lr rule, measured every step": {"measure_every": 1},
    "PCGrad": {"conflict_rule": "pcgrad"},
    "scale alpha": {"conflict_rule": "scale"},
    "no scheduler": {"gradient_aware": False},
    "CMA from step 0": {"warmup_fraction": 0.0, "ramp_fraction": 0.0},
}
REDUCTION = 0.5  # target: half of the original model's validation distribution gap
ALPHA_HI = 1.0
TOL = 0.005  # embedding units of the distribution gap
MAX_EVALS = 6
OUT = ROOT / "benchmarks" / "results" / "matched_gap.csv"
METRICS = tuple(m for m in HEADLINE_COLUMNS if m != "centroid_gap")  # = raw gap on the sphere
FIELDS = (
    "variant",
    "alpha",
    "val_distribution_gap",
    "target_val_distribution_gap",
    "converged",
    "n_evals",
    *(f"test_{m}" for m in METRICS),
    "seconds",
)
#: ``--smoke``: tiny data, pretraining, fine-tunes and decoder, to test the script end to end.
SMOKE_SIZES = {"n_train": 96, "n_val": 48, "n_test": 48}


def val_distribution_gap(exp: Experiment, model: Any) -> float:
    """The distribution (Bures) gap of ``model`` on the validation split."""
    return float(decompose(exp.embeddings(model, "val")).distribution_gap)


def test_metrics(exp: Experiment, model: Any, name: str, smoke: bool) -> dict[str, float]:
    """The test-split headline numbers of ``model`` (the one read of the test split)."""
    decoder = decoder_config_for(exp.data, 20 if smoke else None)
    cfg = EvalConfig(decoder=decoder, clustering_seeds=(0,) if smoke else (0, 1, 2))
    h = headline(evaluate_model(exp, model, checkpoint=name, cfg=cfg))
    return {f"test_{m}": round(h[m], 5) for m in METRICS}


def matched_row(
    exp: Experiment,
    name: str,
    cfg: TrainConfig,
    target: float,
    control_run: tuple[Any, float],
    tmp: Path,
    smoke: bool,
) -> dict[str, object]:
    """Search the alpha of variant ``name`` (settings ``cfg``) that reaches ``target``; its row.
    ``control_run``: the alpha = 0 model and its validation distribution gap. A target out of
    reach in ``[0, ALPHA_HI]`` gives the nearer end, marked not converged."""
    control, control_gap = control_run
    started = time.perf_counter()
    models: dict[float, Any] = {0.0: control}
    gaps: dict[float, float] = {0.0: control_gap}

    def measure(alpha: float) -> float:
        result = exp.finetune(replace(cfg, alpha_target=alpha), tmp / f"alpha{alpha:.6f}")
        models[alpha] = result.model
        gaps[alpha] = val_distribution_gap(exp, result.model)
        print(f"  {name}: alpha {alpha:.4f} -> val distribution gap {gaps[alpha]:.4f}", flush=True)
        return gaps[alpha]

    try:
        found = find_alpha_for_target(
            measure,
            target,
            0.0,
            ALPHA_HI,
            tol=TOL,
            max_evals=2 if smoke else MAX_EVALS,
            cache={0.0: control_gap},
        )
        alpha, value, converged, n_evals = found.alpha, found.value, found.converged, found.n_evals
    except MatchedGapError as exc:  # the target is out of this variant's reach: say so
        print(f"  {name}: {exc}", flush=True)
        alpha = ALPHA_HI if ALPHA_HI in models else 0.0
        value, converged, n_evals = gaps[alpha], False, len(models) - 1  # the control was given
    return {
        "variant": name,
        "alpha": round(alpha, 5),
        "val_distribution_gap": round(value, 5),
        "converged": converged,
        "n_evals": n_evals,
        **test_metrics(exp, models[alpha], name, smoke),
        "seconds": round(time.perf_counter() - started, 1),
    }


def measure_all(runs: Path, smoke: bool) -> list[dict[str, object]]:
    """The original model, the control and every variant at the matched validation gap."""
    exp = Experiment(
        DataConfig(**(SMOKE_SIZES if smoke else {})),
        runs_dir=runs,
        pretrain=replace(PRETRAIN_CONFIG, steps=5, batch_size=16) if smoke else PRETRAIN_CONFIG,
        progress=False,
    )
    recipe = replace(FINETUNE_CONFIG, eval_every=0)
    if smoke:
        recipe = replace(recipe, steps=10, batch_size=16)
    variants = dict(list(VARIANTS.items())[:2]) if smoke else VARIANTS
    base = exp.base_model()
    base_gap = val_distribution_gap(exp, base)
    target = (1.0 - REDUCTION) * base_gap
    rows: list[dict[str, object]] = [
        {"variant": "original model", "alpha": "", "val_distribution_gap": round(base_gap, 5),
         **test_metrics(exp, base, "base", smoke)}
    ]  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        control = exp.finetune(replace(recipe, alpha_target=0.0), tmp / "control").model
        control_gap = val_distribution_gap(exp, control)
        rows.append(
            {"variant": "control (alpha 0)", "alpha": 0.0, "val_distribution_gap": round(control_gap, 5),
             **test_metrics(exp, control, "control", smoke)}
        )  # fmt: skip
        print(f"val distribution gap: original {base_gap:.4f}, control {control_gap:.4f}, "
              f"target {target:.4f}", flush=True)  # fmt: skip
        for i, (name, overrides) in enumerate(variants.items()):
            cfg = replace(recipe, **overrides)
            row = matched_row(exp, name, cfg, target, (control, control_gap), tmp / f"v{i}", smoke)
            rows.append(row)
    for row in rows:
        row["target_val_distribution_gap"] = round(target, 5)
        row.setdefault("converged", "")
        row.setdefault("n_evals", "")
        row.setdefault("seconds", "")
    return rows


def main(argv: list[str] | None = None) -> int:
    return run_cli(
        argv,
        __doc__.split("\n")[0],
        block="matched",
        out=OUT,
        runs=ROOT / "runs",
        fields=FIELDS,
        measure=measure_all,
    )


if __name__ == "__main__":
    sys.exit(main())
