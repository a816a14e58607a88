"""``tpccma analyze EMB.npz``: the modality gap of your own embeddings, and what fixes it.

Input: a ``.npz`` in the layout of :mod:`tpccma_lib.embeddings_io` (``image`` (N, D), ``text``
(M, D), optional ``text_to_image``, ``labels``, ``class_names``, ``class_text``); rows are
L2-normalised on load. What is measured (every number named with its unit):

    gap             :func:`tpccma_lib.gap.metrics.decompose` on all rows: raw gap, centroid gap
                    ||mu_img - mu_txt||, distribution gap (Bures), Fréchet W2, spread, relative
                    gap, mean paired distance, MMD^2, linear separability
    sampling_floor  :mod:`tpccma_lib.gap.uncertainty`: the "gap" between random halves of one
                    modality (image, text), and the image-text gap at the same half size
    bootstrap       95 % percentile intervals of centroid gap, Bures and Bures / spread
    posthoc         every fix of :data:`tpccma_lib.gap.posthoc.POSTHOC_METHODS`, fitted on a
                    random ``fit_fraction`` of the images (and their captions) and applied to
                    the other images (split "held-out"), via
                    :func:`tpccma_lib.gap.checks.posthoc_gap_effects` (rows renormalised)
    retrieval       R@1/5/10 image->text and text->image on all pairs
    zero_shot       with labels and ``class_text``: top-1 accuracy over the labelled images
    clustering      with labels: k-means over images + first captions ("captions"), and with
                    ``class_text`` over images + class-prompt embeddings ("class prompts"),
                    ARI against the class labels (mean over 5 k-means seeds)

Outputs in ``out_dir``: ``summary.csv`` (long rows: data, task, method, metric, value, unit,
split) and ``report.md`` (one markdown table per task). Deterministic for a given ``seed``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tpccma_lib.atomic import atomic_write_text
from tpccma_lib.embeddings import Embeddings, EmbeddingsError
from tpccma_lib.embeddings_io import EmbeddingsFile, load_embeddings_npz

__all__ = ["SUMMARY_COLUMNS", "Analysis", "analyze", "analyze_file", "split_images"]

#: Columns of ``summary.csv``.
SUMMARY_COLUMNS = ("data", "task", "method", "metric", "value", "unit", "split")

DISTANCE = "L2 distance (unit-norm rows)"
FRACTION = "fraction in [0, 1]"
_GAP_METRICS: tuple[tuple[str, str], ...] = (
    ("raw_gap", DISTANCE),
    ("centroid_gap", DISTANCE),
    ("distribution_gap", DISTANCE),
    ("frechet_distance", DISTANCE),
    ("spread", DISTANCE),
    ("relative_gap", "ratio (centroid gap / spread)"),
    ("mean_paired_distance", DISTANCE),
    ("mmd2", "MMD^2, RBF kernel (unitless)"),
    ("separability_accuracy", "fraction (chance 0.5)"),
)
_FLOOR_UNITS = {
    "centroid_gap": DISTANCE,
    "distribution_gap": DISTANCE,
    "scale_free_bures": "ratio (Bures / spread)",
    "raw_gap": DISTANCE,
}
_CLUSTER_UNITS = {
    "ari": "ARI (0 chance, 1 perfect)",
    "nmi": "NMI in [0, 1]",
    "modality_ari": "ARI (1 = clusters split by modality)",
    "mixed_fraction": FRACTION,
}


@dataclass(frozen=True)
class Analysis:
    """What :func:`analyze` measured and where it wrote it."""

    data: str  # the file's name
    summary: pd.DataFrame  # columns SUMMARY_COLUMNS
    notes: tuple[str, ...]  # what was skipped and why, how the data looked
    summary_csv: Path
    report_md: Path

    def tables_text(self) -> str:
        """The tables of ``report.md`` as plain text (what the command prints)."""
        parts = []
        for task, rows in self.summary.groupby("task", sort=False):
            parts.append(f"== {task} ({self.data}) ==")
            parts.append(rows.drop(columns=["data", "task"]).to_string(index=False))
        return "\n".join([*parts, *self.notes])


def split_images(n_images: int, fit_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, held-out) image indices: a random ``fit_fraction`` of ``range(n_images)`` and the
    rest, both sorted, each at least 2 images. ``np.random.default_rng(seed)``."""
    if not 0.0 < fit_fraction < 1.0:
        raise ValueError(
            f"--fit-split-fraction must lie strictly between 0 and 1, got {fit_fraction}."
        )
    if n_images < 4:
        raise EmbeddingsError(
            f"{n_images} images: fitting post-hoc fixes on one part and testing on another "
            "needs at least 4."
        )
    n_fit = min(max(int(round(fit_fraction * n_images)), 2), n_images - 2)
    order = np.random.default_rng(seed).permutation(n_images)
    return np.sort(order[:n_fit]), np.sort(order[n_fit:])


def _row(task: str, method: str, metric: str, value: Any, unit: str, split: str) -> dict:
    return {
        "task": task,
        "method": method,
        "metric": metric,
        "value": float(value),
        "unit": unit,
        "split": split,
    }


def _gap_rows(emb: Embeddings, seed: int) -> list[dict]:
    from tpccma_lib.gap.metrics import decompose

    dec = decompose(emb, seed=seed)
    return [_row("gap", "", m, getattr(dec, m), unit, "all") for m, unit in _GAP_METRICS]


def _uncertainty_rows(emb: Embeddings, seed: int, n_repeats: int, n_boot: int) -> list[dict]:
    from tpccma_lib.gap.uncertainty import bootstrap_gap, half_sample_gap, sampling_floor

    rows = []
    floors = (
        ("image halves", sampling_floor(emb.image, n_repeats, seed)),
        ("text halves", sampling_floor(emb.text, n_repeats, seed)),
        ("image vs text halves", half_sample_gap(emb.image, emb.text, n_repeats, seed)),
    )
    for method, floor in floors:
        for metric, unit in _FLOOR_UNITS.items():
            split = f"{floor.n_half}-row halves, {floor.n_repeats} draws"
            rows.append(_row("sampling_floor", method, metric, floor.mean(metric), unit, split))
            rows.append(
                _row("sampling_floor", method, f"{metric}_std", floor.std(metric), unit, split)
            )
    boot = bootstrap_gap(emb.image, emb.text, n_boot=n_boot, seed=seed)
    for interval in boot.intervals:
        unit = _FLOOR_UNITS[interval.metric]
        method = f"{interval.method} {interval.level:.0%} CI, {interval.n_boot} resamples"
        for suffix, value in (("", interval.estimate), ("_low", interval.low)):
            rows.append(_row("bootstrap", method, interval.metric + suffix, value, unit, "all"))
        rows.append(
            _row("bootstrap", method, f"{interval.metric}_high", interval.high, unit, "all")
        )
    return rows


def _posthoc_rows(emb: Embeddings, fit_fraction: float, seed: int) -> list[dict]:
    from tpccma_lib.gap.checks import posthoc_gap_effects

    fit_idx, held_idx = split_images(emb.n_images, fit_fraction, seed)
    fit, held = emb.subset_images(fit_idx), emb.subset_images(held_idx)
    for part, name in ((fit, "fit"), (held, "held-out")):
        if part.n_texts < 2:
            raise EmbeddingsError(
                f"the {name} part ({part.n_images} images) has {part.n_texts} caption(s); the "
                "post-hoc fixes need at least 2 per part: give more captions or change "
                "--fit-split-fraction."
            )
    effects = posthoc_gap_effects(fit, held)
    effects = effects[effects.stage == "renormalized"]  # what a fix delivers: rows on the sphere
    split = f"held-out {held.n_images} images (fit on {fit.n_images})"
    rows = []
    columns = (
        ("centroid_gap", DISTANCE),
        ("distribution_gap", DISTANCE),
        ("relative_distribution_gap", "ratio (Bures / spread)"),
        ("centroid_change_pct", "% change vs identity"),
        ("distribution_change_pct", "% change vs identity"),
    )
    for record in effects.itertuples(index=False):
        for column, unit in columns:
            rows.append(
                _row("posthoc", record.method, column, getattr(record, column), unit, split)
            )
    return rows


def _retrieval_rows(emb: Embeddings) -> list[dict]:
    from tpccma_lib.evaluation.retrieval import retrieval_recall

    result = retrieval_recall(emb, ks=(1, 5, 10))
    return [
        _row(
            "retrieval",
            "cosine",
            f"{direction}_R@{k}",
            result[f"{direction}_R@{k}"],
            FRACTION,
            "all",
        )
        for direction in ("i2t", "t2i")
        for k in (1, 5, 10)
    ]


def _class_prompt_embeddings(emb: Embeddings, class_text: np.ndarray) -> Embeddings:
    """Images with the class-prompt embeddings as text side: prompt c describes the first
    image of class c (classes without a labelled image are left out)."""
    labels = emb.image_labels
    classes = [c for c in range(class_text.shape[0]) if (labels == c).any()]
    first = [int(np.flatnonzero(labels == c)[0]) for c in classes]
    return emb.replace(
        text=class_text[classes],
        text_to_image=np.asarray(first, dtype=np.int64),
        meta={"text_side": "class prompts"},
    )


def _label_rows(emb: Embeddings, class_text: np.ndarray | None, seed: int) -> list[dict]:
    from tpccma_lib.evaluation.clustering import joint_clustering
    from tpccma_lib.evaluation.zero_shot import zero_shot_accuracy

    rows = []
    seeds = tuple(seed + i for i in range(5))
    n_classes = len(np.unique(emb.image_labels[emb.image_labels >= 0]))
    labelled = f"{int((emb.image_labels >= 0).sum())} labelled images"
    if class_text is not None:
        result = zero_shot_accuracy(emb, class_text)
        for metric in ("accuracy", "balanced_accuracy", "chance"):
            rows.append(_row("zero_shot", "class_text", metric, result[metric], FRACTION, labelled))
    sides: list[tuple[str, Embeddings]] = [("captions", emb)]
    if class_text is not None:
        sides.append(("class prompts", _class_prompt_embeddings(emb, class_text)))
    for method, side in sides:
        if n_classes < 2:
            break
        result = joint_clustering(
            side, k=n_classes, seeds=seeds, captions="first" if method == "captions" else "all"
        )
        for metric, unit in _CLUSTER_UNITS.items():
            rows.append(_row("clustering", method, metric, result[metric], unit, labelled))
    return rows


def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    return f"{value:.4g}"


def _markdown_table(frame: pd.DataFrame) -> str:
    columns = [c for c in frame.columns if c not in ("data", "task")]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for record in frame[columns].itertuples(index=False):
        cells = [_fmt(v) if isinstance(v, float) else str(v) for v in record]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    return "\n".join(lines)


def _report(data: str, summary: pd.DataFrame, notes: Sequence[str]) -> str:
    parts = [f"# Modality gap of `{data}`", ""]
    parts += [f"- {note}" for note in notes]
    for task, rows in summary.groupby("task", sort=False):
        parts += ["", f"## {task} — `{data}`", "", _markdown_table(rows)]
    return "\n".join(parts) + "\n"


def analyze(
    loaded: EmbeddingsFile,
    out_dir: str | os.PathLike[str],
    *,
    fit_fraction: float = 0.5,
    seed: int = 0,
    n_repeats: int = 20,
    n_boot: int = 200,
) -> Analysis:
    """Measure everything of this module's docstring on ``loaded`` and write the files.

    Args:
        loaded: from :func:`tpccma_lib.embeddings_io.load_embeddings_npz`.
        out_dir: receives ``summary.csv`` and ``report.md`` (created if needed).
        fit_fraction: share of the images the post-hoc fixes are fitted on.
        seed: seeds the split, the floor, the bootstrap, decompose and k-means.
        n_repeats: random splits of the sampling floor.
        n_boot: bootstrap resamples (>= 40 for a 95 % interval).
    """
    emb = loaded.embeddings
    split_images(emb.n_images, fit_fraction, seed)  # bad settings fail before any work
    data = loaded.path.name
    notes = [
        f"data: {data}: {emb.n_images} images, {emb.n_texts} captions, dimension {emb.dim}, "
        f"{len(np.unique(emb.image_labels[emb.image_labels >= 0]))} classes with images; rows "
        "L2-normalised; distances in the units of the unit-norm embeddings",
        f"pairing: {'caption i <-> image i (no text_to_image)' if loaded.paired_by_default else 'text_to_image'}",
        f"seed {seed}; post-hoc fixes fitted on {fit_fraction:g} of the images, applied to the rest",
    ]
    rows = _gap_rows(emb, seed)
    rows += _uncertainty_rows(emb, seed, n_repeats, n_boot)
    rows += _posthoc_rows(emb, fit_fraction, seed)
    rows += _retrieval_rows(emb)
    if loaded.has_labels:
        rows += _label_rows(emb, loaded.class_text, seed)
        if loaded.class_text is None:
            notes.append("zero-shot skipped: no class_text (class-prompt embeddings) in the file")
    else:
        notes.append("zero-shot and clustering skipped: no labels in the file")
    summary = pd.DataFrame(rows)
    summary.insert(0, "data", data)
    summary = summary[list(SUMMARY_COLUMNS)]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary_csv, report_md = out / "summary.csv", out / "report.md"
    atomic_write_text(summary_csv, summary.to_csv(index=False))
    atomic_write_text(report_md, _report(data, summary, notes))
    return Analysis(data, summary, tuple(notes), summary_csv, report_md)


def analyze_file(
    path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    fit_fraction: float = 0.5,
    seed: int = 0,
    **options: Any,
) -> Analysis:
    """:func:`analyze` of the ``.npz`` at ``path`` (validated first; see ``embeddings_io``)."""
    from tpccma_lib.atomic import check_writable

    loaded = load_embeddings_npz(path)
    check_writable(out_dir, "--out")
    return analyze(loaded, out_dir, fit_fraction=fit_fraction, seed=seed, **options)
