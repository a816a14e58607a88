"""The data path in a few calls: data set -> base model -> embeddings -> fine-tune.

Notebooks and the CLI both go through :class:`Experiment`, so a notebook cell stays one line:

>>> exp = Experiment(DataConfig(n_train=3000), ModelConfig())
>>> base = exp.base_model()                 # pretrains the embedded mini-CLIP once, then cached
>>> test = exp.embeddings(base, "test")     # Embeddings of the held-out split
>>> run = exp.finetune(TrainConfig(alpha_target=0.5), "runs/alpha0.5")
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from tpccma_lib.data.config import DataConfig
from tpccma_lib.data.features import embed_dataset, frozen_inputs
from tpccma_lib.embeddings import Embeddings
from tpccma_lib.models import DualEncoder, ModelConfig, create_model, load_model
from tpccma_lib.notebook import NotebookPaths
from tpccma_lib.threads import CACHE_COMPUTE, single_threaded
from tpccma_lib.training.loop import InputSource, TrainConfig, TrainResult, train

__all__ = [
    "Experiment",
    "PRETRAIN_CONFIG",
    "FINETUNE_CONFIG",
    "SMOKE_SIZES",
    "config_from_params",
    "finetune_config",
]

#: Contrastive pretraining of the embedded mini-CLIP's heads (alpha = 0): CLIP's recipe on
#: cached tower features (AdamW, lr 1e-3, weight decay 0.1, batch 256, fixed logit scale 100).
#: 150 steps: the budget of lowest held-out contrastive loss on the validation split
#: (``benchmarks/pretrain_budget.py``, :mod:`tpccma_lib.training.budget`; the gap is not looked at).
PRETRAIN_CONFIG = TrainConfig(
    steps=150,
    batch_size=256,
    lr=1e-3,
    weight_decay=0.1,
    warmup_steps=20,
    min_lr_ratio=0.1,
    alpha_target=0.0,
    gradient_aware=False,
    checkpoint_every=200,
    log_every=10,
)

#: The TPC-CMA fine-tune of a base model: the one recipe that ``tpccma train``, notebooks 03/04,
#: the sweep and the CMA-weight calibration share, so the same alpha_target gives the same model
#: whichever entry point runs it. A tenth of the pretraining rate (lr 1e-4), 300 steps, batch 256,
#: the three-phase curriculum with gradient-aware scheduling (``TrainConfig``'s defaults), losses
#: logged every step and the validation gap measured every 25 steps.
FINETUNE_CONFIG = TrainConfig(
    steps=300,
    batch_size=256,
    lr=1e-4,
    weight_decay=0.1,
    alpha_target=0.5,
    log_every=1,
    eval_every=25,
)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


class Experiment:
    """Data, base model and embeddings of one configuration, computed once and cached.

    Args:
        data: the data settings.
        model: the model settings (``ModelConfig()`` = the embedded mini-CLIP).
        runs_dir: where checkpoints and runs go (default ``$TPCCMA_RUNS`` or ``./runs``).
        progress: show progress bars.
    """

    def __init__(
        self,
        data: DataConfig | None = None,
        model: ModelConfig | None = None,
        runs_dir: str | os.PathLike[str] | None = None,
        pretrain: TrainConfig | None = None,
        progress: bool = True,
    ) -> None:
        self.data = data or DataConfig()
        self.model_config = model or ModelConfig(image_size=self.data.image_size)
        if (
            self.model_config.backend == "towers"
            and self.model_config.image_size != self.data.image_size
        ):
            self.model_config = replace(self.model_config, image_size=self.data.image_size)
        self.runs_dir = Path(runs_dir or os.environ.get("TPCCMA_RUNS", "runs"))
        self.pretrain_config = pretrain or PRETRAIN_CONFIG
        self.progress = progress
        self._splits: dict[str, Any] = {}
        self._inputs: dict[str, Any] = {}
        self._probe: DualEncoder | None = None
        self._warned_amp = False
        self.paths: NotebookPaths | None = None  # set by from_params (a notebook's folders)

    @classmethod
    def from_params(
        cls, params: dict[str, Any], smoke: dict[str, Any] | None = None, progress: bool = True
    ) -> Experiment:
        """A notebook's one set-up call: ``exp = Experiment.from_params(globals())``.

        With ``params["smoke"]`` true it first shrinks ``params`` in place to
        :data:`SMOKE_SIZES` plus the notebook's own ``smoke`` sizes (so a test run takes
        seconds); then seeds every generator and sets the display (``setup_notebook`` with
        ``params["seed"]`` and ``params["threads"]``), and builds the experiment from the
        parameters named like ``DataConfig`` and ``ModelConfig`` fields (the CLI's names).
        ``exp.paths`` holds the notebook's runs and reports folders.
        """
        from tpccma_lib.notebook import setup_notebook

        if params.get("smoke"):
            params.update({**SMOKE_SIZES, **(smoke or {})})
        paths = setup_notebook(params.get("seed", 0), threads=params.get("threads"))
        data = config_from_params(DataConfig, params)
        model = config_from_params(ModelConfig, params)
        exp = cls(data, model, runs_dir=paths.runs, progress=progress)
        exp.paths = paths
        return exp

    @property
    def device(self) -> Any:
        """The torch device evaluation embeds on (``DataConfig.device``; "auto": CUDA if any)."""
        import torch

        if self.data.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(self.data.device)

    def _place(self, model: DualEncoder) -> DualEncoder:
        """Move an open_clip model to :attr:`device` (the towers' heads run where they are: their
        frozen stage is cached on disk and stays on the CPU) and set how it embeds
        (``DataConfig.amp`` on CUDA, ``DataConfig.workers`` image-decoding processes)."""
        here, want = model.device, self.device
        if not model.cacheable_inputs and (
            here.type != want.type or (want.index is not None and here != want)
        ):  # a model on cuda:1 (a torchrun rank) stays there when the device is "cuda"
            model.to(want)
        if self.data.amp != "none" and model.device.type != "cuda" and not self._warned_amp:
            warnings.warn(
                f"amp={self.data.amp!r} is ignored on device {model.device}: embedding autocasts "
                "on CUDA only, so these embeddings are fp32.",
                stacklevel=3,
            )
            self._warned_amp = True
        return model.set_inference(self.data.amp, self.data.workers)

    @property
    def run_tag(self) -> str:
        """Sub-folder that keys runs by data set and model: ``""`` for the embedded default
        (captioned shapes + towers, folders as they always were), else
        ``<dataset>-<model name>-<digest of data identity and model config>``."""
        if self.data.dataset == "shapes" and self.model_config.backend == "towers":
            return ""
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.model_config.name)
        key = _digest([self.data.identity(), self.model_config.to_dict()])[:8]
        return f"{self.data.dataset}-{name}-{key}"

    def run_dir(self, kind: str, name: str) -> Path:
        """``runs_dir/kind[/run_tag]/name``: e.g. ``run_dir("finetune", "alpha0.5-seed0")``, the
        folder notebook 03 (and ``tpccma train`` without ``--out``) writes and notebook 04 reads."""
        tag = self.run_tag
        return self.runs_dir / kind / tag / name if tag else self.runs_dir / kind / name

    # ------------------------------------------------------------------ data
    def split(self, name: str) -> Any:
        """The ``CaptionedImageSet`` of split ``name`` ("train", "val", "test")."""
        if name not in self._splits:
            n = {"train": self.data.n_train, "val": self.data.n_val, "test": self.data.n_test}.get(
                name
            )
            if n is None:
                raise ValueError(f"unknown split {name!r}; use 'train', 'val' or 'test'.")
            if self.data.dataset == "shapes":
                from tpccma_lib.data import make_captioned_shapes

                ds = make_captioned_shapes(
                    name,
                    n,
                    image_size=self.data.image_size,
                    seed=self.data.seed,
                    captions=self.data.captions,
                )
            else:
                from tpccma_lib.data import dataset_dir, load_coco_karpathy

                ds = load_coco_karpathy(
                    dataset_dir("coco", self.data.root), name, max_images=n or None
                )
            self._splits[name] = ds
        return self._splits[name]

    def zero_shot_split(self) -> Any:
        """The labelled set of zero-shot accuracy and joint clustering: the shapes' test split,
        or the whole CIFAR-10 test set (10,000 images; the paper's protocol)."""
        if self.data.zero_shot == "same":
            return self.split("test")
        if "cifar10" not in self._splits:
            from tpccma_lib.data import dataset_dir, load_cifar10

            self._splits["cifar10"] = load_cifar10(dataset_dir("cifar10", self.data.root), "test")
        return self._splits["cifar10"]

    def _frozen(self, model: DualEncoder, name: str) -> Any:
        if name not in self._inputs:
            self._inputs[name] = frozen_inputs(model, self.split(name), progress=self.progress)
        return self._inputs[name]

    def input_source(self, model: DualEncoder, split: str = "train") -> InputSource:
        """Training inputs of ``split`` for ``model`` (cached tower features or on-the-fly)."""
        if model.cacheable_inputs:
            return InputSource.from_frozen(self._frozen(model, split))
        return InputSource.from_dataset(model, self.split(split))

    # ------------------------------------------------------------------ models
    def new_model(self) -> DualEncoder:
        """A fresh model of this experiment's config (untrained heads for the towers)."""
        return create_model(self.model_config)

    @property
    def base_dir(self) -> Path:
        """Folder of the base model: keyed by data, model and pretraining settings."""
        key = _digest(
            [
                self.data.identity(),
                self.model_config.to_dict(),
                self.pretrain_config.to_dict(),
                CACHE_COMPUTE,
            ]
        )
        return self.runs_dir / "base" / f"{self.data.dataset}-{key}"

    def base_model(self) -> DualEncoder:
        """The model before any TPC-CMA fine-tuning.

        open_clip: the pretrained model as loaded. Towers: heads pretrained contrastively on the
        train split (``PRETRAIN_CONFIG``), done once and reused from ``base_dir/final.pt``.
        A cached base model that cannot be loaded (a corrupted file) is deleted and pretrained
        again, with a warning naming the file (as the feature cache does).
        """
        import warnings

        from tpccma_lib.models import ModelError

        if self.model_config.backend != "towers":
            return self.new_model()
        final = self.base_dir / "final.pt"
        resume = True
        if final.exists():
            try:
                model, _ = load_model(final, expect=self.model_config)
                return model
            except ModelError as exc:
                warnings.warn(
                    f"cached base model {final} is unusable ({exc}); deleting it and "
                    "pretraining the base model again.",
                    stacklevel=2,
                )
                final.unlink(missing_ok=True)
                resume = False
        model = self.new_model()
        source = self.input_source(model, "train")
        kwargs: dict[str, Any] = {
            "progress": self.progress,
            "extra_checkpoint": {"data_config": self.data.identity(), "role": "base"},
            "fingerprint_extra": {"data_config": self.data.identity()},
        }
        with single_threaded():  # reused by every later run: thread-count independent
            try:
                train(model, source, self.pretrain_config, self.base_dir, resume=resume, **kwargs)
            except ModelError as exc:  # an unreadable checkpoint.pt of an interrupted pretraining
                if not resume:
                    raise
                warnings.warn(
                    f"cannot resume the base model's pretraining in {self.base_dir} ({exc}); "
                    "starting it over.",
                    stacklevel=2,
                )
                model = self.new_model()
                train(model, source, self.pretrain_config, self.base_dir, resume=False, **kwargs)
        model, _ = load_model(final, expect=self.model_config)
        return model

    def base_checkpoint(self) -> Path:
        """Path of the base model checkpoint (pretraining it if needed)."""
        self.base_model()
        return self.base_dir / "final.pt"

    def load(self, checkpoint: str | os.PathLike[str]) -> DualEncoder:
        """A fine-tuned model from ``checkpoint`` (must be a checkpoint of this model config)."""
        model, _ = load_model(checkpoint, expect=self.model_config)
        return model

    # ------------------------------------------------------------------ embeddings
    def embeddings(self, model: DualEncoder, split: str = "test", **meta: Any) -> Embeddings:
        """:class:`Embeddings` of ``split`` under ``model``, provenance in ``meta``."""
        record = {
            "dataset": self.data.dataset if self.data.dataset != "shapes" else "captioned-shapes",
            "seed": self.data.seed,
            **meta,
        }
        inputs = self._frozen(model, split) if model.cacheable_inputs else None
        return embed_dataset(
            self._place(model),
            self.split(split),
            inputs=inputs,
            meta=record,
            progress=self.progress,
        )

    def text_embeddings(self, model: DualEncoder, split: str = "train") -> Any:
        """(N_txt, D) embeddings of the captions of ``split`` only (what the text-only caption
        decoder trains on): no image of the split is decoded or encoded (towers: the cached
        features, as in :meth:`embeddings`)."""
        if model.cacheable_inputs:
            return self.embeddings(model, split).text
        texts, _ = self.split(split).flat_captions()
        return self._place(model).encode_texts(texts, progress=self.progress)

    def labelled_embeddings(self, model: DualEncoder, **meta: Any) -> Embeddings:
        """Embeddings of the labelled tasks (zero-shot, joint clustering); see :meth:`tasks`.

        ``zero_shot="same"``: the test split (:meth:`embeddings`). ``"cifar10"``: the CIFAR-10
        test images, and as text side the embedding of every class prompt (each of CLIP's
        CIFAR-10 templates filled with each class name; a prompt carries its class, paired with
        the first test image of that class). CIFAR-10 has no captions, so it is never embedded
        as a caption set.
        """
        if self.data.zero_shot == "same":
            return self.embeddings(model, "test", **meta)
        import numpy as np

        ds = self.zero_shot_split()
        templates = ds.prompt_templates or ("a photo of a {}.",)
        first_image = {int(c): int(np.flatnonzero(ds.labels == c)[0]) for c in np.unique(ds.labels)}
        classes = [c for c in range(len(ds.class_names)) if c in first_image]
        prompts = [t.format(ds.class_names[c]) for c in classes for t in templates]
        model = self._place(model)
        was_training = model.training
        model.eval()
        image = model.encode_images(ds.images, batch_size=64, progress=self.progress)
        text = model.encode_texts(prompts, progress=self.progress)
        model.train(was_training)
        record = {
            "dataset": ds.name,
            "split": ds.split,
            "model": f"{model.backend}:{model.config().get('name')}",
            "text_side": "class prompts",
            "seed": self.data.seed,
            **meta,
        }
        return Embeddings(
            image=image,
            text=text,
            text_to_image=np.repeat([first_image[c] for c in classes], len(templates)),
            image_labels=ds.labels,
            class_names=tuple(ds.class_names),
            meta=record,
        )

    def encode_texts(self, model: DualEncoder, texts: list[str]) -> Any:
        """Captions/prompts -> (N, D) normalised embeddings (for zero-shot class prompts)."""
        return model.encode_texts(texts)

    # ------------------------------------------------------------------ fine-tuning
    def finetune(
        self,
        cfg: TrainConfig,
        out_dir: str | os.PathLike[str],
        init: DualEncoder | None = None,
        **train_kwargs: Any,
    ) -> TrainResult:
        """TPC-CMA fine-tune of the base model (or ``init``) with ``cfg`` into ``out_dir``."""
        model = init if init is not None else self.base_model()
        return train(
            model,
            self.input_source(model, "train"),
            cfg,
            out_dir,
            progress=self.progress,
            extra_checkpoint={
                "data_config": self.data.identity(),
                "role": "finetune",
                "base_checkpoint": str(self.base_dir / "final.pt"),
            },
            fingerprint_extra={"data_config": self.data.identity()},
            **train_kwargs,
        )


#: Data sizes of every notebook's smoke mode (``smoke=True``): seconds instead of minutes.
SMOKE_SIZES: dict[str, int] = {"n_train": 300, "n_val": 100, "n_test": 200}


def config_from_params(cls: type, params: dict[str, Any], base: Any = None) -> Any:
    """Build dataclass ``cls`` from the subset of ``params`` (e.g. papermill globals) it knows.

    ``base``: an instance of ``cls`` whose values the unnamed fields keep (default: the
    dataclass defaults), e.g. ``config_from_params(TrainConfig, globals(), FINETUNE_CONFIG)``.
    """
    names = {f.name for f in fields(cls)}
    given = {k: v for k, v in params.items() if k in names}
    return replace(base, **given) if base is not None else cls(**given)


def finetune_config(params: dict[str, Any]) -> TrainConfig:
    """:data:`FINETUNE_CONFIG` with the ``TrainConfig`` fields named in ``params`` changed."""
    return config_from_params(TrainConfig, params, FINETUNE_CONFIG)
