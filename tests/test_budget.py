"""The pretraining budget is chosen by held-out contrastive loss, and the README says so."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import logsumexp

from tpccma_lib import Embeddings
from tpccma_lib.app.readme import (
    budget_section,
    heads_section,
    matched_section,
    mechanism_section,
    stepcost_section,
)
from tpccma_lib.experiment import PRETRAIN_CONFIG
from tpccma_lib.models import ModelConfig
from tpccma_lib.training.budget import BudgetError, choose_budget, held_out_contrastive_loss

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def _emb(rng, n=40, d=8, per=3) -> Embeddings:
    image = rng.normal(size=(n, d))
    text = np.repeat(image, per, axis=0) + 0.8 * rng.normal(size=(n * per, d))
    return Embeddings.from_arrays(image, text, text_to_image=np.repeat(np.arange(n), per))


def test_held_out_loss_matches_an_independent_infonce():
    """Symmetric InfoNCE over (image, first caption) pairs, checked with scipy's logsumexp."""
    emb = _emb(np.random.default_rng(0))
    image, text = emb.image.astype(np.float64), emb.text[::3].astype(np.float64)
    logits = 30.0 * image @ text.T
    diag = np.diag(logits)
    expected = 0.5 * (np.mean(logsumexp(logits, 1) - diag) + np.mean(logsumexp(logits, 0) - diag))
    assert held_out_contrastive_loss(emb, 30.0) == pytest.approx(expected, rel=1e-10)
    # identical clouds at scale 0: every logit equal, the loss is chance, log N
    assert held_out_contrastive_loss(emb, 1e-12) == pytest.approx(math.log(40), rel=1e-9)


def test_choose_budget_takes_the_lowest_mean_loss_and_the_shorter_on_ties():
    rows = [
        {"steps": 100, "val_loss": 3.0},
        {"steps": 100, "val_loss": 3.4},  # mean 3.2
        {"steps": 200, "val_loss": 3.1},
        {"steps": 200, "val_loss": 3.1},  # mean 3.1: lowest
        {"steps": 400, "val_loss": 3.5},
    ]
    assert choose_budget(rows) == 200
    assert choose_budget([{"steps": 300, "val_loss": 1.0}, {"steps": 150, "val_loss": 1.0}]) == 150
    with pytest.raises(BudgetError, match="no rows"):
        choose_budget([])
    with pytest.raises(BudgetError, match="non-finite"):
        choose_budget([{"steps": 10, "val_loss": float("nan")}])


def test_default_recipe_uses_the_budget_the_criterion_chose():
    """PRETRAIN_CONFIG.steps is the committed grid's choice for the default head, and the grid
    holds 2x and 4x that budget (the README's stability rows)."""
    frame = pd.read_csv(RESULTS / "pretrain_budget.csv")
    rows = frame[frame["head"] == ModelConfig().head]
    chosen = choose_budget(rows.to_dict("records"))
    assert PRETRAIN_CONFIG.steps == chosen
    assert {2 * chosen, 4 * chosen} <= set(rows["steps"])


@pytest.mark.parametrize(
    ("name", "render", "csv"),
    [
        ("budget", budget_section, "pretrain_budget.csv"),
        ("mechanism", mechanism_section, "gap_mechanism.csv"),
        ("heads", heads_section, "bench_heads.csv"),
        ("matched", matched_section, "matched_gap.csv"),
        ("stepcost", stepcost_section, "bench_train_cpu_schedulers.csv"),
    ],
)
def test_readme_block_is_generated_from_the_committed_csv(name, render, csv):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = readme.split(f"<!-- {name}:start -->")[1].split(f"<!-- {name}:end -->")[0]
    assert block.strip() == render(RESULTS / csv).strip()


def test_stepcost_block_rows_and_bad_csv(tmp_path):
    text = stepcost_section(RESULTS / "bench_train_cpu_schedulers.csv")
    frame = pd.read_csv(RESULTS / "bench_train_cpu_schedulers.csv")
    default = frame.set_index("variant").loc["clip+cma+default"]
    assert default["ratio_q25"] <= default["ratio_to_clip"] <= default["ratio_q75"]
    assert f"| {default['ratio_to_clip']:.3f} [" in text
    assert text.count("\n| `") == 6  # one row per variant
    frame.assign(variant="other").to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(ValueError, match="none of the variants"):
        stepcost_section(tmp_path / "other.csv")


def _script(name: str):
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pretrain_budget_script_runs_end_to_end(tmp_path):
    """The script behind the README's budget block, at smoke size: it pretrains, measures,
    chooses, adds the 2x/4x budgets and writes a CSV the README renderer reads."""
    out = tmp_path / "budget.csv"
    assert (
        _script("pretrain_budget").main(["--smoke", "--out", str(out), "--runs", str(tmp_path)])
        == 0
    )
    frame = pd.read_csv(out)
    chosen = choose_budget(frame.to_dict("records"))
    assert {chosen, 2 * chosen, 4 * chosen} <= set(frame["steps"])
    assert (frame["val_loss"] > 0).all() and (frame["centroid_gap"] > 0).all()
    assert "| mlp | 4× |" in budget_section(out)
    with pytest.raises(SystemExit):  # a smoke run never writes the README's CSV
        _script("pretrain_budget").main(["--smoke"])


def test_gap_mechanism_script_runs_end_to_end(tmp_path):
    module = _script("gap_mechanism")
    out = tmp_path / "mechanism.csv"
    assert module.main(["--smoke", "--out", str(out), "--runs", str(tmp_path)]) == 0
    frame = pd.read_csv(out)
    assert list(frame["variant"]) == list(module.VARIANTS)
    learnable = frame[frame["variant"] == "learnable temperature"]["logit_scale"].iloc[0]
    assert learnable != pytest.approx(100.0)  # the temperature really was learned
    untrained = frame[frame["variant"] == "initialisation only"].iloc[0]
    assert untrained["logit_scale"] == pytest.approx(100.0)
    assert "| initialisation only |" in mechanism_section(out)


def test_bench_heads_script_runs_end_to_end(tmp_path):
    """The trainable-part cost table's script at tiny size: every option takes its steps."""
    out = tmp_path / "heads.csv"
    args = ["--batch", "8", "--tokens", "4", "--repeats", "1", "--out", str(out)]
    assert _script("bench_heads").main(args) == 0
    frame = pd.read_csv(out)
    assert list(frame["option"]) == ["linear", "mlp", "top blocks"]
    assert (frame["ms_per_step"] > 0).all()
    # the top blocks hold more trainable weights and need token states cached per caption
    assert frame["trainable_parameters"].is_monotonic_increasing
    assert frame["cached_floats_per_caption"].tolist() == [384, 384, 4 * 384]


def test_matched_gap_script_runs_end_to_end(tmp_path):
    """The matched-gap comparison at smoke size: the original model, the control and the first
    variants, each with test metrics; a target out of reach is reported as not converged (at
    10 fine-tune steps no alpha in [0, 1] halves the gap), not as a crash."""
    module = _script("matched_gap")
    out = tmp_path / "matched.csv"
    assert module.main(["--smoke", "--out", str(out), "--runs", str(tmp_path)]) == 0
    frame = pd.read_csv(out)
    names = ["original model", "control (alpha 0)", *list(module.VARIANTS)[:2]]
    assert frame["variant"].tolist() == names
    assert frame["test_zero_shot_accuracy"].between(0, 1).all()
    searched = frame.iloc[2:]
    assert (searched["val_distribution_gap"] > searched["target_val_distribution_gap"]).all()
    assert (searched["converged"] == False).all()  # noqa: E712 (a CSV column of booleans)
    block = matched_section(out)
    assert "| lr rule (default) | 1.000 (not converged) |" in block
