"""Image decoding in DataLoader workers: same results as the main process, in order."""

import os
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from tpccma_lib.data.base import CaptionedImageSet, ImageFileSequence
from tpccma_lib.data.loading import effective_workers, ordered_map
from tpccma_lib.models import ModelConfig, ModelError, create_model
from tpccma_lib.training.loop import InputSource, TrainConfig, train

TINY = ModelConfig(backend="open_clip", name="TinyCLIP-test")


def _pid_and_square(k: int) -> tuple[int, int]:
    return os.getpid(), k * k


def test_ordered_map_keeps_order_and_runs_in_other_processes():
    keys = list(range(9, -1, -1))
    results = list(ordered_map(_pid_and_square, keys, workers=2))
    assert [r for _, r in results] == [k * k for k in keys]
    assert all(pid != os.getpid() for pid, _ in results)  # computed in the workers
    inline = list(ordered_map(_pid_and_square, keys, workers=0))
    assert {pid for pid, _ in inline} == {os.getpid()}


def test_ordered_map_leaves_the_global_torch_rng_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    list(ordered_map(_pid_and_square, range(4), workers=2))
    assert torch.equal(torch.rand(3), expected)


def test_effective_workers():
    assert effective_workers(4, 1) == 0  # one item: nothing to overlap
    assert effective_workers(0, 100) == 0
    assert effective_workers(1, 100) == 1
    assert effective_workers(10_000, 100) <= (os.cpu_count() or 1)
    with pytest.raises(ValueError, match=">= 0"):
        effective_workers(-1, 10)


@pytest.fixture(scope="module")
def jpeg_set(tmp_path_factory):
    """Six JPEGs of mixed sizes, one greyscale, as COCO has; two captions each."""
    folder = tmp_path_factory.mktemp("jpegs")
    paths = []
    for i, (h, w) in enumerate([(40, 60), (64, 48), (50, 50), (70, 30), (33, 77), (45, 45)]):
        pixels = np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
        if i == 3:
            image = image.convert("L")
        paths.append(folder / f"{i:03d}.jpg")
        image.save(paths[-1], quality=90)
    captions = [[f"image {i} red", f"image {i} blue"] for i in range(len(paths))]
    return CaptionedImageSet(
        "jpegs", "train", ImageFileSequence(paths), captions, np.full(len(paths), -1)
    )


def test_encode_images_with_workers_equals_main_process(jpeg_set):
    model = create_model(TINY)
    inline = model.set_inference(workers=0).encode_images(jpeg_set.images, batch_size=2)
    forked = model.set_inference(workers=2).encode_images(jpeg_set.images, batch_size=2)
    assert inline.shape == (6, model.embed_dim)
    np.testing.assert_array_equal(forked, inline)


def test_set_inference_rejects_bad_values():
    model = create_model(TINY)
    with pytest.raises(ModelError, match="amp"):
        model.set_inference(amp="fp8")
    with pytest.raises(ModelError, match="workers"):
        model.set_inference(workers=-2)


def test_inference_autocast_is_a_no_op_on_cpu():
    model = create_model(TINY).set_inference(amp="bf16")
    with model.inference_autocast():
        out = model.encode_text_inputs(model.text_inputs(["a cat"]))
    assert out.dtype == torch.float32


def test_training_with_decoding_workers_gives_the_same_weights(jpeg_set, tmp_path):
    cfg = TrainConfig(steps=3, batch_size=4, lr=1e-3, warmup_steps=1, log_every=1, device="cpu")
    weights = {}
    for workers in (0, 2):
        torch.manual_seed(0)  # open_clip's random init draws from the global RNG
        model = create_model(TINY)
        source = InputSource.from_dataset(model, jpeg_set)
        assert source.in_workers  # open_clip decodes JPEGs: work for the workers
        run = train(
            model, source, replace(cfg, workers=workers), tmp_path / f"w{workers}", progress=False
        )
        weights[workers] = run.model.trainable_state_dict()
    for name, tensor in weights[0].items():
        assert torch.equal(weights[2][name], tensor), name


def test_workers_do_not_change_a_runs_identity(jpeg_set, tmp_path):
    """A run finished with 0 workers is the run asked for with 2 (returned, not retrained)."""
    cfg = TrainConfig(steps=2, batch_size=4, warmup_steps=1, log_every=1, device="cpu")
    torch.manual_seed(0)
    model = create_model(TINY)
    source = InputSource.from_dataset(model, jpeg_set)
    first = train(model, source, cfg, tmp_path / "run", progress=False)
    assert first.resumed_from_step == 0
    torch.manual_seed(0)  # the same base model
    again = train(
        create_model(TINY), source, replace(cfg, workers=2), tmp_path / "run", progress=False
    )
    assert again.resumed_from_step == cfg.steps  # the finished run, loaded
    for name, tensor in first.model.trainable_state_dict().items():
        assert torch.equal(again.model.trainable_state_dict()[name], tensor), name


def test_data_config_embedding_settings_are_checked_and_not_identity():
    from tpccma_lib.data.config import DataConfig

    base = DataConfig()
    assert DataConfig(amp="bf16", workers=0).identity() == base.identity()
    with pytest.raises(ValueError, match="amp must be"):
        DataConfig(amp="float8")
    with pytest.raises(ValueError, match="workers must be an integer"):
        DataConfig(workers=2.5)


def test_experiment_sets_how_a_model_embeds():
    from tpccma_lib.data.config import DataConfig
    from tpccma_lib.experiment import Experiment

    exp = Experiment(DataConfig(workers=3, device="cpu"), TINY, progress=False)
    model = exp._place(create_model(TINY))
    assert (model.inference_amp, model.inference_workers) == ("none", 3)
    exp = Experiment(DataConfig(amp="bf16", device="cpu"), TINY, progress=False)
    with pytest.warns(UserWarning, match="ignored on device cpu"):
        exp._place(create_model(TINY))
