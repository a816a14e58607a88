"""What every notebook does first, in one call: seed, display settings, artefact folders.

>>> from tpccma_lib.notebook import setup_notebook, show
>>> paths = setup_notebook(seed=0)       # seeds numpy/torch/random, plotly + pandas display
>>> show(frame)                          # a table with numbers rounded for nbval

Printed numbers are rounded to ``PRECISION`` decimals so that a stored notebook output
changes only when a result really changes (nbval compares them); plotly figures use the
JSON mimetype renderer (no random div ids).
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["PRECISION", "NotebookPaths", "setup_notebook", "show", "fmt", "repo_root"]

#: Decimals of every number a notebook prints (what nbval compares).
PRECISION = 3


def repo_root() -> Path:
    """The repository folder (parent of ``tpccma_lib``)."""
    return Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class NotebookPaths:
    """Where a notebook reads and writes its artefacts."""

    runs: Path  # checkpoints and training runs (``$TPCCMA_RUNS`` or <repo>/runs)
    reports: Path  # figures and tables for the report (``$TPCCMA_REPORTS`` or <repo>/reports)


def setup_notebook(seed: int = 0, threads: int | None = None) -> NotebookPaths:
    """Seed every generator, fix display settings, and return the artefact folders.

    Args:
        seed: seeds ``random``, numpy's global generator and torch.
        threads: torch intra-op threads (default: ``$TPCCMA_THREADS`` or torch's default).
    """
    import pandas as pd
    import plotly.io as pio
    import torch

    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeds legacy global-state code a notebook may call
    torch.manual_seed(seed)
    threads = threads or int(os.environ.get("TPCCMA_THREADS", "0")) or None
    if threads:
        torch.set_num_threads(threads)
    pio.renderers.default = "plotly_mimetype"
    pd.set_option("display.precision", PRECISION)
    pd.set_option("display.width", 120)
    pd.set_option("display.max_columns", 30)
    # No HF_HUB_OFFLINE here: the full reproduction's first run downloads open_clip weights
    # (the embedded towers set offline mode themselves when they load).
    root = repo_root()
    runs = Path(os.environ.get("TPCCMA_RUNS", root / "runs"))
    reports = Path(os.environ.get("TPCCMA_REPORTS", root / "reports"))
    runs.mkdir(parents=True, exist_ok=True)
    reports.mkdir(parents=True, exist_ok=True)
    return NotebookPaths(runs=runs, reports=reports)


def fmt(value: Any, precision: int = PRECISION) -> str:
    """A number as text with ``precision`` decimals (ints and strings unchanged)."""
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = round(float(value), precision)
        return f"{0.0 if v == 0 else v:.{precision}f}"
    return str(value)


def show(frame: Any, precision: int = PRECISION) -> Any:
    """Print a DataFrame (or dict of numbers) with numbers rounded; return it for chaining."""
    import pandas as pd

    if isinstance(frame, dict):
        frame = pd.DataFrame([frame])
    text = frame.to_string(index=False, float_format=lambda v: fmt(v, precision))
    print(text)
    return None
