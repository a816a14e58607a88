"""`tpccma prepare clip NAME TAG`: open_clip weights fetched once into the cache, or one clear line."""

from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
from huggingface_hub import constants as hf_constants

from tpccma_lib.app.cli import main
from tpccma_lib.models import weights

VIT_HUB_REPO = "models--timm--vit_base_patch32_clip_224.openai"


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, and open_clip's downloader must not be reached."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))

    def no_network(*args, **kwargs):
        raise AssertionError("offline: open_clip.download_pretrained must not be called")

    monkeypatch.setattr(open_clip, "download_pretrained", no_network)
    return cache


def test_offline_is_one_line_that_says_what_to_do(empty_hf_cache, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    assert main(["prepare", "clip", "ViT-B-32", "openai"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert err.startswith("tpccma prepare: error: cannot fetch the pretrained weights ViT-B-32/")
    assert "no internet (HF_HUB_OFFLINE is set; unset it to download)" in err
    assert "tpccma prepare clip ViT-B-32 openai" in err and "pretrained=<file>" in err


def test_offline_with_the_weights_cached_succeeds(empty_hf_cache, monkeypatch, capsys):
    snapshot = empty_hf_cache / VIT_HUB_REPO / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "open_clip_model.safetensors").write_bytes(b"weights")
    (empty_hf_cache / VIT_HUB_REPO / "refs").mkdir()
    (empty_hf_cache / VIT_HUB_REPO / "refs" / "main").write_text("abc123")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["prepare", "clip", "ViT-B-32", "openai"]) == 0
    assert str(snapshot / "open_clip_model.safetensors") in capsys.readouterr().out


def test_online_calls_open_clips_own_download_with_name_and_tag(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    target = tmp_path / "open_clip_model.safetensors"
    target.write_bytes(b"weights")
    calls = []

    def fake_download(cfg, prefer_hf_hub=True, cache_dir=None):
        calls.append(cfg)
        return str(target)

    monkeypatch.setattr(open_clip, "download_pretrained", fake_download)
    assert main(["prepare", "clip", "ViT-B-32", "openai"]) == 0
    assert calls == [open_clip.get_pretrained_cfg("ViT-B-32", "openai")]
    assert calls[0]["hf_hub"] == "timm/vit_base_patch32_clip_224.openai/"
    out = capsys.readouterr().out
    assert f"clip ViT-B-32 openai: weights at {target}" in out


def test_a_failed_download_says_no_internet(monkeypatch, capsys):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)

    def unreachable(cfg, prefer_hf_hub=True, cache_dir=None):
        raise ConnectionError("Failed to resolve 'huggingface.co'\nsecond line")

    monkeypatch.setattr(open_clip, "download_pretrained", unreachable)
    assert main(["prepare", "clip", "ViT-B-32", "openai"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "the download failed, no internet? (Failed to resolve 'huggingface.co')" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["clip", "ViT-B-32"], "needs a model name and a pretrained tag"),
        (["clip", "ViT-B-32", "coco"], "needs a model name and a pretrained tag"),
        (["imagenet"], "cannot prepare 'imagenet'"),
        (["clip", "ViT-B-99", "openai"], "unknown open_clip model 'ViT-B-99'"),
        (["clip", "ViT-B-32", "nope"], "'ViT-B-32' has no pretrained tag 'nope'"),
    ],
)
def test_bad_prepare_arguments_are_refused(argv, message, monkeypatch, capsys):
    monkeypatch.setattr(open_clip, "download_pretrained", pytest.fail)
    assert main(["prepare", *argv]) == 2
    assert message in capsys.readouterr().err


def test_data_sets_and_weights_in_one_command(tmp_path, monkeypatch, capsys):
    import tpccma_lib.data

    prepared = []
    monkeypatch.setattr(
        tpccma_lib.data, "prepare", lambda name, root=None: prepared.append(name) or Path(name)
    )
    monkeypatch.setattr(weights, "fetch_open_clip_weights", lambda n, t: Path(f"/cache/{n}-{t}"))
    assert main(["prepare", "coco", "cifar10", "clip", "ViT-B-32", "openai"]) == 0
    assert prepared == ["coco", "cifar10"]
    out = capsys.readouterr().out
    assert "coco: ready at coco" in out and "clip ViT-B-32 openai: weights at /cache/" in out
