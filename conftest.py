"""How ``make test`` (``scripts/run_tests.sh``) runs the tests and the notebooks.

* The tests run over pytest-xdist workers, a test file per unit, in collection order
  (``--no-loadscope-reorder``), and a worker takes the next file when it is free: the longest
  go first, the ``e2e`` tests (the README's commands end to end), then the other ``slow``
  ones, then everything else, which fills the gaps.
* A notebook's nbval kernel starts with the environment its stored outputs were made with
  (:data:`tpccma_lib.app.notebooks.STORED_OUTPUT_ENV`: one torch thread, the AVX2 code paths),
  set only while nbval sets a cell up (and starts the kernel), so that a process running
  other tests keeps its own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


def _is_notebook_cell(item: pytest.Item) -> bool:
    return str(item.path).endswith(".ipynb")


def _rank(item: pytest.Item) -> int:
    if item.get_closest_marker("e2e"):
        return 0
    if item.get_closest_marker("slow"):
        return 1
    return 2


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_rank)  # stable: a notebook's cells keep their order


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    """nbval starts a notebook's kernel while setting up its first cell: pin its arithmetic."""
    if not _is_notebook_cell(item):
        yield
        return
    from tpccma_lib.app.notebooks import STORED_OUTPUT_ENV, kernel_env

    with kernel_env(STORED_OUTPUT_ENV):
        yield
