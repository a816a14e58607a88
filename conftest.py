"""How ``make test`` spreads one pytest session (tests + nbval notebooks) over CPU workers.

``make test`` runs ``pytest -n 2 --dist loadgroup --no-loadscope-reorder tests notebooks
--nbval``. Three rules make that correct and short:

* every cell of a notebook is one nbval item, and a notebook's cells share one kernel, so they
  must run in order on one worker; the notebooks also share the repository's ``runs/`` (the
  first one pretrains the base model the others load), so all of them run, in order, on one
  worker: their items get one ``xdist_group`` mark (without xdist the mark does nothing);
* the schedule is the collection order, and a worker takes the next unit when it is free, so
  the longest units go first: the notebooks (about ten minutes), then the ``e2e`` tests (the
  README's commands end to end), then the other ``slow`` tests, then everything else, which
  the other worker takes while the notebooks run;
* a notebook's kernel starts with the environment its stored outputs were made with
  (:data:`tpccma_lib.app.notebooks.STORED_OUTPUT_ENV`: one torch thread, the AVX2 code paths),
  set only while nbval starts it, so the unit tests in the same worker keep theirs.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


def _is_notebook_cell(item: pytest.Item) -> bool:
    return str(item.path).endswith(".ipynb")


def _rank(item: pytest.Item) -> int:
    if _is_notebook_cell(item):
        return 0
    if item.get_closest_marker("e2e"):
        return 1
    if item.get_closest_marker("slow"):
        return 2
    return 3


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if _is_notebook_cell(item):
            item.add_marker(pytest.mark.xdist_group("notebooks"))
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
