"""LevelDB table files (SSTables) read as (key, value) pairs: TensorFlow's `.index` format.

Layout: data blocks, a metaindex block, an index block, then a 48-byte footer (two block
handles as varints, padding, an 8-byte magic). A block holds prefix-compressed entries
(shared, unshared and value lengths as varints, then the key's new bytes and the value),
then restart offsets (uint32 each) and their count; each block is followed by a 1-byte
compression type and the masked CRC32C of the block and that byte.
"""

from __future__ import annotations

import struct
from typing import Iterator

from unpaired.weights import crc32c

_MAGIC = 0xDB4775248B80FB57
_FOOTER_SIZE = 48
_TRAILER_SIZE = 5
_COMPRESSION = {0: None, 1: "snappy", 2: "zlib", 3: "lz4", 4: "zstd"}


class SSTableError(ValueError):
    """A table file is malformed or uses a feature we do not read; the message names the file."""


def read_varint(data: bytes, pos: int, source: str) -> tuple[int, int]:
    """(value, next position) of the unsigned LEB128 varint at `pos`."""
    value, shift = 0, 0
    while True:
        if pos >= len(data) or shift > 63:
            raise SSTableError(f"{source}: truncated or overlong varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _handle(data: bytes, pos: int, source: str) -> tuple[int, int, int]:
    offset, pos = read_varint(data, pos, source)
    size, pos = read_varint(data, pos, source)
    return offset, size, pos


def _block(table: bytes, offset: int, size: int, source: str) -> bytes:
    """One block's contents, its trailer checked (compression type and masked CRC32C)."""
    end = offset + size
    if offset < 0 or end + _TRAILER_SIZE > len(table):
        raise SSTableError(f"{source}: a block at offset {offset} runs past the end of the file")
    kind = table[end]
    if kind != 0:
        name = _COMPRESSION.get(kind, f"type {kind}")
        raise SSTableError(f"{source}: a {name}-compressed block; only uncompressed tables "
                           f"(as TensorFlow writes them) are read")
    (stored,) = struct.unpack_from("<I", table, end + 1)
    actual = crc32c.mask(crc32c.crc32c(table[offset: end + 1]))
    if stored != actual:
        raise SSTableError(f"{source}: checksum mismatch in the block at offset {offset}")
    return table[offset:end]


def _entries(block: bytes, source: str) -> Iterator[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise SSTableError(f"{source}: a block too short for its restart count")
    (restarts,) = struct.unpack_from("<I", block, len(block) - 4)
    limit = len(block) - 4 - 4 * restarts
    if limit < 0:
        raise SSTableError(f"{source}: a block with {restarts} restarts does not fit")
    pos, key = 0, b""
    while pos < limit:
        shared, pos = read_varint(block, pos, source)
        unshared, pos = read_varint(block, pos, source)
        value_size, pos = read_varint(block, pos, source)
        if shared > len(key) or pos + unshared + value_size > limit:
            raise SSTableError(f"{source}: a corrupt block entry")
        key = key[:shared] + block[pos: pos + unshared]
        pos += unshared
        yield key, block[pos: pos + value_size]
        pos += value_size


def read_table(table: bytes, source: str) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of a table file's bytes, in key order."""
    if len(table) < _FOOTER_SIZE:
        raise SSTableError(f"{source}: too short for a table footer")
    footer = table[-_FOOTER_SIZE:]
    (magic,) = struct.unpack_from("<Q", footer, _FOOTER_SIZE - 8)
    if magic != _MAGIC:
        raise SSTableError(f"{source}: not a table file (bad magic number)")
    _, _, pos = _handle(footer, 0, source)  # metaindex: TensorFlow leaves it empty
    index_offset, index_size, _ = _handle(footer, pos, source)
    for _, handle in _entries(_block(table, index_offset, index_size, source), source):
        offset, size, _ = _handle(handle, 0, source)
        yield from _entries(_block(table, offset, size, source), source)
