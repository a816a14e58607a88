"""Static checks of the committed notebooks and of the nbval sanitisers (no kernel, seconds).

The notebooks themselves are re-executed and compared cell by cell by nbval, run as a pytest
plugin over ``notebooks/`` (see the README's test command)::

    pytest tests notebooks --nbval --nbval-current-env \\
        --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

nbval can only compare what is stored, so this file checks that what is stored is fit for it:
every notebook was executed in full without errors, has a ``parameters`` cell for papermill,
marks every cell with volatile output (plotly JSON, widget views) ``# NBVAL_IGNORE_OUTPUT``,
prints no machine-specific paths or addresses in compared cells, and carries no multi-MB widget
state. The sanitisers are checked to remove volatile text and to leave printed numbers alone.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nbformat
import pytest

from tpccma_lib.notebook import repo_root, show

ROOT = repo_root()
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SANITIZE_FILE = ROOT / "tests" / "nbval_sanitize.cfg"
IGNORE_MARK = "# NBVAL_IGNORE_OUTPUT"
VOLATILE_MIMETYPES = ("application/vnd.plotly.v1+json", "application/vnd.jupyter.widget-view+json")
MAX_WIDGET_STATE_BYTES = 1_000_000  # plotly FigureWidget state embeds plotly.js (~5 MB)

needs_notebooks = pytest.mark.skipif(not NOTEBOOKS, reason="no notebooks/NN_*.ipynb yet")


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def _is_ignored(cell: nbformat.NotebookNode) -> bool:
    return cell.source.lstrip().startswith(IGNORE_MARK)


def _output_text(output: nbformat.NotebookNode) -> str:
    if output.output_type == "stream":
        return output.text
    data = output.get("data", {})
    return "\n".join(str(v) for k, v in data.items() if k.startswith("text/"))


def _sanitize_patterns() -> list[tuple[str, str]]:
    from nbval.plugin import get_sanitize_patterns

    return get_sanitize_patterns(SANITIZE_FILE.read_text(encoding="utf-8"))


def _sanitize(text: str) -> str:
    for regex, replace in _sanitize_patterns():
        text = re.sub(regex, replace, text)
    return text


# --------------------------------------------------------------------------- notebooks
@needs_notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_was_executed_in_full_without_errors(path):
    nb = _read(path)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", (
        f"{path.name}: kernelspec must be 'python3' (nbval and papermill start that kernel)"
    )
    cells = _code_cells(nb)
    assert cells, f"{path.name} has no code cells"
    not_run = [
        i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.execution_count is None
    ]
    assert not not_run, (
        f"{path.name}: cells {not_run} were never executed; store outputs of a full run "
        "(papermill in place, or `tpccma refresh-notebooks`)"
    )
    counts = [c.execution_count for c in cells]
    assert counts == sorted(counts), f"{path.name}: cells were run out of order: {counts}"
    errors = [
        i
        for i, c in enumerate(nb.cells)
        if any(o.output_type == "error" for o in c.get("outputs", []))
    ]
    assert not errors, f"{path.name}: cells {errors} stored an error"


@needs_notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_has_a_papermill_parameters_cell(path):
    cells = _code_cells(_read(path))
    tagged = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: needs exactly one cell tagged 'parameters'"
    assert tagged[0] is cells[0], f"{path.name}: the parameters cell must be the first code cell"
    assert re.search(r"^seed\s*=", tagged[0].source, re.MULTILINE), (
        f"{path.name}: the parameters cell must set `seed`"
    )


@needs_notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_volatile_outputs_are_marked_ignored(path):
    nb = _read(path)
    unmarked = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        and not _is_ignored(cell)
        and any(m in o.get("data", {}) for o in cell.outputs for m in VOLATILE_MIMETYPES)
    ]
    assert not unmarked, (
        f"{path.name}: cells {unmarked} show a plotly figure or widget but do not start with "
        f"'{IGNORE_MARK}'; print the numbers they show in a compared cell instead"
    )


@needs_notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_compared_outputs_are_machine_independent(path):
    nb = _read(path)
    forbidden = {"an absolute path of this checkout": str(ROOT), "an object address": " at 0x"}
    if str(Path.home()) not in ("/", ""):
        forbidden["a home folder"] = str(Path.home()) + "/"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or _is_ignored(cell):
            continue
        text = "\n".join(_output_text(o) for o in cell.outputs)
        for what, needle in forbidden.items():
            assert needle not in text, f"{path.name} cell {i} prints {what}: {needle!r}"
        assert not re.search(r"\d+%\|", text), f"{path.name} cell {i} stores a progress bar"


@needs_notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_multi_megabyte_widget_state(path):
    nb = _read(path)
    state = nb.metadata.get("widgets", {})
    size = len(json.dumps(state))
    assert size <= MAX_WIDGET_STATE_BYTES, (
        f"{path.name} stores {size / 1e6:.1f} MB of widget state (plotly's FigureWidget embeds "
        "plotly.js); execute with papermill's store_widget_state=False"
    )


# --------------------------------------------------------------------------- sanitisers
def test_sanitize_file_parses_and_compiles():
    patterns = _sanitize_patterns()
    assert len(patterns) >= 8
    for regex, _ in patterns:
        re.compile(regex)


@pytest.mark.parametrize(
    "first, second",
    [
        ("done in 12.3 s", "done in 0.8 s"),
        ("step took 450 ms", "step took 38 ms"),
        ("elapsed 00:12", "elapsed 01:02:03"),
        ("<Model object at 0x7f3a2c1d9e80>", "<Model object at 0x55d0c0ffee00>"),
        ("wrote /tmp/pytest-of-root/pytest-3/run/x.pt", "wrote /tmp/abc/x.pt"),
        ("Loading: 45%|####5     | 45/100 [00:01<00:02, 30.1it/s]", "Loading: 100%|#| 9/9 [00:03]"),
        ("at 2026-11-23T09:41:00.123+00:00", "at 2027-01-01 00:00:00"),
        ("model_id 0123456789abcdef0123456789abcdef", "model_id fedcba9876543210fedcba9876543210"),
    ],
)
def test_sanitizers_remove_volatile_text(first, second):
    assert first != second
    assert _sanitize(first) == _sanitize(second)


def test_sanitizers_leave_printed_numbers_alone(capsys):
    import pandas as pd

    frame = pd.DataFrame(
        {"method": ["identity", "shift"], "raw_gap": [0.43214, 0.0421], "n_images": [1000, 12]}
    )
    print("data: captioned-shapes (seed 0, 64 px; stand-in for COCO/CIFAR-10), test split")
    show(frame)
    print("test split: 1000 images, 5000 captions, dimension 256; 22.2 % of the variance")
    printed = capsys.readouterr().out
    assert "0.432" in printed and "0.042" in printed
    assert _sanitize(printed) == printed
    changed = printed.replace("0.432", "0.436")
    assert _sanitize(changed) != _sanitize(printed)  # a real change still shows


def test_nbval_kernels_start_with_the_environment_the_stored_outputs_were_made_with(monkeypatch):
    """make test's nbval kernels and `tpccma refresh-notebooks` share one environment: the
    root conftest sets it while nbval sets a notebook cell up (and starts the kernel), only
    for notebook cells, and restores the worker's own afterwards."""
    import conftest
    from tpccma_lib.app.notebooks import STORED_OUTPUT_ENV

    class Item:  # the two attributes the hook reads
        def __init__(self, path: str) -> None:
            self.path = Path(path)

    for key in STORED_OUTPUT_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("TPCCMA_THREADS", "2")
    for path, inside in (
        ("notebooks/01_gap_decomposition.ipynb", STORED_OUTPUT_ENV),
        ("tests/test_cli.py", {"TPCCMA_THREADS": "2"}),
    ):
        hook = conftest.pytest_runtest_setup(Item(path))
        next(hook)  # pytest runs the setup (nbval: the kernel starts) here
        assert {k: os.environ[k] for k in STORED_OUTPUT_ENV if k in os.environ} == inside, path
        with pytest.raises(StopIteration):
            next(hook)
        assert os.environ["TPCCMA_THREADS"] == "2"
        assert "ATEN_CPU_CAPABILITY" not in os.environ
    script = (Path(__file__).resolve().parents[1] / "scripts" / "run_tests.sh").read_text()
    assert "--nbval --nbval-current-env" in script and "notebooks >" in script


def test_the_longest_tests_are_scheduled_first_and_notebook_cells_keep_their_order():
    """conftest.py's order: the README's end-to-end tests, then the slow ones, then the rest;
    a notebook's cells stay in order (nbval runs them in one kernel)."""
    import conftest

    class Item:
        def __init__(self, path: str, marks: tuple[str, ...] = ()) -> None:
            self.path, self.marks = Path(path), marks

        def get_closest_marker(self, name: str) -> object | None:
            return name if name in self.marks else None

    items = [
        Item("notebooks/01_gap_decomposition.ipynb"),
        Item("tests/test_cli.py"),
        Item("tests/test_cli.py", ("slow",)),
        Item("notebooks/01_gap_decomposition.ipynb"),
        Item("tests/test_full_reproduction.py", ("slow", "e2e")),
    ]
    cells = [items[0], items[3]]
    conftest.pytest_collection_modifyitems(None, items)
    assert [i.path.name for i in items[:2]] == ["test_full_reproduction.py", "test_cli.py"]
    assert items[1].marks == ("slow",)
    assert [i for i in items if i in cells] == cells


def test_run_all_starts_kernels_with_the_pinned_arithmetic(monkeypatch, tmp_path):
    """`tpccma report` caches features, base models and runs that nbval later reuses, so its
    kernels get the same code paths as the stored outputs (a variable the user set wins)."""
    from tpccma_lib.app import notebooks

    seen = []
    monkeypatch.setattr(
        notebooks,
        "run_notebook",
        lambda name, out, params=None: (
            seen.append({k: os.environ.get(k) for k in notebooks.STORED_OUTPUT_ENV}) or out
        ),
    )
    for key in notebooks.STORED_OUTPUT_ENV:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Zen")
    notebooks.run_all(["02_cma_loss"], out_dir=tmp_path)
    assert seen == [{**notebooks.STORED_OUTPUT_ENV, "OPENBLAS_CORETYPE": "Zen"}]
    assert "ATEN_CPU_CAPABILITY" not in os.environ  # restored afterwards
    assert notebooks.STORED_OUTPUT_ENV == {"TPCCMA_THREADS": "1", **notebooks.ARITHMETIC_ENV}
