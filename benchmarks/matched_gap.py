"""Scheduler rules and curricula compared at matched gap, not at matched alpha.

Run from the repository root (about 30 minutes on 2 CPU cores; the base model is pretrained first
when ``runs/`` has none)::

    .venv/bin/python benchmarks/matched_gap.py [--update-readme]

**Why.** Two training rules compared at the same alpha can end at different gaps, and then "the
rule protects the contrastive objective" and "the rule aligns less" cannot be told apart. Here
every variant is run at the alpha that brings the **validation** distribution gap to the same
target, and only then compared on the tasks.

**What it does.** For each variant of :data:`VARIANTS` (the default rule, the other rules, no
scheduler, and CMA from step 0 without the three phases) it searches ``alpha`` in
``[0, ALPHA_HI]`` with :func:`tpccma_lib.training.matched_gap.find_alpha_for_target` (regula
falsi, at most ``MAX_EVALS`` fine-tunes, tolerance ``TOL``) so that the validation distribution
gap is ``(1 - REDUCTION)`` times the original model's. Every fine-tune is the notebook-03 recipe
(:data:`tpccma_lib.experiment.FINETUNE_CONFIG`, seed 0) with the variant's settings; the alpha = 0
run (the control, the same for every variant) is trained once. The search reads only the
validation split; the test split is touched once per variant, for the reported numbers:
gaps, zero-shot accuracy, joint k-means ARI, CIDEr and R@1 (:func:`evaluate_model`), with the
original model and the control in the same table. Result:
``benchmarks/results/matched_gap.csv``; ``--update-readme`` (or ``--readme-only``) regenerates
README's ``matched`` block from it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from readme_csv import write_rows

from tpccma_lib.data.config import DataConfig
from tpccma_lib.evaluation.model_report import EvalConfig, evaluate_model, headline
from tpccma_lib.experiment import FINETUNE_CONFIG, Experiment
from tpccma_lib.gap.metrics import decompose
from tpccma_lib.training.loop import TrainConfig
from tpccma_lib.training.matched_gap import MatchedAlpha, find_alpha_for_target

#: variant -> TrainConfig overrides of FINETUNE_CONFIG.
VARIANTS: dict[str, dict[str, Any]] = {
    "lr rule (default)": {"conflict_rule": "lr"},
    "PCGrad": {"conflict_rule": "pcgrad"},
    "scale alpha": {"conflict_rule": "scale"},
    "no scheduler": {"gradient_aware": False},
    "CMA from step 0": {"warmup_fraction": 0.0, "ramp_fraction": 0.0},
}
REDUCTION = 0.5  # target: half of the original model's validation distribution gap
ALPHA_HI = 1.0
TOL = 0.005  # embedding units of the distribution gap
MAX_EVALS = 6
OUT = Path("benchmarks/results/matched_gap.csv")
TASK_COLUMNS = (
    "raw_gap",
    "distribution_gap",
    "zero_shot_accuracy",
    "clustering_ari",
    "cider",
    "i2t_R@1",
    "t2i_R@1",
)


def val_distribution_gap(exp: Experiment, model: Any) -> float:
    """The distribution (Bures) gap of ``model`` on the validation split."""
    return float(decompose(exp.embeddings(model, "val")).distribution_gap)


def test_row(exp: Experiment, model: Any, name: str) -> dict[str, Any]:
    """The test-split headline numbers of ``model`` (the one read of the test split)."""
    h = headline(evaluate_model(exp, model, checkpoint=name, cfg=EvalConfig(clustering_seeds=(0, 1, 2))))
    return {f"test_{k}": h[k] for k in TASK_COLUMNS}


def search(
    exp: Experiment, cfg: TrainConfig, target: float, control_gap: float, tmp: Path
) -> tuple[MatchedAlpha, dict[float, Any]]:
    """The matched alpha of ``cfg``'s variant; its fine-tuned models by alpha."""
    models: dict[float, Any] = {}

    def measure(alpha: float) -> float:
        start = time.perf_counter()
        result = exp.finetune(replace(cfg, alpha_target=alpha), tmp / f"a{alpha:.6f}")
        models[alpha] = result.model
        gap = val_distribution_gap(exp, result.model)
        print(f"    alpha {alpha:.4f}: val distribution gap {gap:.4f} [{time.perf_counter() - start:.0f} s]", flush=True)
        return gap

    found = find_alpha_for_target(
        measure, target, 0.0, ALPHA_HI, tol=TOL, max_evals=MAX_EVALS, cache={0.0: control_gap}
    )
    return found, models


def measure_all(exp: Experiment) -> list[dict[str, Any]]:
    """One row for the original model, one for the control, one per variant at matched gap."""
    base = exp.base_model()
    base_gap = val_distribution_gap(exp, base)
    target = (1.0 - REDUCTION) * base_gap
    rows = [{"variant": "original model", "alpha": "", "val_distribution_gap": base_gap, **test_row(exp, base, "base")}]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        control = exp.finetune(replace(FINETUNE_CONFIG, alpha_target=0.0), tmp / "control").model
        control_gap = val_distribution_gap(exp, control)
        rows.append({"variant": "control (alpha 0)", "alpha": 0.0, "val_distribution_gap": control_gap, **test_row(exp, control, "control")})
        print(f"original {base_gap:.4f}, control {control_gap:.4f}, target {target:.4f}", flush=True)
        for i, (name, overrides) in enumerate(VARIANTS.items()):
            print(f"  {name}", flush=True)
            cfg = replace(FINETUNE_CONFIG, **overrides)
            found, models = search(exp, cfg, target, control_gap, tmp / f"v{i}")
            rows.append(
                {
                    "variant": name,
                    "alpha": found.alpha,
                    "val_distribution_gap": found.value,
                    "converged": found.converged,
                    "n_evals": found.n_evals,
                    **test_row(exp, models[found.alpha], name),
                }
            )
    for row in rows:
        row["target_val_distribution_gap"] = target
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--update-readme", action="store_true")
    parser.add_argument("--readme-only", action="store_true")
    args = parser.parse_args()
    if not args.readme_only:
        rows = measure_all(Experiment(DataConfig(), progress=False))
        write_rows(rows, args.out)
        print(f"wrote {args.out}")
    if args.update_readme or args.readme_only:
        from tpccma_lib.app.readme import update_csv_section

        update_csv_section(Path("README.md"), "matched", args.out)
        print("README matched block regenerated")


if __name__ == "__main__":
    main()
