"""Feature cache: reused when valid, rebuilt (with a warning) when corrupted."""

import numpy as np
import pytest
import torch

from tpccma_lib.data import make_captioned_shapes
from tpccma_lib.data.features import dataset_fingerprint, embed_dataset, frozen_inputs
from tpccma_lib.models import ModelConfig, create_model


@pytest.fixture(scope="module")
def tiny():
    return make_captioned_shapes("test", 6, image_size=64, seed=1), create_model(
        ModelConfig(embed_dim=16)
    )


def test_cache_is_reused_and_matches_direct_computation(tiny, tmp_path):
    ds, model = tiny
    first = frozen_inputs(model, ds, cache_dir=tmp_path, progress=False)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    second = frozen_inputs(model, ds, cache_dir=tmp_path, progress=False)
    assert files[0].stat().st_mtime_ns == mtime
    torch.testing.assert_close(first.image, second.image)
    direct = model.image_inputs([ds.images[i] for i in range(len(ds))])
    torch.testing.assert_close(first.image, direct, atol=1e-5, rtol=1e-5)
    assert first.text.shape == (30, 384)


def test_corrupted_cache_is_rebuilt(tiny, tmp_path):
    ds, model = tiny
    good = frozen_inputs(model, ds, cache_dir=tmp_path, progress=False)
    path = next(tmp_path.glob("*.npz"))
    path.write_bytes(b"garbage, not an npz file")
    with pytest.warns(UserWarning, match="corrupted"):
        again = frozen_inputs(model, ds, cache_dir=tmp_path, progress=False)
    torch.testing.assert_close(good.text, again.text)
    np.load(path)  # rewritten as a valid file


def test_fingerprint_tracks_content():
    a = make_captioned_shapes("test", 4, seed=0)
    b = make_captioned_shapes("test", 4, seed=0)
    c = make_captioned_shapes("test", 4, seed=1)
    assert dataset_fingerprint(a) == dataset_fingerprint(b) != dataset_fingerprint(c)


def test_embed_dataset_gives_provenance(tiny, tmp_path):
    ds, model = tiny
    emb = embed_dataset(model, ds, cache_dir=tmp_path, meta={"checkpoint": "base"})
    assert emb.n_images == 6 and emb.n_texts == 30 and emb.dim == 16
    assert emb.is_normalized()
    assert emb.meta["dataset"] == ds.name and emb.meta["split"] == "test"
    assert emb.meta["checkpoint"] == "base"
    np.testing.assert_array_equal(emb.image_labels, ds.labels)
