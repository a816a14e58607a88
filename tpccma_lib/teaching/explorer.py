"""A training-free, closed-form model of closing the modality gap, fast enough for sliders.

:class:`GapExplorer` holds the base embeddings of one split and, for given slider settings
(:class:`ExplorerSettings`), returns the *moved* embeddings, a fixed 2-D view of them and
fast read-outs (gap metrics, zero-shot accuracy, joint-clustering ARI). Notebook 06 and
:func:`tpccma_lib.teaching.widgets.build_explorer_ui` put it behind sliders.

What a slider move does (a visual model of what the CMA loss pushes toward, **not** the
trained result; notebook 03 trains the model). Fitted once on the *fit* split (default: the
validation split): image mean ``mu_i``, text mean ``mu_t``, covariances ``S_i``, ``S_t``,
offset ``delta = mu_i - mu_t`` and the Gaussian optimal-transport (Bures) map::

    A = S_t^{-1/2} (S_t^{1/2} S_i S_t^{1/2})^{1/2} S_t^{-1/2}     (symmetric; A S_t A = S_i)

Every caption embedding ``t`` (and every zero-shot class prompt, which is text too) moves to::

    t' = t + alpha * lambda_c * delta + alpha * lambda_d * (t - mu_t)(A - I)

then ``t' / ||t'||`` (back on the sphere); images stay where they are. Before
renormalisation, on the fit split, this gives exactly

    centroid gap      ||mu_i - mean t'|| = (1 - alpha * lambda_c) * ||delta||
    distribution gap  B(S_i, cov t')     = (1 - alpha * lambda_d) * B(S_i, S_t)

because ``x -> x + s (x - mu_t)(A - I)`` walks along the 2-Wasserstein geodesic between the
Gaussian fits of text and images (McCann interpolation). So ``alpha`` is "how far along",
``lambda_c`` and ``lambda_d`` weigh the centroid and the distribution term, as in
``L_CMA = lambda_c ||mu_i - mu_t||^2 + lambda_d B^2(S_i, S_t)``. A ridge ``r = eps tr(S)/D``
on both covariances keeps ``A`` finite when ``S_t`` is (near) singular; with ``eps = 0`` the
identities above are exact.

A post-hoc method (``posthoc.POSTHOC_METHODS``) can then be applied on top: fitted on the
moved fit split, applied to the moved view split (and to the class prompts), as
``reporting.evaluate_model`` does for a fine-tuned model.

Read-outs (:data:`READOUTS`), computed on the whole view split except where noted:
    raw_gap            ||mean(img/|img|) - mean(txt/|txt|)|| (= centroid_gap on the sphere)
    centroid_gap       ||mu_img - mu_txt||
    distribution_gap   Bures distance of the two covariances
    zero_shot_accuracy top-1, class prompts moved like every other text (NaN without labels)
    clustering_ari     joint k-means ARI vs the classes, ONE seed on a fixed subsample of images
                       and their first captions (cheaper and noisier than notebook 04's five)
    modality_ari       ARI of the same clusters vs the modality (1 = clusters split by modality)

The 2-D view is a PCA basis fitted once on the *base* view embeddings (images and their
first captions), so a move shows as points moving, not as axes turning.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import ThreadpoolController

from tpccma_lib.embeddings import Embeddings, l2_normalize
from tpccma_lib.evaluation.clustering import joint_points
from tpccma_lib.evaluation.zero_shot import zero_shot_accuracy
from tpccma_lib.gap.metrics import modality_moments
from tpccma_lib.gap.posthoc import POSTHOC_METHODS, PosthocMethod, make_posthoc
from tpccma_lib.linalg import (
    SingularMatrixError,
    bures_distance_sq,
    gaussian_ot_map,
    sym_power,
)

if TYPE_CHECKING:  # for annotations only (no import cycle with experiment.py)
    from tpccma_lib.experiment import Experiment

__all__ = [
    "READOUTS",
    "ExplorerResult",
    "ExplorerSettings",
    "GapExplorer",
    "GaussianTransport",
    "PCAProjection",
    "ProjectedPoints",
    "TeachingError",
    "alpha_curve",
    "readout_table",
]

#: Read-outs of every explorer state, in display order.
READOUTS: tuple[str, ...] = (
    "raw_gap",
    "centroid_gap",
    "distribution_gap",
    "zero_shot_accuracy",
    "clustering_ari",
    "modality_ari",
)

MIN_POINTS = 10  # fewest points per modality the 2-D view draws


class TeachingError(ValueError):
    """Bad explorer input; the message says what was wrong and how to fix it."""


# --------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class ExplorerSettings:
    """One position of the sliders."""

    alpha: float = 0.0  # how far to close the gap, in [0, 1] (0 = the base model)
    centroid_weight: float = 1.0  # lambda_c in [0, 1]: share of the centroid offset removed
    distribution_weight: float = 1.0  # lambda_d in [0, 1]: share of the shape mismatch removed
    method: str = "identity"  # post-hoc fix applied after the move (posthoc.POSTHOC_METHODS)
    n_points: int = 200  # images (and as many first captions) drawn in the 2-D view, >= 10

    def __post_init__(self) -> None:
        for name in ("alpha", "centroid_weight", "distribution_weight"):
            value = getattr(self, name)
            is_number = isinstance(value, (int, float, np.number)) and not isinstance(value, bool)
            if not (is_number and 0.0 <= value <= 1.0):
                raise TeachingError(
                    f"{name} must be a number in [0, 1], got {value!r}; 0 leaves the base "
                    "model as it is, 1 removes that part of the gap completely."
                )
            object.__setattr__(self, name, float(value))
        if self.method not in POSTHOC_METHODS:
            raise TeachingError(
                f"unknown post-hoc method {self.method!r}; choose one of "
                f"{sorted(POSTHOC_METHODS)} ('identity' = no post-hoc fix)."
            )
        if isinstance(self.n_points, bool) or not isinstance(self.n_points, (int, np.integer)):
            raise TeachingError(f"n_points must be an integer, got {self.n_points!r}.")
        if self.n_points < MIN_POINTS:
            raise TeachingError(
                f"n_points must be at least {MIN_POINTS} (points per modality in the 2-D view), "
                f"got {self.n_points}."
            )
        object.__setattr__(self, "n_points", int(self.n_points))

    @property
    def move_key(self) -> tuple[float, float, float, str]:
        """The settings that change the embeddings (n_points only changes the view)."""
        return (self.alpha, self.centroid_weight, self.distribution_weight, self.method)


# --------------------------------------------------------------------------- the move
def _symmetric_power(matrix: np.ndarray, power: float) -> np.ndarray:
    """:func:`tpccma_lib.linalg.sym_power`, with this module's error and advice."""
    try:
        return sym_power(matrix, power)
    except SingularMatrixError as exc:
        raise TeachingError(
            "the text covariance is singular (fewer captions than dimensions, or a "
            "constant direction); use a ridge eps > 0 for the transport map."
        ) from exc


@dataclass(frozen=True)
class GaussianTransport:
    """The statistics a slider move uses, fitted once on the fit split (float64).

    Attributes:
        image_mean: (D,) mu_i.  text_mean: (D,) mu_t.
        transport: (D, D) symmetric Bures map A with A (S_t + r_t I) A = S_i + r_i I.
        eps: relative ridge used (r = eps * tr(S) / D per modality).
    """

    image_mean: np.ndarray
    text_mean: np.ndarray
    transport: np.ndarray
    eps: float

    @classmethod
    def fit(cls, emb: Embeddings, eps: float = 1e-3) -> GaussianTransport:
        """Means, covariances and the Bures map of ``emb`` (images and all captions)."""
        if not (eps >= 0 and math.isfinite(eps)):
            raise TeachingError(f"eps must be a finite number >= 0, got {eps}.")
        image = modality_moments(emb.image, name="image")
        text = modality_moments(emb.text, name="text")
        assert image.covariance is not None and text.covariance is not None
        dim = emb.dim
        cov_i = image.covariance + eps * image.total_variance / dim * np.eye(dim)
        cov_t = text.covariance + eps * text.total_variance / dim * np.eye(dim)
        try:
            transport = gaussian_ot_map(cov_t, cov_i)  # text -> image
        except SingularMatrixError as exc:
            raise TeachingError(
                "the covariances are singular (fewer captions or images than dimensions, or a "
                "constant direction); use a ridge eps > 0 for the transport map."
            ) from exc
        return cls(image.mean, text.mean, 0.5 * (transport + transport.T), float(eps))

    @property
    def offset(self) -> np.ndarray:
        """(D,) delta = mu_i - mu_t."""
        return self.image_mean - self.text_mean

    def parts(self, text: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Precomputable pieces of text (N, D): centred ``t - mu_t`` and ``(t - mu_t)(A - I)``."""
        centred = np.asarray(text, dtype=np.float64) - self.text_mean
        return centred, centred @ self.transport - centred

    def move(
        self,
        text: np.ndarray,
        alpha: float,
        centroid_weight: float,
        distribution_weight: float,
        parts: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> np.ndarray:
        """Moved text rows (N, D) float64, *before* renormalisation.

        ``t' = t + alpha lambda_c delta + alpha lambda_d (t - mu_t)(A - I)``; pass ``parts``
        (from :meth:`parts`) to skip the (N, D) x (D, D) product.
        """
        centred, toward_images = parts if parts is not None else self.parts(text)
        shift = self.text_mean + alpha * centroid_weight * self.offset
        return centred + shift + (alpha * distribution_weight) * toward_images


# --------------------------------------------------------------------------- 2-D view
@dataclass(frozen=True)
class PCAProjection:
    """A fixed 2-D linear view: ``xy = (x - center) @ components.T``.

    Attributes:
        center: (D,) mean of the points it was fitted on.
        components: (2, D) orthonormal principal directions; each sign is fixed so that its
            largest-magnitude entry is positive (deterministic plots).
        explained_variance_ratio: (2,) share of the total variance along each direction.
    """

    center: np.ndarray
    components: np.ndarray
    explained_variance_ratio: np.ndarray

    @classmethod
    def fit(cls, points: np.ndarray) -> PCAProjection:
        """Top-2 principal directions of ``points`` (N, D), N >= 3, through an SVD."""
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[0] < 3 or points.shape[1] < 2:
            raise TeachingError(
                f"a 2-D PCA view needs an (N, D) array with N >= 3 and D >= 2; got {points.shape}."
            )
        center = points.mean(axis=0)
        _, singular, vt = np.linalg.svd(points - center, full_matrices=False)
        components = vt[:2].copy()
        biggest = np.abs(components).argmax(axis=1)
        components *= np.sign(components[np.arange(2), biggest])[:, None]
        total = float((singular**2).sum())
        ratio = singular[:2] ** 2 / total if total > 0 else np.zeros(2)
        return cls(center, components, ratio)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """(N, D) or (D,) -> (N, 2) or (2,)."""
        return (np.asarray(x, dtype=np.float64) - self.center) @ self.components.T


@dataclass(frozen=True)
class ProjectedPoints:
    """What the figure draws for one explorer state (PCA coordinates)."""

    image_xy: np.ndarray  # (n, 2) the displayed images
    text_xy: np.ndarray  # (n, 2) their first captions, row k describes image k
    image_centroid: np.ndarray  # (2,) mean of ALL images of the split, projected
    text_centroid: np.ndarray  # (2,) mean of ALL captions of the split, projected
    labels: np.ndarray  # (n,) class index of the displayed images (-1 unknown)
    class_names: tuple[str, ...] = ()
    axis_range: tuple[tuple[float, float], tuple[float, float]] = ((-1.0, 1.0), (-1.0, 1.0))
    # ((x_min, x_max), (y_min, y_max)): the base state's points and these, padded 5 %; fixed
    # while points stay inside it, so a move shows as points moving, not as axes rescaling


@dataclass(frozen=True)
class ExplorerResult:
    """One explorer state: settings, moved embeddings, 2-D view and read-outs."""

    settings: ExplorerSettings
    embeddings: Embeddings  # the moved view split (unit rows)
    projection: ProjectedPoints
    metrics: Mapping[str, float] = field(default_factory=dict)  # keys: READOUTS

    def as_row(self) -> dict[str, Any]:
        """Settings and read-outs as one flat record."""
        s = self.settings
        return {
            "alpha": s.alpha,
            "centroid_weight": s.centroid_weight,
            "distribution_weight": s.distribution_weight,
            "method": s.method,
            **{name: float(self.metrics[name]) for name in READOUTS},
        }


# --------------------------------------------------------------------------- explorer
def _first_caption_index(emb: Embeddings) -> np.ndarray:
    """(N_img,) index of the first caption of every image; -1 for images without one."""
    first = -np.ones(emb.n_images, dtype=np.int64)
    images, first_caption = np.unique(emb.text_to_image, return_index=True)
    first[images] = first_caption
    return first


class GapExplorer:
    """Moves a split's embeddings by the slider model above and measures the result.

    Args:
        view: base embeddings that are moved, drawn and measured (e.g. the test split).
        class_embeddings: (C, D) zero-shot class prompt embeddings of the same model, or None
            (zero-shot accuracy is then NaN).
        fit: embeddings the move and post-hoc methods are fitted on (default: ``view``;
            notebooks pass the validation split so nothing is fitted on the test split).
        transport_eps: relative ridge of the Bures map (see :class:`GaussianTransport`).
        cluster_images: images (with their first captions) in the k-means read-out.
        seed: the display order of points and the k-means seed / subsample.
        cache_size: explorer states kept (moving only ``n_points`` reuses them).
        threads: BLAS/OpenMP threads while moving and measuring (None: leave as set). The
            matrices are small (D x D): with one thread a move costs ~80-130 ms of CPU on
            the embedded default, and on a busy shared machine it was 4-10x faster than with
            all threads (``benchmarks/bench_widgets.py``); it also makes the summation order,
            hence the printed numbers, independent of the machine's thread count.
        label: names the data set and split in tables and read-outs (e.g.
            ``"captioned-shapes (...), test split"``).
    """

    def __init__(
        self,
        view: Embeddings,
        class_embeddings: np.ndarray | None = None,
        fit: Embeddings | None = None,
        *,
        transport_eps: float = 1e-3,
        cluster_images: int = 500,
        seed: int = 0,
        cache_size: int = 64,
        threads: int | None = 1,
        label: str = "",
    ) -> None:
        self.label = label
        self.threads = threads
        self._threadpools = ThreadpoolController()
        with self._threadpools.limit(limits=threads):
            self._setup(view, class_embeddings, fit, transport_eps, cluster_images, seed)
        self._cache: OrderedDict[tuple[Any, ...], tuple[Embeddings, dict[str, float]]] = (
            OrderedDict()
        )
        self._cache_size = int(cache_size)
        self._image_root: tuple[np.ndarray, np.ndarray] | None = None

    def _setup(
        self,
        view: Embeddings,
        class_embeddings: np.ndarray | None,
        fit: Embeddings | None,
        transport_eps: float,
        cluster_images: int,
        seed: int,
    ) -> None:
        fit = view if fit is None else fit
        if fit.dim != view.dim:
            raise TeachingError(
                f"fit and view embeddings have dimensions {fit.dim} and {view.dim}; use two "
                "splits of the same model."
            )
        first = _first_caption_index(view)
        if (first < 0).any():
            raise TeachingError(
                f"{int((first < 0).sum())} image(s) of the view split have no caption; the "
                "explorer pairs each image with its first caption."
            )
        self.view = view
        self.fit_embeddings = fit
        self.seed = int(seed)
        self.transport = GaussianTransport.fit(fit, eps=transport_eps)
        self._view_parts = self.transport.parts(view.text)
        self._fit_parts = self.transport.parts(fit.text)
        self.class_embeddings: np.ndarray | None = None
        self._class_parts: tuple[np.ndarray, np.ndarray] | None = None
        if class_embeddings is not None:
            weights = np.asarray(class_embeddings, dtype=np.float64)
            if weights.ndim != 2 or weights.shape[1] != view.dim:
                raise TeachingError(
                    f"class_embeddings must be (C, {view.dim}); got shape {weights.shape}. "
                    "Encode the class prompts with the same model as the view split."
                )
            self.class_embeddings = weights
            self._class_parts = self.transport.parts(weights)
        self._first_caption = first
        rng = np.random.default_rng(self.seed)
        self.display_order = rng.permutation(view.n_images)  # first n_points are drawn
        base_points = np.concatenate([view.image, view.text[first]]).astype(np.float64)
        self.projector = PCAProjection.fit(base_points)
        self._base_xy = self.projector(base_points)  # (2 N_img, 2) every base point, projected
        labelled = np.flatnonzero(view.image_labels >= 0)
        n_cluster = min(int(cluster_images), labelled.size)
        # images (with their first captions) of the k-means read-out: a fixed subsample
        self.cluster_index = np.sort(rng.permutation(labelled)[:n_cluster])

    @classmethod
    def from_experiment(
        cls,
        exp: Experiment,
        model: Any = None,
        *,
        split: str = "test",
        fit_split: str = "val",
        **kw: Any,
    ) -> GapExplorer:
        """Explorer of ``exp``'s base model (or ``model``): view = ``split``, fit = ``fit_split``.

        Zero-shot prompts come from :func:`tpccma_lib.evaluation.model_report.zero_shot_class_embeddings`
        when the zero-shot set is the view split itself (the shapes); otherwise zero-shot
        accuracy is NaN here.
        """
        from tpccma_lib.evaluation.model_report import zero_shot_class_embeddings

        model = exp.base_model() if model is None else model
        view = exp.embeddings(model, split)
        fit = exp.embeddings(model, fit_split)
        class_embeddings = None
        if split == "test" and exp.data.zero_shot == "same":
            class_embeddings, _ = zero_shot_class_embeddings(exp, model)
        kw.setdefault("label", f"{exp.data.label}, {split} split")
        return cls(view, class_embeddings, fit, **kw)

    @property
    def n_images(self) -> int:
        """Images in the view split (the largest ``n_points``)."""
        return self.view.n_images

    def default_settings(self) -> ExplorerSettings:
        """The base model (alpha 0, no post-hoc fix), drawing min(200, N_img) points."""
        return ExplorerSettings(n_points=min(200, self.n_images))

    # ------------------------------------------------------------------ one state
    def moved_text(self, settings: ExplorerSettings, split: str = "view") -> np.ndarray:
        """Moved caption rows (N_txt, D) float64 of ``split`` ("view" or "fit"), before
        renormalisation and before any post-hoc method."""
        if split not in ("view", "fit"):
            raise TeachingError(f"split must be 'view' or 'fit', got {split!r}.")
        base = self.view if split == "view" else self.fit_embeddings
        parts = self._view_parts if split == "view" else self._fit_parts
        return self.transport.move(
            base.text,
            settings.alpha,
            settings.centroid_weight,
            settings.distribution_weight,
            parts=parts,
        )

    def _moved_pair(self, settings: ExplorerSettings) -> tuple[Embeddings, np.ndarray | None]:
        """Moved (and post-hoc fixed) view embeddings and class embeddings."""
        view = self.view.replace(text=l2_normalize(self.moved_text(settings, "view")))
        classes = None
        if self.class_embeddings is not None:
            assert self._class_parts is not None
            classes = l2_normalize(
                self.transport.move(
                    self.class_embeddings,
                    settings.alpha,
                    settings.centroid_weight,
                    settings.distribution_weight,
                    parts=self._class_parts,
                )
            )
        if settings.method == "identity":
            return view, classes
        fit = self.fit_embeddings.replace(text=l2_normalize(self.moved_text(settings, "fit")))
        method: PosthocMethod = make_posthoc(settings.method).fit(fit)
        view = method.transform(view)
        if classes is not None:
            assert method.text_map_ is not None
            classes = method.text_map_.apply(classes, renormalize=True)
        return view, classes

    def readouts(self, emb: Embeddings, class_embeddings: np.ndarray | None) -> dict[str, float]:
        """The fast read-outs (:data:`READOUTS`) of ``emb`` (see the module docstring)."""
        image = modality_moments(emb.image, name="image")
        text = modality_moments(emb.text, name="text")
        assert image.covariance is not None and text.covariance is not None
        out = {
            "raw_gap": float(np.linalg.norm(image.unit_mean - text.unit_mean)),
            "centroid_gap": float(np.linalg.norm(image.mean - text.mean)),
            "distribution_gap": self._bures(image.covariance, text.covariance),
            "zero_shot_accuracy": math.nan,
            "clustering_ari": math.nan,
            "modality_ari": math.nan,
        }
        if class_embeddings is not None and (emb.image_labels >= 0).any():
            out["zero_shot_accuracy"] = zero_shot_accuracy(emb, class_embeddings)["accuracy"]
        if self.cluster_index.size >= 2:
            points, labels, modality = joint_points(emb.subset_images(self.cluster_index))
            k = len(emb.class_names) or int(np.unique(labels).size)
            if 2 <= k <= points.shape[0]:
                clusters = KMeans(n_clusters=k, n_init=1, random_state=self.seed).fit_predict(
                    points
                )
                out["clustering_ari"] = float(adjusted_rand_score(labels, clusters))
                out["modality_ari"] = float(adjusted_rand_score(modality, clusters))
        return out

    def _bures(self, cov_image: np.ndarray, cov_text: np.ndarray) -> float:
        """Bures distance B(S_img, S_txt) (as :func:`geometry.bures_distance`), reusing
        S_img^{1/2} while the image covariance does not change (images move only through
        some post-hoc methods)."""
        cached = self._image_root
        if cached is None or not np.array_equal(cached[0], cov_image):
            cached = (cov_image, _symmetric_power(cov_image, 0.5))
            self._image_root = cached
        return math.sqrt(bures_distance_sq(cov_image, cov_text, root_x=cached[1]))

    def project(self, emb: Embeddings, n_points: int) -> ProjectedPoints:
        """The 2-D view of ``emb`` (moved view split): first ``n_points`` of the display order."""
        if n_points > emb.n_images:
            raise TeachingError(
                f"n_points = {n_points} but the split has only {emb.n_images} images; "
                f"choose n_points in [{MIN_POINTS}, {emb.n_images}]."
            )
        shown = self.display_order[:n_points]
        image_xy = self.projector(emb.image[shown])
        text_xy = self.projector(emb.text[self._first_caption[shown]])
        image_centroid = self.projector(emb.image.mean(axis=0, dtype=np.float64))
        text_centroid = self.projector(emb.text.mean(axis=0, dtype=np.float64))
        points = np.concatenate(
            [self._base_xy, image_xy, text_xy, image_centroid[None], text_centroid[None]]
        )
        low, high = points.min(axis=0), points.max(axis=0)
        pad = 0.05 * np.maximum(high - low, 1e-9)
        axis_range = (
            (float(low[0] - pad[0]), float(high[0] + pad[0])),
            (float(low[1] - pad[1]), float(high[1] + pad[1])),
        )
        return ProjectedPoints(
            image_xy=image_xy,
            text_xy=text_xy,
            image_centroid=image_centroid,
            text_centroid=text_centroid,
            labels=emb.image_labels[shown],
            class_names=emb.class_names,
            axis_range=axis_range,
        )

    def explore(self, settings: ExplorerSettings | None = None, **changes: Any) -> ExplorerResult:
        """The explorer state for ``settings`` (with keyword ``changes`` applied on top).

        ``explore(alpha=0.5)`` is ``explore(ExplorerSettings(alpha=0.5))``. States that differ
        only in ``n_points`` share the cached embeddings and read-outs.
        """
        settings = replace(settings or self.default_settings(), **changes)
        key = settings.move_key
        if key in self._cache:
            self._cache.move_to_end(key)
            emb, metrics = self._cache[key]
        else:
            with self._threadpools.limit(limits=self.threads):
                emb, classes = self._moved_pair(settings)
                move = dict(zip(_MOVE_FIELDS, key, strict=True))
                emb = emb.replace(meta={"teaching_move": move})
                metrics = self.readouts(emb, classes)
            self._cache[key] = (emb, metrics)
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return ExplorerResult(settings, emb, self.project(emb, settings.n_points), dict(metrics))


_MOVE_FIELDS = ("alpha", "centroid_weight", "distribution_weight", "method")


# --------------------------------------------------------------------------- tables
def readout_table(results: Sequence[ExplorerResult]) -> pd.DataFrame:
    """One row per explorer state: settings and read-outs (columns: settings, READOUTS)."""
    return pd.DataFrame([r.as_row() for r in results])


def alpha_curve(
    explorer: GapExplorer, alphas: Sequence[float], settings: ExplorerSettings | None = None
) -> pd.DataFrame:
    """Read-outs over a grid of ``alphas`` (other settings from ``settings``): the slider swept."""
    settings = settings or explorer.default_settings()
    return readout_table([explorer.explore(settings, alpha=float(a)) for a in alphas])
