"""The reference's `--preprocess` options as a pure function of (image, options, RNG)."""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from unpaired.data.errors import DataError

PREPROCESS_MODES: tuple[str, ...] = (
    "resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none",
)
# The ResNet generator downsamples twice, so trained image sides must be multiples of 4.
SIZE_MULTIPLE = 4
_CROPPING_MODES = ("resize_and_crop", "crop", "scale_width_and_crop")


def _is_int(value: object) -> bool:
    """Whether a config value is a real integer (bools excluded)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def validate_preprocess(
    mode: str, load_size: int, crop_size: int, *, prefix: str = "config.data"
) -> None:
    """Reject option combinations the reference would crash on later, naming the config key."""
    if mode not in PREPROCESS_MODES:
        raise DataError(
            f"{prefix}.preprocess={mode!r} is not one of {', '.join(PREPROCESS_MODES)}"
        )
    for key, value in (("load_size", load_size), ("crop_size", crop_size)):
        if not _is_int(value) or value <= 0:
            raise DataError(f"{prefix}.{key}={value!r} must be a positive integer")
    if mode in _CROPPING_MODES and crop_size % SIZE_MULTIPLE:
        raise DataError(
            f"{prefix}.crop_size={crop_size} must be a multiple of {SIZE_MULTIPLE} "
            "(the ResNet generator downsamples twice; the cycle/identity losses need "
            "equal input and output sizes)"
        )
    if mode in ("resize_and_crop", "scale_width_and_crop") and crop_size > load_size:
        raise DataError(
            f"{prefix}.crop_size={crop_size} is larger than {prefix}.load_size={load_size}; "
            f"preprocess={mode!r} resizes to load_size and then crops crop_size"
        )


def scale_width(img: Image.Image, width: int, min_height: int) -> Image.Image:
    """Resize to `width`, keeping the aspect ratio but at least `min_height` tall (reference)."""
    ow, oh = img.size
    if ow == width and oh >= min_height:
        return img
    height = int(max(width * oh / ow, min_height))
    return img.resize((width, height), Image.Resampling.BICUBIC)


def round_to_multiple(img: Image.Image, base: int = SIZE_MULTIPLE, *, name: str = "image") -> Image.Image:
    """Bicubic-resize so both sides are the nearest multiple of `base` (reference `none` mode)."""
    ow, oh = img.size
    w, h = int(round(ow / base) * base), int(round(oh / base) * base)
    if w == 0 or h == 0:
        raise DataError(f"{name} is {ow}x{oh} pixels, too small to round to a multiple of {base}")
    if (w, h) == (ow, oh):
        return img
    return img.resize((w, h), Image.Resampling.BICUBIC)


def to_unit_range(arr: np.ndarray) -> np.ndarray:
    """uint8 HxW(xC) -> float32 HxWxC in [-1, 1], as ToTensor then Normalize(0.5, 0.5)."""
    x = arr.astype(np.float32)  # a fresh array: the in-place steps below are safe
    x /= np.float32(255.0)
    x -= np.float32(0.5)
    x /= np.float32(0.5)
    return x[..., None] if x.ndim == 2 else x


def preprocess(
    img: Image.Image,
    *,
    mode: str,
    load_size: int,
    crop_size: int,
    flip: bool,
    rng: np.random.Generator,
    name: str = "image",
) -> np.ndarray:
    """Apply the reference transform (resize/scale, random crop, random h-flip, to [-1, 1]).

    `img` is already in its final channel mode ('RGB' or 'L'). Randomness comes only from
    `rng`: crop offsets (when the mode crops) and then one flip draw (when `flip`). An image
    smaller than the crop in 'crop' mode raises a DataError naming `name` and both sizes
    (the reference crashes; silently upscaling would change the data, and the loader can skip
    such a file with bad_image='skip').
    """
    validate_preprocess(mode, load_size, crop_size)
    if mode == "resize_and_crop":
        img = img.resize((load_size, load_size), Image.Resampling.BICUBIC)
    elif mode in ("scale_width", "scale_width_and_crop"):
        img = scale_width(img, load_size, crop_size)
    elif mode == "none":
        img = round_to_multiple(img, name=name)
    arr = np.asarray(img)
    if mode in _CROPPING_MODES:
        h, w = arr.shape[:2]
        if h < crop_size or w < crop_size:
            raise DataError(
                f"{name} is {w}x{h} pixels, smaller than config.data.crop_size={crop_size} "
                f"with preprocess={mode!r}; use larger images, a smaller crop_size, or "
                "preprocess='resize_and_crop'"
            )
        top = int(rng.integers(0, h - crop_size + 1))
        left = int(rng.integers(0, w - crop_size + 1))
        arr = arr[top:top + crop_size, left:left + crop_size]
    if flip and rng.random() < 0.5:
        arr = arr[:, ::-1]
    return to_unit_range(arr)


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """The preprocess options bound once, validated, callable as `(img, rng) -> array`."""

    mode: str = "resize_and_crop"
    load_size: int = 286
    crop_size: int = 256
    flip: bool = True

    def __post_init__(self) -> None:
        """Fail at construction (config time), not at the first batch."""
        validate_preprocess(self.mode, self.load_size, self.crop_size)

    def __call__(self, img: Image.Image, rng: np.random.Generator, name: str = "image") -> np.ndarray:
        """Preprocess one image with this object's options."""
        return preprocess(
            img, mode=self.mode, load_size=self.load_size, crop_size=self.crop_size,
            flip=self.flip, rng=rng, name=name,
        )
