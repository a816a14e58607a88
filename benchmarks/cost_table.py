"""What the full reproduction costs: per-batch seconds of ViT-B-32, times the work of each stage.

Run from the repository root::

    .venv/bin/python benchmarks/cost_table.py                        # this CPU, batch 8, ~3 min
    .venv/bin/python benchmarks/cost_table.py --device cuda --amp bf16 --batch 256   # a GPU
    .venv/bin/python benchmarks/cost_table.py --smoke --out /tmp/cost.csv   # TinyCLIP-test, ~10 s

**What is measured** (open_clip ``ViT-B-32`` with random weights, no download; 224 px inputs;
the median of ``--repeats`` timings after ``--warmup`` untimed ones; on CUDA the clock
synchronises first):

- ``image_encode``: ``encode_image`` of a batch of ``--batch`` preprocessed images, no gradient;
- ``text_encode``: ``encode_text`` of a batch of ``--batch`` tokenised captions (77 tokens);
- ``train_clip``: one step of :func:`tpccma_lib.training.loop.train` with the contrastive loss
  only (forward of both towers, loss, backward, gradient clipping, AdamW): the fine-tune's steps
  whose alpha is 0 (curriculum phase 1, and every step of an ``alpha_target = 0`` run);
- ``train_tpccma``: one step of the same trainer with ``L_clip + alpha L_CMA`` and the
  gradient-aware scheduler measuring on every step (``FINETUNE_CONFIG``'s default: two backward
  passes), the fine-tune's steps whose alpha is above 0;
- ``decode_jpeg``: one 640x480 JPEG (synthetic, written to a temporary folder) opened, decoded
  to RGB and preprocessed to a 224 px tensor (``load_rgb`` + the model's ``image_inputs``: the
  path COCO images take), one torch thread (= one DataLoader worker); batch 1;
- ``decode_cifar``: one 32x32 CIFAR-10 array preprocessed to a 224 px tensor, one thread.

**Stages** (:func:`stage_rows`): the measured seconds times the items each stage processes, from
the full reproduction in README ("Full reproduction on a GPU machine"): COCO Karpathy split
(test 5,000 images, val ``DataConfig.n_val`` images, train 113,287 images, ``captions_per_image``
= 5 captions each), CIFAR-10 test (10,000 images, 10 classes x 18 prompt templates), a
fine-tune of ``FINETUNE_CONFIG.steps`` steps of ``FINETUNE_CONFIG.batch_size`` pairs, and the
default sweep (:data:`tpccma_lib.app.readme.DEFAULT_GRID`: 7 alpha x 2 seeds). An operation's
hours in a stage are ``items / batch * s_per_batch / 3600``. A stage's wall time: on a CPU the
sum of its operations (decoding and the model share the same cores); on a GPU
``max(model hours, decoding hours / --workers)`` (decoding overlaps in DataLoader workers).
``tpccma report`` counts one fine-tune (the ``tpccma train`` run that notebooks 03/04 reuse)
and the evaluation of the base and the fine-tuned model; notebook 05's three runs inside it are
counted once, in the sweep (which skips finished runs). Not counted: the text-only caption
decoder's training, post-hoc fixes and metrics (work on embeddings), checkpoint writes, and
embeddings that notebooks 01, 02 and 06 compute again.

Results: ``benchmarks/results/cost_vitb32_<device>.csv``; ``--update-readme`` then rewrites
README's ``cost`` block (:func:`tpccma_lib.app.readme.update_cost_section`).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import inspect
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
if str(ROOT) not in sys.path:  # tpccma_lib from this checkout when it is not installed
    sys.path.insert(0, str(ROOT))

# ---------------------------------------------------------------- the work of the reproduction
#: COCO Karpathy split (Karpathy & Fei-Fei 2015; the counts of its dataset_coco.json): "train"
#: is its train (82,783) + restval (30,504) images; test and val are 5,000 images each.
COCO_TRAIN_IMAGES = 113_287
COCO_TEST_IMAGES = 5_000
CIFAR10_TEST_IMAGES = 10_000
CIFAR10_CLASSES = 10

COLUMNS = [
    "kind",  # measured | component | stage
    "stage",  # stage name (component, stage rows)
    "operation",  # measured operation (measured, component rows)
    "what",  # what the row covers, in words
    "items",  # component: items the stage runs through the operation
    "batch",  # items per measured batch
    "s_per_batch",  # median seconds per batch (measured; copied into components)
    "hours",  # component: items / batch * s_per_batch / 3600; stage: its wall time
    "device",
    "device_name",
    "amp",
    "model",
    "image_size",
    "threads",
    "workers",
    "torch",
    "measured_at",
    "timings",  # measured: "median of N after W warm-up"
    "load_avg",  # 1-minute load average of the machine before / after measuring
    "note",
]

#: Operation -> what it is ({size}: the model's input px, {tokens}: its context length,
#: {jpeg_kb}: mean size of the JPEGs timed).
OPERATIONS = {
    "image_encode": "image encoding, {size} px, no gradient",
    "text_encode": "caption encoding, {tokens} tokens, no gradient",
    "train_clip": "training step, contrastive only (alpha = 0)",
    "train_tpccma": "training step, TPC-CMA (L_clip + alpha L_CMA, two backward passes)",
    "decode_jpeg": "640x480 JPEG ({jpeg_kb} KB) decode + preprocess to {size} px, 1 CPU worker",
    "decode_cifar": "CIFAR-10 32 px image preprocess to {size} px, 1 CPU worker",
}
DECODING = ("decode_jpeg", "decode_cifar")


def reproduction_work() -> dict[str, Any]:
    """The sizes the stages are made of, read from the library's defaults where it has them."""
    from tpccma_lib.app.readme import DEFAULT_GRID
    from tpccma_lib.data.cifar10 import CIFAR10_PROMPT_TEMPLATES
    from tpccma_lib.data.coco import load_coco_karpathy
    from tpccma_lib.data.config import DataConfig
    from tpccma_lib.experiment import FINETUNE_CONFIG
    from tpccma_lib.training.curriculum import alpha_at

    captions = inspect.signature(load_coco_karpathy).parameters["captions_per_image"].default
    cfg = FINETUNE_CONFIG
    alphas, seeds = DEFAULT_GRID

    def contrastive_steps(alpha: float) -> int:  # steps whose alpha is 0: one backward pass
        cur = type(cfg)(**{**cfg.to_dict(), "alpha_target": alpha}).curriculum()
        return sum(alpha_at(s, cfg.steps, cur) <= 0 for s in range(cfg.steps))

    return {
        "captions_per_image": int(captions),
        "coco_test": COCO_TEST_IMAGES,
        "coco_val": DataConfig().n_val,
        "coco_train": COCO_TRAIN_IMAGES,
        "cifar_test": CIFAR10_TEST_IMAGES,
        "prompts": CIFAR10_CLASSES * len(CIFAR10_PROMPT_TEMPLATES),
        "templates": len(CIFAR10_PROMPT_TEMPLATES),
        "steps": cfg.steps,
        "train_batch": cfg.batch_size,
        "finetune_alpha": cfg.alpha_target,
        "finetune_contrastive_steps": contrastive_steps(cfg.alpha_target),
        "sweep": [(a, s, contrastive_steps(a)) for a in alphas for s in seeds],
        "sweep_alphas": len(alphas),
        "sweep_seeds": len(seeds),
    }


def _evaluation(w: dict[str, Any], models: int) -> dict[str, int]:
    """Operation -> items of embedding everything one evaluation embeds, for ``models`` models."""
    c = w["captions_per_image"]
    return {
        "image_encode": models * (w["coco_test"] + w["coco_val"] + w["cifar_test"]),
        "text_encode": models
        * ((w["coco_test"] + w["coco_val"] + w["coco_train"]) * c + w["prompts"]),
        "decode_jpeg": models * (w["coco_test"] + w["coco_val"]),
        "decode_cifar": models * w["cifar_test"],
    }


def _finetunes(w: dict[str, Any], contrastive_steps: list[int]) -> dict[str, int]:
    """Operation -> items of fine-tunes with these numbers of contrastive-only steps each."""
    b, steps = w["train_batch"], w["steps"]
    return {
        "train_clip": b * sum(contrastive_steps),
        "train_tpccma": b * sum(steps - k for k in contrastive_steps),
        "decode_jpeg": b * steps * len(contrastive_steps),
    }


def _plus(*parts: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in parts:
        for op, n in part.items():
            out[op] = out.get(op, 0) + n
    return out


def stages(w: dict[str, Any]) -> list[tuple[str, str, dict[str, int]]]:
    """(stage, what it covers, operation -> items) for every row of the cost table."""
    c, sweep = w["captions_per_image"], w["sweep"]
    n_sweep, b, steps = len(sweep), w["train_batch"], w["steps"]
    one_eval = _evaluation(w, 1)
    finetune = _finetunes(w, [w["finetune_contrastive_steps"]])
    sweep_work = _plus(
        _finetunes(w, [k for _, _, k in sweep]), _evaluation(w, n_sweep + w["sweep_seeds"])
    )
    train_report = _plus(finetune, _evaluation(w, 2))
    return [
        (
            "embed COCO test",
            f"{w['coco_test']:,} images + {w['coco_test'] * c:,} captions, per model",
            {
                "image_encode": w["coco_test"],
                "text_encode": w["coco_test"] * c,
                "decode_jpeg": w["coco_test"],
            },
        ),
        (
            "embed COCO val",
            f"{w['coco_val']:,} images + {w['coco_val'] * c:,} captions (post-hoc fits), per model",
            {
                "image_encode": w["coco_val"],
                "text_encode": w["coco_val"] * c,
                "decode_jpeg": w["coco_val"],
            },
        ),
        (
            "embed CIFAR-10 test",
            f"{w['cifar_test']:,} images + {w['prompts']} prompts ({CIFAR10_CLASSES} classes x "
            f"{w['templates']} templates), per model",
            {
                "image_encode": w["cifar_test"],
                "text_encode": w["prompts"],
                "decode_cifar": w["cifar_test"],
            },
        ),
        (
            "embed COCO train captions",
            f"{w['coco_train'] * c:,} captions ({w['coco_train']:,} images x {c}) for the "
            "text-only decoder, per model",
            {"text_encode": w["coco_train"] * c},
        ),
        ("evaluate one model", "the four embeddings above", one_eval),
        (
            "fine-tune one run",
            f"{steps} steps x {b} pairs, images decoded every step (alpha_target "
            f"{w['finetune_alpha']:g}: {w['finetune_contrastive_steps']} contrastive-only steps)",
            finetune,
        ),
        (
            "`tpccma train` + `tpccma report`",
            f"one fine-tune (alpha_target {w['finetune_alpha']:g}), evaluations of the base and "
            "the fine-tuned model",
            train_report,
        ),
        (
            "`tpccma sweep`",
            f"{n_sweep} fine-tunes ({w['sweep_alphas']} alpha x {w['sweep_seeds']} seeds), their "
            f"{n_sweep} evaluations and {w['sweep_seeds']} of the base model (one per seed)",
            sweep_work,
        ),
        ("full reproduction", "the two rows above", _plus(train_report, sweep_work)),
    ]


def component_hours(items: int, batch: int, s_per_batch: float) -> float:
    """Hours to run ``items`` items through an operation measured at ``s_per_batch`` per batch."""
    return items / batch * s_per_batch / 3600.0


def wall_hours(components: dict[str, float], device: str, workers: int) -> float:
    """A stage's wall time from its operations' hours (see the module docstring)."""
    decode = sum(h for op, h in components.items() if op in DECODING)
    model = sum(h for op, h in components.items() if op not in DECODING)
    if device.startswith("cuda"):
        return max(model, decode / workers)
    return model + decode


def stage_rows(
    measured: dict[str, tuple[int, float]],
    work: dict[str, Any],
    device: str,
    workers: int = 1,
    labels: dict[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Component and stage rows from ``measured`` (operation -> (batch, median s per batch));
    ``labels``: operation -> what it is (default: the operation's name)."""
    labels = labels or {}
    rows: list[dict[str, Any]] = []
    for stage, what, ops in stages(work):
        hours = {}
        for op, items in ops.items():
            batch, s = measured[op]
            hours[op] = component_hours(items, batch, s)
            rows.append(
                {
                    "kind": "component",
                    "stage": stage,
                    "operation": op,
                    "what": labels.get(op, op),
                    "items": items,
                    "batch": batch,
                    "s_per_batch": s,
                    "hours": hours[op],
                }
            )
        rows.append(
            {
                "kind": "stage",
                "stage": stage,
                "what": what,
                "hours": wall_hours(hours, device, workers),
            }
        )
    return rows


# ---------------------------------------------------------------- measuring
def model_sizes(name: str) -> tuple[int, int]:
    """(input px, context length in tokens) of open_clip model ``name``, from its config."""
    import open_clip

    from tpccma_lib.models.open_clip_backend import register_bundled_configs

    register_bundled_configs()
    cfg = open_clip.get_model_config(name)
    size = cfg["vision_cfg"]["image_size"]
    size = size[0] if isinstance(size, (tuple, list)) else size
    return int(size), int(cfg["text_cfg"].get("context_length", 77))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def timed(fn: Callable[[], Any], warmup: int, repeats: int, device: torch.device) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return out


def write_jpegs(folder: Path, n: int, seed: int) -> list[Path]:
    """``n`` 640x480 JPEGs (quality 90) of colour gradients, shapes and pixel noise: about
    140 KB each, near COCO 2014's mean file size (13.5 GB / 82,783 train images, ~160 KB)."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:480, 0:640].astype(np.float32)
    paths = []
    for i in range(n):
        base = rng.uniform(0, 255, 3) + rng.uniform(-0.2, 0.2, 3) * xx[..., None] / 2
        base = base + rng.uniform(-0.2, 0.2, 3) * yy[..., None] / 2
        base = base + rng.normal(0, 20, (480, 640, 3))
        image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(12):
            x0, y0 = int(rng.integers(0, 560)), int(rng.integers(0, 400))
            box = (x0, y0, x0 + int(rng.integers(20, 200)), y0 + int(rng.integers(20, 200)))
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            (draw.ellipse if i % 2 else draw.rectangle)(box, fill=colour)
        path = folder / f"{i:03d}.jpg"
        image.save(path, quality=90)
        paths.append(path)
    return paths


def train_step_times(
    model: Any, image: torch.Tensor, text: torch.Tensor, cfg: Any, warmup: int
) -> list[float]:
    """Durations of the steps of :func:`tpccma_lib.training.loop.train` after ``warmup``: the
    gaps between successive batch fetches (the trainer fetches one batch per step), the last
    step ending at the final evaluation callback; on CUDA the clock synchronises first.
    Checkpoint writes are switched off (they fall outside the timed steps anyway)."""
    from unittest import mock

    from tpccma_lib.training.loop import InputSource, train

    stamps: list[float] = []

    def stamp() -> None:
        if image.device.type == "cuda":
            torch.cuda.synchronize(image.device)
        stamps.append(time.perf_counter())

    def image_fn(idx: np.ndarray) -> torch.Tensor:
        stamp()
        return image[torch.as_tensor(idx, device=image.device)]

    def end_of_run(model: Any, step: int) -> dict[str, float]:
        stamp()
        return {}

    def text_fn(idx: np.ndarray) -> torch.Tensor:
        return text[torch.as_tensor(idx, device=text.device)]

    n = image.shape[0]
    source = InputSource(image_fn, text_fn, np.arange(n, dtype=np.int64), n)
    with (
        tempfile.TemporaryDirectory() as out,
        mock.patch("tpccma_lib.models.factory.atomic_torch_save"),
    ):
        train(model, source, cfg, out, resume=False, progress=False, eval_fn=end_of_run)
    stamps = stamps[warmup:]
    return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


def train_configs(args: argparse.Namespace) -> dict[str, Any]:
    """``FINETUNE_CONFIG`` at batch ``--batch`` for the two kinds of step: contrastive only
    (``train_clip``) and every step in curriculum phase 3 (``train_tpccma``)."""
    from dataclasses import replace

    from tpccma_lib.experiment import FINETUNE_CONFIG

    common = dict(
        steps=args.warmup + args.repeats,
        batch_size=args.batch,
        lr=1e-5,  # small: random-init weights stay finite; the value does not change the cost
        warmup_steps=1,
        amp=args.amp,
        device=args.device,
        seed=args.seed,
        checkpoint_every=10**9,
        log_every=10**9,
        eval_every=0,
    )
    return {
        "train_clip": replace(FINETUNE_CONFIG, alpha_target=0.0, gradient_aware=False, **common),
        "train_tpccma": replace(FINETUNE_CONFIG, warmup_fraction=0.0, ramp_fraction=0.0, **common),
    }


def measure(
    args: argparse.Namespace,
) -> tuple[dict[str, tuple[int, float]], dict[str, str], dict[str, Any]]:
    """Operation -> (batch, median seconds per batch), a note per operation, and the sizes
    :data:`OPERATIONS` names."""
    from tpccma_lib.data.base import load_rgb
    from tpccma_lib.models import ModelConfig, create_model

    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    model = create_model(ModelConfig(backend="open_clip", name=args.model, pretrained=None))
    model.to(device)
    size, _ = model_sizes(args.model)
    g = torch.Generator().manual_seed(args.seed)
    pixels = torch.randn(args.batch, 3, size, size, generator=g).to(device)
    captions = [
        f"a photo of {i % 4 + 1} dogs playing with a red ball, number {i}"
        for i in range(args.batch)
    ]
    tokens = model.text_inputs(captions).to(device)
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(args.amp)
    autocast = torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None)
    measured: dict[str, tuple[int, float]] = {}
    notes: dict[str, str] = {}

    def record(op: str, batch: int, times: list[float], note: str = "") -> None:
        measured[op] = (batch, statistics.median(times))
        notes[op] = note
        print(
            f"  {op:13s} batch {batch:4d}  {statistics.median(times):9.4f} s/batch  "
            f"(runs: {', '.join(f'{t:.4f}' for t in times)})",
            flush=True,
        )

    model.eval()
    with torch.no_grad(), autocast:
        record(
            "image_encode",
            args.batch,
            timed(lambda: model.encode_image_inputs(pixels), args.warmup, args.repeats, device),
        )
        record(
            "text_encode",
            args.batch,
            timed(lambda: model.encode_text_inputs(tokens), args.warmup, args.repeats, device),
        )
    for op, cfg in train_configs(args).items():
        times = train_step_times(model, pixels, tokens, cfg, args.warmup)
        record(op, args.batch, times, "tpccma_lib.training.loop.train, FINETUNE_CONFIG")

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one DataLoader worker
    try:
        with tempfile.TemporaryDirectory() as folder:
            paths = write_jpegs(Path(folder), args.images, args.seed)
            kb = statistics.mean(p.stat().st_size for p in paths) / 1024
            per_image = []
            for _ in range(args.warmup + args.repeats):
                per_image.append(
                    statistics.median(
                        timed(
                            lambda p=p: model.image_inputs([load_rgb(p)]), 0, 1, torch.device("cpu")
                        )[0]
                        for p in paths
                    )
                )
            record(
                "decode_jpeg",
                1,
                per_image[args.warmup :],
                f"median over {len(paths)} synthetic JPEGs of {kb:.0f} KB on average",
            )
        rng = np.random.default_rng(args.seed)
        arrays = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(args.images)]
        per_image = []
        for _ in range(args.warmup + args.repeats):
            per_image.append(
                statistics.median(
                    timed(lambda a=a: model.image_inputs([a]), 0, 1, torch.device("cpu"))[0]
                    for a in arrays
                )
            )
        record("decode_cifar", 1, per_image[args.warmup :], f"median over {len(arrays)} arrays")
    finally:
        torch.set_num_threads(threads)
    size, tokens = model_sizes(args.model)
    return measured, notes, {"size": size, "tokens": tokens, "jpeg_kb": round(kb)}


# ---------------------------------------------------------------- output
def _fmt(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


def build_rows(
    measured: dict[str, tuple[int, float]],
    notes: dict[str, str],
    meta: dict[str, Any],
    timings: str,
    workers: int,
    labels: dict[str, str],
) -> list[dict[str, Any]]:
    rows = [
        {
            "kind": "measured",
            "operation": op,
            "what": labels[op],
            "batch": batch,
            "s_per_batch": s,
            "timings": timings,
            "note": notes.get(op, ""),
        }
        for op, (batch, s) in measured.items()
    ]
    rows += stage_rows(measured, reproduction_work(), meta["device"], workers, labels)
    return [{c: _fmt({**meta, **r}.get(c, "")) for c in COLUMNS} for r in rows]


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def print_rows(rows: list[dict[str, Any]]) -> None:
    r0 = rows[0]
    print(f"\n{r0['model']} on {r0['device']} ({r0['device_name']}), amp {r0['amp']}")
    print(f"{'operation':14s} {'batch':>5s} {'s/batch':>10s}")
    for r in rows:
        if r["kind"] == "measured":
            print(f"{r['operation']:14s} {r['batch']:>5} {float(r['s_per_batch']):10.4f}")
    print(f"\n{'stage':34s} {'hours':>9s}  what")
    for r in rows:
        if r["kind"] == "stage":
            print(f"{r['stage']:34s} {float(r['hours']):9.3f}  {r['what']}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--batch", type=int, default=None, help="default: 8 on a CPU, 256 on a GPU")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--images", type=int, default=8, help="synthetic JPEGs / CIFAR arrays timed")
    p.add_argument("--workers", type=int, default=8, help="GPU: DataLoader workers decoding")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="TinyCLIP-test, batch 4: seconds")
    p.add_argument("--out", default=None, help="CSV (default results/cost_vitb32_<device>.csv)")
    p.add_argument("--update-readme", action="store_true", help="then rewrite README's cost block")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    on_gpu = args.device.startswith("cuda")
    if on_gpu and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is visible; use --device cpu.")
    if args.smoke:
        if args.out is None or args.update_readme:
            raise SystemExit("--smoke needs --out (and no --update-readme): it is a test run.")
        args.model, args.batch = "TinyCLIP-test", args.batch or 4
        args.images, args.repeats = min(args.images, 2), min(args.repeats, 2)
    args.batch = args.batch or (256 if on_gpu else 8)
    workers = args.workers if on_gpu else 1
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    print(f"{args.model} on {args.device}, batch {args.batch}, amp {args.amp}", flush=True)
    measured, notes, sizes = measure(args)

    load_after = os.getloadavg()[0]
    labels = {op: text.format(**sizes) for op, text in OPERATIONS.items()}
    device = torch.device(args.device)
    meta = {
        "device": device.type,
        "device_name": device_name(device),
        "amp": args.amp,
        "model": args.model,
        "image_size": sizes["size"],
        "threads": torch.get_num_threads(),
        "workers": workers,
        "torch": torch.__version__,
        "measured_at": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_avg": f"{load_before:.2f} / {load_after:.2f}",
    }
    timings = f"median of {args.repeats} after {args.warmup} warm-up"
    rows = build_rows(measured, notes, meta, timings, workers, labels)
    out = Path(args.out) if args.out else RESULTS / f"cost_vitb32_{device.type}.csv"
    write_csv(rows, out)
    print_rows(rows)
    print(f"\nwrote {out} ({time.perf_counter() - started:.0f} s)")
    if args.update_readme:
        from tpccma_lib.app.readme import update_cost_section

        update_cost_section(ROOT / "README.md")
        print("README cost block rewritten")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
