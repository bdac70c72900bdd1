"""Reading and writing IDX files (the MNIST/USPS distribution format), gzip-compressed or raw."""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from unpaired.data.errors import DataError

# IDX type byte -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, str] = {
    0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8",
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: str) -> bytes:
    """The file's content, gunzipped when it starts with the gzip magic."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"IDX file {path!r} is a corrupt or truncated gzip file: {e}") from e
    return data


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file into a native-endian numpy array (images: uint8 [N, H, W]).

    Magic: two zero bytes, a type byte (0x08 = uint8, ...) and the number of dimensions,
    then one big-endian uint32 per dimension, then the data. 0x00000803 is an image file,
    0x00000801 a label file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"IDX file {path!r} does not exist")
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise DataError(
            f"{path!r} is not an IDX file: bad magic {data[:4].hex() or '(empty)'} "
            "(expected 0000 08 03 for images or 0000 08 01 for labels)"
        )
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"IDX file {path!r} is truncated inside its header")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        problem = "truncated" if len(data) - header < expected else "longer than its header says"
        raise DataError(
            f"IDX file {path!r} is {problem}: header shape {shape} needs {expected} data bytes, "
            f"found {len(data) - header}"
        )
    arr = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def idx_bytes(array: np.ndarray) -> bytes:
    """An array as IDX bytes (big-endian header and data; uint8 gives magic 0x0803 for [N,H,W], 0x0801 for [N])."""
    array = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in _IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes or not 1 <= array.ndim <= 255:
        raise ValueError(f"IDX holds 1-255 dimensions of {sorted(str(d) for d in codes)}, not {array.dtype} {array.shape}")
    header = bytes([0, 0, codes[native], array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    return header + np.ascontiguousarray(array, dtype=native.newbyteorder(">")).tobytes()


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Writes `array` as an IDX file, gzip-compressed when the name ends in .gz (as MNIST's files)."""
    data = idx_bytes(array)
    path = os.fspath(path)
    with open(path, "wb") as f:  # mtime 0: the same array always gives the same bytes
        f.write(gzip.compress(data, mtime=0) if path.endswith(".gz") else data)
