"""Decode and preprocess in DataLoader workers, in order: ``ordered_map(fn, keys, workers)``.

Image decoding (JPEG -> RGB) and open_clip's preprocessing cost ~8 ms per COCO image on one CPU
core: done in the main process, a GPU waits on them. :func:`ordered_map` runs ``fn(key)`` for
each key in ``workers`` forked DataLoader processes and yields the results in key order, so the
batches (and every number computed from them) are the same with 0 or 8 workers.

``fn`` may be any callable (a closure over a model and a data set): workers are forked, so
nothing is pickled. Where ``fork`` is not available (macOS/Windows default to ``spawn``) the
map runs in the main process.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch
from torch.utils.data import DataLoader, Dataset

__all__ = ["effective_workers", "ordered_map"]

T = TypeVar("T")


def _as_is(item: Any) -> Any:
    return item


class _KeyedCall(Dataset):
    """``dataset[key] = fn(key)`` (the DataLoader's sampler yields the keys)."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __getitem__(self, key: Any) -> Any:
        return self.fn(key)


def effective_workers(workers: int, n_items: int) -> int:
    """Workers worth starting: at most ``workers``, the CPU count and ``n_items - 1`` (one item
    gains nothing from a worker); 0 where ``fork`` is unavailable."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}.")
    if "fork" not in multiprocessing.get_all_start_methods():
        return 0
    return max(0, min(workers, os.cpu_count() or 1, n_items - 1))


def ordered_map(
    fn: Callable[[Any], T],
    keys: Sequence[Any],
    workers: int = 0,
    pin_memory: bool = False,
    prefetch: int = 2,
) -> Iterator[T]:
    """Yield ``fn(key)`` for each key in order, computed in up to ``workers`` processes.

    Args:
        fn: the work for one key (e.g. a step's batch -> (image tensor, token tensor)).
        keys: the keys, in the order the results are wanted.
        workers: DataLoader worker processes (0: in this process); capped by
            :func:`effective_workers`.
        pin_memory: pin the tensors for a fast non-blocking copy to CUDA.
        prefetch: results each worker computes ahead.
    """
    n = effective_workers(workers, len(keys))
    if n == 0:
        for key in keys:
            yield fn(key)
        return
    loader = DataLoader(
        _KeyedCall(fn),
        batch_size=None,
        sampler=list(keys),
        num_workers=n,
        pin_memory=pin_memory and torch.cuda.is_available(),
        prefetch_factor=prefetch,
        multiprocessing_context="fork",
        collate_fn=_as_is,  # results as fn returns them (no numpy -> tensor conversion)
        generator=torch.Generator(),  # worker seeds drawn here, not from the global torch RNG
    )
    yield from loader
