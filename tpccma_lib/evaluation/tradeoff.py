"""What an alpha sweep measured, analysed (notebook 05): the trade-off and which gap predicts.

:func:`sweep_points` turns the rows of every run (``tpccma_lib.app.sweep.collect``) into one
point per configuration; :func:`tradeoff_table` / :func:`tradeoff_summary` give the price of
each step of gap reduction (the Pareto plot); :func:`r2_analysis` asks which gap metric predicts
which task metric; :func:`paper_comparison` sets the paper's headline numbers beside ours.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from tpccma_lib.evaluation.model_report import METRIC_COLUMNS
from tpccma_lib.evaluation.roles import results_table

__all__ = [
    "SweepAnalysisError",
    "R2_TASK_METRICS",
    "R2_GAP_METRICS",
    "PAPER_CLAIMS",
    "sweep_points",
    "tradeoff_table",
    "tradeoff_summary",
    "r2_analysis",
    "paper_comparison",
]


class SweepAnalysisError(ValueError):
    """A sweep's rows cannot be analysed as asked (no finished runs, a missing reference)."""


#: Task metrics and gap metrics of the R² analysis (columns of :func:`sweep_points`).
R2_TASK_METRICS = ("zero_shot_accuracy", "clustering_ari", "cider", "i2t_R@1")
R2_GAP_METRICS = ("raw_gap", "centroid_gap", "distribution_gap")

#: The paper's headline numbers (arXiv 2604.00279), compared in notebook 05.
PAPER_CLAIMS = (
    # (alpha_target, quantity, paper value, unit)
    (0.05, "raw gap", -66.6, "% change"),
    (0.05, "zero-shot accuracy", -4.84, "% change"),
    (0.5, "raw gap", -82.3, "% change"),
    (0.0, "clustering ARI", 0.318, "value"),
    (0.5, "clustering ARI", 0.516, "value"),
    (0.5, "CIDEr", 57.1, "% change"),
)
_QUANTITY = {
    "raw gap": "raw_gap",
    "zero-shot accuracy": "zero_shot_accuracy",
    "clustering ARI": "clustering_ari",
    "CIDEr": "cider",
}


def sweep_points(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows of :func:`collect` -> one point per evaluated configuration.

    Returns:
        DataFrame: ``kind`` ("fine-tuned", "base" or "post-hoc"), ``name`` (``alpha=0.05``,
        ``base`` or the post-hoc method), ``alpha_target``, ``train_seed`` and the headline
        metrics. Post-hoc points are fixes of the base model (from the runs that evaluated it).
    """
    if rows.empty:
        raise SweepAnalysisError("no finished runs to analyse; run the sweep first.")
    table = results_table(rows, by=("run", "alpha_target", "train_seed", "role", "posthoc"))
    kind = table["role"].map({"finetuned": "fine-tuned", "base": "base"}).fillna(table["role"])
    kind = kind.where((table["role"] != "base") | (table["posthoc"] == "identity"), "post-hoc")
    fixed = (table["role"] == "finetuned") & (table["posthoc"] != "identity")
    table = table.assign(kind=kind)[~fixed]
    table["name"] = [
        f"alpha={a:g}" if k == "fine-tuned" else ("base" if k == "base" else p)
        for k, a, p in zip(table["kind"], table["alpha_target"], table["posthoc"], strict=True)
    ]
    base = table["kind"] != "fine-tuned"
    # the base model and its fixes do not depend on alpha: one point per seed
    table = pd.concat(
        [table[~base], table[base].drop_duplicates(["kind", "name", "train_seed"])],
        ignore_index=True,
    )
    table.loc[table["kind"] != "fine-tuned", "alpha_target"] = float("nan")
    columns = ["kind", "name", "alpha_target", "train_seed", *METRIC_COLUMNS]
    return table[columns].reset_index(drop=True)


def tradeoff_table(points: pd.DataFrame, reference_alpha: float | None = None) -> pd.DataFrame:
    """Gap reduction and zero-shot accuracy drop (%) of every point, against its reference.

    Fine-tuned points are compared with the fine-tuned run of ``reference_alpha`` (default: the
    smallest alpha, normally 0) of the same seed; base and post-hoc points with the base
    model of the same seed. With ``g`` the raw gap and ``a`` the zero-shot accuracy::

        gap_reduction_pct  = 100 (g_ref - g) / g_ref
        accuracy_drop_pct  = 100 (a_ref - a) / a_ref
        cider_change_pct   = 100 (c - c_ref) / c_ref

    Returns:
        ``points`` plus those three columns and ``reference`` (what it was compared with).
    """
    fine = points["kind"] == "fine-tuned"
    if reference_alpha is None:
        reference_alpha = float(points.loc[fine, "alpha_target"].min())
    out = []
    for seed, group in points.groupby("train_seed", sort=True):
        ref_fine = group[fine.loc[group.index] & (group["alpha_target"] == reference_alpha)]
        ref_base = group[group["kind"] == "base"]
        for _, point in group.iterrows():
            ref = ref_fine if point["kind"] == "fine-tuned" else ref_base
            row = point.to_dict()
            if len(ref):
                r = ref.iloc[0]
                row["gap_reduction_pct"] = 100 * (r.raw_gap - point.raw_gap) / abs(r.raw_gap)
                row["accuracy_drop_pct"] = 100 * (
                    (r.zero_shot_accuracy - point.zero_shot_accuracy) / abs(r.zero_shot_accuracy)
                )
                row["cider_change_pct"] = 100 * (point.cider - r.cider) / abs(r.cider)
            row["reference"] = (
                f"alpha={reference_alpha:g}, seed {seed}"
                if point["kind"] == "fine-tuned"
                else f"base, seed {seed}"
            )
            out.append(row)
    table = pd.DataFrame(out)
    for column in ("gap_reduction_pct", "accuracy_drop_pct", "cider_change_pct"):
        if column not in table.columns:
            table[column] = float("nan")
    return table


def tradeoff_summary(tradeoff: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds of every (kind, name), with ``n_seeds`` and a ``pareto`` flag.

    ``pareto`` marks the points no other point beats in both gap reduction (higher) and
    accuracy drop (lower) (:func:`tpccma_lib.evaluation.analysis.pareto_front`).
    """
    from tpccma_lib.evaluation.analysis import pareto_front

    numeric = [
        "alpha_target",
        "gap_reduction_pct",
        "accuracy_drop_pct",
        "cider_change_pct",
        *METRIC_COLUMNS,
    ]
    numeric = list(dict.fromkeys(c for c in numeric if c in tradeoff.columns))
    grouped = tradeoff.groupby(["kind", "name"], sort=False, dropna=False)
    summary = grouped[numeric].mean().reset_index()
    summary.insert(2, "n_seeds", grouped.size().to_numpy())
    order = {"fine-tuned": 0, "base": 1, "post-hoc": 2}
    summary = summary.sort_values(
        ["kind", "alpha_target", "name"], key=lambda s: s.map(order) if s.name == "kind" else s
    ).reset_index(drop=True)
    summary["pareto"] = pareto_front(summary, x="accuracy_drop_pct", y="gap_reduction_pct")
    return summary


def r2_analysis(
    points: pd.DataFrame,
    task_metrics: Sequence[str] = R2_TASK_METRICS,
    gap_metrics: Sequence[str] = R2_GAP_METRICS,
) -> pd.DataFrame:
    """R² of each task metric regressed on each gap metric, over two sets of points.

    Sets: ``"fine-tuned runs"`` (every alpha and seed) and ``"runs + base + post-hoc"``. A set
    with fewer than 3 points is left out (a line through 2 points fits trivially).

    Returns:
        :func:`tpccma_lib.evaluation.analysis.r2_table` rows with a ``points`` column first.
    """
    from tpccma_lib.evaluation.analysis import r2_table

    sets = {
        "fine-tuned runs": points[points["kind"] == "fine-tuned"],
        "runs + base + post-hoc": points,
    }
    frames = []
    for name, subset in sets.items():
        if len(subset) < 3:
            continue
        table = r2_table(subset, task_metrics, gap_metrics)
        table.insert(0, "points", name)
        frames.append(table)
    if not frames:
        raise SweepAnalysisError(
            "R² needs at least 3 evaluated configurations; sweep more alphas or seeds."
        )
    return pd.concat(frames, ignore_index=True)


def paper_comparison(summary: pd.DataFrame) -> pd.DataFrame:
    """The paper's headline numbers beside this project's (means over seeds).

    Changes are relative to the smallest alpha's fine-tuned runs (the paper: to CLIP before
    fine-tuning); an alpha missing from the sweep gives NaN.
    """
    fine = summary[summary["kind"] == "fine-tuned"]
    records = []
    for alpha, quantity, paper, unit in PAPER_CLAIMS:
        hit = fine[fine["alpha_target"] == alpha]
        ours = float("nan")
        if len(hit):
            point = hit.iloc[0]
            if unit == "value":
                ours = float(point[_QUANTITY[quantity]])
            elif quantity == "raw gap":
                ours = -float(point["gap_reduction_pct"])
            elif quantity == "zero-shot accuracy":
                ours = -float(point["accuracy_drop_pct"])
            else:
                ours = float(point["cider_change_pct"])
        records.append(
            {
                "alpha_target": alpha,
                "quantity": quantity,
                "unit": unit,
                "paper": paper,
                "ours": ours,
            }
        )
    return pd.DataFrame.from_records(records)
