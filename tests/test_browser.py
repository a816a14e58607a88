"""Notebook 06's live explorer in a real browser: JupyterLab + headless Chromium (Playwright).

Starts JupyterLab on 127.0.0.1 (free port, random token, ``--allow-root --no-browser``) with a
temporary copy of ``notebooks/`` as its root, so the repository is never modified; the kernel is
this venv's ``python3``. In the copy, notebook 06 runs with ``smoke = True`` (tiny splits: the
test's own base model is pretrained in the test's temporary folders in about a minute). Chromium
opens the notebook, runs all cells from the Run menu, waits for the explorer widget, moves the
alpha slider with the keyboard and checks that the gap read-out and the plotted points changed.
A screenshot goes to ``runs/test-artifacts/browser_test.png`` (ignored by git). The server is shut down in ``finally``.

Skipped only when ``/usr/bin/chromium`` (Debian's chromium; ``scripts/setup.sh --browser``) or
the ``playwright`` package is missing.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nbformat
import pytest

from tpccma_lib.notebook import repo_root

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = repo_root()
CHROMIUM = Path("/usr/bin/chromium")
NOTEBOOK = "06_teaching_the_gap.ipynb"
SCREENSHOT = ROOT / "runs" / "test-artifacts" / "browser_test.png"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SERVER_START_S = 120  # JupyterLab up and answering
RUN_ALL_S = 600  # every cell run, widget shown (includes the smoke base model's pretraining)
UPDATE_S = 60  # a slider move reaches the read-out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _prepare_root(tmp: Path) -> Path:
    """A copy of notebooks/ whose notebook 06 has smoke = True in its parameters cell."""
    root = tmp / "notebooks"
    shutil.copytree(ROOT / "notebooks", root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    path = root / NOTEBOOK
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    assert "smoke = False" in cell.source, "notebook 06's parameters cell must set smoke = False"
    cell.source = cell.source.replace("smoke = False", "smoke = True")
    for c in nb.cells:  # start from a clean page: no stale outputs to match against
        if c.cell_type == "code":
            c.outputs, c.execution_count = [], None
    nbformat.write(nb, path)
    return root


def _server_env(tmp: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(tmp / "jupyter-config"),
        JUPYTER_RUNTIME_DIR=str(tmp / "jupyter-runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(tmp / "lab-settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(tmp / "lab-workspaces"),
        TPCCMA_THREADS="1",
    )
    # TPCCMA_RUNS / TPCCMA_CACHE come from tests/conftest.py: temporary, never the repo's.
    return env


def _wait_for_server(url: str, token: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {proc.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=5) as reply:
                if reply.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1.0)
    raise TimeoutError(f"JupyterLab did not answer in {SERVER_START_S} s:\n{log.read_text()}")


def _shutdown(url: str, token: str, proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    try:
        request = urllib.request.Request(
            f"{url}/api/shutdown", method="POST", headers={"Authorization": f"token {token}"}
        )
        urllib.request.urlopen(request, timeout=10).close()
        proc.wait(timeout=30)
    except Exception:  # noqa: BLE001 - fall back to signals whatever went wrong
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _point_positions(page) -> list[str]:
    """Transforms of the plotted points of every trace in the explorer's plotly figure."""
    return page.eval_on_selector_all(
        ".tpccma-explorer .js-plotly-plot .scatterlayer .trace path.point",
        "nodes => nodes.map(n => n.getAttribute('transform'))",
    )


def _raw_gap(page) -> str:
    return page.inner_text(".tpccma-explorer [data-metric='raw_gap']").strip()


def _alpha(page) -> str:
    return page.inner_text(".tpccma-alpha .widget-readout").strip()


def _accept_kernel_dialog(page) -> None:
    """Accept JupyterLab's "Select Kernel" dialog (python3 preselected) if it shows up."""
    accept = page.locator(".jp-Dialog .jp-mod-accept")
    try:
        accept.wait_for(state="visible", timeout=15_000)
    except Exception:  # noqa: BLE001 - no dialog: the kernel started on its own
        return
    accept.click()
    page.wait_for_selector(".jp-Dialog", state="detached", timeout=15_000)


def _diagnose(page, log: Path) -> str:
    """What the page and the server show when a step failed (screenshot saved beside)."""
    failure = SCREENSHOT.with_name("browser_test_failure.png")
    failure.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(failure), full_page=True)
    errors = page.eval_on_selector_all(
        ".jp-OutputArea-output[data-mime-type*='stderr'], .jp-OutputArea-output[data-mime-type*='error']",
        "nodes => nodes.map(n => n.innerText.slice(-2000))",
    )
    prompts = page.eval_on_selector_all(
        ".jp-InputArea-prompt", "nodes => nodes.map(n => n.innerText.trim())"
    )
    return (
        f"browser step failed; screenshot {failure}\ncell prompts: {prompts}\n"
        f"error outputs: {errors}\nserver log (tail):\n{log.read_text()[-3000:]}"
    )


def test_alpha_slider_moves_points_and_gap_in_jupyterlab(tmp_path):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (scripts/setup.sh --browser)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")

    root = _prepare_root(tmp_path)
    port, token = _free_port(), secrets.token_hex(16)
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "jupyterlab.log"
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    with open(log, "w") as log_file:
        proc = subprocess.Popen(
            command, cwd=root, env=_server_env(tmp_path), stdout=log_file, stderr=subprocess.STDOUT
        )
    try:
        _wait_for_server(url, token, proc, log)
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1100})
                page.goto(f"{url}/lab/tree/{NOTEBOOK}?token={token}", timeout=90_000)
                page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=90_000)
                _accept_kernel_dialog(page)
                page.wait_for_selector(
                    ".jp-NotebookPanel-toolbar .jp-Notebook-ExecutionIndicator[data-status='idle']",
                    timeout=90_000,
                )
                try:
                    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
                    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()

                    page.wait_for_selector(
                        ".tpccma-explorer .tpccma-alpha", timeout=RUN_ALL_S * 1000
                    )
                    page.wait_for_selector(
                        ".tpccma-explorer .js-plotly-plot .scatterlayer .trace path.point",
                        timeout=UPDATE_S * 1000,
                    )
                    page.locator(".tpccma-explorer").scroll_into_view_if_needed()
                    gap_before, points_before = _raw_gap(page), _point_positions(page)
                    assert gap_before not in ("", "n/a") and float(gap_before) > 0
                    assert _alpha(page) == "0.00"

                    handle = page.locator(".tpccma-alpha .noUi-handle")
                    handle.focus()
                    for _ in range(10):  # step 0.05 each: alpha 0 -> 0.5
                        page.keyboard.press("ArrowRight")
                    page.wait_for_function(
                        """([selector, before]) => {
                            const cell = document.querySelector(selector);
                            return cell !== null && cell.textContent.trim() !== before;
                        }""",
                        arg=[".tpccma-explorer [data-metric='raw_gap']", gap_before],
                        timeout=UPDATE_S * 1000,
                    )
                    page.wait_for_timeout(1000)  # let plotly finish redrawing the moved points
                    gap_after, points_after = _raw_gap(page), _point_positions(page)
                    alpha_after = _alpha(page)
                    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(SCREENSHOT), full_page=False)
                except Exception as exc:
                    raise AssertionError(_diagnose(page, log)) from exc
            finally:
                browser.close()
    finally:
        _shutdown(url, token, proc)

    assert float(alpha_after) > 0.0, f"the alpha slider did not move (shows {alpha_after})"
    assert float(gap_after) < float(gap_before), (gap_before, gap_after)
    assert len(points_after) == len(points_before) > 0
    moved = sum(a != b for a, b in zip(points_before, points_after, strict=True))
    assert moved > len(points_before) // 4, f"only {moved} of {len(points_before)} points moved"
    assert SCREENSHOT.stat().st_size > 10_000
