"""Caption metrics against hand computations; the text-only caption decoder on a tiny corpus."""

from __future__ import annotations

import math
import shutil
from collections import Counter

import numpy as np
import pytest
import torch

from tpccma_lib.embeddings import Embeddings
from tpccma_lib.evaluation.caption_metrics import (
    CaptionMetricsError,
    score_captions,
    simple_tokenize,
    tokenize_corpus,
)
from tpccma_lib.evaluation.captioning import (
    CaptionDecoderConfig,
    CaptioningError,
    TextDecoder,
    Vocabulary,
    caption_images,
    captioning_rows,
    train_text_decoder,
)

torch.set_num_threads(1)

# ------------------------------------------------------------------ metrics


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def cider_d_by_hand(candidates: dict, references: dict, sigma: float = 6.0) -> float:
    """CIDEr-D written out from its definition (Vedantam et al. 2015, as in coco-caption).

    For n = 1..4, every sentence s becomes a TF-IDF vector over its n-grams g:
        v_n(s)[g] = count(g in s) * (log N - log max(1, df(g)))
    with N the number of images and df(g) the number of images whose *references* contain g.
    Per image, with candidate c and references r_1..r_m:
        sim_n(c, r) = sum_g min(v_n(c)[g], v_n(r)[g]) * v_n(r)[g] / (|v_n(c)| |v_n(r)|)
                      * exp(-(len(c) - len(r))^2 / (2 sigma^2))        (0 if a norm is 0)
        CIDEr-D(c) = 10 * mean_n (1/m) sum_j sim_n(c, r_j)
    and the corpus score is the mean over images. (coco-caption measures length as the number
    of bigrams, len - 1; the difference of two lengths is the same.)
    """
    images = list(candidates)
    n_images = len(images)
    df: Counter = Counter()
    for key in images:
        seen = set()
        for ref in references[key]:
            for n in range(1, 5):
                seen |= set(_ngrams(ref.split(), n))
        df.update(seen)

    def vector(words: list[str], n: int) -> dict:
        return {
            g: c * (math.log(n_images) - math.log(max(1.0, df[g])))
            for g, c in _ngrams(words, n).items()
        }

    scores = []
    for key in images:
        cand = candidates[key].split()
        per_n = []
        for n in range(1, 5):
            vc = vector(cand, n)
            total = 0.0
            for ref in references[key]:
                words = ref.split()
                vr = vector(words, n)
                dot = sum(min(vc[g], vr.get(g, 0.0)) * vr.get(g, 0.0) for g in vc)
                norm_c = math.sqrt(sum(v * v for v in vc.values()))
                norm_r = math.sqrt(sum(v * v for v in vr.values()))
                cosine = dot / (norm_c * norm_r) if norm_c > 0 and norm_r > 0 else 0.0
                total += cosine * math.exp(-((len(cand) - len(words)) ** 2) / (2 * sigma**2))
            per_n.append(total / len(references[key]))
        scores.append(10.0 * sum(per_n) / 4)
    return sum(scores) / n_images


TOY_CANDIDATES = {
    0: "a red circle on the left",
    1: "two blue squares at the top of the picture",
    2: "a green star",
    3: "a small yellow heart in the middle",
    4: "red circles",
}
TOY_REFERENCES = {
    0: ["a red circle on the left side", "a big red circle", "one red disc at the left"],
    1: ["two blue squares at the top", "blue squares near the top edge"],
    2: ["one green star", "a star that is green", "a green star in the corner"],
    3: ["a yellow heart in the middle", "a small heart in the centre"],
    4: ["three red circles", "some circles that are red", "red discs"],
}


def test_cider_d_equals_the_formula_written_out() -> None:
    got = score_captions(TOY_CANDIDATES, TOY_REFERENCES, metrics=("CIDEr",))
    assert tokenize_corpus({k: [v] for k, v in TOY_CANDIDATES.items()}) == {
        k: [v] for k, v in TOY_CANDIDATES.items()
    }  # already tokenised: the scorer sees the same strings as the hand computation
    expected = cider_d_by_hand(TOY_CANDIDATES, TOY_REFERENCES)
    assert expected > 0.5
    assert got["CIDEr"] == pytest.approx(expected, rel=1e-9)


def test_bleu4_of_an_exact_match_is_one() -> None:
    refs = {i: refs for i, refs in TOY_REFERENCES.items() if i != 4}
    exact = {i: r[0] for i, r in refs.items()}  # every reference[0] has >= 4 words
    scores = score_captions(exact, refs, metrics=("BLEU-1", "BLEU-4", "ROUGE-L"))
    assert scores["BLEU-4"] == pytest.approx(1.0, abs=1e-6)
    assert scores["BLEU-1"] == pytest.approx(1.0, abs=1e-6)
    assert scores["ROUGE-L"] == pytest.approx(1.0)


def test_rouge_l_by_hand() -> None:
    # LCS("a red circle on the left", "a big red circle") = "a red circle" = 3 words
    precision, recall, beta = 3 / 6, 3 / 4, 1.2
    expected = (1 + beta**2) * precision * recall / (recall + beta**2 * precision)
    got = score_captions({0: "a red circle on the left"}, {0: ["a big red circle"]}, ("ROUGE-L",))
    assert got["ROUGE-L"] == pytest.approx(expected)


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("A man's red T-shirt, on the side.", "a man 's red t-shirt on the side"),
        (
            "Two dogs -- \"running\" fast!  Don't stop; it's 3.5 km/h...",
            "two dogs running fast do n't stop it 's 3.5 km/h",
        ),
        ("They're gone? e.g. U.S.A. cannot", "they 're gone e.g. u.s.a. can not"),
        ("the dogs' bowl (left), 3,000 people.", "the dogs bowl left 3,000 people"),
    ],
)
def test_simple_tokenizer(text: str, tokens: str) -> None:
    assert simple_tokenize(text) == tokens


@pytest.mark.slow
def test_simple_tokenizer_agrees_with_ptb_on_ordinary_captions() -> None:
    if shutil.which("java") is None:
        pytest.skip("the PTB tokenizer needs Java")
    captions = {
        0: ["A man's red T-shirt, on the side.", "Two dogs -- running fast!"],
        1: ["Don't stop; it's 3.5 km/h...", "A cat isn't here: they're gone?"],
    }
    assert tokenize_corpus(captions, "ptb") == tokenize_corpus(captions, "simple")


def test_caption_metric_errors() -> None:
    with pytest.raises(CaptionMetricsError, match="ids differ"):
        score_captions({0: "a cat"}, {1: ["a cat"]})
    with pytest.raises(CaptionMetricsError, match="empty after tokenisation"):
        score_captions({0: "a cat", 1: " ... "}, {0: ["a cat"], 1: ["a dog"]})
    with pytest.raises(CaptionMetricsError, match="non-empty list"):
        score_captions({0: "a cat"}, {0: []})
    with pytest.raises(CaptionMetricsError, match="Unknown caption metric"):
        score_captions({0: "a cat"}, {0: ["a cat"]}, metrics=("SPICE",))
    with pytest.raises(CaptionMetricsError, match="No candidates"):
        score_captions({}, {})


# ------------------------------------------------------------------ vocabulary


def test_vocabulary_build_encode_decode() -> None:
    vocab = Vocabulary.build(["A red circle.", "a blue circle", "a red star"], min_count=2)
    assert vocab.tokens == ("<pad>", "<bos>", "<eos>", "<unk>", "a", "circle", "red")
    ids = vocab.encode("A red heart!", max_tokens=10)
    assert ids == [4, 6, 3, 2]  # heart -> <unk>, then <eos>
    assert vocab.encode("a red circle", max_tokens=2) == [4, 6, 2]
    assert vocab.decode([4, 6, 3, 1, 5, 2, 4]) == "a red circle"  # specials dropped, stop at eos


# ------------------------------------------------------------------ decoder

COLOURS = ["red", "green", "blue", "yellow", "purple"]
SHAPES = ["circle", "square", "star", "heart"]
PLACES = ["on the left", "on the right", "at the top", "in the middle"]
TINY = CaptionDecoderConfig(
    d_model=32, n_heads=2, n_layers=1, prefix_length=2, max_tokens=12, batch_size=32
)


def _corpus(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"a {rng.choice(COLOURS)} {rng.choice(SHAPES)} {rng.choice(PLACES)}" for _ in range(n)]


def _bag_of_words_embeddings(captions: list[str], dim: int = 16, seed: int = 0) -> np.ndarray:
    """A stand-in text encoder: a fixed random vector per word, summed, plus a little noise."""
    rng = np.random.default_rng(seed)
    words = sorted({w for c in captions for w in c.split()})
    table = dict(zip(words, rng.normal(size=(len(words), dim)), strict=True))
    vectors = np.stack([sum(table[w] for w in c.split()) for c in captions])
    return vectors + 0.01 * rng.normal(size=vectors.shape)


@pytest.fixture(scope="module")
def corpus() -> tuple[list[str], np.ndarray]:
    captions = _corpus(300)
    return captions, _bag_of_words_embeddings(captions)


def test_training_loss_decreases_and_generate_returns_captions(corpus) -> None:
    captions, embeddings = corpus
    decoder = train_text_decoder(
        embeddings, captions, TINY.__class__(**{**TINY.__dict__, "steps": 60}), progress=False
    )
    history = np.array(decoder.loss_history)
    assert history.shape == (60,)
    assert history[-10:].mean() < 0.6 * history[:5].mean()
    generated = decoder.generate(embeddings[:7], max_len=8)
    assert len(generated) == 7
    assert all(isinstance(c, str) and 1 <= len(c.split()) <= 8 for c in generated)
    assert all(w in decoder.vocab.index for c in generated for w in c.split())
    assert not any(w.startswith("<") for c in generated for w in c.split())
    assert all(len(c.split()) <= TINY.max_tokens for c in decoder.generate(embeddings[:3], 50))


def test_training_is_deterministic_and_leaves_global_rng_alone(corpus) -> None:
    captions, embeddings = corpus
    cfg = CaptionDecoderConfig(**{**TINY.__dict__, "steps": 6})
    state = torch.get_rng_state()
    first = train_text_decoder(embeddings, captions, cfg, seed=3, progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    second = train_text_decoder(embeddings, captions, cfg, seed=3, progress=False)
    other = train_text_decoder(embeddings, captions, cfg, seed=4, progress=False)
    assert first.loss_history == second.loss_history
    assert first.loss_history != other.loss_history
    for (name, a), (_, b) in zip(
        first.network.state_dict().items(), second.network.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert first.generate(embeddings[:5]) == second.generate(embeddings[:5])


@pytest.fixture(scope="module")
def overfitted() -> tuple[TextDecoder, list[str], np.ndarray]:
    captions = [
        "a red circle on the left",
        "two blue squares at the top",
        "a green star in the middle",
        "one yellow heart on the right",
        "three purple circles at the bottom",
        "a small red star at the top",
    ]
    embeddings = np.random.default_rng(1).normal(size=(len(captions), 16))
    cfg = CaptionDecoderConfig(
        **{**TINY.__dict__, "steps": 150, "batch_size": 6, "noise_std": 0.0, "dropout": 0.0},
    )
    cfg = CaptionDecoderConfig(**{**cfg.__dict__, "lr": 3e-3, "warmup_steps": 10})
    return (
        train_text_decoder(embeddings, captions, cfg, seed=0, progress=False),
        captions,
        embeddings,
    )


def test_overfitted_decoder_reproduces_its_training_captions(overfitted) -> None:
    decoder, captions, embeddings = overfitted
    assert decoder.generate(embeddings) == [simple_tokenize(c) for c in captions]
    # the input is L2-normalised inside: scaling an embedding changes nothing
    assert decoder.generate(3.0 * embeddings[:2]) == [simple_tokenize(c) for c in captions[:2]]


def test_save_load_round_trip(overfitted, tmp_path) -> None:
    decoder, captions, embeddings = overfitted
    path = decoder.save(tmp_path / "sub" / "decoder.pt")
    assert path.exists() and not list(path.parent.glob("*.tmp"))
    loaded = TextDecoder.load(path)
    assert loaded.config == decoder.config
    assert loaded.vocab.tokens == decoder.vocab.tokens
    assert loaded.loss_history == decoder.loss_history
    assert loaded.generate(embeddings) == decoder.generate(embeddings)
    with pytest.raises(FileNotFoundError, match="train_text_decoder"):
        TextDecoder.load(tmp_path / "missing.pt")


def test_captioning_rows_score_image_captions(overfitted) -> None:
    decoder, captions, embeddings = overfitted
    # images that sit exactly on their caption's embedding: a perfectly aligned space
    emb = Embeddings.from_arrays(
        np.concatenate([embeddings, embeddings[:1]]),
        embeddings,
        text_to_image=np.arange(6),
        meta={"dataset": "toy", "posthoc": "identity"},
    )
    references = [[c, "something else entirely here"] for c in captions] + [[]]
    candidates, refs = caption_images(decoder, emb, references)
    assert sorted(candidates) == list(range(6))  # the last image has no references: skipped
    rows = captioning_rows(decoder, emb, references, metrics=("BLEU-4", "ROUGE-L"))
    by_metric = {r["metric"]: r for r in rows}
    assert by_metric["BLEU-4"]["value"] == pytest.approx(1.0, abs=1e-6)
    assert by_metric["ROUGE-L"]["value"] == pytest.approx(1.0)
    assert by_metric["BLEU-4"]["task"] == "captioning" and by_metric["BLEU-4"]["n_images"] == 6
    assert by_metric["BLEU-4"]["dataset"] == "toy"


def test_decoder_errors(overfitted) -> None:
    decoder, captions, embeddings = overfitted
    with pytest.raises(CaptioningError, match="reads"):
        decoder.generate(np.ones((2, 5)))
    with pytest.raises(CaptioningError, match="max_len"):
        decoder.generate(embeddings, max_len=0)
    emb = Embeddings.from_arrays(embeddings, embeddings)
    with pytest.raises(CaptioningError, match="reference lists"):
        caption_images(decoder, emb, [["a"]])
    with pytest.raises(CaptioningError, match="must divide"):
        CaptionDecoderConfig(d_model=30, n_heads=4)
    with pytest.raises(CaptioningError, match="one row per caption"):
        train_text_decoder(embeddings, captions[:2], TINY, progress=False)
    rare = CaptionDecoderConfig(**{**TINY.__dict__, "min_count": 1000})
    with pytest.raises(CaptioningError, match="lower min_count"):
        train_text_decoder(embeddings, captions, rare, progress=False)
