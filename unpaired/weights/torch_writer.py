"""Writes a state_dict as a torch >= 1.6 zip `.pth` file without torch.

The pickle (protocol 2) is spelled opcode by opcode: an OrderedDict of tensors, each
`torch._utils._rebuild_tensor_v2` on its own storage record `<archive>/data/<k>`, records
aligned to 64 bytes as torch writes them. `torch.load(weights_only=True)` reads it.
"""

from __future__ import annotations

import os
import pickle
import struct
import zipfile
from typing import Mapping

import ml_dtypes
import numpy as np

_STORAGE_NAMES = {
    np.dtype(np.float32): "FloatStorage",
    np.dtype(np.float64): "DoubleStorage",
    np.dtype(np.float16): "HalfStorage",
    np.dtype(ml_dtypes.bfloat16): "BFloat16Storage",
    np.dtype(np.int64): "LongStorage",
    np.dtype(np.int32): "IntStorage",
    np.dtype(np.int16): "ShortStorage",
    np.dtype(np.int8): "CharStorage",
    np.dtype(np.uint8): "ByteStorage",
    np.dtype(np.bool_): "BoolStorage",
}
_ALIGNMENT = 64


def _int(value: int) -> bytes:
    if 0 <= value < 256:
        return pickle.BININT1 + bytes([value])
    if -(2 ** 31) <= value < 2 ** 31:
        return pickle.BININT + struct.pack("<i", value)
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return pickle.LONG1 + bytes([len(raw)]) + raw


def _str(text: str) -> bytes:
    raw = text.encode("utf-8")
    return pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw


def _global(module: str, name: str) -> bytes:
    return pickle.GLOBAL + f"{module}\n{name}\n".encode("ascii")


def _tuple(items: list[bytes]) -> bytes:
    return pickle.MARK + b"".join(items) + pickle.TUPLE


def _tensor(key: str, array: np.ndarray) -> bytes:
    storage = _tuple([_str("storage"), _global("torch", _STORAGE_NAMES[array.dtype]),
                      _str(key), _str("cpu"), _int(array.size)])
    strides = [s // array.itemsize for s in array.strides]
    args = _tuple([storage + pickle.BINPERSID, _int(0),
                   _tuple([_int(n) for n in array.shape]), _tuple([_int(s) for s in strides]),
                   pickle.NEWFALSE,
                   _global("collections", "OrderedDict") + pickle.EMPTY_TUPLE + pickle.REDUCE])
    return _global("torch._utils", "_rebuild_tensor_v2") + args + pickle.REDUCE


def _state_dict_pickle(arrays: Mapping[str, np.ndarray]) -> bytes:
    items = b"".join(_str(name) + _tensor(str(i), array)
                     for i, (name, array) in enumerate(arrays.items()))
    return (pickle.PROTO + b"\x02" + _global("collections", "OrderedDict") + pickle.EMPTY_TUPLE
            + pickle.REDUCE + pickle.MARK + items + pickle.SETITEMS + pickle.STOP)


def _nested_pickle(groups: Mapping[str, Mapping[str, np.ndarray]]) -> bytes:
    """A dict of OrderedDicts of tensors (e.g. UNIT's {'a': state_dict, 'b': state_dict})."""
    body, index = b"", 0
    for group, arrays in groups.items():
        items = b""
        for name, array in arrays.items():
            items += _str(name) + _tensor(str(index), array)
            index += 1
        body += (_str(group) + _global("collections", "OrderedDict") + pickle.EMPTY_TUPLE
                 + pickle.REDUCE + pickle.MARK + items + pickle.SETITEMS)
    return pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + pickle.MARK + body + pickle.SETITEMS + pickle.STOP


def _write_aligned(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    """A stored record whose data starts on a 64-byte boundary (padding in the extra field)."""
    start = archive.fp.tell() + 30 + len(name.encode("utf-8")) + 4
    pad = (-start) % _ALIGNMENT
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # 'FB' padding, as torch writes it
    archive.writestr(info, data)


def _checked(state_dict: Mapping[str, np.ndarray], path: str) -> dict[str, np.ndarray]:
    arrays = {}
    for name, value in state_dict.items():
        array = np.asarray(value, order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
        if array.dtype not in _STORAGE_NAMES:
            raise ValueError(f"{path}: state_dict entry {name!r} has dtype {array.dtype}, "
                             f"which a .pth file cannot hold")
        if not array.dtype.isnative:
            array = array.astype(array.dtype.newbyteorder("="))
        arrays[str(name)] = array
    return arrays


def _write_archive(path: str, pickled: bytes, arrays: list[np.ndarray]) -> None:
    stem = os.path.splitext(os.path.basename(path))[0] or "archive"
    stem = "".join(c if c.isalnum() or c in "_-" else "_" for c in stem)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        _write_aligned(archive, f"{stem}/data.pkl", pickled)
        _write_aligned(archive, f"{stem}/byteorder", b"little" if np.little_endian else b"big")
        for i, array in enumerate(arrays):
            _write_aligned(archive, f"{stem}/data/{i}", array.tobytes())
        _write_aligned(archive, f"{stem}/version", b"3\n")


def write_torch_file(state_dict: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    """Writes `state_dict` (name -> numpy array) as a zip `.pth` that torch loads as tensors."""
    path = os.fspath(path)
    arrays = _checked(state_dict, path)
    _write_archive(path, _state_dict_pickle(arrays), list(arrays.values()))


def write_torch_dicts(groups: Mapping[str, Mapping[str, np.ndarray]],
                      path: str | os.PathLike) -> None:
    """Writes {group: state_dict} (e.g. UNIT's {'a': ..., 'b': ...}) as one zip `.pt` file."""
    path = os.fspath(path)
    checked = {str(g): _checked(sd, path) for g, sd in groups.items()}
    _write_archive(path, _nested_pickle(checked),
                   [a for arrays in checked.values() for a in arrays.values()])
