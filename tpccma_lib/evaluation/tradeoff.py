"""What an alpha sweep measured, analysed (notebook 05): the trade-off and which gap predicts.

:func:`sweep_points` turns the rows of every run (``tpccma_lib.app.sweep.collect``) into one
point per configuration; :func:`tradeoff_table` / :func:`tradeoff_summary` give the price of
each step of gap reduction against the original model, with the alpha = 0 fine-tune beside it
as the control (the Pareto plot); :func:`r2_analysis` asks which gap metric predicts
which task metric; :func:`paper_comparison` sets the paper's headline numbers beside ours.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from tpccma_lib.evaluation.model_report import METRIC_COLUMNS
from tpccma_lib.evaluation.roles import results_table

__all__ = [
    "SweepAnalysisError",
    "CHANGE_COLUMNS",
    "CONTROL_SUFFIX",
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


#: Change columns of :func:`tradeoff_table`: (column, metric, sign). ``sign=+1``: a relative
#: reduction, 100 (ref - x) / ref; ``sign=-1``: a relative change, 100 (x - ref) / ref.
CHANGE_COLUMNS = (
    ("gap_reduction_pct", "raw_gap", +1),
    ("distribution_reduction_pct", "distribution_gap", +1),
    ("accuracy_drop_pct", "zero_shot_accuracy", +1),
    ("cider_change_pct", "cider", -1),
)
#: Suffix of the same columns measured against the control (the alpha = 0 fine-tune).
CONTROL_SUFFIX = "_vs_control"


def _changes(point: pd.Series, ref: pd.Series | None, suffix: str = "") -> dict[str, float]:
    """The :data:`CHANGE_COLUMNS` of ``point`` against ``ref`` (NaN where there is no ref)."""
    out = {}
    for column, metric, sign in CHANGE_COLUMNS:
        value = float("nan")
        if ref is not None:
            value = (
                sign * 100 * (float(ref[metric]) - float(point[metric])) / abs(float(ref[metric]))
            )
        out[column + suffix] = value
    return out


def tradeoff_table(points: pd.DataFrame, reference_alpha: float | None = None) -> pd.DataFrame:
    """Changes (%) of every point against the original model and against the control.

    As the paper, every point is compared with the **original** model, the base model of the
    same seed before any fine-tuning. Fine-tuned points are also compared with the **control**,
    the fine-tuned run of ``reference_alpha`` (default: the smallest alpha, normally 0) of the
    same seed: the same curriculum and steps without the alignment loss, so that a change beyond
    the control's is the CMA loss's, not more training's. With ``x`` a metric and ``x_ref`` the
    reference's::

        gap_reduction_pct           = 100 (g_ref - g) / g_ref     (g: raw gap)
        distribution_reduction_pct  = 100 (d_ref - d) / d_ref     (d: distribution gap)
        accuracy_drop_pct           = 100 (a_ref - a) / a_ref     (a: zero-shot accuracy)
        cider_change_pct            = 100 (c - c_ref) / c_ref     (c: CIDEr)

    Returns:
        ``points`` plus those columns (against the original model; NaN where the seed's base
        model was not evaluated), the same with suffix ``_vs_control`` (fine-tuned points only,
        NaN elsewhere), ``reference`` and ``control`` (what each was compared with).
    """
    fine = points["kind"] == "fine-tuned"
    if reference_alpha is None and fine.any():
        reference_alpha = float(points.loc[fine, "alpha_target"].min())
    out = []
    for seed, group in points.groupby("train_seed", sort=True):
        control = group[fine.loc[group.index] & (group["alpha_target"] == reference_alpha)]
        original = group[group["kind"] == "base"]
        for _, point in group.iterrows():
            is_fine = point["kind"] == "fine-tuned"
            row = point.to_dict()
            row.update(_changes(point, original.iloc[0] if len(original) else None))
            row.update(
                _changes(
                    point, control.iloc[0] if is_fine and len(control) else None, CONTROL_SUFFIX
                )
            )
            row["reference"] = f"original model, seed {seed}" if len(original) else "none"
            row["control"] = (
                f"alpha={reference_alpha:g}, seed {seed}" if is_fine and len(control) else ""
            )
            out.append(row)
    return pd.DataFrame(out)


def tradeoff_summary(tradeoff: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds of every (kind, name), with ``n_seeds`` and a ``pareto`` flag.

    ``pareto`` marks the points no other point beats in both raw-gap reduction (higher) and
    accuracy drop (lower), both against the original model
    (:func:`tpccma_lib.evaluation.analysis.pareto_front`); ``pareto_distribution`` the same
    with the distribution-gap reduction.
    """
    from tpccma_lib.evaluation.analysis import pareto_front

    changes = [column for column, _, _ in CHANGE_COLUMNS]
    numeric = [
        "alpha_target",
        *changes,
        *(column + CONTROL_SUFFIX for column in changes),
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
    summary["pareto_distribution"] = pareto_front(
        summary, x="accuracy_drop_pct", y="distribution_reduction_pct"
    )
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

    ``ours`` is measured as the paper measures it, against the original model (CLIP before
    fine-tuning, here the base model); ``ours_vs_control`` against the alpha = 0 fine-tune of
    the same seed, the part that the alignment loss adds to the same training without it. An
    alpha missing from the sweep gives NaN; the ARI rows are values, not changes.
    """
    fine = summary[summary["kind"] == "fine-tuned"]
    change_column = {
        "raw gap": ("gap_reduction_pct", -1.0),
        "zero-shot accuracy": ("accuracy_drop_pct", -1.0),
        "CIDEr": ("cider_change_pct", 1.0),
    }
    records = []
    for alpha, quantity, paper, unit in PAPER_CLAIMS:
        hit = fine[fine["alpha_target"] == alpha]
        ours = vs_control = float("nan")
        if len(hit):
            point = hit.iloc[0]
            if unit == "value":
                ours = vs_control = float(point[_QUANTITY[quantity]])
            else:
                column, sign = change_column[quantity]
                ours = sign * float(point[column])
                vs_control = sign * float(point.get(column + CONTROL_SUFFIX, float("nan")))
        records.append(
            {
                "alpha_target": alpha,
                "quantity": quantity,
                "unit": unit,
                "paper": paper,
                "ours": ours,
                "ours_vs_control": vs_control,
            }
        )
    return pd.DataFrame.from_records(records)
