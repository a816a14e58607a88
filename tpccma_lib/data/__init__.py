"""Data sets as :class:`CaptionedImageSet`: captioned shapes, COCO captions, CIFAR-10.

>>> from tpccma_lib.data import make_captioned_shapes
>>> train = make_captioned_shapes("train", n=240, image_size=64, seed=0)  # offline default
>>> texts, text_to_image = train.flat_captions()

The real data sets need ``tpccma prepare coco cifar10`` (internet) first:

>>> coco = load_coco_karpathy(split="test")          # doctest: +SKIP
>>> cifar = load_cifar10(split="test")               # doctest: +SKIP
"""

from tpccma_lib.data.base import CaptionedImageSet, DataSetError, ImageFileSequence
from tpccma_lib.data.cifar10 import CIFAR10_PROMPT_TEMPLATES, load_cifar10
from tpccma_lib.data.coco import COCO_SPLITS, load_coco_karpathy
from tpccma_lib.data.prepare import (
    DATASETS,
    PrepareError,
    RemoteFile,
    data_root,
    dataset_dir,
    is_prepared,
    prepare,
    prepare_files,
)
from tpccma_lib.data.shapes import (
    BACKGROUNDS,
    COLOURS,
    SHAPE_CLASSES,
    SHAPE_PROMPT_TEMPLATES,
    SHAPE_SYNONYMS,
    SIZES,
    make_captioned_shapes,
    render_single_shape,
)

__all__ = [
    "BACKGROUNDS",
    "CIFAR10_PROMPT_TEMPLATES",
    "COCO_SPLITS",
    "COLOURS",
    "DATASETS",
    "SHAPE_CLASSES",
    "SHAPE_PROMPT_TEMPLATES",
    "SHAPE_SYNONYMS",
    "SIZES",
    "CaptionedImageSet",
    "DataSetError",
    "ImageFileSequence",
    "PrepareError",
    "RemoteFile",
    "data_root",
    "dataset_dir",
    "is_prepared",
    "load_cifar10",
    "load_coco_karpathy",
    "make_captioned_shapes",
    "prepare",
    "prepare_files",
    "render_single_shape",
]
