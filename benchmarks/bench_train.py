"""Training throughput and peak memory of the TPC-CMA trainer, and what CMA + scheduler cost.

Run from the repository root::

    .venv/bin/python benchmarks/bench_train.py                       # CPU: towers + TinyCLIP-test
    .venv/bin/python benchmarks/bench_train.py --backend open_clip --model ViT-B-32 \\
        --device cuda --amp bf16 --image-size 224                    # GPU (benchmarks/gpu_open_clip.sh)

**What is timed.** One optimisation step of :func:`tpccma_lib.training.loop.train` (forward, loss,
backward, gradient clipping, AdamW) on synthetic batches of ``--batch`` pairs, for these
variants, all with the same model, batch and data:

- ``clip``: contrastive loss only (``alpha_target=0``);
- ``clip+cma``: ``L_clip + 0.5 L_CMA`` (Bures distribution term), one backward of the sum
  (gradient-aware scheduling off, no telemetry);
- ``clip+cma+scheduler``: the PCGrad rule measured on every step: two backward passes
  (``g_clip`` and ``g_align`` separately), projection and norm cap;
- ``clip+cma+scheduler/10``: the same, measuring the two gradients every 10th step only
  (``measure_every=10``; one backward in between);
- ``clip+cma+lr-rule``: the paper's rule (``conflict_rule="lr"``, per-tensor learning-rate
  tempering) measured on every step;
- ``clip+cma+default``: what a user gets, :class:`TrainConfig`'s default rule at its default
  measurement interval (the ≤ 1.05x target of the scheduler issue);
- ``open_clip_train`` (open_clip backend only): open_clip's own training loop,
  ``open_clip_train.train.train_one_epoch``, driven on the same batches with an open_clip
  model of the same architecture (contrastive loss, same clipping and optimizer).

Backends: ``towers`` = the embedded default's trainable part (linear heads 1280 -> D and
384 -> D on random tower features, as the cached-feature path trains them); ``open_clip`` =
a full CLIP with random weights on random pixels (``--image-size`` px) and tokenised synthetic
captions; TinyCLIP-test (2 layers, width 128, 32 px) on CPU by default, ViT-B-32 on a GPU.

**How.** A step's time is the gap between two consecutive batch fetches (the trainer asks
for one batch per step; on CUDA the clock synchronises first), over ``--steps`` steps after
``--warmup`` steps. Variants run interleaved (``--repeats`` rounds, the order rotated each
round); reported: the median step time over all rounds, samples/s = batch / median, and each
variant's cost as the median over rounds of its ratio to ``clip`` in the same round (and the
ratio of ``clip`` to ``open_clip_train``), the ratio of **mean** step times (a run's time per
step): a variant that measures the two gradients every k-th step pays for those steps there,
which a median step would hide; keep ``--steps`` a multiple of the interval. ``--clock cpu``
times CPU runs by the process's CPU time instead of wall time (steadier on a busy shared
machine; with one thread, the work of the step itself). CPU runs restart themselves under
glibc malloc settings that keep tensors up to 32 MiB on an untrimmed heap (``--malloc steady``,
:data:`STEADY_MALLOC`): with the default settings every gradient-sized buffer is a fresh mmap,
page-faulted in on each step, which made one variant's mean step vary from run to run by more
than the costs measured (the memory probes keep the default). Peak memory: CUDA,
``torch.cuda.max_memory_allocated``
during the variant's runs (``train_extra_mb``: above what was allocated before the run, i.e.
without the resident models and data); CPU, the peak resident set size of a fresh subprocess
that builds the same model and data, resets the kernel's peak counter (``/proc/self/clear_refs``)
and runs the variant for a few steps (``train_extra_mb``: above its RSS before training). Checkpoint writes are
switched off (they are outside the timed window anyway). Results:
``benchmarks/results/bench_train_<device>.csv`` (one row per backend and variant).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np
import torch

from tpccma_lib.models import ModelConfig, create_model
from tpccma_lib.training.loop import InputSource, TrainConfig, train

RESULTS = Path(__file__).resolve().parent / "results"
OURS = (
    "clip",
    "clip+cma",
    "clip+cma+scheduler",
    "clip+cma+scheduler/10",
    "clip+cma+lr-rule",
    "clip+cma+default",
)
OPEN_CLIP_TRAIN = "open_clip_train"
DEFAULT_MODEL = {"towers": "effnetlite0-minilm", "open_clip": "TinyCLIP-test"}
LR = 1e-5  # small: random-init models stay finite; the value does not change the cost


@dataclass(frozen=True)
class Settings:
    """One benchmark configuration (a backend on a device)."""

    backend: str  # "towers" or "open_clip"
    model: str  # towers pair or open_clip model name
    device: str  # "cpu" or "cuda"
    amp: str  # "none", "bf16" or "fp16"
    image_size: int | None  # open_clip input size in px (None: the model's own)
    batch: int  # pairs per step
    steps: int  # timed steps per run
    warmup: int  # untimed steps at the start of each run
    repeats: int  # interleaved rounds
    embed_dim: int  # towers: shared dimension D
    seed: int
    clock: str = "wall"  # "wall" or "cpu" (this process's CPU time; CPU devices only)
    steady_malloc: bool = False  # the process runs with STEADY_MALLOC (recorded in the CSV)


# ---------------------------------------------------------------- models and data
def build_model(s: Settings) -> Any:
    """The DualEncoder our trainer trains (random init)."""
    if s.backend == "towers":
        return create_model(ModelConfig(backend="towers", name=s.model, embed_dim=s.embed_dim))
    return create_model(ModelConfig(backend="open_clip", name=s.model, pretrained=None))


def native_image_size(s: Settings) -> int:
    """Input size in px of open_clip model ``s.model`` (from its config)."""
    import open_clip

    from tpccma_lib.models.open_clip_backend import register_bundled_configs

    register_bundled_configs()
    size = open_clip.get_model_config(s.model)["vision_cfg"]["image_size"]
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    if s.image_size is not None and s.image_size != size:
        raise SystemExit(
            f"{s.model} takes {size} px images; --image-size {s.image_size} does not match "
            "(drop the flag or pass the model's size)."
        )
    return size


@dataclass
class Pool:
    """One batch of synthetic model inputs, on the device (no host-to-device copy timed)."""

    image: torch.Tensor  # (B, 1280) features or (B, 3, S, S) pixels
    text: torch.Tensor  # (B, 384) features or (B, L) token ids


def make_pool(s: Settings, device: torch.device) -> Pool:
    """Random tower features (towers) or random pixels + tokenised synthetic captions."""
    g = torch.Generator().manual_seed(s.seed)
    if s.backend == "towers":
        latent = torch.randn(s.batch, 16, generator=g)
        image = torch.relu(latent @ torch.randn(16, 1280, generator=g)) + 0.5
        text = latent @ torch.randn(16, 384, generator=g)
    else:
        import open_clip

        size = native_image_size(s)
        image = torch.randn(s.batch, 3, size, size, generator=g)
        colours, shapes = ("red", "green", "blue", "yellow"), ("circle", "square", "star")
        captions = [
            f"a photo of {1 + i % 3} {colours[i % 4]} {shapes[i % 3]}s, number {i}"
            for i in range(s.batch)
        ]
        text = open_clip.get_tokenizer(s.model)(captions)
    return Pool(image.to(device), text.to(device))


class StepClock:
    """Timestamps of successive batch fetches (= step boundaries): wall time (CUDA: after a
    synchronise), or on CPU with ``cpu=True`` this process's CPU time (user + system), which a
    busy shared machine does not inflate (the time the process waits for a core is not counted)."""

    def __init__(self, device: torch.device, cpu: bool = False) -> None:
        if cpu and device.type == "cuda":
            raise ValueError("the CPU-time clock cannot time CUDA work; use the wall clock.")
        self.device = device
        self.now = time.process_time if cpu else time.perf_counter
        self.stamps: list[float] = []

    def tick(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.stamps.append(self.now())

    def step_times(self, warmup: int) -> list[float]:
        """Durations of the steps after ``warmup`` (the last step has no end stamp: dropped)."""
        stamps = self.stamps[warmup:]
        return [b - a for a, b in zip(stamps, stamps[1:], strict=False)]


def clocked_source(pool: Pool, clock: StepClock) -> InputSource:
    def image_fn(idx: np.ndarray) -> torch.Tensor:
        clock.tick()
        return pool.image[torch.as_tensor(idx, device=pool.image.device)]

    def text_fn(idx: np.ndarray) -> torch.Tensor:
        return pool.text[torch.as_tensor(idx, device=pool.text.device)]

    n = pool.image.shape[0]
    return InputSource(image_fn, text_fn, np.arange(n, dtype=np.int64), n)


def train_config(variant: str, s: Settings, total_steps: int) -> TrainConfig:
    common = dict(
        steps=total_steps,
        batch_size=s.batch,
        lr=LR,
        warmup_steps=1,
        amp=s.amp,
        device=s.device,
        seed=s.seed,
        warmup_fraction=0.0,
        ramp_fraction=0.0,
        checkpoint_every=10**9,
        log_every=10**9,
    )
    if variant == "clip":
        return TrainConfig(alpha_target=0.0, gradient_aware=False, **common)
    if variant == "clip+cma":
        return TrainConfig(alpha_target=0.5, gradient_aware=False, measure_every=10**9, **common)
    if variant == "clip+cma+scheduler":
        return TrainConfig(alpha_target=0.5, conflict_rule="pcgrad", measure_every=1, **common)
    if variant == "clip+cma+scheduler/10":
        return TrainConfig(alpha_target=0.5, conflict_rule="pcgrad", measure_every=10, **common)
    if variant == "clip+cma+lr-rule":
        return TrainConfig(alpha_target=0.5, conflict_rule="lr", measure_every=1, **common)
    if variant == "clip+cma+default":
        return TrainConfig(alpha_target=0.5, **common)
    raise ValueError(f"unknown variant {variant!r}; choose from {OURS}.")


def run_ours(variant: str, model: Any, pool: Pool, s: Settings, steps: int) -> list[float]:
    """``steps`` timed steps of our trainer (after ``s.warmup``) -> step durations in s."""
    device = torch.device(s.device)
    clock = StepClock(device, cpu=s.clock == "cpu")
    cfg = train_config(variant, s, s.warmup + steps + 1)
    with (
        tempfile.TemporaryDirectory() as out,
        mock.patch("tpccma_lib.training.loop.save_checkpoint"),
    ):
        train(model, clocked_source(pool, clock), cfg, out, resume=False, progress=False)
    return clock.step_times(s.warmup)


# ---------------------------------------------------------------- open_clip's own loop
class _ClockedLoader:
    """What ``train_one_epoch`` iterates: the same batch ``n`` times, clocked."""

    def __init__(self, pool: Pool, n: int, clock: StepClock) -> None:
        self.pool, self.clock = pool, clock
        self.num_batches = n
        self.num_samples = n * pool.image.shape[0]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(self.num_batches):
            self.clock.tick()
            yield self.pool.image, self.pool.text


def build_open_clip_train_model(s: Settings) -> torch.nn.Module:
    """The same architecture as ``build_model`` as a plain open_clip model (own logit scale)."""
    import open_clip

    from tpccma_lib.models.open_clip_backend import register_bundled_configs

    register_bundled_configs()
    # open_clip_train builds its model with output_dict=True (main.py); so do we
    return open_clip.create_model(s.model, pretrained=None, output_dict=True).to(s.device)


def run_open_clip_train(model: torch.nn.Module, pool: Pool, s: Settings, steps: int) -> list[float]:
    """``steps`` timed steps of ``open_clip_train.train.train_one_epoch`` on ``pool``."""
    import logging

    import open_clip
    from open_clip_train.train import train_one_epoch

    logging.getLogger().setLevel(logging.WARNING)  # its per-step log line is not timed work
    device = torch.device(s.device)
    clock = StepClock(device, cpu=s.clock == "cpu")
    precision = {"none": "fp32", "bf16": "amp_bf16", "fp16": "amp"}[s.amp]
    scaler = torch.amp.GradScaler("cuda") if s.amp == "fp16" else None
    args = argparse.Namespace(
        device=s.device, precision=precision, distill=False, accum_freq=1, skip_scheduler=True,
        horovod=False, grad_clip_norm=1.0, log_every_n_steps=10**9, batch_size=s.batch,
        world_size=1, rank=0, local_rank=0, wandb=False,
    )  # fmt: skip
    optimizer = torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=LR, weight_decay=0.1
    )
    loader = _ClockedLoader(pool, s.warmup + steps + 1, clock)
    data = {"train": argparse.Namespace(dataloader=loader, set_epoch=lambda epoch: None)}
    train_one_epoch(model, data, open_clip.ClipLoss(), 0, optimizer, scaler, None, None, args)
    return clock.step_times(s.warmup)


# ---------------------------------------------------------------- memory
def _proc_status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return float(line.split()[1]) / 1024.0  # kB -> MB
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> bool:
    """Reset VmHWM (the peak RSS) to the current RSS; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _rss_probe(variant: str, s: Settings) -> tuple[float, float]:
    """(peak RSS, RSS before training) in MB of this process for ``variant``.

    Builds the data and the model (``open_clip_train``: open_clip's model instead of ours), resets the kernel's peak-RSS counter, runs a few steps and reads
    the new peak, so import-time peaks do not count.
    """
    pool = make_pool(s, torch.device(s.device))
    model = build_open_clip_train_model(s) if variant == OPEN_CLIP_TRAIN else build_model(s)
    before = _proc_status_mb("VmRSS")
    if not _reset_peak_rss():
        raise RuntimeError("cannot reset the peak RSS (/proc/self/clear_refs not writable)")
    if variant == OPEN_CLIP_TRAIN:
        run_open_clip_train(model, pool, s, steps=3)
    else:
        run_ours(variant, model, pool, s, steps=3)
    return _proc_status_mb("VmHWM"), before


#: glibc malloc settings of ``--malloc steady`` (CPU): tensors up to 32 MiB come from the heap,
#: which is not trimmed, instead of a fresh mmap each (default above 128 KiB, adapting): with
#: the default, a step's gradient-sized buffers are page-faulted in anew on every step.
STEADY_MALLOC = {
    "MALLOC_MMAP_THRESHOLD_": str(32 * 2**20),
    "MALLOC_TRIM_THRESHOLD_": str(16 * 2**30),
    "MALLOC_TOP_PAD_": str(512 * 2**20),
}


def _runs_with_steady_malloc() -> bool:
    """Whether this process was started with every :data:`STEADY_MALLOC` setting."""
    return all(os.environ.get(k) == v for k, v in STEADY_MALLOC.items())


def _default_malloc_env() -> dict[str, str]:
    """This process's environment without the :data:`STEADY_MALLOC` settings."""
    return {k: v for k, v in os.environ.items() if k not in STEADY_MALLOC}


def cpu_peak_rss(variant: str, s: Settings, threads: int) -> tuple[float, float]:
    """(peak RSS while training, RSS before) in MB of a fresh subprocess (:func:`_rss_probe`)."""
    payload = json.dumps({"variant": variant, "settings": asdict(s)})
    out = subprocess.run(
        [sys.executable, __file__, "--threads", str(threads), "--memory-probe", payload],
        check=True,
        capture_output=True,
        text=True,
        env={**_default_malloc_env(), "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    peak, before = json.loads(out.stdout.strip().splitlines()[-1])
    return float(peak), float(before)


# ---------------------------------------------------------------- the benchmark
def _run(variant: str, model: Any, pool: Pool, s: Settings) -> list[float]:
    if variant == OPEN_CLIP_TRAIN:
        return run_open_clip_train(model, pool, s, s.steps)
    return run_ours(variant, model, pool, s, s.steps)


def benchmark(s: Settings, with_open_clip_train: bool) -> list[dict[str, Any]]:
    """Interleaved timing of every variant of ``s``; one CSV row per variant.

    Our variants share one model (its weights drift from run to run, which does not change
    the cost); open_clip's loop gets its own model of the same architecture.
    """
    device = torch.device(s.device)
    torch.manual_seed(s.seed)
    variants = list(OURS) + ([OPEN_CLIP_TRAIN] if with_open_clip_train else [])
    ours = build_model(s)
    models = dict.fromkeys(OURS, ours)
    if with_open_clip_train:
        models[OPEN_CLIP_TRAIN] = build_open_clip_train_model(s)
    pool = make_pool(s, device)
    times: dict[str, list[float]] = {v: [] for v in variants}
    round_means: list[dict[str, float]] = []  # mean step time per variant, one dict a round
    peak_cuda = dict.fromkeys(variants, 0.0)  # MB, absolute
    extra_cuda = dict.fromkeys(variants, 0.0)  # MB above what was allocated before the run
    for r in range(s.repeats):
        order = variants[r % len(variants) :] + variants[: r % len(variants)]
        means = {}
        for v in order:
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
                before = torch.cuda.memory_allocated(device)
            step_times = _run(v, models[v], pool, s)
            if device.type == "cuda":
                peak = torch.cuda.max_memory_allocated(device)
                peak_cuda[v] = max(peak_cuda[v], peak / 2**20)
                extra_cuda[v] = max(extra_cuda[v], (peak - before) / 2**20)
            times[v] += step_times
            means[v] = statistics.fmean(step_times)
            print(
                f"  round {r + 1}/{s.repeats} {s.backend:9s} {v:22s} "
                f"{1000 * means[v]:8.1f} ms/step (mean)",
                flush=True,
            )
        round_means.append(means)
    if device.type == "cuda":
        peak_memory, extra_memory, kind = peak_cuda, extra_cuda, "cuda max_memory_allocated"
    else:
        probes = {v: cpu_peak_rss(v, s, torch.get_num_threads()) for v in variants}
        peak_memory = {v: peak for v, (peak, _) in probes.items()}
        extra_memory = {v: peak - before for v, (peak, before) in probes.items()}
        kind = "peak RSS while training (subprocess)"
    ratios = {v: [m[v] / m["clip"] for m in round_means] for v in variants}
    quartiles = {v: _quartiles(r) for v, r in ratios.items()}
    rows = []
    for v in variants:
        median = statistics.median(times[v])
        rows.append(
            {
                **{k: getattr(s, k) for k in ("backend", "model", "device", "amp", "batch")},
                "image_size": native_image_size(s) if s.backend == "open_clip" else "features",
                "variant": v,
                "median_step_ms": 1000 * median,
                "samples_per_s": s.batch / median,
                "mean_step_ms": 1000 * statistics.fmean(times[v]),
                "ratio_to_clip": statistics.median(ratios[v]),
                "ratio_q25": quartiles[v][0],
                "ratio_q75": quartiles[v][2],
                "ratio_clip_to_open_clip_train": (
                    statistics.median(m["clip"] / m[OPEN_CLIP_TRAIN] for m in round_means)
                    if with_open_clip_train and v == "clip"
                    else ""
                ),
                "peak_memory_mb": peak_memory[v],
                "train_extra_mb": extra_memory[v],
                "memory_kind": kind,
                "timed_steps": len(times[v]),
                "repeats": s.repeats,
                "threads": torch.get_num_threads(),
                "clock": s.clock,
                "malloc": "steady" if s.steady_malloc else "default",
                "torch": torch.__version__,
                "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else "",
            }
        )
    return rows


def _quartiles(values: list[float]) -> list[float]:
    """Lower quartile, median, upper quartile (inclusive method; one value: itself 3 times)."""
    if len(values) == 1:
        return [values[0]] * 3
    return statistics.quantiles(values, n=4, method="inclusive")


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in row.items()}
            )


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        f"\n{'backend':9s} {'variant':22s} {'ms/step':>9s} {'samples/s':>10s} "
        f"{'x clip':>7s} {'peak MB':>9s}"
    )
    for r in rows:
        print(
            f"{r['backend']:9s} {r['variant']:22s} {r['median_step_ms']:9.1f} "
            f"{r['samples_per_s']:10.0f} {r['ratio_to_clip']:7.2f} {r['peak_memory_mb']:9.0f}"
        )
        if r["ratio_clip_to_open_clip_train"] != "":
            print(
                f"{'':9s} {'clip / open_clip_train':22s} {r['ratio_clip_to_open_clip_train']:9.2f}"
            )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=("towers", "open_clip", "both"), default="both")
    p.add_argument("--model", default=None, help="default: effnetlite0-minilm / TinyCLIP-test")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    p.add_argument("--image-size", type=int, default=None, help="open_clip input px")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=None, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--embed-dim", type=int, default=256, help="towers: shared dimension")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--malloc",
        choices=("steady", "default"),
        default="steady",
        help="CPU runs: glibc malloc settings, steady (STEADY_MALLOC; the process restarts "
        "itself with them) or the default (memory probes always use the default)",
    )
    p.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="step timer: wall time, or (CPU devices) this process's CPU time, steadier on a "
        "busy shared machine",
    )
    p.add_argument("--out", default=None, help="CSV (default results/bench_train_<device>.csv)")
    p.add_argument("--no-open-clip-train", action="store_true", help="skip open_clip's loop")
    p.add_argument(
        "--update-readme",
        action="store_true",
        help="maintainers: rewrite README's stepcost block from --out",
    )
    p.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    steady = args.malloc == "steady" and not args.device.startswith("cuda")
    if argv is None and steady and not _runs_with_steady_malloc():
        # malloc reads its settings at process start: run this command again with them
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **STEADY_MALLOC})
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.memory_probe:
        payload = json.loads(args.memory_probe)
        print(json.dumps(_rss_probe(payload["variant"], Settings(**payload["settings"]))))
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is visible; use --device cpu.")
    backends = ("towers", "open_clip") if args.backend == "both" else (args.backend,)
    rows: list[dict[str, Any]] = []
    started = time.perf_counter()
    for backend in backends:
        on_gpu = args.device.startswith("cuda")
        steps = args.steps or (20 if on_gpu or backend == "towers" else 8)
        s = Settings(
            backend=backend,
            model=args.model if args.model and args.backend != "both" else DEFAULT_MODEL[backend],
            device=args.device,
            amp=args.amp,
            image_size=args.image_size if backend == "open_clip" else None,
            batch=args.batch,
            steps=steps,
            warmup=args.warmup,
            repeats=args.repeats,
            embed_dim=args.embed_dim,
            seed=args.seed,
            clock=args.clock,
            steady_malloc=_runs_with_steady_malloc(),
        )
        print(f"{backend}: {s.model} on {s.device}, batch {s.batch}, amp {s.amp}", flush=True)
        rows += benchmark(
            s, with_open_clip_train=backend == "open_clip" and not args.no_open_clip_train
        )
    out = Path(args.out) if args.out else RESULTS / f"bench_train_{args.device.split(':')[0]}.csv"
    write_csv(rows, out)
    print_table(rows)
    if args.update_readme:
        from tpccma_lib.app.readme import update_csv_section

        update_csv_section(Path(__file__).resolve().parent.parent / "README.md", "stepcost", out)
        print("README block stepcost rewritten")
    print(f"\nwrote {out} ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
