"""One fine-tuned run evaluated beside its references (notebook 04): every role on every task.

A *role* is a model with a job in the comparison: the base model (the paper's baseline), its
post-hoc fixes, the fine-tuned model. :func:`evaluate_roles` evaluates each (one caption decoder
per model) into long rows; :func:`results_table` makes one row per (role, post-hoc fix);
:func:`compare_roles` puts each role beside a reference; :func:`sample_captions` shows captions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tpccma_lib.evaluation.model_report import METRIC_COLUMNS, headline

if TYPE_CHECKING:  # for annotations only (no import cycle with experiment.py)
    from tpccma_lib.experiment import Experiment

__all__ = [
    "RoleEvaluationError",
    "RunEvaluation",
    "resolve_posthoc",
    "evaluate_roles",
    "results_table",
    "finetuned_model",
    "compare_roles",
    "sample_captions",
]


class RoleEvaluationError(ValueError):
    """Bad input to a role evaluation (an unknown post-hoc fix, a missing reference role)."""


def resolve_posthoc(spec: str | Sequence[str]) -> list[str]:
    """Post-hoc fixes to evaluate besides ``identity``: ``"all"``, ``"none"`` or a list.

    ``"all"`` = every method of :data:`tpccma_lib.gap.posthoc.POSTHOC_METHODS` but ``identity``;
    ``"none"`` (or ``""``) = none; otherwise comma-separated names, each checked.
    """
    from tpccma_lib.gap.posthoc import POSTHOC_METHODS

    names = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [n.strip() for n in names if n.strip()]
    if names in (["all"], ["none"], []):
        return [m for m in POSTHOC_METHODS if m != "identity"] if names == ["all"] else []
    unknown = [n for n in names if n not in POSTHOC_METHODS]
    if unknown:
        raise RoleEvaluationError(
            f"unknown post-hoc method(s) {unknown}; use 'all', 'none' or names from "
            f"{sorted(POSTHOC_METHODS)}."
        )
    return [n for n in dict.fromkeys(names) if n != "identity"]


@dataclass
class RunEvaluation:
    """What :func:`evaluate_roles` returns."""

    rows: pd.DataFrame  # long rows (reporting.evaluate_model) of every model, with "role"
    decoders: dict[str, Any]  # role -> its caption decoder (None without captioning)
    reused_from: Path | None = None  # the cache entry it was read from; None: computed now


def evaluate_roles(
    exp: Experiment,
    models: dict[str, tuple[Any, str]],
    posthoc: dict[str, Sequence[str]] | None = None,
    cfg: Any | None = None,
    label: dict[str, Any] | None = None,
    progress: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
) -> RunEvaluation:
    """Evaluate several models (roles) of one experiment, each with its post-hoc fixes.

    One caption decoder is trained per model; each post-hoc fix gets one of its own, trained on
    the fix's text map of the train captions (``cfg.posthoc_captioning``, see
    :func:`~tpccma_lib.evaluation.model_report.evaluate_model`).

    With ``cache_dir``, an earlier call on the same inputs, code and machine is reused instead
    (:mod:`tpccma_lib.evaluation.evaluation_cache`: rows bit-identical, the global random state
    left as that call left it), and a new result is stored there.

    Args:
        exp: the :class:`~tpccma_lib.experiment.Experiment`.
        models: role (e.g. ``"base"``, ``"finetuned"``) -> (model, checkpoint text for rows).
        posthoc: role -> post-hoc method names evaluated besides ``identity``.
        cfg: a :class:`~tpccma_lib.evaluation.model_report.EvalConfig` (default settings when None).
        label: extra columns of every row (e.g. ``{"alpha_target": 0.5}``).
        cache_dir: where evaluations are stored and looked up (notebook 04:
            ``runs/cache/evaluation``); None: always compute, store nothing.

    Returns:
        :class:`RunEvaluation`: rows with a ``role`` column, and the decoders.
    """
    from tpccma_lib.evaluation.model_report import EvalConfig, evaluate_model, fit_caption_decoder

    cfg = cfg or EvalConfig()
    if cache_dir is not None:
        from tpccma_lib.evaluation.evaluation_cache import cached_evaluation, evaluation_key

        key = evaluation_key(exp, models, posthoc, cfg, label)
        return cached_evaluation(
            cache_dir, key, lambda: evaluate_roles(exp, models, posthoc, cfg, label, progress)
        )
    frames, decoders = [], {}
    for role, (model, checkpoint) in models.items():
        decoder = (
            fit_caption_decoder(exp, model, cfg, progress=progress) if cfg.captioning else None
        )
        decoders[role] = decoder
        for method in ["identity", *(posthoc or {}).get(role, ())]:
            frame = evaluate_model(
                exp,
                model,
                checkpoint=checkpoint,
                posthoc=method,
                decoder=decoder,
                cfg=cfg,
                progress=progress,
                label={"role": role, **(label or {})},
            )
            frames.append(frame)
    return RunEvaluation(pd.concat(frames, ignore_index=True), decoders)


def results_table(rows: pd.DataFrame, by: Sequence[str] = ("role", "posthoc")) -> pd.DataFrame:
    """Long rows -> one row per (role, posthoc) with the headline metrics as columns.

    Columns: ``by`` then ``raw_gap, centroid_gap, distribution_gap, zero_shot_accuracy,
    clustering_ari, modality_ari, cider, i2t_R@1, t2i_R@1`` (see
    :func:`tpccma_lib.evaluation.model_report.headline`), in the order the groups first appear.
    """
    by = list(by)
    records = []
    for keys, group in rows.groupby(by, sort=False, dropna=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        numbers = headline(group)
        records.append(
            {**dict(zip(by, keys, strict=True)), **{m: numbers[m] for m in METRIC_COLUMNS}}
        )
    return pd.DataFrame.from_records(records)


def finetuned_model(
    exp: Experiment, checkpoint: str | os.PathLike[str], train_config: Any | None = None
) -> Any:
    """The fine-tuned model at ``checkpoint``, trained first when missing and asked to.

    Args:
        exp: the :class:`~tpccma_lib.experiment.Experiment` the checkpoint belongs to.
        checkpoint: ``<run folder>/final.pt`` (what notebook 03 writes).
        train_config: a :class:`~tpccma_lib.training.loop.TrainConfig`; when given and the checkpoint
            is missing, the run is trained (or resumed) in the checkpoint's folder through
            :func:`tpccma_lib.training.runs.load_or_train`. When None, a missing checkpoint is an error.

    Raises:
        FileNotFoundError: the checkpoint is missing and no ``train_config`` was given.
    """
    checkpoint = Path(checkpoint)
    if checkpoint.exists():
        return exp.load(checkpoint)
    if train_config is None:
        raise FileNotFoundError(
            f"no fine-tuned checkpoint {checkpoint.name} in {checkpoint.parent.name}/: run "
            "notebook 03 first with the same alpha_target and seed (it writes "
            "runs/finetune/alpha<alpha_target>-seed<seed>/final.pt), pass checkpoint=<path>, or "
            "set train_if_missing=True to train it here."
        )
    from tpccma_lib.training.runs import load_or_train

    return load_or_train(exp, train_config, checkpoint.parent).model


def compare_roles(
    table: pd.DataFrame,
    before: str = "base",
    after: str = "finetuned",
    metrics: Sequence[str] = METRIC_COLUMNS,
) -> pd.DataFrame:
    """Un-fixed ``before`` vs ``after`` rows of a :func:`results_table`, per metric.

    Returns:
        DataFrame ``metric, <before>, <after>, change, change_pct`` with
        ``change = after - before`` and ``change_pct = 100 (after - before) / |before|``
        (NaN when ``before`` is 0).
    """

    def pick(role: str) -> pd.Series:
        hit = table[(table["role"] == role) & (table["posthoc"].fillna("identity") == "identity")]
        if hit.empty:
            raise RoleEvaluationError(
                f"no un-fixed rows of role {role!r}; roles: {sorted(set(table.role))}."
            )
        return hit.iloc[0]

    first, second = pick(before), pick(after)
    records = []
    for metric in metrics:
        a, b = float(first[metric]), float(second[metric])
        pct = 100 * (b - a) / abs(a) if a != 0 else float("nan")
        records.append({"metric": metric, before: a, after: b, "change": b - a, "change_pct": pct})
    return pd.DataFrame.from_records(records)


def sample_captions(
    exp: Experiment,
    models: dict[str, tuple[Any, Any]],
    n: int = 6,
    seed: int = 0,
    split: str = "test",
) -> pd.DataFrame:
    """Captions generated from ``n`` images of ``split`` by each model's decoder.

    Args:
        models: role -> (model, its caption decoder).
        n: images, drawn without replacement by ``numpy.random.default_rng(seed)``, sorted.

    Returns:
        DataFrame: ``image`` (index in the split), ``class``, ``reference`` (its first
        reference caption), then one column per role with the generated caption.
    """

    data = exp.split(split)
    n = min(int(n), len(data))
    index = np.sort(np.random.default_rng(seed).choice(len(data), size=n, replace=False))
    table = pd.DataFrame(
        {
            "image": index,
            "class": [
                data.class_names[data.labels[i]] if data.labels[i] >= 0 else "" for i in index
            ],
            "reference": [data.captions[i][0] if data.captions[i] else "" for i in index],
        }
    )
    for role, (model, decoder) in models.items():
        emb = exp.embeddings(model, split)
        table[role] = decoder.generate(emb.image[index])
    return table
