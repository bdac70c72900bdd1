"""Listing the image files of a CycleGAN-style folder (`dataroot/trainA`, ...)."""

from __future__ import annotations

import os

from unpaired.data.errors import DataError

# The reference accepts jpg/jpeg/png/ppm/bmp/tif(f) in lower or upper case; we accept any
# case and also webp (a superset, so every folder the reference reads lists the same here).
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".tif", ".tiff", ".webp",
)

LAYOUT_HINT = (
    "expected the CycleGAN layout: <dataroot>/trainA, <dataroot>/trainB, "
    "<dataroot>/testA, <dataroot>/testB (or <dataroot>/<split>/<domain>/ for any domain names), "
    "each holding image files "
    f"({', '.join(IMAGE_EXTENSIONS)}, any case; subfolders allowed)"
)


def is_image_file(name: str) -> bool:
    """Whether a file name has an image extension (any case) and is not macOS metadata."""
    base = os.path.basename(name)
    if base.startswith("._"):  # AppleDouble files from macOS archives are never images.
        return False
    return base.lower().endswith(IMAGE_EXTENSIONS)


def list_images(root: str | os.PathLike[str]) -> list[str]:
    """All image paths under `root`, recursively and sorted, as the reference's make_dataset."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        what = "is not a folder" if os.path.exists(root) else "does not exist"
        raise DataError(f"image folder {root!r} {what}; {LAYOUT_HINT}")
    paths: list[str] = []
    seen: set[str] = set()
    # followlinks=True as the reference (datasets are often symlinked); `seen` breaks cycles.
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if d != "__MACOSX"]
        paths.extend(os.path.join(dirpath, f) for f in filenames if is_image_file(f))
    if not paths:
        raise DataError(f"no images found in folder {root!r}; {LAYOUT_HINT}")
    return sorted(paths)
