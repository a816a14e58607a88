"""Tests for the COCO and CIFAR-10 loaders and for ``prepare``, on tiny files in the real formats.

Nothing here touches the network: downloads go through a fake downloader that copies a
local archive, or through the default downloader on a ``file://`` URL.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tpccma_lib.data import (
    DATASETS,
    CaptionedImageSet,
    DataSetError,
    ImageFileSequence,
    PrepareError,
    RemoteFile,
    data_root,
    is_prepared,
    load_cifar10,
    load_coco_karpathy,
    prepare,
    prepare_files,
)
from tpccma_lib.data.prepare import urllib_downloader

CIFAR_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck")  # fmt: skip


# ------------------------------------------------------------------ COCO


def _write_coco(root: Path) -> dict[str, np.ndarray]:
    """Two val2014 JPEGs (one RGB, one greyscale) and a Karpathy JSON; returns the pixels."""
    (root / "val2014").mkdir(parents=True)
    (root / "train2014").mkdir()
    rng = np.random.default_rng(0)
    pixels = {
        "COCO_val2014_000000000001.jpg": np.full((20, 30, 3), (200, 30, 60), np.uint8),
        "COCO_val2014_000000000002.jpg": rng.integers(90, 110, (16, 12), dtype=np.uint8),
        "COCO_train2014_000000000003.jpg": np.full((8, 8, 3), (10, 200, 10), np.uint8),
    }
    for name, array in pixels.items():
        folder = "train2014" if "train" in name else "val2014"
        Image.fromarray(array).save(root / folder / name, quality=95)
    entries = [
        {
            "filepath": "val2014",
            "filename": "COCO_val2014_000000000001.jpg",
            "split": "test",
            "cocoid": 1,
            "sentences": [{"raw": f" A red picture number {k}. "} for k in range(6)],
        },
        {
            "filepath": "val2014",
            "filename": "COCO_val2014_000000000002.jpg",
            "split": "restval",
            "cocoid": 2,
            "sentences": [{"raw": "A grey square."}, {"raw": "Some noise."}],
        },
        {
            "filepath": "train2014",
            "filename": "COCO_train2014_000000000003.jpg",
            "split": "train",
            "cocoid": 3,
            "sentences": [{"raw": "A green patch."}],
        },
    ]
    (root / "dataset_coco.json").write_text(json.dumps({"images": entries}))
    return pixels


def test_coco_test_split(tmp_path):
    pixels = _write_coco(tmp_path)
    data = load_coco_karpathy(tmp_path, split="test")
    assert isinstance(data, CaptionedImageSet)
    assert data.name == "coco-karpathy" and len(data) == 1
    assert data.captions == [[f"A red picture number {k}." for k in range(5)]]
    np.testing.assert_array_equal(data.labels, [-1])
    assert data.class_names == () and not data.has_labels
    assert isinstance(data.images, ImageFileSequence)
    image = data.images[0]
    assert image.shape == (20, 30, 3) and image.dtype == np.uint8
    expected = pixels["COCO_val2014_000000000001.jpg"].astype(int)
    assert np.abs(image.astype(int) - expected).max() <= 8  # JPEG is lossy
    assert data.attributes == [{"cocoid": 1, "file": "val2014/COCO_val2014_000000000001.jpg"}]


def test_coco_train_includes_restval_and_converts_grey_to_rgb(tmp_path):
    pixels = _write_coco(tmp_path)
    data = load_coco_karpathy(tmp_path, split="train", captions_per_image=1)
    assert [r["cocoid"] for r in data.attributes] == [2, 3]
    assert data.captions == [["A grey square."], ["A green patch."]]
    grey = data.images[0]
    assert grey.shape == (16, 12, 3)
    np.testing.assert_array_equal(grey[..., 0], grey[..., 1])
    original = pixels["COCO_val2014_000000000002.jpg"].astype(int)
    assert np.abs(grey[..., 0].astype(int) - original).mean() < 4
    texts, text_to_image = data.flat_captions()
    assert texts == ["A grey square.", "A green patch."] and text_to_image.tolist() == [0, 1]
    first = load_coco_karpathy(tmp_path, split="train", max_images=1)
    assert len(first) == 1 and first.captions[0] == ["A grey square.", "Some noise."]
    assert len(data.images[1:]) == 1 and data.images[1:][0].shape == (8, 8, 3)


def test_coco_errors_name_the_missing_thing(tmp_path):
    with pytest.raises(DataSetError, match="does not exist.*tpccma prepare coco"):
        load_coco_karpathy(tmp_path / "nowhere")
    with pytest.raises(DataSetError, match="dataset_coco.json is missing.*tpccma prepare coco"):
        load_coco_karpathy(tmp_path)
    _write_coco(tmp_path)
    (tmp_path / "val2014" / "COCO_val2014_000000000001.jpg").unlink()
    with pytest.raises(DataSetError, match="COCO_val2014_000000000001.jpg is missing"):
        load_coco_karpathy(tmp_path, split="test")
    with pytest.raises(DataSetError, match="unknown COCO split"):
        load_coco_karpathy(tmp_path, split="restval")
    with pytest.raises(DataSetError, match="no images in split 'val'"):
        load_coco_karpathy(tmp_path, split="val")
    (tmp_path / "dataset_coco.json").write_text("[1, 2]")
    with pytest.raises(DataSetError, match="not a Karpathy caption file"):
        load_coco_karpathy(tmp_path, split="train")


def test_image_file_sequence_reports_missing_file(tmp_path):
    images = ImageFileSequence([tmp_path / "gone.jpg"])
    with pytest.raises(DataSetError, match="gone.jpg is missing"):
        images[0]


# ------------------------------------------------------------------ CIFAR-10


def _cifar_batch(images: np.ndarray, labels: list[int]) -> dict[bytes, object]:
    # the documented layout: each row is the R plane, then G, then B, each 32x32 row-major
    data = np.concatenate([images[..., c].reshape(len(images), -1) for c in range(3)], axis=1)
    return {b"data": data, b"labels": labels, b"batch_label": b"testing batch"}


def _write_cifar(folder: Path, n_test: int = 4, n_per_train_batch: int = 2) -> dict:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    arrays = {}
    names = {"test_batch": n_test} | {f"data_batch_{k}": n_per_train_batch for k in range(1, 6)}
    for name, n in names.items():
        images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        arrays[name] = (images, labels)
        with open(folder / name, "wb") as handle:
            pickle.dump(_cifar_batch(images, labels), handle)
    meta = {b"label_names": [n.encode() for n in CIFAR_NAMES], b"num_cases_per_batch": 10000}
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump(meta, handle)
    return arrays


def test_cifar10_test_split(tmp_path):
    arrays = _write_cifar(tmp_path / "cifar-10-batches-py")
    data = load_cifar10(tmp_path, split="test")
    images, labels = arrays["test_batch"]
    assert data.images.shape == (4, 32, 32, 3) and data.images.dtype == np.uint8
    np.testing.assert_array_equal(data.images, images)
    np.testing.assert_array_equal(data.labels, labels)
    assert data.labels.dtype == np.int64
    assert data.class_names == CIFAR_NAMES
    assert data.captions == [[], [], [], []]
    assert data.flat_captions()[0] == []
    assert len(data.prompt_templates) >= 5
    assert all("{}" in t for t in data.prompt_templates)
    assert data.has_labels and data.name == "cifar10"
    # the batch folder itself works as root too
    same = load_cifar10(tmp_path / "cifar-10-batches-py", split="test", max_images=3)
    np.testing.assert_array_equal(same.images, images[:3])


def test_cifar10_train_concatenates_batches(tmp_path):
    arrays = _write_cifar(tmp_path / "cifar-10-batches-py")
    data = load_cifar10(tmp_path, split="train")
    expected = np.concatenate([arrays[f"data_batch_{k}"][0] for k in range(1, 6)])
    np.testing.assert_array_equal(data.images, expected)
    part = load_cifar10(tmp_path, split="train", max_images=3)
    np.testing.assert_array_equal(part.images, expected[:3])


def test_cifar10_errors(tmp_path):
    with pytest.raises(DataSetError, match="does not exist.*tpccma prepare cifar10"):
        load_cifar10(tmp_path)
    _write_cifar(tmp_path / "cifar-10-batches-py")
    with pytest.raises(DataSetError, match="unknown CIFAR-10 split"):
        load_cifar10(tmp_path, split="val")
    with pytest.raises(DataSetError, match="max_images"):
        load_cifar10(tmp_path, max_images=0)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataSetError, match="not a CIFAR-10 python batch"):
        load_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataSetError, match="test_batch is missing"):
        load_cifar10(tmp_path)


# ------------------------------------------------------------------ prepare


def _cifar_tarball(tmp_path: Path) -> tuple[Path, str]:
    """A tiny cifar-10-python.tar.gz in the real layout, and its md5."""
    source = tmp_path / "source"
    _write_cifar(source / "cifar-10-batches-py")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as bundle:
        bundle.add(source / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return archive, hashlib.md5(archive.read_bytes()).hexdigest()


class CopyDownloader:
    """Serves every URL from one local file, and records what it was asked for."""

    def __init__(self, source: Path) -> None:
        self.source, self.calls = source, []

    def __call__(self, url: str, destination: Path) -> None:
        self.calls.append((url, destination.name))
        shutil.copyfile(self.source, destination)


def test_prepare_cifar10_with_fake_downloader(tmp_path, monkeypatch):
    archive, md5 = _cifar_tarball(tmp_path)
    real = DATASETS["cifar10"][0]
    fake_entry = RemoteFile(real.url, real.filename, f"md5:{md5}", True, real.provides)
    monkeypatch.setitem(DATASETS, "cifar10", (fake_entry,))
    downloader = CopyDownloader(archive)
    root = tmp_path / "data"
    assert not is_prepared("cifar10", root)
    folder = prepare("cifar10", root=root, downloader=downloader)
    assert folder == root / "cifar10"
    assert downloader.calls == [(real.url, "cifar-10-python.tar.gz.part")]
    assert is_prepared("cifar10", root)
    assert not (folder / "cifar-10-python.tar.gz").exists()  # archive removed after unpacking
    assert sorted(p.name for p in folder.iterdir()) == ["cifar-10-batches-py"]
    assert len(load_cifar10(folder, split="test")) == 4
    prepare("cifar10", root=root, downloader=downloader)  # nothing missing: no download
    assert len(downloader.calls) == 1


def test_prepare_checksum_mismatch_leaves_no_file(tmp_path):
    archive, _ = _cifar_tarball(tmp_path)  # not the real CIFAR tarball: md5 differs
    root = tmp_path / "data"
    with pytest.raises(PrepareError, match="Checksum mismatch") as info:
        prepare("cifar10", root=root, downloader=CopyDownloader(archive))
    message = str(info.value)
    assert DATASETS["cifar10"][0].url in message and str(root / "cifar10") in message
    assert list((root / "cifar10").iterdir()) == []  # neither .part nor final file
    assert not is_prepared("cifar10", root)


def test_prepare_offline_error_names_url_and_folder(tmp_path):
    def offline(url: str, destination: Path) -> None:
        destination.write_bytes(b"half a file")
        raise OSError("Network is unreachable")

    with pytest.raises(PrepareError, match="Could not download") as info:
        prepare("coco", root=tmp_path, downloader=offline)
    message = str(info.value)
    assert "caption_datasets.zip" in message and "Network is unreachable" in message
    assert str(tmp_path / "coco") in message and "tpccma prepare coco" in message
    assert list((tmp_path / "coco").iterdir()) == []


def test_default_downloader_on_a_file_url_and_zip_with_wrapper_folder(tmp_path):
    archive = tmp_path / "captions.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("captions/dataset_coco.json", json.dumps({"images": []}))
        bundle.writestr("captions/dataset_flickr8k.json", "{}")
    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    remote = RemoteFile(archive.as_uri(), "captions.zip", f"sha256:{sha}", True,
                        "dataset_coco.json")  # fmt: skip
    folder = prepare_files([remote], tmp_path / "coco", "coco", keep_archives=True)
    assert json.loads((folder / "dataset_coco.json").read_text()) == {"images": []}
    assert (folder / "dataset_flickr8k.json").is_file()
    assert (folder / "captions.zip").read_bytes() == archive.read_bytes()
    assert not any(p.name.startswith(".unpacking") for p in folder.iterdir())


def test_plain_file_without_extraction(tmp_path):
    source = tmp_path / "weights.bin"
    source.write_bytes(b"0123456789")
    md5 = hashlib.md5(b"0123456789").hexdigest()
    remote = RemoteFile("fake://weights", "weights.bin", f"md5:{md5}", False, "weights.bin")
    folder = prepare_files([remote], tmp_path / "out", downloader=CopyDownloader(source))
    assert (folder / "weights.bin").read_bytes() == b"0123456789"


def test_hand_placed_archive_is_verified_not_downloaded(tmp_path):
    archive, md5 = _cifar_tarball(tmp_path)
    folder = tmp_path / "data" / "cifar10"
    folder.mkdir(parents=True)
    shutil.copyfile(archive, folder / "cifar-10-python.tar.gz")
    remote = RemoteFile("fake://x", "cifar-10-python.tar.gz", f"md5:{md5}", True,
                        "cifar-10-batches-py")  # fmt: skip
    downloader = CopyDownloader(archive)
    prepare_files([remote], folder, "cifar10", downloader)
    assert downloader.calls == []
    assert (folder / "cifar-10-batches-py" / "test_batch").is_file()
    bad = RemoteFile("fake://y", "other.tar.gz", "md5:" + "0" * 32, True, "other")
    shutil.copyfile(archive, folder / "other.tar.gz")
    with pytest.raises(PrepareError, match="does not match its checksum"):
        prepare_files([bad], folder, "cifar10", downloader)
    assert (folder / "other.tar.gz").exists()  # a hand-placed file is never deleted


def test_archive_escaping_its_folder_is_refused(tmp_path):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as bundle:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 3
        bundle.addfile(info, io.BytesIO(b"bad"))
    remote = RemoteFile("fake://evil", "evil.tar", None, True, "escaped.txt")
    with pytest.raises(PrepareError, match="outside"):
        prepare_files([remote], tmp_path / "out", downloader=CopyDownloader(archive))
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "out" / "escaped.txt").exists()


def test_archive_without_expected_content(tmp_path):
    archive = tmp_path / "wrong.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("something_else.json", "{}")
    remote = RemoteFile("fake://wrong", "wrong.zip", None, True, "dataset_coco.json")
    with pytest.raises(PrepareError, match="did not contain dataset_coco.json"):
        prepare_files([remote], tmp_path / "out", downloader=CopyDownloader(archive))
    assert not (tmp_path / "out" / "something_else.json").exists()


def test_registry_and_data_root(tmp_path, monkeypatch):
    assert DATASETS["cifar10"][0].checksum == "md5:c58f30108f718f92721af3b95e74349a"
    coco_files = {f.filename for f in DATASETS["coco"]}
    assert {"train2014.zip", "val2014.zip", "caption_datasets.zip"} <= coco_files
    with pytest.raises(PrepareError, match="unknown data set"):
        prepare("imagenet", root=tmp_path)
    monkeypatch.setenv("TPCCMA_DATA", str(tmp_path / "elsewhere"))
    assert data_root() == tmp_path / "elsewhere"
    assert not is_prepared("coco")
    _write_cifar(tmp_path / "elsewhere" / "cifar10" / "cifar-10-batches-py")
    assert len(load_cifar10(split="test")) == 4  # default root follows TPCCMA_DATA
    monkeypatch.delenv("TPCCMA_DATA")
    assert data_root().name == "data"


def test_urllib_downloader_writes_the_bytes(tmp_path):
    source = tmp_path / "a.bin"
    source.write_bytes(bytes(range(256)) * 10)
    target = tmp_path / "b.bin"
    urllib_downloader(source.as_uri(), target)
    assert target.read_bytes() == source.read_bytes()
