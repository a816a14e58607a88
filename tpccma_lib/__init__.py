"""tpccma_lib: measure and close the modality gap of CLIP-like models (TPC-CMA).

Modules, one idea each:
    embeddings   the ``Embeddings`` container every stage takes and returns
    geometry     gap metrics and their exact decomposition (centroid + distribution)
    posthoc      training-free fixes as fit/transform on ``Embeddings``
    losses       CLIP contrastive loss and the CMA loss (DDP-aware)
    curriculum   three-phase alpha schedule and the gradient-aware scheduler
    train        the training loop (AMP, checkpoint/resume, DDP, progress, metric log)
    models       dual-encoder backends: ``towers`` (embedded default) and ``open_clip``
    data         captioned shapes, COCO captions, CIFAR-10, feature cache
    evaluation   zero-shot, joint clustering, text-only captioning, retrieval, R² / Pareto
"""

from tpccma_lib.embeddings import Embeddings, EmbeddingsError, l2_normalize

__version__ = "0.1.0"
__all__ = ["Embeddings", "EmbeddingsError", "l2_normalize", "__version__"]
