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


# ------------------------------------------------------------------ length in epochs, DeCap preset


@pytest.mark.parametrize(
    ("epochs", "n_captions", "batch_size", "steps"),
    [
        (1, 64, 64, 1),
        (2, 64, 64, 2),
        (1.5, 300, 32, 15),  # 14.06 -> 15: the last step starts the next pass
        (0.1, 640, 64, 1),  # read as 1/10: exactly one step, not 2 by float round-off
        (0.3, 640, 64, 3),
        (10, 566_747, 64, 88_555),  # COCO Karpathy train's captions, 10 passes at batch 64
        (1e-6, 10, 64, 1),  # never less than one step
    ],
)
def test_epochs_resolve_to_ceil_of_passes_over_the_captions(
    epochs, n_captions, batch_size, steps
) -> None:
    cfg = CaptionDecoderConfig(epochs=epochs, batch_size=batch_size, steps=999)
    assert (
        cfg.resolved_steps(n_captions)
        == steps
        == math.ceil(round(epochs * n_captions / batch_size, 9))
    )
    assert CaptionDecoderConfig(steps=7).resolved_steps(n_captions) == 7  # epochs None: steps


def test_training_for_epochs_takes_the_resolved_number_of_steps(corpus) -> None:
    captions, embeddings = corpus  # 300 captions
    cfg = CaptionDecoderConfig(**{**TINY.__dict__, "epochs": 1.5, "steps": 999})
    decoder = train_text_decoder(embeddings, captions, cfg, progress=False)
    expected = math.ceil(1.5 * 300 / TINY.batch_size)  # 15
    assert decoder.steps == expected == len(decoder.loss_history)
    assert f"steps={expected}," in repr(decoder)
    by_steps = CaptionDecoderConfig(**{**TINY.__dict__, "steps": expected})
    same = train_text_decoder(embeddings, captions, by_steps, progress=False)
    assert same.loss_history == decoder.loss_history  # the same training, only named by epochs


@pytest.mark.parametrize("epochs", [0, -1, 0.0, float("nan"), float("inf"), True, "3"])
def test_bad_epochs_are_refused(epochs) -> None:
    with pytest.raises(CaptioningError, match="epochs"):
        CaptionDecoderConfig(epochs=epochs)


def test_bad_label_smoothing_is_refused() -> None:
    for value in (-0.1, 1.0):
        with pytest.raises(CaptioningError, match="label_smoothing"):
            CaptionDecoderConfig(label_smoothing=value)


def test_save_load_round_trip_of_an_epochs_decoder(corpus, tmp_path) -> None:
    captions, embeddings = corpus
    cfg = CaptionDecoderConfig(**{**TINY.__dict__, "epochs": 0.5, "label_smoothing": 0.1})
    decoder = train_text_decoder(embeddings, captions, cfg, progress=False)
    assert decoder.steps == math.ceil(0.5 * 300 / TINY.batch_size) == 5
    loaded = TextDecoder.load(decoder.save(tmp_path / "decoder.pt"))
    assert loaded.config == decoder.config and loaded.config.epochs == 0.5
    assert loaded.steps == decoder.steps
    assert loaded.loss_history == decoder.loss_history
    assert repr(loaded) == repr(decoder)
    assert loaded.generate(embeddings[:5]) == decoder.generate(embeddings[:5])


def test_load_of_a_file_without_steps_counts_the_loss_history(overfitted, tmp_path) -> None:
    decoder, _, _ = overfitted
    path = decoder.save(tmp_path / "old.pt")
    state = torch.load(path, weights_only=True)
    del state["steps"]  # as written before the field existed
    for key in ("epochs", "label_smoothing"):
        del state["config"][key]
    torch.save(state, path)
    loaded = TextDecoder.load(path)
    assert loaded.steps == len(decoder.loss_history) == decoder.steps
    assert loaded.config == decoder.config


def test_decap_preset_is_sized_like_decap() -> None:
    cfg = CaptionDecoderConfig.decap()
    assert (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.ff_mult) == (4, 4, 768, 4)
    assert (cfg.prefix_length, cfg.batch_size, cfg.epochs) == (1, 64, 10)
    assert (cfg.dropout, cfg.label_smoothing, cfg.weight_decay) == (0.1, 0.1, 0.0)
    assert cfg.warmup_steps == 1000 and 0 < cfg.lr <= 2e-4
    assert CaptionDecoderConfig.decap(epochs=3).epochs == 3
    wider = CaptionDecoderConfig.decap(d_model=256, n_layers=2)
    assert (wider.d_model, wider.n_layers, wider.n_heads, wider.epochs) == (256, 2, 4, 10)
    by_steps = CaptionDecoderConfig.decap(epochs=None, steps=123)
    assert by_steps.resolved_steps(566_747) == 123
    with pytest.raises(CaptioningError, match="must divide"):
        CaptionDecoderConfig.decap(n_heads=5)


def test_decap_preset_trains_and_captions(corpus) -> None:
    captions, embeddings = corpus
    # the preset's network (4 layers, 4 heads, width 768), a couple of small steps
    cfg = CaptionDecoderConfig.decap(epochs=None, steps=2, batch_size=8)
    decoder = train_text_decoder(embeddings[:40], captions[:40], cfg, progress=False)
    assert decoder.steps == len(decoder.loss_history) == 2
    assert all(math.isfinite(v) for v in decoder.loss_history)
    assert decoder.network.prefix.out_features == 768  # one prefix token of width 768
    assert len(decoder.network.blocks.layers) == 4
    assert decoder.network.blocks.layers[0].self_attn.num_heads == 4
    generated = decoder.generate(embeddings[:3], max_len=4)
    assert len(generated) == 3 and all(1 <= len(c.split()) <= 4 for c in generated)


# ------------------------------------------------------------------ the data set's decoder


def test_decoder_config_for_each_data_set() -> None:
    from tpccma_lib.data.config import DataConfig
    from tpccma_lib.evaluation.model_report import EvalConfig, decoder_config_for

    shapes = DataConfig()
    assert decoder_config_for(shapes) == CaptionDecoderConfig(steps=400)  # as ever
    assert decoder_config_for(None) == CaptionDecoderConfig(steps=400)
    assert decoder_config_for(shapes, 30) == CaptionDecoderConfig(steps=30)
    coco = DataConfig(dataset="coco", zero_shot="cifar10")
    assert decoder_config_for(coco) == CaptionDecoderConfig.decap(epochs=10)
    short = decoder_config_for(coco, 30)  # steps override the epochs
    assert short.epochs is None and short.steps == 30 and short.resolved_steps(10**6) == 30
    assert (short.d_model, short.n_layers, short.n_heads) == (768, 4, 4)
    assert short.warmup_steps == 3  # a tenth of a short run, not DeCap's 1000
    with pytest.raises(CaptioningError):
        decoder_config_for(shapes, 0)
    assert EvalConfig().decoder is None  # resolved per data set in fit_caption_decoder


def test_fit_caption_decoder_uses_the_data_sets_decoder_and_device(monkeypatch) -> None:
    from types import SimpleNamespace

    import tpccma_lib.evaluation.model_report as reporting
    from tpccma_lib.data.config import DataConfig

    calls: list[dict] = []

    def fake_train(text, texts, cfg, seed, progress, device):
        calls.append({"cfg": cfg, "seed": seed, "device": device, "n": len(texts)})
        return "decoder"

    split = SimpleNamespace(flat_captions=lambda: (["a b", "c d"], [0, 1]))
    exp = SimpleNamespace(
        data=DataConfig(dataset="coco", zero_shot="cifar10"),
        device=torch.device("cpu"),
        text_embeddings=lambda model, name: np.ones((2, 4)),
        split=lambda name: split,
    )
    monkeypatch.setattr(reporting, "train_text_decoder", fake_train)
    assert reporting.fit_caption_decoder(exp, "model") == "decoder"
    assert calls[-1]["cfg"] == CaptionDecoderConfig.decap(epochs=10)
    assert calls[-1]["device"] == torch.device("cpu") and calls[-1]["n"] == 2
    own = CaptionDecoderConfig(steps=5)
    reporting.fit_caption_decoder(exp, "model", reporting.EvalConfig(decoder=own, seed=3))
    assert calls[-1]["cfg"] == own and calls[-1]["seed"] == 3
    exp.data = DataConfig()
    reporting.fit_caption_decoder(exp, "model")
    assert calls[-1]["cfg"] == CaptionDecoderConfig(steps=400)


def test_cli_decoder_steps_default_is_the_data_sets() -> None:
    from tpccma_lib.app.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["evaluate"]).decoder_steps is None
    assert parser.parse_args(["evaluate", "--decoder-steps", "30"]).decoder_steps == 30


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_decoder_trains_and_captions_on_cuda(corpus) -> None:
    captions, embeddings = corpus
    state = torch.cuda.get_rng_state()
    cfg = CaptionDecoderConfig(**{**TINY.__dict__, "epochs": 0.5})
    decoder = train_text_decoder(embeddings, captions, cfg, progress=False, device="cuda")
    assert torch.equal(torch.cuda.get_rng_state(), state)  # the global CUDA generator untouched
    assert next(decoder.network.parameters()).device.type == "cuda"
    assert decoder.steps == len(decoder.loss_history) == 5
    assert len(decoder.generate(embeddings[:4])) == 4
