"""Turning checked downloads into the data root's layout (`unpaired.data.cache`), atomically.

Each kind writes into a temporary sibling of its target and renames it into place, so a
target that exists is complete: MNIST's gzip IDX files are copied as they are, USPS's libsvm
text is converted to the same IDX layout, a CycleGAN zip is unpacked (its one top folder
dropped), a weight file is copied.
"""

from __future__ import annotations

import bz2
import os
import shutil
import tempfile
import zipfile
from typing import Callable, Iterable

import numpy as np

from unpaired.data import cache
from unpaired.data.idx import write_idx
from unpaired.fetch.catalog import Entry
from unpaired.fetch.download import FetchError

USPS_SIDE = 16
# usps.bz2 is the training split, usps.t.bz2 the test split (MNIST's train / t10k names).
USPS_SPLITS = {"usps.bz2": "train", "usps.t.bz2": "t10k"}


def target(entry: Entry, root: str) -> str:
    """Where `entry` is installed under `root`."""
    if entry.kind in ("idx_gz", "usps_libsvm"):
        return cache.digits_folder(entry.name, root)
    if entry.kind == "cyclegan_zip":
        return cache.cyclegan_folder(entry.name, root)
    if entry.kind == "weights":
        return cache.weights_file(entry.name[:-len(cache.WEIGHTS_SUFFIX)], root)
    raise ValueError(f"unknown catalog kind {entry.kind!r}")


def parse_libsvm_digits(lines: Iterable[bytes | str], source: str,
                        side: int = USPS_SIDE) -> tuple[np.ndarray, np.ndarray]:
    """USPS's libsvm lines ('<label 1..10> <index>:<value in [-1, 1]> ...') as IDX arrays.

    Images: uint8 [N, side, side], round(255 * (v + 1) / 2) (background -1 -> 0, as MNIST),
    features absent from a line are 0 (libsvm's sparse convention). Labels: uint8 digit = label - 1.
    """
    images, labels = [], []
    for number, raw in enumerate(lines, 1):
        line = raw.decode() if isinstance(raw, bytes) else raw
        fields = line.split()
        if not fields:
            continue
        try:
            label = int(float(fields[0]))
            pixels = np.zeros(side * side, np.float64)
            for field in fields[1:]:
                index, value = field.split(":")
                pixels[int(index) - 1] = float(value)
        except (ValueError, IndexError) as err:
            raise FetchError(f"{source} line {number} is not libsvm '<label> <index>:<value> ...' "
                             f"with indices 1..{side * side}: {err}") from None
        if not 1 <= label <= 10:
            raise FetchError(f"{source} line {number}: label {label} is outside USPS's 1..10")
        images.append(pixels)
        labels.append(label - 1)
    if not images:
        raise FetchError(f"{source} holds no digits")
    unit = (np.clip(np.stack(images), -1.0, 1.0) + 1.0) / 2.0
    return (np.rint(unit * 255.0).astype(np.uint8).reshape(-1, side, side),
            np.asarray(labels, np.uint8))


def _idx_gz(files: dict[str, str], out: str) -> None:
    for name, path in files.items():
        shutil.copyfile(path, os.path.join(out, name))


def _usps(files: dict[str, str], out: str) -> None:
    for name, path in files.items():
        split = USPS_SPLITS[name]
        with bz2.open(path, "rb") as f:
            try:
                images, labels = parse_libsvm_digits(f, name)
            except (OSError, EOFError) as err:
                raise FetchError(f"{path} is not a readable bz2 file: {err}") from None
        write_idx(os.path.join(out, f"{split}-images-idx3-ubyte.gz"), images)
        write_idx(os.path.join(out, f"{split}-labels-idx1-ubyte.gz"), labels)


def _safe_members(archive: zipfile.ZipFile, path: str) -> tuple[list[zipfile.ZipInfo], str]:
    """The zip's members and the one top folder they all share ('' if none); refuses ../ and /."""
    members = [m for m in archive.infolist() if not m.filename.startswith("__MACOSX/")]
    for m in members:
        parts = m.filename.replace("\\", "/").split("/")
        if m.filename.startswith("/") or ".." in parts or ":" in parts[0]:
            raise FetchError(f"{path} holds an unsafe member name {m.filename!r}; not unpacked")
    tops = {m.filename.split("/", 1)[0] for m in members}
    nested = len(tops) == 1 and all("/" in m.filename for m in members)
    return members, (tops.pop() + "/") if nested else ""


def _cyclegan_zip(files: dict[str, str], out: str) -> None:
    (path,) = files.values()
    try:
        with zipfile.ZipFile(path) as archive:
            members, top = _safe_members(archive, path)
            for m in members:
                rel = m.filename[len(top):]
                if not rel:
                    continue
                dest = os.path.join(out, *rel.split("/"))
                if m.is_dir():
                    os.makedirs(dest, exist_ok=True)
                    continue
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                with archive.open(m) as src, open(dest, "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
    except zipfile.BadZipFile as err:
        raise FetchError(f"{path} is not a readable zip file: {err}") from None


INSTALLERS: dict[str, Callable[[dict[str, str], str], None]] = {
    "idx_gz": _idx_gz, "usps_libsvm": _usps, "cyclegan_zip": _cyclegan_zip,
}


def installed(entry: Entry, root: str) -> bool:
    """Whether `entry` is already in place (a folder target exists only once it is complete)."""
    dest = target(entry, root)
    if entry.kind in ("idx_gz", "usps_libsvm"):
        return all(os.path.isfile(os.path.join(dest, f"{split}-{part}-ubyte.gz"))
                   for split in ("train", "t10k") for part in ("images-idx3", "labels-idx1"))
    return os.path.exists(dest)


def install(entry: Entry, files: dict[str, str], root: str) -> str:
    """Puts `entry` in place under `root` from its checked `files` (file name -> path); returns the target.

    FetchError if something else is already where it goes (never overwritten).
    """
    dest = target(entry, root)
    if os.path.exists(dest):
        raise FetchError(f"{dest} exists but is not a complete {entry.name}; move it away and run again")
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    if entry.kind == "weights":
        (path,) = files.values()
        tmp = dest + ".tmp"
        shutil.copyfile(path, tmp)
        os.replace(tmp, dest)
        return dest
    work = tempfile.mkdtemp(prefix=f".{os.path.basename(dest)}-", dir=parent)
    try:
        INSTALLERS[entry.kind](files, work)
        os.replace(work, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest
