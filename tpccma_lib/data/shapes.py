"""The captioned shapes world: a deterministic, offline stand-in for COCO + CIFAR-10.

Each image shows 1-3 objects of one shape class (the image's label) on a 3x3 grid, each
object with its own colour, size and grid cell, on a tinted, mildly noisy background.
Each image comes with five COCO-like reference captions (8-15 words) that always name
the shape (or a synonym) but mention only a random subset of colour, size, position,
count and background, so that, as in COCO, a caption says less than the image shows.

Determinism: image ``i`` of split ``s`` is drawn from
``np.random.default_rng([seed, SPLIT_IDS[s], i])``: the same seed gives the same bytes,
a split of ``n`` images is a prefix of any longer one, and the splits differ.
The scene and captions are drawn before the pixel noise, so they do not depend on
``image_size``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageDraw

from tpccma_lib.data.base import CaptionedImageSet, DataSetError

__all__ = [
    "BACKGROUNDS",
    "COLOURS",
    "SHAPE_CLASSES",
    "SHAPE_PROMPT_TEMPLATES",
    "SHAPE_SYNONYMS",
    "SIZES",
    "SPLIT_IDS",
    "Scene",
    "ShapeObject",
    "describe_scene",
    "make_captioned_shapes",
    "render_scene",
    "render_single_shape",
    "sample_scene",
]

SHAPE_CLASSES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "star",
    "hexagon",
    "pentagon",
    "diamond",
    "cross",
    "heart",
    "crescent",
    "arrow",
    "ring",
)

# (singular, plural) names a caption may use for each class; the class name comes first.
SHAPE_SYNONYMS: dict[str, tuple[tuple[str, str], ...]] = {
    "circle": (("circle", "circles"), ("round disc", "round discs"), ("disc", "discs")),
    "square": (("square", "squares"), ("square block", "square blocks")),
    "triangle": (("triangle", "triangles"), ("triangular shape", "triangular shapes")),
    "star": (("star", "stars"), ("five-pointed star", "five-pointed stars")),
    "hexagon": (("hexagon", "hexagons"), ("six-sided shape", "six-sided shapes")),
    "pentagon": (("pentagon", "pentagons"), ("five-sided shape", "five-sided shapes")),
    "diamond": (("diamond", "diamonds"), ("rhombus", "rhombuses"), ("lozenge", "lozenges")),
    "cross": (("cross", "crosses"), ("plus sign", "plus signs")),
    "heart": (("heart", "hearts"), ("heart shape", "heart shapes"), ("love heart", "love hearts")),
    "crescent": (("crescent", "crescents"), ("crescent moon", "crescent moons")),
    "arrow": (("arrow", "arrows"), ("right-pointing arrow", "right-pointing arrows")),
    "ring": (("ring", "rings"), ("hoop", "hoops"), ("ring shape", "ring shapes")),
}

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 215, 30),
    "green": (40, 170, 60),
    "blue": (40, 90, 225),
    "purple": (140, 60, 190),
    "pink": (245, 120, 190),
    "brown": (140, 85, 40),
}
_COLOUR_WORDS: dict[str, tuple[str, ...]] = {"purple": ("purple", "violet")}

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "white": (245, 245, 245),
    "light grey": (195, 195, 195),
    "dark grey": (70, 70, 70),
    "black": (15, 15, 15),
    "pale blue": (205, 225, 245),
}
_BACKGROUND_WORDS: dict[str, tuple[str, ...]] = {
    "white": ("white", "plain white"),
    "light grey": ("light grey", "pale grey"),
    "dark grey": ("dark grey", "charcoal"),
    "black": ("black",),
    "pale blue": ("pale blue", "light blue"),
}

SIZES: tuple[str, ...] = ("small", "medium", "large")
_SIZE_WORDS: dict[str, tuple[str, ...]] = {
    "small": ("small", "little"),
    "medium": ("medium-sized", "mid-sized"),
    "large": ("large", "big"),
}
_SIZE_RADIUS = {"small": 0.5, "medium": 0.7, "large": 0.92}  # fraction of half a grid cell

SPLIT_IDS: dict[str, int] = {"train": 0, "val": 1, "test": 2}

SHAPE_PROMPT_TEMPLATES: tuple[str, ...] = (
    "a picture of the {}.",
    "a drawing of {} shapes.",
    "an image of the {} shape.",
    "a simple {} shape on a plain background.",
    "a rendering of the {}.",
    "one or more {} shapes.",
    "a small picture of a coloured {}.",
)

_MIN_IMAGE_SIZE = 32
_SUPERSAMPLE = 4  # draw at 4x, then box-filter down: antialiased edges
_NOISE_STD = 3.0  # pixel noise, in uint8 grey levels
_TINT = 12  # +/- jitter of the background colour, per channel
_ROTATION_DEG = 8.0  # +/- rotation jitter of every object
_MIN_WORDS, _MAX_WORDS = 8, 15
#: What a caption names: "subset" (the default, COCO-like) or "all" (an ablation).
CAPTION_MODES = ("subset", "all")
_N_CAPTIONS = 5

# ---------------------------------------------------------------------------- geometry


def _regular_polygon(n_vertices: int, start_deg: float = -90.0) -> np.ndarray:
    angles = np.deg2rad(start_deg + 360.0 * np.arange(n_vertices) / n_vertices)
    return np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(points: int = 5, inner: float = 0.42) -> np.ndarray:
    outer = _regular_polygon(2 * points)
    radii = np.where(np.arange(2 * points) % 2 == 0, 1.0, inner)
    return outer * radii[:, None]


def _crescent(inner_offset: float = 0.45, inner_radius: float = 0.8, k: int = 48) -> np.ndarray:
    # Points of the unit disc outside a disc of radius r centred at (offset, 0); the two
    # circles cross at x = (1 - r^2 + offset^2) / (2 offset).
    x_cross = (1 - inner_radius**2 + inner_offset**2) / (2 * inner_offset)
    y_cross = math.sqrt(1 - x_cross**2)
    outer_start = math.atan2(y_cross, x_cross)
    inner_start = math.atan2(y_cross, x_cross - inner_offset)
    outer = np.linspace(outer_start, 2 * math.pi - outer_start, k)
    inner = np.linspace(2 * math.pi - inner_start, inner_start, k)
    outer_pts = np.stack([np.cos(outer), np.sin(outer)], axis=1)
    inner_pts = np.stack(
        [inner_offset + inner_radius * np.cos(inner), inner_radius * np.sin(inner)], axis=1
    )
    return np.concatenate([outer_pts, inner_pts])


def _heart(k: int = 64) -> np.ndarray:
    t = np.linspace(0, 2 * math.pi, k, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    points = np.stack([x, y], axis=1)
    return points


def _fit_unit_disc(points: np.ndarray) -> np.ndarray:
    """Centre the outline's bounding box on the origin and scale it into the unit disc."""
    points = np.asarray(points, dtype=np.float64)
    points = points - (points.max(axis=0) + points.min(axis=0)) / 2
    return points / np.linalg.norm(points, axis=1).max()


_RAW_OUTLINES: dict[str, np.ndarray] = {
    # x right, y down; scaled into the unit disc below
    "square": np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]),
    "triangle": _regular_polygon(3),
    "star": _star(),
    "hexagon": _regular_polygon(6, start_deg=0.0),
    "pentagon": _regular_polygon(5),
    "diamond": np.array([[0, -1], [0.62, 0], [0, 1], [-0.62, 0]]),
    "cross": np.array(
        [
            [-0.3, -1],
            [0.3, -1],
            [0.3, -0.3],
            [1, -0.3],
            [1, 0.3],
            [0.3, 0.3],
            [0.3, 1],
            [-0.3, 1],
            [-0.3, 0.3],
            [-1, 0.3],
            [-1, -0.3],
            [-0.3, -0.3],
        ]
    ),
    "heart": _heart(),
    "crescent": _crescent(),
    "arrow": np.array(
        [[-1, -0.25], [0.15, -0.25], [0.15, -0.65], [1, 0], [0.15, 0.65], [0.15, 0.25], [-1, 0.25]]
    ),
}
_OUTLINES = {shape: _fit_unit_disc(points) for shape, points in _RAW_OUTLINES.items()}
_RING_WIDTH = 0.32  # ring stroke, as a fraction of its radius


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    centre: tuple[float, float],
    radius: float,
    rotation_deg: float,
    colour: tuple[int, int, int],
) -> None:
    """Draw one filled shape of ``radius`` pixels (its circumscribed circle) at ``centre``."""
    cx, cy = centre
    if shape in ("circle", "ring"):
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        if shape == "circle":
            draw.ellipse(box, fill=colour)
        else:
            draw.ellipse(box, outline=colour, width=max(1, round(_RING_WIDTH * radius)))
        return
    angle = math.radians(rotation_deg)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    points = _OUTLINES[shape] @ rotation.T * radius + np.array([cx, cy])
    draw.polygon([tuple(p) for p in points.tolist()], fill=colour)


# ---------------------------------------------------------------------------- scenes


@dataclass(frozen=True)
class ShapeObject:
    """One object of a scene: colour and size names, grid cell, and placement jitter."""

    colour: str
    size: str
    row: int  # 0 top .. 2 bottom
    col: int  # 0 left .. 2 right
    offset_x: float = 0.0  # in [-1, 1], fraction of the free room in the cell
    offset_y: float = 0.0
    rotation_deg: float = 0.0


@dataclass(frozen=True)
class Scene:
    """What one image shows: one shape class, a background, and 1-3 objects."""

    shape: str
    background: str
    objects: tuple[ShapeObject, ...]
    background_tint: tuple[int, int, int] = (0, 0, 0)

    @property
    def background_rgb(self) -> tuple[int, int, int]:
        """The tinted background colour actually painted, before noise."""
        base = np.array(BACKGROUNDS[self.background]) + np.array(self.background_tint)
        return tuple(int(v) for v in np.clip(base, 0, 255))

    def record(self) -> dict:
        """A plain-dict description (JSON-friendly) for notebooks and tests."""
        return {
            "shape": self.shape,
            "label": SHAPE_CLASSES.index(self.shape),
            "background": self.background,
            "background_rgb": self.background_rgb,
            "count": len(self.objects),
            "objects": [asdict(obj) for obj in self.objects],
        }


def sample_scene(rng: np.random.Generator, shape: str) -> Scene:
    """Draw a random scene of ``shape``: 1-3 objects in distinct cells of the 3x3 grid."""
    n_objects = int(rng.integers(1, 4))
    cells = rng.choice(9, size=n_objects, replace=False)
    colours = rng.integers(len(COLOURS), size=n_objects)
    sizes = rng.integers(len(SIZES), size=n_objects)
    offsets = rng.uniform(-1.0, 1.0, size=(n_objects, 2))
    rotations = rng.uniform(-_ROTATION_DEG, _ROTATION_DEG, size=n_objects)
    colour_names, background_names = list(COLOURS), list(BACKGROUNDS)
    objects = tuple(
        ShapeObject(
            colour=colour_names[colours[k]],
            size=SIZES[sizes[k]],
            row=int(cells[k] // 3),
            col=int(cells[k] % 3),
            offset_x=float(offsets[k, 0]),
            offset_y=float(offsets[k, 1]),
            rotation_deg=float(rotations[k]),
        )
        for k in range(n_objects)
    )
    background = background_names[int(rng.integers(len(background_names)))]
    tint = tuple(int(t) for t in rng.integers(-_TINT, _TINT + 1, size=3))
    return Scene(shape=shape, background=background, objects=objects, background_tint=tint)


def render_scene(
    scene: Scene, image_size: int = 64, noise_rng: np.random.Generator | None = None
) -> np.ndarray:
    """Render a scene as an (image_size, image_size, 3) uint8 RGB array.

    Objects are drawn at 4x resolution and box-filtered down (antialiasing); then
    Gaussian pixel noise (std 3 grey levels) from ``noise_rng`` is added, if given.
    """
    canvas = image_size * _SUPERSAMPLE
    cell = canvas / 3
    image = Image.new("RGB", (canvas, canvas), scene.background_rgb)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        radius = _SIZE_RADIUS[obj.size] * cell / 2
        room = 0.9 * (cell / 2 - radius)
        centre = ((obj.col + 0.5) * cell + obj.offset_x * room, (obj.row + 0.5) * cell)
        centre = (centre[0], centre[1] + obj.offset_y * room)
        _draw_shape(draw, scene.shape, centre, radius, obj.rotation_deg, COLOURS[obj.colour])
    pixels = np.asarray(image.reduce(_SUPERSAMPLE), dtype=np.uint8)
    if noise_rng is None:
        return pixels.copy()
    noise = noise_rng.normal(0.0, _NOISE_STD, size=pixels.shape)
    return np.clip(pixels + noise, 0, 255).round().astype(np.uint8)


def render_single_shape(
    shape: str, image_size: int = 64, colour: str = "red", background: str = "white"
) -> np.ndarray:
    """One centred, noise-free shape filling most of the image (for galleries and checks)."""
    _check_image_size(image_size)
    if shape not in SHAPE_CLASSES:
        raise DataSetError(f"unknown shape {shape!r}; choose one of {SHAPE_CLASSES}.")
    canvas = image_size * _SUPERSAMPLE
    image = Image.new("RGB", (canvas, canvas), BACKGROUNDS[background])
    _draw_shape(
        ImageDraw.Draw(image), shape, (canvas / 2, canvas / 2), 0.42 * canvas, 0.0, COLOURS[colour]
    )
    return np.asarray(image.reduce(_SUPERSAMPLE), dtype=np.uint8).copy()


# ---------------------------------------------------------------------------- captions

_CELL_PHRASES: dict[tuple[int, int], tuple[str, ...]] = {
    (0, 0): ("in the upper left corner", "in the top left corner", "at the top left"),
    (0, 1): ("at the top centre", "near the top", "along the top edge"),
    (0, 2): ("in the upper right corner", "in the top right corner", "at the top right"),
    (1, 0): ("on the left side", "near the left edge", "at the middle left"),
    (1, 1): ("in the centre", "in the middle", "right in the middle"),
    (1, 2): ("on the right side", "near the right edge", "at the middle right"),
    (2, 0): ("in the lower left corner", "in the bottom left corner", "at the bottom left"),
    (2, 1): ("near the bottom", "at the bottom centre", "along the bottom edge"),
    (2, 2): ("in the lower right corner", "in the bottom right corner", "at the bottom right"),
}
_ROW_PHRASES = (
    ("along the top", "in a row along the top"),
    ("in a row across the middle", "in a line across the middle"),
    ("along the bottom", "in a row near the bottom"),
)
_COLUMN_PHRASES = (
    ("down the left side", "in a column on the left"),
    ("in a column down the middle", "in a vertical line through the middle"),
    ("down the right side", "in a column on the right"),
)
_SCATTERED_PHRASES = (
    "around the picture",
    "in different parts of the frame",
    "at various spots in the image",
    "here and there in the image",
)
_COUNT_WORDS = {
    1: ("a", "one", "a single"),
    2: ("two", "a pair of"),
    3: ("three", "a group of three"),
}
_NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
# Attributes beyond the shape, and how likely one caption is to mention each.
_MENTION_PROBABILITY = {
    "colour": 0.6,
    "size": 0.35,
    "position": 0.45,
    "count": 0.5,
    "background": 0.3,
}


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _with_article(words: str) -> str:
    """Prefix 'a' or 'an' (by the first letter of ``words``)."""
    return ("an " if words[:1].lower() in "aeiou" else "a ") + words


@dataclass(frozen=True)
class _Parts:
    """The phrases one caption is built from ('' where an attribute is not mentioned)."""

    noun_phrase: str  # always names the shape
    plural: bool
    position: str
    background: str  # an adjective such as "pale blue"

    @property
    def be(self) -> str:
        return "are" if self.plural else "is"


def _noun_phrase(scene: Scene, mention: set[str], rng: np.random.Generator) -> tuple[str, bool]:
    """Count + size + colour + shape noun, e.g. 'two small red stars'; returns (text, plural)."""
    singular, plural = SHAPE_SYNONYMS[scene.shape][
        int(rng.integers(len(SHAPE_SYNONYMS[scene.shape])))
    ]
    size_word = {s: _pick(rng, words) for s, words in _SIZE_WORDS.items()}
    colour_word = {c: _pick(rng, _COLOUR_WORDS.get(c, (c,))) for c in COLOURS}

    def adjectives(obj: ShapeObject, which: Sequence[str]) -> tuple[str, ...]:
        words = {"size": size_word[obj.size], "colour": colour_word[obj.colour]}
        return tuple(words[a] for a in ("size", "colour") if a in which)

    n = len(scene.objects)
    shown = [a for a in ("size", "colour") if a in mention]
    if n == 1:
        words = " ".join((*adjectives(scene.objects[0], shown), singular))
        if "count" in mention and rng.random() < 0.6:
            return f"{_pick(rng, _COUNT_WORDS[1][1:])} {words}", False
        return _with_article(words), False
    uniform = [a for a in shown if len({adjectives(o, (a,)) for o in scene.objects}) == 1]
    varying = [a for a in shown if a not in uniform]
    if varying and "count" in mention and rng.random() < 0.5:
        return _enumerate_groups(scene, shown, adjectives, singular, plural), True
    count = _pick(rng, _COUNT_WORDS[n]) if "count" in mention else _pick(rng, ("", "some"))
    head = " ".join(w for w in (count, *adjectives(scene.objects[0], uniform), plural) if w)
    if varying:
        kinds = {"size": "sizes", "colour": "colours"}
        head += f" {_pick(rng, ('of different', 'in various'))} " + " and ".join(
            kinds[a] for a in varying
        )
    return head, True


def _enumerate_groups(
    scene: Scene,
    shown: Sequence[str],
    adjectives: Callable[[ShapeObject, Sequence[str]], tuple[str, ...]],
    singular: str,
    plural: str,
) -> str:
    """'a small red star and two large blue stars': one phrase per group of equal objects."""
    groups: dict[tuple[str, ...], int] = {}
    for obj in scene.objects:
        key = adjectives(obj, shown)
        groups[key] = groups.get(key, 0) + 1
    phrases = [
        _with_article(" ".join((*key, singular)))
        if k == 1
        else " ".join((_NUMBER_WORDS[k], *key, plural))
        for key, k in groups.items()
    ]
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _position_phrase(scene: Scene, rng: np.random.Generator) -> str:
    rows = {obj.row for obj in scene.objects}
    cols = {obj.col for obj in scene.objects}
    if len(scene.objects) == 1:
        return _pick(rng, _CELL_PHRASES[(scene.objects[0].row, scene.objects[0].col)])
    if len(rows) == 1:
        return _pick(rng, _ROW_PHRASES[rows.pop()])
    if len(cols) == 1:
        return _pick(rng, _COLUMN_PHRASES[cols.pop()])
    return _pick(rng, _SCATTERED_PHRASES)


def _opt(text: str, template: str) -> str:
    """``template`` filled with ``text``, or '' when ``text`` is empty."""
    return template.format(text) if text else ""


# Sentence structures: each turns the parts into one caption (fragments joined by spaces).
_STRUCTURES: tuple[Callable[[_Parts, np.random.Generator], list[str]], ...] = (
    lambda p, r: [p.noun_phrase, p.position, _opt(p.background, "on a {} background")],
    lambda p, r: ["there", p.be, p.noun_phrase, p.position,
                  _opt(p.background, "against a {} backdrop")],
    lambda p, r: [_pick(r, ("a simple", "a plain", "a clean")),
                  _pick(r, ("picture", "drawing", "illustration")),
                  _pick(r, ("of", "showing", "with")), p.noun_phrase, p.position,
                  _opt(p.background, "on {}")],
    lambda p, r: [p.noun_phrase, p.be,
                  _pick(r, ("drawn", "placed", "shown") if p.position else ("drawn", "shown")),
                  p.position,
                  _opt(p.background, "on a {} background")],
    lambda p, r: ["this", _pick(r, ("image", "picture")), _pick(r, ("shows", "contains")),
                  p.noun_phrase, p.position, _opt(p.background, "against a {} backdrop")],
    lambda p, r: [_opt(p.background, "on a {} background,"), p.noun_phrase,
                  _pick(r, ("can be seen", "are visible" if p.plural else "is visible")),
                  p.position],
    lambda p, r: [_with_article(p.background) + " background" if p.background
                  else _pick(r, ("an otherwise empty canvas", "a plain backdrop")),
                  "with", p.noun_phrase, p.position],
    lambda p, r: [_pick(r, ("close-up of", "a close view of")), p.noun_phrase, p.position,
                  _opt(p.background, "on {}")],
    lambda p, r: [p.noun_phrase, p.position + ("," if p.position else ""),
                  _pick(r, ("with nothing else around", "and nothing else in view"))],
    lambda p, r: ["an", _pick(r, ("image", "illustration")), "of", p.noun_phrase,
                  _opt(p.position, "sitting {}"), _opt(p.background, "over a {} background")],
)  # fmt: skip


def _names_background(structure: Callable[[_Parts, np.random.Generator], list[str]]) -> bool:
    """Whether ``structure`` puts the background phrase into its sentence (one omits it)."""
    marker = "\x00background"
    parts = _Parts(noun_phrase="a star", plural=False, position="here", background=marker)
    return any(marker in f for f in structure(parts, np.random.default_rng(0)))


#: The structures that say every part they are given (the ``mention_all`` ablation uses these).
_STRUCTURES_NAMING_ALL = tuple(s for s in _STRUCTURES if _names_background(s))


def _sentence(fragments: Sequence[str]) -> str:
    text = " ".join(f for f in fragments if f).strip().rstrip(",")
    return text[:1].upper() + text[1:] + "."


def _fallback_caption(scene: Scene, variant: int) -> str:
    n = len(scene.objects)
    singular, plural = SHAPE_SYNONYMS[scene.shape][0]
    noun = f"a single {singular}" if n == 1 else f"{_NUMBER_WORDS[n]} {plural}"
    place = (
        "in this simple picture",
        "in this plain image",
        "shown in this small drawing",
        "drawn in this simple image",
        "visible in this simple picture",
    )
    return _sentence(["there", "is" if n == 1 else "are", noun, place[variant % len(place)]])


def describe_scene(
    scene: Scene,
    rng: np.random.Generator,
    n_captions: int = _N_CAPTIONS,
    *,
    mention_all: bool = False,
) -> list[str]:
    """``n_captions`` distinct COCO-like captions of 8-15 words for ``scene``.

    Every caption names the shape (or a synonym from :data:`SHAPE_SYNONYMS`); each other
    attribute (colour, size, position, count, background) is mentioned at random, so a
    caption describes only part of the image. ``mention_all=True`` (the information-imbalance
    ablation) names every attribute in every caption, in up to 30 words.
    """
    max_words = 30 if mention_all else _MAX_WORDS
    captions: list[str] = []
    attempts = 0
    while len(captions) < n_captions:
        attempts += 1
        if attempts > 40 * n_captions:
            caption = next(
                c
                for v in range(2 * _N_CAPTIONS)
                if (c := _fallback_caption(scene, v)) not in captions
            )
            captions.append(caption)
            continue
        mention = {a for a, p in _MENTION_PROBABILITY.items() if rng.random() < p or mention_all}
        noun_phrase, plural = _noun_phrase(scene, mention, rng)
        parts = _Parts(
            noun_phrase=noun_phrase,
            plural=plural,
            position=_position_phrase(scene, rng) if "position" in mention else "",
            background=_pick(rng, _BACKGROUND_WORDS[scene.background])
            if "background" in mention
            else "",
        )
        structures = _STRUCTURES_NAMING_ALL if mention_all else _STRUCTURES
        structure = structures[int(rng.integers(len(structures)))]
        caption = _sentence(structure(parts, rng))
        if _MIN_WORDS <= len(caption.split()) <= max_words and caption not in captions:
            captions.append(caption)
    return captions


# ---------------------------------------------------------------------------- data set


def _check_image_size(image_size: int) -> None:
    if not isinstance(image_size, int | np.integer) or image_size < _MIN_IMAGE_SIZE:
        raise DataSetError(
            f"image_size must be an integer >= {_MIN_IMAGE_SIZE} pixels (shapes become "
            f"unreadable below that), got {image_size!r}."
        )


def make_captioned_shapes(
    split: str, n: int, image_size: int = 64, seed: int = 0, captions: str = "subset"
) -> CaptionedImageSet:
    """Render ``n`` captioned shape images of ``split`` ("train", "val" or "test").

    Args:
        split: which split; each split draws from its own random stream.
        n: number of images (> 0). The first ``n`` images are the same for any larger ``n``.
        image_size: side of the square images in pixels (>= 32).
        seed: master seed; image ``i`` uses ``np.random.default_rng([seed, split_id, i])``.
        captions: "subset" (each caption names the shape and a random subset of the other
            attributes, as COCO captions do) or "all" (every caption names every attribute;
            the images are the same bytes as with "subset").

    Returns:
        A :class:`CaptionedImageSet` with images (n, image_size, image_size, 3) uint8, five
        captions per image, labels = shape class (balanced: image ``i`` has class
        ``i % len(SHAPE_CLASSES)``), and one scene record per image in ``attributes``.
    """
    if split not in SPLIT_IDS:
        raise DataSetError(f"unknown split {split!r}; choose one of {tuple(SPLIT_IDS)}.")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n <= 0:
        raise DataSetError(f"n must be a positive integer number of images, got {n!r}.")
    _check_image_size(image_size)
    if captions not in CAPTION_MODES:
        raise DataSetError(f"captions must be one of {CAPTION_MODES}, got {captions!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DataSetError(f"seed must be a non-negative integer, got {seed!r}.")

    images = np.empty((n, image_size, image_size, 3), dtype=np.uint8)
    caption_lists: list[list[str]] = []
    records: list[dict] = []
    labels = np.arange(n, dtype=np.int64) % len(SHAPE_CLASSES)
    for i in range(n):
        rng = np.random.default_rng([int(seed), SPLIT_IDS[split], i])
        scene = sample_scene(rng, SHAPE_CLASSES[labels[i]])
        texts = describe_scene(scene, rng)  # advances rng identically in both modes
        if captions == "all":
            texts = describe_scene(
                scene, np.random.default_rng([int(seed), SPLIT_IDS[split], i, 1]), mention_all=True
            )
        caption_lists.append(texts)
        images[i] = render_scene(scene, image_size, noise_rng=rng)
        records.append(scene.record())
    return CaptionedImageSet(
        name="captioned-shapes",
        split=split,
        images=images,
        captions=caption_lists,
        labels=labels,
        class_names=SHAPE_CLASSES,
        prompt_templates=SHAPE_PROMPT_TEMPLATES,
        meta={
            "dataset": "captioned-shapes",
            "split": split,
            "seed": int(seed),
            "image_size": int(image_size),
            "stands_in_for": "COCO captions and CIFAR-10 (procedural, offline)",
        },
        attributes=records,
    )
