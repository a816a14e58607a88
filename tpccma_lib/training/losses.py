"""Training losses: the CLIP contrastive loss and the CMA (centroid + distribution) loss.

Objective of TPC-CMA fine-tuning (:func:`tpccma_objective`)::

    L = L_clip + alpha * L_CMA,      alpha in [0, 1] (from the curriculum)
    L_CMA = lambda_c * ||mu_img - mu_txt||^2 + lambda_d * D(P_img || P_txt)

``mu`` are batch means; ``D`` compares the two *centred* batch clouds (shape, spread and
orientation, with the offset removed), so the two terms measure the centroid gap and the
distribution gap separately. Choices of ``D`` (``distribution_term``):

- ``"mmd"``: MMD^2 with a multi-bandwidth RBF kernel, ``k(a, b) = mean_s exp(-||a - b||^2 /
  (2 (s * sigma)^2))``, ``s in {0.5, 1, 2}`` and ``sigma`` the median heuristic: the median
  pairwise Euclidean distance of the pooled centred batch (detached, no gradient; on at most
  1024 evenly strided points; floored at 1e-4). The default estimator is the *biased*
  V-statistic: it is a squared RKHS norm, so never negative, and smoother to optimise than the
  unbiased U-statistic, whose value fluctuates around 0 once the clouds match (negative half of
  the time) and whose gradient is noisier; ``mmd_unbiased=True`` selects the U-statistic
  (needs >= 4 samples per modality: with fewer it rests on one or two within-modality pairs).
  Cost O(B^2 D). Sees every moment, not only the covariance.
- ``"coral"``: ``||C_img - C_txt||_F^2`` with ``C = Xc^T Xc / (B - 1)`` the batch covariance.
  Not divided by Deep CORAL's ``4 D^2``: for unit-norm embeddings ``||C||_F <= tr C <= 1``, so
  the raw value is already O(1) or smaller; a constant factor is the same as changing
  ``distribution_weight``. Cost O(B D^2).
- ``"bures"``: squared Bures-Wasserstein distance of the batch covariances (the 2-Wasserstein
  distance of the two centred Gaussians), ``tr C_x + tr C_y - 2 tr (C_x^1/2 C_y C_x^1/2)^1/2``.
  Numerical safety: no matrix square root and no ``eigh`` is differentiated. The fidelity
  term equals the nuclear norm of the cross-Gram matrix, ``||Xc Yc^T||_* /
  sqrt((n-1)(m-1))``; each factor is first compressed to at most D rows by a QR decomposition
  of its *detached* value (``Q^T X`` keeps ``X^T X`` exactly, and the gradient of a nuclear
  norm already lies in that row space, so it is exact), and the singular values come from
  ``torch.linalg.svdvals``, whose backward is finite even for repeated or zero singular values
  (rank-deficient covariances when B < D, identical embeddings). Cost O(B D^2 + D^3).

Default ``"bures"``. Experiment (``benchmarks/bench_losses.py --experiment``; table in
``benchmarks/results/losses_default_term.csv``): two point clouds on the sphere, B = 256,
D = 64 and 512, Gaussian or 10-cluster clouds, the text cloud trained 100 Adam steps on
``CMALoss`` as free points or through a linear map, 3 seeds. The Bures term cut the Bures
distribution gap most in all 8 settings (to 0.00 of its start as free points, to 0.20-0.65
through a linear map; MMD and CORAL left 0.29-1.47, the centroid term alone 0.85-1.59), and
it also gave the lowest MMD^2 in 6 of 8 (MMD descent won for Gaussian clouds through a
linear map, 0.50-0.56 against Bures' 0.98-1.17: covariance is not the whole distribution,
which is when ``"mmd"`` is the better choice). Cost (``bench_losses.py``: one AdamW step of
the embedded default's 1280/384 -> 512 heads, 1 thread on a shared 2-core CPU, noisy): on
top of the contrastive step Bures adds 0.1-1.8x (its D^3 SVD dominates at B <= 1024),
CORAL 0.1-0.8x, MMD 1.0-2.5x, for B = 256 ... 4096.

Distributed training: :class:`ClipLoss` and :class:`CMALoss` gather every rank's features with
autograd (:func:`tpccma_lib.training.distributed.gather_with_grad`), so the contrastive logits, the
means, the kernel matrix and the covariances are those of the *global* batch. Convention:
every rank computes the same global loss; after averaging parameter gradients across ranks
(as DDP does) the gradient equals the single-process gradient on the concatenated batch.
Every rank must pass a local batch of the same size.

Precision: all statistics are computed in float32 (float16/bfloat16 inputs are cast up and
autocast is switched off inside the losses; float64 stays float64), so bf16/fp16 autocast is
safe. Inputs are checked: 2-D features of equal width, enough samples for the chosen term
(>= 2 per modality, >= 4 for unbiased MMD), and finite values (``check_finite``; one
device sync per call, switch off when that matters).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tpccma_lib.training.distributed import gather_with_grad

__all__ = [
    "DISTRIBUTION_TERMS",
    "DEFAULT_BANDWIDTH_MULTIPLIERS",
    "LossInputError",
    "clip_contrastive_loss",
    "ClipLoss",
    "centroid_term",
    "median_heuristic_bandwidth",
    "mmd_squared",
    "coral_distance",
    "bures_distance_squared",
    "CMAOutput",
    "CMALoss",
    "tpccma_objective",
]

DISTRIBUTION_TERMS = ("mmd", "coral", "bures")
DEFAULT_BANDWIDTH_MULTIPLIERS = (0.5, 1.0, 2.0)
_MEDIAN_MAX_POINTS = 1024  # the median heuristic looks at most at this many pooled points
_BANDWIDTH_FLOOR = 1e-4  # sigma below this (all points within 1e-4) is taken as 1e-4
_MIN_SAMPLES = 2  # covariances (B - 1) and pairwise distances need two samples
_MIN_SAMPLES_UNBIASED_MMD = 4


class LossInputError(ValueError):
    """Features or settings a loss cannot use; the message says what was wrong."""


# ---------------------------------------------------------------- input handling


def _upcast(x: Tensor) -> Tensor:
    """float16/bfloat16 -> float32; float32/float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _no_autocast(x: Tensor) -> torch.autocast:
    return torch.autocast(device_type=x.device.type, enabled=False)


def _check_pair(image_features: Tensor, text_features: Tensor, *, paired: bool) -> None:
    for name, x in (("image_features", image_features), ("text_features", text_features)):
        if not isinstance(x, Tensor):
            raise LossInputError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
        if x.ndim != 2:
            raise LossInputError(
                f"{name} must be 2-D (batch, dim), got shape {tuple(x.shape)}; "
                "flatten or stack the embeddings first."
            )
        if not x.is_floating_point():
            raise LossInputError(f"{name} must be floating point, got {x.dtype}.")
    if image_features.shape[1] != text_features.shape[1]:
        raise LossInputError(
            f"image and text embeddings differ in width: {image_features.shape[1]} vs "
            f"{text_features.shape[1]}; both must live in the same joint space."
        )
    if paired and image_features.shape[0] != text_features.shape[0]:
        raise LossInputError(
            f"the contrastive loss needs paired rows: {image_features.shape[0]} images vs "
            f"{text_features.shape[0]} texts."
        )


def _check_finite(**tensors: Tensor) -> None:
    for name, x in tensors.items():
        if not bool(torch.isfinite(x).all()):
            raise LossInputError(
                f"{name} contains NaN or inf; check the encoder outputs (e.g. fp16 overflow "
                "or a diverged run) before computing the loss."
            )


def _check_count(name: str, x: Tensor, minimum: int, why: str) -> None:
    if x.shape[0] < minimum:
        raise LossInputError(
            f"{name} has {x.shape[0]} sample(s) in the (global) batch; {why} needs at least "
            f"{minimum}. Use a larger batch."
        )


# ---------------------------------------------------------------- contrastive loss


def clip_contrastive_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: Tensor | float,
    labels: Tensor | None = None,
) -> Tensor:
    """Symmetric InfoNCE of CLIP on one (already global) batch.

    ``logits = logit_scale * image_features @ text_features^T`` (B, B);
    ``L = (CE(logits, arange(B)) + CE(logits^T, arange(B))) / 2``, CE the mean cross entropy.

    Args:
        image_features: (B, D) L2-normalised image embeddings; row i pairs with text row i.
        text_features: (B, D) L2-normalised text embeddings.
        logit_scale: scalar *multiplier* (e.g. 100), not its logarithm.
        labels: (B,) ``arange(B)`` on the features' device, to reuse a cached tensor.
    Returns:
        scalar loss (float32, or float64 for float64 inputs).
    """
    _check_pair(image_features, text_features, paired=True)
    image_features, text_features = _upcast(image_features), _upcast(text_features)
    scale = torch.as_tensor(logit_scale, device=image_features.device)
    if scale.numel() != 1:
        raise LossInputError(
            f"logit_scale must be a scalar (the multiplier, e.g. 100), got shape "
            f"{tuple(scale.shape)}."
        )
    scale = scale.reshape(()).to(image_features.dtype)
    if labels is None:
        labels = torch.arange(image_features.shape[0], device=image_features.device)
    with _no_autocast(image_features):
        logits = scale * image_features @ text_features.T  # (B_img, B_txt)
        return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


class ClipLoss(nn.Module):
    """CLIP contrastive loss on the global batch; owns its gather and its label tensor.

    Under ``torch.distributed`` every rank gathers all ranks' features with autograd and
    computes the loss on the global batch (see the module docstring for the gradient
    convention); in a single process the gather is the identity.

    Args:
        check_finite: raise :class:`LossInputError` on NaN/inf features (one device sync).
    """

    def __init__(self, check_finite: bool = True) -> None:
        super().__init__()
        self.check_finite = check_finite
        self._labels: Tensor | None = None

    def _labels_for(self, n: int, device: torch.device) -> Tensor:
        cached = self._labels
        if cached is None or cached.shape[0] != n or cached.device != device:
            cached = torch.arange(n, device=device)
            self._labels = cached
        return cached

    def forward(
        self, image_features: Tensor, text_features: Tensor, logit_scale: Tensor | float
    ) -> Tensor:
        """(B_local, D), (B_local, D), scalar multiplier -> scalar loss of the global batch."""
        _check_pair(image_features, text_features, paired=True)
        image_all = gather_with_grad(_upcast(image_features))  # (B, D)
        text_all = gather_with_grad(_upcast(text_features))  # (B, D)
        if self.check_finite:
            _check_finite(image_features=image_all, text_features=text_all)
        labels = self._labels_for(image_all.shape[0], image_all.device)
        return clip_contrastive_loss(image_all, text_all, logit_scale, labels=labels)


# ---------------------------------------------------------------- CMA terms


def centroid_term(image_features: Tensor, text_features: Tensor) -> Tensor:
    """Squared centroid gap ``||mean(image_features) - mean(text_features)||^2``.

    Args:
        image_features: (n, D); text_features: (m, D).
    Returns:
        scalar, in squared embedding units.
    """
    difference = image_features.mean(dim=0) - text_features.mean(dim=0)  # (D,)
    return (difference * difference).sum()


def _squared_distances(a: Tensor, b: Tensor) -> Tensor:
    """(n, D), (m, D) -> (n, m) matrix of ``||a_i - b_j||^2`` (no sqrt: smooth at 0)."""
    a_sq = (a * a).sum(dim=1, keepdim=True)  # (n, 1)
    b_sq = (b * b).sum(dim=1)  # (m,)
    return (a_sq + b_sq - 2.0 * a @ b.T).clamp_min(0.0)


def median_heuristic_bandwidth(x: Tensor, y: Tensor) -> Tensor:
    """Median pairwise Euclidean distance of the pooled samples (detached).

    ``sigma = sqrt(median_{i<j} ||z_i - z_j||^2)`` over ``z = [x; y]`` (numpy's median, i.e.
    the mean of the two middle values for an even count); with more than 1024 pooled points
    the median is taken over 1024 evenly strided ones. Floored at 1e-4.

    Args:
        x: (n, D); y: (m, D).
    Returns:
        scalar tensor, no gradient.
    """
    with torch.no_grad():
        pooled = torch.cat([x, y]).detach()
        if pooled.shape[0] > _MEDIAN_MAX_POINTS:
            index = torch.linspace(0, pooled.shape[0] - 1, _MEDIAN_MAX_POINTS)
            pooled = pooled[index.round().long().to(pooled.device)]
        rows, cols = torch.triu_indices(pooled.shape[0], pooled.shape[0], offset=1)
        distances = _squared_distances(pooled, pooled)[rows.to(pooled.device), cols]
        median = torch.quantile(distances, 0.5)
        return median.sqrt().clamp_min(_BANDWIDTH_FLOOR)


def mmd_squared(
    x: Tensor,
    y: Tensor,
    bandwidths: Tensor | Sequence[float] | None = None,
    *,
    bandwidth_multipliers: Sequence[float] = DEFAULT_BANDWIDTH_MULTIPLIERS,
    unbiased: bool = False,
) -> Tensor:
    """MMD^2 between two samples with a mean of RBF kernels.

    ``k(a, b) = (1/S) sum_s exp(-||a - b||^2 / (2 sigma_s^2))``. Biased (V-statistic):
    ``mean K_xx + mean K_yy - 2 mean K_xy`` (diagonals included, always >= 0). Unbiased
    (U-statistic): the diagonals of ``K_xx`` and ``K_yy`` left out, dividing by n(n-1), m(m-1).

    Args:
        x: (n, D) first sample; y: (m, D) second sample (no centring is done here).
        bandwidths: (S,) kernel widths ``sigma_s``; ``None`` = median heuristic times
            ``bandwidth_multipliers``.
        bandwidth_multipliers: factors on the median-heuristic ``sigma``.
        unbiased: U-statistic instead of the V-statistic.
    Returns:
        scalar (dimensionless; the kernel takes values in [0, 1]).
    """
    minimum = _MIN_SAMPLES_UNBIASED_MMD if unbiased else _MIN_SAMPLES
    _check_count("x", x, minimum, "MMD^2" + (" (unbiased)" if unbiased else ""))
    _check_count("y", y, minimum, "MMD^2" + (" (unbiased)" if unbiased else ""))
    if bandwidths is None:
        sigma = median_heuristic_bandwidth(x, y)
        bandwidths = sigma * torch.as_tensor(bandwidth_multipliers, dtype=x.dtype, device=x.device)
    bandwidths = torch.as_tensor(bandwidths, dtype=x.dtype, device=x.device).reshape(-1)
    inverse_widths = 1.0 / (2.0 * bandwidths * bandwidths)  # (S,)
    within_x = _KernelMean.apply(x, None, inverse_widths, unbiased)
    within_y = _KernelMean.apply(y, None, inverse_widths, unbiased)
    between = _KernelMean.apply(x, y, inverse_widths, False)
    return within_x + within_y - 2.0 * between


class _KernelMean(torch.autograd.Function):
    """Mean of ``k(a_i, b_j) = (1/S) sum_s exp(-w_s ||a_i - b_j||^2)`` with a hand-written
    backward: it keeps one (n, m) distance matrix instead of one kernel per bandwidth and
    needs one matrix product per input (plain autograd on the same expression took ~2.7x as
    long for B = 4096, D = 512 on CPU). ``b=None``: the within-sample block of ``a``
    (diagonal distances exactly 0; left out of the mean when ``skip_diagonal``).
    Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, a, b, inverse_widths, skip_diagonal):  # type: ignore[override]
        same = b is None
        other = a if same else b
        distances = _squared_distances(a, other)  # (n, m)
        if same:  # exactly symmetric with a zero diagonal (the backward relies on symmetry)
            distances = 0.5 * (distances + distances.T)
            distances.fill_diagonal_(0.0)
        kernel, buffer = torch.zeros_like(distances), torch.empty_like(distances)
        for inverse_width in inverse_widths:
            kernel.add_(torch.mul(distances, -inverse_width, out=buffer).exp_())
        kernel.div_(inverse_widths.numel())
        if skip_diagonal:
            n = a.shape[0]
            value = (kernel.sum() - kernel.diagonal().sum()) / (n * (n - 1))
        else:
            value = kernel.mean()
        ctx.same, ctx.skip_diagonal = same, skip_diagonal
        ctx.save_for_backward(a, other, distances, inverse_widths)
        return value

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_value):  # type: ignore[override]
        a, other, distances, inverse_widths = ctx.saved_tensors
        n, m = distances.shape
        count = n * (n - 1) if ctx.skip_diagonal else n * m
        # weights[i, j] = dL/d(distance_ij) = -grad * (1/S) sum_s w_s exp(-w_s d_ij) / count
        weights, buffer = torch.zeros_like(distances), torch.empty_like(distances)
        for inverse_width in inverse_widths:
            weights.sub_(
                torch.mul(distances, -inverse_width, out=buffer).exp_().mul_(inverse_width)
            )
        weights.mul_(grad_value / (inverse_widths.numel() * count))
        if ctx.same:
            weights.fill_diagonal_(0.0)
            # d = |a_i|^2 + |a_j|^2 - 2 a_i.a_j with symmetric weights: 4 (rowsum a - W a)
            grad_a = 4.0 * (weights.sum(dim=1, keepdim=True) * a - weights @ a)
            return grad_a, None, None, None
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = 2.0 * (weights.sum(dim=1, keepdim=True) * a - weights @ other)
        if ctx.needs_input_grad[1]:
            grad_b = 2.0 * (weights.sum(dim=0).unsqueeze(1) * other - weights.T @ a)
        return grad_a, grad_b, None, None


def _covariance(x: Tensor) -> Tensor:
    """(n, D) -> (D, D) sample covariance ``Xc^T Xc / (n - 1)``."""
    centred = x - x.mean(dim=0)
    return centred.T @ centred / (x.shape[0] - 1)


def coral_distance(x: Tensor, y: Tensor) -> Tensor:
    """CORAL distance ``||C_x - C_y||_F^2`` of the sample covariances (no 1/(4 D^2) factor).

    Args:
        x: (n, D); y: (m, D).
    Returns:
        scalar, in (squared embedding units)^2.
    """
    _check_count("x", x, _MIN_SAMPLES, "a covariance")
    _check_count("y", y, _MIN_SAMPLES, "a covariance")
    difference = _covariance(x) - _covariance(y)
    return (difference * difference).sum()


def _compress_rows(centred: Tensor) -> Tensor:
    """(n, D) -> (min(n, D), D) factor ``A`` with ``A^T A = X^T X`` (gradient through X).

    For n > D: ``Q^T X`` with Q from a QR of the detached X (Q is n x D with orthonormal
    columns and X = Q R, so Q Q^T X = X). For n <= D: X itself.
    """
    n, dim = centred.shape
    if n <= dim:
        return centred
    basis, _ = torch.linalg.qr(centred.detach(), mode="reduced")  # (n, D)
    return basis.T @ centred  # (D, D)


def bures_distance_squared(x: Tensor, y: Tensor) -> Tensor:
    """Squared Bures-Wasserstein distance between the sample covariances of x and y.

    ``B^2 = tr C_x + tr C_y - 2 tr (C_x^1/2 C_y C_x^1/2)^1/2`` with ``C = Xc^T Xc / (n - 1)``;
    the last trace is computed as ``||Xc Yc^T||_* / sqrt((n - 1)(m - 1))`` (nuclear norm, see
    the module docstring for why this is exact and numerically safe).

    Args:
        x: (n, D); y: (m, D).
    Returns:
        scalar, in squared embedding units (>= 0 up to round-off).
    """
    _check_count("x", x, _MIN_SAMPLES, "a covariance")
    _check_count("y", y, _MIN_SAMPLES, "a covariance")
    n, m = x.shape[0], y.shape[0]
    x_centred = x - x.mean(dim=0)
    y_centred = y - y.mean(dim=0)
    trace_x = (x_centred * x_centred).sum() / (n - 1)
    trace_y = (y_centred * y_centred).sum() / (m - 1)
    cross = _compress_rows(x_centred) @ _compress_rows(y_centred).T  # (<=D, <=D)
    fidelity = torch.linalg.svdvals(cross).sum() / math.sqrt((n - 1) * (m - 1))
    return trace_x + trace_y - 2.0 * fidelity


# ---------------------------------------------------------------- CMA loss


class CMAOutput(NamedTuple):
    """Result of :class:`CMALoss`.

    ``total`` carries the gradient; ``centroid`` and ``distribution`` are the *unweighted*
    terms, detached, for logging.
    """

    total: Tensor  # lambda_c * centroid + lambda_d * distribution (differentiable)
    centroid: Tensor  # ||mu_img - mu_txt||^2 (detached)
    distribution: Tensor  # D(P_img || P_txt) on centred clouds (detached)

    def as_floats(self) -> dict[str, float]:
        """``{"total": ..., "centroid": ..., "distribution": ...}`` as Python floats."""
        return {name: float(value.detach()) for name, value in self._asdict().items()}


class CMALoss(nn.Module):
    """``L_CMA = lambda_c * ||mu_img - mu_txt||^2 + lambda_d * D(P_img || P_txt)``.

    Means, kernel matrix and covariances are those of the global batch (features gathered
    with autograd under ``torch.distributed``); ``D`` sees each modality centred on its own
    batch mean. Both terms are computed (and logged) even when their weight is 0. See the
    module docstring for the terms, their costs and the DDP convention.

    Args:
        centroid_weight: lambda_c (>= 0).
        distribution_weight: lambda_d (>= 0).
        distribution_term: "bures" (default), "mmd" or "coral".
        mmd_unbiased: U-statistic MMD instead of the (default) biased V-statistic.
        bandwidth_multipliers: MMD kernel widths as multiples of the median heuristic.
        check_finite: raise :class:`LossInputError` on NaN/inf features (one device sync).
    """

    def __init__(
        self,
        centroid_weight: float = 1.0,
        distribution_weight: float = 1.0,
        distribution_term: str = "bures",
        mmd_unbiased: bool = False,
        bandwidth_multipliers: Sequence[float] = DEFAULT_BANDWIDTH_MULTIPLIERS,
        check_finite: bool = True,
    ) -> None:
        super().__init__()
        for name, weight in (
            ("centroid_weight", centroid_weight),
            ("distribution_weight", distribution_weight),
        ):
            if not (math.isfinite(weight) and weight >= 0):
                raise LossInputError(f"{name} must be a finite number >= 0, got {weight}.")
        if distribution_term not in DISTRIBUTION_TERMS:
            raise LossInputError(
                f"unknown distribution_term {distribution_term!r}; "
                f"choose one of {', '.join(DISTRIBUTION_TERMS)}."
            )
        multipliers = tuple(float(s) for s in bandwidth_multipliers)
        if not multipliers or not all(math.isfinite(s) and s > 0 for s in multipliers):
            raise LossInputError(
                f"bandwidth_multipliers must be positive numbers, got {bandwidth_multipliers}."
            )
        self.centroid_weight = float(centroid_weight)
        self.distribution_weight = float(distribution_weight)
        self.distribution_term = distribution_term
        self.mmd_unbiased = mmd_unbiased
        self.bandwidth_multipliers = multipliers
        self.check_finite = check_finite

    def extra_repr(self) -> str:
        return (
            f"centroid_weight={self.centroid_weight}, "
            f"distribution_weight={self.distribution_weight}, "
            f"distribution_term={self.distribution_term!r}, mmd_unbiased={self.mmd_unbiased}"
        )

    def _min_samples(self) -> int:
        if self.distribution_term == "mmd" and self.mmd_unbiased:
            return _MIN_SAMPLES_UNBIASED_MMD
        return _MIN_SAMPLES

    def distribution(self, image_centred: Tensor, text_centred: Tensor) -> Tensor:
        """The selected ``D`` on already centred (n, D), (m, D) clouds -> scalar."""
        if self.distribution_term == "mmd":
            return mmd_squared(
                image_centred,
                text_centred,
                bandwidth_multipliers=self.bandwidth_multipliers,
                unbiased=self.mmd_unbiased,
            )
        if self.distribution_term == "coral":
            return coral_distance(image_centred, text_centred)
        return bures_distance_squared(image_centred, text_centred)

    def forward(self, image_features: Tensor, text_features: Tensor) -> CMAOutput:
        """(B_local, D), (B_local', D) -> :class:`CMAOutput` of the global batch."""
        _check_pair(image_features, text_features, paired=False)
        image_all = gather_with_grad(_upcast(image_features))  # (n, D)
        text_all = gather_with_grad(_upcast(text_features))  # (m, D)
        if self.check_finite:
            _check_finite(image_features=image_all, text_features=text_all)
        why = f"CMALoss with distribution_term={self.distribution_term!r}" + (
            " (unbiased)" if self.distribution_term == "mmd" and self.mmd_unbiased else ""
        )
        _check_count("image_features", image_all, self._min_samples(), why)
        _check_count("text_features", text_all, self._min_samples(), why)
        with _no_autocast(image_all):
            centroid = centroid_term(image_all, text_all)
            distribution = self.distribution(
                image_all - image_all.mean(dim=0), text_all - text_all.mean(dim=0)
            )
            total = self.centroid_weight * centroid + self.distribution_weight * distribution
        return CMAOutput(
            total=total, centroid=centroid.detach(), distribution=distribution.detach()
        )


def tpccma_objective(clip_loss: Tensor, cma_total: Tensor, alpha: float) -> Tensor:
    """TPC-CMA objective ``L_clip + alpha * L_CMA``.

    Args:
        clip_loss: scalar contrastive loss.
        cma_total: scalar ``CMAOutput.total``.
        alpha: curriculum weight in [0, 1].
    Returns:
        scalar loss.
    """
    alpha_value = float(alpha)
    if not (math.isfinite(alpha_value) and 0.0 <= alpha_value <= 1.0):
        raise LossInputError(
            f"alpha must lie in [0, 1] (the curriculum weight of L_CMA), got {alpha}."
        )
    return clip_loss + alpha_value * cma_total
