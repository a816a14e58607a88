"""Thread-count independence of what gets cached.

Float sums in torch's CPU kernels depend on how many threads split them, so features or a base
model computed with 2 threads differ from those computed with 1 in the last bits, and a printed
number near a rounding boundary can flip. What is cached and reused by every later run (frozen
tower features, the pretrained base model) is therefore always computed on one thread; the
notebooks' nbval runs then reproduce the stored outputs whoever built the cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["CACHE_COMPUTE", "single_threaded"]

#: Tag that goes into cache keys of things computed under :func:`single_threaded` (a cache
#: built before this rule, with any thread count, is not reused).
CACHE_COMPUTE = "torch-1-thread"


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch's CPU ops on one intra-op thread inside the block; restore the count after."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)
