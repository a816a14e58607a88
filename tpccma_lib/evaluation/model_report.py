"""Evaluate a model of an :class:`~tpccma_lib.experiment.Experiment` on every task, as rows.

``evaluate_model`` is the one call behind the CLI's ``evaluate``, notebook 04 and the sweep:
test-split embeddings -> optional post-hoc fix (fitted on another split) -> gap metrics +
retrieval + joint clustering + zero-shot + text-only captioning, each row carrying data set,
split, model, checkpoint, seed and post-hoc method.

The caption decoder of each data set (:func:`decoder_config_for`): the embedded shapes keep
the small decoder (d_model 128, 2 layers, 400 steps; a minute of one CPU core), COCO gets
one sized and trained like DeCap's (:meth:`CaptionDecoderConfig.decap`: 4 layers, 4 heads,
width 768, 10 epochs over all the train captions at batch 64). It trains, and captions,
on the experiment's device (``DataConfig.device``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tpccma_lib.embeddings import Embeddings
from tpccma_lib.evaluation import (
    CaptionDecoderConfig,
    TextDecoder,
    class_text_embeddings,
    evaluate_embeddings,
    make_row,
    rows_to_frame,
    train_text_decoder,
)
from tpccma_lib.gap.metrics import decompose
from tpccma_lib.gap.posthoc import PosthocMethod, make_posthoc
from tpccma_lib.models import DualEncoder

if TYPE_CHECKING:  # for annotations only (no import cycle with experiment.py)
    from tpccma_lib.data.config import DataConfig
    from tpccma_lib.experiment import Experiment

__all__ = [
    "EvalConfig",
    "DECODER_STEPS",
    "DECAP_EPOCHS",
    "decoder_config_for",
    "GAP_METRICS",
    "gap_rows",
    "zero_shot_class_embeddings",
    "fit_caption_decoder",
    "apply_posthoc",
    "evaluate_model",
    "headline",
    "METRIC_COLUMNS",
    "base_model_summary",
]

#: Gap metrics reported as rows (task "gap"), all in embedding units except the accuracy.
GAP_METRICS = (
    "raw_gap",
    "centroid_gap",
    "distribution_gap",
    "frechet_distance",
    "relative_gap",
    "mean_paired_distance",
    "mmd2",
    "separability_accuracy",
)


#: Training steps of the embedded data set's caption decoder (``CaptionDecoderConfig``'s
#: other defaults: d_model 128, 2 layers; about a minute of one CPU core).
DECODER_STEPS = 400
#: Passes over COCO's train captions of the DeCap-sized decoder: this project's stated choice
#: (see :meth:`CaptionDecoderConfig.decap`).
DECAP_EPOCHS = 10


def decoder_config_for(data: DataConfig | None, steps: int | None = None) -> CaptionDecoderConfig:
    """The caption decoder a data set is evaluated with.

    Args:
        data: the experiment's data settings (``exp.data``); None: the embedded default.
        steps: optimiser steps instead of the data set's default length (e.g. a notebook's
            smoke run); None keeps the default.

    Returns:
        ``dataset="shapes"`` (embedded): ``CaptionDecoderConfig(steps=400)``, the small
        decoder (``steps`` replaces the 400). ``dataset="coco"``:
        ``CaptionDecoderConfig.decap(epochs=10)``, sized and trained like DeCap's; with
        ``steps`` given, the same decoder trained for ``steps`` steps instead of 10 epochs.
    """
    dataset = "shapes" if data is None else data.dataset
    if dataset == "shapes":
        return CaptionDecoderConfig(steps=DECODER_STEPS if steps is None else steps)
    if dataset == "coco":
        if steps is None:
            return CaptionDecoderConfig.decap(epochs=DECAP_EPOCHS)
        # a short run keeps a tenth of its steps as warm-up (DeCap's 1000 would be all of it)
        warmup = min(1000, max(1, steps // 10))
        return CaptionDecoderConfig.decap(epochs=None, steps=steps, warmup_steps=warmup)
    raise ValueError(
        f"no default caption decoder for dataset {dataset!r}; pass "
        "EvalConfig(decoder=CaptionDecoderConfig(...)) (or CaptionDecoderConfig.decap())."
    )


#: How a post-hoc fix is scored for text-only captioning (:attr:`EvalConfig.posthoc_captioning`).
POSTHOC_CAPTIONING = ("own_decoder", "exclude")


@dataclass(frozen=True)
class EvalConfig:
    """What :func:`evaluate_model` runs.

    ``decoder``: the caption decoder's settings; None (default) = the data set's own
    (:func:`decoder_config_for` of ``exp.data``, resolved in :func:`fit_caption_decoder`).
    """

    captioning: bool = True  # train the text-only decoder and score captions (the slow part)
    decoder: CaptionDecoderConfig | None = None  # None: the data set's (decoder_config_for)
    clustering_seeds: tuple[int, ...] = (0, 1, 2, 3, 4)  # k-means seeds (ARI swings between seeds)
    posthoc_fit_split: str = "val"  # split a post-hoc fix is fitted on (never the test split)
    posthoc_captioning: str = "own_decoder"  # a fix's CIDEr: "own_decoder" (a decoder trained
    # on the fix's own text map of the train captions, as the fine-tune's is on its own) or
    # "exclude" (no CIDEr for fixes: NaN)
    seed: int = 0  # decoder training seed

    def __post_init__(self) -> None:
        if self.posthoc_captioning not in POSTHOC_CAPTIONING:
            raise ValueError(
                f"posthoc_captioning must be one of {POSTHOC_CAPTIONING}, got "
                f"{self.posthoc_captioning!r}."
            )


def gap_rows(emb: Embeddings, seed: int = 0) -> list[dict[str, Any]]:
    """Rows (task "gap") of the metrics in :data:`GAP_METRICS` from ``decompose(emb)``."""
    d = decompose(emb, seed=seed).as_dict()
    return [make_row(emb, "gap", m, float(d[m])) for m in GAP_METRICS]


def zero_shot_class_embeddings(exp: Experiment, model: DualEncoder) -> tuple[np.ndarray, Any]:
    """(C, D) prompt-ensemble class embeddings and the labelled data set they classify."""
    ds = exp.zero_shot_split()
    templates = ds.prompt_templates or ("a photo of a {}.",)
    if hasattr(exp, "_place"):
        exp._place(model)
    return class_text_embeddings(model.encode_texts, ds.class_names, templates), ds


def fit_caption_decoder(
    exp: Experiment,
    model: DualEncoder,
    cfg: EvalConfig | None = None,
    progress: bool = False,
    posthoc: PosthocMethod | None = None,
) -> TextDecoder:
    """Train the text-only caption decoder on the train split's caption embeddings (only the
    text side of the train split is embedded), on the experiment's device (``exp.device``,
    where it then also captions).

    Settings: ``cfg.decoder``, or when None the data set's (:func:`decoder_config_for`:
    the small 400-step decoder on the embedded shapes, the DeCap-sized one for 10 epochs on
    COCO). ``posthoc``: a fitted fix whose text map is applied to the train captions first (rows
    renormalised), so the decoder learns the embedding space the fix makes.
    """
    cfg = cfg or EvalConfig()
    decoder_cfg = cfg.decoder if cfg.decoder is not None else decoder_config_for(exp.data)
    train_text = exp.text_embeddings(model, "train")
    if posthoc is not None:
        if posthoc.text_map_ is None:
            raise ValueError(f"the post-hoc fix {posthoc.name!r} is not fitted; fit it first.")
        train_text = posthoc.text_map_.apply(train_text, renormalize=True, dtype=np.float32)
    texts, _ = exp.split("train").flat_captions()
    return train_text_decoder(
        train_text, texts, decoder_cfg, seed=cfg.seed, progress=progress, device=exp.device
    )


def apply_posthoc(
    method: str | PosthocMethod, fit: Embeddings, *targets: Embeddings
) -> tuple[PosthocMethod, list[Embeddings]]:
    """Fit ``method`` on ``fit`` and apply it to each target (names its method in meta)."""
    m = make_posthoc(method) if isinstance(method, str) else method
    m.fit(fit)
    return m, [m.transform(t).replace(meta={"posthoc_method": m.name}) for t in targets]


def _label_posthoc(rows: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    for row in rows:
        row["posthoc"] = name
    return rows


def evaluate_model(
    exp: Experiment,
    model: DualEncoder,
    *,
    checkpoint: str | None = None,
    posthoc: str | PosthocMethod = "identity",
    decoder: TextDecoder | None = None,
    cfg: EvalConfig | None = None,
    progress: bool = False,
    label: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Every task on the test split of ``exp`` for ``model`` -> a DataFrame of rows.

    Args:
        exp: the experiment (data + model settings).
        model: the model to evaluate.
        checkpoint: recorded in every row (which weights these are).
        posthoc: a post-hoc fix fitted on ``cfg.posthoc_fit_split`` and applied to the test
            embeddings and to the zero-shot class embeddings (they are text too).
        decoder: a caption decoder trained for this model (trained here when None and
            ``cfg.captioning``); used for ``posthoc="identity"`` only. A fix is captioned by
            a decoder trained on its own text map of the train captions
            (``cfg.posthoc_captioning="own_decoder"``) or not at all (``"exclude"``): a decoder
            of the un-fixed captions never sees a text-side fix, and decodes an image-side fix
            off the manifold it learned.
        label: extra columns for every row (e.g. ``{"alpha_target": 0.5}``).
    """
    cfg = cfg or EvalConfig()
    meta = {"checkpoint": checkpoint or "untracked"}
    test = exp.embeddings(model, "test", **meta)
    class_emb, _ = zero_shot_class_embeddings(exp, model)
    zs_emb = None
    if exp.data.zero_shot != "same":  # CIFAR-10 (images + class prompts) beside the captions
        zs_emb = exp.labelled_embeddings(model, **meta)
    name = posthoc if isinstance(posthoc, str) else posthoc.name
    method = None
    if name != "identity":
        fit = exp.embeddings(model, cfg.posthoc_fit_split, **meta)
        targets = [test] if zs_emb is None else [test, zs_emb]
        method, transformed = apply_posthoc(posthoc, fit, *targets)
        test = transformed[0]
        zs_emb = transformed[1] if zs_emb is not None else None
        assert method.text_map_ is not None
        class_emb = method.text_map_.apply(class_emb, renormalize=True, dtype=np.float32)
        decoder = None  # the un-fixed model's decoder would not score the fix fairly
        if cfg.captioning and cfg.posthoc_captioning == "own_decoder":
            decoder = fit_caption_decoder(exp, model, cfg, progress=progress, posthoc=method)
    elif cfg.captioning and decoder is None:
        decoder = fit_caption_decoder(exp, model, cfg, progress=progress)
    references = exp.split("test").captions if decoder is not None else None
    rows = gap_rows(test, seed=cfg.seed)
    rows += evaluate_embeddings(
        test,
        class_embeddings=class_emb,
        zero_shot=zs_emb,
        clustering=zs_emb,
        clustering_captions="first" if zs_emb is None else "all",
        decoder=decoder,
        references=references,
        seeds=cfg.clustering_seeds,
    )
    rows = _label_posthoc(rows, name)
    frame = rows_to_frame(rows)
    for key, value in (label or {}).items():
        frame[key] = value
    return frame


def headline(frame: pd.DataFrame) -> dict[str, float]:
    """The numbers the paper headlines, from one model's rows: gap, accuracy, ARI, CIDEr, R@1."""

    def pick(task: str, metric: str) -> float:
        hit = frame[(frame.task == task) & (frame.metric == metric)]
        return float(hit.value.iloc[0]) if len(hit) else float("nan")

    return {
        "raw_gap": pick("gap", "raw_gap"),
        "centroid_gap": pick("gap", "centroid_gap"),
        "distribution_gap": pick("gap", "distribution_gap"),
        "zero_shot_accuracy": pick("zero_shot", "accuracy"),
        "clustering_ari": pick("clustering", "ari"),
        "modality_ari": pick("clustering", "modality_ari"),
        "mixed_cluster_fraction": pick("clustering", "mixed_fraction"),
        "cider": pick("captioning", "CIDEr"),
        "i2t_R@1": pick("retrieval", "i2t_R@1"),
        "t2i_R@1": pick("retrieval", "t2i_R@1"),
    }


def base_model_summary(exp: Experiment, model: DualEncoder) -> str:
    """A short text of the base model's numbers on the test split (for ``tpccma pretrain``)."""
    frame = evaluate_model(exp, model, checkpoint="base", cfg=EvalConfig(captioning=False))
    h = headline(frame)
    n = len(exp.split("test"))
    return "\n".join(
        [
            f"base model on {exp.data.label}, test split ({n} images):",
            f"  raw modality gap       {h['raw_gap']:.3f}  (centroid {h['centroid_gap']:.3f}, "
            f"distribution {h['distribution_gap']:.3f}; embedding units)",
            f"  zero-shot accuracy     {h['zero_shot_accuracy']:.3f}  "
            f"(chance {1 / len(exp.split('test').class_names):.3f})",
            f"  retrieval R@1          image->text {h['i2t_R@1']:.3f}, text->image {h['t2i_R@1']:.3f}",
            f"  joint k-means          ARI {h['clustering_ari']:.3f}, modality ARI "
            f"{h['modality_ari']:.3f}; {1 - h['mixed_cluster_fraction']:.0%} of clusters hold one "
            "modality only",
        ]
    )


#: Every metric :func:`headline` gives (columns of the results tables).
METRIC_COLUMNS = tuple(headline(pd.DataFrame(columns=["task", "metric", "value"])))
