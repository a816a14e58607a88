"""Tests for the captioned shapes world and the CaptionedImageSet container."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from tpccma_lib.data import (
    BACKGROUNDS,
    COLOURS,
    SHAPE_CLASSES,
    SHAPE_PROMPT_TEMPLATES,
    SHAPE_SYNONYMS,
    CaptionedImageSet,
    DataSetError,
    make_captioned_shapes,
    render_single_shape,
)
from tpccma_lib.data.shapes import _BACKGROUND_WORDS, _CELL_PHRASES, _COLOUR_WORDS, _SIZE_WORDS


@pytest.fixture(scope="module")
def shapes200() -> CaptionedImageSet:
    return make_captioned_shapes("train", 200, image_size=32, seed=3)


def _has_phrase(text: str, phrase: str) -> bool:
    return re.search(rf"\b{re.escape(phrase)}\b", text.lower()) is not None


def _without_backgrounds(caption: str) -> str:
    text = caption.lower()
    for words in _BACKGROUND_WORDS.values():
        for word in sorted(words, key=len, reverse=True):
            text = re.sub(rf"\b{re.escape(word)}\b", " ", text)
    return text


# ------------------------------------------------------------------ determinism


def test_same_seed_gives_same_bytes_and_captions():
    first = make_captioned_shapes("val", 24, image_size=32, seed=7)
    second = make_captioned_shapes("val", 24, image_size=32, seed=7)
    assert first.images.tobytes() == second.images.tobytes()
    assert first.captions == second.captions
    assert first.attributes == second.attributes


def test_different_seeds_and_splits_differ():
    base = make_captioned_shapes("train", 12, image_size=32, seed=0)
    other_seed = make_captioned_shapes("train", 12, image_size=32, seed=1)
    other_split = make_captioned_shapes("test", 12, image_size=32, seed=0)
    for other in (other_seed, other_split):
        assert not np.array_equal(base.images, other.images)
        assert base.captions != other.captions
        # image by image, not just somewhere
        assert (
            sum(np.array_equal(a, b) for a, b in zip(base.images, other.images, strict=True)) == 0
        )


def test_prefix_stability():
    short = make_captioned_shapes("test", 7, image_size=40, seed=2)
    long = make_captioned_shapes("test", 30, image_size=40, seed=2)
    np.testing.assert_array_equal(short.images, long.images[:7])
    assert short.captions == long.captions[:7]
    np.testing.assert_array_equal(short.labels, long.labels[:7])
    assert short.attributes == long.attributes[:7]


def test_scene_and_captions_do_not_depend_on_image_size():
    small = make_captioned_shapes("train", 10, image_size=32, seed=5)
    large = make_captioned_shapes("train", 10, image_size=64, seed=5)
    assert small.captions == large.captions
    assert small.attributes == large.attributes


# ------------------------------------------------------------------ images


@pytest.mark.parametrize("image_size", [32, 48, 64])
def test_images_shape_and_dtype(image_size):
    data = make_captioned_shapes("train", 5, image_size=image_size)
    assert data.images.shape == (5, image_size, image_size, 3)
    assert data.images.dtype == np.uint8
    assert len(data) == 5
    assert data.name == "captioned-shapes" and data.split == "train"
    assert data.class_names == SHAPE_CLASSES


def test_objects_lie_in_their_cells_and_sizes_order():
    """Foreground pixels (far from the painted background) sit in the recorded cell."""
    data = make_captioned_shapes("val", 240, image_size=48, seed=11)
    cell = 48 / 3
    areas: dict[str, list[int]] = {"small": [], "medium": [], "large": []}
    n_single = 0
    for image, record in zip(data.images, data.attributes, strict=True):
        if record["count"] != 1:
            continue
        n_single += 1
        distance = np.abs(image.astype(int) - np.array(record["background_rgb"])).max(axis=2)
        mask = distance > 40  # noise std is 3 grey levels
        rows, cols = np.nonzero(mask)
        assert len(rows) > 0
        obj = record["objects"][0]
        assert obj["row"] * cell <= rows.mean() < (obj["row"] + 1) * cell
        assert obj["col"] * cell <= cols.mean() < (obj["col"] + 1) * cell
        # nothing is drawn outside the object's cell
        assert rows.min() >= obj["row"] * cell - 1 and rows.max() <= (obj["row"] + 1) * cell
        assert cols.min() >= obj["col"] * cell - 1 and cols.max() <= (obj["col"] + 1) * cell
        areas[obj["size"]].append(int(mask.sum()))
    assert n_single > 40
    assert np.mean(areas["small"]) < np.mean(areas["medium"]) < np.mean(areas["large"])


def test_background_noise_is_mild_but_present():
    data = make_captioned_shapes("train", 20, image_size=64, seed=0)
    for image, record in zip(data.images, data.attributes, strict=True):
        diff = image.astype(int) - np.array(record["background_rgb"])
        background = np.abs(diff).max(axis=2) <= 15
        assert background.mean() > 0.5  # most of the image is background
        spread = diff[background].std()
        assert 1.0 < spread < 6.0


def test_shape_classes_are_visually_distinct():
    """Pairwise IoU of the rendered class silhouettes stays well below 1."""
    white = np.array(BACKGROUNDS["white"])
    masks = {
        shape: np.abs(render_single_shape(shape, 64).astype(int) - white).max(axis=2) > 60
        for shape in SHAPE_CLASSES
    }
    assert len(SHAPE_CLASSES) >= 10
    for shape, mask in masks.items():
        assert 0.05 < mask.mean() < 0.7, shape
    for a, b in itertools.combinations(SHAPE_CLASSES, 2):
        iou = (masks[a] & masks[b]).sum() / (masks[a] | masks[b]).sum()
        assert iou < 0.85, (a, b, iou)


def test_rendering_is_antialiased():
    image = render_single_shape("star", 64, colour="blue", background="white").astype(int)
    red_channel = image[..., 0]  # blue (40, ..) on white (245, ..): edges fall in between
    intermediate = (red_channel > 60) & (red_channel < 225)
    assert intermediate.sum() > 20


# ------------------------------------------------------------------ scenes and labels


def test_labels_cover_all_classes_and_match_records(shapes200):
    counts = np.bincount(shapes200.labels, minlength=len(SHAPE_CLASSES))
    assert (counts > 0).all()
    assert counts.max() - counts.min() <= 1
    assert shapes200.labels.dtype == np.int64
    for label, record in zip(shapes200.labels, shapes200.attributes, strict=True):
        assert SHAPE_CLASSES[label] == record["shape"]
        assert record["label"] == label


def test_scene_attributes_are_valid(shapes200):
    counts = set()
    for record in shapes200.attributes:
        objects = record["objects"]
        counts.add(len(objects))
        assert record["count"] == len(objects)
        cells = [(o["row"], o["col"]) for o in objects]
        assert len(set(cells)) == len(cells), "objects must sit in distinct cells"
        for obj in objects:
            assert obj["colour"] in COLOURS
            assert obj["size"] in ("small", "medium", "large")
            assert 0 <= obj["row"] < 3 and 0 <= obj["col"] < 3
        assert record["background"] in BACKGROUNDS
    assert counts == {1, 2, 3}
    backgrounds = {r["background"] for r in shapes200.attributes}
    assert len(backgrounds) >= 4
    assert len(COLOURS) >= 8


# ------------------------------------------------------------------ captions


def test_five_captions_of_8_to_15_words(shapes200):
    for captions in shapes200.captions:
        assert len(captions) == 5
        assert len(set(captions)) == 5, captions
        for caption in captions:
            assert 8 <= len(caption.split()) <= 15, caption
            assert caption[0].isupper() and caption.endswith(".")


def test_captions_name_their_shape_and_no_other(shapes200):
    for label, captions in zip(shapes200.labels, shapes200.captions, strict=True):
        own = SHAPE_CLASSES[label]
        for caption in captions:
            assert any(_has_phrase(caption, n) for pair in SHAPE_SYNONYMS[own] for n in pair), (
                caption
            )
            for other in SHAPE_CLASSES:
                if other == own:
                    continue
                names = [n for pair in SHAPE_SYNONYMS[other] for n in pair]
                assert not any(_has_phrase(caption, n) for n in names), (caption, other)


def test_captions_state_only_true_attributes(shapes200):
    colour_words = {w: c for c in COLOURS for w in _COLOUR_WORDS.get(c, (c,))}
    size_words = {w: s for s, words in _SIZE_WORDS.items() for w in words}
    for captions, record in zip(shapes200.captions, shapes200.attributes, strict=True):
        objects = record["objects"]
        n = len(objects)
        for caption in captions:
            text = _without_backgrounds(caption)
            for word, colour in colour_words.items():
                if _has_phrase(text, word):
                    assert colour in {o["colour"] for o in objects}, caption
            for word, size in size_words.items():
                if _has_phrase(text, word):
                    assert size in {o["size"] for o in objects}, caption
            for background, words in _BACKGROUND_WORDS.items():
                if any(_has_phrase(caption, w) for w in words):
                    assert background == record["background"], caption
            if _has_phrase(caption, "pair") or _has_phrase(caption, "two"):
                assert n >= 2, caption
            if _has_phrase(caption, "pair"):
                assert n == 2, caption
            if _has_phrase(caption, "three"):
                assert n == 3, caption
            if _has_phrase(caption, "single"):
                assert n == 1, caption
            if n == 1:
                cell = (objects[0]["row"], objects[0]["col"])
                for other_cell, phrases in _CELL_PHRASES.items():
                    if other_cell != cell:
                        assert not any(_has_phrase(caption, p) for p in phrases), caption


def test_captions_mention_subsets_of_attributes(shapes200):
    """Information imbalance: many captions omit colour, position or background."""
    all_captions = [c for cs in shapes200.captions for c in cs]
    colour_words = [w for c in COLOURS for w in _COLOUR_WORDS.get(c, (c,))]
    with_colour = sum(
        any(_has_phrase(_without_backgrounds(c), w) for w in colour_words) for c in all_captions
    )
    with_background = sum("background" in c or "backdrop" in c for c in all_captions)
    assert 0.2 < with_colour / len(all_captions) < 0.9
    assert 0.05 < with_background / len(all_captions) < 0.6


def test_captions_all_name_every_attribute_on_the_same_images(shapes200):
    """The information-imbalance ablation: same image bytes and labels, and every caption names
    the colour of an object and the background (which "subset" captions often omit)."""
    full = make_captioned_shapes("train", 200, image_size=32, seed=3, captions="all")
    np.testing.assert_array_equal(full.images, shapes200.images)
    np.testing.assert_array_equal(full.labels, shapes200.labels)
    colour_words = [w for c in COLOURS for w in _COLOUR_WORDS.get(c, (c,))]
    for captions, record in zip(full.captions, full.attributes, strict=True):
        backgrounds = _BACKGROUND_WORDS[record["background"]]
        for c in captions:
            assert any(b in c for b in backgrounds), c
            named = [*colour_words, "colours"]  # several objects: "of different colours"
            assert any(_has_phrase(_without_backgrounds(c), w) for w in named), c


def test_captions_vary_in_structure(shapes200):
    all_captions = [c for cs in shapes200.captions for c in cs]
    assert len(set(all_captions)) > 0.95 * len(all_captions)
    openings = {" ".join(c.lower().split()[:2]) for c in all_captions}
    assert len(openings) >= 15
    markers = ["there is", "there are", "this image", "this picture", "close-up", "background with",
               "can be seen", "nothing else", "an image of", "a simple", "is shown", "are drawn"]  # fmt: skip
    used = {m for m in markers if any(m in c.lower() for c in all_captions)}
    assert len(used) >= 8, used


def test_prompt_templates_read_well_for_every_class():
    assert len(SHAPE_PROMPT_TEMPLATES) >= 5
    for template in SHAPE_PROMPT_TEMPLATES:
        assert template.count("{}") == 1
        for shape in SHAPE_CLASSES:
            prompt = template.format(shape)
            assert not re.search(r"\ba [aeiou]", prompt), prompt
            assert not re.search(r"\ban [^aeiou\s]", prompt), prompt


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"split": "training", "n": 3}, "choose one of"),
        ({"split": "train", "n": 0}, "positive"),
        ({"split": "train", "n": -5}, "positive"),
        ({"split": "train", "n": 2.5}, "positive"),
        ({"split": "train", "n": 3, "image_size": 16}, ">= 32"),
        ({"split": "train", "n": 3, "seed": -1}, "seed"),
        ({"split": "train", "n": 3, "captions": "some"}, "captions must be one of"),
    ],
)
def test_bad_inputs_raise_clear_errors(kwargs, fragment):
    with pytest.raises(DataSetError, match=re.escape(fragment)):
        make_captioned_shapes(**kwargs)
    assert issubclass(DataSetError, ValueError)


def test_render_single_shape_rejects_unknown_shape():
    with pytest.raises(DataSetError, match="unknown shape"):
        render_single_shape("blob")


# ------------------------------------------------------------------ container


def test_flat_captions_and_pairing(shapes200):
    texts, text_to_image = shapes200.flat_captions()
    assert len(texts) == 5 * len(shapes200)
    np.testing.assert_array_equal(text_to_image, np.repeat(np.arange(len(shapes200)), 5))
    for k in (0, 17, 999):
        assert texts[k] in shapes200.captions[text_to_image[k]]


def test_subset_is_the_prefix(shapes200):
    part = shapes200.subset(13)
    assert len(part) == 13
    np.testing.assert_array_equal(part.images, shapes200.images[:13])
    assert part.captions == shapes200.captions[:13]
    assert part.attributes == shapes200.attributes[:13]
    with pytest.raises(DataSetError, match="between 1 and"):
        shapes200.subset(0)
    with pytest.raises(DataSetError, match="between 1 and"):
        shapes200.subset(201)


def test_subset_of_a_plain_sequence():
    images = tuple(np.zeros((4, 4, 3), np.uint8) + k for k in range(3))
    data = CaptionedImageSet("toy", "test", images, [[], ["a"], []], np.array([-1, -1, -1]))
    part = data.subset(2)
    assert len(part) == 2 and part.images[1][0, 0, 0] == 1
    texts, text_to_image = data.flat_captions()
    assert texts == ["a"] and text_to_image.tolist() == [1]


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"captions": [["a"]]}, "caption lists"),
        ({"labels": np.array([0, 1])}, "shape (3,)"),
        ({"labels": np.array([0.0, 1.0, 0.0])}, "integer"),
        ({"labels": np.array([0, 5, 1])}, "outside"),
        ({"labels": np.array([0, -2, 1])}, "outside"),
        ({"prompt_templates": ("a photo",)}, "placeholder"),
        ({"attributes": [{}]}, "attribute records"),
        ({"captions": ["a", ["b"], ["c"]]}, "list of strings"),
        ({"images": np.zeros((0, 4, 4, 3), np.uint8), "captions": [], "labels": np.array([], int)},
         "no images"),
    ],
)  # fmt: skip
def test_container_validation(change, fragment):
    fields = {
        "name": "toy",
        "split": "test",
        "images": np.zeros((3, 4, 4, 3), np.uint8),
        "captions": [["x"], ["y"], []],
        "labels": np.array([0, 1, 0]),
        "class_names": ("zero", "one"),
        "prompt_templates": ("a {}.",),
    }
    with pytest.raises(DataSetError, match=re.escape(fragment)):
        CaptionedImageSet(**{**fields, **change})


def test_subset_of_a_sequence_that_cannot_slice():
    class Frames:
        def __len__(self) -> int:
            return 3

        def __getitem__(self, index: int) -> np.ndarray:
            if not isinstance(index, int):
                raise TypeError("integers only")
            return np.full((2, 2, 3), index, np.uint8)

    data = CaptionedImageSet("toy", "test", Frames(), [[], [], []], np.array([-1, -1, -1]))
    part = data.subset(2)
    assert len(part.images) == 2
    assert part.images[1][0, 0, 0] == 1 and part.images[-1][0, 0, 0] == 1
    with pytest.raises(IndexError):
        part.images[2]
