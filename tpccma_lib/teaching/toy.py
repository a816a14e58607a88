"""Small numerical experiments behind notebook 02: why CLIP keeps a gap and what L_CMA does.

- Toy clouds on the unit sphere: :func:`sphere_caps` (two caps of chosen pole and shape) and
  :func:`equal_mean_clouds` (same mean, different covariance: centroid term 0, Bures > 0).
- The cone effect in numbers: :func:`cone_statistics` (mean cosine within and across
  modalities, exact, O(N D)).
- The contrastive loss along the gap direction (Liang et al. 2022): :func:`gap_shift_curve`
  moves both modalities by ``lambda * Delta / 2`` towards each other and records ``L_clip``
  and its slope ``dL/dlambda`` at ``lambda = 0`` for several logit scales.
- The CMA terms of a pair of clouds (:func:`cma_terms`) and their closed-form gradients,
  :func:`centroid_term_gradient`, :func:`coral_gradient`, :func:`bures_gradient` (with
  :func:`bures_transport_map`), checked against autograd by :func:`gradient_check`.
- :func:`optimize_alignment`: optimise free text points or a linear map of the text embeddings
  under ``w_clip * L_clip + alpha * L_CMA`` and record the gap components every few steps;
  :func:`compare_objectives` runs several named objectives, :func:`final_rows` keeps each
  run's last record.

Everything is deterministic given its ``seed``. Inputs and outputs are :class:`Embeddings`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from tpccma_lib.embeddings import Embeddings, l2_normalize
from tpccma_lib.evaluation.retrieval import retrieval_recall
from tpccma_lib.gap.metrics import centroid_gap, distribution_gap
from tpccma_lib.linalg import SingularMatrixError, gaussian_ot_map
from tpccma_lib.training.loop import PairBatcher
from tpccma_lib.training.losses import (
    DISTRIBUTION_TERMS,
    CMALoss,
    bures_distance_squared,
    centroid_term,
    clip_contrastive_loss,
    coral_distance,
    mmd_squared,
)

__all__ = [
    "DEFAULT_SHIFTS",
    "ToyError",
    "sphere_caps",
    "equal_mean_clouds",
    "cone_statistics",
    "shift_along_gap",
    "gap_shift_curve",
    "autograd_gradients",
    "centroid_term_gradient",
    "coral_gradient",
    "bures_transport_map",
    "bures_gradient",
    "gradient_check",
    "cma_terms",
    "Objective",
    "objective_variants",
    "cma_only_variants",
    "OptimizeConfig",
    "AlignmentRun",
    "optimize_alignment",
    "compare_objectives",
    "final_rows",
]

PARAMETRISATIONS = ("linear", "points")
#: Gap shifts lambda of :func:`gap_shift_curve`: -0.5, -0.4, ..., 1.5 (exact decimals).
DEFAULT_SHIFTS = tuple(round(-0.5 + 0.1 * i, 10) for i in range(21))


class ToyError(ValueError):
    """Bad settings for a toy experiment; the message says what to change."""


# ---------------------------------------------------------------- toy clouds


def _tangent_basis(pole: np.ndarray) -> np.ndarray:
    """(2, 3) orthonormal basis of the plane orthogonal to the unit 3-vector ``pole``."""
    helper = np.eye(3)[int(np.argmin(np.abs(pole)))]
    first = np.cross(pole, helper)
    first /= np.linalg.norm(first)
    return np.stack([first, np.cross(pole, first)])


def _cap(pole: Sequence[float], scales: Sequence[float], n: int, rng: np.random.Generator):
    pole_vec = np.asarray(pole, dtype=np.float64)
    if pole_vec.shape != (3,) or np.linalg.norm(pole_vec) == 0:
        raise ToyError(f"a pole must be a non-zero 3-vector, got {pole!r}.")
    pole_vec = pole_vec / np.linalg.norm(pole_vec)
    scale_vec = np.asarray(scales, dtype=np.float64)
    if scale_vec.shape != (2,) or (scale_vec < 0).any():
        raise ToyError(f"scales must be two non-negative tangent spreads, got {scales!r}.")
    offsets = rng.standard_normal((n, 2)) * scale_vec @ _tangent_basis(pole_vec)  # (n, 3)
    return l2_normalize(pole_vec + offsets)


def sphere_caps(
    n: int = 200,
    image_pole: Sequence[float] = (1.0, 0.0, 0.3),
    text_pole: Sequence[float] = (0.0, 1.0, 0.3),
    image_scales: Sequence[float] = (0.35, 0.08),
    text_scales: Sequence[float] = (0.08, 0.35),
    seed: int = 0,
) -> Embeddings:
    """Two caps of ``n`` points each on the unit sphere S^2, row ``k`` of each a "pair".

    A point is ``normalize(pole + s_1 z_1 u_1 + s_2 z_2 u_2)``, ``z ~ N(0, 1)``, ``u_1, u_2`` an
    orthonormal basis of the tangent plane at the pole, ``(s_1, s_2)`` the cap's ``scales``
    (unequal scales: an elongated cap). The default caps are elongated along different tangent axes,
    and the poles are 90 degrees apart in the xy-plane: a centroid gap *and* a distribution gap.

    Returns:
        ``Embeddings`` with image (n, 3) and text (n, 3), ``text_to_image = arange(n)``.
    """
    if n < 4:
        raise ToyError(f"n must be at least 4 points per cap, got {n}.")
    rng = np.random.default_rng(seed)
    image = _cap(image_pole, image_scales, n, rng)
    text = _cap(text_pole, text_scales, n, rng)
    return Embeddings.from_arrays(image, text, meta={"dataset": "toy sphere caps", "seed": seed})


def equal_mean_clouds(
    n: int = 200, scales: Sequence[float] = (0.4, 0.08), seed: int = 0
) -> Embeddings:
    """Two clouds on S^2 with *identical* means and different covariances.

    Image: ``n`` points of a cap around the north pole with tangent spreads ``scales`` (long
    along x), symmetrised (each point ``(a, b, c)`` comes with ``(-a, -b, c)``) so the mean is
    exactly ``(0, 0, mean c)``. Text: the image cloud turned 90 degrees about the z-axis,
    ``(a, b, c) -> (-b, a, c)``: same mean, same spread, but long along y. So the centroid
    term is 0 and every distribution term is positive.

    Returns:
        ``Embeddings`` with image (n, 3), text (n, 3) (``n`` rounded up to even).
    """
    if n < 4:
        raise ToyError(f"n must be at least 4, got {n}.")
    rng = np.random.default_rng(seed)
    half = _cap((0.0, 0.0, 1.0), scales, (n + 1) // 2, rng)  # (n/2, 3)
    image = np.concatenate([half, half * np.array([-1.0, -1.0, 1.0])])
    text = np.stack([-image[:, 1], image[:, 0], image[:, 2]], axis=1)
    return Embeddings.from_arrays(image, text, meta={"dataset": "toy equal-mean clouds"})


# ---------------------------------------------------------------- the cone effect


def _mean_offdiagonal_cosine(x: np.ndarray) -> float:
    """mean_{i != j} x_i . x_j of unit rows = (||sum_i x_i||^2 - n) / (n (n - 1)), O(n D)."""
    n = x.shape[0]
    total = x.sum(axis=0)
    return float((total @ total - np.einsum("ij,ij->", x, x)) / (n * (n - 1)))


def cone_statistics(emb: Embeddings) -> dict[str, float]:
    """Mean cosine similarities that reveal the cone effect (rows L2-normalised first).

    Returns:
        ``within_image`` = mean over image pairs i != j of cos(x_i, x_j); ``within_text`` the
        same for captions; ``between`` = mean over all image-caption pairs = mu_x . mu_y;
        ``matched`` = mean over matched pairs of cos(image, its caption). A narrow cone has
        within-modality cosines near 1; two cones apart have ``between`` near 0.
    """
    image = l2_normalize(emb.image.astype(np.float64))
    text = l2_normalize(emb.text.astype(np.float64))
    paired_image = image[emb.text_to_image]
    return {
        "within_image": _mean_offdiagonal_cosine(image),
        "within_text": _mean_offdiagonal_cosine(text),
        "between": float(image.mean(axis=0) @ text.mean(axis=0)),
        "matched": float(np.einsum("ij,ij->i", paired_image, text).mean()),
    }


# ---------------------------------------------------------------- L_clip along the gap


def shift_along_gap(image: Tensor, text: Tensor, shift: Tensor | float) -> tuple[Tensor, Tensor]:
    """Liang et al.'s gap shift: ``x' = normalize(x - lambda Delta / 2)``,
    ``y' = normalize(y + lambda Delta / 2)``, ``Delta = mean(x) - mean(y)``.

    ``lambda = 0`` leaves the embeddings as they are; ``lambda = 1`` puts both means on their
    midpoint before re-normalising (closes most of the centroid gap). ``Delta`` is a constant
    of the input (computed once, not re-estimated after the shift).

    Args:
        image: (N, D); text: (M, D); shift: scalar lambda (may require grad).
    Returns:
        the shifted (N, D) image and (M, D) text embeddings, unit rows.
    """
    delta = (image.mean(dim=0) - text.mean(dim=0)).detach()  # (D,)
    return (
        F.normalize(image - shift * delta / 2, dim=1),
        F.normalize(text + shift * delta / 2, dim=1),
    )


def _fixed_batches(n: int, batch_size: int, seed: int) -> list[np.ndarray]:
    """Disjoint batches of a seeded permutation of range(n); the remainder is dropped."""
    size = min(batch_size, n) if batch_size > 0 else n
    perm = np.random.default_rng(seed).permutation(n)
    return [perm[s : s + size] for s in range(0, n - size + 1, size)]


def gap_shift_curve(
    emb: Embeddings,
    logit_scales: Sequence[float] = (10.0, 30.0, 100.0),
    shifts: Sequence[float] = DEFAULT_SHIFTS,
    batch_size: int = 256,
    seed: int = 0,
) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """Contrastive loss of first-caption pairs as both modalities move along the gap.

    ``L(lambda)`` = mean over fixed disjoint batches of ``batch_size`` pairs of
    :func:`tpccma_lib.training.losses.clip_contrastive_loss` on :func:`shift_along_gap` (float64).

    Returns:
        ``(curve, summary)``. ``curve``: one row per (logit_scale, shift) with ``loss`` and
        ``loss_change = L(lambda) - L(0)``. ``summary``: one row per logit scale with
        ``loss`` = L(0), ``slope`` = dL/dlambda at 0 (autograd; negative = the loss pulls the
        modalities together), ``best_shift`` = the grid shift of lowest loss and
        ``gap_at_best`` = centroid gap of the pairs after that shift.
    """
    image_np, text_np = emb.first_caption_pairs()
    image = torch.as_tensor(image_np, dtype=torch.float64)
    text = torch.as_tensor(text_np, dtype=torch.float64)
    if image.shape[0] < 2:
        raise ToyError("gap_shift_curve needs at least 2 image-caption pairs.")
    batches = [torch.as_tensor(b) for b in _fixed_batches(image.shape[0], batch_size, seed)]

    def loss_at(shift: Tensor, scale: float) -> Tensor:
        moved_image, moved_text = shift_along_gap(image, text, shift)
        losses = [clip_contrastive_loss(moved_image[b], moved_text[b], scale) for b in batches]
        return torch.stack(losses).mean()

    curve, summary = [], []
    grid = [float(s) for s in shifts]
    for scale in logit_scales:
        zero = torch.zeros((), dtype=torch.float64, requires_grad=True)
        base = loss_at(zero, float(scale))
        (slope,) = torch.autograd.grad(base, zero)
        values = []
        with torch.no_grad():
            for shift in grid:
                value = float(loss_at(torch.tensor(shift, dtype=torch.float64), float(scale)))
                values.append(value)
                curve.append(
                    {
                        "logit_scale": float(scale),
                        "shift": shift,
                        "loss": value,
                        "loss_change": value - float(base.detach()),
                    }
                )
            best = grid[int(np.argmin(values))]
            moved_image, moved_text = shift_along_gap(image, text, best)
        summary.append(
            {
                "logit_scale": float(scale),
                "loss": float(base.detach()),
                "slope": float(slope),
                "best_shift": best,
                "gap_at_best": centroid_gap(moved_image.numpy(), moved_text.numpy()),
            }
        )
    return curve, summary


# ---------------------------------------------------------------- gradients of the CMA terms


def autograd_gradients(
    term: Callable[[Tensor, Tensor], Tensor], image: np.ndarray, text: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of ``term(image, text)`` (a scalar) w.r.t. every row of both, by autograd.

    Args:
        term: e.g. :func:`tpccma_lib.training.losses.centroid_term` or ``bures_distance_squared``.
        image: (n, D); text: (m, D). Computed in float64.
    Returns:
        (n, D) gradient w.r.t. image rows, (m, D) w.r.t. text rows.
    """
    x = torch.tensor(np.asarray(image, dtype=np.float64), requires_grad=True)
    y = torch.tensor(np.asarray(text, dtype=np.float64), requires_grad=True)
    grad_x, grad_y = torch.autograd.grad(term(x, y), (x, y))
    return grad_x.numpy(), grad_y.numpy()


def centroid_term_gradient(image: np.ndarray, text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form gradient of ``||mu_x - mu_y||^2``: every image row gets
    ``2 (mu_x - mu_y) / n``, every text row ``-2 (mu_x - mu_y) / m`` (a pure translation).

    Returns:
        (n, D), (m, D) gradients.
    """
    x, y = np.asarray(image, np.float64), np.asarray(text, np.float64)
    offset = x.mean(axis=0) - y.mean(axis=0)  # (D,)
    return (
        np.broadcast_to(2.0 * offset / x.shape[0], x.shape).copy(),
        np.broadcast_to(-2.0 * offset / y.shape[0], y.shape).copy(),
    )


def _sample_covariance(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(centred rows (n, D), covariance Xc^T Xc / (n - 1) (D, D)), as in ``losses``."""
    centred = x - x.mean(axis=0)
    return centred, centred.T @ centred / (x.shape[0] - 1)


def coral_gradient(image: np.ndarray, text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form gradient of ``||C_x - C_y||_F^2`` (sample covariances, divisor n - 1):
    ``dL/dx_i = 4 (C_x - C_y)(x_i - mu_x) / (n - 1)``, ``dL/dy_j = -4 (C_x - C_y)(y_j - mu_y) /
    (m - 1)``.

    Returns:
        (n, D), (m, D) gradients.
    """
    xc, cov_x = _sample_covariance(np.asarray(image, np.float64))
    yc, cov_y = _sample_covariance(np.asarray(text, np.float64))
    difference = cov_x - cov_y
    return 4.0 * xc @ difference / (xc.shape[0] - 1), -4.0 * yc @ difference / (yc.shape[0] - 1)


def bures_transport_map(cov_from: np.ndarray, cov_to: np.ndarray) -> np.ndarray:
    """Optimal transport map between centred Gaussians, ``T z`` sends N(0, C_from) to N(0, C_to).

    ``T = C_to^{1/2} (C_to^{1/2} C_from C_to^{1/2})^{-1/2} C_to^{1/2}`` (symmetric PSD,
    ``T C_from T = C_to``; :func:`tpccma_lib.linalg.gaussian_ot_map`). It is also the derivative
    of the Bures fidelity: ``dB^2(C_to, C_from) / dC_from = I - T``.

    Args:
        cov_from, cov_to: (D, D) full-rank covariances.
    Returns:
        (D, D) matrix T.
    """
    try:
        return gaussian_ot_map(cov_from, cov_to)
    except SingularMatrixError as exc:
        raise ToyError(
            f"{exc} The closed-form Bures gradient needs full-rank covariances: use more points "
            "than dimensions."
        ) from exc


def bures_gradient(image: np.ndarray, text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form gradient of the squared Bures distance of the sample covariances.

    ``dB^2/dy_j = 2 (I - T_{y->x}) (y_j - mu_y) / (m - 1)`` with ``T_{y->x}`` the
    :func:`bures_transport_map` from the text to the image covariance (and symmetrically for
    ``x_i``): a descent step moves every centred text point towards ``T y_c``, where optimal
    transport between the two Gaussian fits would send it.

    Args:
        image: (n, D); text: (m, D); both covariances must be full rank (n, m > D).
    Returns:
        (n, D), (m, D) gradients.
    """
    xc, cov_x = _sample_covariance(np.asarray(image, np.float64))
    yc, cov_y = _sample_covariance(np.asarray(text, np.float64))
    eye = np.eye(cov_x.shape[0])
    to_text = bures_transport_map(cov_x, cov_y)  # image -> text
    to_image = bures_transport_map(cov_y, cov_x)  # text -> image
    return (
        2.0 * xc @ (eye - to_text) / (xc.shape[0] - 1),
        2.0 * yc @ (eye - to_image) / (yc.shape[0] - 1),
    )


_CLOSED_FORMS: dict[str, Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
    "centroid": centroid_term_gradient,
    "coral": coral_gradient,
    "bures": bures_gradient,
}
_TERMS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "centroid": centroid_term,
    "coral": coral_distance,
    "bures": bures_distance_squared,
}


def gradient_check(
    image: np.ndarray, text: np.ndarray, terms: Sequence[str] = ("centroid", "coral", "bures")
) -> list[dict[str, Any]]:
    """Closed-form gradients of the CMA terms against autograd through :mod:`tpccma_lib.training.losses`.

    Returns:
        One row per term: ``term``, ``max_abs_difference`` (over every entry of both
        gradients), ``max_gradient`` (largest autograd entry, for scale) and ``relative``
        (their ratio).
    """
    rows = []
    for term in terms:
        if term not in _CLOSED_FORMS:
            raise ToyError(f"no closed form for {term!r}; choose from {sorted(_CLOSED_FORMS)}.")
        closed = _CLOSED_FORMS[term](image, text)
        auto = autograd_gradients(_TERMS[term], image, text)
        difference = max(float(np.abs(c - a).max()) for c, a in zip(closed, auto, strict=True))
        scale = max(float(np.abs(a).max()) for a in auto)
        rows.append(
            {
                "term": term,
                "max_abs_difference": difference,
                "max_gradient": scale,
                "relative": difference / scale if scale > 0 else math.nan,
            }
        )
    return rows


def cma_terms(emb: Embeddings) -> dict[str, float]:
    """Every CMA term of ``emb`` as :class:`tpccma_lib.training.losses.CMALoss` computes it (float64).

    Returns:
        ``centroid`` = ||mu_x - mu_y||^2, and the distribution terms on the centred clouds:
        ``bures`` (squared Bures distance), ``mmd`` (biased MMD^2, median-heuristic RBF
        kernels), ``coral`` (||C_x - C_y||_F^2).
    """
    x = torch.as_tensor(emb.image, dtype=torch.float64)
    y = torch.as_tensor(emb.text, dtype=torch.float64)
    x_centred, y_centred = x - x.mean(dim=0), y - y.mean(dim=0)
    return {
        "centroid": float(centroid_term(x, y)),
        "bures": float(bures_distance_squared(x_centred, y_centred)),
        "mmd": float(mmd_squared(x_centred, y_centred)),
        "coral": float(coral_distance(x_centred, y_centred)),
    }


# ---------------------------------------------------------------- optimising under L_CMA


@dataclass(frozen=True)
class Objective:
    """``L = clip_weight * L_clip + alpha * (centroid_weight * ||mu_x - mu_y||^2 +
    distribution_weight * D(P_x || P_y))`` on each batch (see :mod:`tpccma_lib.training.losses`)."""

    clip_weight: float = 1.0  # weight of the contrastive loss (0: a pure CMA toy)
    logit_scale: float = 100.0  # contrastive logit multiplier (CLIP: 100)
    alpha: float = 0.0  # weight of L_CMA
    centroid_weight: float = 1.0  # lambda_c
    distribution_weight: float = 1.0  # lambda_d
    distribution_term: str = "bures"  # "bures", "mmd" or "coral"

    def __post_init__(self) -> None:
        for name in ("clip_weight", "alpha", "centroid_weight", "distribution_weight"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ToyError(f"{name} must be a finite number >= 0, got {value}.")
        if not (math.isfinite(self.logit_scale) and self.logit_scale > 0):
            raise ToyError(f"logit_scale must be > 0 (CLIP uses 100), got {self.logit_scale}.")
        if self.distribution_term not in DISTRIBUTION_TERMS:
            raise ToyError(
                f"unknown distribution_term {self.distribution_term!r}; choose one of "
                f"{', '.join(DISTRIBUTION_TERMS)}."
            )
        if self.clip_weight == 0 and self.alpha == 0:
            raise ToyError("the objective is empty: set clip_weight > 0 or alpha > 0.")


def objective_variants(
    alpha: float, distribution_term: str = "bures", logit_scale: float = 100.0
) -> dict[str, Objective]:
    """The four objectives the notebook compares: clip only, + centroid, + distribution, + both."""
    weights = {
        "clip only": (0.0, 1.0, 1.0),
        "clip + centroid": (alpha, 1.0, 0.0),
        "clip + distribution": (alpha, 0.0, 1.0),
        "clip + both": (alpha, 1.0, 1.0),
    }
    return {
        name: Objective(1.0, logit_scale, a, c, d, distribution_term)
        for name, (a, c, d) in weights.items()
    }


def cma_only_variants(distribution_term: str = "bures") -> dict[str, Objective]:
    """Pure CMA objectives (no contrastive term, alpha = 1): centroid, distribution, both."""
    weights = {"centroid": (1.0, 0.0), "distribution": (0.0, 1.0), "both": (1.0, 1.0)}
    return {
        name: Objective(0.0, 100.0, 1.0, c, d, distribution_term)
        for name, (c, d) in weights.items()
    }


@dataclass(frozen=True)
class OptimizeConfig:
    """How :func:`optimize_alignment` optimises."""

    steps: int = 200  # optimiser steps
    lr: float = 1e-2  # Adam learning rate
    batch_size: int = 256  # pairs per step (one caption per image); 0 = every image each step
    parametrisation: str = "linear"  # "linear": y -> normalize(W y + b); "points": free text rows
    move_images: bool = False  # "linear" only: also map the images (own W, b)
    record_every: int = 10  # record the metrics every this many steps (and at the end)
    retrieval: bool = True  # record mean R@1 (image->text and text->image)
    seed: int = 0  # seeds the batch order

    def __post_init__(self) -> None:
        if self.parametrisation not in PARAMETRISATIONS:
            raise ToyError(
                f"unknown parametrisation {self.parametrisation!r}; choose one of "
                f"{PARAMETRISATIONS}."
            )
        if self.move_images and self.parametrisation != "linear":
            raise ToyError("move_images=True needs parametrisation='linear'.")
        if self.steps < 0 or self.record_every < 1 or self.batch_size < 0 or self.lr <= 0:
            raise ToyError(
                "need steps >= 0, record_every >= 1, batch_size >= 0 and lr > 0; got "
                f"{self.steps}, {self.record_every}, {self.batch_size}, {self.lr}."
            )


@dataclass
class AlignmentRun:
    """Result of :func:`optimize_alignment`."""

    objective: Objective
    history: list[dict[str, Any]]  # one row per recorded step (see optimize_alignment)
    train: Embeddings  # the training embeddings after optimisation
    eval: Embeddings  # the evaluation embeddings after optimisation
    settings: dict[str, Any] = field(default_factory=dict)  # the OptimizeConfig as a dict


class _LinearMap(torch.nn.Module):
    """``z -> normalize(z W^T + b)``, starting at the identity (W = I, b = 0)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.eye(dim))
        self.bias = torch.nn.Parameter(torch.zeros(dim))

    def forward(self, z: Tensor) -> Tensor:
        return F.normalize(z @ self.weight.T + self.bias, dim=1)


def _record(step: int, emb: Embeddings, objective: Objective, retrieval: bool) -> dict[str, Any]:
    image, text = emb.first_caption_pairs()
    with torch.no_grad():
        loss = clip_contrastive_loss(
            torch.as_tensor(image), torch.as_tensor(text), objective.logit_scale
        )
    row: dict[str, Any] = {
        "step": step,
        "centroid_gap": centroid_gap(emb.image, emb.text),
        "distribution_gap": distribution_gap(emb.image, emb.text),
        "loss_clip_eval": float(loss),
    }
    if retrieval:
        recall = retrieval_recall(emb, ks=(1,))
        row["mean_R@1"] = 0.5 * (recall["i2t_R@1"] + recall["t2i_R@1"])
    return row


def optimize_alignment(
    train_emb: Embeddings,
    objective: Objective,
    cfg: OptimizeConfig | None = None,
    eval_emb: Embeddings | None = None,
) -> AlignmentRun:
    """Optimise the text side (and optionally a map of the images) under ``objective``.

    Each step draws ``batch_size`` images with one random caption each
    (:class:`tpccma_lib.training.loop.PairBatcher`), computes ``objective`` on the (B, D) batch and
    takes one Adam step. Parametrisations: ``"linear"`` learns ``y -> normalize(W y + b)``
    (W = I, b = 0 at start; applied to every caption of ``train_emb`` and ``eval_emb``);
    ``"points"`` learns every text row of ``train_emb`` freely (``y_j = normalize(u_j)``).

    History rows, every ``record_every`` steps and after the last (``step`` = updates done):

    - ``centroid_gap`` = ||mu_x - mu_y|| and ``distribution_gap`` = Bures distance
      (:mod:`tpccma_lib.gap.metrics`) of ``eval_emb`` (default ``train_emb``);
    - ``loss_clip_train``: mean contrastive loss of the training batches since the previous
      row (the part of the objective that L_CMA trades against; computed even when
      ``clip_weight`` is 0);
    - ``loss_clip_eval``: contrastive loss of the eval first-caption pairs as one batch;
    - ``mean_R@1`` = (image->text R@1 + text->image R@1) / 2 on the eval set (if
      ``cfg.retrieval``).

    Returns:
        :class:`AlignmentRun` with the history and the optimised train/eval embeddings.
    """
    cfg = cfg or OptimizeConfig()
    if cfg.parametrisation == "points" and eval_emb is not None:
        raise ToyError("free points exist only for train_emb: pass eval_emb=None with 'points'.")
    images = torch.as_tensor(train_emb.image, dtype=torch.float32)
    texts = torch.as_tensor(train_emb.text, dtype=torch.float32)
    batcher = PairBatcher(
        train_emb.text_to_image, train_emb.n_images, cfg.batch_size or train_emb.n_images, cfg.seed
    )
    cma = CMALoss(
        objective.centroid_weight,
        objective.distribution_weight,
        objective.distribution_term,
        check_finite=False,
    )
    points = cfg.parametrisation == "points"
    free_text = torch.nn.Parameter(texts.clone()) if points else None
    text_map = _LinearMap(train_emb.dim)
    image_map = _LinearMap(train_emb.dim) if cfg.move_images else torch.nn.Identity()
    params = [free_text] if free_text is not None else list(text_map.parameters())
    params += list(image_map.parameters())
    optimizer = torch.optim.Adam(params, lr=cfg.lr)

    def text_rows(index: Tensor | None, emb: Embeddings) -> Tensor:
        if free_text is not None:
            return F.normalize(free_text if index is None else free_text[index], dim=1)
        source = torch.as_tensor(emb.text, dtype=torch.float32)
        return text_map(source if index is None else source[index])

    def current(emb: Embeddings) -> Embeddings:
        with torch.no_grad():
            text = text_rows(None, emb)
            image = image_map(torch.as_tensor(emb.image, dtype=torch.float32))
        return emb.replace(image=image.numpy().copy(), text=text.numpy().copy())

    target = eval_emb if eval_emb is not None else train_emb
    history, pending = [], []
    for step in range(cfg.steps + 1):
        last = step == cfg.steps
        if not last:
            image_idx, text_idx = (torch.as_tensor(i) for i in batcher.batch(step))
            x = image_map(images[image_idx])  # (B, D)
            y = text_rows(text_idx, train_emb)  # (B, D)
            clip = clip_contrastive_loss(x, y, objective.logit_scale)
            pending.append(float(clip.detach()))
        if step % cfg.record_every == 0 or last:
            row = _record(step, current(target), objective, cfg.retrieval)
            train_loss = float(np.mean(pending)) if pending else math.nan
            history.append({**row, "loss_clip_train": train_loss})
            pending = []
        if last:
            break
        loss = objective.clip_weight * clip
        if objective.alpha > 0:
            loss = loss + objective.alpha * cma(x, y).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return AlignmentRun(
        objective=objective,
        history=history,
        train=current(train_emb),
        eval=current(target),
        settings=asdict(cfg),
    )


def compare_objectives(
    train_emb: Embeddings,
    objectives: Mapping[str, Objective],
    cfg: OptimizeConfig | None = None,
    eval_emb: Embeddings | None = None,
) -> tuple[list[dict[str, Any]], dict[str, AlignmentRun]]:
    """:func:`optimize_alignment` for every named objective, same data, settings and seed.

    Returns:
        ``(rows, runs)``: the histories stacked with an ``objective`` column first, and the
        runs by name.
    """
    rows, runs = [], {}
    for name, objective in objectives.items():
        run = optimize_alignment(train_emb, objective, cfg, eval_emb)
        runs[name] = run
        rows += [{"objective": name, **row} for row in run.history]
    return rows, runs


def final_rows(rows: Sequence[Mapping[str, Any]], group: str = "objective") -> list[dict[str, Any]]:
    """The last row of each ``group`` value (first-seen order): each run's final metrics."""
    last: dict[Any, dict[str, Any]] = {}
    for row in rows:
        last[row[group]] = dict(row)
    return list(last.values())
