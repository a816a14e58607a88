"""Post-hoc gap fixes: each map against its defining property, computed independently."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
from scipy.stats import ortho_group

from tpccma_lib import Embeddings
from tpccma_lib.gap.metrics import centroid_gap, decompose
from tpccma_lib.gap.posthoc import (
    CORAL,
    POSTHOC_METHODS,
    MeanCenter,
    PosthocError,
    Procrustes,
    ReAlign,
    Shift,
    Standardize,
    Whiten,
    make_posthoc,
)


def make_split(rng, n_img=60, per=2, dim=5, offset=1.0, split="train") -> Embeddings:
    """Unnormalised, anisotropic, gapped data (so every map has something to do)."""
    image = rng.normal(size=(n_img, dim)) * np.linspace(0.5, 2.0, dim) + offset
    mix = rng.normal(size=(dim, dim))
    text = rng.normal(size=(n_img * per, dim)) @ mix - offset
    return Embeddings.from_arrays(
        image,
        text,
        text_to_image=np.repeat(np.arange(n_img), per),
        image_labels=np.arange(n_img) % 3,
        meta={"dataset": "toy", "split": split},
        normalize=False,
    )


def ml_cov(x: np.ndarray) -> np.ndarray:
    return np.cov(x.T, bias=True)


def rows(vector: np.ndarray, n: int) -> np.ndarray:
    return np.broadcast_to(vector, (n, vector.shape[0]))


# --------------------------------------------------------------------------- the maps
def test_mean_center_removes_centroid_gap_before_renormalisation(rng):
    emb = make_split(rng)
    image, text = MeanCenter().fit(emb).map_arrays(emb.image, emb.text)
    np.testing.assert_allclose(image.mean(axis=0), 0.0, atol=1e-13)
    np.testing.assert_allclose(text.mean(axis=0), 0.0, atol=1e-13)
    assert centroid_gap(image, text) < 1e-13
    np.testing.assert_allclose(image, emb.image - emb.image.astype(np.float64).mean(0), atol=1e-12)


@pytest.mark.parametrize("mode", ["both", "text_to_image", "image_to_text"])
@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0, -0.5])
def test_shift_moves_by_fraction_of_the_offset(rng, mode, fraction):
    emb = make_split(rng)
    delta = emb.image.astype(np.float64).mean(0) - emb.text.astype(np.float64).mean(0)
    image, text = Shift(fraction=fraction, mode=mode).fit(emb).map_arrays(emb.image, emb.text)
    assert centroid_gap(image, text) == pytest.approx(
        abs(1 - fraction) * np.linalg.norm(delta), abs=1e-12
    )
    image_moves = {"both": 0.5, "text_to_image": 0.0, "image_to_text": 1.0}[mode]
    image_step, text_step = -image_moves * fraction * delta, (1 - image_moves) * fraction * delta
    np.testing.assert_allclose(image - emb.image, rows(image_step, emb.n_images), atol=1e-6)
    np.testing.assert_allclose(text - emb.text, rows(text_step, emb.n_texts), atol=1e-6)


def test_realign_matches_image_mean_and_spread(rng):
    emb = make_split(rng)
    image, text = ReAlign().fit(emb).map_arrays(emb.image, emb.text)
    img64, txt64 = emb.image.astype(np.float64), emb.text.astype(np.float64)
    np.testing.assert_array_equal(image, img64)
    np.testing.assert_allclose(text.mean(0), img64.mean(0), atol=1e-12)
    assert np.trace(ml_cov(text)) == pytest.approx(np.trace(ml_cov(img64)), rel=1e-10)
    # the shape of the text cloud is kept: only a uniform scale
    scale = math.sqrt(np.trace(ml_cov(img64)) / np.trace(ml_cov(txt64)))
    np.testing.assert_allclose(ml_cov(text), scale**2 * ml_cov(txt64), rtol=1e-9, atol=1e-12)


def test_standardize_gives_zero_mean_unit_variance_per_modality(rng):
    emb = make_split(rng)
    image, text = Standardize(eps=0.0).fit(emb).map_arrays(emb.image, emb.text)
    for mapped in (image, text):
        np.testing.assert_allclose(mapped.mean(0), 0.0, atol=1e-12)
        np.testing.assert_allclose(mapped.var(0), 1.0, rtol=1e-10)


def test_whiten_gives_identity_covariance(rng):
    emb = make_split(rng)
    image, text = Whiten(eps=0.0).fit(emb).map_arrays(emb.image, emb.text)
    for mapped in (image, text):
        np.testing.assert_allclose(ml_cov(mapped), np.eye(emb.dim), atol=1e-9)
    # shrinkage: S (S + r I)^-1, r = eps tr(S) / D, through scipy's matrix functions
    image_eps, _ = Whiten(eps=0.1).fit(emb).map_arrays(emb.image, emb.text)
    cov = ml_cov(emb.image.astype(np.float64))
    ridge = 0.1 * np.trace(cov) / emb.dim
    expected = cov @ np.linalg.inv(cov + ridge * np.eye(emb.dim))
    np.testing.assert_allclose(ml_cov(image_eps), expected, atol=1e-9)


def test_coral_matches_text_covariance_to_image(rng):
    emb = make_split(rng, n_img=80)
    img64, txt64 = emb.image.astype(np.float64), emb.text.astype(np.float64)
    image, text = CORAL(eps=0.0).fit(emb).map_arrays(emb.image, emb.text)
    np.testing.assert_allclose(ml_cov(text), ml_cov(img64), atol=1e-9)
    np.testing.assert_allclose(text.mean(0), txt64.mean(0), atol=1e-12)  # plain CORAL
    np.testing.assert_array_equal(image, img64)
    _, moved = CORAL(eps=0.0, match_mean=True).fit(emb).map_arrays(emb.image, emb.text)
    np.testing.assert_allclose(moved.mean(0), img64.mean(0), atol=1e-12)
    # with shrinkage, against scipy's fractional matrix power
    eps = 0.05
    s_i, s_t = ml_cov(img64), ml_cov(txt64)
    r_i, r_t = eps * np.trace(s_i) / emb.dim, eps * np.trace(s_t) / emb.dim
    w = np.real(
        scipy.linalg.fractional_matrix_power(s_t + r_t * np.eye(emb.dim), -0.5)
        @ scipy.linalg.sqrtm(s_i + r_i * np.eye(emb.dim))
    )
    _, shrunk = CORAL(eps=eps).fit(emb).map_arrays(emb.image, emb.text)
    np.testing.assert_allclose(shrunk, (txt64 - txt64.mean(0)) @ w + txt64.mean(0), atol=1e-8)


def test_procrustes_recovers_a_known_rotation(rng):
    image = rng.normal(size=(50, 6))
    rotation = ortho_group.rvs(6, random_state=3)
    text = image @ rotation  # captions are rotated images
    emb = Embeddings.from_arrays(image, text, meta={"split": "train"})
    method = Procrustes().fit(emb)
    assert method.needs_pairs
    np.testing.assert_allclose(method.text_map_.linear, rotation.T, atol=1e-6)
    out = method.transform(emb)
    np.testing.assert_allclose(out.text, emb.image, atol=1e-5)
    # a rotation keeps unit norms: renormalisation changes nothing
    _, raw = method.map_arrays(emb.image, emb.text)
    np.testing.assert_allclose(np.linalg.norm(raw, axis=1), 1.0, atol=1e-6)


def test_procrustes_uses_all_captions_of_each_image(rng):
    emb = make_split(rng, n_img=30, per=3)
    method = Procrustes().fit(emb)
    image, text = emb.paired()
    u, _, vt = np.linalg.svd(text.astype(np.float64).T @ image.astype(np.float64))
    np.testing.assert_allclose(method.text_map_.linear, u @ vt, atol=1e-10)


# --------------------------------------------------------------------------- fit / apply
def test_fit_on_train_apply_on_test_uses_train_statistics(rng):
    train = make_split(rng, offset=1.0, split="train")
    test = make_split(rng, n_img=20, offset=3.0, split="test")
    train_img_mean = train.image.astype(np.float64).mean(0)
    train_txt_mean = train.text.astype(np.float64).mean(0)
    method = MeanCenter().fit(train)
    image, text = method.map_arrays(test.image, test.text)
    np.testing.assert_allclose(image, test.image - train_img_mean, atol=1e-12)
    np.testing.assert_allclose(text, test.text - train_txt_mean, atol=1e-12)
    assert np.linalg.norm(image.mean(0)) > 1.0  # the test split's own mean was not used
    shifted = Shift(fraction=1.0, mode="text_to_image").fit(train)
    _, text = shifted.map_arrays(test.image, test.text)
    step = rows(train_img_mean - train_txt_mean, test.n_texts)
    np.testing.assert_allclose(text - test.text, step, atol=1e-6)


def test_transform_renormalises_and_records_meta(rng):
    train, test = make_split(rng), make_split(rng, n_img=10, split="test")
    method = make_posthoc("shift", fraction=0.5)
    out = method.fit(train).transform(test)
    assert out.is_normalized(atol=1e-6) and out.image.dtype == np.float32
    record = out.meta["posthoc"]
    assert record["method"] == "shift" and record["params"] == {"fraction": 0.5, "mode": "both"}
    assert record["fit_split"] == "train" and record["applied_split"] == "test"
    assert record["fit_dataset"] == "toy" and record["fit_n_images"] == train.n_images
    assert out.meta["split"] == "test"  # the rest of meta is kept
    np.testing.assert_array_equal(out.text_to_image, test.text_to_image)
    np.testing.assert_array_equal(out.image_labels, test.image_labels)
    again = make_posthoc("identity").fit_transform(out)
    assert again.meta["posthoc"]["method"] == "identity"
    assert again.meta["posthoc"]["previous"]["method"] == "shift"


@pytest.mark.parametrize("name", sorted(POSTHOC_METHODS))
def test_no_method_reads_labels(rng, name):
    emb = make_split(rng)
    relabelled = emb.replace(image_labels=rng.permutation(emb.image_labels))
    a = make_posthoc(name).fit_transform(emb)
    b = make_posthoc(name).fit_transform(relabelled)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.text, b.text)
    assert a.is_normalized(atol=1e-5)


def test_fixes_reduce_the_gap_they_target(rng):
    emb = make_split(rng, n_img=120).normalized()
    before = decompose(emb)
    for name in ("mean_center", "shift", "realign"):
        after = decompose(make_posthoc(name).fit_transform(emb))
        assert after.centroid_gap < 0.5 * before.centroid_gap, name
    coral = decompose(make_posthoc("coral", match_mean=True).fit_transform(emb))
    assert coral.frechet_distance < 0.5 * before.frechet_distance


# --------------------------------------------------------------------------- errors
def test_errors_say_what_to_do(rng):
    emb = make_split(rng)
    with pytest.raises(PosthocError, match="unknown post-hoc method 'nope'.*mean_center"):
        make_posthoc("nope")
    with pytest.raises(PosthocError, match="no parameter.*accepts"):
        make_posthoc("shift", lam=0.5)
    with pytest.raises(PosthocError, match="shift mode"):
        make_posthoc("shift", mode="sideways")
    with pytest.raises(PosthocError, match="eps"):
        make_posthoc("coral", eps=-1.0)
    with pytest.raises(PosthocError, match="not fitted"):
        MeanCenter().transform(emb)
    other_dim = Embeddings.from_arrays(rng.normal(size=(4, 3)), rng.normal(size=(4, 3)))
    with pytest.raises(PosthocError, match="dimension"):
        MeanCenter().fit(emb).transform(other_dim)
    few = Embeddings.from_arrays(rng.normal(size=(3, 6)), rng.normal(size=(3, 6)))
    with pytest.raises(PosthocError, match="singular"):
        Whiten(eps=0.0).fit(few)
    Whiten(eps=0.01).fit(few)  # shrinkage makes it well-posed


def test_registry_lists_every_method():
    assert set(POSTHOC_METHODS) == {
        "identity",
        "mean_center",
        "shift",
        "realign",
        "standardize",
        "whiten",
        "coral",
        "coral_mean",
        "procrustes",
    }
    for name, cls in POSTHOC_METHODS.items():
        assert make_posthoc(name).name == name and isinstance(make_posthoc(name), cls)
        assert cls.needs_pairs == (name == "procrustes")


def test_coral_mean_is_coral_with_match_mean(rng):
    """The registry's ``coral_mean`` gives the text cloud the image mean and covariance (both
    gap parts closed on the fitted data) and equals ``CORAL(match_mean=True)``."""
    emb = make_split(rng, n_img=80)
    img64 = emb.image.astype(np.float64)
    method = make_posthoc("coral_mean", eps=0.0)
    assert method.match_mean and "coral_mean" in POSTHOC_METHODS
    _, text = method.fit(emb).map_arrays(emb.image, emb.text)
    np.testing.assert_allclose(text.mean(0), img64.mean(0), atol=1e-12)
    np.testing.assert_allclose(ml_cov(text), ml_cov(img64), atol=1e-9)
    _, reference = CORAL(eps=0.0, match_mean=True).fit(emb).map_arrays(emb.image, emb.text)
    np.testing.assert_array_equal(text, reference)
