"""The built-in offline dataset: handwritten digits (A) versus font-rendered digits (B).

Domain A is scikit-learn's bundled `load_digits()` (1,797 handwritten 8x8 digits, 0..16),
upscaled with bicubic. Domain B is rendered from the font bundled with Pillow
(`ImageFont.load_default(size=...)`, FreeType) with per-image variations of size, stroke
width, rotation and position. Both are white digits on black (MNIST's convention), uint8,
`image_size` square, so the domains differ in style, not polarity. Nothing is downloaded.
Rendering is deterministic for a seed on a given Pillow/FreeType build.

For runs with more domains, `render_digits(name, split)` gives any of `RENDERINGS`:
'handwritten' (A), 'printed' (B), 'thick' (the handwritten digits with strokes thickened by a
3x3 maximum filter) and 'inverted' (the printed digits, black on white). All carry labels.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from unpaired.data.errors import DataError

HANDWRITTEN_TRAIN_COUNT = 1500  # of 1,797: the first 1,500 train, the remaining 297 test
PRINTED_COUNTS = {"train": 2000, "test": 400}
_SPLIT_CODES = {"train": 0, "test": 1}
_RENDER_CANVAS = 72  # render large, then fit down: smooth edges at any image_size
_FONT_SIZE = 44


@dataclasses.dataclass(frozen=True)
class DigitDomains:
    """Images (uint8 [N, S, S]) and labels (int64 [N]) of both domains for one split."""

    images_A: np.ndarray
    labels_A: np.ndarray
    images_B: np.ndarray
    labels_B: np.ndarray


def _check_split(split: str) -> None:
    """Only 'train' and 'test' exist."""
    if split not in _SPLIT_CODES:
        raise DataError(f"split must be 'train' or 'test', got {split!r}")


def _sklearn_digits_table() -> np.ndarray:
    """The 1797x65 digits table (64 pixels + label), read straight from scikit-learn's package.

    Importing `sklearn.datasets` costs about two seconds; the CSV it would read ships in the
    package, so we locate it without importing and fall back to `load_digits()` if it moved.
    """
    spec = importlib.util.find_spec("sklearn")
    for base in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(base, "datasets", "data", "digits.csv.gz")
        if os.path.isfile(path):
            with gzip.open(path, "rt") as f:
                return np.loadtxt(f, delimiter=",")
    from sklearn.datasets import load_digits  # pylint: disable=import-outside-toplevel

    bunch = load_digits()
    return np.concatenate([bunch.data, bunch.target[:, None]], axis=1)


def handwritten_digits(split: str = "train", *, image_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Domain A: scikit-learn's handwritten digits, bicubic-upscaled to `image_size`."""
    _check_split(split)
    table = _sklearn_digits_table()
    rows = slice(0, HANDWRITTEN_TRAIN_COUNT) if split == "train" else slice(HANDWRITTEN_TRAIN_COUNT, None)
    pixels = np.rint(table[rows, :64] * (255.0 / 16.0)).astype(np.uint8).reshape(-1, 8, 8)
    labels = table[rows, 64].astype(np.int64)
    images = np.stack([
        np.asarray(Image.fromarray(p, "L").resize((image_size, image_size), Image.Resampling.BICUBIC))
        for p in pixels
    ])
    return images, labels


def _bundled_font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's bundled font (FreeType when available) at the render size."""
    return ImageFont.load_default(size=_FONT_SIZE)


def _base_glyph(label: int, stroke: int, font, cache: dict) -> Image.Image:
    """The upright digit `label` at `stroke` width, tightly cropped; memoised in `cache`."""
    key = (label, stroke)
    if key not in cache:
        canvas = Image.new("L", (_RENDER_CANVAS, _RENDER_CANVAS), 0)
        draw = ImageDraw.Draw(canvas)
        if isinstance(font, ImageFont.FreeTypeFont):
            draw.text((_RENDER_CANVAS // 2, _RENDER_CANVAS // 2), str(label), fill=255, font=font,
                      anchor="mm", stroke_width=stroke, stroke_fill=255)
        else:  # Pillow built without FreeType: the bitmap font, scaled up by the fit later.
            draw.text((_RENDER_CANVAS // 3, _RENDER_CANVAS // 3), str(label), fill=255, font=font)
        cache[key] = canvas.crop(canvas.getbbox() or (0, 0, _RENDER_CANVAS, _RENDER_CANVAS))
    return cache[key]


def _render_one(label: int, rng: np.random.Generator, image_size: int, font, cache: dict) -> np.ndarray:
    """One printed digit: random stroke, rotation, size and position within the frame."""
    stroke = int(rng.integers(0, 4))  # weight variation: regular to bold
    angle = float(rng.uniform(-12.0, 12.0))
    glyph = _base_glyph(label, stroke, font, cache)
    glyph = glyph.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    glyph = glyph.crop(glyph.getbbox() or (0, 0, *glyph.size))
    gw, gh = glyph.size
    target = float(rng.uniform(0.65, 0.9)) * image_size  # the glyph's longer side
    scale = target / max(gw, gh)
    nw, nh = max(1, round(gw * scale)), max(1, round(gh * scale))
    glyph = glyph.resize((nw, nh), Image.Resampling.LANCZOS)
    max_dx, max_dy = (image_size - nw) // 2, (image_size - nh) // 2
    left = (image_size - nw) // 2 + int(rng.integers(-max_dx // 2, max_dx // 2 + 1))
    top = (image_size - nh) // 2 + int(rng.integers(-max_dy // 2, max_dy // 2 + 1))
    out = Image.new("L", (image_size, image_size), 0)
    out.paste(glyph, (left, top))
    return np.asarray(out)


def printed_digits(
    split: str = "train", *, image_size: int = 32, count: int | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Domain B: `count` font-rendered digits (labels cycle 0..9), image i from rng([seed, split, i])."""
    _check_split(split)
    count = PRINTED_COUNTS[split] if count is None else count
    font, cache = _bundled_font(), {}
    labels = np.arange(count, dtype=np.int64) % 10
    images = np.stack([
        _render_one(int(labels[i]), np.random.default_rng([seed, _SPLIT_CODES[split], i]), image_size, font, cache)
        for i in range(count)
    ]) if count else np.zeros((0, image_size, image_size), np.uint8)
    return images, labels


def thick_digits(split: str = "train", *, image_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """The handwritten digits with strokes thickened by a 3x3 maximum filter (a bolder hand)."""
    images, labels = handwritten_digits(split, image_size=image_size)
    thick = np.stack([np.asarray(Image.fromarray(x, "L").filter(ImageFilter.MaxFilter(3))) for x in images])
    return thick, labels


def inverted_digits(
    split: str = "train", *, image_size: int = 32, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The printed digits in the opposite polarity: black digits on white."""
    images, labels = printed_digits(split, image_size=image_size, seed=seed)
    return 255 - images, labels


# Rendering name -> function(split, image_size, seed) -> (uint8 images [N, S, S], int64 labels [N]).
RENDERINGS = {
    "handwritten": lambda split, size, seed: handwritten_digits(split, image_size=size),
    "printed": lambda split, size, seed: printed_digits(split, image_size=size, seed=seed),
    "thick": lambda split, size, seed: thick_digits(split, image_size=size),
    "inverted": lambda split, size, seed: inverted_digits(split, image_size=size, seed=seed),
}


def render_digits(
    name: str, split: str = "train", *, image_size: int = 32, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One named rendering of the built-in digits: (uint8 images [N, S, S], int64 labels [N])."""
    if name not in RENDERINGS:
        raise DataError(f"unknown built-in digit rendering {name!r}; expected one of {', '.join(RENDERINGS)}")
    if not isinstance(image_size, int) or image_size < 8:
        raise DataError(f"config.data.image_size={image_size!r} must be an integer >= 8")
    _check_split(split)
    return RENDERINGS[name](split, image_size, seed)


def load_builtin_digits(
    split: str = "train", *, image_size: int = 32, seed: int = 0, num_printed: int | None = None
) -> DigitDomains:
    """Both domains of the built-in digits for `split` ('train' or 'test')."""
    if not isinstance(image_size, int) or image_size < 8:
        raise DataError(f"config.data.image_size={image_size!r} must be an integer >= 8")
    images_a, labels_a = handwritten_digits(split, image_size=image_size)
    images_b, labels_b = printed_digits(split, image_size=image_size, count=num_printed, seed=seed)
    return DigitDomains(images_a, labels_a, images_b, labels_b)
