"""Time :func:`tpccma_lib.gap.metrics.decompose` from N = 1e3 to 1e6 (D = 512, float32).

Each time is reported as a ratio to one N x D covariance product (X^T X of the image matrix
in float64, blocked like ``decompose``), measured in the same run on the same data, so the
ratio is comparable across machines. Also reports the process's peak resident memory.

    python benchmarks/bench_geometry.py [--max-n 1000000] [--dim 512] [--seed 0]

Writes benchmarks/results/bench_geometry.csv and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np

from tpccma_lib import Embeddings
from tpccma_lib.gap.metrics import DEFAULT_BLOCK_ROWS, decompose

RESULTS = Path(__file__).resolve().parent / "results" / "bench_geometry.csv"


def synthetic_unit_rows(
    rng: np.random.Generator, n: int, dim: int, center: np.ndarray, scale: float
) -> np.ndarray:
    """(n, dim) float32 rows ~ normalise(center + scale * N(0, I)), built block by block."""
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, DEFAULT_BLOCK_ROWS):
        stop = min(start + DEFAULT_BLOCK_ROWS, n)
        block = rng.standard_normal((stop - start, dim), dtype=np.float32)
        block *= scale
        block += center
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:stop] = block
    return out


def synthetic_embeddings(n: int, dim: int, seed: int) -> Embeddings:
    """N images and N captions (1:1) on the unit sphere with a clear modality gap."""
    rng = np.random.default_rng(seed)
    direction = rng.standard_normal(dim).astype(np.float32)
    direction /= np.linalg.norm(direction)
    image = synthetic_unit_rows(rng, n, dim, 0.6 * direction, 1.0 / np.sqrt(dim))
    text = synthetic_unit_rows(rng, n, dim, -0.4 * direction, 0.7 / np.sqrt(dim))
    return Embeddings(
        image=image,
        text=text,
        text_to_image=np.arange(n),
        image_labels=np.full(n, -1),
        meta={"dataset": "synthetic-benchmark", "seed": seed},
    )


def covariance_product_seconds(x: np.ndarray) -> float:
    """Wall time of X^T X in float64 (blocked, no float64 copy of the whole matrix)."""
    start = time.perf_counter()
    gram = np.zeros((x.shape[1], x.shape[1]))
    for row in range(0, x.shape[0], DEFAULT_BLOCK_ROWS):
        block = x[row : row + DEFAULT_BLOCK_ROWS].astype(np.float64)
        gram += block.T @ block
    return time.perf_counter() - start


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def run(max_n: int, dim: int, seed: int) -> list[dict[str, object]]:
    decompose(synthetic_embeddings(100, dim, seed))  # warm-up: imports (scikit-learn) untimed
    rows = []
    sizes = [n for n in (1_000, 10_000, 100_000, 1_000_000) if n <= max_n]
    for n in sizes:
        emb = synthetic_embeddings(n, dim, seed)
        repeats = 3 if n <= 10_000 else 1
        reference = min(covariance_product_seconds(emb.image) for _ in range(repeats))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            result = decompose(emb, seed=seed)
            times.append(time.perf_counter() - start)
        elapsed = min(times)
        rows.append(
            {
                "n": n,
                "dim": dim,
                "decompose_s": round(elapsed, 3),
                "xtx_float64_s": round(reference, 3),
                "ratio": round(elapsed / reference, 2),
                "peak_rss_gb": round(peak_rss_gb(), 2),
                "mmd_estimator": result.mmd_estimator,
                "centroid_gap": round(result.centroid_gap, 4),
                "distribution_gap": round(result.distribution_gap, 4),
                "separability": round(result.separability_accuracy, 4),
            }
        )
        print_row(rows[-1], header=len(rows) == 1)
        del emb
    return rows


def print_row(row: dict[str, object], header: bool) -> None:
    widths = {key: max(len(key), 10) for key in row}
    if header:
        print("  ".join(key.rjust(widths[key]) for key in row))
    print("  ".join(str(value).rjust(widths[key]) for key, value in row.items()), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-n", type=int, default=1_000_000, help="largest N (of 1e3..1e6)")
    parser.add_argument("--dim", type=int, default=512, help="embedding dimension D")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data")
    parser.add_argument("--out", type=Path, default=RESULTS, help="CSV file to write")
    args = parser.parse_args(argv)
    print(
        f"decompose benchmark: D={args.dim}, float32 unit rows, N images + N captions; "
        f"{os.cpu_count()} CPU(s), {platform.processor() or platform.machine()}, "
        f"numpy {np.__version__}"
    )
    rows = run(args.max_n, args.dim, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
