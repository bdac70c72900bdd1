"""Random-access sources of one domain's images: folders, IDX files, arrays, tfds data sources."""

from __future__ import annotations

import os
import threading
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np
from PIL import Image

from unpaired.data.decode import load_image, to_channels
from unpaired.data.errors import DataError
from unpaired.data.folders import list_images
from unpaired.data.idx import read_idx


@runtime_checkable
class DomainSource(Protocol):
    """What the loader needs of a domain: a length, indexed images, and names for messages."""

    name: str

    def __len__(self) -> int:
        """Number of images."""

    def __getitem__(self, index: int) -> Image.Image | np.ndarray:
        """Image `index` as a PIL image or a uint8 HxW / HxWxC array; DataError if unreadable."""

    def item_name(self, index: int) -> str:
        """A human-readable name of image `index` (its file) for error messages."""


def as_image(item: Image.Image | np.ndarray, channels: int, *, name: str = "image") -> Image.Image:
    """A source item (PIL image or uint8 array) as an 8-bit PIL image with `channels` channels."""
    if isinstance(item, Image.Image):
        return to_channels(item, channels)
    arr = np.asarray(item)
    if arr.dtype != np.uint8:
        raise DataError(f"{name}: array images must be uint8, got {arr.dtype}")
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        img = Image.fromarray(arr, mode="L")
    elif arr.ndim == 3 and arr.shape[-1] in (3, 4):
        img = Image.fromarray(arr, mode="RGB" if arr.shape[-1] == 3 else "RGBA")
    else:
        raise DataError(f"{name}: array images must be HxW or HxWx1/3/4, got shape {arr.shape}")
    return to_channels(img, channels)


class FolderSource:
    """All images under a folder (recursive, sorted), decoded to `channels` on access."""

    def __init__(self, root: str | os.PathLike[str], *, channels: int = 3) -> None:
        """List the folder now so a missing or empty folder fails at construction."""
        self.root = os.fspath(root)
        self.name = f"folder {self.root!r}"
        self.channels = channels
        self.paths: list[str] = list_images(self.root)

    def __len__(self) -> int:
        """Number of image files."""
        return len(self.paths)

    def __getitem__(self, index: int) -> Image.Image:
        """Decode file `index`; DataError naming the file if it is unreadable."""
        return load_image(self.paths[index], self.channels)

    def item_name(self, index: int) -> str:
        """The file's path."""
        return self.paths[index]


# config.data.image_resize: the filter IDX / array images are resized with (PIL's; the DTN
# reference resizes MNIST with Image.ANTIALIAS, which is LANCZOS).
RESIZE_FILTERS = {"bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS}


class ArraySource:
    """In-memory uint8 images [N, H, W] or [N, H, W, C], optionally resized to `size`."""

    def __init__(
        self,
        images: np.ndarray,
        *,
        channels: int = 1,
        size: int | None = None,
        labels: np.ndarray | None = None,
        name: str = "array",
        resample: str = "bicubic",
    ) -> None:
        """Keep the array; check its dtype and rank once. `resample`: a RESIZE_FILTERS key."""
        if resample not in RESIZE_FILTERS:
            raise DataError(f"{name}: resize filter {resample!r} is not one of "
                            f"{', '.join(RESIZE_FILTERS)} (config.data.image_resize)")
        self.resample = RESIZE_FILTERS[resample]
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) == 0:
            raise DataError(
                f"{name}: expected a non-empty uint8 array [N, H, W] or [N, H, W, C], "
                f"got {images.dtype} {images.shape}"
            )
        self.images = images
        self.labels = None if labels is None else np.asarray(labels)
        self.channels = channels
        self.size = size
        self.name = name

    def __len__(self) -> int:
        """Number of images."""
        return len(self.images)

    def __getitem__(self, index: int) -> Image.Image:
        """Image `index` as a PIL image with `channels` channels, resized to `size` (bicubic
        unless `resample` says otherwise)."""
        img = as_image(self.images[index], self.channels, name=self.item_name(index))
        if self.size is not None and img.size != (self.size, self.size):
            img = img.resize((self.size, self.size), self.resample)
        return img

    def item_name(self, index: int) -> str:
        """`name[index]`."""
        return f"{self.name}[{index}]"


class IdxSource(ArraySource):
    """The images of an IDX file (e.g. MNIST/USPS `*-images-idx3-ubyte.gz`)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        channels: int = 1,
        size: int | None = None,
        labels_path: str | os.PathLike[str] | None = None,
        resample: str = "bicubic",
    ) -> None:
        """Read the whole file (small by nature) and, if given, its label file."""
        path = os.fspath(path)
        images = read_idx(path)
        if images.dtype != np.uint8 or images.ndim != 3:
            raise DataError(
                f"IDX file {path!r} holds {images.dtype} {images.shape}, expected uint8 images "
                "[N, H, W] (magic 0x00000803)"
            )
        labels = None if labels_path is None else read_idx(labels_path)
        if labels is not None and len(labels) != len(images):
            raise DataError(
                f"IDX label file {os.fspath(labels_path)!r} has {len(labels)} labels for "
                f"{len(images)} images in {path!r}"
            )
        super().__init__(images, channels=channels, size=size, labels=labels, name=f"IDX file {path!r}",
                         resample=resample)


class TfdsSource:
    """A tfds random-access data source whose examples hold an encoded or decoded image."""

    def __init__(
        self,
        data_source: Sequence[dict[str, Any]],
        *,
        channels: int = 3,
        name: str = "tfds",
        image_key: str = "image",
        file_name_key: str | None = "file_name",
    ) -> None:
        """Wrap `data_source`; reads are serialised by a lock (readers are not known thread-safe)."""
        self.data_source = data_source
        self.channels = channels
        self.name = name
        self.image_key = image_key
        self.file_name_key = file_name_key
        self._length = len(data_source)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Number of examples."""
        return self._length

    def _example(self, index: int) -> dict[str, Any]:
        """Read one record under the lock (decoding happens outside it)."""
        with self._lock:
            return self.data_source[index]

    def __getitem__(self, index: int) -> Image.Image:
        """Decode example `index`'s image (bytes via our decoder, arrays via as_image)."""
        example = self._example(index)
        label = self._describe(index, example)
        value = example[self.image_key]
        if isinstance(value, (bytes, bytearray, memoryview, np.bytes_)):
            return load_image(bytes(value), self.channels, name=label)
        return as_image(value, self.channels, name=label)

    def _describe(self, index: int, example: dict[str, Any]) -> str:
        """`name[index]` plus the stored file name when the dataset has one."""
        label = f"{self.name}[{index}]"
        if self.file_name_key and self.file_name_key in example:
            file_name = example[self.file_name_key]
            if isinstance(file_name, (bytes, np.bytes_)):
                file_name = bytes(file_name).decode("utf-8", "replace")
            label += f" ({file_name})"
        return label

    def item_name(self, index: int) -> str:
        """`name[index] (file name)`."""
        return self._describe(index, self._example(index))
