"""Per-move latency of the gap explorer behind notebook 06's sliders (target < 1 s, aim << 0.3 s).

A "move" is one slider change to settings not seen before (no cache hit): the closed-form
move of the captions, renormalisation, the post-hoc fit/transform (if any), the read-outs
(gap metrics, zero-shot, one-seed k-means) and the in-place update of the FigureWidget and the
read-out HTML (``ExplorerUI.refresh``). ``*_ms`` columns are wall time; ``explore_cpu_median_ms``
is the CPU time of this process per move, which is what a move costs on an idle core when the
explorer runs single-threaded (on a shared, busy machine the wall time is several times larger).
Measured for every post-hoc method, with BLAS/OpenMP limited to one thread (the explorer's
default) and unlimited (``--threads-too``).

Data: ``--source synthetic`` (default) draws embeddings of the embedded default's sizes
(1000 test images x 5 captions, 500 validation images x 5, D = 256, 12 classes), so the run
needs no model; ``--source experiment`` uses the real base model's test/val embeddings
(pretrains and caches features first if needed: minutes).

    python benchmarks/bench_widgets.py [--source synthetic|experiment] [--moves 12] [--seed 0]

Writes benchmarks/results/bench_widgets.csv and prints a table (milliseconds).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import time
from pathlib import Path

import numpy as np

from tpccma_lib.embeddings import Embeddings, l2_normalize
from tpccma_lib.gap.posthoc import POSTHOC_METHODS
from tpccma_lib.teaching.explorer import ExplorerSettings, GapExplorer

RESULTS = Path(__file__).resolve().parent / "results" / "bench_widgets.csv"


def synthetic_split(
    rng: np.random.Generator, centers: np.ndarray, offsets: tuple[np.ndarray, np.ndarray],
    n_images: int, captions: int = 5,
) -> Embeddings:  # fmt: skip
    """Images and captions of len(centers) classes with a modality offset, unit rows."""
    n_classes, dim = centers.shape
    labels = np.arange(n_images) % n_classes
    image = centers[labels] + offsets[0] + 0.6 * rng.standard_normal((n_images, dim))
    t2i = np.repeat(np.arange(n_images), captions)
    text = centers[labels[t2i]] + offsets[1] + 0.4 * rng.standard_normal((t2i.size, dim))
    return Embeddings.from_arrays(
        image, text, text_to_image=t2i, image_labels=labels,
        class_names=[f"class{c}" for c in range(n_classes)],
        meta={"dataset": "synthetic-benchmark"},
    )  # fmt: skip


def synthetic_explorer_inputs(seed: int) -> tuple[Embeddings, Embeddings, np.ndarray, str]:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((12, 256)) / np.sqrt(16)
    offsets = (rng.standard_normal(256) / 8, rng.standard_normal(256) / 8)
    test = synthetic_split(rng, centers, offsets, 1000)
    val = synthetic_split(rng, centers, offsets, 500)
    prompts = l2_normalize(centers + offsets[1])
    return test, val, prompts, "synthetic (embedded-default sizes)"


def experiment_explorer_inputs(seed: int) -> tuple[Embeddings, Embeddings, np.ndarray, str]:
    from tpccma_lib.data.config import DataConfig
    from tpccma_lib.evaluation.model_report import zero_shot_class_embeddings
    from tpccma_lib.experiment import Experiment

    exp = Experiment(DataConfig(seed=seed), progress=False)
    model = exp.base_model()
    prompts, _ = zero_shot_class_embeddings(exp, model)
    return exp.embeddings(model, "test"), exp.embeddings(model, "val"), prompts, exp.data.label


def time_moves(explorer: GapExplorer, method: str, moves: int) -> dict[str, float]:
    """Milliseconds per uncached move through the widget (explore + figure + read-out)."""
    from tpccma_lib.teaching.widgets import build_explorer_ui

    ui = build_explorer_ui(explorer, ExplorerSettings(method=method, n_points=200))
    explore_ms, explore_cpu_ms, refresh_ms = [], [], []
    for step in range(moves):
        alpha = round((step + 1) / (moves + 1), 4)  # new settings every time: no cache hit
        start, cpu_start = time.perf_counter(), time.process_time()
        explorer.explore(ExplorerSettings(alpha=alpha, method=method, n_points=200))
        explore_ms.append(1000 * (time.perf_counter() - start))
        explore_cpu_ms.append(1000 * (time.process_time() - cpu_start))
        ui.controls["alpha"].value = round(alpha + 0.5 / (moves + 1), 4)  # another new state
        refresh_ms.append(1000 * ui.last_update_seconds)
    cached = time.perf_counter()
    ui.controls["n_points"].value = 100  # same move, other view: a cache hit
    cached_ms = 1000 * (time.perf_counter() - cached)
    return {
        "explore_median_ms": float(np.median(explore_ms)),
        "explore_max_ms": float(np.max(explore_ms)),
        "explore_cpu_median_ms": float(np.median(explore_cpu_ms)),
        "ui_move_median_ms": float(np.median(refresh_ms)),
        "ui_move_max_ms": float(np.max(refresh_ms)),
        "n_points_only_ms": cached_ms,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("synthetic", "experiment"), default="synthetic")
    parser.add_argument("--moves", type=int, default=12, help="uncached moves per method")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads-too", action="store_true", help="also time unlimited threads")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    load = getattr(os, "getloadavg", lambda: (float("nan"),) * 3)()[0]
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {load:.1f}")  # fmt: skip
    source = synthetic_explorer_inputs if args.source == "synthetic" else experiment_explorer_inputs
    test, val, prompts, label = source(args.seed)
    rows = []
    for threads in (1, None) if args.threads_too else (1,):
        start = time.perf_counter()
        explorer = GapExplorer(test, prompts, val, seed=args.seed, threads=threads, label=label)
        init_ms = 1000 * (time.perf_counter() - start)
        for method in POSTHOC_METHODS:
            row = {"data": label, "threads": threads or "all", "method": method,
                   "init_ms": round(init_ms, 1)}  # fmt: skip
            row.update(
                {k: round(v, 1) for k, v in time_moves(explorer, method, args.moves).items()}
            )
            rows.append(row)
            print("  ".join(f"{k}={v}" for k, v in row.items() if k != "data"), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    for threads in dict.fromkeys(r["threads"] for r in rows):
        mine = [r for r in rows if r["threads"] == threads]
        median = float(np.median([r["ui_move_median_ms"] for r in mine]))
        worst = max(r["ui_move_max_ms"] for r in mine)
        print(f"threads={threads}: per-move latency through the widget, median over methods "
              f"{median:.0f} ms, worst {worst:.0f} ms (target < 1000 ms)")  # fmt: skip
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
