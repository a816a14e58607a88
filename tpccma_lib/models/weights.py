"""Fetch pretrained open_clip weights once, into the cache that later runs read offline.

``tpccma prepare clip ViT-B-32 openai`` calls :func:`fetch_open_clip_weights`, which asks
open_clip's own downloader (``open_clip.download_pretrained``: the Hugging Face Hub cache,
``$HF_HOME/hub``, or ``~/.cache/clip`` for URL-only tags) for the file of that model and tag and
builds nothing. Later, ``ModelConfig(backend="open_clip", name=..., pretrained=<tag>)`` finds the
file there, also with ``HF_HUB_OFFLINE=1``.

Offline (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` set, or no connection) a file already in
the cache is returned as is; otherwise :class:`WeightsError` says that nothing could be downloaded
and what to do instead (another machine's cache, or a checkpoint file as ``pretrained=<file>``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tpccma_lib.models.base import ModelError

__all__ = ["OFFLINE_VARIABLES", "WeightsError", "cached_weights", "fetch_open_clip_weights"]

#: Environment variables that put the Hugging Face Hub client in offline mode.
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


class WeightsError(ModelError):
    """Pretrained weights could not be fetched; the message says what to do instead."""


def _offline_variables() -> list[str]:
    return [
        v for v in OFFLINE_VARIABLES if os.environ.get(v, "").lower() in ("1", "true", "yes", "on")
    ]


def _pretrained_cfg(name: str, tag: str) -> dict[str, Any]:
    import open_clip

    if name not in open_clip.list_models():
        raise WeightsError(
            f"unknown open_clip model {name!r}; `open_clip.list_models()` lists the names "
            "(e.g. ViT-B-32)."
        )
    tags = open_clip.list_pretrained_tags_by_model(name)
    if tag not in tags:
        raise WeightsError(f"{name!r} has no pretrained tag {tag!r}; known tags: {tags}.")
    return dict(open_clip.get_pretrained_cfg(name, tag))


def cached_weights(
    name: str, tag: str, cache_dir: str | os.PathLike[str] | None = None
) -> Path | None:
    """The file of ``name``/``tag`` already in open_clip's cache, or None (no network use)."""
    cfg = _pretrained_cfg(name, tag)
    if cfg.get("file"):
        return Path(cfg["file"])
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache
        from open_clip.pretrained import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

        model_id, filename = os.path.split(hub)
        filename = filename or HF_WEIGHTS_NAME
        names = [filename]  # open_clip tries a .safetensors twin first, as here
        if filename == HF_WEIGHTS_NAME:
            names.insert(0, HF_SAFE_WEIGHTS_NAME)
        elif filename.endswith((".bin", ".pth")):
            names.insert(0, filename[:-4] + ".safetensors")
        for candidate in names:
            found = try_to_load_from_cache(
                model_id, candidate, cache_dir=str(cache_dir) if cache_dir else None
            )
            if isinstance(found, str):
                return Path(found)
        return None
    url = cfg.get("url", "")
    if url:
        folder = Path(cache_dir) if cache_dir else Path("~/.cache/clip").expanduser()
        path = folder / os.path.basename(url)
        return path if path.is_file() else None
    return None


def _no_download(name: str, tag: str, why: str) -> WeightsError:
    return WeightsError(
        f"cannot fetch the pretrained weights {name}/{tag}: {why}. Run `tpccma prepare clip "
        f"{name} {tag}` on a machine with internet (and copy its Hugging Face cache, "
        "$HF_HOME or ~/.cache/huggingface, here), or download the checkpoint file and pass it "
        "as pretrained=<file>."
    )


def fetch_open_clip_weights(
    name: str, tag: str, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Download the weights of open_clip model ``name`` with pretrained ``tag`` into the cache.

    Returns the path of the cached file (nothing is downloaded when it is already there).

    Raises:
        WeightsError: unknown model or tag, offline mode with an empty cache, or a failed
            download; one line that says what to do.
    """
    import open_clip

    cfg = _pretrained_cfg(name, tag)
    offline = _offline_variables()
    if offline:
        cached = cached_weights(name, tag, cache_dir)
        if cached is not None:
            return cached
        raise _no_download(
            name, tag, f"no internet ({' and '.join(offline)} is set; unset it to download)"
        )
    try:
        target = open_clip.download_pretrained(cfg, cache_dir=str(cache_dir) if cache_dir else None)
    except Exception as exc:  # noqa: BLE001 - network and hub errors come in many types
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _no_download(
            name, tag, f"the download failed, no internet? ({first_line[:200]})"
        ) from exc
    if not target or not Path(target).is_file():
        raise _no_download(name, tag, f"open_clip returned no file ({target!r})")
    return Path(target)
