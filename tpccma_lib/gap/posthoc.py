"""Training-free fixes of the modality gap, as fit/transform on :class:`Embeddings`.

Every method fits one affine map per modality on a *fit* split and applies it to any split::

    image' = (image - c_img) @ L_img + o_img        text' = (text - c_txt) @ L_txt + o_txt

(row vectors; ``L`` a (D, D) matrix, a (D,) per-dimension scale, or the identity), then
re-L2-normalises every row, so the result lives on the unit sphere like CLIP embeddings and
the geometry metrics stay comparable. :meth:`PosthocMethod.map_arrays` gives the mapped rows
*before* renormalisation (for analysis and tests). Statistics are accumulated in float64 over
blocks of rows (see :func:`tpccma_lib.gap.metrics.modality_moments`).

No method uses labels. Only ``procrustes`` uses the image-caption pairing
(``needs_pairs = True``). ``transform`` records the method, its parameters and the fit split
in ``meta["posthoc"]`` (an earlier record is kept under ``"previous"``).

Methods (``POSTHOC_METHODS``, or ``make_posthoc(name, **params)``):
    identity       nothing but renormalisation (the baseline)
    mean_center    each modality minus its own mean (I0T-style), then renormalise
    shift          Liang et al. (2022): move by a fraction of the centroid offset
    realign        ReAlign-style: text centred, scaled to the image spread, moved to the image mean
    standardize    per-modality, per-dimension z-score
    whiten         per-modality ZCA whitening with shrinkage
    coral          CORAL: text covariance mapped onto the image covariance, with shrinkage
    procrustes     orthogonal rotation of text onto paired images (SVD)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np

from tpccma_lib.embeddings import Embeddings
from tpccma_lib.gap.metrics import DEFAULT_BLOCK_ROWS, ModalityMoments, modality_moments
from tpccma_lib.linalg import SingularMatrixError, sym_power

__all__ = [
    "POSTHOC_METHODS",
    "AffineMap",
    "CORAL",
    "CORALMatchMean",
    "Identity",
    "MeanCenter",
    "PosthocError",
    "PosthocMethod",
    "Procrustes",
    "ReAlign",
    "Shift",
    "Standardize",
    "Whiten",
    "make_posthoc",
]

_Method = TypeVar("_Method", bound="PosthocMethod")


class PosthocError(ValueError):
    """Bad use of a post-hoc method; the message says what was wrong and how to fix it."""


# --------------------------------------------------------------------------- affine maps
@dataclass(frozen=True)
class AffineMap:
    """``x' = (x - center) @ linear + offset`` for rows x (N, D), float64.

    Attributes:
        center: (D,) subtracted first.
        linear: (D, D) matrix (row-vector convention), (D,) per-dimension scale, or None
            for the identity.
        offset: (D,) added last.
    """

    center: np.ndarray
    linear: np.ndarray | None
    offset: np.ndarray

    @classmethod
    def identity(cls, dim: int) -> AffineMap:
        return cls(np.zeros(dim), None, np.zeros(dim))

    @classmethod
    def translation(cls, offset: np.ndarray) -> AffineMap:
        offset = np.asarray(offset, dtype=np.float64)
        return cls(np.zeros_like(offset), None, offset)

    def apply(
        self,
        x: np.ndarray,
        *,
        renormalize: bool,
        dtype: type = np.float64,
        block_rows: int = DEFAULT_BLOCK_ROWS,
    ) -> np.ndarray:
        """Map x (N, D) block by block in float64; optionally L2-normalise each row.

        A row mapped to (numerically) zero stays near zero: it is divided by max(norm, 1e-12).
        """
        out = np.empty(x.shape, dtype=dtype)
        for start in range(0, x.shape[0], block_rows):
            block = x[start : start + block_rows].astype(np.float64) - self.center
            if self.linear is not None:
                block = block * self.linear if self.linear.ndim == 1 else block @ self.linear
            block += self.offset
            if renormalize:
                block /= np.maximum(np.linalg.norm(block, axis=1, keepdims=True), 1e-12)
            out[start : start + block_rows] = block
        return out


def _symmetric_power(cov: np.ndarray, power: float, shrinkage: float, what: str) -> np.ndarray:
    """(cov + shrinkage * I)^power for a symmetric PSD (D, D) matrix (:func:`linalg.sym_power`)."""
    try:
        return sym_power(cov, power, shrinkage)
    except SingularMatrixError as exc:
        raise PosthocError(
            f"the {what} covariance is singular (fewer samples than dimensions, or a constant "
            "direction); use a larger shrinkage eps > 0."
        ) from exc


def _shrinkage(moments: ModalityMoments, eps: float) -> float:
    # Relative ridge: eps times the mean eigenvalue tr(S) / D, so eps is scale-free.
    return eps * moments.total_variance / moments.mean.shape[0]


# --------------------------------------------------------------------------- base class
class PosthocMethod:
    """Base class: subclasses set ``name`` and implement :meth:`_fit_maps`.

    Subclasses are dataclasses whose fields are the method's parameters.
    """

    name: ClassVar[str] = ""
    needs_pairs: ClassVar[bool] = False  # True when fitting uses text_to_image pairs
    image_map_: AffineMap | None = None  # set by fit
    text_map_: AffineMap | None = None  # set by fit
    fit_info_: dict[str, Any] | None = None  # fit split, data set, sizes; set by fit

    def _fit_maps(self, emb: Embeddings) -> tuple[AffineMap, AffineMap]:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The method's parameters (its dataclass fields)."""
        return dataclasses.asdict(self) if dataclasses.is_dataclass(self) else {}

    @property
    def is_fitted(self) -> bool:
        return self.image_map_ is not None and self.text_map_ is not None

    def fit(self: _Method, emb: Embeddings) -> _Method:
        """Estimate the maps from ``emb`` (the fit split). Never reads labels."""
        self.image_map_, self.text_map_ = self._fit_maps(emb)
        self.fit_info_ = {
            "fit_split": emb.meta.get("split", "unspecified"),
            "fit_dataset": emb.meta.get("dataset", "unspecified"),
            "fit_n_images": emb.n_images,
            "fit_n_texts": emb.n_texts,
            "dim": emb.dim,
        }
        return self

    def _check_ready(self, dim: int) -> tuple[AffineMap, AffineMap]:
        if self.image_map_ is None or self.text_map_ is None or self.fit_info_ is None:
            raise PosthocError(
                f"{type(self).__name__} is not fitted: call .fit(train_embeddings) first "
                "(or .fit_transform)."
            )
        if dim != self.fit_info_["dim"]:
            raise PosthocError(
                f"{self.name} was fitted on dimension {self.fit_info_['dim']} but got "
                f"dimension {dim}; fit and apply on embeddings of the same model."
            )
        return self.image_map_, self.text_map_

    def map_arrays(self, image: np.ndarray, text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The mapped rows *before* renormalisation, float64: image (N_img, D), text (N_txt, D)."""
        image, text = np.asarray(image), np.asarray(text)
        image_map, text_map = self._check_ready(image.shape[1])
        self._check_ready(text.shape[1])
        return (
            image_map.apply(image, renormalize=False),
            text_map.apply(text, renormalize=False),
        )

    def transform(self, emb: Embeddings) -> Embeddings:
        """Apply the fitted maps to ``emb`` and re-L2-normalise each row (float32 result).

        ``meta["posthoc"]`` records method, params and the fit split; other fields are kept.
        """
        image_map, text_map = self._check_ready(emb.dim)
        record: dict[str, Any] = {"method": self.name, "params": self.params(), **self.fit_info_}
        record["applied_split"] = emb.meta.get("split", "unspecified")
        record["renormalized"] = True
        if "posthoc" in emb.meta:
            record["previous"] = emb.meta["posthoc"]
        return emb.replace(
            image=image_map.apply(emb.image, renormalize=True, dtype=np.float32),
            text=text_map.apply(emb.text, renormalize=True, dtype=np.float32),
            meta={"posthoc": record},
        )

    def fit_transform(self, emb: Embeddings) -> Embeddings:
        """``fit(emb)`` then ``transform(emb)`` (fit and apply on the same split)."""
        return self.fit(emb).transform(emb)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        state = "fitted" if self.is_fitted else "unfitted"
        return f"{type(self).__name__}({params}) [{state}]"


def _moments(emb: Embeddings, covariance: bool) -> tuple[ModalityMoments, ModalityMoments]:
    return (
        modality_moments(emb.image, covariance=covariance, name="image"),
        modality_moments(emb.text, covariance=covariance, name="text"),
    )


def _check_eps(eps: float) -> None:
    if not (eps >= 0 and math.isfinite(eps)):
        raise PosthocError(f"eps must be a finite number >= 0, got {eps}.")


# --------------------------------------------------------------------------- the methods
@dataclass(repr=False, eq=False)
class Identity(PosthocMethod):
    """No change except renormalisation: the baseline every fix is compared with."""

    name: ClassVar[str] = "identity"

    def _fit_maps(self, emb: Embeddings) -> tuple[AffineMap, AffineMap]:
        return AffineMap.identity(emb.dim), AffineMap.identity(emb.dim)


@dataclass(repr=False, eq=False)
class MeanCenter(PosthocMethod):
    """I0T-style mean-centering: ``x' = x - mu_img``, ``t' = t - mu_txt`` (fit-split means).

    Before renormalisation both modality means are 0 on the fit split, so the centroid gap
    vanishes there; renormalisation then puts rows back on the sphere.
    """

    name: ClassVar[str] = "mean_center"

    def _fit_maps(self, emb: Embeddings) -> tuple[AffineMap, AffineMap]:
        image, text = _moments(emb, covariance=False)
        zero = np.zeros(emb.dim)
        return AffineMap(image.mean, None, zero), AffineMap(text.mean, None, zero)


SHIFT_MODES = ("both", "text_to_image", "image_to_text")


@dataclass(repr=False, eq=False)
class Shift(PosthocMethod):
    """Liang et al. (2022) shift by a fraction of the centroid offset ``delta = mu_img - mu_txt``.

    mode="both":          image' = image - fraction * delta / 2, text' = text + fraction * delta / 2
    mode="text_to_image": text' = text + fraction * delta        (images unchanged)
    mode="image_to_text": image' = image - fraction * delta      (texts unchanged)

    Before renormalisation the centroid gap becomes ``|1 - fraction| * ||delta||`` (fraction=1
    closes it; fraction < 0 widens it, as in Liang's gap-modification experiments).
    """

    name: ClassVar[str] = "shift"
    fraction: float = 1.0  # lambda: share of the centroid offset to remove
    mode: str = "both"  # who moves: "both" (to the middle), "text_to_image", "image_to_text"

    def __post_init__(self) -> None:
        if self.mode not in SHIFT_MODES:
            raise PosthocError(f"shift mode must be one of {SHIFT_MODES}, got {self.mode!r}.")
        if not math.isfinite(self.fraction):
            raise PosthocError(f"fraction must be finite, got {self.fraction}.")

    def _fit_maps(self, emb: Embeddings) -> tuple[AffineMap, AffineMap]:
        image, text = _moments(emb, covariance=False)
        step = self.fraction * (image.mean - text.mean)
        image_share = {"both": 0.5, "text_to_image": 0.0, "image_to_text": 1.0}[self.mode]
        return (
            AffineMap.translation(-image_share * step),
            AffineMap.translation((1.0 - image_share) * step),
        )


@dataclass(repr=False, eq=False)
class ReAlign(PosthocMethod):
    """ReAlign-style text alignment: ``t' = (t - mu_txt) * s + mu_img``.

    s = sqrt(tr S_img / tr S_txt): text gets the image mean and the image total variance
    (spread), its shape is kept; images are unchanged.
    """

    name: ClassVar[str] = "realign"

    def _fit_maps(self, emb: Embeddings) -> tuple[AffineMap, AffineMap]:
        image, text = _moments(emb, covariance=False)
        if text.total_variance <= 0:
            raise PosthocError("the text embeddings have zero spread; realign cannot rescale.")
        scale = math.sqrt(image.total_variance / text.total_variance)
        return (
            AffineMap.identity(emb.dim),
            AffineMap(text.mean, np.full(emb.dim, scale), image.mean),
        )


@dataclass(repr=False, eq=False)
class Standardize(PosthocMethod):
    """Per-modality, per-dimension z-score: ``x'_j = (x_j - mu_j) / sqrt(var_j + r)``.

    r = eps * mean(var) keeps constant dimensions finite.
    """

    name: ClassVar[str] = "standardize"
    eps: float = 1e-6  # relative variance floor (times the mean per-dimension variance)

    def __post_init__(self) -> None:
        _check_eps(self.eps)

    def _fit_maps(self, emb: Embeddings) -> tuple[AffineMap, AffineMap]:
        maps = []
        for moments in _moments(emb, covariance=False):
            floor = _shrinkage(moments, self.eps)
            if (moments.variance + floor).min() <= 0:
                raise PosthocError("a dimension has zero variance; use standardize(eps > 0).")
            scale = 1.0 / np.sqrt(moments.variance + floor)
            maps.append(AffineMap(moments.mean, scale, np.zeros(emb.dim)))
        return maps[0], maps[1]


@dataclass(repr=False, eq=False)
class Whiten(PosthocMethod):
    """Per-modality ZCA whitening: ``x' = (x - mu) (S + r I)^{-1/2}``, r = eps * tr(S) / D.

    Each modality gets zero mean and (near-)identity covariance on the fit split.
    """

    name: ClassVar[str] = "whiten"
    eps: float = 1e-2  # shrinkage relative to the mean eigenvalue tr(S) / D

    def __post_init__(self) -> None:
        _check_eps(self.eps)

    def _fit_maps(self, emb: Embeddings) -> tuple[AffineMap, AffineMap]:
        maps = []
        for moments, what in zip(_moments(emb, covariance=True), ("image", "text"), strict=True):
            assert moments.covariance is not None
            inv_root = _symmetric_power(
                moments.covariance, -0.5, _shrinkage(moments, self.eps), what
            )
            maps.append(AffineMap(moments.mean, inv_root, np.zeros(emb.dim)))
        return maps[0], maps[1]


@dataclass(repr=False, eq=False)
class CORAL(PosthocMethod):
    """CORAL (Sun et al. 2016) text-to-image covariance matching, with shrinkage.

    ``t' = (t - mu_txt) W + o``, ``W = (S_txt + r_t I)^{-1/2} (S_img + r_i I)^{1/2}``,
    r = eps * tr(S) / D per modality; o = mu_img when ``match_mean`` else mu_txt (plain CORAL
    aligns second-order statistics only). With eps = 0 and a full-rank S_txt, the fitted text
    covariance equals S_img exactly. Images are unchanged.
    """

    name: ClassVar[str] = "coral"
    eps: float = 1e-2  # shrinkage relative to the mean eigenvalue tr(S) / D
    match_mean: bool = False  # also move the text mean onto the image mean

    def __post_init__(self) -> None:
        _check_eps(self.eps)

    def _fit_maps(self, emb: Embeddings) -> tuple[AffineMap, AffineMap]:
        image, text = _moments(emb, covariance=True)
        assert image.covariance is not None and text.covariance is not None
        whiten = _symmetric_power(text.covariance, -0.5, _shrinkage(text, self.eps), "text")
        color = _symmetric_power(image.covariance, 0.5, _shrinkage(image, self.eps), "image")
        offset = image.mean if self.match_mean else text.mean
        return AffineMap.identity(emb.dim), AffineMap(text.mean, whiten @ color, offset)


@dataclass(repr=False, eq=False)
class CORALMatchMean(CORAL):
    """CORAL with ``match_mean=True``: the text cloud gets the image mean and covariance, so
    both gap parts close on the fitted data (the strongest affine fix of the centroid and the
    distribution gap together). Listed separately so every comparison includes it."""

    name: ClassVar[str] = "coral_mean"
    match_mean: bool = True


@dataclass(repr=False, eq=False)
class Procrustes(PosthocMethod):
    """Orthogonal Procrustes on matched pairs: ``t' = t R``, R orthogonal (needs pairs).

    R = argmin_{R^T R = I} sum_k ||t_k R - x_k||^2 over the pairs of ``Embeddings.paired()``:
    with U S V^T = svd(T^T X), R = U V^T. A rotation keeps norms, so unit rows stay unit rows.
    Images are unchanged. Fitting needs at least D pairs (with fewer, R is not determined).
    """

    name: ClassVar[str] = "procrustes"
    needs_pairs: ClassVar[bool] = True

    def _fit_maps(self, emb: Embeddings) -> tuple[AffineMap, AffineMap]:
        if emb.n_texts < emb.dim:
            raise PosthocError(
                f"procrustes needs at least D = {emb.dim} matched pairs to determine a "
                f"{emb.dim} x {emb.dim} rotation, got {emb.n_texts}; fit it on a larger split."
            )
        cross = np.zeros((emb.dim, emb.dim))  # T^T X, accumulated over caption blocks
        for start in range(0, emb.n_texts, DEFAULT_BLOCK_ROWS):
            stop = start + DEFAULT_BLOCK_ROWS
            text = emb.text[start:stop].astype(np.float64)
            image = emb.image[emb.text_to_image[start:stop]].astype(np.float64)
            cross += text.T @ image
        left, _, right_t = np.linalg.svd(cross)
        rotation = left @ right_t
        zero = np.zeros(emb.dim)
        return AffineMap.identity(emb.dim), AffineMap(zero, rotation, zero)


# --------------------------------------------------------------------------- registry
POSTHOC_METHODS: dict[str, type[PosthocMethod]] = {
    cls.name: cls
    for cls in (
        Identity,
        MeanCenter,
        Shift,
        ReAlign,
        Standardize,
        Whiten,
        CORAL,
        CORALMatchMean,
        Procrustes,
    )
}


def make_posthoc(name: str, **params: Any) -> PosthocMethod:
    """An unfitted post-hoc method by registry name: ``make_posthoc("shift", fraction=0.5)``."""
    if name not in POSTHOC_METHODS:
        raise PosthocError(
            f"unknown post-hoc method {name!r}; choose one of {sorted(POSTHOC_METHODS)}."
        )
    cls = POSTHOC_METHODS[name]
    accepted = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise PosthocError(
            f"post-hoc method {name!r} has no parameter(s) {unknown}; it accepts {accepted}."
        )
    return cls(**params)
