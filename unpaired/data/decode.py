"""Decoding any image file PIL can read into an 8-bit 'RGB' or 'L' PIL image."""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from unpaired.data.errors import DataError

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def _channels_mode(channels: int) -> str:
    """The PIL mode for a channel count (1 -> 'L', 3 -> 'RGB')."""
    if channels == 1:
        return "L"
    if channels == 3:
        return "RGB"
    raise DataError(f"images can have 1 or 3 channels (input_nc/output_nc), got {channels}")


def to_eight_bit(img: Image.Image) -> Image.Image:
    """Rescale high-bit-depth modes to 8 bits (PIL's own convert clips them instead).

    'I;16*' (16-bit PNG/TIFF) maps 0..65535 linearly onto 0..255 with rounding. 'I' (32-bit
    integer, what some decoders give for 16-bit data) is taken as 16-bit: clipped to 0..65535,
    then scaled the same way. 'F' (float) is taken as [0, 1] intensities, clipped. '1' (bilevel)
    becomes 0/255. Every other mode is returned unchanged.
    """
    if img.mode in _SIXTEEN_BIT_MODES or img.mode == "I":
        arr = np.clip(np.asarray(img).astype(np.int64), 0, 65535)
        return Image.fromarray(((arr + 128) // 257).astype(np.uint8), mode="L")
    if img.mode == "F":
        arr = np.nan_to_num(np.asarray(img, dtype=np.float64), nan=0.0)
        arr = np.clip(np.rint(np.clip(arr, 0.0, 1.0) * 255.0), 0, 255)
        return Image.fromarray(arr.astype(np.uint8), mode="L")
    if img.mode == "1":
        return img.convert("L")
    return img


def to_channels(img: Image.Image, channels: int) -> Image.Image:
    """Convert a decoded image to 'RGB' (channels=3) or 'L' (channels=1) as the reference does.

    The reference opens every image with `.convert('RGB')` and, for a 1-channel side, then
    applies `Grayscale(1)` (PIL's ITU-R 601-2 luma). Alpha is dropped, not composited (the
    reference's behaviour); palettes are expanded; CMYK uses PIL's conversion. 'L' to 'L' is kept
    as is, which equals the reference's L -> RGB -> L round trip exactly.
    """
    target = _channels_mode(channels)
    img = to_eight_bit(img)
    if img.mode == target:
        return img
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # PIL asks for this route for palette transparency.
    rgb = img if img.mode == "RGB" else img.convert("RGB")
    return rgb if target == "RGB" else rgb.convert("L")


def load_image(
    source: str | os.PathLike[str] | bytes, channels: int, *, name: str | None = None
) -> Image.Image:
    """Decode a file path or encoded bytes to an 8-bit PIL image with `channels` channels.

    Decoding is forced with `.load()` so a truncated file fails here, not later; any decoder
    failure becomes a DataError naming the file (`name`, or the path).
    """
    _channels_mode(channels)  # a bad channel count is a config error, not a file error
    label = name if name is not None else (
        "<image bytes>" if isinstance(source, (bytes, bytearray, memoryview)) else os.fspath(source)
    )
    try:
        fp = io.BytesIO(bytes(source)) if isinstance(source, (bytes, bytearray, memoryview)) else source
        with Image.open(fp) as opened:
            opened.load()
            img = to_channels(opened, channels)
            if img is opened:
                img = opened.copy()  # detach from the file being closed
    except DataError:
        raise
    except FileNotFoundError as e:
        raise DataError(f"image file {label!r} does not exist") from e
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ...
        raise DataError(
            f"cannot decode image {label!r}: {type(e).__name__}: {e} "
            "(corrupt, truncated or not an image)"
        ) from e
    return img
