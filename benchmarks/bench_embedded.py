"""Embedded default on this machine: frozen-tower throughput and base-model pretraining time.

    python benchmarks/bench_embedded.py [--images 512] [--captions 2048] [--threads 2]

Measures, in one run:
* EfficientNet-Lite0 feature extraction, images/s at the data's size (64 px by default);
* MiniLM sentence embedding, sentences/s on captured-shapes captions;
* rendering of the captioned shapes, images/s;
* wall time of ``tpccma pretrain``'s training (cached features, PRETRAIN_CONFIG) on the
  default 3000-image train split, features excluded.
Writes ``benchmarks/results/bench_embedded.csv``.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from tpccma_lib.data import make_captioned_shapes
from tpccma_lib.data.config import DataConfig
from tpccma_lib.experiment import PRETRAIN_CONFIG, Experiment
from tpccma_lib.models import ModelConfig, create_model
from tpccma_lib.training.loop import train

RESULTS = Path(__file__).parent / "results"


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--captions", type=int, default=2048)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip-pretrain", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    rows = []
    ds, t_render = timed(make_captioned_shapes, "test", args.images, args.image_size, 123)
    rows.append(("render captioned shapes", args.images / t_render, "images/s"))

    model = create_model(ModelConfig(image_size=args.image_size))
    model.image_inputs([ds.images[0]])  # load weights outside the timing
    model.text_inputs(["warm up"])
    _, t_img = timed(
        lambda: [model.image_inputs(list(ds.images[s : s + 64])) for s in range(0, len(ds), 64)]
    )
    rows.append(
        (f"EfficientNet-Lite0 features ({args.image_size} px)", args.images / t_img, "images/s")
    )
    texts, _ = ds.flat_captions()
    texts = (texts * (args.captions // len(texts) + 1))[: args.captions]
    _, t_txt = timed(
        lambda: [model.text_inputs(texts[s : s + 256]) for s in range(0, len(texts), 256)]
    )
    rows.append(("MiniLM-L6 sentence embeddings", args.captions / t_txt, "sentences/s"))

    if not args.skip_pretrain:
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["TPCCMA_CACHE"] = str(Path(tmp) / "cache")  # time the features for real
            exp = Experiment(DataConfig(), runs_dir=tmp, progress=False)
            fresh = exp.new_model()
            source, t_feat = timed(exp.input_source, fresh, "train")
            rows.append(("features of the 3000-image train split (cached after)", t_feat, "s"))
            _, t_pre = timed(
                train, fresh, source, PRETRAIN_CONFIG, Path(tmp) / "base", progress=False
            )
            rows.append(
                (
                    f"pretrain heads ({PRETRAIN_CONFIG.steps} steps, batch {PRETRAIN_CONFIG.batch_size})",
                    t_pre,
                    "s",
                )
            )

    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "bench_embedded.csv"
    with open(out, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["what", "value", "unit", "torch_threads", "machine"])
        for what, value, unit in rows:
            w.writerow(
                [
                    what,
                    f"{value:.2f}",
                    unit,
                    args.threads,
                    platform.processor() or platform.machine(),
                ]
            )
    width = max(len(r[0]) for r in rows)
    print(f"embedded default on {os.cpu_count()} cores, torch threads {args.threads}")
    for what, value, unit in rows:
        print(f"  {what:<{width}}  {value:10.1f} {unit}")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
