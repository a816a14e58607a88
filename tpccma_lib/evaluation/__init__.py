"""Evaluation suite: one task per module, every result a row (see ``records``).

Modules:
    records          ``make_row`` / ``rows_to_frame`` / ``metrics_wide``: results as rows
    zero_shot        prompt-ensemble class embeddings, top-1 zero-shot accuracy
    clustering       joint k-means of images and captions: ARI, NMI, modality ARI, mixing
    retrieval        image->text and text->image recall@K (cosine, blocked)
    caption_metrics  CIDEr-D, BLEU, ROUGE-L (METEOR optional) via pycocoevalcap scorers
    captioning       text-only caption decoder (DeCap/CapDec style) and its scores
    analysis         R² of task metrics on gap metrics, Pareto front, relative change
    suite            ``evaluate_embeddings``: every task the inputs allow
"""

from tpccma_lib.evaluation.analysis import (
    pareto_front,
    r2_table,
    r_squared,
    relative_change,
)
from tpccma_lib.evaluation.caption_metrics import score_captions, simple_tokenize
from tpccma_lib.evaluation.captioning import (
    CaptionDecoderConfig,
    TextDecoder,
    caption_images,
    captioning_rows,
    train_text_decoder,
)
from tpccma_lib.evaluation.clustering import joint_clustering, joint_clustering_rows
from tpccma_lib.evaluation.records import make_row, metrics_wide, rows_to_frame
from tpccma_lib.evaluation.retrieval import retrieval_recall, retrieval_rows
from tpccma_lib.evaluation.suite import evaluate_embeddings
from tpccma_lib.evaluation.zero_shot import (
    class_text_embeddings,
    zero_shot_accuracy,
    zero_shot_rows,
)

__all__ = [
    "CaptionDecoderConfig",
    "TextDecoder",
    "caption_images",
    "captioning_rows",
    "class_text_embeddings",
    "evaluate_embeddings",
    "joint_clustering",
    "joint_clustering_rows",
    "make_row",
    "metrics_wide",
    "pareto_front",
    "r2_table",
    "r_squared",
    "relative_change",
    "retrieval_recall",
    "retrieval_rows",
    "rows_to_frame",
    "score_captions",
    "simple_tokenize",
    "train_text_decoder",
    "zero_shot_accuracy",
    "zero_shot_rows",
]
