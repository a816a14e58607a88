"""Results as rows: every evaluation returns a list of flat dicts, one number per row.

A row always names where its number comes from (taken from ``Embeddings.meta``; a missing
key is ``None``) and what it is::

    dataset, split, model, checkpoint, seed, posthoc,   # provenance
    task, metric, value,                                 # the measurement
    **extra                                              # e.g. std, n_images, k

Rows from many runs concatenate into one long table (:func:`rows_to_frame`); a wide table
with one column per ``task/metric`` (:func:`metrics_wide`) is what the R² analysis and the
Pareto plot read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from tpccma_lib.embeddings import Embeddings

__all__ = ["PROVENANCE_KEYS", "make_row", "metrics_wide", "rows_to_frame"]

#: ``Embeddings.meta`` keys copied into every row, in this column order.
PROVENANCE_KEYS: tuple[str, ...] = ("dataset", "split", "model", "checkpoint", "seed", "posthoc")


def _plain(value: Any) -> Any:
    """numpy scalars -> Python scalars, so rows serialise to JSON/CSV cleanly."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def make_row(
    emb: Embeddings | Mapping[str, Any], task: str, metric: str, value: float, **extra: Any
) -> dict[str, Any]:
    """One result row.

    Args:
        emb: the evaluated embeddings (its ``meta`` gives the provenance), or a meta mapping.
        task: evaluation task, e.g. ``"zero_shot"``, ``"retrieval"``.
        metric: metric name within the task, e.g. ``"accuracy"``, ``"i2t_R@1"``.
        value: the number (stored as float; ``nan`` allowed).
        **extra: further columns (``std``, ``n_images``, ...). They may not overwrite the
            provenance or ``task``/``metric``/``value``.

    Returns:
        ``{dataset, split, model, checkpoint, seed, posthoc, task, metric, value, **extra}``.
    """
    meta = emb.meta if isinstance(emb, Embeddings) else dict(emb)
    row: dict[str, Any] = {key: _plain(meta.get(key)) for key in PROVENANCE_KEYS}
    row.update(task=str(task), metric=str(metric), value=float(value))
    clash = sorted(set(extra) & set(row))
    if clash:
        raise ValueError(
            f"make_row: extra column(s) {clash} would overwrite a standard column; "
            "rename them (e.g. 'eval_seed' instead of 'seed')."
        )
    row.update({key: _plain(val) for key, val in extra.items()})
    return row


def rows_to_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows -> a long ``pandas.DataFrame`` with the standard columns first.

    Missing extra columns become NaN. An empty input gives an empty frame with the standard
    columns.
    """
    rows = list(rows)
    standard = [*PROVENANCE_KEYS, "task", "metric", "value"]
    frame = pd.DataFrame(rows)
    for column in standard:
        if column not in frame.columns:
            frame[column] = pd.Series(dtype=float if column == "value" else object)
    extra = [c for c in frame.columns if c not in standard]
    return frame[standard + extra]


def metrics_wide(
    rows: Iterable[Mapping[str, Any]] | pd.DataFrame,
    index: Sequence[str] = PROVENANCE_KEYS,
) -> pd.DataFrame:
    """Long rows -> one row per evaluated configuration, one column per ``task/metric``.

    Args:
        rows: rows or a frame from :func:`rows_to_frame`.
        index: columns that identify one configuration (default: the provenance columns;
            ``None`` values are kept as their own group).

    Returns:
        DataFrame with the ``index`` columns and a column ``f"{task}/{metric}"`` per metric.
        A configuration with the same ``task/metric`` twice is an error (add the column
        that tells them apart to ``index``).
    """
    frame = rows if isinstance(rows, pd.DataFrame) else rows_to_frame(rows)
    frame = frame.copy()
    frame["column"] = frame["task"].astype(str) + "/" + frame["metric"].astype(str)
    keys = list(index)
    filled = frame[keys].astype(object).where(frame[keys].notna(), "<none>")
    duplicated = pd.concat([filled, frame["column"]], axis=1).duplicated()
    if duplicated.any():
        first = frame.loc[duplicated.to_numpy(), "column"].iloc[0]
        raise ValueError(
            f"metrics_wide: metric {first!r} appears more than once for one configuration; "
            f"add the distinguishing column to index (now {keys})."
        )
    frame[keys] = filled
    wide = frame.pivot(index=keys, columns="column", values="value").reset_index()
    wide.columns.name = None
    wide[keys] = wide[keys].astype(object).where(wide[keys] != "<none>", None)
    return wide
