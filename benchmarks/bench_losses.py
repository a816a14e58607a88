"""Cost of the CMA loss in a training step, and which distribution term to default to.

Run from the repository root::

    .venv/bin/python benchmarks/bench_losses.py                 # step cost table
    .venv/bin/python benchmarks/bench_losses.py --experiment    # default-term experiment

**Step cost.** One training step (forward, backward, AdamW step) with ``L_clip + alpha *
L_CMA`` against ``L_clip`` alone, same model and batch, for each distribution term and batch
sizes 256 ... 4096 at D = 512. The "model" is the trainable part of the embedded default:
linear projection heads 1280 -> 512 (image) and 384 -> 512 (text) on fixed random features,
plus a learnable logit scale. Variants are timed alternately (interleaved repeats, the order
rotated each repeat) and the median is reported; results go to
``benchmarks/results/losses_step_cost.csv``. The CMA cost, O(B D^2 + B^2 D), does not depend
on the encoder, so with a real encoder in the step (a ViT forward and backward) the ratio is
much closer to 1 than it is here, where the heads are the whole model.

**Default-term experiment.** Two point clouds on the unit sphere (B = 256; D = 64 and 512;
Gaussian or 10-cluster clouds, different spreads and orientations): the text cloud is
optimised for 100 Adam steps on ``CMALoss`` with each distribution term (and with the
centroid term alone, ``none``), either as free points or through a trainable linear map.
Reported: the Bures distribution gap and the centred MMD^2 after the run, as fractions of
their initial values (mean over 3 seeds), in ``benchmarks/results/losses_default_term.csv``.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from tpccma_lib.training.losses import (
    DISTRIBUTION_TERMS,
    ClipLoss,
    CMALoss,
    bures_distance_squared,
    mmd_squared,
    tpccma_objective,
)

RESULTS = Path(__file__).resolve().parent / "results"
IMAGE_WIDTH, TEXT_WIDTH, EMBED_DIM = 1280, 384, 512
ALPHA = 0.5


# ---------------------------------------------------------------- step cost


class ProjectionHeads(torch.nn.Module):
    """The embedded default's trainable part: two linear heads and a logit scale."""

    def __init__(self, dim: int = EMBED_DIM) -> None:
        super().__init__()
        self.image = torch.nn.Linear(IMAGE_WIDTH, dim)
        self.text = torch.nn.Linear(TEXT_WIDTH, dim)
        self.log_scale = torch.nn.Parameter(torch.tensor(2.659))  # log(1 / 0.07)

    def forward(self, image_inputs, text_inputs):
        image = F.normalize(self.image(image_inputs), dim=1)
        text = F.normalize(self.text(text_inputs), dim=1)
        return image, text, self.log_scale.exp()


def make_step(variant: str, batch: int, device: torch.device, seed: int) -> Callable[[], None]:
    """A closure doing one full training step of ``variant`` ("clip" or "clip+<term>")."""
    generator = torch.Generator().manual_seed(seed)
    image_inputs = torch.randn(batch, IMAGE_WIDTH, generator=generator).to(device)
    text_inputs = torch.randn(batch, TEXT_WIDTH, generator=generator).to(device)
    torch.manual_seed(seed)
    model = ProjectionHeads().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    clip_loss = ClipLoss(check_finite=False)
    cma_loss = None
    if variant != "clip":
        cma_loss = CMALoss(distribution_term=variant.split("+")[1], check_finite=False)

    def step() -> None:
        image, text, scale = model(image_inputs, text_inputs)
        loss = clip_loss(image, text, scale)
        if cma_loss is not None:
            loss = tpccma_objective(loss, cma_loss(image, text).total, ALPHA)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    return step


def bench_step_cost(batches: list[int], repeats: int, device: torch.device) -> list[dict]:
    variants = ["clip"] + [f"clip+{term}" for term in DISTRIBUTION_TERMS]
    rows = []
    for batch in batches:
        steps = {v: make_step(v, batch, device, seed=0) for v in variants}
        for step in steps.values():  # warm-up (allocations, AdamW state)
            step()
        times: dict[str, list[float]] = {v: [] for v in variants}
        for repeat in range(repeats):
            order = variants[repeat % len(variants) :] + variants[: repeat % len(variants)]
            for variant in order:
                started = time.perf_counter()
                steps[variant]()
                times[variant].append(time.perf_counter() - started)
        base = statistics.median(times["clip"])
        for variant in variants:
            median = statistics.median(times[variant])
            rows.append(
                {
                    "batch": batch,
                    "dim": EMBED_DIM,
                    "variant": variant,
                    "median_ms": round(1e3 * median, 2),
                    "ratio_vs_clip": round(median / base, 3),
                    "repeats": repeats,
                    "device": str(device),
                    "threads": torch.get_num_threads(),
                    "torch": torch.__version__,
                }
            )
            print(
                f"B={batch:5d} {variant:11s} median {1e3 * median:9.1f} ms  x{median / base:.2f}",
                flush=True,
            )
    return rows


# ---------------------------------------------------------------- default-term experiment


def _clouds(kind: str, n: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image and text clouds on the unit sphere with different means, spreads, orientations."""
    generator = torch.Generator().manual_seed(seed)
    mean_image = F.normalize(torch.randn(dim, generator=generator), dim=0)
    mean_text = F.normalize(torch.randn(dim, generator=generator), dim=0)
    if kind == "gaussian":
        spread_image = 0.35 * torch.arange(1, dim + 1).float() ** -0.5
        spread_text = 0.35 * torch.arange(1, dim + 1).float().flip(0) ** -1.0
        rotation = torch.linalg.qr(torch.randn(dim, dim, generator=generator))[0]
        image = mean_image + torch.randn(n, dim, generator=generator) * spread_image
        text = mean_text + (torch.randn(n, dim, generator=generator) * spread_text) @ rotation
    else:  # 10 clusters per modality, tight images, loose texts
        labels = torch.arange(n) % 10
        centres_image = mean_image + 0.4 * torch.randn(10, dim, generator=generator) / dim**0.5
        centres_text = mean_text + 0.4 * torch.randn(10, dim, generator=generator) / dim**0.5
        image = centres_image[labels] + 0.05 * torch.randn(n, dim, generator=generator)
        text = centres_text[labels] + 0.6 * torch.randn(n, dim, generator=generator) / dim**0.5
    return F.normalize(image, dim=1), F.normalize(text, dim=1)


def _gaps(image: torch.Tensor, text: torch.Tensor) -> tuple[float, float]:
    with torch.no_grad():
        bures = float(bures_distance_squared(image, text))
        mmd = float(mmd_squared(image - image.mean(0), text - text.mean(0)))
    return bures, mmd


def _optimise(term: str, kind: str, mode: str, dim: int, seed: int, steps: int) -> tuple:
    image, text = _clouds(kind, 256, dim, seed)
    if mode == "points":
        parameter = text.clone().requires_grad_()
        lr = 1e-2

        def current():
            return F.normalize(parameter, dim=1)
    else:
        parameter = torch.eye(dim).requires_grad_()
        lr = 1e-3

        def current():
            return F.normalize(text @ parameter, dim=1)

    loss = CMALoss(
        distribution_weight=0.0 if term == "none" else 1.0,
        distribution_term="coral" if term == "none" else term,
    )
    optimizer = torch.optim.Adam([parameter], lr=lr)
    bures_start, mmd_start = _gaps(image, text)
    started = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad()
        loss(image, current()).total.backward()
        optimizer.step()
    seconds = (time.perf_counter() - started) / steps
    bures_end, mmd_end = _gaps(image, current())
    return bures_end / bures_start, mmd_end / mmd_start, seconds


def default_term_experiment(seeds: int = 3, steps: int = 100) -> list[dict]:
    rows = []
    for mode in ("points", "linear"):
        for kind in ("gaussian", "clustered"):
            for dim in (64, 512):
                for term in ("none", *DISTRIBUTION_TERMS):
                    runs = [_optimise(term, kind, mode, dim, s, steps) for s in range(seeds)]
                    row = {
                        "trainable": mode,
                        "clouds": kind,
                        "dim": dim,
                        "batch": 256,
                        "steps": steps,
                        "term": term,
                        "bures_gap_ratio": round(statistics.mean(r[0] for r in runs), 4),
                        "mmd_ratio": round(statistics.mean(r[1] for r in runs), 4),
                        "ms_per_step": round(1e3 * statistics.mean(r[2] for r in runs), 2),
                    }
                    rows.append(row)
                    print(row, flush=True)
    return rows


def _write_csv(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved timed repeats")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--experiment", action="store_true", help="default-term experiment")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.experiment:
        _write_csv(default_term_experiment(), RESULTS / "losses_default_term.csv")
    else:
        rows = bench_step_cost(args.batches, args.repeats, torch.device(args.device))
        _write_csv(rows, RESULTS / "losses_step_cost.csv")


if __name__ == "__main__":
    main()
