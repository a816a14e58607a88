"""ipywidgets controls for the gap explorer: sliders -> moved embeddings -> live figure.

>>> from tpccma_lib.teaching.explorer import GapExplorer
>>> from tpccma_lib.teaching.widgets import build_explorer_ui
>>> ui = build_explorer_ui(GapExplorer.from_experiment(exp))
>>> ui                                   # in Jupyter: sliders, read-outs and the plot

Every control change calls :meth:`GapExplorer.explore` (closed form, cached) and then
updates the SAME ``go.FigureWidget`` in place (one ``batch_update`` of the trace x/y) and the
read-out table. Slider values are sent on release (``continuous_update=False``), so a drag
costs one update, not dozens. A failing setting (e.g. a post-hoc method that cannot be fitted)
is shown in the read-out instead of raising inside the callback, where Jupyter would hide it.
"""

from __future__ import annotations

import html
import math
import time
from collections.abc import Mapping
from typing import Any

import ipywidgets as widgets

from tpccma_lib.gap.posthoc import POSTHOC_METHODS
from tpccma_lib.teaching.explorer import MIN_POINTS, ExplorerResult, ExplorerSettings, GapExplorer
from tpccma_lib.viz.teaching import explorer_figure, update_explorer_figure

__all__ = ["READOUT_LABELS", "ExplorerUI", "build_explorer_ui", "readout_html"]

#: How the read-out table names each metric (and what "better" means for it).
READOUT_LABELS: dict[str, str] = {
    "raw_gap": "raw gap ‖μ<sub>img</sub> − μ<sub>txt</sub>‖ (lower = closer)",
    "centroid_gap": "centroid gap (= raw gap on the sphere)",
    "distribution_gap": "distribution gap, Bures (lower = same shape)",
    "zero_shot_accuracy": "zero-shot accuracy (higher is better)",
    "clustering_ari": "joint-clustering ARI vs classes (higher is better)",
    "modality_ari": "modality ARI (1 = clusters split by modality)",
}


def _number(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"


def readout_html(metrics: Mapping[str, float], label: str = "", note: str = "") -> str:
    """The read-outs as a small HTML table; each value cell has ``data-metric="<name>"``."""
    rows = "".join(
        f"<tr><td>{text}</td><td class='tpccma-value' data-metric='{name}' "
        f"style='text-align:right;padding-left:1em;font-family:monospace'>"
        f"{_number(metrics.get(name, math.nan))}</td></tr>"
        for name, text in READOUT_LABELS.items()
    )
    head = f"<div style='font-size:90%;color:#555'>{html.escape(label)}</div>" if label else ""
    tail = f"<div style='font-size:85%;color:#777'>{html.escape(note)}</div>" if note else ""
    return f"{head}<table class='tpccma-readout'>{rows}</table>{tail}"


class ExplorerUI(widgets.VBox):
    """Sliders and a dropdown, the read-out table and the live figure, in one box.

    Attributes:
        explorer: the :class:`GapExplorer` behind it.
        controls: ``alpha``, ``centroid_weight``, ``distribution_weight`` (FloatSliders),
            ``method`` (Dropdown over ``POSTHOC_METHODS``), ``n_points`` (IntSlider).
        readout: ``widgets.HTML`` with the read-out table.
        figure: the ``go.FigureWidget``; updated in place.
        result: the explorer state on display.
        last_update_seconds: wall time of the last update (explore + figure + read-out).
    """

    def __init__(self, explorer: GapExplorer, settings: ExplorerSettings | None = None) -> None:
        settings = settings or explorer.default_settings()
        self.explorer = explorer
        slider = {"min": 0.0, "max": 1.0, "step": 0.05, "continuous_update": False,
                  "readout_format": ".2f", "style": {"description_width": "150px"},
                  "layout": widgets.Layout(width="380px")}  # fmt: skip
        methods = ["identity", *sorted(m for m in POSTHOC_METHODS if m != "identity")]
        self.controls: dict[str, widgets.ValueWidget] = {
            "alpha": widgets.FloatSlider(
                value=settings.alpha, description="alpha (close the gap)", **slider
            ),
            "centroid_weight": widgets.FloatSlider(
                value=settings.centroid_weight, description="λc centroid weight", **slider
            ),
            "distribution_weight": widgets.FloatSlider(
                value=settings.distribution_weight, description="λd distribution weight", **slider
            ),
            "method": widgets.Dropdown(
                options=methods,
                value=settings.method,
                description="post-hoc fix",
                style={"description_width": "150px"},
                layout=widgets.Layout(width="380px"),
            ),
            "n_points": widgets.IntSlider(
                value=settings.n_points,
                min=MIN_POINTS,
                max=explorer.n_images,
                step=10,
                description="points drawn",
                continuous_update=False,
                style={"description_width": "150px"},
                layout=widgets.Layout(width="380px"),
            ),
        }
        for name, control in self.controls.items():
            control.add_class(f"tpccma-{name.replace('_', '-')}")
        self.readout = widgets.HTML()
        self.readout.add_class("tpccma-readout-box")
        start = time.perf_counter()
        self.result: ExplorerResult = explorer.explore(settings)
        self.figure = explorer_figure(self.result, widget=True)
        self.last_update_seconds = time.perf_counter() - start
        self._show_readout()
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        panel = widgets.VBox(list(self.controls.values()))
        super().__init__([widgets.HBox([panel, self.readout]), self.figure])
        self.add_class("tpccma-explorer")  # CSS hooks: tpccma-explorer, tpccma-alpha, ...

    def settings(self) -> ExplorerSettings:
        """The settings the controls show now."""
        return ExplorerSettings(**{name: c.value for name, c in self.controls.items()})

    def refresh(self) -> ExplorerResult:
        """Recompute for the current controls and update the figure and read-out in place."""
        start = time.perf_counter()
        self.result = self.explorer.explore(self.settings())
        update_explorer_figure(self.figure, self.result)
        self.last_update_seconds = time.perf_counter() - start
        self._show_readout()
        return self.result

    def _show_readout(self, error: str = "") -> None:
        if error:
            note = f"could not apply this setting: {error}"
        else:
            note = f"updated in {1000 * self.last_update_seconds:.0f} ms"
        self.readout.value = readout_html(self.result.metrics, self.explorer.label, note)

    def _on_change(self, change: Any) -> None:
        try:
            self.refresh()
        except ValueError as exc:  # TeachingError, PosthocError, GeometryError are ValueErrors
            self._show_readout(error=str(exc))


def build_explorer_ui(
    explorer: GapExplorer, settings: ExplorerSettings | None = None
) -> ExplorerUI:
    """The explorer's controls, read-outs and live figure, wired together (an ipywidgets box)."""
    return ExplorerUI(explorer, settings)
