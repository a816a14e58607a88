"""Run the numbered notebooks with papermill and turn them into an HTML report.

The notebooks under ``notebooks/`` are executed in order (each may read what an earlier one
wrote under ``runs/``); executed copies go to ``runs/notebooks/`` and the report to
``reports/index.html`` plus one HTML page per notebook. Plotly figures, stored in the
notebooks as their JSON mimetype (deterministic, so nbval can compare them), become
interactive HTML in the report, with plotly.js inlined once per page (works offline).
"""

from __future__ import annotations

import html
import os
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "NOTEBOOKS",
    "notebook_dir",
    "kernel_env",
    "unless_set",
    "notebook_parameters",
    "check_parameter_names",
    "run_notebook",
    "run_all",
    "write_report",
    "refresh_stored_outputs",
]

NOTEBOOKS = (
    "01_gap_decomposition",
    "02_cma_loss",
    "03_curriculum_training",
    "04_evaluation",
    "05_alpha_sweep",
    "06_teaching_the_gap",
)


def notebook_dir() -> Path:
    """``notebooks/`` of the repository (``$TPCCMA_NOTEBOOKS`` overrides)."""
    if "TPCCMA_NOTEBOOKS" in os.environ:
        return Path(os.environ["TPCCMA_NOTEBOOKS"])
    return Path(__file__).resolve().parents[2] / "notebooks"


def _available() -> list[str]:
    return [n for n in NOTEBOOKS if (notebook_dir() / f"{n}.ipynb").exists()]


@contextmanager
def kernel_env(env: dict[str, str]) -> Iterator[None]:
    """Set environment variables (inherited by kernels started meanwhile); restore after."""
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _inspect(name: str) -> dict[str, Any]:
    """papermill's description of notebook ``name``'s "parameters" cell, by parameter name."""
    import papermill as pm

    src = notebook_dir() / f"{name}.ipynb"
    if not src.exists():
        raise FileNotFoundError(f"no notebook {src}; available: {_available()}")
    return pm.inspect_notebook(str(src))


def notebook_parameters(name: str) -> frozenset[str]:
    """Names of the papermill parameters notebook ``name`` declares (its "parameters" cell)."""
    return frozenset(_inspect(name))


def notebook_defaults(name: str) -> dict[str, Any]:
    """The defaults of the parameters notebook ``name`` declares, as Python values (a default
    that is not a literal, e.g. an expression, is left out)."""
    import ast

    defaults: dict[str, Any] = {}
    for key, info in _inspect(name).items():
        try:
            defaults[key] = ast.literal_eval(str(info.get("default")))
        except (SyntaxError, ValueError):
            continue
    return defaults


def check_parameter_names(parameters: dict[str, Any], names: Sequence[str]) -> None:
    """Refuse a parameter that none of the notebooks ``names`` declares (a typo would otherwise
    be ignored silently); the error lists each notebook's parameters."""
    declared = {name: notebook_parameters(name) for name in names}
    unknown = sorted(set(parameters) - set().union(*declared.values()))
    if unknown:
        listing = "; ".join(f"{name}: {', '.join(sorted(p))}" for name, p in declared.items())
        raise ValueError(
            f"unknown notebook parameter(s) {unknown}: no notebook that runs declares them. "
            f"Declared parameters — {listing}."
        )


def run_notebook(
    name: str,
    out_path: str | os.PathLike[str],
    parameters: dict[str, Any] | None = None,
    cwd: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> Path:
    """Execute ``notebooks/<name>.ipynb`` with papermill ``parameters`` into ``out_path``.

    Parameters the notebook does not declare are left out (callers such as the sweep pass one
    set of parameters to several notebooks; :func:`notebook_parameters` lists a notebook's).
    """
    import papermill as pm

    src = notebook_dir() / f"{name}.ipynb"
    declared = notebook_parameters(name)
    parameters = {k: v for k, v in (parameters or {}).items() if k in declared}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    kernel_cwd = Path(cwd or notebook_dir()).resolve()
    # The kernel starts in kernel_cwd (nbclient's resources path). papermill's own ``cwd=``
    # would chdir this whole process, which races when the sweep runs notebooks in threads.
    pm.execute_notebook(
        str(src),
        str(out_path),
        parameters=parameters,
        kernel_name="python3",
        cwd=None,
        resources={"metadata": {"path": str(kernel_cwd)}},
        store_widget_state=False,
        progress_bar=progress,
        log_output=False,
    )
    return out_path


def run_all(
    names: Sequence[str] | None = None,
    out_dir: str | os.PathLike[str] = "runs/notebooks",
    parameters: dict[str, Any] | None = None,
) -> list[Path]:
    """Execute notebooks in order; stop at the first failure with the notebook's name.

    Every name in ``parameters`` must be declared by at least one of the notebooks.
    """
    names = list(names or _available())
    missing = [n for n in names if n not in NOTEBOOKS]
    if missing:
        raise ValueError(f"unknown notebook(s) {missing}; choose from {list(NOTEBOOKS)}.")
    check_parameter_names(parameters or {}, names)
    done = []
    with kernel_env(unless_set(STORED_OUTPUT_ENV)):
        for name in names:
            done.append(_run_one(name, out_dir, parameters))
    return done


def _run_one(name: str, out_dir: str | os.PathLike[str], parameters: dict[str, Any] | None) -> Path:
    """Execute one notebook of :func:`run_all` into ``out_dir``, timed; a failure names it."""
    t0 = time.perf_counter()
    print(f"==> running {name} ...", flush=True)
    try:
        path = run_notebook(name, Path(out_dir) / f"{name}.ipynb", parameters)
    except Exception as exc:
        raise RuntimeError(
            f"notebook {name} failed: {exc}. The executed copy with the error is "
            f"in {Path(out_dir) / (name + '.ipynb')}."
        ) from exc
    print(f"    {name} done in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def _plotly_to_html(nb: Any) -> None:
    """Replace plotly JSON outputs by interactive HTML (plotly.js inlined once)."""
    import plotly.io as pio

    first = True
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            fig = data.get("application/vnd.plotly.v1+json")
            if fig is None:
                continue
            data["text/html"] = pio.to_html(
                fig, full_html=False, include_plotlyjs=first, div_id=None, auto_play=False
            )
            first = False
            del data["application/vnd.plotly.v1+json"]


def write_report(
    executed: Sequence[str | os.PathLike[str]], reports_dir: str | os.PathLike[str] = "reports"
) -> Path:
    """HTML page per executed notebook + ``index.html`` linking them. Returns the index path."""
    import nbformat
    from nbconvert import HTMLExporter

    reports_dir = Path(reports_dir)
    reports_dir.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter(template_name="lab")
    links = []
    for path in executed:
        path = Path(path)
        nb = nbformat.read(path, as_version=4)
        _plotly_to_html(nb)
        body, _ = exporter.from_notebook_node(nb)
        page = reports_dir / f"{path.stem}.html"
        page.write_text(body, encoding="utf-8")
        links.append(f'<li><a href="{html.escape(page.name)}">{html.escape(path.stem)}</a></li>')
    index = reports_dir / "index.html"
    index.write_text(
        "<!doctype html><meta charset='utf-8'><title>TPC-CMA report</title>"
        "<h1>TPC-CMA notebooks: report</h1>"
        f"<p>Generated {time.strftime('%Y-%m-%d %H:%M')} by <code>tpccma report</code> on the "
        "embedded default (captioned shapes, mini-CLIP).</p><ol>" + "".join(links) + "</ol>",
        encoding="utf-8",
    )
    return index


#: The AVX2 code paths of torch, oneDNN, MKL and OpenBLAS, so that a machine with AVX-512 runs
#: the same float arithmetic as one without (the last printed digit otherwise differs). Intel and
#: AMD processors still differ in a few last digits under these pins (MKL_CBWR=COMPATIBLE on an
#: Intel Xeon did not reproduce an AMD EPYC's outputs either): stored outputs belong to the
#: processor family they were made on.
ARITHMETIC_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "OPENBLAS_CORETYPE": "Haswell",
}
#: The kernels' environment when stored outputs are made and when nbval recomputes them (the
#: Makefile's NBVAL_ENV, kept equal by a test): one torch thread and :data:`ARITHMETIC_ENV`.
#: ``tpccma report`` starts its kernels with it too (unless the user set a variable): what they
#: cache (tower features, base model, fine-tunes, sweep runs) is reused by nbval, and a
#: fine-tune's last digit depends on the thread count as well as the code paths.
STORED_OUTPUT_ENV = {"TPCCMA_THREADS": "1", **ARITHMETIC_ENV}


def unless_set(env: dict[str, str]) -> dict[str, str]:
    """``env`` without the variables already set in this process (the user's choice wins).
    ``tpccma report`` uses it with :data:`STORED_OUTPUT_ENV`, ``tpccma sweep`` with
    :data:`ARITHMETIC_ENV` (it sets threads per job itself)."""
    return {k: v for k, v in env.items() if k not in os.environ}


def refresh_stored_outputs(names: Sequence[str] | None = None) -> list[Path]:
    """Re-execute notebooks in place so their committed outputs are fresh (on purpose only).

    Kernels get :data:`STORED_OUTPUT_ENV`, as under the test command's nbval run, so the
    stored outputs are those nbval recomputes.
    """
    out = []
    with kernel_env(STORED_OUTPUT_ENV):
        for name in names or _available():
            src = notebook_dir() / f"{name}.ipynb"
            print(f"==> refreshing {src}", flush=True, file=sys.stderr)
            out.append(run_notebook(name, src))
    return out
