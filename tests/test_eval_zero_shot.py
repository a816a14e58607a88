"""Zero-shot classification against hand-built embeddings whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from tpccma_lib.embeddings import Embeddings
from tpccma_lib.evaluation.zero_shot import (
    ZeroShotError,
    class_text_embeddings,
    zero_shot_accuracy,
    zero_shot_predictions,
    zero_shot_rows,
)


def _fake_encoder(dim: int = 6, seed: int = 0):
    """Deterministic 'text encoder': every distinct string gets its own random vector."""
    rng = np.random.default_rng(seed)
    table: dict[str, np.ndarray] = {}
    calls: list[list[str]] = []

    def encode(texts: list[str]) -> np.ndarray:
        calls.append(list(texts))
        for text in texts:
            if text not in table:
                table[text] = rng.normal(size=dim) * rng.uniform(0.5, 3.0)  # any norm
        return np.stack([table[t] for t in texts])

    return encode, table, calls


def test_prompt_ensemble_matches_a_by_hand_loop() -> None:
    encode, table, _ = _fake_encoder()
    names = ["circle", "square", "star"]
    templates = ["a photo of a {}.", "a drawing of a {}", lambda n: f"{n}!"]
    got = class_text_embeddings(encode, names, templates)
    assert got.shape == (3, 6)
    for row, name in zip(got, names, strict=True):
        prompts = [f"a photo of a {name}.", f"a drawing of a {name}", f"{name}!"]
        unit = [table[p] / np.linalg.norm(table[p]) for p in prompts]
        mean = np.sum(unit, axis=0) / len(unit)
        np.testing.assert_allclose(row, mean / np.linalg.norm(mean), atol=1e-6)


def test_prompt_ensemble_accepts_named_placeholder_and_checks_inputs() -> None:
    encode, table, _ = _fake_encoder()
    got = class_text_embeddings(encode, ["cat"], ["a {c}"])
    np.testing.assert_allclose(got[0], table["a cat"] / np.linalg.norm(table["a cat"]), atol=1e-6)
    with pytest.raises(ZeroShotError, match="placeholder"):
        class_text_embeddings(encode, ["cat"], ["a photo"])
    with pytest.raises(ZeroShotError, match="empty"):
        class_text_embeddings(encode, [], ["a {}"])
    with pytest.raises(ZeroShotError, match="one row per prompt"):
        class_text_embeddings(lambda texts: np.zeros((1, 4)), ["a", "b"], ["{}"])


def _known_case() -> tuple[Embeddings, np.ndarray, np.ndarray]:
    """3 classes = basis vectors e0, e1, e2 in R^5; images point at a chosen class.

    Labels  0 0 0 0 | 1 1 1 1 | 2 2 2 2 | -1 -1
    Points  0 0 0 1 | 1 1 1 2 | 2 2 2 2 |  0  1     (image 3 and 7 are wrong)
    """
    rng = np.random.default_rng(3)
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, -1, -1])
    target = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 2, 0, 1])
    class_embeddings = np.eye(3, 5) * np.array([[1.0], [4.0], [0.3]])  # norms must not matter
    images = np.eye(5)[target] + 0.05 * rng.normal(size=(14, 5))
    emb = Embeddings.from_arrays(
        images,
        rng.normal(size=(14, 5)),
        image_labels=labels,
        class_names=("circle", "square", "star"),
        meta={"dataset": "toy", "split": "test", "model": "m", "seed": 7},
    )
    return emb, class_embeddings, target


def test_accuracy_on_constructed_embeddings() -> None:
    emb, class_embeddings, target = _known_case()
    result = zero_shot_accuracy(emb, class_embeddings)
    assert result["accuracy"] == pytest.approx(10 / 12)
    assert result["per_class_accuracy"] == pytest.approx(
        {"circle": 3 / 4, "square": 3 / 4, "star": 1.0}
    )
    assert result["balanced_accuracy"] == pytest.approx((0.75 + 0.75 + 1.0) / 3)
    assert result["n_images"] == 12
    assert result["n_classes"] == 3
    assert result["chance"] == pytest.approx(1 / 3)
    np.testing.assert_array_equal(zero_shot_predictions(emb, class_embeddings), target)


def test_predictions_match_brute_force_cosine(rng: np.random.Generator) -> None:
    images = rng.normal(size=(40, 8))
    classes = rng.normal(size=(5, 8)) * rng.uniform(0.1, 5.0, size=(5, 1))
    emb = Embeddings.from_arrays(images, images, image_labels=rng.integers(0, 5, size=40))
    expected = []
    for x in emb.image.astype(np.float64):
        cosines = [x @ w / (np.linalg.norm(x) * np.linalg.norm(w)) for w in classes]
        expected.append(int(np.argmax(cosines)))
    got = zero_shot_predictions(emb, classes)
    np.testing.assert_array_equal(got, expected)
    accuracy = np.mean(np.array(expected) == emb.image_labels)
    assert zero_shot_accuracy(emb, classes)["accuracy"] == pytest.approx(accuracy)


def test_errors_say_what_is_wrong() -> None:
    emb, class_embeddings, _ = _known_case()
    with pytest.raises(ZeroShotError, match="No labelled images"):
        zero_shot_accuracy(emb.replace(image_labels=-np.ones(14, dtype=int)), class_embeddings)
    with pytest.raises(ZeroShotError, match="class names"):
        zero_shot_accuracy(emb, np.eye(4, 5))
    with pytest.raises(ZeroShotError, match="dimension"):
        zero_shot_accuracy(emb, np.eye(3, 4))
    with pytest.raises(ZeroShotError, match="no class embedding"):
        zero_shot_accuracy(emb.replace(class_names=()), np.eye(2, 5))


def test_rows_carry_provenance() -> None:
    emb, class_embeddings, _ = _known_case()
    rows = zero_shot_rows(emb, class_embeddings, per_class=True)
    by_metric = {r["metric"]: r for r in rows if r["metric"] != "class_accuracy"}
    assert set(by_metric) == {"accuracy", "balanced_accuracy", "chance"}
    assert by_metric["accuracy"]["value"] == pytest.approx(10 / 12)
    row = by_metric["accuracy"]
    assert (row["dataset"], row["split"], row["model"], row["seed"]) == ("toy", "test", "m", 7)
    assert row["checkpoint"] is None and row["posthoc"] is None
    assert row["task"] == "zero_shot"
    per_class = {r["class_name"]: r["value"] for r in rows if r["metric"] == "class_accuracy"}
    assert per_class == pytest.approx({"circle": 0.75, "square": 0.75, "star": 1.0})
