"""Where the default CMA weights come from: the gap after fine-tuning, per (lambda_c, lambda_d, alpha).

Run from the repository root (about 5 minutes on 2 idle CPU cores; the base model is pretrained
first when ``runs/`` has none). Beside other work, give it one thread (``OMP_NUM_THREADS=1``):
two-thread torch on a busy 2-core machine ran each fine-tune about 15 times slower here::

    .venv/bin/python benchmarks/calibrate_cma_weights.py

**What it measures.** The fine-tune minimises ``L_clip + alpha * (lambda_c * centroid^2 +
lambda_d * Bures^2)``, so only the products ``alpha * lambda`` matter: the weights set *where on
the alpha axis* the gap starts to move. For each weight pair in ``WEIGHTS`` and each alpha of the
sweep grid it fine-tunes the embedded default's base model (300 steps, lr 1e-4, the other
:class:`TrainConfig` defaults) and records, on the **validation** split of captioned shapes (500
images, 2500 captions; the test split is never read, so the weights are not tuned on the numbers
they are reported with), the raw (= centroid) gap, the distribution (Bures) gap and zero-shot
accuracy, with the change against the base model in percent. Two more alpha = 0 runs at lower learning
rates (``DRIFT_LRS``) show how far contrastive fine-tuning alone moves the gap. Result:
``benchmarks/results/cma_weight_calibration.csv``; ``--update-readme`` (or ``--readme-only``
from the CSV) regenerates README's "Choosing the CMA weights" block from it.

The default (lambda_c 10, lambda_d 100) puts the paper's alpha range (0.01 to 1) where the gap
moves, and makes alpha = 0.05 lower both components (the curriculum issue's criterion).
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from tpccma_lib.data.config import DataConfig
from tpccma_lib.evaluation.zero_shot import class_text_embeddings, zero_shot_accuracy
from tpccma_lib.experiment import Experiment
from tpccma_lib.gap.checks import gap_components
from tpccma_lib.gap.metrics import decompose
from tpccma_lib.training.loop import TrainConfig

WEIGHTS = ((1.0, 10.0), (1.0, 100.0), (3.0, 30.0), (10.0, 30.0), (10.0, 100.0))
#: learning rates of the extra alpha = 0 runs: how far contrastive fine-tuning alone drifts
DRIFT_LRS = (3e-5, 5e-5)
ALPHAS = (0.0, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0)
#: every calibration fine-tune: 300 steps at lr 1e-4, the other TrainConfig defaults
FINETUNE = TrainConfig(lr=1e-4)
OUT = Path("benchmarks/results/cma_weight_calibration.csv")


#: The split every calibration number is measured on (never "test").
SPLIT = "val"


def measure(exp: Experiment, model) -> dict[str, float]:
    """Gaps, spread and zero-shot accuracy of ``model`` on the validation split
    (see :func:`tpccma_lib.gap.checks.gap_components` for the spread columns)."""
    emb = exp.embeddings(model, SPLIT)
    gaps = decompose(emb).as_dict()
    parts = gap_components(emb.image.astype(np.float64), emb.text.astype(np.float64))
    classes = class_text_embeddings(
        model.encode_texts, emb.class_names, exp.split(SPLIT).prompt_templates
    )
    return {
        "raw_gap": float(gaps["raw_gap"]),
        "distribution_gap": float(gaps["distribution_gap"]),
        "trace_cov_image": parts["trace_cov_image"],
        "trace_cov_text": parts["trace_cov_text"],
        "relative_distribution_gap": parts["relative_distribution_gap"],
        "zero_shot_accuracy": float(zero_shot_accuracy(emb, classes)["accuracy"]),
    }


def finetune_row(
    exp: Experiment, base: dict[str, float], cfg: TrainConfig, out_dir: Path
) -> dict[str, object]:
    """Fine-tune the base model with ``cfg``; its measurements and % changes against ``base``."""
    start = time.perf_counter()
    m = measure(exp, exp.finetune(cfg, out_dir).model)
    row: dict[str, object] = {
        "lr": cfg.lr,
        "centroid_weight": cfg.centroid_weight,
        "distribution_weight": cfg.distribution_weight,
        "alpha_target": cfg.alpha_target,
        **m,
    }
    for key in ("raw_gap", "distribution_gap"):
        row[f"{key}_change_pct"] = 100.0 * (m[key] - base[key]) / base[key]
    print(
        f"lr {cfg.lr:g} lambda_c {cfg.centroid_weight:g} lambda_d {cfg.distribution_weight:g} "
        f"alpha {cfg.alpha_target:g}: raw gap {m['raw_gap']:.3f} "
        f"({row['raw_gap_change_pct']:+.0f} %), distribution gap {m['distribution_gap']:.3f} "
        f"({row['distribution_gap_change_pct']:+.0f} %), zero-shot "
        f"{m['zero_shot_accuracy']:.3f} [{time.perf_counter() - start:.0f} s]",
        flush=True,
    )
    return row


def calibrate(
    exp: Experiment,
    weights: tuple[tuple[float, float], ...] = WEIGHTS,
    alphas: tuple[float, ...] = ALPHAS,
    drift_lrs: tuple[float, ...] = DRIFT_LRS,
    finetune: TrainConfig = FINETUNE,
) -> list[dict[str, object]]:
    """The calibration rows: the base model, then one fine-tune (``finetune`` with the alpha and
    weights changed) per (weights, alpha) and per drift learning rate, each measured on the
    validation split."""
    base = measure(exp, exp.base_model())
    rows: list[dict[str, object]] = [{"alpha_target": "base", **base}]
    configs = [
        replace(finetune, alpha_target=a, centroid_weight=c, distribution_weight=d)
        for c, d in weights
        for a in alphas
        if a > 0 or (c, d) == weights[0]  # alpha = 0 ignores the weights: one run covers all
    ]
    configs += [replace(finetune, lr=lr, alpha_target=0.0) for lr in drift_lrs]
    with tempfile.TemporaryDirectory() as tmp:
        for i, cfg in enumerate(configs):
            rows.append(finetune_row(exp, base, cfg, Path(tmp) / f"run{i}"))
    return rows


def write_rows(rows: list[dict[str, object]], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[1]), restval="")
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument(
        "--update-readme", action="store_true", help="then regenerate README's calibration block"
    )
    parser.add_argument(
        "--readme-only", action="store_true", help="only regenerate the block from --out"
    )
    args = parser.parse_args()
    if not args.readme_only:
        rows = calibrate(Experiment(DataConfig(), progress=False))
        write_rows(rows, args.out)
        print(f"wrote {args.out}")
    if args.update_readme or args.readme_only:
        from tpccma_lib.app.readme import update_calibration_section

        update_calibration_section(Path("README.md"), args.out)
        print("README calibration block regenerated")


if __name__ == "__main__":
    main()
