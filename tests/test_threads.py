"""What gets cached (tower features, the base model) is computed on one torch thread."""

from __future__ import annotations

import torch

from tpccma_lib.data import features
from tpccma_lib.threads import single_threaded


def test_single_threaded_sets_and_restores() -> None:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with single_threaded():
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        try:
            with single_threaded():
                raise KeyError("inside")
        except KeyError:
            pass
        assert torch.get_num_threads() == 2  # restored after an error too
    finally:
        torch.set_num_threads(before)


class _RecordingTowers:
    """Stands in for a model with a frozen stage; records the thread count it runs under."""

    cacheable_inputs = True
    feature_key = "recording-v1"
    backend = "towers"

    def __init__(self) -> None:
        self.threads: list[int] = []

    def image_inputs(self, images):
        self.threads.append(torch.get_num_threads())
        return torch.ones(len(images), 3)

    def text_inputs(self, texts):
        self.threads.append(torch.get_num_threads())
        return torch.ones(len(texts), 2)


class _TinySet:
    name, split = "tiny", "test"
    images = [b"a", b"b", b"c"]
    captions = [["x"], ["y"], ["z"]]

    def __len__(self) -> int:
        return 3

    def flat_captions(self):
        return ["x", "y", "z"], [0, 1, 2]


def test_feature_extraction_runs_on_one_thread(tmp_path, monkeypatch) -> None:
    model = _RecordingTowers()
    monkeypatch.setattr(features, "dataset_fingerprint", lambda ds: "tiny")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = features.frozen_inputs(model, _TinySet(), cache_dir=tmp_path, progress=False)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert model.threads and set(model.threads) == {1}
    assert out.image.shape == (3, 3) and out.text.shape == (3, 2)
