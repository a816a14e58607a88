"""tpccma_lib: measure and close the modality gap of CLIP-like models (TPC-CMA).

The library (everything but ``app``) is what notebooks, tests and other programs import; the
program (``app``: the ``tpccma`` command, sweeps, the notebook runner) is built on it, and no
library module imports from ``app`` (as ``open_clip`` is apart from ``open_clip_train``).

    embeddings.py   the ``Embeddings`` container every stage takes and returns
    embeddings_io.py  bring your own embeddings: the ``.npz`` layout, read and validated
    experiment.py   the data path in a few calls: data -> base model -> embeddings -> fine-tune;
                    ``PRETRAIN_CONFIG`` / ``FINETUNE_CONFIG``, notebook parameters -> settings
    notebook.py     what a notebook does first (seed, display, folders) and ``show``
    linalg.py       matrix powers, Bures distance, Gaussian OT map, percent change (once)
    settings.py     the dict round trip of every settings dataclass
    atomic.py       atomic file writes that clean up and report a full disk
    locks.py        one writer per run folder
    threads.py      cached results computed on one thread (thread-count independent)
    gap/            metrics (decomposition), posthoc (training-free fixes), checks,
                    uncertainty (sampling floors, bootstrap intervals)
    training/       losses (CLIP, CMA), curriculum (alpha schedule, gradient-aware scheduler),
                    lr_tempering, loop (the training loop), distributed, runs (runs on disk),
                    matched_gap (the alpha that reaches a target gap)
    models/         dual-encoder backends: ``towers`` (embedded default) and ``open_clip``;
                    ``weights`` (open_clip weights fetched once into the cache)
    data/           DataConfig, captioned shapes, COCO captions, CIFAR-10, prepare, features
    evaluation/     zero-shot, joint clustering, captioning, retrieval; model_report (one model
                    on every task), roles (one run beside its references), tradeoff and
                    analysis (the sweep's Pareto front and R²)
    teaching/       explorer (closed-form gap model for sliders), toy (notebook 02's
                    experiments), widgets
    viz/            plotly figures, one module per area
    app/            cli, sweep (papermill execution), notebooks (runner + HTML report),
                    analyze (the report of your own embeddings), readme (README tables), kernels
"""

from tpccma_lib.embeddings import Embeddings, EmbeddingsError, l2_normalize

__version__ = "0.1.0"
__all__ = ["Embeddings", "EmbeddingsError", "l2_normalize", "__version__"]
