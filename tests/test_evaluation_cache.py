"""The role-evaluation cache: a hit is the stored call (rows, decoders, random state after it);
any changed input recomputes; a bad entry or a failed write loses nothing."""

from __future__ import annotations

import os
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from tpccma_lib.data.config import DataConfig
from tpccma_lib.evaluation import evaluation_cache
from tpccma_lib.evaluation.captioning import CaptionDecoderConfig, train_text_decoder
from tpccma_lib.evaluation.model_report import EvalConfig
from tpccma_lib.experiment import Experiment
from tpccma_lib.models.config import ModelConfig

CAPTIONS = ["a red circle", "a blue square", "a green triangle", "a red square"] * 4


def _seed(seed: int = 0) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - the legacy global state the cache restores
    random.seed(seed)


def _draws() -> tuple[float, float, float]:
    """One number from each global generator (what code after the evaluation would see)."""
    return float(torch.rand(1)), float(np.random.rand()), random.random()  # noqa: NPY002


class _Counting:
    """Stand-ins for the two slow steps of evaluate_roles, which draw from the global
    generators (as k-means seeding or a decoder's noise might) and count their calls."""

    def __init__(self) -> None:
        self.fits = 0
        self.evaluations = 0

    def fit(self, exp: Any, model: Any, cfg: Any, progress: bool = False) -> Any:
        self.fits += 1
        text = torch.randn(len(CAPTIONS), 8).numpy()
        decoder_cfg = CaptionDecoderConfig(d_model=16, n_heads=2, steps=3, warmup_steps=1)
        return train_text_decoder(text, CAPTIONS, decoder_cfg, seed=cfg.seed, progress=False)

    def evaluate(self, exp: Any, model: Any, **kw: Any) -> pd.DataFrame:
        self.evaluations += 1
        frame = pd.DataFrame(
            {
                "task": ["gap", "zero_shot"],
                "metric": ["raw_gap", "accuracy"],
                "value": [float(torch.rand(1)), float(np.random.rand())],  # noqa: NPY002
                "posthoc": [kw["posthoc"]] * 2,
                "checkpoint": [kw["checkpoint"]] * 2,
                "n": np.array([8, 8], dtype=np.int64),
            }
        )
        for key, value in kw["label"].items():
            frame[key] = value
        return frame


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> _Counting:
    import tpccma_lib.evaluation.model_report as model_report

    fake = _Counting()
    monkeypatch.setattr(model_report, "fit_caption_decoder", fake.fit)
    monkeypatch.setattr(model_report, "evaluate_model", fake.evaluate)
    return fake


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory) -> tuple[Experiment, dict[str, Any]]:
    """A real experiment on tiny captioned shapes and two real (untrained) models."""
    exp = Experiment(
        DataConfig(n_train=24, n_val=8, n_test=8, seed=0),
        ModelConfig(embed_dim=8, init_seed=0),
        runs_dir=tmp_path_factory.mktemp("runs"),
        progress=False,
    )
    base, tuned = exp.new_model(), exp.new_model()
    with torch.no_grad():
        next(p for p in tuned.parameters() if p.requires_grad).add_(0.01)
    return exp, {"base": (base, "runs/base/final.pt"), "finetuned": (tuned, "ft/final.pt")}


def _evaluate(exp: Experiment, models: dict[str, Any], cache: Path, **changes: Any) -> Any:
    from tpccma_lib.evaluation.roles import evaluate_roles

    args = {
        "posthoc": {"base": ["shift"]},
        "cfg": EvalConfig(clustering_seeds=(0,), seed=0),
        "label": {"alpha_target": 0.5},
        **changes,
    }
    return evaluate_roles(exp, models, args["posthoc"], args["cfg"], args["label"], cache_dir=cache)


def test_a_hit_is_the_stored_call(counting: _Counting, setting: Any, tmp_path: Path) -> None:
    exp, models = setting
    _seed()
    first = _evaluate(exp, models, tmp_path)
    after_first = _draws()
    assert (counting.fits, counting.evaluations) == (2, 3)
    assert first.reused_from is None

    _seed()
    second = _evaluate(exp, models, tmp_path)
    after_second = _draws()
    assert (counting.fits, counting.evaluations) == (2, 3)  # nothing recomputed
    assert second.reused_from is not None and second.reused_from.parent == tmp_path
    pd.testing.assert_frame_equal(second.rows, first.rows, check_exact=True)
    assert list(second.rows.dtypes) == list(first.rows.dtypes)
    assert after_second == after_first  # the generators continue as after the computation
    embeddings = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    for role in models:
        assert second.decoders[role].generate(embeddings) == first.decoders[role].generate(
            embeddings
        )
        for name, tensor in first.decoders[role].network.state_dict().items():
            assert torch.equal(second.decoders[role].network.state_dict()[name], tensor)


@pytest.mark.parametrize(
    "change",
    ["label", "posthoc", "eval_config", "weights", "checkpoint", "random_state", "data", "library"],
)
def test_any_changed_input_recomputes(
    change: str,
    counting: _Counting,
    setting: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exp, models = setting
    _seed()
    _evaluate(exp, models, tmp_path)
    calls = counting.evaluations
    changes: dict[str, Any] = {}
    _seed()
    if change == "label":
        changes["label"] = {"alpha_target": 0.2}
    elif change == "posthoc":
        changes["posthoc"] = {"base": ["shift", "coral"]}
    elif change == "eval_config":
        changes["cfg"] = EvalConfig(clustering_seeds=(0,), seed=1)
    elif change == "weights":
        other = exp.new_model()
        with torch.no_grad():
            next(p for p in other.parameters() if p.requires_grad).add_(0.02)
        models = {**models, "finetuned": (other, models["finetuned"][1])}
    elif change == "checkpoint":
        models = {**models, "finetuned": (models["finetuned"][0], "elsewhere/final.pt")}
    elif change == "random_state":
        _seed(1)
    elif change == "data":
        monkeypatch.setattr(exp, "data", replace(exp.data, captions="all"))
    elif change == "library":
        monkeypatch.setattr(evaluation_cache, "library_digest", lambda: "edited")
    result = _evaluate(exp, models, tmp_path, **changes)
    assert result.reused_from is None
    assert counting.evaluations > calls
    assert len([p for p in tmp_path.iterdir() if not p.name.startswith(".")]) == 2


def test_workers_and_progress_do_not_change_the_key(setting: Any) -> None:
    exp, models = setting
    cfg = EvalConfig(clustering_seeds=(0,))
    _seed()
    key = evaluation_cache.evaluation_key(exp, models, {}, cfg, None)
    fewer = Experiment(replace(exp.data, workers=0), exp.model_config, exp.runs_dir, progress=True)
    _seed()
    assert evaluation_cache.evaluation_key(fewer, models, {}, cfg, None) == key
    assert set(key) == {
        "format",
        "library",
        "versions",
        "arithmetic",
        "data",
        "splits",
        "model_config",
        "roles",
        "eval_config",
        "label",
        "random_state",
    }
    assert key["arithmetic"]["torch_threads"] == torch.get_num_threads()


def test_library_digest_reads_every_file_but_compiled_ones(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "pkg" / "configs.json").write_text("{}")
    digest = evaluation_cache.library_digest(tmp_path / "pkg")
    (tmp_path / "pkg" / "__pycache__" / "a.cpython-311.pyc").write_bytes(b"\0")
    assert evaluation_cache.library_digest(tmp_path / "pkg") == digest
    (tmp_path / "pkg" / "configs.json").write_text("{ }")
    assert evaluation_cache.library_digest(tmp_path / "pkg") != digest
    assert len(evaluation_cache.library_digest()) == 20  # the installed package itself


def test_an_unreadable_entry_is_removed_and_recomputed(
    counting: _Counting, setting: Any, tmp_path: Path
) -> None:
    exp, models = setting
    _seed()
    first = _evaluate(exp, models, tmp_path)
    (entry,) = [p for p in tmp_path.iterdir()]
    (entry / "evaluation.pkl").write_bytes(b"not a pickle")
    _seed()
    with pytest.warns(UserWarning, match="unreadable cached evaluation"):
        again = _evaluate(exp, models, tmp_path)
    assert again.reused_from is None and counting.evaluations == 6
    pd.testing.assert_frame_equal(again.rows, first.rows, check_exact=True)
    _seed()
    assert _evaluate(exp, models, tmp_path).reused_from == entry  # stored anew


def test_a_failed_write_leaves_nothing_and_keeps_the_result(
    counting: _Counting, setting: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tpccma_lib.evaluation.captioning import TextDecoder

    def full_disk(self: Any, path: Any) -> None:
        Path(path).write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(TextDecoder, "save", full_disk)
    exp, models = setting
    _seed()
    with pytest.warns(UserWarning, match="could not store the evaluation"):
        result = _evaluate(exp, models, tmp_path)
    assert len(result.rows) == 6 and set(result.decoders) == {"base", "finetuned"}
    assert list(tmp_path.iterdir()) == []  # neither an entry nor a temporary folder


def test_temporary_folders_of_dead_writers_are_removed(
    counting: _Counting, setting: Any, tmp_path: Path
) -> None:
    dead = tmp_path / ".0123abcd.999999999.tmp"  # no such process
    live = tmp_path / f".0123abcd.{os.getpid()}.tmp"
    for folder in (dead, live):
        folder.mkdir()
    exp, models = setting
    _seed()
    _evaluate(exp, models, tmp_path)
    assert not dead.exists() and live.exists()
