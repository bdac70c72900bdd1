"""TensorFlow V2 checkpoints (`<prefix>.index` + `<prefix>.data-*`) read without TensorFlow.

The `.index` is a table (see `sstable`) from variable name to a `BundleEntryProto`
(dtype, shape, shard, offset, size, masked CRC32C); key "" holds the `BundleHeaderProto`
(shard count, endianness). Each tensor's bytes are read from its shard and checked against
the CRC. The two protos are decoded with the few lines of protobuf wire format they need.
"""

from __future__ import annotations

import dataclasses
import os
import re
import struct
from typing import Iterable

import ml_dtypes
import numpy as np

from unpaired.weights import crc32c
from unpaired.weights.sstable import SSTableError, read_table, read_varint

# tensorflow/core/framework/types.proto DataType values -> numpy dtypes.
_DTYPES = {
    1: np.dtype(np.float32), 2: np.dtype(np.float64), 3: np.dtype(np.int32),
    4: np.dtype(np.uint8), 5: np.dtype(np.int16), 6: np.dtype(np.int8),
    7: np.dtype(object),  # DT_STRING
    8: np.dtype(np.complex64), 9: np.dtype(np.int64), 10: np.dtype(np.bool_),
    14: np.dtype(ml_dtypes.bfloat16), 17: np.dtype(np.uint16), 18: np.dtype(np.complex128),
    19: np.dtype(np.float16), 22: np.dtype(np.uint32), 23: np.dtype(np.uint64),
}
_DTYPE_NAMES = {11: "qint8", 12: "quint8", 13: "qint32", 15: "qint16", 16: "quint16",
                20: "resource", 21: "variant"}
_SHARD = re.compile(r"\.data-\d{5}-of-\d{5}$")


class BundleError(ValueError):
    """A checkpoint file is missing, corrupt or unsupported; the message names file and variable."""


@dataclasses.dataclass(frozen=True)
class BundleEntry:
    """Where one variable lives: dtype (numpy, or the TF name if numpy has none), shape, bytes."""

    name: str
    dtype: np.dtype | str
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int
    sliced: bool


def _fields(data: bytes, source: str) -> dict[int, list]:
    """A protobuf message's fields: number -> values (ints, or bytes for length-delimited)."""
    fields: dict[int, list] = {}
    pos = 0
    while pos < len(data):
        tag, pos = read_varint(data, pos, source)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = read_varint(data, pos, source)
        elif wire == 1:
            (value,), pos = struct.unpack_from("<Q", data, pos), pos + 8
        elif wire == 2:
            length, pos = read_varint(data, pos, source)
            value, pos = data[pos: pos + length], pos + length
        elif wire == 5:
            (value,), pos = struct.unpack_from("<I", data, pos), pos + 4
        else:
            raise BundleError(f"{source}: unsupported protobuf wire type {wire}")
        if pos > len(data):
            raise BundleError(f"{source}: a truncated protobuf message")
        fields.setdefault(number, []).append(value)
    return fields


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _shape(data: bytes, source: str) -> tuple[int, ...]:
    fields = _fields(data, source)
    if fields.get(3, [0])[-1]:
        raise BundleError(f"{source}: a tensor of unknown rank")
    return tuple(_int64(_fields(dim, source).get(1, [0])[-1]) for dim in fields.get(2, []))


def _entry(name: str, data: bytes, source: str) -> BundleEntry:
    where = f"{source}: variable {name!r}"
    fields = _fields(data, where)
    code = fields.get(1, [0])[-1]
    dtype = _DTYPES.get(code) or _DTYPE_NAMES.get(code, f"dtype {code}")
    shape = _shape(fields[2][-1], where) if 2 in fields else ()
    return BundleEntry(name=name, dtype=dtype, shape=shape, shard_id=fields.get(3, [0])[-1],
                       offset=_int64(fields.get(4, [0])[-1]), size=_int64(fields.get(5, [0])[-1]),
                       crc32c=fields.get(6, [0])[-1], sliced=bool(fields.get(7)))


def checkpoint_prefix(path: str | os.PathLike) -> str:
    """The prefix of a checkpoint given as the prefix, its `.index` or one of its data files."""
    path = os.fspath(path)
    if path.endswith(".index"):
        return path[: -len(".index")]
    return _SHARD.sub("", path)


def _header_and_entries(prefix: str) -> tuple[int, bool, dict[str, BundleEntry]]:
    index = prefix + ".index"
    if not os.path.isfile(index):
        raise BundleError(f"{index}: no such file (expected a TensorFlow checkpoint prefix "
                          f"such as model/dtn-2000, or its .index file)")
    with open(index, "rb") as f:
        table = f.read()
    shards, big_endian, entries = 1, False, {}
    try:
        for key, value in read_table(table, index):
            name = key.decode("utf-8")
            if name == "":
                header = _fields(value, index)
                shards = header.get(1, [1])[-1]
                big_endian = header.get(2, [0])[-1] == 1
            else:
                entries[name] = _entry(name, value, index)
    except SSTableError as err:
        raise BundleError(str(err)) from err
    return shards, big_endian, entries


def list_tf_checkpoint(path: str | os.PathLike) -> dict[str, BundleEntry]:
    """Every variable's name, dtype and shape (and where its bytes are), reading no tensor data."""
    return _header_and_entries(checkpoint_prefix(path))[2]


def _strings(raw: bytes, count: int, where: str) -> tuple[np.ndarray, int]:
    """A DT_STRING tensor: varint lengths, their masked CRC, then the bytes; and its CRC."""
    lengths, pos, crc = [], 0, 0
    for _ in range(count):
        length, pos = read_varint(raw, pos, where)
        lengths.append(length)
        crc = crc32c.crc32c(struct.pack("<I" if length < 1 << 32 else "<Q", length), crc)
    if pos + 4 > len(raw):
        raise BundleError(f"{where}: truncated string lengths")
    crc = crc32c.crc32c(raw[pos: pos + 4], crc)
    pos += 4
    values = np.empty(count, object)
    for i, length in enumerate(lengths):
        values[i] = raw[pos: pos + length]
        pos += length
    if pos != len(raw):
        raise BundleError(f"{where}: string bytes do not add up to the entry's size")
    return values, crc32c.crc32c(raw[pos - sum(lengths): pos], crc)


def _tensor(entry: BundleEntry, raw: bytes, big_endian: bool, where: str) -> np.ndarray:
    count = int(np.prod(entry.shape, dtype=np.int64))
    if entry.dtype == np.dtype(object):
        values, crc = _strings(raw, count, where)
    else:
        if entry.size != count * entry.dtype.itemsize:
            raise BundleError(f"{where}: {entry.size} bytes for shape {entry.shape} of {entry.dtype}")
        values = np.frombuffer(raw, entry.dtype).copy()
        if big_endian and entry.dtype.itemsize > 1:  # swap each number (each half of a complex)
            unit = entry.dtype.itemsize // (2 if entry.dtype.kind == "c" else 1)
            values.view(f"u{unit}").byteswap(inplace=True)
        crc = crc32c.crc32c(raw)
    if crc32c.mask(crc) != entry.crc32c:
        raise BundleError(f"{where}: checksum mismatch (the data file is corrupt)")
    return values.reshape(entry.shape)


def read_tf_checkpoint(path: str | os.PathLike, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """variable name -> numpy array for a TF V2 checkpoint (all variables, or `names`), CRC-checked.

    `path` is the prefix (`model/dtn-2000`) or its `.index` file.
    """
    prefix = checkpoint_prefix(path)
    shards, big_endian, entries = _header_and_entries(prefix)
    wanted = list(entries) if names is None else list(names)
    missing = [n for n in wanted if n not in entries]
    if missing:
        raise BundleError(f"{prefix}.index has no variable {missing[0]!r}")
    out: dict[str, np.ndarray] = {}
    handles: dict[int, object] = {}
    try:
        for name in wanted:
            entry = entries[name]
            data_file = f"{prefix}.data-{entry.shard_id:05d}-of-{shards:05d}"
            where = f"{data_file}: variable {name!r}"
            if entry.sliced:
                raise BundleError(f"{where} is a partitioned (sliced) variable, which is not supported")
            if not isinstance(entry.dtype, np.dtype):
                raise BundleError(f"{where} has dtype {entry.dtype}, which has no numpy equivalent")
            if entry.shard_id not in handles:
                if not os.path.isfile(data_file):
                    raise BundleError(f"{data_file}: no such file (shard {entry.shard_id} of "
                                      f"{shards}, holding variable {name!r})")
                handles[entry.shard_id] = open(data_file, "rb")
            f = handles[entry.shard_id]
            f.seek(entry.offset)
            raw = f.read(entry.size)
            if len(raw) != entry.size:
                raise BundleError(f"{where}: the file ends before the variable's {entry.size} bytes")
            out[name] = _tensor(entry, raw, big_endian, where)
    finally:
        for f in handles.values():
            f.close()
    return out
