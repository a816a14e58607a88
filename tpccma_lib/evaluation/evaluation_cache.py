"""Reuse of a role evaluation that already ran on the same inputs (notebook 04's slow cell).

:func:`~tpccma_lib.evaluation.roles.evaluate_roles` trains a caption decoder per model and per
post-hoc fix and scores every task: minutes on 2 cores. Re-running notebook 04 after a kernel
restart, or the test command's nbval after ``make run``, would repeat exactly that work. An entry
of this cache holds what one call returned (its rows, exactly, and its caption decoders) under a
key of everything the result depends on (:func:`evaluation_key`):

* the code: a digest of every file of the installed ``tpccma_lib`` and the versions of the
  numerical libraries;
* the arithmetic: the machine and processor (model name, feature flags), torch's thread count
  and CPU kernel level, and the environment variables that pin the kernels
  (:data:`~tpccma_lib.app.notebooks.STORED_OUTPUT_ENV`);
* the inputs: the data and model settings, a content fingerprint of every split the evaluation
  reads, each role's name, checkpoint text, weights digest and post-hoc fixes, the
  :class:`~tpccma_lib.evaluation.model_report.EvalConfig`, the row labels;
* the global random state (torch, numpy, ``random``) at the call.

A hit returns the stored rows and decoders and sets the global random state to what it was when
the stored call returned, so the code after it runs as if the evaluation had run. Anything else
(a changed input, a missing or unreadable entry) recomputes. Entries are written to a temporary
folder and renamed into place, so a reader never sees half an entry; ``rm -r`` of the cache
folder (``make clean``) is always safe.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pickle
import platform
import random
import shutil
import warnings
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from tpccma_lib.atomic import remove_stale_temp_files

if TYPE_CHECKING:
    from tpccma_lib.evaluation.model_report import EvalConfig
    from tpccma_lib.evaluation.roles import RunEvaluation
    from tpccma_lib.experiment import Experiment

__all__ = [
    "CACHE_FORMAT",
    "cached_evaluation",
    "evaluation_key",
    "key_digest",
    "library_digest",
    "load_entry",
    "store_entry",
]

#: Version of the entry layout; a new layout never reads an old entry.
CACHE_FORMAT = "tpccma-role-evaluation-v1"
_VERSIONED = ("numpy", "pandas", "scipy", "scikit-learn", "torch", "open_clip_torch")
_KEY_FILE, _EVALUATION_FILE = "key.json", "evaluation.pkl"


def library_digest(package: str | os.PathLike[str] | None = None) -> str:
    """A digest of every file under ``package`` (default: the imported ``tpccma_lib``, its code
    and data), compiled ``__pycache__`` files left out."""
    package = Path(package) if package is not None else Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for path in sorted(package.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        h.update(f"{path.relative_to(package).as_posix()}|{path.stat().st_size}|".encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:20]


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _processor() -> dict[str, str]:
    """The processor's model name and a digest of its feature flags (``/proc/cpuinfo`` on
    Linux: a virtual machine may name every generation alike), else ``platform.processor()``."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            name, _, value = line.partition(":")
            info.setdefault(name.strip(), value.strip())  # the first processor's fields
    except OSError:
        pass
    flags = " ".join(sorted(info.get("flags", "").split()))
    return {
        "model": info.get("model name", platform.processor()),
        "flags": hashlib.sha256(flags.encode()).hexdigest()[:12],
    }


def _arithmetic() -> dict[str, Any]:
    """What decides the last digits on this machine: processor, threads, kernel pins."""
    from tpccma_lib.app.notebooks import STORED_OUTPUT_ENV

    names = sorted({*STORED_OUTPUT_ENV, "OMP_NUM_THREADS", "MKL_NUM_THREADS"})
    return {
        "machine": platform.machine(),
        "processor": _processor(),
        "torch_threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "environment": {name: os.environ.get(name) for name in names},
    }


def _rng_state() -> dict[str, Any]:
    """The global random state: torch (CPU and initialised CUDA devices), numpy, ``random``."""
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),  # noqa: NPY002 - the legacy global state
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])  # noqa: NPY002 - the legacy global state
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _rng_digest(state: dict[str, Any]) -> str:
    return hashlib.sha256(pickle.dumps(_plain(state))).hexdigest()[:20]


def _plain(value: Any) -> Any:
    """Tensors and arrays -> bytes, containers recursively (a stable pickle for hashing)."""
    if isinstance(value, torch.Tensor):
        return value.cpu().numpy().tobytes()
    if isinstance(value, np.ndarray):
        return value.tobytes()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def evaluation_key(
    exp: Experiment,
    models: dict[str, tuple[Any, str]],
    posthoc: dict[str, Any] | None,
    cfg: EvalConfig,
    label: dict[str, Any] | None,
) -> dict[str, Any]:
    """Everything the result of ``evaluate_roles(exp, models, posthoc, cfg, label)`` depends on,
    as a JSON-able dict (its :func:`key_digest` names the entry). Arguments as there."""
    from tpccma_lib.data.features import dataset_fingerprint
    from tpccma_lib.training.loop import weights_digest

    data = dataclasses.asdict(exp.data)
    data.pop("workers", None)  # how many processes decode images: not what they decode
    splits = {name: dataset_fingerprint(exp.split(name)) for name in ("train", "val", "test")}
    splits["zero_shot"] = dataset_fingerprint(exp.zero_shot_split())
    roles = [
        {
            "role": role,
            "checkpoint": str(checkpoint),
            "weights": weights_digest(model),
            "posthoc": list((posthoc or {}).get(role, ())),
        }
        for role, (model, checkpoint) in models.items()
    ]
    key = {
        "format": CACHE_FORMAT,
        "library": library_digest(),
        "versions": _versions(),
        "arithmetic": _arithmetic(),
        "data": data,
        "splits": splits,
        "model_config": exp.model_config.to_dict(),
        "roles": roles,
        "eval_config": dataclasses.asdict(cfg),
        "label": label or {},
        "random_state": _rng_digest(_rng_state()),
    }
    return json.loads(json.dumps(key, sort_keys=True, default=str))  # as key.json reads back


def key_digest(key: dict[str, Any]) -> str:
    """The entry's folder name: 24 hex digits of the key's SHA-256."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]


def load_entry(cache_dir: str | os.PathLike[str], key: dict[str, Any]) -> RunEvaluation | None:
    """The stored evaluation of ``key`` (global random state set as it was after it), or None
    when there is none. An entry that cannot be read is removed, with a warning."""
    from tpccma_lib.evaluation.captioning import TextDecoder
    from tpccma_lib.evaluation.roles import RunEvaluation

    entry = Path(cache_dir) / key_digest(key)
    if not (entry / _KEY_FILE).is_file():
        return None
    try:
        stored_key = json.loads((entry / _KEY_FILE).read_text(encoding="utf-8"))
        if json.dumps(stored_key, sort_keys=True) != json.dumps(key, sort_keys=True):
            return None  # a digest collision, or an entry edited by hand
        with open(entry / _EVALUATION_FILE, "rb") as f:
            stored = pickle.load(f)
        decoders = {
            role: TextDecoder.load(entry / name) if name else None
            for role, name in stored["decoder_files"].items()
        }
    except Exception as exc:  # noqa: BLE001 - any unreadable entry is recomputed, not fatal
        warnings.warn(
            f"removed the unreadable cached evaluation {entry} ({type(exc).__name__}: {exc}); "
            "recomputing it.",
            stacklevel=2,
        )
        shutil.rmtree(entry, ignore_errors=True)
        return None
    _set_rng_state(stored["rng_after"])
    return RunEvaluation(stored["rows"], decoders, reused_from=entry)


def store_entry(
    cache_dir: str | os.PathLike[str], key: dict[str, Any], evaluation: RunEvaluation
) -> Path:
    """Write ``evaluation`` under ``key``, with the global random state now (call it right after
    the evaluation: a hit restores this state).

    The entry is written to ``.<digest>.<pid>.tmp/`` and renamed into place; on failure nothing
    is left behind. An entry already there (another process stored the same key) is kept.
    Returns the entry's folder.
    """
    cache_dir = Path(cache_dir)
    rng_after = _rng_state()
    cache_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(cache_dir)  # of writers that died before renaming theirs
    digest = key_digest(key)
    entry, tmp = cache_dir / digest, cache_dir / f".{digest}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        decoder_files: dict[str, str | None] = {}
        for i, (role, decoder) in enumerate(evaluation.decoders.items()):
            decoder_files[role] = None
            if decoder is not None:
                decoder_files[role] = f"decoder-{i}.pt"
                decoder.save(tmp / decoder_files[role])
        stored = {
            "rows": evaluation.rows,
            "decoder_files": decoder_files,
            "rng_after": rng_after,
        }
        with open(tmp / _EVALUATION_FILE, "wb") as f:
            pickle.dump(stored, f, protocol=pickle.HIGHEST_PROTOCOL)
        (tmp / _KEY_FILE).write_text(json.dumps(key, sort_keys=True, indent=1), encoding="utf-8")
        try:
            os.replace(tmp, entry)
        except OSError:
            if not (entry / _KEY_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return entry


def cached_evaluation(
    cache_dir: str | os.PathLike[str],
    key: dict[str, Any],
    compute: Callable[[], RunEvaluation],
) -> RunEvaluation:
    """``compute()``'s result under ``key``: stored when missing, reused when present (then its
    ``reused_from`` names the entry)."""
    stored = load_entry(cache_dir, key)
    if stored is not None:
        return stored
    evaluation = compute()
    try:
        store_entry(cache_dir, key, evaluation)
    except OSError as exc:  # a full disk or a read-only runs folder costs reuse, not the result
        warnings.warn(f"could not store the evaluation in {cache_dir}: {exc}", stacklevel=2)
    return evaluation
