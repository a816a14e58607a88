"""Write the README's result tables from what the runs measured (never typed by hand).

A maintainer's command, never a side effect of running the notebooks: ``tpccma readme`` (after
the full default ``tpccma sweep``) calls :func:`update_readme`, which puts the base model's
numbers between ``<!-- base:start -->``/``<!-- base:end -->`` and the default sweep's summary
(``runs/sweep/summary.csv``, every run of :data:`DEFAULT_GRID` finished) between
``<!-- results:start -->``/``<!-- results:end -->``.

The ``cost`` block (what the full reproduction costs, from per-batch times that
``benchmarks/cost_table.py`` measured) needs no sweep: ``benchmarks/cost_table.py
--update-readme`` (or :func:`update_cost_section`) rewrites it from
``benchmarks/results/cost_vitb32_<device>.csv``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from tpccma_lib.atomic import atomic_write_text
from tpccma_lib.evaluation.analysis import METRIC_LABELS

__all__ = [
    "DEFAULT_GRID",
    "COST_CSVS",
    "replace_section",
    "sweep_table",
    "default_grid_rows",
    "update_readme",
    "control_sentences",
    "original_sentences",
    "original_model_row",
    "results_body",
    "draw_readme_figure",
    "cost_section",
    "cost_block",
    "update_cost_section",
]

#: The grid the README's results table describes: ``tpccma sweep``'s defaults (alpha, seeds).
DEFAULT_GRID = ((0.0, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0), (0, 1))

#: The cost tables, relative to the repository: measured on a CPU, and on a GPU once one ran it.
COST_CSVS = (
    "benchmarks/results/cost_vitb32_cpu.csv",
    "benchmarks/results/cost_vitb32_cuda.csv",
)

COLUMNS = {"alpha_target": "α_target", **METRIC_LABELS}


def replace_section(text: str, name: str, body: str) -> str:
    """Replace what lies between ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    pattern = re.compile(rf"(<!-- {name}:start -->)(.*?)(<!-- {name}:end -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"README has no <!-- {name}:start --> ... <!-- {name}:end --> markers.")
    return pattern.sub(lambda m: f"{m.group(1)}\n{body.strip()}\n{m.group(3)}", text)


def _markdown(frame: pd.DataFrame) -> str:
    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    lines = [head, rule]
    for row in frame.astype(object).itertuples(index=False):
        cells = [f"{v:.3f}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sweep_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds of the headline metrics per alpha_target (finished runs only)."""
    done = summary[summary["status"].isin(["done", "skipped"])]
    cols = [c for c in COLUMNS if c in done.columns]
    table = done[cols].groupby("alpha_target", as_index=False).mean(numeric_only=True)
    seeds = done.groupby("alpha_target")["seed"].nunique().to_numpy()
    table.insert(1, "seeds", seeds)
    return table.rename(columns=COLUMNS)


def default_grid_rows(
    summary: pd.DataFrame, grid: tuple[tuple[float, ...], tuple[int, ...]] = DEFAULT_GRID
) -> pd.DataFrame:
    """The rows of ``summary`` for ``grid``; an error naming the runs that are not finished."""
    alphas, seeds = grid
    finished = summary[summary["status"].isin(["done", "skipped"])]
    have = {
        (round(float(a), 6), int(s))
        for a, s in zip(finished.alpha_target, finished.seed, strict=True)
    }
    missing = [
        f"alpha {a:g} seed {s}" for a in alphas for s in seeds if (round(a, 6), s) not in have
    ]
    if missing:
        raise ValueError(
            f"the sweep summary lacks finished runs of the default grid: {', '.join(missing)}. "
            "Run `tpccma sweep` (its defaults are that grid) before `tpccma readme`."
        )
    keep = [
        round(float(a), 6) in {round(x, 6) for x in alphas} and int(s) in seeds
        for a, s in zip(finished.alpha_target, finished.seed, strict=True)
    ]
    return finished[keep]


def _change_pieces(reference: pd.Series) -> dict[str, Callable[[pd.Series], str]]:
    """Per metric, a function: a row -> its change against ``reference``, in words."""

    def pct(row: pd.Series, metric: str) -> float:
        return 100 * (row[metric] / reference[metric] - 1)

    return {
        "raw_gap": lambda r: f"raw gap {pct(r, 'raw_gap'):+.0f} %",
        "distribution_gap": lambda r: f"distribution gap {pct(r, 'distribution_gap'):+.0f} %",
        "zero_shot_accuracy": lambda r: (
            f"zero-shot accuracy "
            f"{100 * (r['zero_shot_accuracy'] - reference['zero_shot_accuracy']):+.1f} points"
        ),
        "clustering_ari": lambda r: (
            f"joint k-means ARI {reference['clustering_ari']:.3f} → {r['clustering_ari']:.3f}"
        ),
        "cider": lambda r: f"CIDEr {pct(r, 'cider'):+.0f} %",
    }


def _change_sentence(
    mean: pd.DataFrame, reference: pd.Series, alphas: tuple[float, ...], lead: str
) -> str:
    """``lead`` + the changes of the seed-mean rows ``mean`` (indexed by alpha) at ``alphas``
    against ``reference``; metrics missing from either are left out, "" if no alpha is there."""
    pieces = _change_pieces(reference)
    parts = [
        f"α = {alpha:g}: "
        + ", ".join(
            piece(mean.loc[alpha])
            for m, piece in pieces.items()
            if m in mean and m in reference.index and pd.notna(reference[m])
        )
        for alpha in alphas
        if alpha in mean.index
    ]
    return f"{lead}: " + "; ".join(parts) + "." if parts else ""


def control_sentences(rows: pd.DataFrame, alphas: tuple[float, ...] = (0.05, 0.5)) -> str:
    """What ``alphas`` buy against the alpha = 0 fine-tune (the control for "more training"),
    from the seed means of the sweep rows: % change of raw and distribution gap and of CIDEr,
    change of zero-shot accuracy (points) and joint k-means ARI. Metrics or alphas the rows do
    not hold are left out ("" when there is no alpha = 0 run)."""
    mean = rows.groupby("alpha_target").mean(numeric_only=True)
    if 0.0 not in mean.index:
        return ""
    lead = "Against the α = 0 fine-tune (the control: same steps, no alignment loss)"
    return _change_sentence(mean, mean.loc[0.0], alphas, lead)


def original_sentences(
    rows: pd.DataFrame, original: pd.Series, alphas: tuple[float, ...] = (0.0, 0.05, 0.5)
) -> str:
    """The same changes as :func:`control_sentences`, against the original model (the base
    model before fine-tuning, the paper's reference); alpha = 0 is the control's own change."""
    mean = rows.groupby("alpha_target").mean(numeric_only=True)
    lead = "Against the original model (before fine-tuning; the paper's reference)"
    return _change_sentence(mean, original, alphas, lead)


def seed_spread_sentence(rows: pd.DataFrame) -> str:
    """How far the seeds lie apart: per metric, the largest (max - min over seeds) at any
    alpha, and the alpha where it is; "" with one seed per alpha."""
    done = rows[rows["status"].isin(["done", "skipped"])] if "status" in rows else rows
    if done.groupby("alpha_target")["seed"].nunique().max() < 2:
        return ""
    metrics = [
        c for c in COLUMNS if c in done.columns and c not in ("alpha_target", "centroid_gap")
    ]
    grouped = done.groupby("alpha_target")[metrics]
    spread = grouped.max() - grouped.min()
    parts = [
        f"{COLUMNS[m]} {spread[m].max():.3f} (α = {spread[m].idxmax():g})"
        for m in metrics
        if spread[m].notna().any()
    ]
    return (
        "Spread between seeds (max − min over the seeds at one α; the largest over the α grid, "
        "where it is): " + ", ".join(parts) + ". A difference between two rows smaller than "
        "this is not resolved by the sweep; notebook 04 prints each number's bootstrap interval "
        "and sampling floor."
    )


def original_model_row(sweep_dir: str | os.PathLike[str], rows: pd.DataFrame) -> pd.Series | None:
    """Headline metrics of the original (base) model, mean over the seeds of ``rows``, as the
    sweep's smallest-alpha runs evaluated it (``results.csv``, role "base", no post-hoc fix);
    ``None`` when those runs hold no base rows. Adds ``seeds`` (how many were averaged)."""
    from tpccma_lib.app.sweep import collect
    from tpccma_lib.evaluation.tradeoff import SweepAnalysisError, sweep_points

    runs = [Path(str(r)).name for r in rows["run_dir"]] if "run_dir" in rows else None
    try:
        points = sweep_points(collect(sweep_dir, runs=runs))
    except SweepAnalysisError:  # no results.csv in the runs: nothing to read the model from
        return None
    base = points[points["kind"] == "base"]
    if base.empty:
        return None
    original = base.mean(numeric_only=True)
    original["seeds"] = base["train_seed"].nunique()
    return original


def results_body(rows: pd.DataFrame, original: pd.Series | None) -> str:
    """The README's results block: the sweep table (original model first, when known), then
    the changes against the original model and against the alpha = 0 control."""
    table = sweep_table(rows)
    if original is not None:
        first = {COLUMNS.get(k, k): original.get(k, float("nan")) for k in COLUMNS}
        first.update({"α_target": "original model", "seeds": int(original["seeds"])})
        table = table.astype({"α_target": object})
        table = pd.concat([pd.DataFrame([first])[table.columns], table], ignore_index=True)
    sentences = [
        seed_spread_sentence(rows),
        original_sentences(rows, original) if original is not None else "",
        control_sentences(rows),
    ]
    return (
        "Measured by `tpccma sweep` (notebooks 03 + 04 per run) on **captioned shapes** (the "
        "embedded default, a procedural stand-in for COCO/CIFAR-10), test split, mean over "
        f"{rows['seed'].nunique()} seed(s); gaps in embedding units, accuracy and R@1 as "
        "fractions. The first row is the original model, before fine-tuning (as the smallest "
        "α's runs evaluated it). Regenerated by `tpccma readme`.\n\n"
        + _markdown(table)
        + "".join(f"\n\n{s}" for s in sentences if s)
    )


def update_readme(
    readme: str | os.PathLike[str],
    sweep_dir: str | os.PathLike[str],
    base_text: str,
    grid: tuple[tuple[float, ...], tuple[int, ...]] = DEFAULT_GRID,
) -> list[str]:
    """Fill the README's generated sections; returns the names of the sections written.

    ``base_text`` (from :func:`tpccma_lib.evaluation.model_report.base_model_summary`) fills ``base``; the
    ``grid`` rows of ``sweep_dir/summary.csv`` fill ``results`` (all of them must be finished).
    Nothing is written unless both sections can be.
    """
    readme, summary_csv = Path(readme), Path(sweep_dir) / "summary.csv"
    if not summary_csv.exists():
        raise FileNotFoundError(
            f"no sweep summary at {summary_csv}: run `tpccma sweep` (the default grid) first."
        )
    rows = default_grid_rows(pd.read_csv(summary_csv), grid)
    text = readme.read_text(encoding="utf-8")
    text = replace_section(
        text, "base", "Measured by `tpccma readme`:\n\n```text\n" + base_text + "\n```"
    )
    body = results_body(rows, original_model_row(sweep_dir, rows))
    text = replace_section(text, "results", body)
    atomic_write_text(readme, text)
    return ["base", "results"]


def draw_readme_figure(
    path: str | os.PathLike[str],
    sweep_dir: str | os.PathLike[str],
    grid: tuple[tuple[float, ...], tuple[int, ...]] = DEFAULT_GRID,
) -> Path:
    """The README's Pareto figure from the same runs as its results table (``grid`` of
    ``sweep_dir``, every run finished): both gap parts against the original model, the
    alpha = 0 control and the post-hoc fixes (:func:`tpccma_lib.viz.sweep.save_pareto_png`)."""
    from tpccma_lib.app.sweep import collect
    from tpccma_lib.evaluation.tradeoff import sweep_points, tradeoff_summary, tradeoff_table
    from tpccma_lib.viz.sweep import save_pareto_png

    rows = default_grid_rows(pd.read_csv(Path(sweep_dir) / "summary.csv"), grid)
    runs = [Path(str(r)).name for r in rows["run_dir"]]
    tradeoff = tradeoff_table(sweep_points(collect(sweep_dir, runs=runs)))
    alphas, seeds = grid
    title = (
        f"default sweep ({len(alphas)} alpha_target x {len(seeds)} seeds) vs post-hoc fixes - "
        "captioned shapes, test split"
    )
    return save_pareto_png(tradeoff, tradeoff_summary(tradeoff), path, title=title)


# ---------------------------------------------------------------- the cost block
def _duration(hours: float) -> str:
    if hours < 1 / 60:
        return f"{hours * 3600:.0f} s"
    if hours < 1:
        return f"{hours * 60:.0f} min"
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours:.0f} h ({hours / 24:.1f} days)"


def _rate(x: float) -> str:
    return f"{x:,.1f}" if x >= 10 else f"{x:.3g}"


def _seconds(s: float) -> str:
    return f"{s:.3g}" if s < 100 else f"{s:.0f}"


def _display_path(path: Path) -> str:
    from tpccma_lib.notebook import repo_root

    try:
        return path.resolve().relative_to(repo_root()).as_posix()
    except ValueError:
        return path.name


def cost_section(csv_path: str | os.PathLike[str]) -> str:
    """Markdown of one cost table written by ``benchmarks/cost_table.py``: what measured it and
    when, the measured seconds per batch, and each stage's estimated wall time."""
    path = Path(csv_path)
    frame = pd.read_csv(path, dtype={"batch": "Int64"}, keep_default_na=False)
    measured = frame[frame["kind"] == "measured"]
    stages = frame[frame["kind"] == "stage"]
    if measured.empty or stages.empty:
        raise ValueError(f"{path} holds no measured or stage rows; rerun benchmarks/cost_table.py.")
    m = measured.iloc[0]
    on_gpu = str(m["device"]).startswith("cuda")
    amp = "fp32" if m["amp"] == "none" else f"{m['amp']} autocast"
    where = f"one {m['device_name']}" if on_gpu else "this CPU"
    load = str(m.get("load_avg", "")).replace(" / ", " → ")
    lines = [
        f"Measured by `benchmarks/cost_table.py` on **{m['device']}** ({m['device_name']}; "
        f"torch {m['torch']}, {m['threads']} torch threads) on {m['measured_at']}"
        + (f", machine load {load} (1-minute average before → after)" if load else "")
        + f": open_clip {m['model']} with random weights, {amp}, {m['timings']} "
        f"(`{_display_path(path)}`).",
        "",
        f"| operation | batch | s per batch on {m['device']} | items/s |",
        "|---|---|---|---|",
    ]
    for r in measured.itertuples(index=False):
        s = float(r.s_per_batch)
        lines.append(f"| {r.what} | {r.batch} | {_seconds(s)} | {_rate(int(r.batch) / s)} |")
    if on_gpu:
        rule = (
            f"the larger of the model's hours and the decoding hours over {m['workers']} "
            "DataLoader workers"
        )
    else:
        rule = "the sum of its operations' hours (decoding runs on the same cores)"
    lines += [
        "",
        f"| stage | items | estimated wall time on {where} |",
        "|---|---|---|",
    ]
    for r in stages.itertuples(index=False):
        lines.append(f"| {r.stage} | {r.what} | {_duration(float(r.hours))} |")
    lines += [
        "",
        "Each operation of a stage takes items / batch × s per batch (the per-operation rows "
        f"are in the CSV); a stage's wall time is {rule}. `tpccma report` is counted as the "
        "evaluation of the base and the fine-tuned model (its notebook 05 runs belong to the "
        "sweep, which skips finished runs). Not counted: training the text-only caption "
        "decoder, post-hoc fixes and metrics (on embeddings), checkpoints, and embeddings "
        "notebooks 01, 02 and 06 compute again.",
    ]
    return "\n".join(lines)


def cost_block(csv_paths: list[str | os.PathLike[str]] | None = None) -> str:
    """The README's ``cost`` block: :func:`cost_section` of each table in ``csv_paths``
    (default: those of :data:`COST_CSVS` that exist), and while none was measured on a GPU,
    a line saying so and how to measure it."""
    from tpccma_lib.notebook import repo_root

    if csv_paths is None:
        csv_paths = [repo_root() / p for p in COST_CSVS if (repo_root() / p).exists()]
    paths = [Path(p) for p in csv_paths]
    if not paths:
        raise FileNotFoundError(
            f"no cost table at {COST_CSVS[0]}: run `python benchmarks/cost_table.py` first."
        )
    sections = [cost_section(p) for p in paths]
    devices = {
        str(pd.read_csv(p, usecols=["device"], keep_default_na=False)["device"].iloc[0])
        for p in paths
    }
    if not any(d.startswith("cuda") for d in devices):
        sections.append(
            "**No GPU has measured these yet**, so there is no GPU estimate: the times above are "
            "this CPU's. On a GPU machine, `benchmarks/cost_table.py --device cuda --amp bf16` "
            f"(to run with `benchmarks/gpu_open_clip.sh`) writes `{COST_CSVS[1]}`, and "
            "`benchmarks/cost_table.py --update-readme` (or `update_cost_section`) then adds "
            "its table here."
        )
    return "\n\n".join(sections)


def _pct(value: float) -> str:
    return f"{value:+.0f}"


def calibration_section(csv_path: str | os.PathLike[str]) -> str:
    """The README's "Choosing the CMA weights" block from
    ``benchmarks/calibrate_cma_weights.py``'s CSV: the % change of raw / distribution gap per
    (lambda_c, lambda_d) and alpha on the validation split, and the sentences read off it."""
    from tpccma_lib.training.loop import TrainConfig

    default_weights = (TrainConfig.centroid_weight, TrainConfig.distribution_weight)
    frame = pd.read_csv(csv_path)
    base = frame[frame["alpha_target"] == "base"].iloc[0]
    runs = frame[frame["alpha_target"] != "base"].copy()
    runs["alpha"] = runs["alpha_target"].astype(float)
    main_lr = runs["lr"].max()  # the calibration's lr; the drift runs use lower ones
    grid = runs[runs["lr"] == main_lr]
    drift = runs[(runs["lr"] < main_lr) & (runs["alpha"] == 0)].sort_values("lr")
    control = grid[grid["alpha"] == 0].iloc[0]
    alphas = sorted(grid["alpha"].unique())
    weights = sorted(
        {
            (c, d)
            for c, d in zip(grid["centroid_weight"], grid["distribution_weight"], strict=True)
            if not (pd.isna(c) or pd.isna(d))
        }
    )
    lines = [
        "| λ_c, λ_d | " + " | ".join(f"α {a:g}" for a in alphas) + " |",
        "|---|" + "---|" * len(alphas),
    ]
    for c, d in weights:
        rows = grid[(grid["centroid_weight"] == c) & (grid["distribution_weight"] == d)]
        by_alpha = {float(r.alpha): r for r in rows.itertuples()}
        cells = []
        for a in alphas:
            r = by_alpha.get(a, control if a == 0 else None)
            cells.append(
                "—"
                if r is None
                else f"{_pct(r.raw_gap_change_pct)} / {_pct(r.distribution_gap_change_pct)}"
            )
        label = f"{c:g}, {d:g}"
        if (c, d) == default_weights:
            label = f"**{label}** (default)"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    default = grid[
        (grid["centroid_weight"] == default_weights[0])
        & (grid["distribution_weight"] == default_weights[1])
        & (grid["alpha"] > 0)
    ]
    at_half = default[default["alpha"] == 0.5]
    text = [
        f"Changes of raw gap / distribution gap in % against the base model, on the validation "
        f"split of captioned shapes (the test split is never read; `{_display_path(Path(csv_path))}`"
        f", fine-tunes at lr {main_lr:g}):",
        "",
        *lines,
        "",
        f"Zero-shot accuracy on the validation split stayed between "
        f"{default['zero_shot_accuracy'].min():.3f} and {default['zero_shot_accuracy'].max():.3f}"
        f" for every default-weight run with α > 0 (base {float(base['zero_shot_accuracy']):.3f})."
        f" α = 0 is contrastive fine-tuning alone: it changes the raw gap by "
        f"{control['raw_gap_change_pct']:+.0f} % and the distribution gap by "
        f"{control['distribution_gap_change_pct']:+.0f} %, while both modalities spread out "
        f"(tr Σ_img {float(base['trace_cov_image']):.3f} → {control['trace_cov_image']:.3f}, "
        f"tr Σ_txt {float(base['trace_cov_text']):.3f} → {control['trace_cov_text']:.3f}); the "
        f"scale-free Bures / spread goes {float(base['relative_distribution_gap']):.3f} → "
        f"{control['relative_distribution_gap']:.3f}"
        + (
            f", and to {float(at_half['relative_distribution_gap'].iloc[0]):.3f} at α = 0.5."
            if len(at_half)
            else "."
        ),
    ]
    if len(drift):
        parts = ", ".join(
            f"{r.lr:g}: {_pct(r.distribution_gap_change_pct)} %" for r in drift.itertuples()
        )
        text.append(f"Lower learning rates drift less (distribution gap at α = 0, lr {parts}).")
    return "\n".join(text[:-1]) + " " + text[-1] if len(drift) else "\n".join(text)


def update_calibration_section(
    readme: str | os.PathLike[str], csv_path: str | os.PathLike[str]
) -> list[str]:
    """Rewrite the README's ``calibration`` block with :func:`calibration_section`."""
    _write_section(Path(readme), "calibration", calibration_section(csv_path))
    return ["calibration"]


def _write_section(readme: Path, name: str, body: str) -> None:
    """Replace README block ``name`` with ``body`` (atomic: the old file stays on failure)."""
    text = replace_section(readme.read_text(encoding="utf-8"), name, body)
    atomic_write_text(readme, text)


def update_cost_section(
    readme: str | os.PathLike[str], csv_paths: list[str | os.PathLike[str]] | None = None
) -> list[str]:
    """Rewrite the README's ``<!-- cost:start -->``/``<!-- cost:end -->`` block with
    :func:`cost_block`; needs no sweep. Returns ``["cost"]``."""
    _write_section(Path(readme), "cost", cost_block(csv_paths))
    return ["cost"]


def _mean_range(values: pd.Series) -> str:
    """``mean (min–max)`` of a metric over initialisation seeds, 3 decimals."""
    if len(values) == 1:
        return f"{values.mean():.3f}"
    return f"{values.mean():.3f} ({values.min():.3f}–{values.max():.3f})"


def budget_section(csv_path: str | os.PathLike[str]) -> str:
    """The README's pretraining-budget block from ``benchmarks/pretrain_budget.py``'s CSV: per
    head, the budget of lowest held-out contrastive loss and the gap at 1x, 2x and 4x it."""
    from tpccma_lib.experiment import PRETRAIN_CONFIG
    from tpccma_lib.models import ModelConfig
    from tpccma_lib.training.budget import choose_budget

    frame = pd.read_csv(csv_path)
    seeds = sorted(frame["init_seed"].unique())
    lines = [
        "| heads | budget | steps | val. loss (nats) | centroid gap | distribution gap | "
        "Bures / spread |",
        "|---|---|---|---|---|---|---|",
    ]
    changes, curves = [], []
    for head in sorted(frame["head"].unique()):
        rows = frame[frame["head"] == head]
        chosen = choose_budget(rows.to_dict("records"))
        by_steps = rows.groupby("steps")
        curve = by_steps["val_loss"].mean()
        curves.append(
            f"{head}: " + ", ".join(f"{int(n)} → {loss:.3f}" for n, loss in curve.items())
        )
        for multiple in (1, 2, 4):
            at = rows[rows["steps"] == multiple * chosen]
            lines.append(
                f"| {head} | {multiple}× | {multiple * chosen} | {at['val_loss'].mean():.3f} | "
                f"{_mean_range(at['centroid_gap'])} | {_mean_range(at['distribution_gap'])} | "
                f"{_mean_range(at['relative_distribution_gap'])} |"
            )
        two, four = (rows[rows["steps"] == m * chosen] for m in (2, 4))
        change = {
            m: 100 * (four[m].mean() - two[m].mean()) / two[m].mean()
            for m in ("centroid_gap", "distribution_gap")
        }
        changes.append(
            f"{head} heads: centroid gap {change['centroid_gap']:+.1f} %, distribution gap "
            f"{change['distribution_gap']:+.1f} %"
        )
    default_head = ModelConfig().head
    chosen_default = choose_budget(frame[frame["head"] == default_head].to_dict("records"))
    return "\n".join(
        [
            f"Measured by `benchmarks/pretrain_budget.py` on the validation split of captioned "
            f"shapes (the test split is not read); every number is the mean over initialisation "
            f"seeds {', '.join(str(s) for s in seeds)} (their range in brackets). The budget is "
            "the one of lowest held-out contrastive loss (CLIP's InfoNCE over the validation "
            "split's image-caption pairs as one batch); the gap is measured, not chosen.",
            "",
            *lines,
            "",
            "Held-out loss by budget (steps → nats): " + "; ".join(curves) + ".",
            f"From 2× to 4× the chosen budget: {'; '.join(changes)}."
            f" The default ({default_head} heads) pretrains for `PRETRAIN_CONFIG.steps` = "
            f"{PRETRAIN_CONFIG.steps} steps; the criterion chose {chosen_default}.",
        ]
    )


def mechanism_section(csv_path: str | os.PathLike[str]) -> str:
    """The README's gap-mechanism block from ``benchmarks/gap_mechanism.py``'s CSV: the gap each
    variant of the base-model recipe leaves on the test split."""
    frame = pd.read_csv(csv_path)
    seeds = sorted(frame["init_seed"].unique())
    lines = [
        "| variant | logit scale | centroid gap | distribution gap | Bures / spread | "
        "Bures at N/2 (floor) | centroid / distribution gap vs recipe |",
        "|---|---|---|---|---|---|---|",
    ]
    recipe = frame[frame["variant"] == "recipe"]
    for variant, rows in frame.groupby("variant", sort=False):
        change = " / ".join(
            f"{100 * (rows[m].mean() / recipe[m].mean() - 1):+.0f} %"
            for m in ("centroid_gap", "distribution_gap")
        )
        lines.append(
            f"| {variant} | {rows['logit_scale'].mean():.1f} | "
            f"{_mean_range(rows['centroid_gap'])} | {_mean_range(rows['distribution_gap'])} | "
            f"{_mean_range(rows['relative_distribution_gap'])} | "
            f"{rows['half_distribution_gap'].mean():.3f} "
            f"({rows['floor_distribution_gap'].mean():.3f}) | "
            f"{'—' if variant == 'recipe' else change} |"
        )
    return "\n".join(
        [
            "Measured by `benchmarks/gap_mechanism.py` on the test split of captioned shapes; "
            f"mean over initialisation seeds {', '.join(str(s) for s in seeds)} (range in "
            "brackets). The last column is the image-text Bures distance between half-size "
            "samples and, in brackets, the same distance between two halves of the test images "
            "(the sampling floor: what the distribution gap reads when there is none).",
            "",
            *lines,
        ]
    )


def heads_section(csv_path: str | os.PathLike[str]) -> str:
    """The README's trainable-part block from ``benchmarks/bench_heads.py``'s CSV."""
    frame = pd.read_csv(csv_path)
    first = frame.iloc[0]
    lines = [
        "| trainable part | ms / step | trainable parameters | cached floats per caption |",
        "|---|---|---|---|",
        *(
            f"| {r.option} | {r.ms_per_step:.1f} | {r.trainable_parameters:,} | "
            f"{r.cached_floats_per_caption:,} |"
            for r in frame.itertuples()
        ),
    ]
    return "\n".join(
        [
            f"Measured by `benchmarks/bench_heads.py` (one step at batch {int(first['batch'])}, "
            f"{int(first['threads'])} threads, median of interleaved repeats):",
            "",
            *lines,
        ]
    )


def matched_section(csv_path: str | os.PathLike[str]) -> str:
    """The README's matched-gap block from ``benchmarks/matched_gap.py``'s CSV: every scheduler
    rule and curriculum at the alpha that reaches one validation distribution gap, on test."""
    frame = pd.read_csv(csv_path)
    target = float(frame["target_val_distribution_gap"].iloc[0])
    original = frame[frame["variant"] == "original model"].iloc[0]
    metrics = [c for c in frame.columns if c.startswith("test_")]  # in the CSV's order
    header = ["variant", "α", "val distribution gap"]
    header += [COLUMNS.get(m.removeprefix("test_"), m) for m in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in frame.to_dict("records"):
        alpha = "" if pd.isna(row["alpha"]) else f"{float(row['alpha']):.3f}"
        if str(row.get("converged")) == "False":
            alpha += " (not converged)"
        cells = [row["variant"], alpha, f"{row['val_distribution_gap']:.3f}"]
        cells += [f"{row[m]:.3f}" for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    reference = frame[frame["variant"] == "no scheduler"]
    comparisons = []
    if len(reference):
        ref = reference.iloc[0]
        for row in frame.to_dict("records"):
            if row["variant"] in ("original model", "control (alpha 0)", "no scheduler"):
                continue
            comparisons.append(
                f"{row['variant']} zero-shot accuracy "
                f"{100 * (row['test_zero_shot_accuracy'] - ref['test_zero_shot_accuracy']):+.1f} "
                f"points, R@1 i→t {100 * (row['test_i2t_R@1'] - ref['test_i2t_R@1']):+.1f} points, "
                f"joint k-means ARI {row['test_clustering_ari'] - ref['test_clustering_ari']:+.3f}"
            )
    tail = (
        [
            "",
            "Against no scheduler at the matched gap (test split): " + "; ".join(comparisons) + ".",
        ]
        if comparisons
        else []
    )
    return "\n".join(
        [
            "Measured by `benchmarks/matched_gap.py`: for each variant, the α at which the "
            f"fine-tune (notebook 03's recipe, seed 0) brings the **validation** distribution gap "
            f"to {target:.3f}, half of the original model's ({original['val_distribution_gap']:.3f}), "
            "found by regula falsi on the validation split; then the test split of captioned "
            "shapes, read once per model (gaps in embedding units, accuracy, ARI and R@1 as "
            "fractions).",
            "",
            *lines,
            *tail,
        ]
    )


def r2_section(csv_path: str | os.PathLike[str]) -> str:
    """The README's ``r2`` block from ``benchmarks/r2_study.py``'s CSV
    (:func:`tpccma_lib.evaluation.analysis.r2_study_section`)."""
    from tpccma_lib.evaluation.analysis import r2_study_section

    return r2_study_section(csv_path)


#: What each variant of ``benchmarks/bench_train.py`` trains, for the ``stepcost`` block
#: (``{every}``: the trainer's default measurement interval, ``TrainConfig().measure_every``).
STEP_COST_VARIANTS = {
    "clip": "contrastive loss only (the reference)",
    "clip+cma": "+ CMA (α 0.5), no scheduler: one backward",
    "clip+cma+default": "+ CMA + the default scheduler (LR rule, measured every {every}th step)",
    "clip+cma+lr-rule": "+ CMA + the LR rule measured on every step",
    "clip+cma+scheduler/10": "+ CMA + PCGrad measured every 10th step",
    "clip+cma+scheduler": "+ CMA + PCGrad measured on every step",
}


def stepcost_section(csv_path: str | os.PathLike[str]) -> str:
    """The README's ``stepcost`` block from ``benchmarks/bench_train.py``'s CSV: each training
    variant's mean step time and its cost against a contrastive-only step (median of the
    per-round ratios, interquartile range in brackets)."""
    from tpccma_lib.training.loop import TrainConfig

    frame = pd.read_csv(csv_path, keep_default_na=False)
    frame = frame[frame["variant"].isin(STEP_COST_VARIANTS)]
    if frame.empty:
        raise ValueError(f"{csv_path} has none of the variants {sorted(STEP_COST_VARIANTS)}.")
    order = {v: i for i, v in enumerate(STEP_COST_VARIANTS)}
    frame = frame.sort_values("variant", key=lambda c: c.map(order))
    first = frame.iloc[0]
    every = TrainConfig().measure_every
    lines = [
        "| variant | what it trains | mean ms / step | × contrastive step [IQR] |",
        "|---|---|---|---|",
        *(
            f"| `{r.variant}` | {STEP_COST_VARIANTS[r.variant].format(every=every)} | "
            f"{r.mean_step_ms:.1f} | "
            f"{r.ratio_to_clip:.3f} [{r.ratio_q25:.3f}, {r.ratio_q75:.3f}] |"
            for r in frame.itertuples()
        ),
    ]
    rows = frame.set_index("variant")
    ratio = rows["ratio_to_clip"]
    summary = []
    if {"clip+cma", "clip+cma+lr-rule"} <= set(ratio.index):
        share = (ratio["clip+cma+lr-rule"] - ratio["clip+cma"]) / every
        widths = rows["ratio_q75"] - rows["ratio_q25"]
        spread = float(widths.get("clip+cma+default", widths.max()))
        than, verdict = (
            ("less", "the direct comparison cannot resolve it")
            if share < spread
            else ("more", "resolved")
        )
        summary = [
            "",
            f"A measurement step of the LR rule costs {ratio['clip+cma+lr-rule']:.2f}× a "
            f"contrastive step against {ratio['clip+cma']:.2f}× for CMA alone: paid once every "
            f"{every} steps (the default interval), that is {100 * share:+.1f} % of a step, "
            f"{than} than the interquartile range of the default's ratios "
            f"({100 * spread:.1f} points): on this machine {verdict}.",
        ]
    clock = "CPU time of the process" if first["clock"] == "cpu" else "wall time"
    steps = int(first["timed_steps"]) // int(first["repeats"])
    return "\n".join(
        [
            f"Measured by `benchmarks/bench_train.py` ({first['backend']} backend, random-init "
            f"{first['model']}, batch {int(first['batch'])}, {first['image_size']} px, "
            f"{first['device']}, {int(first['threads'])} thread(s), {clock}, malloc "
            f"{first['malloc']}; `{_display_path(Path(csv_path))}`): {int(first['repeats'])} "
            f"interleaved rounds of {steps} steps per variant; a variant's cost is the median over "
            "rounds of its mean step time over the contrastive-only one's in the same round, "
            "the interquartile range of those ratios in brackets.",
            "",
            *lines,
            *summary,
        ]
    )


#: README blocks written from one benchmark CSV each: block name -> renderer.
CSV_SECTIONS = {
    "budget": budget_section,
    "mechanism": mechanism_section,
    "heads": heads_section,
    "matched": matched_section,
    "r2": r2_section,
    "stepcost": stepcost_section,
}


def update_csv_section(
    readme: str | os.PathLike[str], name: str, csv_path: str | os.PathLike[str]
) -> list[str]:
    """Rewrite README block ``name`` (a key of :data:`CSV_SECTIONS`) from ``csv_path``."""
    if name not in CSV_SECTIONS:
        raise ValueError(
            f"no README block {name!r} is written from a CSV; known: {sorted(CSV_SECTIONS)}."
        )
    _write_section(Path(readme), name, CSV_SECTIONS[name](csv_path))
    return [name]
