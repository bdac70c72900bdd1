"""unpaired.weights.tf_bundle: a 2-shard TF checkpoint written by real TensorFlow, read without it.

The fixture (tests/fixtures/tf_bundle/dtn-20.*) was made by
tests/fixtures/make_tf_checkpoint.py; its values are `expected_value` of the script's
spec, recomputed here with numpy alone.
"""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from tests.fixtures.make_tf_checkpoint import VARIABLES, expected_value
from unpaired.weights import BundleError, list_tf_checkpoint, read_tf_checkpoint
from unpaired.weights import crc32c, sstable

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "tf_bundle"
PREFIX = FIXTURE / "dtn-20"


def _expected():
    return {name: expected_value(i, shape, dtype) for i, (name, shape, dtype, _) in enumerate(VARIABLES)}


@pytest.fixture
def copy(tmp_path) -> Path:
    for f in FIXTURE.iterdir():
        shutil.copy(f, tmp_path / f.name)
    return tmp_path / "dtn-20"


@pytest.mark.parametrize("given", ["prefix", "index", "data"])
def test_every_variable_reads_back_equal_name_by_name(given):
    path = {"prefix": PREFIX, "index": f"{PREFIX}.index",
            "data": f"{PREFIX}.data-00001-of-00002"}[given]
    ours = read_tf_checkpoint(path)
    expected = _expected()
    assert sorted(ours) == sorted(expected)
    for name, value in expected.items():
        assert ours[name].dtype == value.dtype, name
        assert ours[name].shape == value.shape, name
        np.testing.assert_array_equal(ours[name], value, err_msg=name)
    assert ours["global_step"].shape == () and ours["global_step"].dtype == np.int64
    assert ours["extra/names"].tolist() == [b"dtn-17-0", b"dtn-17-1dtn-17-1"]


def test_listing_reads_no_tensor_data(copy):
    for shard in copy.parent.glob("dtn-20.data-*"):
        shard.unlink()
    entries = list_tf_checkpoint(copy)
    spec = {name: (shape, dtype) for name, shape, dtype, _ in VARIABLES}
    assert sorted(entries) == sorted(spec)
    for name, (shape, dtype) in spec.items():
        assert entries[name].shape == shape
        assert entries[name].dtype == (np.dtype(object) if dtype == "string" else np.dtype(dtype))
    assert {e.shard_id for e in entries.values()} == {0, 1}  # the fixture really has 2 shards
    assert entries["generator/conv_transpose1/weights"].size == 4 * 4 * 16 * 8 * 4


def test_subset_by_name_and_unknown_name():
    names = ["content_extractor/conv1/weights", "generator/bn1/moving_variance"]
    ours = read_tf_checkpoint(PREFIX, names)
    assert list(ours) == names
    with pytest.raises(BundleError, match=r"dtn-20.index has no variable 'generator/conv9/weights'"):
        read_tf_checkpoint(PREFIX, ["generator/conv9/weights"])


def test_flipped_byte_is_a_crc_error_naming_the_variable(copy):
    name = "generator/conv_transpose1/weights"
    entry = list_tf_checkpoint(copy)[name]
    shard = Path(f"{copy}.data-{entry.shard_id:05d}-of-00002")
    data = bytearray(shard.read_bytes())
    data[entry.offset + 37] ^= 0x10
    shard.write_bytes(bytes(data))
    with pytest.raises(BundleError, match=rf"{shard.name}: variable '{name}': checksum mismatch"):
        read_tf_checkpoint(copy)
    read_tf_checkpoint(copy, ["content_extractor/conv1/weights"])  # other variables still read


def test_missing_shard_names_the_file(copy):
    Path(f"{copy}.data-00000-of-00002").unlink()
    with pytest.raises(BundleError, match=r"dtn-20\.data-00000-of-00002: no such file"):
        read_tf_checkpoint(copy)
    assert "discriminator/conv4/weights" in read_tf_checkpoint(copy, ["discriminator/conv4/weights"])


def test_missing_or_corrupt_index_is_named(copy, tmp_path):
    with pytest.raises(BundleError, match=r"model/dtn-2000\.index: no such file"):
        read_tf_checkpoint(tmp_path / "model" / "dtn-2000")
    index = Path(f"{copy}.index")
    table = bytearray(index.read_bytes())
    table[3] ^= 0xFF  # inside the first data block
    index.write_bytes(bytes(table))
    with pytest.raises(BundleError, match=r"dtn-20\.index: checksum mismatch"):
        list_tf_checkpoint(copy)


def test_compressed_blocks_are_refused_clearly(copy):
    index = Path(f"{copy}.index")
    table = bytearray(index.read_bytes())
    footer = bytes(table[-48:])
    _, pos = sstable.read_varint(footer, 0, "footer")
    _, pos = sstable.read_varint(footer, pos, "footer")
    offset, pos = sstable.read_varint(footer, pos, "footer")
    size, _ = sstable.read_varint(footer, pos, "footer")
    table[offset + size] = 1  # the index block's compression type: snappy
    index.write_bytes(bytes(table))
    with pytest.raises(BundleError, match=r"dtn-20\.index: a snappy-compressed block"):
        list_tf_checkpoint(copy)


def test_crc32c_known_values_and_lanes():
    assert crc32c.crc32c(b"123456789") == 0xE3069283
    assert crc32c.crc32c(b"") == 0
    assert crc32c.crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4 test vectors
    assert crc32c.crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c.crc32c(bytes(range(32))) == 0x46DD794E
    rng = np.random.RandomState(0)
    for n in [1, 63, 64, 65, 200, 4097, 100_003]:
        data = rng.randint(0, 256, n).astype(np.uint8)
        bytewise = crc32c._bytewise(0xFFFFFFFF, data) ^ 0xFFFFFFFF
        assert crc32c.crc32c(data) == bytewise == crc32c.crc32c(data.tobytes()), n
        assert crc32c.crc32c(data[n // 3:], crc32c.crc32c(data[: n // 3])) == bytewise, n
    for value in [0, 1, 0xE3069283, 0xFFFFFFFF]:
        assert crc32c.unmask(crc32c.mask(value)) == value


def test_big_endian_header_is_honoured():
    """A bundle flagged big-endian has its numbers byte-swapped (bfloat16 included)."""
    from unpaired.weights import tf_bundle

    entry = tf_bundle.BundleEntry(name="v", dtype=np.dtype(ml_dtypes.bfloat16), shape=(2,),
                                  shard_id=0, offset=0, size=4, crc32c=0, sliced=False)
    raw = np.array([1.5, -2.0], ml_dtypes.bfloat16).view(np.uint16).astype(">u2").tobytes()
    entry = tf_bundle.BundleEntry(**{**entry.__dict__, "crc32c": crc32c.mask(crc32c.crc32c(raw))})
    value = tf_bundle._tensor(entry, raw, True, "v")
    np.testing.assert_array_equal(value.astype(np.float32), [1.5, -2.0])
    floats = struct.pack(">2f", 0.25, 8.0)
    entry = tf_bundle.BundleEntry(name="f", dtype=np.dtype(np.float32), shape=(2,), shard_id=0,
                                  offset=0, size=8, crc32c=crc32c.mask(crc32c.crc32c(floats)),
                                  sliced=False)
    np.testing.assert_array_equal(tf_bundle._tensor(entry, floats, True, "f"), [0.25, 8.0])
