import numpy as np
import pytest

from tpccma_lib import Embeddings, EmbeddingsError, l2_normalize


def _emb(rng, n_img=4, per=2, d=8):
    img = rng.normal(size=(n_img, d))
    txt = rng.normal(size=(n_img * per, d))
    return Embeddings.from_arrays(
        img,
        txt,
        text_to_image=np.repeat(np.arange(n_img), per),
        image_labels=np.arange(n_img) % 2,
        class_names=("a", "b"),
        meta={"dataset": "toy"},
    )


def test_from_arrays_normalises_and_pairs(rng):
    e = _emb(rng)
    assert e.is_normalized()
    img, txt = e.paired()
    assert img.shape == txt.shape == (8, 8)
    np.testing.assert_array_equal(img[1], e.image[0])
    np.testing.assert_array_equal(e.text_labels, np.repeat(np.arange(4) % 2, 2))
    fi, ft = e.first_caption_pairs()
    np.testing.assert_array_equal(fi, e.image)
    np.testing.assert_array_equal(ft, e.text[::2])


def test_subset_keeps_matching_captions(rng):
    e = _emb(rng)
    s = e.subset_images(np.array([2, 0]))
    assert s.n_images == 2 and s.n_texts == 4
    np.testing.assert_array_equal(s.text_to_image, [1, 1, 0, 0])
    np.testing.assert_array_equal(s.image[0], e.image[2])
    np.testing.assert_array_equal(s.text[2], e.text[4])


def test_save_load_roundtrip(rng, tmp_path):
    e = _emb(rng)
    p = e.save(tmp_path / "e.npz")
    f = Embeddings.load(p)
    np.testing.assert_array_equal(e.image, f.image)
    np.testing.assert_array_equal(e.text_to_image, f.text_to_image)
    assert f.class_names == ("a", "b") and f.meta["dataset"] == "toy"
    with pytest.raises(FileNotFoundError, match="No embeddings file"):
        Embeddings.load(tmp_path / "missing.npz")


def test_replace_merges_meta(rng):
    e = _emb(rng).replace(meta={"posthoc": "center"})
    assert e.meta == {"dataset": "toy", "posthoc": "center"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"image": np.full((2, 3), np.nan)}, "NaN"),
        ({"image": np.ones((2, 4))}, "dimensions differ"),
        ({"image": np.ones(3)}, "2-D"),
        ({"image": np.ones((0, 3))}, "empty"),
        ({"text_to_image": np.array([0, 5])}, "indices"),
        ({"text_to_image": np.array([0])}, "one image index per caption"),
        ({"image_labels": np.array([0])}, "image_labels"),
    ],
)
def test_bad_input_has_clear_error(kwargs, message):
    base = dict(
        image=np.ones((2, 3)),
        text=np.ones((2, 3)),
        text_to_image=np.array([0, 1]),
        image_labels=np.array([0, 1]),
    )
    base.update(kwargs)
    with pytest.raises(EmbeddingsError, match=message):
        Embeddings(**base)


def test_mismatched_counts_need_pairing(rng):
    with pytest.raises(EmbeddingsError, match="text_to_image"):
        Embeddings.from_arrays(rng.normal(size=(2, 3)), rng.normal(size=(3, 3)))


def test_l2_normalize_zero_row_is_finite():
    out = l2_normalize(np.array([[0.0, 0.0], [3.0, 4.0]]))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[1], [0.6, 0.8])
