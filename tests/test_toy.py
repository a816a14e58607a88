"""Tests of tpccma_lib.teaching.toy: toy clouds, cone statistics, gap shift, CMA gradients, optimiser."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.special import logsumexp

from tpccma_lib.embeddings import Embeddings
from tpccma_lib.gap.metrics import bures_distance, centroid_gap, distribution_gap
from tpccma_lib.teaching import toy
from tpccma_lib.training.loop import PairBatcher

torch.set_num_threads(1)


def _clouds(n: int = 30, m: int = 25, dim: int = 4, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((n, dim)) @ rng.standard_normal((dim, dim)) + 1.0
    text = rng.standard_normal((m, dim)) * np.linspace(0.5, 2.0, dim) - 0.5
    return image, text


def _captioned(n_images: int = 24, per_image: int = 2, dim: int = 8, seed: int = 0) -> Embeddings:
    """Images and captions with a built-in gap: captions = image + noise + a constant offset."""
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((n_images, dim)) + 2.0 * np.eye(dim)[0]
    owner = np.repeat(np.arange(n_images), per_image)
    text = image[owner] + 0.3 * rng.standard_normal((owner.size, dim)) + 2.0 * np.eye(dim)[1]
    return Embeddings.from_arrays(image, text, text_to_image=owner)


def _infonce(image: np.ndarray, text: np.ndarray, scale: float) -> float:
    """Symmetric InfoNCE in numpy (independent of torch), rows L2-normalised in float64."""
    image, text = np.asarray(image, np.float64), np.asarray(text, np.float64)
    image = image / np.linalg.norm(image, axis=1, keepdims=True)
    text = text / np.linalg.norm(text, axis=1, keepdims=True)
    logits = scale * image @ text.T
    diagonal = np.diag(logits)
    rows = np.mean(logsumexp(logits, axis=1) - diagonal)
    cols = np.mean(logsumexp(logits, axis=0) - diagonal)
    return float(0.5 * (rows + cols))


# ---------------------------------------------------------------- toy clouds


def test_sphere_caps_are_unit_and_seeded() -> None:
    a = toy.sphere_caps(n=50, seed=1)
    b = toy.sphere_caps(n=50, seed=1)
    c = toy.sphere_caps(n=50, seed=2)
    assert a.image.shape == a.text.shape == (50, 3)
    assert a.is_normalized(atol=1e-6)
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.allclose(a.image, c.image)
    # the image cap sits around its pole, the text cap around its own
    pole = np.array([1.0, 0.0, 0.3]) / np.linalg.norm([1.0, 0.0, 0.3])
    assert (a.image @ pole).mean() > 0.8
    assert centroid_gap(a.image, a.text) > 0.5


def test_sphere_caps_scales_set_the_elongation() -> None:
    caps = toy.sphere_caps(n=2000, image_scales=(0.3, 0.0), text_scales=(0.0, 0.0))
    image_cov = np.cov(caps.image.T)
    eigenvalues = np.sort(np.linalg.eigvalsh(image_cov))
    assert eigenvalues[-1] > 0.01 and eigenvalues[0] < 1e-6  # a curve: rank 2 at most
    np.testing.assert_allclose(caps.text, np.repeat(caps.text[:1], 2000, axis=0), atol=1e-12)


@pytest.mark.parametrize(
    "kwargs", [{"n": 2}, {"image_pole": (0.0, 0.0, 0.0)}, {"text_scales": (1.0, -1.0)}]
)
def test_sphere_caps_rejects_bad_settings(kwargs: dict) -> None:
    with pytest.raises(toy.ToyError):
        toy.sphere_caps(**kwargs)


def test_equal_mean_clouds_have_equal_means_and_different_covariances() -> None:
    clouds = toy.equal_mean_clouds(n=100, seed=3)
    assert clouds.is_normalized(atol=1e-6)
    np.testing.assert_allclose(clouds.image.mean(axis=0), clouds.text.mean(axis=0), atol=1e-7)
    cov_x, cov_y = np.cov(clouds.image.T), np.cov(clouds.text.T)
    assert bures_distance(cov_x, cov_y) > 0.1
    # text is the image turned by 90 degrees about z: x-variance of one is y-variance of other
    np.testing.assert_allclose(cov_x[0, 0], cov_y[1, 1], rtol=1e-6)


# ---------------------------------------------------------------- cone statistics


def test_cone_statistics_match_brute_force() -> None:
    emb = _captioned(n_images=12, per_image=3)
    stats = toy.cone_statistics(emb)
    x, y = emb.image.astype(np.float64), emb.text.astype(np.float64)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)

    def mean_off_diagonal(a: np.ndarray) -> float:
        values = [a[i] @ a[j] for i, j in itertools.permutations(range(len(a)), 2)]
        return float(np.mean(values))

    assert stats["within_image"] == pytest.approx(mean_off_diagonal(x), abs=1e-6)
    assert stats["within_text"] == pytest.approx(mean_off_diagonal(y), abs=1e-6)
    assert stats["between"] == pytest.approx(float(np.mean(x @ y.T)), abs=1e-6)
    matched = np.mean([x[emb.text_to_image[t]] @ y[t] for t in range(len(y))])
    assert stats["matched"] == pytest.approx(float(matched), abs=1e-6)


# ---------------------------------------------------------------- the gap shift


def test_shift_along_gap_zero_keeps_and_one_closes_before_normalising() -> None:
    image, text = _clouds()
    x, y = torch.tensor(image), torch.tensor(text)
    same_x, same_y = toy.shift_along_gap(x, y, 0.0)
    np.testing.assert_allclose(same_x.numpy(), image / np.linalg.norm(image, axis=1)[:, None])
    np.testing.assert_allclose(same_y.numpy(), text / np.linalg.norm(text, axis=1)[:, None])
    delta = image.mean(axis=0) - text.mean(axis=0)
    moved_x, moved_y = toy.shift_along_gap(x, y, 1.0)
    expected_x = image - delta / 2
    np.testing.assert_allclose(
        moved_x.numpy(), expected_x / np.linalg.norm(expected_x, axis=1)[:, None]
    )
    np.testing.assert_allclose(expected_x.mean(axis=0), (text + delta / 2).mean(axis=0))
    assert moved_y.shape == y.shape


def test_gap_shift_curve_matches_numpy_infonce_and_finite_difference() -> None:
    emb = _captioned(n_images=20).normalized()
    h = 1e-4
    curve, summary = toy.gap_shift_curve(
        emb, logit_scales=(5.0, 50.0), shifts=(-h, 0.0, h, 1.0), batch_size=0
    )
    assert len(curve) == 8 and len(summary) == 2
    image, text = emb.first_caption_pairs()
    for row in summary:
        scale = row["logit_scale"]
        assert row["loss"] == pytest.approx(_infonce(image, text, scale), rel=1e-9)
        by_shift = {r["shift"]: r for r in curve if r["logit_scale"] == scale}
        assert by_shift[0.0]["loss_change"] == pytest.approx(0.0, abs=1e-12)
        slope = (by_shift[h]["loss"] - by_shift[-h]["loss"]) / (2 * h)
        assert row["slope"] == pytest.approx(slope, rel=1e-4, abs=1e-7)
        best = min(by_shift.values(), key=lambda r: r["loss"])["shift"]
        assert row["best_shift"] == best
        x, y = toy.shift_along_gap(torch.tensor(image), torch.tensor(text), best)
        assert row["gap_at_best"] == pytest.approx(centroid_gap(x.numpy(), y.numpy()))


def test_gap_shift_curve_averages_fixed_batches() -> None:
    emb = _captioned(n_images=20).normalized()
    _, summary = toy.gap_shift_curve(emb, logit_scales=(10.0,), shifts=(0.0,), batch_size=8)
    image, text = emb.first_caption_pairs()
    perm = np.random.default_rng(0).permutation(20)
    batches = [perm[0:8], perm[8:16]]  # the remainder of 4 pairs is dropped
    expected = np.mean([_infonce(image[b], text[b], 10.0) for b in batches])
    assert summary[0]["loss"] == pytest.approx(expected, rel=1e-9)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("dim", [3, 5])
def test_closed_form_gradients_match_autograd(dim: int) -> None:
    image, text = _clouds(n=40, m=33, dim=dim, seed=dim)
    rows = toy.gradient_check(image, text)
    assert [r["term"] for r in rows] == ["centroid", "coral", "bures"]
    for row in rows:
        assert row["max_gradient"] > 0
        assert row["relative"] < 1e-8, row


def test_centroid_gradient_is_a_translation() -> None:
    image, text = _clouds()
    grad_image, grad_text = toy.centroid_term_gradient(image, text)
    offset = image.mean(axis=0) - text.mean(axis=0)
    np.testing.assert_allclose(grad_image, np.tile(2 * offset / len(image), (len(image), 1)))
    np.testing.assert_allclose(grad_text, np.tile(-2 * offset / len(text), (len(text), 1)))


def _bures_squared_numpy(image: np.ndarray, text: np.ndarray) -> float:
    return bures_distance(np.cov(image.T), np.cov(text.T)) ** 2  # ddof = 1, as the losses


def test_bures_gradient_matches_finite_differences_of_geometry() -> None:
    image, text = _clouds(n=20, m=18, dim=3, seed=7)
    _, grad_text = toy.bures_gradient(image, text)
    h = 1e-6
    for j, k in [(0, 0), (5, 2), (17, 1)]:
        plus, minus = text.copy(), text.copy()
        plus[j, k] += h
        minus[j, k] -= h
        numeric = (_bures_squared_numpy(image, plus) - _bures_squared_numpy(image, minus)) / (2 * h)
        assert grad_text[j, k] == pytest.approx(numeric, rel=1e-4, abs=1e-8)


def test_bures_transport_map_pushes_one_covariance_onto_the_other() -> None:
    image, text = _clouds(n=50, m=60, dim=4)
    cov_from, cov_to = np.cov(text.T), np.cov(image.T)
    transport = toy.bures_transport_map(cov_from, cov_to)
    np.testing.assert_allclose(transport, transport.T, atol=1e-10)
    assert np.linalg.eigvalsh(transport).min() > 0
    np.testing.assert_allclose(transport @ cov_from @ transport, cov_to, rtol=1e-8, atol=1e-10)
    # the textbook form C_from^-1/2 (C_from^1/2 C_to C_from^1/2)^1/2 C_from^-1/2 (scipy sqrtm)
    root = scipy.linalg.sqrtm(cov_from).real
    inverse_root = np.linalg.inv(root)
    textbook = inverse_root @ scipy.linalg.sqrtm(root @ cov_to @ root).real @ inverse_root
    np.testing.assert_allclose(transport, textbook, rtol=1e-6, atol=1e-9)


def test_bures_gradient_needs_full_rank() -> None:
    image, text = _clouds(n=3, m=3, dim=4)  # 3 points in 4-D: singular covariances
    with pytest.raises(toy.ToyError, match="full-rank"):
        toy.bures_gradient(image, text)


def test_gradient_check_rejects_unknown_term() -> None:
    image, text = _clouds()
    with pytest.raises(toy.ToyError, match="mmd"):
        toy.gradient_check(image, text, terms=("mmd",))


def test_cma_terms_match_independent_formulas() -> None:
    image, text = _clouds(n=15, m=12, dim=3, seed=4)
    emb = Embeddings.from_arrays(image, text, text_to_image=np.arange(12) % 15, normalize=False)
    terms = toy.cma_terms(emb)
    x, y = emb.image.astype(np.float64), emb.text.astype(np.float64)
    assert terms["centroid"] == pytest.approx(float(np.sum((x.mean(0) - y.mean(0)) ** 2)))
    assert terms["coral"] == pytest.approx(float(np.sum((np.cov(x.T) - np.cov(y.T)) ** 2)))
    assert terms["bures"] == pytest.approx(_bures_squared_numpy(x, y), rel=1e-6)
    # biased MMD^2 with the median heuristic and widths (0.5, 1, 2) * sigma, by loops
    xc, yc = x - x.mean(0), y - y.mean(0)
    pooled = np.concatenate([xc, yc])
    sq = [
        np.sum((pooled[i] - pooled[j]) ** 2)
        for i in range(len(pooled))
        for j in range(i + 1, len(pooled))
    ]
    sigma = math.sqrt(np.median(sq))

    def kernel_mean(a: np.ndarray, b: np.ndarray) -> float:
        values = [
            np.mean([math.exp(-np.sum((p - q) ** 2) / (2 * (s * sigma) ** 2)) for s in (0.5, 1, 2)])
            for p in a
            for q in b
        ]
        return float(np.mean(values))

    expected = kernel_mean(xc, xc) + kernel_mean(yc, yc) - 2 * kernel_mean(xc, yc)
    assert terms["mmd"] == pytest.approx(expected, rel=1e-5)


def test_cma_terms_of_equal_mean_clouds() -> None:
    terms = toy.cma_terms(toy.equal_mean_clouds(n=80))
    assert terms["centroid"] < 1e-12
    assert min(terms["bures"], terms["mmd"], terms["coral"]) > 1e-3


# ---------------------------------------------------------------- objectives


def test_objective_validation() -> None:
    with pytest.raises(toy.ToyError, match="alpha"):
        toy.Objective(alpha=-1.0)
    with pytest.raises(toy.ToyError, match="empty"):
        toy.Objective(clip_weight=0.0, alpha=0.0)
    with pytest.raises(toy.ToyError, match="distribution_term"):
        toy.Objective(distribution_term="kl")
    with pytest.raises(toy.ToyError, match="logit_scale"):
        toy.Objective(logit_scale=0.0)


def test_objective_variants_weights() -> None:
    variants = toy.objective_variants(0.3, "mmd", logit_scale=50.0)
    assert list(variants) == ["clip only", "clip + centroid", "clip + distribution", "clip + both"]
    assert variants["clip only"].alpha == 0.0
    assert (
        variants["clip + centroid"].centroid_weight,
        variants["clip + centroid"].distribution_weight,
    ) == (1.0, 0.0)
    assert (
        variants["clip + distribution"].centroid_weight,
        variants["clip + distribution"].distribution_weight,
    ) == (0.0, 1.0)
    assert all(v.distribution_term == "mmd" and v.logit_scale == 50.0 for v in variants.values())
    assert all(v.alpha == 0.3 for name, v in variants.items() if name != "clip only")
    pure = toy.cma_only_variants("coral")
    assert all(v.clip_weight == 0.0 and v.alpha == 1.0 for v in pure.values())


def test_optimize_config_validation() -> None:
    with pytest.raises(toy.ToyError, match="parametrisation"):
        toy.OptimizeConfig(parametrisation="mlp")
    with pytest.raises(toy.ToyError, match="move_images"):
        toy.OptimizeConfig(parametrisation="points", move_images=True)
    with pytest.raises(toy.ToyError):
        toy.OptimizeConfig(record_every=0)


# ---------------------------------------------------------------- optimisation

_POINTS = toy.OptimizeConfig(
    steps=150, lr=0.03, batch_size=0, parametrisation="points", record_every=50, retrieval=False
)


def test_centroid_term_alone_closes_the_centroid_gap() -> None:
    caps = toy.sphere_caps(n=40, seed=0)
    run = toy.optimize_alignment(caps, toy.cma_only_variants()["centroid"], _POINTS)
    start, end = run.history[0], run.history[-1]
    assert start["centroid_gap"] > 1.0
    assert end["centroid_gap"] < 0.02
    assert end["distribution_gap"] > 0.05  # the shape mismatch is left
    np.testing.assert_array_equal(run.train.image, caps.image)  # only the text points move
    assert run.train.is_normalized(atol=1e-5)
    assert end["centroid_gap"] == pytest.approx(centroid_gap(run.train.image, run.train.text))


def test_distribution_term_alone_reduces_the_bures_gap() -> None:
    caps = toy.sphere_caps(n=40, seed=0)
    for term in ("bures", "coral", "mmd"):
        run = toy.optimize_alignment(caps, toy.cma_only_variants(term)["distribution"], _POINTS)
        start, end = run.history[0], run.history[-1]
        assert end["distribution_gap"] < 0.5 * start["distribution_gap"], term
    run = toy.optimize_alignment(caps, toy.cma_only_variants("bures")["distribution"], _POINTS)
    assert run.history[-1]["distribution_gap"] < 0.1 * run.history[0]["distribution_gap"]
    assert run.history[-1]["centroid_gap"] > 0.5  # the means stay apart


def test_history_steps_and_first_record() -> None:
    emb = _captioned()
    cfg = toy.OptimizeConfig(steps=25, lr=1e-2, batch_size=8, record_every=10, seed=3)
    objective = toy.objective_variants(0.5)["clip + both"]
    run = toy.optimize_alignment(emb, objective, cfg)
    assert [r["step"] for r in run.history] == [0, 10, 20, 25]
    first = run.history[0]
    assert first["centroid_gap"] == pytest.approx(centroid_gap(emb.image, emb.text))
    assert first["distribution_gap"] == pytest.approx(distribution_gap(emb.image, emb.text))
    image, text = emb.first_caption_pairs()
    assert first["loss_clip_eval"] == pytest.approx(_infonce(image, text, 100.0), rel=1e-4)
    # loss_clip_train at step 0: the first training batch, before any update
    image_idx, text_idx = PairBatcher(emb.text_to_image, emb.n_images, 8, 3).batch(0)
    expected = _infonce(emb.image[image_idx], emb.text[text_idx], 100.0)
    assert first["loss_clip_train"] == pytest.approx(expected, rel=1e-4)
    assert 0.0 <= first["mean_R@1"] <= 1.0


def test_optimize_alignment_is_deterministic_and_seeded() -> None:
    emb = _captioned()
    objective = toy.objective_variants(0.5, "coral")["clip + both"]
    cfg = toy.OptimizeConfig(steps=20, lr=1e-2, batch_size=8, record_every=5, seed=0)
    a = toy.optimize_alignment(emb, objective, cfg)
    b = toy.optimize_alignment(emb, objective, cfg)
    assert a.history == b.history
    np.testing.assert_array_equal(a.train.text, b.train.text)
    c = toy.optimize_alignment(emb, objective, toy.OptimizeConfig(**{**a.settings, "seed": 1}))
    assert not np.allclose(a.train.text, c.train.text)


def test_linear_map_moves_eval_captions_too() -> None:
    train, held_out = _captioned(seed=0), _captioned(n_images=10, seed=1)
    objective = toy.objective_variants(1.0)["clip + centroid"]
    cfg = toy.OptimizeConfig(steps=60, lr=3e-2, batch_size=12, record_every=30)
    run = toy.optimize_alignment(train, objective, cfg, eval_emb=held_out)
    assert run.eval.n_texts == held_out.n_texts
    np.testing.assert_array_equal(run.eval.image, held_out.image)
    assert run.eval.is_normalized(atol=1e-5)
    assert run.history[-1]["centroid_gap"] == pytest.approx(
        centroid_gap(run.eval.image, run.eval.text)
    )
    assert run.history[-1]["centroid_gap"] < run.history[0]["centroid_gap"]


def test_zero_steps_changes_nothing_and_move_images() -> None:
    emb = _captioned()
    objective = toy.Objective()
    run = toy.optimize_alignment(emb, objective, toy.OptimizeConfig(steps=0, batch_size=8))
    np.testing.assert_allclose(run.train.text, emb.text, atol=1e-6)
    assert len(run.history) == 1 and math.isnan(run.history[0]["loss_clip_train"])
    moved = toy.optimize_alignment(
        emb, objective, toy.OptimizeConfig(steps=5, batch_size=8, move_images=True)
    )
    assert not np.allclose(moved.train.image, emb.image)


def test_points_refuse_an_eval_set() -> None:
    emb = toy.sphere_caps(n=10)
    with pytest.raises(toy.ToyError, match="eval_emb"):
        toy.optimize_alignment(emb, toy.cma_only_variants()["both"], _POINTS, eval_emb=emb)


def test_compare_objectives_and_final_rows() -> None:
    caps = toy.sphere_caps(n=20)
    cfg = toy.OptimizeConfig(
        steps=10, lr=0.03, batch_size=0, parametrisation="points", record_every=5, retrieval=False
    )
    rows, runs = toy.compare_objectives(caps, toy.cma_only_variants(), cfg)
    assert list(runs) == ["centroid", "distribution", "both"]
    assert [r["objective"] for r in rows] == [n for n in runs for _ in range(3)]
    finals = toy.final_rows(rows)
    assert [r["objective"] for r in finals] == list(runs)
    for final, run in zip(finals, runs.values(), strict=True):
        assert final["step"] == 10
        assert final["centroid_gap"] == run.history[-1]["centroid_gap"]
