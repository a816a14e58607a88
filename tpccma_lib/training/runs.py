"""Fine-tuning runs on disk: reuse a finished run, read its log, watch the gap while training.

A run folder (``out_dir``) holds what :func:`tpccma_lib.training.loop.train` writes: ``checkpoint.pt``
(resumable), ``final.pt`` (the finished model) and ``metrics.jsonl`` (one record per logged
step). :func:`load_or_train` makes re-running a notebook cheap and safe:

- ``final.pt`` present and made by the same settings  -> load it, no training;
- ``final.pt`` present but made by other settings      -> :class:`RunMismatchError` (or retrain);
- only ``checkpoint.pt`` present (an interrupted run)  -> resume it (``train`` checks settings);
- nothing there                                        -> train from the base model.

"Same settings" means the same :class:`~tpccma_lib.training.loop.TrainConfig` (up to the keys that do
not change the weights: logging, checkpoint and eval intervals, device), the same model
config, the same data config and the same base model.

>>> result = load_or_train(exp, TrainConfig(alpha_target=0.5), "runs/finetune/alpha0.5-seed0",
...                        eval_fn=gap_monitor(exp, "val"))
>>> result.resumed_from_step == result.history[-1]["step"] + 1   # True when reused
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tpccma_lib.gap.metrics import centroid_gap, distribution_gap, raw_gap
from tpccma_lib.models import DualEncoder
from tpccma_lib.models.factory import load_checkpoint
from tpccma_lib.notebook import repo_root
from tpccma_lib.training.loop import TrainConfig, TrainResult

if TYPE_CHECKING:  # for annotations only (no import cycle with experiment.py)
    from tpccma_lib.experiment import Experiment

__all__ = [
    "RunMismatchError",
    "VOLATILE_TRAIN_KEYS",
    "GAP_MONITOR_KEYS",
    "read_history",
    "run_differences",
    "load_or_train",
    "gap_monitor",
    "telemetry_summary",
    "summarize_runs",
    "COMPARE_METRICS",
    "compare_models",
    "change_vs",
    "repo_relative",
]

#: TrainConfig keys that do not change the trained weights (ignored when matching a run).
VOLATILE_TRAIN_KEYS = ("checkpoint_every", "log_every", "eval_every", "device")

#: Keys of the dict a :func:`gap_monitor` callback returns (logged as ``val_<key>``).
GAP_MONITOR_KEYS = ("raw_gap", "centroid_gap", "distribution_gap")


class RunMismatchError(ValueError):
    """A finished run in ``out_dir`` was made with other settings than the ones asked for."""


def read_history(out_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Records of ``out_dir/metrics.jsonl`` in order (``[]`` when there is no log)."""
    path = Path(out_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _weights_relevant(train_config: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in train_config.items() if k not in VOLATILE_TRAIN_KEYS}


def run_differences(exp: Experiment, cfg: TrainConfig, payload: Mapping[str, Any]) -> list[str]:
    """What differs between a finished run's ``final.pt`` contents and ``(exp, cfg)``.

    Args:
        exp: the :class:`~tpccma_lib.experiment.Experiment` the run should belong to.
        cfg: the training settings asked for.
        payload: the dict stored in ``final.pt`` (``load_checkpoint(path)``).
    Returns:
        one readable line per difference; empty when the run can be reused.
    """
    out = []
    saved_train = _weights_relevant(payload.get("train_config", {}))
    wanted_train = _weights_relevant(cfg.to_dict())
    for key in sorted(set(saved_train) | set(wanted_train)):
        if saved_train.get(key) != wanted_train.get(key):
            out.append(f"train {key}: {saved_train.get(key)!r} (run) vs {wanted_train.get(key)!r}")
    saved_model = payload.get("model_config", {})
    for key, value in exp.model_config.to_dict().items():
        if saved_model.get(key) != value:
            out.append(f"model {key}: {saved_model.get(key)!r} (run) vs {value!r}")
    saved_data = payload.get("data_config")
    if saved_data is not None:
        for key, value in exp.data.identity().items():
            if saved_data.get(key) != value:
                out.append(f"data {key}: {saved_data.get(key)!r} (run) vs {value!r}")
    base = payload.get("base_checkpoint")
    if base is not None and Path(base).parent.name != exp.base_dir.name:
        out.append(
            f"base model: {Path(base).parent.name} (run) vs {exp.base_dir.name} (the base "
            "model was re-pretrained with other settings since)"
        )
    return out


def _reuse(
    exp: Experiment, cfg: TrainConfig, out_dir: Path, payload: Mapping[str, Any]
) -> TrainResult:
    started = time.perf_counter()
    model = exp.load(out_dir / "final.pt")
    history = read_history(out_dir)
    final_eval = dict(payload.get("final_eval") or {})
    if history and final_eval:  # train() adds the final eval to the last record in memory only
        history[-1] = {**history[-1], **final_eval}
    return TrainResult(
        model=model,
        history=history,
        out_dir=out_dir,
        final_checkpoint=out_dir / "final.pt",
        resumed_from_step=cfg.steps,
        wall_time_s=time.perf_counter() - started,
    )


def load_or_train(
    exp: Experiment,
    cfg: TrainConfig,
    out_dir: str | os.PathLike[str],
    *,
    retrain: bool = False,
    **finetune_kwargs: Any,
) -> TrainResult:
    """The fine-tuned model of ``(exp, cfg)`` in ``out_dir``: reused, resumed or trained.

    Args:
        exp: the experiment (data, model, base model).
        cfg: the fine-tuning settings.
        out_dir: the run folder.
        retrain: start over (``resume=False``) even when a run is there, finished or not.
        finetune_kwargs: passed to :meth:`Experiment.finetune` when training (``eval_fn``,
            ``progress``, ...). A reused run calls none of them.
    Returns:
        a :class:`TrainResult`. When reused, ``resumed_from_step == cfg.steps``, ``history``
        is read from ``metrics.jsonl`` (the final eval from ``final.pt`` merged into the last
        record) and ``wall_time_s`` is the load time.
    Raises:
        RunMismatchError: ``out_dir`` holds a finished run of other settings (the message lists
            them); pick another ``out_dir`` or pass ``retrain=True``.
    """
    out_dir = Path(out_dir)
    final = out_dir / "final.pt"
    if not retrain and final.exists():
        payload = load_checkpoint(final)
        differences = run_differences(exp, cfg, payload)
        if differences:
            raise RunMismatchError(
                f"{final} is a finished run of other settings: "
                + "; ".join(differences)
                + ". Use another out_dir, restore those settings, or pass retrain=True "
                "to train again and overwrite it."
            )
        return _reuse(exp, cfg, out_dir, payload)
    if retrain:
        final.unlink(missing_ok=True)
    return exp.finetune(cfg, out_dir, resume=not retrain, **finetune_kwargs)


def gap_monitor(
    exp: Experiment, split: str = "val"
) -> Callable[[DualEncoder, int], dict[str, float]]:
    """An ``eval_fn`` for :func:`~tpccma_lib.training.loop.train`: the gap of ``split`` under the model.

    The callback embeds every image and caption of ``split`` (cached frozen features for the
    towers, so it costs one pass of the heads) and returns ``raw_gap`` (Liang:
    ``||mean(x/|x|) - mean(y/|y|)||``), ``centroid_gap`` (``||mu_x - mu_y||``) and
    ``distribution_gap`` (Bures distance of the two covariances), in embedding units. The
    trainer logs them as ``val_raw_gap`` etc.
    """

    def evaluate(model: DualEncoder, step: int) -> dict[str, float]:
        emb = exp.embeddings(model, split)
        return {
            "raw_gap": raw_gap(emb.image, emb.text),
            "centroid_gap": centroid_gap(emb.image, emb.text),
            "distribution_gap": distribution_gap(emb.image, emb.text),
        }

    return evaluate


def _finite(values: Sequence[Any]) -> np.ndarray:
    arr = np.asarray([float(v) for v in values if v is not None], dtype=np.float64)
    return arr[np.isfinite(arr)]


def telemetry_summary(history: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Gradient-conflict statistics over the logged records where alignment was on.

    Returns:
        ``aligned_records`` (records with alpha > 0 and a measured gradient cosine),
        ``mean_grad_cosine``, ``min_grad_cosine``, ``conflict_fraction`` (share of those with
        ``conflict``), ``projected_fraction``, ``median_norm_ratio`` (``||alpha g_CMA|| /
        ||g_clip||`` as measured), ``median_applied_norm_ratio`` (after the scheduler),
        ``mean_tempering``; for the per-tensor LR rule (``conflict_rule="lr"``)
        ``lr_conflict_share`` (mean share of tensors with a problem), ``mean_lr_multiplier``
        (mean of the per-measurement mean multiplier) and ``min_lr_multiplier``. NaN where a
        quantity was never logged.
    """
    rows = [
        h for h in history if float(h.get("alpha", 0.0)) > 0 and h.get("grad_cosine") is not None
    ]

    def stat(key: str, reduce: Callable[[np.ndarray], float]) -> float:
        arr = _finite([h.get(key) for h in rows if key in h])
        return float(reduce(arr)) if arr.size else math.nan

    return {
        "aligned_records": float(len(rows)),
        "mean_grad_cosine": stat("grad_cosine", np.mean),
        "min_grad_cosine": stat("grad_cosine", np.min),
        "conflict_fraction": stat("conflict", np.mean),
        "projected_fraction": stat("projected", np.mean),
        "median_norm_ratio": stat("norm_ratio", np.median),
        "median_applied_norm_ratio": stat("applied_norm_ratio", np.median),
        "mean_tempering": stat("tempering", np.mean),
        "lr_conflict_share": stat("lr_conflict_share", np.mean),
        "mean_lr_multiplier": stat("lr_mean_multiplier", np.mean),
        "min_lr_multiplier": stat("lr_min_multiplier", np.min),
    }


def summarize_runs(histories: Mapping[str, Sequence[Mapping[str, Any]]]) -> pd.DataFrame:
    """One row per run: :func:`telemetry_summary` plus the last logged validation gaps.

    Args:
        histories: run name -> history (e.g. ``{"gradient-aware": a, "no scheduler": b}``).
    Returns:
        columns ``run``, the telemetry statistics, ``mean_loss_clip_phase3`` (the contrastive
        loss on the training batches, averaged over the logged phase-3 steps) and
        ``final_val_<gap>`` for each key of :data:`GAP_MONITOR_KEYS` (the last record carrying
        it). NaN where never logged.
    """
    rows = []
    for name, history in histories.items():
        row: dict[str, Any] = {"run": name, **telemetry_summary(history)}
        late = _finite(
            [h["loss_clip"] for h in history if h.get("phase") == 3 and "loss_clip" in h]
        )
        row["mean_loss_clip_phase3"] = float(late.mean()) if late.size else math.nan
        for key in GAP_MONITOR_KEYS:
            logged = [h[f"val_{key}"] for h in history if f"val_{key}" in h]
            row[f"final_val_{key}"] = float(logged[-1]) if logged else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


#: Columns of :func:`compare_models` (gaps in embedding units, accuracy and recall fractions).
COMPARE_METRICS = (
    "raw_gap",
    "centroid_gap",
    "distribution_gap",
    "zero_shot_accuracy",
    "i2t_R@1",
    "t2i_R@1",
)


def compare_models(
    exp: Experiment, models: Mapping[str, DualEncoder], split: str = "test"
) -> pd.DataFrame:
    """Gap components, zero-shot accuracy and retrieval R@1 of several models, one row each.

    Args:
        exp: the experiment; gaps and retrieval (image->text and text->image recall@1, cosine
            ranking over every caption / image of the split) are measured on its ``split``,
            zero-shot accuracy on its zero-shot set (``exp.zero_shot_split()``: the shape
            classes of the test split, or CIFAR-10), with the data set's prompt ensemble.
        models: name -> model (e.g. ``{"base": base, "fine-tuned": run.model}``).
    Returns:
        columns ``model``, ``data``, ``split`` and :data:`COMPARE_METRICS`.
    """
    from tpccma_lib.evaluation import retrieval_recall, zero_shot_accuracy
    from tpccma_lib.evaluation.model_report import zero_shot_class_embeddings

    rows = []
    for name, model in models.items():
        emb = exp.embeddings(model, split)
        class_embeddings, zero_shot_set = zero_shot_class_embeddings(exp, model)
        if getattr(exp.data, "zero_shot", "same") != "same":  # CIFAR-10 (no captions)
            labelled = exp.labelled_embeddings(model)
        elif zero_shot_set is exp.split(split):
            labelled = emb
        else:
            labelled = exp.embeddings(model, "test")
        recall = retrieval_recall(emb, ks=(1,))
        rows.append(
            {
                "model": name,
                "data": exp.data.label,
                "split": split,
                "raw_gap": raw_gap(emb.image, emb.text),
                "centroid_gap": centroid_gap(emb.image, emb.text),
                "distribution_gap": distribution_gap(emb.image, emb.text),
                "zero_shot_accuracy": zero_shot_accuracy(labelled, class_embeddings)["accuracy"],
                "i2t_R@1": recall["i2t_R@1"],
                "t2i_R@1": recall["t2i_R@1"],
            }
        )
    return pd.DataFrame(rows)


def change_vs(
    frame: pd.DataFrame, reference: str, metrics: Sequence[str] = COMPARE_METRICS
) -> pd.DataFrame:
    """Relative change in % of every other row of ``frame`` against row ``model == reference``.

    ``100 (new - ref) / |ref|`` per metric: -66.6 means "cut by 66.6 %". Columns ``model`` and
    ``<metric>_change_%``.
    """
    hits = frame[frame["model"] == reference]
    if len(hits) != 1:
        raise ValueError(
            f"change_vs: expected one row with model == {reference!r}, found {len(hits)}; "
            f"models are {frame['model'].tolist()}."
        )
    ref = hits.iloc[0]
    out = []
    for _, row in frame[frame["model"] != reference].iterrows():
        record: dict[str, Any] = {"model": row["model"]}
        for metric in metrics:
            base = float(ref[metric])
            record[f"{metric}_change_%"] = (
                100.0 * (float(row[metric]) - base) / abs(base) if base != 0 else math.nan
            )
        out.append(record)
    return pd.DataFrame(out)


def repo_relative(path: str | os.PathLike[str]) -> str:
    """``path`` relative to the repository root (POSIX slashes) when inside it, else
    ``.../<last three parts>``.

    Notebooks print this instead of an absolute path (which differs between machines).
    """
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(repo_root()).as_posix()
    except ValueError:
        return "/".join(("...", *resolved.parts[-3:]))
