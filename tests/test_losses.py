"""Tests of tpccma_lib.training.losses and the single-process side of tpccma_lib.training.distributed.

References are independent: numpy/scipy formulas, brute-force Python loops, closed forms.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.special
import torch
import torch.nn.functional as F

from tpccma_lib.training import distributed
from tpccma_lib.training.losses import (
    DEFAULT_BANDWIDTH_MULTIPLIERS,
    DISTRIBUTION_TERMS,
    ClipLoss,
    CMALoss,
    CMAOutput,
    LossInputError,
    bures_distance_squared,
    centroid_term,
    clip_contrastive_loss,
    coral_distance,
    median_heuristic_bandwidth,
    mmd_squared,
    tpccma_objective,
)

torch.set_num_threads(1)


def _sphere(rows: int, dim: int, seed: int, dtype=torch.float64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(rows, dim, generator=generator, dtype=dtype), dim=1)


def _gaussian(rows: int, dim: int, seed: int, scale: float = 1.0, shift: float = 0.0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(rows, dim, generator=generator, dtype=torch.float64) * scale + shift


# ---------------------------------------------------------------- contrastive loss


def _numpy_clip_loss(image: np.ndarray, text: np.ndarray, scale: float) -> float:
    logits = scale * image @ text.T
    n = logits.shape[0]
    image_to_text = -scipy.special.log_softmax(logits, axis=1)[np.arange(n), np.arange(n)]
    text_to_image = -scipy.special.log_softmax(logits, axis=0)[np.arange(n), np.arange(n)]
    return 0.5 * (image_to_text.mean() + text_to_image.mean())


def test_clip_loss_matches_numpy_log_softmax() -> None:
    image, text = _sphere(7, 5, 0), _sphere(7, 5, 1)
    expected = _numpy_clip_loss(image.numpy(), text.numpy(), 14.0)
    got = clip_contrastive_loss(image, text, torch.tensor(14.0, dtype=torch.float64))
    assert float(got) == pytest.approx(expected, rel=1e-12)


def test_clip_loss_matches_torch_cross_entropy_and_float_scale() -> None:
    image, text = _sphere(6, 4, 2, torch.float32), _sphere(6, 4, 3, torch.float32)
    logits = 50.0 * image @ text.T
    labels = torch.arange(6)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    assert torch.allclose(clip_contrastive_loss(image, text, 50.0), expected, atol=1e-6)


def test_clip_loss_module_equals_function_and_caches_labels() -> None:
    image, text = _sphere(5, 3, 4), _sphere(5, 3, 5)
    loss = ClipLoss()
    first = loss(image, text, torch.tensor(10.0))
    cached = loss._labels
    second = loss(image, text, torch.tensor(10.0))
    assert loss._labels is cached
    assert torch.equal(first, second)
    assert float(first) == pytest.approx(_numpy_clip_loss(image.numpy(), text.numpy(), 10.0))
    loss(_sphere(3, 3, 6), _sphere(3, 3, 7), 10.0)
    assert loss._labels is not cached and loss._labels.tolist() == [0, 1, 2]


def test_clip_loss_perfect_alignment_tends_to_zero() -> None:
    basis = torch.eye(4, dtype=torch.float64)
    assert float(clip_contrastive_loss(basis, basis, 1000.0)) < 1e-12
    # uniform logits: every row is log(B)
    ones = F.normalize(torch.ones(4, 3, dtype=torch.float64), dim=1)
    assert float(clip_contrastive_loss(ones, ones, 5.0)) == pytest.approx(math.log(4))


def test_clip_loss_gradcheck() -> None:
    image = _sphere(4, 3, 8).requires_grad_()
    text = _sphere(4, 3, 9).requires_grad_()
    scale = torch.tensor(3.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b, s: ClipLoss()(a, b, s), (image, text, scale))


# ---------------------------------------------------------------- centroid term


def test_centroid_term_closed_form() -> None:
    offsets = _gaussian(6, 4, 10)
    offsets = offsets - offsets.mean(0)  # rows sum to zero: the mean is the shift exactly
    u = torch.tensor([1.0, 0.0, 2.0, -1.0], dtype=torch.float64)
    w = torch.tensor([0.0, 3.0, 0.0, 1.0], dtype=torch.float64)
    image, text = u + offsets, w + 0.5 * offsets[:5]
    text = text - text.mean(0) + w
    expected = float(((u - w) ** 2).sum())  # 1 + 9 + 4 + 4
    assert float(centroid_term(image, text)) == pytest.approx(expected, rel=1e-12)
    assert expected == 18.0


def test_centroid_term_gradcheck() -> None:
    x = _gaussian(5, 3, 11).requires_grad_()
    y = _gaussian(4, 3, 12).requires_grad_()
    assert torch.autograd.gradcheck(centroid_term, (x, y))


# ---------------------------------------------------------------- MMD


def _brute_force_mmd(x: np.ndarray, y: np.ndarray, sigmas, unbiased: bool) -> float:
    def kernel(a, b):
        distance = sum((a[k] - b[k]) ** 2 for k in range(len(a)))
        return sum(math.exp(-distance / (2 * s * s)) for s in sigmas) / len(sigmas)

    def block(p, q, skip_diagonal):
        total, count = 0.0, 0
        for i in range(len(p)):
            for j in range(len(q)):
                if skip_diagonal and i == j:
                    continue
                total += kernel(p[i], q[j])
                count += 1
        return total / count

    return block(x, x, unbiased) + block(y, y, unbiased) - 2 * block(x, y, skip_diagonal=False)


@pytest.mark.parametrize("unbiased", [False, True])
def test_mmd_matches_brute_force(unbiased: bool) -> None:
    x, y = _gaussian(5, 3, 13), _gaussian(6, 3, 14, scale=0.7, shift=0.4)
    sigmas = [0.3, 1.0, 2.5]
    expected = _brute_force_mmd(x.numpy(), y.numpy(), sigmas, unbiased)
    got = mmd_squared(x, y, sigmas, unbiased=unbiased)
    assert float(got) == pytest.approx(expected, rel=1e-10, abs=1e-12)


def test_mmd_default_bandwidths_are_median_times_multipliers() -> None:
    x, y = _gaussian(5, 3, 15), _gaussian(4, 3, 16, shift=1.0)
    pooled = np.concatenate([x.numpy(), y.numpy()])
    pairs = [
        np.sum((pooled[i] - pooled[j]) ** 2)
        for i in range(len(pooled))
        for j in range(i + 1, len(pooled))
    ]
    sigma = math.sqrt(np.median(pairs))
    assert float(median_heuristic_bandwidth(x, y)) == pytest.approx(sigma, rel=1e-10)
    sigmas = [m * sigma for m in DEFAULT_BANDWIDTH_MULTIPLIERS]
    expected = _brute_force_mmd(x.numpy(), y.numpy(), sigmas, unbiased=False)
    assert float(mmd_squared(x, y)) == pytest.approx(expected, rel=1e-10)


def test_median_heuristic_subsamples_large_batches_evenly() -> None:
    x, y = _gaussian(600, 2, 17), _gaussian(500, 2, 18, scale=2.0)
    pooled = np.concatenate([x.numpy(), y.numpy()])
    strided = pooled[np.round(np.linspace(0, len(pooled) - 1, 1024)).astype(int)]
    squared = ((strided[:, None, :] - strided[None, :, :]) ** 2).sum(-1)
    expected = math.sqrt(np.median(squared[np.triu_indices(len(strided), k=1)]))
    assert float(median_heuristic_bandwidth(x, y)) == pytest.approx(expected, rel=1e-9)


def test_median_heuristic_is_floored_and_detached() -> None:
    same = torch.ones(4, 3, dtype=torch.float64, requires_grad=True)
    sigma = median_heuristic_bandwidth(same, same)
    assert float(sigma) == pytest.approx(1e-4)
    assert not sigma.requires_grad


def test_unbiased_mmd_has_mean_zero_under_the_null() -> None:
    generator = torch.Generator().manual_seed(19)
    draws = 300
    unbiased, biased = [], []
    for _ in range(draws):
        x = torch.randn(8, 3, generator=generator, dtype=torch.float64)
        y = torch.randn(8, 3, generator=generator, dtype=torch.float64)
        unbiased.append(float(mmd_squared(x, y, [1.0, 2.0], unbiased=True)))
        biased.append(float(mmd_squared(x, y, [1.0, 2.0], unbiased=False)))
    for values, centred in ((unbiased, True), (biased, False)):
        mean = np.mean(values)
        standard_error = np.std(values, ddof=1) / math.sqrt(draws)
        if centred:
            assert abs(mean) < 3 * standard_error
        else:  # the same test has the power to see the biased estimator's positive bias
            assert mean > 3 * standard_error
    assert min(biased) >= 0.0 and min(unbiased) < 0.0


@pytest.mark.parametrize("unbiased", [False, True])
def test_mmd_gradcheck_fixed_bandwidths(unbiased: bool) -> None:
    x = _gaussian(5, 3, 20).requires_grad_()
    y = _gaussian(4, 3, 21, shift=0.5).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: mmd_squared(a, b, [0.5, 1.5], unbiased=unbiased), (x, y)
    )


def test_mmd_gradcheck_when_only_one_sample_needs_gradients() -> None:
    x, y = _gaussian(6, 3, 51), _gaussian(5, 3, 52, shift=0.4)
    bandwidths = [0.7, 1.3]
    assert torch.autograd.gradcheck(
        lambda a: mmd_squared(a, y, bandwidths), (x.clone().requires_grad_(),)
    )
    assert torch.autograd.gradcheck(
        lambda b: mmd_squared(x, b, bandwidths), (y.clone().requires_grad_(),)
    )


def test_mmd_median_gradient_treats_bandwidth_as_constant() -> None:
    x = _gaussian(6, 3, 22).requires_grad_()
    y = _gaussian(6, 3, 23, shift=0.3)
    (grad_median,) = torch.autograd.grad(mmd_squared(x, y), x)
    sigma = float(median_heuristic_bandwidth(x, y))
    fixed = [m * sigma for m in DEFAULT_BANDWIDTH_MULTIPLIERS]
    (grad_fixed,) = torch.autograd.grad(mmd_squared(x, y, fixed), x)
    assert torch.allclose(grad_median, grad_fixed, atol=1e-12)


# ---------------------------------------------------------------- CORAL and Bures


def test_coral_matches_numpy() -> None:
    x, y = _gaussian(9, 4, 24), _gaussian(7, 4, 25, scale=0.5, shift=2.0)
    difference = np.cov(x.numpy(), rowvar=False) - np.cov(y.numpy(), rowvar=False)
    assert float(coral_distance(x, y)) == pytest.approx(np.sum(difference**2), rel=1e-12)


def test_coral_gradcheck() -> None:
    x = _gaussian(5, 3, 26).requires_grad_()
    y = _gaussian(4, 3, 27).requires_grad_()
    assert torch.autograd.gradcheck(coral_distance, (x, y))


def _bures_scipy(x: np.ndarray, y: np.ndarray) -> float:
    cov_x, cov_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root_x = scipy.linalg.sqrtm(cov_x)
    fidelity = np.trace(scipy.linalg.sqrtm(root_x @ cov_y @ root_x)).real
    return float(np.trace(cov_x) + np.trace(cov_y) - 2 * fidelity)


def _bures_eigenvalues(x: np.ndarray, y: np.ndarray) -> float:
    """tr (C_x^1/2 C_y C_x^1/2)^1/2 = sum sqrt(eig(C_x C_y)); fine for singular C."""
    cov_x, cov_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    eigenvalues = np.clip(np.linalg.eigvals(cov_x @ cov_y).real, 0.0, None)
    return float(np.trace(cov_x) + np.trace(cov_y) - 2 * np.sqrt(eigenvalues).sum())


@pytest.mark.parametrize(("n", "m", "dim"), [(9, 12, 3), (20, 6, 4), (30, 25, 5)])
def test_bures_matches_scipy_sqrtm_full_rank(n: int, m: int, dim: int) -> None:
    x, y = _gaussian(n, dim, 28), _gaussian(m, dim, 29, scale=0.6, shift=1.0)
    expected = _bures_scipy(x.numpy(), y.numpy())
    assert float(bures_distance_squared(x, y)) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize(("n", "m", "dim"), [(4, 6, 8), (5, 5, 5), (3, 12, 6)])
def test_bures_matches_eigenvalue_formula_rank_deficient(n: int, m: int, dim: int) -> None:
    x, y = _gaussian(n, dim, 30), _gaussian(m, dim, 31, scale=0.6)
    expected = _bures_eigenvalues(x.numpy(), y.numpy())
    assert float(bures_distance_squared(x, y)) == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_bures_is_zero_for_a_translated_copy_and_symmetric() -> None:
    x, y = _gaussian(10, 3, 32), _gaussian(8, 3, 33, scale=2.0)
    assert abs(float(bures_distance_squared(x, x + 5.0))) < 1e-10
    assert float(bures_distance_squared(x, y)) == pytest.approx(
        float(bures_distance_squared(y, x)), rel=1e-10
    )


@pytest.mark.parametrize(("n", "m", "dim"), [(7, 6, 3), (4, 5, 6), (8, 3, 4)])
def test_bures_gradcheck(n: int, m: int, dim: int) -> None:
    x = _gaussian(n, dim, 34).requires_grad_()
    y = _gaussian(m, dim, 35, scale=0.5).requires_grad_()
    assert torch.autograd.gradcheck(bures_distance_squared, (x, y))


# ---------------------------------------------------------------- CMA loss


@pytest.mark.parametrize("term", DISTRIBUTION_TERMS)
def test_cma_total_is_weighted_sum_of_terms(term: str) -> None:
    image, text = _sphere(8, 4, 36), _sphere(8, 4, 37)
    out = CMALoss(centroid_weight=0.7, distribution_weight=2.5, distribution_term=term)(image, text)
    assert isinstance(out, CMAOutput)
    assert float(out.centroid) == pytest.approx(float(centroid_term(image, text)), rel=1e-12)
    image_c, text_c = image - image.mean(0), text - text.mean(0)
    reference = {
        "mmd": lambda: mmd_squared(image_c, text_c),
        "coral": lambda: coral_distance(image, text),
        "bures": lambda: bures_distance_squared(image, text),
    }[term]()
    assert float(out.distribution) == pytest.approx(float(reference), rel=1e-10)
    expected = 0.7 * float(out.centroid) + 2.5 * float(out.distribution)
    assert float(out.total) == pytest.approx(expected, rel=1e-12)
    assert set(out.as_floats()) == {"total", "centroid", "distribution"}


def test_cma_logged_terms_are_detached_and_total_differentiable() -> None:
    image = _sphere(6, 3, 38).requires_grad_()
    out = CMALoss()(image, _sphere(6, 3, 39))
    assert out.total.requires_grad
    assert not out.centroid.requires_grad and not out.distribution.requires_grad


def test_cma_mmd_sees_only_centred_clouds() -> None:
    image, text = _sphere(8, 4, 40), _sphere(8, 4, 41)
    loss = CMALoss(centroid_weight=0.0, distribution_term="mmd")
    shifted = loss(image + torch.tensor([3.0, 0.0, 0.0, 0.0], dtype=torch.float64), text)
    assert float(shifted.total) == pytest.approx(float(loss(image, text).total), rel=1e-10)


@pytest.mark.parametrize("term", ["coral", "bures"])
def test_cma_gradcheck(term: str) -> None:
    image = _sphere(6, 3, 42).requires_grad_()
    text = _sphere(5, 3, 43).requires_grad_()
    loss = CMALoss(centroid_weight=0.3, distribution_weight=1.7, distribution_term=term)
    assert torch.autograd.gradcheck(lambda a, b: loss(a, b).total, (image, text))


@pytest.mark.parametrize("term", DISTRIBUTION_TERMS)
def test_identical_embeddings_give_finite_values_and_gradients(term: str) -> None:
    row = F.normalize(torch.tensor([[0.3, -0.2, 0.9, 0.1]]), dim=1)
    image = row.repeat(6, 1).requires_grad_()
    text = row.repeat(6, 1).requires_grad_()
    out = CMALoss(distribution_term=term)(image, text)
    clip = ClipLoss()(image, text, torch.tensor(100.0))
    (out.total + clip).backward()
    assert torch.isfinite(out.total) and torch.isfinite(clip)
    assert abs(out.as_floats()["total"]) < 1e-6
    assert torch.isfinite(image.grad).all() and torch.isfinite(text.grad).all()


@pytest.mark.parametrize("term", DISTRIBUTION_TERMS)
def test_bf16_autocast_is_finite_float32_and_close(term: str) -> None:
    torch.manual_seed(44)
    head = torch.nn.Linear(10, 6)
    inputs_image, inputs_text = torch.randn(16, 10), torch.randn(16, 10) + 0.5
    cma, clip = CMALoss(distribution_term=term), ClipLoss()

    def losses():
        image = F.normalize(head(inputs_image), dim=1)
        text = F.normalize(head(inputs_text), dim=1)
        return cma(image, text).total, clip(image, text, torch.tensor(20.0)), image.dtype

    cma_32, clip_32, dtype_32 = losses()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cma_16, clip_16, dtype_16 = losses()
    assert dtype_32 == torch.float32 and dtype_16 == torch.bfloat16  # autocast did act
    for low, full in ((cma_16, cma_32), (clip_16, clip_32)):
        assert low.dtype == torch.float32 and torch.isfinite(low)
        assert float(low.detach()) == pytest.approx(float(full.detach()), rel=0.05, abs=1e-3)


# ---------------------------------------------------------------- objective and errors


def test_tpccma_objective() -> None:
    clip, cma = torch.tensor(2.0), torch.tensor(0.5)
    assert float(tpccma_objective(clip, cma, 0.3)) == pytest.approx(2.15)
    assert float(tpccma_objective(clip, cma, 0.0)) == 2.0
    assert float(tpccma_objective(clip, cma, 1)) == 2.5
    for alpha in (-0.1, 1.01, float("nan")):
        with pytest.raises(LossInputError, match="alpha"):
            tpccma_objective(clip, cma, alpha)


def test_errors_for_bad_features() -> None:
    good = _sphere(6, 4, 45)
    cma, clip = CMALoss(), ClipLoss()
    with pytest.raises(LossInputError, match="2-D"):
        cma(good[0], good)
    with pytest.raises(LossInputError, match="width"):
        cma(good, _sphere(6, 5, 46))
    with pytest.raises(LossInputError, match="paired"):
        clip(good, good[:5], 10.0)
    with pytest.raises(LossInputError, match="scalar"):
        clip(good, good, torch.ones(2))
    with pytest.raises(LossInputError, match="floating"):
        cma(torch.ones(4, 3, dtype=torch.long), torch.ones(4, 3, dtype=torch.long))
    bad = good.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(LossInputError, match="NaN"):
        cma(bad, good)
    with pytest.raises(LossInputError, match="NaN"):
        clip(good, bad, 10.0)


@pytest.mark.parametrize("term", DISTRIBUTION_TERMS)
def test_errors_for_too_small_batches(term: str) -> None:
    with pytest.raises(LossInputError, match="at least 2"):
        CMALoss(distribution_term=term)(_sphere(1, 4, 47), _sphere(3, 4, 48))
    CMALoss(distribution_term=term)(_sphere(2, 4, 47), _sphere(2, 4, 48))  # smallest allowed


def test_unbiased_mmd_needs_four_samples() -> None:
    loss = CMALoss(distribution_term="mmd", mmd_unbiased=True)
    with pytest.raises(LossInputError, match="at least 4"):
        loss(_sphere(3, 4, 49), _sphere(6, 4, 50))
    assert torch.isfinite(loss(_sphere(4, 4, 49), _sphere(4, 4, 50)).total)


def test_errors_for_bad_settings() -> None:
    with pytest.raises(LossInputError, match="distribution_term"):
        CMALoss(distribution_term="wasserstein")
    with pytest.raises(LossInputError, match="centroid_weight"):
        CMALoss(centroid_weight=-1.0)
    with pytest.raises(LossInputError, match="distribution_weight"):
        CMALoss(distribution_weight=float("inf"))
    with pytest.raises(LossInputError, match="bandwidth_multipliers"):
        CMALoss(bandwidth_multipliers=(1.0, 0.0))


def test_distributed_helpers_without_process_group() -> None:
    x = torch.randn(3, 2)
    assert not distributed.is_dist()
    assert distributed.rank_and_world() == (0, 1)
    assert distributed.rank() == 0 and distributed.world_size() == 1
    assert distributed.gather_with_grad(x) is x
