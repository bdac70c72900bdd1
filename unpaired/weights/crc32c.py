"""CRC32C (Castagnoli) in numpy, and the masked form TensorFlow and LevelDB store.

The CRC register update is linear over GF(2), so the data is cut into equal lanes whose
registers are computed side by side (one vectorised table lookup per byte position), then
chained: register(A + B) = shift_|B|(register(A)) ^ register_from_zero(B), where shift_n
(n zero bytes) is itself a 32x32 bit matrix applied as four 256-entry tables. A few MB
take tens of milliseconds.
"""

from __future__ import annotations

import numpy as np

_POLY = 0x82F63B78  # reflected Castagnoli polynomial
_MASK_DELTA = 0xA282EAD8


def _byte_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        table = np.where(table & 1, (table >> 1) ^ np.uint32(_POLY), table >> 1).astype(np.uint32)
    return table


_TABLE = _byte_table()


def _zero_shift_tables(n: int) -> np.ndarray:
    """(4, 256) tables of the linear map 'feed n zero bytes' on a 32-bit register."""
    basis = (np.uint32(1) << np.arange(32, dtype=np.uint32)).astype(np.uint32)
    for _ in range(n):
        basis = _TABLE[basis & 0xFF] ^ (basis >> 8)
    tables = np.zeros((4, 256), np.uint32)
    for k in range(4):
        for bit in range(8):
            half = 1 << bit
            tables[k, half: 2 * half] = tables[k, :half] ^ basis[8 * k + bit]
    return tables


def _apply(tables: np.ndarray, register: int) -> int:
    return int(tables[0, register & 0xFF] ^ tables[1, (register >> 8) & 0xFF]
               ^ tables[2, (register >> 16) & 0xFF] ^ tables[3, register >> 24])


def _bytewise(register: int, data: np.ndarray) -> int:
    table = _TABLE
    for byte in data.tolist():
        register = int(table[(register ^ byte) & 0xFF]) ^ (register >> 8)
    return register


def crc32c(data: bytes | bytearray | memoryview | np.ndarray, crc: int = 0) -> int:
    """The CRC32C of `data`, continuing from `crc` (0 for a fresh checksum)."""
    array = np.frombuffer(memoryview(data).cast("B"), np.uint8) if not isinstance(data, np.ndarray) \
        else data.reshape(-1).view(np.uint8)
    register = (crc ^ 0xFFFFFFFF) & 0xFFFFFFFF
    n = array.size
    lane = max(64, int(np.sqrt(n)))
    lanes = n // lane
    if lanes >= 2:
        columns = np.ascontiguousarray(array[: lanes * lane].reshape(lanes, lane).T)
        registers = np.zeros(lanes, np.uint32)
        for column in columns:
            registers = _TABLE[(registers ^ column) & 0xFF] ^ (registers >> 8)
        shift = _zero_shift_tables(lane)
        for value in registers.tolist():
            register = _apply(shift, register) ^ value
        array = array[lanes * lane:]
    register = _bytewise(register, array)
    return register ^ 0xFFFFFFFF


def mask(crc: int) -> int:
    """The masked CRC that LevelDB and TensorFlow store (so a CRC of CRCs stays well mixed)."""
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def unmask(masked: int) -> int:
    """Inverse of :func:`mask`."""
    rot = (masked - _MASK_DELTA) & 0xFFFFFFFF
    return ((rot >> 17) | (rot << 15)) & 0xFFFFFFFF
