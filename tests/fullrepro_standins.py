"""Stand-ins for the full reproduction's inputs, faithful in *format* (not in size).

The README's "Full reproduction" block reads three things nothing on a CI machine can
download; :func:`write_standins` writes small files in exactly their formats:

* ``data/coco/``: Karpathy's ``dataset_coco.json`` (``images`` with ``filepath``
  train2014/val2014, ``filename``, ``split`` in train/restval/val/test, ``sentences`` with
  ``raw`` and ``tokens`` -- five to seven per image --, ``cocoid``, ``imgid``, ``sentids``) and
  the JPEGs it lists under ``train2014/`` and ``val2014/``: mixed sizes, every seventh one
  greyscale, each showing coloured shapes its captions describe;
* ``data/cifar10/cifar-10-batches-py/``: CIFAR-10's python-version pickles (``data_batch_1``
  .. ``data_batch_5``, ``test_batch``, ``batches.meta``) with the real byte-string keys
  (``b"data"`` uint8 N x 3072 in R, G, B planes, ``b"labels"``, ``b"filenames"``,
  ``b"batch_label"``; ``b"label_names"`` = the ten CIFAR-10 class names);
* ``tiny-open-clip.pt``: a random-init open_clip ``TinyCLIP-test`` state dict, loaded through
  ``pretrained=<file>`` as a downloaded checkpoint would be.

``data/`` is laid out as ``tpccma prepare --root data`` writes it, so ``root=<data>`` serves.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
_COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 70, 220),
    "yellow": (230, 210, 40),
    "purple": (140, 50, 170),
    "orange": (240, 140, 30),
}
_SHAPES = ("circle", "square", "triangle")
_BACKGROUNDS = {"white": (245, 245, 245), "black": (15, 15, 15), "grey": (128, 128, 128)}
#: images per Karpathy split entry (train + restval make the "train" split)
COCO_SPLIT_SIZES = {"train": 80, "restval": 20, "val": 100, "test": 100}


@dataclass(frozen=True)
class StandIns:
    """Where :func:`write_standins` put everything."""

    data_root: Path  # holds coco/ and cifar10/ (the ``root`` of a run)
    checkpoint: Path  # random-init TinyCLIP-test weights (``pretrained=<file>``)
    model_name: str = "TinyCLIP-test"


def _draw(rng: np.random.Generator, size: tuple[int, int], grey: bool):
    """A picture of 1-2 coloured shapes and the five to seven captions describing it."""
    from PIL import Image, ImageDraw

    width, height = size
    bg_name = str(rng.choice(list(_BACKGROUNDS)))
    image = Image.new("RGB", size, _BACKGROUNDS[bg_name])
    draw = ImageDraw.Draw(image)
    objects = []
    for _ in range(int(rng.integers(1, 3))):
        colour, shape = str(rng.choice(list(_COLOURS))), str(rng.choice(_SHAPES))
        r = int(rng.integers(min(size) // 6, min(size) // 3))
        cx, cy = int(rng.integers(r, width - r)), int(rng.integers(r, height - r))
        box = (cx - r, cy - r, cx + r, cy + r)
        fill = _COLOURS[colour]
        if shape == "circle":
            draw.ellipse(box, fill=fill)
        elif shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
        objects.append((colour, shape))
    colour, shape = objects[0]
    tone = "a black and white photo of" if grey else "a photo of"
    more = f" and a {objects[1][0]} {objects[1][1]}" if len(objects) > 1 else ""
    captions = [
        f"A {colour} {shape}{more} on a {bg_name} background.",
        f"{tone.capitalize()} a {colour} {shape}{more}.",
        f"There is a {colour} {shape} in the picture.",
        f"A {shape} coloured {colour} against {bg_name}.",
        f"Simple drawing of a {colour} {shape}{more}.",
        f"The {bg_name} background shows a {shape}.",
        f"One {colour} {shape} drawn on {bg_name}.",
    ][: int(rng.integers(5, 8))]
    if grey:
        image = image.convert("L")
    return image, captions


def write_coco(folder: Path, seed: int = 0) -> Path:
    """Karpathy-format ``dataset_coco.json`` + JPEGs under ``folder`` (see module docstring)."""
    rng = np.random.default_rng(seed)
    (folder / "train2014").mkdir(parents=True, exist_ok=True)
    (folder / "val2014").mkdir(parents=True, exist_ok=True)
    entries, imgid, sentid = [], 0, 0
    for split, count in COCO_SPLIT_SIZES.items():
        for _ in range(count):
            cocoid = 100000 + imgid
            subset = "train2014" if split == "train" else "val2014"
            filename = f"COCO_{subset}_{cocoid:012d}.jpg"
            size = (int(rng.integers(48, 120)), int(rng.integers(48, 120)))
            image, captions = _draw(rng, size, grey=imgid % 7 == 3)
            image.save(folder / subset / filename, format="JPEG", quality=90)
            sentences = []
            for raw in captions:
                tokens = raw.lower().replace(".", "").split()
                sentences.append({"tokens": tokens, "raw": raw, "imgid": imgid, "sentid": sentid})
                sentid += 1
            entries.append(
                {
                    "filepath": subset,
                    "sentids": [s["sentid"] for s in sentences],
                    "filename": filename,
                    "imgid": imgid,
                    "split": split,
                    "sentences": sentences,
                    "cocoid": cocoid,
                }
            )
            imgid += 1
    (folder / "dataset_coco.json").write_text(
        json.dumps({"images": entries, "dataset": "coco"}), encoding="utf-8"
    )
    return folder


def _cifar_images(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    """(N, 3072) uint8 rows (R, G, B planes of 32 x 32): a class-dependent colour + noise."""
    hues = rng.integers(30, 226, size=(len(CIFAR10_CLASSES), 3))
    pixels = hues[labels][:, :, None] + rng.normal(scale=25, size=(len(labels), 3, 1024))
    return np.clip(pixels, 0, 255).astype(np.uint8).reshape(len(labels), 3072)


def write_cifar10(folder: Path, per_batch: int = 20, n_test: int = 100, seed: int = 0) -> Path:
    """CIFAR-10 python-version batches under ``folder/cifar-10-batches-py``."""
    rng = np.random.default_rng(seed)
    batches = folder / "cifar-10-batches-py"
    batches.mkdir(parents=True, exist_ok=True)
    names = [(f"data_batch_{k}", per_batch, f"training batch {k} of 5") for k in range(1, 6)]
    names.append(("test_batch", n_test, "testing batch 1 of 1"))
    for file, n, label in names:
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        batch = {
            b"batch_label": label.encode(),
            b"labels": [int(v) for v in labels],
            b"data": _cifar_images(rng, labels),
            b"filenames": [f"standin_{file}_{i}.png".encode() for i in range(n)],
        }
        with open(batches / file, "wb") as handle:
            pickle.dump(batch, handle, protocol=2)
    meta = {
        b"num_cases_per_batch": per_batch,
        b"label_names": [name.encode() for name in CIFAR10_CLASSES],
        b"num_vis": 3072,
    }
    with open(batches / "batches.meta", "wb") as handle:
        pickle.dump(meta, handle, protocol=2)
    return folder


def write_tiny_open_clip(path: Path, seed: int = 0) -> Path:
    """A random-init open_clip ``TinyCLIP-test`` state dict saved as a checkpoint file."""
    import open_clip
    import torch

    from tpccma_lib.models.open_clip_backend import register_bundled_configs

    register_bundled_configs()
    torch.manual_seed(seed)
    model = open_clip.create_model("TinyCLIP-test")
    torch.save(model.state_dict(), path)
    return path


def write_standins(folder: Path) -> StandIns:
    """Write every stand-in under ``folder`` and say where."""
    data = folder / "data"
    write_coco(data / "coco")
    write_cifar10(data / "cifar10")
    return StandIns(data_root=data, checkpoint=write_tiny_open_clip(folder / "tiny-open-clip.pt"))
