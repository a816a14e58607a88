"""Figures (and the small tables behind them) that show the modality gap and its parts.

Used by notebook 01. Every builder takes library objects (:class:`Embeddings`,
:class:`GapDecomposition`, DataFrames) and returns a ``plotly.graph_objects.Figure``; the table
helpers return DataFrames whose numbers are exactly what the matching figure draws, so a
notebook can print them rounded for nbval next to the (ignored) figure.

    project_2d            both modalities in 2-D (PCA through an SVD, or seeded t-SNE)
    cosine_similarities   matched / unmatched image-text, image-image, text-text cosines
    decomposition_table   the numbers of a GapDecomposition, one metric per row
    posthoc_effect_figure the table of :func:`tpccma_lib.gap.checks.posthoc_gap_effects` as bars

The numeric checks behind the figures (Fréchet identity, post-hoc effects) live in
:mod:`tpccma_lib.gap.checks`.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tpccma_lib.embeddings import Embeddings
from tpccma_lib.gap.metrics import GapDecomposition

__all__ = [
    "MODALITY_COLORS",
    "PROJECTION_METHODS",
    "Projection2D",
    "VizError",
    "caption_table",
    "cosine_similarities",
    "decomposition_figure",
    "decomposition_table",
    "image_grid_figure",
    "pca_2d",
    "posthoc_effect_figure",
    "project_2d",
    "projection_figure",
    "similarity_histogram_figure",
    "similarity_summary",
]

MODALITY_COLORS = {"image": "#1f77b4", "text": "#ff7f0e"}
_CENTROID_COLOR, _DISTRIBUTION_COLOR = "#636efa", "#ef553b"  # one colour per gap part, everywhere
_FRECHET_COLOR, _GRAY, _SCALE_FREE_COLOR = "#ab63fa", "#7f7f7f", "#00cc96"
#: Panel titles of posthoc_effect_figure, by stage of posthoc_gap_effects.
_STAGE_TITLES = {
    "mapped": "after the map (before renormalisation)",
    "renormalized": "after renormalisation onto the sphere",
}
PROJECTION_METHODS = ("pca", "tsne")
_SYMBOLS = ("circle", "square", "diamond", "cross", "x", "triangle-up", "triangle-down",
            "star", "hexagon", "pentagon", "hourglass", "bowtie")  # fmt: skip
_COORD_DECIMALS = 4  # figure coordinates are rounded: smaller notebooks, same picture


class VizError(ValueError):
    """Bad input to a figure builder; the message says what was wrong and how to fix it."""


# --------------------------------------------------------------------------- the data
def image_grid_figure(
    images: Sequence[np.ndarray], titles: Sequence[str] = (), columns: int = 4
) -> go.Figure:
    """A grid of RGB images (each (H, W, 3) uint8), embedded as PNG data URIs (small JSON)."""
    from PIL import Image

    if len(images) == 0:
        raise VizError("image_grid_figure needs at least one image.")
    columns = max(1, min(columns, len(images)))
    rows = math.ceil(len(images) / columns)
    titles = list(titles) + [""] * (len(images) - len(titles))
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=titles[: len(images)])
    for k, image in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(np.asarray(image, dtype=np.uint8)).save(buffer, format="PNG")
        source = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
        fig.add_trace(go.Image(source=source), row=k // columns + 1, col=k % columns + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(height=230 * rows, width=230 * columns, margin=dict(l=10, r=10, t=40, b=10))
    return fig


def caption_table(dataset: Any, indices: Sequence[int]) -> pd.DataFrame:
    """Columns image, class, caption: every reference caption of the given images.

    ``dataset`` is a :class:`~tpccma_lib.data.CaptionedImageSet` (labels -1 give class "-").
    """
    rows = []
    for index in indices:
        label = int(dataset.labels[index])
        name = dataset.class_names[label] if 0 <= label < len(dataset.class_names) else "-"
        for caption in dataset.captions[index]:
            rows.append({"image": int(index), "class": name, "caption": caption})
    return pd.DataFrame(rows, columns=["image", "class", "caption"])


# --------------------------------------------------------------------------- projection
@dataclass(frozen=True)
class Projection2D:
    """Both modalities projected to the plane.

    Attributes:
        points: one row per point: x, y, modality ("image"/"text"), row (index into
            ``emb.image`` or ``emb.text``), label (class index, -1 unknown), class_name.
        method: "pca" or "tsne".
        explained_variance_ratio: PCA only: share of the pooled variance on each axis.
    """

    points: pd.DataFrame
    method: str
    explained_variance_ratio: tuple[float, float] | None = None


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project rows of ``x`` (N, D) on their top-2 principal axes (SVD of the centred data).

    Returns ``(coords (N, 2), explained_variance_ratio (2,))``. Sign convention: the entry of
    largest magnitude of each principal axis is positive, so the result is deterministic.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2 or x.shape[1] < 2:
        raise VizError(f"pca_2d needs an (N, D) array with N, D >= 2; got shape {x.shape}.")
    centred = x - x.mean(axis=0)
    _, singular, axes = np.linalg.svd(centred, full_matrices=False)
    axes = axes[:2]
    axes *= np.sign(axes[np.arange(2), np.abs(axes).argmax(axis=1)])[:, None]
    total = float((singular**2).sum())
    ratio = singular[:2] ** 2 / total if total > 0 else np.zeros(2)
    return centred @ axes.T, ratio


def _caption_rank(text_to_image: np.ndarray) -> np.ndarray:
    """(N_txt,) position of each caption among the captions of its image (0 = first)."""
    order = np.argsort(text_to_image, kind="stable")
    sorted_images = text_to_image[order]
    starts = np.searchsorted(sorted_images, sorted_images, side="left")
    rank = np.empty_like(text_to_image)
    rank[order] = np.arange(order.size) - starts
    return rank


def project_2d(
    emb: Embeddings,
    method: str = "pca",
    seed: int = 0,
    captions_per_image: int | None = 1,
    perplexity: float = 30.0,
) -> Projection2D:
    """Project all images and (the first ``captions_per_image``) captions into 2-D together.

    Args:
        emb: the embeddings (N_img, D) and (N_txt, D).
        method: "pca" (one joint PCA of the pooled rows, :func:`pca_2d`) or "tsne"
            (scikit-learn t-SNE, PCA init, ``random_state=seed``).
        seed: t-SNE seed (PCA is deterministic).
        captions_per_image: keep each image's first k captions (None: all captions).
        perplexity: t-SNE perplexity, capped at (N - 1) / 3.
    """
    if method not in PROJECTION_METHODS:
        raise VizError(f"unknown projection {method!r}; choose one of {PROJECTION_METHODS}.")
    if captions_per_image is not None and captions_per_image < 1:
        raise VizError(f"captions_per_image must be >= 1 or None, got {captions_per_image}.")
    text_rows = np.arange(emb.n_texts)
    if captions_per_image is not None:
        text_rows = text_rows[_caption_rank(emb.text_to_image) < captions_per_image]
    pooled = np.concatenate([emb.image, emb.text[text_rows]]).astype(np.float64)
    ratio = None
    if method == "pca":
        coords, variance_ratio = pca_2d(pooled)
        ratio = (float(variance_ratio[0]), float(variance_ratio[1]))
    else:
        from sklearn.manifold import TSNE

        tsne = TSNE(
            n_components=2,
            perplexity=min(perplexity, (pooled.shape[0] - 1) / 3),
            init="pca",
            learning_rate="auto",
            random_state=seed,
        )
        coords = tsne.fit_transform(pooled)
    labels = np.concatenate([emb.image_labels, emb.text_labels[text_rows]])
    names = np.array([emb.class_names[k] if 0 <= k < len(emb.class_names) else "-" for k in labels])
    points = pd.DataFrame(
        {
            "x": coords[:, 0],
            "y": coords[:, 1],
            "modality": ["image"] * emb.n_images + ["text"] * text_rows.size,
            "row": np.concatenate([np.arange(emb.n_images), text_rows]),
            "label": labels,
            "class_name": names,
        }
    )
    return Projection2D(points=points, method=method, explained_variance_ratio=ratio)


def projection_figure(
    projection: Projection2D, title: str = "", symbol_by_class: bool = True
) -> go.Figure:
    """Scatter of a :class:`Projection2D`: colour = modality, marker symbol = class."""
    fig = go.Figure()
    for modality, points in projection.points.groupby("modality", sort=True):
        symbols = [_SYMBOLS[k % len(_SYMBOLS)] if k >= 0 else "circle" for k in points.label]
        fig.add_trace(
            go.Scatter(
                x=points.x.round(_COORD_DECIMALS),
                y=points.y.round(_COORD_DECIMALS),
                mode="markers",
                name=str(modality),
                text=points.class_name,
                hovertemplate="%{text}<extra>" + str(modality) + "</extra>",
                marker=dict(
                    color=MODALITY_COLORS.get(str(modality), "gray"),
                    symbol=symbols if symbol_by_class else "circle",
                    size=5,
                    opacity=0.6,
                ),
            )
        )
    axis = "PC" if projection.method == "pca" else "t-SNE "
    ratio = projection.explained_variance_ratio
    x_title, y_title = f"{axis}1", f"{axis}2"
    if ratio is not None:
        x_title += f" ({100 * ratio[0]:.1f} % of variance)"
        y_title += f" ({100 * ratio[1]:.1f} % of variance)"
    fig.update_layout(
        title=title, xaxis_title=x_title, yaxis_title=y_title, height=520, legend_title="modality"
    )
    return fig


# --------------------------------------------------------------------------- similarities
def _distinct_pairs(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    first = rng.integers(0, n, size=size)
    return first, (first + rng.integers(1, n, size=size)) % n


def cosine_similarities(
    emb: Embeddings, n_samples: int = 5000, seed: int = 0
) -> dict[str, np.ndarray]:
    """Cosine similarities of four kinds of pairs (rows are L2-normalised first).

    Returns a dict of 1-D float64 arrays:
        "matched image-text": every (caption, its image) pair, N_txt values;
        "unmatched image-text": ``n_samples`` random (caption, another image) pairs;
        "image-image", "text-text": ``n_samples`` random pairs of two different rows.
    Sampling is with replacement, from ``np.random.default_rng(seed)``.
    """
    if emb.n_images < 2 or emb.n_texts < 2:
        raise VizError("cosine_similarities needs at least 2 images and 2 captions.")
    rng = np.random.default_rng(seed)
    emb = emb.normalized()
    image, text = emb.image.astype(np.float64), emb.text.astype(np.float64)

    def rowwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", a, b)

    captions = rng.integers(0, emb.n_texts, size=n_samples)
    own = emb.text_to_image[captions]
    other = (own + rng.integers(1, emb.n_images, size=n_samples)) % emb.n_images
    img_a, img_b = _distinct_pairs(emb.n_images, n_samples, rng)
    txt_a, txt_b = _distinct_pairs(emb.n_texts, n_samples, rng)
    return {
        "matched image-text": rowwise(image[emb.text_to_image], text),
        "unmatched image-text": rowwise(image[other], text[captions]),
        "image-image": rowwise(image[img_a], image[img_b]),
        "text-text": rowwise(text[txt_a], text[txt_b]),
    }


def similarity_summary(similarities: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Columns pairs, n, mean, std, p05, median, p95 of each kind of cosine similarity."""
    rows = []
    for kind, values in similarities.items():
        p05, median, p95 = np.percentile(values, [5, 50, 95])
        rows.append(
            {
                "pairs": kind,
                "n": int(values.size),
                "mean": float(values.mean()),
                "std": float(values.std()),
                "p05": float(p05),
                "median": float(median),
                "p95": float(p95),
            }
        )
    return pd.DataFrame(rows)


def similarity_histogram_figure(
    similarities: Mapping[str, np.ndarray], bins: int = 60, title: str = ""
) -> go.Figure:
    """Density histograms (shared bins) of cosine similarities, binned here in numpy.

    Left panel: keys containing "image-text" (cross-modal); right panel: the rest
    (within a modality). Each curve integrates to 1 over the bins.
    """
    values = np.concatenate([np.asarray(v, dtype=np.float64) for v in similarities.values()])
    edges = np.linspace(values.min(), values.max(), bins + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    fig = make_subplots(
        rows=1, cols=2, shared_yaxes=True, subplot_titles=("across modalities", "within a modality")
    )
    for kind, kind_values in similarities.items():
        density, _ = np.histogram(kind_values, bins=edges, density=True)
        fig.add_trace(
            go.Scatter(
                x=centres.round(_COORD_DECIMALS),
                y=density.round(_COORD_DECIMALS),
                mode="lines",
                line_shape="hvh",
                fill="tozeroy",
                name=kind,
            ),
            row=1,
            col=1 if "image-text" in kind else 2,
        )
    fig.update_xaxes(title_text="cosine similarity")
    fig.update_yaxes(title_text="density", col=1)
    fig.update_layout(title=title, height=400)
    return fig


# --------------------------------------------------------------------------- decomposition
#: (field of GapDecomposition, what it is) in the order the notebook explains them.
_DECOMPOSITION_ROWS = (
    ("raw_gap", "||mean(img/|img|) - mean(txt/|txt|)|| (Liang et al.)"),
    ("centroid_gap", "||mu_img - mu_txt||"),
    ("distribution_gap", "Bures B(S_img, S_txt)"),
    ("frechet_distance", "W2 = sqrt(centroid^2 + distribution^2)"),
    ("image_total_variance", "tr S_img"),
    ("text_total_variance", "tr S_txt"),
    ("relative_gap", "centroid_gap / sqrt((tr S_img + tr S_txt) / 2)"),
    ("paired_sq_distance", "mean_k ||img_k - txt_k||^2 over matched pairs"),
    ("paired_centroid_sq", "||mean_k img_k - mean_k txt_k||^2"),
    ("paired_residual_sq", "mean_k ||(img_k - mu) - (txt_k - mu')||^2"),
    ("mmd2", "MMD^2 of the centred modalities (RBF kernel)"),
    ("mmd2_std_error", "standard error of mmd2 (NaN for the exact estimator)"),
    ("separability_accuracy", "held-out logistic regression image vs text (chance 0.5)"),
)


def decomposition_table(decomposition: GapDecomposition) -> pd.DataFrame:
    """Columns metric, value, definition: the main fields of a :class:`GapDecomposition`."""
    d = decomposition.as_dict()
    return pd.DataFrame(
        [
            {"metric": name, "value": float(d[name]), "definition": text}
            for name, text in _DECOMPOSITION_ROWS
        ]
    )


def decomposition_figure(decomposition: GapDecomposition, title: str = "") -> go.Figure:
    """Left: the gap distances. Right: two exact splits of a squared distance, stacked.

    Right-hand bars: W2^2 = centroid_gap^2 + distribution_gap^2 (Gaussian fits), and
    mean ||img_k - txt_k||^2 = paired centroid^2 + paired residual^2 (matched pairs).
    """
    d = decomposition
    fig = make_subplots(
        rows=1,
        cols=2,
        subplot_titles=("gap distances (embedding units)", "squared distances, split exactly"),
    )
    names = ["raw gap", "centroid gap", "distribution gap", "Fréchet W2"]
    values = [d.raw_gap, d.centroid_gap, d.distribution_gap, d.frechet_distance]
    colors = [_GRAY, _CENTROID_COLOR, _DISTRIBUTION_COLOR, _FRECHET_COLOR]
    fig.add_trace(
        go.Bar(x=names, y=values, marker_color=colors, name="distance", showlegend=False),
        row=1,
        col=1,
    )
    groups = ["Gaussian fits: W2^2", "matched pairs: mean ||x-y||^2"]
    fig.add_trace(
        go.Bar(
            x=groups,
            y=[d.centroid_gap**2, d.paired_centroid_sq],
            name="centroid part",
            marker_color=_CENTROID_COLOR,
        ),
        row=1,
        col=2,
    )
    fig.add_trace(
        go.Bar(
            x=groups,
            y=[d.distribution_gap**2, d.paired_residual_sq],
            name="distribution / residual part",
            marker_color=_DISTRIBUTION_COLOR,
        ),
        row=1,
        col=2,
    )
    fig.update_layout(barmode="stack", title=title, height=420)
    return fig


# --------------------------------------------------------------------------- post-hoc fixes
#: (column of posthoc_gap_effects, legend label, colour) of the bars of posthoc_effect_figure.
_EFFECT_BARS = (
    ("centroid_change_pct", "centroid gap", _CENTROID_COLOR),
    ("distribution_change_pct", "distribution gap", _DISTRIBUTION_COLOR),
    ("relative_distribution_change_pct", "distribution gap / spread", _SCALE_FREE_COLOR),
)


def posthoc_effect_figure(
    effects: pd.DataFrame, stages: Sequence[str] = ("renormalized",), title: str = ""
) -> go.Figure:
    """Grouped bars of % change per post-hoc method, one panel per stage in ``stages``.

    Three bars per method: the centroid gap, the distribution gap, and the scale-free
    distribution gap / spread (which separates a change of shape from a mere rescaling,
    e.g. by renormalisation). Negative bars mean the fix shrank that quantity.
    """
    missing = sorted(set(stages) - set(effects["stage"]))
    if missing:
        raise VizError(
            f"stages {missing} are not in the table (it has {sorted(set(effects['stage']))})."
        )
    fig = make_subplots(
        rows=1,
        cols=len(stages),
        shared_yaxes=True,
        subplot_titles=[_STAGE_TITLES.get(stage, stage) for stage in stages],
    )
    for col, stage in enumerate(stages, start=1):
        rows = effects[effects["stage"] == stage]
        for column, label, color in _EFFECT_BARS:
            fig.add_trace(
                go.Bar(
                    x=list(rows["method"]),
                    y=rows[column].round(_COORD_DECIMALS),
                    name=label,
                    marker_color=color,
                    legendgroup=label,
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
    fig.update_yaxes(title_text="% change vs. no fix", col=1)
    fig.update_layout(barmode="group", title=title, height=450)
    return fig
