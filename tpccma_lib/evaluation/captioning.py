"""Text-only captioning (DeCap / CapDec style): a decoder that never sees an image in training.

Training: a small transformer decoder learns ``text embedding of a caption -> that caption``
on captions alone. Inference: it is fed *image* embeddings. It can only work to the extent
that images land where their captions do, so caption quality (CIDEr) measures how well the
shared space is aligned: a large modality gap puts images out of the decoder's training
distribution.

Model (:class:`CaptionDecoderConfig`): the embedding ``e`` (D,) is L2-normalised and mapped by
one linear layer to ``prefix_length`` tokens of width ``d_model``; a GPT-style stack
(``n_layers`` pre-norm layers, ``n_heads`` heads, causal mask, learned positions) reads
``[prefix, <bos>, w_1 .. w_n]`` and predicts ``w_1 .. w_n, <eos>`` (teacher forcing,
cross-entropy). Words: a vocabulary of the training captions' tokens
(:func:`~tpccma_lib.evaluation.caption_metrics.simple_tokenize`, so generated captions are
already in the tokenised form the metrics use) plus ``<pad> <bos> <eos> <unk>``.

Noise (CapDec): during training the input is ``normalize(e + noise_std * z)``, ``z ~ N(0, I_D)``.
``noise_std`` is *per dimension*: the noise vector has norm about ``noise_std * sqrt(D)``
(0.05 -> ~0.8 at D = 256, against the embedding's norm 1), which makes the decoder robust to
inputs near, but not on, the text manifold — where images sit after a gap-closing fix.
CapDec's published setting, variance 0.016 on CLIP ViT-B/32 (std ~0.13), is a stronger
choice; 0.0 disables noise.

Cost: the defaults (d_model 128, 2 layers, 600 steps of 64 captions, ~4 epochs of 10k
captions) train in about a minute of one CPU core (~0.1 s per step; dropout is off by
default because Bernoulli sampling took ~20 % of a CPU step, and the input noise already
regularises). Decoding recomputes the whole prefix at each word (no key/value cache):
~2 s for 300 images on one core.

Length of training: ``steps`` optimiser steps, or with ``epochs`` set
``ceil(epochs * n_captions / batch_size)`` steps (``steps`` is then ignored; the resolved
number is :attr:`TextDecoder.steps`). :meth:`CaptionDecoderConfig.decap` sizes the decoder
like DeCap's language model (the setting for COCO, trained on the device, where
``train_text_decoder(device=...)`` puts it; generation runs where the network is).

Decoding: greedy, batched, at most ``max_len`` words; ``<pad> <bos> <unk>`` are never emitted
and ``<eos>`` not as the first word, so every caption has at least one word.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from tpccma_lib.embeddings import Embeddings
from tpccma_lib.evaluation.caption_metrics import score_captions, simple_tokenize
from tpccma_lib.evaluation.records import make_row

__all__ = [
    "CaptionDecoderConfig",
    "CaptioningError",
    "TextDecoder",
    "Vocabulary",
    "caption_images",
    "captioning_rows",
    "captioning_scores",
    "train_text_decoder",
]

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
_FORMAT = "tpccma-caption-decoder-v1"


class CaptioningError(ValueError):
    """Raised for inputs the captioning decoder cannot use; the message says the fix."""


@dataclass(frozen=True)
class CaptionDecoderConfig:
    """Settings of the text-only caption decoder and its training.

    The defaults are the small decoder of the embedded data set (a minute of one CPU core);
    :meth:`decap` gives the DeCap-sized one used for COCO.
    """

    d_model: int = 128  # width of the transformer
    n_layers: int = 2  # decoder layers (self-attention + MLP, pre-norm)
    n_heads: int = 4  # attention heads; must divide d_model
    ff_mult: int = 4  # MLP hidden width = ff_mult * d_model
    prefix_length: int = 4  # tokens the embedding is mapped to (linear D -> k * d_model)
    max_tokens: int = 24  # captions are cut to this many words in training; generation limit
    dropout: float = 0.0  # dropout in attention and MLP (Bernoulli sampling: ~20 % of a CPU step)
    noise_std: float = 0.05  # CapDec noise, per-dimension std added to the input embedding
    min_count: int = 1  # words seen fewer times in training captions become <unk>
    steps: int = 600  # optimiser steps (~4 epochs of 10k captions at batch 64); see epochs
    epochs: float | None = None  # if set: ceil(epochs * n_captions / batch_size) steps, not steps
    batch_size: int = 64  # captions per step
    lr: float = 1e-3  # AdamW peak learning rate (linear warm-up, cosine decay to 10 %)
    warmup_steps: int = 50  # steps of linear warm-up
    weight_decay: float = 0.01  # AdamW weight decay
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    label_smoothing: float = 0.0  # of the token cross-entropy (0: none)

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise CaptioningError(f"n_heads = {self.n_heads} must divide d_model = {self.d_model}.")
        for name in ("d_model", "n_layers", "prefix_length", "max_tokens", "steps", "batch_size"):
            if getattr(self, name) < 1:
                raise CaptioningError(f"CaptionDecoderConfig.{name} must be >= 1.")
        if self.noise_std < 0:
            raise CaptioningError(f"noise_std must be >= 0, got {self.noise_std}.")
        if self.epochs is not None and (
            isinstance(self.epochs, bool)
            or not isinstance(self.epochs, numbers.Real)
            or not math.isfinite(self.epochs)
            or self.epochs <= 0
        ):
            raise CaptioningError(
                f"epochs must be a finite number > 0 (passes over the training captions), or "
                f"None to train for `steps`; got {self.epochs!r}."
            )
        if not 0.0 <= self.label_smoothing < 1.0:
            raise CaptioningError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}.")

    @classmethod
    def decap(cls, epochs: float | None = 10, **overrides: Any) -> CaptionDecoderConfig:
        """A decoder sized and trained like DeCap's language model (the COCO setting).

        Source: DeCap (Li, Zhu, Wen and Yang, "DeCap: Decoding CLIP Latents for Zero-Shot
        Captioning via Text-Only Training", ICLR 2023), section "Implementation details": a
        4-layer Transformer with 4 attention heads and hidden size 768 (GPT-2's width),
        trained from scratch, on text only, with AdamW, to reconstruct a caption from its
        CLIP text embedding given as prefix. The authors' released training script
        (dhg-wei/DeCap on GitHub, ``train.py``) fills in the rest: GPT-2 blocks with GPT-2's
        defaults (MLP 4 x 768, dropout 0.1), one prefix token mapped by one linear layer from
        the normalised embedding, batches of 64 captions, token cross-entropy with label
        smoothing 0.1, AdamW without weight decay and 1000 warm-up steps. Those are the
        settings here: ``d_model=768, n_layers=4, n_heads=4, ff_mult=4, prefix_length=1,
        dropout=0.1, label_smoothing=0.1, batch_size=64, weight_decay=0.0,
        warmup_steps=1000``.

        This project's choices, not DeCap's published values:

        * ``epochs`` (default 10 passes over the training captions: ~88.6k steps over the
          ~567k captions of COCO Karpathy train). It is a stated setting of this project
          (it matches the released script's default, which ran on two GPUs of 64 captions
          each, i.e. half as many steps per epoch); the paper's own count is not relied on.
        * learning rate 1e-4 with this module's schedule (linear warm-up, cosine decay to
          10 %, gradient clipping at 1) where DeCap's script uses 1e-5 decayed linearly to
          0: DeCap's network starts from GPT-2's initialisation (weights ~ N(0, 0.02)), this
          one from PyTorch's (unit-variance word embeddings), and AdamW moves a weight by
          about ``lr`` per step, so at 1e-5 the embeddings could barely leave their random
          start in 10 epochs. 1e-4 stays well below GPT-2 small's 6e-4 (taken with batches of
          ~0.5M tokens, against ~700 here). Not tuned on COCO.
        * words are the whole tokens of the training captions (DeCap: CLIP's BPE), and the
          input noise ``noise_std`` (CapDec's) is kept: this project decodes image embeddings
          directly, where DeCap first projects them onto a memory of text embeddings.

        Args:
            epochs: passes over the training captions (None: train for ``steps`` instead).
            **overrides: any other field, e.g. ``d_model=256``, or ``epochs=None,
                steps=2000``.
        """
        settings: dict[str, Any] = {
            "d_model": 768,
            "n_layers": 4,
            "n_heads": 4,
            "ff_mult": 4,
            "prefix_length": 1,
            "dropout": 0.1,
            "label_smoothing": 0.1,
            "batch_size": 64,
            "lr": 1e-4,
            "warmup_steps": 1000,
            "weight_decay": 0.0,
            "epochs": epochs,
        }
        return cls(**{**settings, **overrides})

    def resolved_steps(self, n_captions: int) -> int:
        """Optimiser steps of a training on ``n_captions`` captions: ``steps``, or with
        ``epochs`` set ``ceil(epochs * n_captions / batch_size)`` (at least 1); the epoch count
        is read as written (0.1 is 1/10, not its binary approximation)."""
        if self.epochs is None:
            return self.steps
        exact = Fraction(repr(float(self.epochs))) * n_captions / self.batch_size
        return max(1, math.ceil(exact))


# ---------------------------------------------------------------------------- vocabulary
@dataclass(frozen=True)
class Vocabulary:
    """Word <-> id map; ids 0..3 are ``<pad> <bos> <eos> <unk>``."""

    tokens: tuple[str, ...]
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if tuple(self.tokens[:4]) != (PAD, BOS, EOS, UNK):
            raise CaptioningError("a Vocabulary must start with <pad> <bos> <eos> <unk>.")
        object.__setattr__(self, "index", {tok: i for i, tok in enumerate(self.tokens)})

    @classmethod
    def build(cls, captions: Sequence[str], min_count: int = 1) -> Vocabulary:
        """Words of the tokenised captions seen at least ``min_count`` times, by frequency."""
        counts = Counter(w for c in captions for w in simple_tokenize(c).split())
        words = sorted(
            (w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w)
        )
        return cls((PAD, BOS, EOS, UNK, *words))

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, caption: str, max_tokens: int) -> list[int]:
        """Caption -> word ids (at most ``max_tokens``, then ``<eos>``)."""
        unk = self.index[UNK]
        ids = [self.index.get(w, unk) for w in simple_tokenize(caption).split()]
        return [*ids[:max_tokens], self.index[EOS]]

    def decode(self, ids: Sequence[int]) -> str:
        """Word ids -> caption, stopping at the first ``<eos>``; special tokens dropped."""
        words = []
        for i in ids:
            if i == self.index[EOS]:
                break
            if i >= 4:
                words.append(self.tokens[i])
        return " ".join(words)


# ---------------------------------------------------------------------------- network
class _PrefixDecoder(nn.Module):
    """Linear prefix + causal transformer + tied-free output head."""

    def __init__(self, embedding_dim: int, vocab_size: int, cfg: CaptionDecoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.prefix = nn.Linear(embedding_dim, cfg.prefix_length * cfg.d_model)
        self.token_embedding = nn.Embedding(vocab_size, cfg.d_model)
        self.position = nn.Parameter(
            torch.zeros(cfg.prefix_length + cfg.max_tokens + 1, cfg.d_model)
        )
        nn.init.normal_(self.position, std=0.02)
        layer = nn.TransformerEncoderLayer(
            cfg.d_model,
            cfg.n_heads,
            dim_feedforward=cfg.ff_mult * cfg.d_model,
            dropout=cfg.dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(
            layer, cfg.n_layers, norm=nn.LayerNorm(cfg.d_model), enable_nested_tensor=False
        )
        self.head = nn.Linear(cfg.d_model, vocab_size)

    def forward(self, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """embeddings (B, D) unit rows, tokens (B, L) starting with <bos> -> logits (B, L, V)."""
        batch, length = tokens.shape
        k = self.cfg.prefix_length
        prefix = self.prefix(embeddings).view(batch, k, self.cfg.d_model)  # (B, k, d)
        x = torch.cat([prefix, self.token_embedding(tokens)], dim=1)  # (B, k + L, d)
        x = x + self.position[: k + length]
        mask = nn.Transformer.generate_square_subsequent_mask(k + length, device=x.device)
        x = self.blocks(x, mask=mask, is_causal=True)
        return self.head(x[:, k:])  # (B, L, V): position j predicts token j + 1


def _normalize(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)


# ---------------------------------------------------------------------------- decoder
class TextDecoder:
    """A trained caption decoder: network, vocabulary, settings and training record.

    Attributes:
        network: the PyTorch module.
        vocab: its :class:`Vocabulary`.
        config: the :class:`CaptionDecoderConfig` it was trained with.
        embedding_dim: D of the embeddings it reads.
        loss_history: training loss (mean token cross-entropy, nats; label-smoothed when
            ``config.label_smoothing`` > 0) of every step.
        seed: training seed.
        steps: optimiser steps it was trained for (``config.steps``, or what
            ``config.epochs`` resolved to on its training captions).
    """

    def __init__(
        self,
        network: _PrefixDecoder,
        vocab: Vocabulary,
        config: CaptionDecoderConfig,
        embedding_dim: int,
        loss_history: Sequence[float] = (),
        seed: int | None = None,
        steps: int | None = None,
    ) -> None:
        self.network, self.vocab, self.config = network, vocab, config
        self.embedding_dim = int(embedding_dim)
        self.loss_history = [float(v) for v in loss_history]
        self.seed = seed
        self.steps = int(steps) if steps is not None else len(self.loss_history)

    def __repr__(self) -> str:
        return (
            f"TextDecoder(D={self.embedding_dim}, vocab={len(self.vocab)}, "
            f"steps={self.steps}, config={self.config})"
        )

    def _inputs(self, embeddings: np.ndarray | torch.Tensor) -> torch.Tensor:
        device = next(self.network.parameters()).device
        x = torch.as_tensor(np.asarray(embeddings), dtype=torch.float32, device=device)
        if x.ndim != 2 or x.shape[1] != self.embedding_dim:
            raise CaptioningError(
                f"the decoder reads (M, {self.embedding_dim}) embeddings; got {tuple(x.shape)}. "
                "Use embeddings from the model (and space) the decoder was trained on."
            )
        return _normalize(x)

    @torch.no_grad()
    def generate(
        self, embeddings: np.ndarray, max_len: int = 20, batch_size: int = 256
    ) -> list[str]:
        """Greedy captions of (M, D) embeddings (L2-normalised here) -> M strings.

        Captions have at most ``min(max_len, config.max_tokens)`` words (the decoder has
        positions for ``max_tokens`` only).
        """
        if max_len < 1:
            raise CaptioningError(f"max_len must be >= 1 word, got {max_len}.")
        max_len = min(max_len, self.config.max_tokens)
        inputs = self._inputs(embeddings)
        was_training = self.network.training
        self.network.eval()
        banned = torch.tensor([self.vocab.index[t] for t in (PAD, BOS, UNK)], device=inputs.device)
        eos = self.vocab.index[EOS]
        captions: list[str] = []
        for start in range(0, inputs.shape[0], batch_size):
            block = inputs[start : start + batch_size]
            tokens = torch.full((block.shape[0], 1), self.vocab.index[BOS], device=block.device)
            done = torch.zeros(block.shape[0], dtype=torch.bool, device=block.device)
            for step in range(max_len):
                logits = self.network(block, tokens)[:, -1]  # (B, V)
                logits[:, banned] = -torch.inf
                if step == 0:
                    logits[:, eos] = -torch.inf
                next_token = logits.argmax(dim=-1).masked_fill(done, eos)
                tokens = torch.cat([tokens, next_token[:, None]], dim=1)
                done |= next_token == eos
                if done.all():
                    break
            captions += [self.vocab.decode(row[1:].tolist()) for row in tokens.cpu()]
        self.network.train(was_training)
        return captions

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write settings, vocabulary, weights and loss history atomically (tmp + rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "format": _FORMAT,
            "config": dataclasses.asdict(self.config),
            "embedding_dim": self.embedding_dim,
            "vocab": list(self.vocab.tokens),
            "state_dict": {k: v.cpu() for k, v in self.network.state_dict().items()},
            "loss_history": self.loss_history,
            "seed": self.seed,
            "steps": self.steps,
        }
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], map_location: str = "cpu") -> TextDecoder:
        """Read a file written by :meth:`save`."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(
                f"No caption decoder at {path}; train one with train_text_decoder(...).save()."
            )
        state = torch.load(path, map_location=map_location, weights_only=True)
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise CaptioningError(f"{path} is not a caption decoder file written by TextDecoder.")
        config = CaptionDecoderConfig(**state["config"])
        vocab = Vocabulary(tuple(state["vocab"]))
        network = _PrefixDecoder(state["embedding_dim"], len(vocab), config)
        network.load_state_dict(state["state_dict"])
        network.eval()
        return cls(
            network,
            vocab,
            config,
            state["embedding_dim"],
            state["loss_history"],
            state["seed"],
            state.get("steps"),  # files of older versions: len(loss_history)
        )


# ---------------------------------------------------------------------------- training
def _batch_tokens(ids: list[list[int]], bos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Word-id lists (each ending in <eos>) -> inputs [<bos>, w..] and targets [w.., <eos>].

    Both (B, L) with L the longest list; padding is id 0 in inputs and -100 (ignored) in
    targets.
    """
    length = max(len(x) for x in ids)
    inputs = torch.zeros(len(ids), length, dtype=torch.long)
    targets = torch.full((len(ids), length), -100, dtype=torch.long)
    for row, seq in enumerate(ids):
        inputs[row, : len(seq)] = torch.tensor([bos, *seq[:-1]])
        targets[row, : len(seq)] = torch.tensor(seq)
    return inputs, targets


def _lr_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _rng_devices(device: torch.device) -> list[int]:
    """CUDA devices whose generator :func:`train_text_decoder` seeds (and restores after)."""
    if device.type != "cuda":
        return []
    return [device.index if device.index is not None else torch.cuda.current_device()]


def train_text_decoder(
    text_embeddings: np.ndarray,
    captions: Sequence[str],
    cfg: CaptionDecoderConfig | None = None,
    seed: int = 0,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> TextDecoder:
    """Train a caption decoder on text only: embedding of caption ``i`` -> caption ``i``.

    Args:
        text_embeddings: (N, D) embeddings of the captions (row ``i`` encodes ``captions[i]``).
        captions: the N caption strings.
        cfg: settings (default :class:`CaptionDecoderConfig`()); with ``cfg.epochs`` set it
            trains ``ceil(epochs * N / batch_size)`` steps (:meth:`~CaptionDecoderConfig.
            resolved_steps`).
        seed: seeds initialisation, batch order, noise and dropout (global RNGs untouched,
            the CUDA one of ``device`` included).
        progress: show a tqdm bar.
        device: where to train (``"cpu"`` or e.g. ``"cuda"``); the decoder stays there, so
            :meth:`TextDecoder.generate` runs there too.

    Returns:
        the trained :class:`TextDecoder` (in eval mode, with ``loss_history`` and ``steps``).
    """
    cfg = cfg or CaptionDecoderConfig()
    device = torch.device(device)
    embeddings = np.asarray(text_embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(captions):
        raise CaptioningError(
            f"text_embeddings {embeddings.shape} must be (N, D) with one row per caption "
            f"({len(captions)} captions)."
        )
    if len(captions) == 0:
        raise CaptioningError("No training captions: give the captions of the training split.")
    vocab = Vocabulary.build(captions, cfg.min_count)
    if len(vocab) == 4:
        raise CaptioningError(
            f"No word occurs {cfg.min_count} time(s) in the training captions; lower "
            "min_count or give more captions."
        )
    encoded = [vocab.encode(c, cfg.max_tokens) for c in captions]
    if all(len(x) == 1 for x in encoded):
        raise CaptioningError("Every training caption is empty after tokenisation.")
    steps = cfg.resolved_steps(len(captions))
    rng = np.random.default_rng(seed)
    with torch.random.fork_rng(devices=_rng_devices(device)):
        torch.manual_seed(seed)
        network = _PrefixDecoder(embeddings.shape[1], len(vocab), cfg).to(device)
        optimizer = torch.optim.AdamW(
            network.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: _lr_factor(s, cfg.warmup_steps, steps)
        )
        all_inputs = torch.from_numpy(embeddings).to(device)
        network.train()
        losses = torch.empty(steps, device=device)  # read back once: no sync per step on CUDA
        order = np.empty(0, dtype=np.int64)
        bar = tqdm(range(steps), desc="caption decoder", disable=not progress, leave=False)
        for step in bar:
            if order.size < cfg.batch_size:  # next epoch: fresh permutation
                order = np.concatenate([order, rng.permutation(len(captions))])
            batch, order = order[: cfg.batch_size], order[cfg.batch_size :]
            inputs, targets = _batch_tokens([encoded[i] for i in batch], vocab.index[BOS])
            x = _normalize(all_inputs[torch.from_numpy(batch).to(device)])
            if cfg.noise_std > 0:
                x = _normalize(x + cfg.noise_std * torch.randn_like(x))
            logits = network(x, inputs.to(device))  # (B, L, V)
            loss = nn.functional.cross_entropy(
                logits.reshape(-1, len(vocab)),
                targets.to(device).reshape(-1),
                ignore_index=-100,
                label_smoothing=cfg.label_smoothing,
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                nn.utils.clip_grad_norm_(network.parameters(), cfg.grad_clip)
            optimizer.step()
            schedule.step()
            losses[step] = loss.detach()
            if progress and step % 20 == 0:
                bar.set_postfix(loss=f"{float(losses[step]):.3f}")
        bar.close()
        history = losses.tolist()
    network.eval()
    return TextDecoder(network, vocab, cfg, embeddings.shape[1], history, seed, steps)


# ---------------------------------------------------------------------------- evaluation
def caption_images(
    decoder: TextDecoder,
    emb: Embeddings,
    captions: Sequence[Sequence[str]],
    max_len: int = 20,
) -> tuple[dict[int, str], dict[int, list[str]]]:
    """Caption every image of ``emb`` that has references.

    Args:
        decoder: a trained :class:`TextDecoder`.
        emb: the (possibly post-hoc fixed) embeddings; their images are captioned.
        captions: ``captions[i]`` = reference captions of image ``i`` (same order as
            ``emb.image``); images with none are skipped.
        max_len: longest generated caption, in words.

    Returns:
        (candidates ``{image index: caption}``, references ``{image index: [captions]}``).
    """
    if len(captions) != emb.n_images:
        raise CaptioningError(
            f"{len(captions)} reference lists for {emb.n_images} images: give captions[i] for "
            "every image i of emb, in the same order."
        )
    index = [i for i, refs in enumerate(captions) if len(refs) > 0]
    if not index:
        raise CaptioningError("No image has reference captions; nothing to score.")
    generated = decoder.generate(emb.image[index], max_len=max_len)
    return dict(zip(index, generated, strict=True)), {i: list(captions[i]) for i in index}


def captioning_scores(
    decoder: TextDecoder,
    emb: Embeddings,
    captions: Sequence[Sequence[str]],
    metrics: Sequence[str] = ("CIDEr", "BLEU-4", "ROUGE-L"),
    meteor: bool = False,
    max_len: int = 20,
) -> dict[str, float]:
    """Caption the images of ``emb`` and score them against their references."""
    candidates, references = caption_images(decoder, emb, captions, max_len)
    return score_captions(candidates, references, metrics=metrics, meteor=meteor)


def captioning_rows(
    decoder: TextDecoder,
    emb: Embeddings,
    captions: Sequence[Sequence[str]],
    metrics: Sequence[str] = ("CIDEr", "BLEU-4", "ROUGE-L"),
    meteor: bool = False,
    max_len: int = 20,
) -> list[dict[str, Any]]:
    """Rows (task ``"captioning"``): one per metric, with ``n_images`` captioned."""
    candidates, references = caption_images(decoder, emb, captions, max_len)
    scores = score_captions(candidates, references, metrics=metrics, meteor=meteor)
    return [
        make_row(emb, "captioning", metric, value, n_images=len(candidates))
        for metric, value in scores.items()
    ]
