"""Caption quality: CIDEr(-D), BLEU-1..4, ROUGE-L (and optional METEOR) via pycocoevalcap.

The COCO caption scorers are called directly. ``COCOEvalCap.evaluate()`` is not used: it always
builds SPICE, which downloads Stanford CoreNLP at first use and fails offline.

- ``CIDEr``: pycocoevalcap's ``Cider`` — this is CIDEr-D (n = 1..4, TF-IDF n-gram vectors with
  document frequencies from the references of the scored corpus, clipped cosine, Gaussian
  length penalty sigma = 6, x 10). The IDF needs a corpus: a single image scores 0 by
  construction (log 1 = 0), so score hundreds of images at once.
- ``BLEU-1`` .. ``BLEU-4``: corpus BLEU, ``closest`` reference length for the brevity penalty.
- ``ROUGE-L``: LCS F-measure, beta = 1.2, averaged over images.
- ``METEOR`` (``meteor=True``): runs the METEOR 1.5 jar with Java, ~9 s per call.

Tokenisation (``tokenizer="simple"``, pure Python, no Java; :func:`simple_tokenize`): lowercase;
drop quotes and brackets; split off ``, ; : ! ?`` (not commas inside numbers) and PTB
clitics (``'s 're 've 'll 'd 'm n't``, ``cannot`` -> ``can not``); drop a word's trailing
periods unless it has an inner one (``e.g.``, ``3.5`` stay); drop the punctuation tokens
pycocoevalcap's PTBTokenizer removes. On ordinary captions this gives the same tokens as
``tokenizer="ptb"`` (pycocoevalcap's Stanford PTBTokenizer, Java), which differs where it
keeps brackets as ``-lrb-``/``-rrb-`` tokens.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Mapping, Sequence
from typing import Literal

__all__ = [
    "CAPTION_METRICS",
    "CaptionMetricsError",
    "score_captions",
    "simple_tokenize",
    "tokenize_corpus",
]

#: Metric names :func:`score_captions` accepts (METEOR is switched on with ``meteor=True``).
CAPTION_METRICS: tuple[str, ...] = ("CIDEr", "BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L")

# Tokens pycocoevalcap's PTBTokenizer removes after tokenising.
_PUNCTUATION_TOKENS = frozenset(
    ["''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)
_QUOTES_AND_BRACKETS = re.compile(r"[\"“”‘’`()\[\]{}<>]")
_SPLIT_MARKS = re.compile(r"([;:!?])|(?<!\d),|,(?!\d)")
_CLITIC = re.compile(r"(\w)('s|'re|'ve|'ll|'d|'m)\b")
_NOT = re.compile(r"(\w)n't\b")


class CaptionMetricsError(ValueError):
    """Raised for candidates/references that cannot be scored; the message says the fix."""


def simple_tokenize(text: str) -> str:
    """One caption -> its space-joined lowercase tokens, punctuation removed (see module doc)."""
    text = _QUOTES_AND_BRACKETS.sub(" ", str(text).lower().replace("\n", " "))
    text = _SPLIT_MARKS.sub(lambda m: f" {m.group(0)} ", text)
    text = re.sub(r"\bcannot\b", "can not", text)
    text = _NOT.sub(r"\1 n't", text)
    text = _CLITIC.sub(r"\1 \2", text)
    tokens = []
    for token in text.split():
        stripped = token.rstrip(".")
        if "." not in stripped:
            token = stripped
        if token not in ("'s", "'re", "'ve", "'ll", "'d", "'m", "n't"):
            token = token.strip("'")
        if token and token not in _PUNCTUATION_TOKENS:
            tokens.append(token)
    return " ".join(tokens)


def tokenize_corpus(
    captions: Mapping[Hashable, Sequence[str]], tokenizer: Literal["simple", "ptb"] = "simple"
) -> dict[Hashable, list[str]]:
    """``{id: [caption, ...]}`` -> the same with every caption tokenised."""
    if tokenizer == "simple":
        return {key: [simple_tokenize(c) for c in caps] for key, caps in captions.items()}
    if tokenizer == "ptb":
        from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

        wrapped = {key: [{"caption": str(c)} for c in caps] for key, caps in captions.items()}
        return PTBTokenizer().tokenize(wrapped)
    raise CaptionMetricsError(f"tokenizer must be 'simple' or 'ptb', got {tokenizer!r}.")


def _check_inputs(
    candidates: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]]
) -> None:
    if not candidates:
        raise CaptionMetricsError("No candidates: give at least one {id: caption}.")
    missing = [k for k in candidates if k not in references]
    extra = [k for k in references if k not in candidates]
    if missing or extra:
        raise CaptionMetricsError(
            f"candidate and reference ids differ: {len(missing)} candidate id(s) without "
            f"references (e.g. {missing[:3]}), {len(extra)} reference id(s) without a candidate "
            f"(e.g. {extra[:3]}); score the same ids on both sides."
        )
    for key, refs in references.items():
        if isinstance(refs, str) or len(refs) == 0:
            raise CaptionMetricsError(
                f"references[{key!r}] must be a non-empty list of captions, got {refs!r}."
            )


def _meteor_score(gts: dict, res: dict) -> float:
    from pycocoevalcap.meteor.meteor import Meteor

    scorer = Meteor()
    try:
        score, _ = scorer.compute_score(gts, res)
    finally:  # stop the Java process now rather than at garbage collection
        scorer.meteor_p.stdin.close()
        scorer.meteor_p.kill()
        scorer.meteor_p.wait()
    return float(score)


def score_captions(
    candidates: Mapping[Hashable, str],
    references: Mapping[Hashable, Sequence[str]],
    metrics: Sequence[str] = ("CIDEr", "BLEU-4", "ROUGE-L"),
    meteor: bool = False,
    tokenizer: Literal["simple", "ptb"] = "simple",
) -> dict[str, float]:
    """Corpus-level caption scores.

    Args:
        candidates: ``{id: generated caption}``, one per image; none may be empty.
        references: ``{id: [reference captions]}`` with exactly the same ids.
        metrics: names from :data:`CAPTION_METRICS`.
        meteor: also compute ``METEOR`` (Java, ~9 s).
        tokenizer: ``"simple"`` (pure Python) or ``"ptb"`` (Stanford PTBTokenizer, Java).

    Returns:
        ``{metric: score}``; CIDEr on its usual 0-10 scale (1.0 = "100" in papers that
        multiply by 100), the others in [0, 1].
    """
    unknown = [m for m in metrics if m not in CAPTION_METRICS]
    if unknown:
        raise CaptionMetricsError(
            f"Unknown caption metric(s) {unknown}; choose from {list(CAPTION_METRICS)} "
            "(METEOR: pass meteor=True)."
        )
    _check_inputs(candidates, references)
    keys = list(candidates)
    res = tokenize_corpus({k: [candidates[k]] for k in keys}, tokenizer)
    gts = tokenize_corpus({k: list(references[k]) for k in keys}, tokenizer)
    empty = [k for k in keys if not res[k][0].strip()]
    if empty:
        raise CaptionMetricsError(
            f"{len(empty)} candidate caption(s) are empty after tokenisation (e.g. id "
            f"{empty[0]!r}: {candidates[empty[0]]!r}); generate at least one word per image."
        )
    scores: dict[str, float] = {}
    if "CIDEr" in metrics:
        from pycocoevalcap.cider.cider import Cider

        scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    bleu_orders = [int(m.split("-")[1]) for m in metrics if m.startswith("BLEU-")]
    if bleu_orders:
        from pycocoevalcap.bleu.bleu import Bleu

        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        for order in bleu_orders:
            scores[f"BLEU-{order}"] = float(bleu[order - 1])
    if "ROUGE-L" in metrics:
        from pycocoevalcap.rouge.rouge import Rouge

        scores["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    if meteor:
        scores["METEOR"] = _meteor_score(gts, res)
    return {m: scores[m] for m in [*metrics, *(["METEOR"] if meteor else [])]}
