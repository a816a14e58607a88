"""What the embedded mini-CLIP could train, and what each choice costs per step on this CPU.

Run from the repository root (about a minute)::

    .venv/bin/python benchmarks/bench_heads.py                  # writes the CSV
    .venv/bin/python benchmarks/bench_heads.py --update-readme  # and the README block

Options for the trainable part (pretraining and fine-tuning train the same parameters):

* ``linear``: linear heads 1280 -> 256 and 384 -> 256 on the frozen towers' pooled features.
  Followed by normalisation, a fine-tune of them is an affine map of the tower features, the
  function class of the post-hoc fixes it is compared with.
* ``mlp``: two-layer GELU heads (hidden 512) on the same cached pooled features: non-linear,
  so a fine-tune can bend the embedding in ways no affine map of the base embeddings can.
* ``top blocks``: EfficientNet-Lite0's last MBConv block + conv head (on its cached 192x2x2
  input at 64 px) and MiniLM's last Transformer layer (on its cached token states) unfrozen,
  with linear projections: what fine-tuning CLIP's top layers does; it would need every token
  state of every caption cached.

One step = forward, symmetric InfoNCE at logit scale 100, backward, AdamW, on a batch of
``--batch`` pairs (captions of ``--tokens`` tokens for the top-block text layer), on random
inputs of the cached shapes; the median of ``--repeats`` timings after two warm-up steps, the
options interleaved. Also reported: trainable parameters and the cached floats per caption
(what the feature cache must hold).
"""

from __future__ import annotations

import argparse
import copy
import csv
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tpccma_lib.app.readme import update_csv_section  # noqa: E402
from tpccma_lib.models.towers import (  # noqa: E402
    IMAGE_FEATURE_DIM,
    TEXT_FEATURE_DIM,
    _head,
    _image_tower,
    _text_tower,
)
from tpccma_lib.training.losses import clip_contrastive_loss  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "bench_heads.csv"
EMBED_DIM = 256


class _ImageTop(nn.Module):
    """EfficientNet-Lite0's last MBConv block + conv head + pooling + linear projection."""

    def __init__(self) -> None:
        super().__init__()
        net = _image_tower()
        self.block = copy.deepcopy(net._blocks[-1]).requires_grad_(True)
        self.conv_head = copy.deepcopy(net._conv_head).requires_grad_(True)
        self.bn = copy.deepcopy(net._bn1).requires_grad_(True)
        self.act = net._swish  # EfficientNet-Lite's activation (ReLU6)
        self.proj = nn.Linear(IMAGE_FEATURE_DIM, EMBED_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 192, 2, 2)
        x = self.block(x)
        x = self.act(self.bn(self.conv_head(x)))
        return self.proj(x.mean(dim=(2, 3)))


class _TextTop(nn.Module):
    """MiniLM's last Transformer layer + mean pooling + linear projection."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = copy.deepcopy(_text_tower()[1].encoder.layer[-1]).requires_grad_(True)
        self.proj = nn.Linear(TEXT_FEATURE_DIM, EMBED_DIM)

    def forward(self, h: torch.Tensor) -> torch.Tensor:  # (B, T, 384)
        out = self.layer(h)
        h = out[0] if isinstance(out, tuple) else out
        return self.proj(h.mean(dim=1))


def build(option: str, batch: int, tokens: int) -> tuple[nn.Module, nn.Module, tuple, int]:
    """(image part, text part, (image input, text input), cached floats per caption)."""
    if option in ("linear", "mlp"):
        image = _head(IMAGE_FEATURE_DIM, EMBED_DIM, option)
        text = _head(TEXT_FEATURE_DIM, EMBED_DIM, option)
        inputs = (torch.randn(batch, IMAGE_FEATURE_DIM), torch.randn(batch, TEXT_FEATURE_DIM))
        return image, text, inputs, TEXT_FEATURE_DIM
    inputs = (torch.randn(batch, 192, 2, 2), torch.randn(batch, tokens, TEXT_FEATURE_DIM))
    return _ImageTop(), _TextTop(), inputs, tokens * TEXT_FEATURE_DIM


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--update-readme", action="store_true")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    options = ("linear", "mlp", "top blocks")
    setups = {o: build(o, args.batch, args.tokens) for o in options}
    optimisers = {
        o: torch.optim.AdamW([*s[0].parameters(), *s[1].parameters()], lr=1e-4)
        for o, s in setups.items()
    }
    times: dict[str, list[float]] = {o: [] for o in options}
    for repeat in range(args.repeats + 2):
        for o in options[repeat % 3 :] + options[: repeat % 3]:
            image, text, (x, y), _ = setups[o]
            started = time.perf_counter()
            loss = clip_contrastive_loss(
                F.normalize(image(x), dim=-1), F.normalize(text(y), dim=-1), 100.0
            )
            optimisers[o].zero_grad()
            loss.backward()
            optimisers[o].step()
            if repeat >= 2:
                times[o].append(time.perf_counter() - started)
    rows = []
    for o in options:
        image, text, _, cached = setups[o]
        trainable = sum(p.numel() for p in [*image.parameters(), *text.parameters()])
        rows.append(
            {
                "option": o,
                "ms_per_step": round(1000 * statistics.median(times[o]), 1),
                "trainable_parameters": trainable,
                "cached_floats_per_caption": cached,
                "batch": args.batch,
                "threads": torch.get_num_threads(),
            }
        )
        print(rows[-1], flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if args.update_readme:
        update_csv_section(ROOT / "README.md", "heads", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
