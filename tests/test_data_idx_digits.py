"""IDX files (tiny synthetic ones and the real MNIST/USPS copies) and the built-in digits."""

from __future__ import annotations

import gzip
import struct
import time

import numpy as np
import pytest

from tests.helpers import needs_real_digits, real_digits
from unpaired.data import DataError, IdxSource, load_builtin_digits, read_idx



def _idx_bytes(arr: np.ndarray) -> bytes:
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C, np.dtype(np.float32): 0x0D}[arr.dtype]
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def _write(path, data: bytes, gz: bool) -> str:
    with (gzip.open(path, "wb") if gz else open(path, "wb")) as f:
        f.write(data)
    return str(path)


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_images_and_labels(tmp_path, gz):
    images = np.random.default_rng(0).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    labels = np.arange(5, dtype=np.uint8)
    got = read_idx(_write(tmp_path / "img", _idx_bytes(images), gz))
    assert got.dtype == np.uint8 and np.array_equal(got, images)
    assert np.array_equal(read_idx(_write(tmp_path / "lab", _idx_bytes(labels), gz)), labels)


def test_read_idx_other_dtypes_are_native_endian(tmp_path):
    ints = np.array([[1, -2], [300000, 4]], dtype=np.int32)
    got = read_idx(_write(tmp_path / "i", _idx_bytes(ints), False))
    assert got.dtype == np.dtype(np.int32) and got.dtype.isnative and np.array_equal(got, ints)


def test_read_idx_errors_name_the_file(tmp_path):
    good = _idx_bytes(np.zeros((3, 2, 2), np.uint8))
    with pytest.raises(DataError, match=r"magic\.idx.*not an IDX file.*bad magic"):
        read_idx(_write(tmp_path / "magic.idx", b"\x12\x34" + good[2:], False))
    with pytest.raises(DataError, match=r"short\.idx.*truncated.*needs 12 data bytes, found 7"):
        read_idx(_write(tmp_path / "short.idx", good[:-5], False))
    with pytest.raises(DataError, match=r"long\.idx.*longer than its header says"):
        read_idx(_write(tmp_path / "long.idx", good + b"xx", False))
    with pytest.raises(DataError, match=r"head\.idx.*inside its header"):
        read_idx(_write(tmp_path / "head.idx", good[:9], False))
    gz = gzip.compress(good * 50)
    with pytest.raises(DataError, match=r"cut\.gz.*corrupt or truncated gzip"):
        read_idx(_write(tmp_path / "cut.gz", gz[: len(gz) // 2], False))
    with pytest.raises(DataError, match=r"absent\.gz.*does not exist"):
        read_idx(tmp_path / "absent.gz")


def test_idx_source_rejects_label_files_and_checks_label_count(tmp_path):
    labels = _write(tmp_path / "labels", _idx_bytes(np.arange(4, dtype=np.uint8)), True)
    with pytest.raises(DataError, match=r"labels.*expected uint8 images"):
        IdxSource(labels)
    images = _write(tmp_path / "images", _idx_bytes(np.zeros((3, 4, 4), np.uint8)), True)
    with pytest.raises(DataError, match="has 4 labels for 3 images"):
        IdxSource(images, labels_path=labels)


def test_idx_source_resizes_and_sets_channels(tmp_path):
    arr = np.random.default_rng(1).integers(0, 256, (2, 5, 5), dtype=np.uint8)
    src = IdxSource(_write(tmp_path / "x.gz", _idx_bytes(arr), True), channels=3, size=8)
    img = src[1]
    assert len(src) == 2 and img.mode == "RGB" and img.size == (8, 8)
    assert "x.gz" in src.item_name(1)


@needs_real_digits
@pytest.mark.parametrize(  # MNIST train: our shared copy's first 6,112 images, or all 60,000 (launch.fetch)
    "folder,split,sizes,side",
    [("mnist", "train", (6112, 60000), 28), ("mnist", "t10k", (10000,), 28), ("usps", "train", (7291,), 16),
     ("usps", "t10k", (2007,), 16)],
)
def test_real_idx_files(folder, split, sizes, side):
    images = read_idx(real_digits(folder, split))
    labels = read_idx(real_digits(folder, split, "labels"))
    n = len(images)
    assert n in sizes and images.shape == (n, side, side) and images.dtype == np.uint8
    assert labels.shape == (n,) and set(np.unique(labels)) == set(range(10))
    assert images.max() == 255 and np.median(images) == 0  # white digits on black background


# ----- built-in digits -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    return load_builtin_digits("train", image_size=32)


def test_builtin_digits_shapes_and_labels(digits):
    assert digits.images_A.shape == (1500, 32, 32) and digits.images_A.dtype == np.uint8
    assert digits.images_B.shape == (2000, 32, 32) and digits.images_B.dtype == np.uint8
    assert set(np.unique(digits.labels_A)) == set(range(10)) == set(np.unique(digits.labels_B))
    test = load_builtin_digits("test", image_size=16, num_printed=50)
    assert test.images_A.shape == (297, 16, 16) and test.images_B.shape == (50, 16, 16)


def test_builtin_digits_A_is_sklearn_digits_upscaled(digits):
    from PIL import Image
    from sklearn.datasets import load_digits

    ref = load_digits()
    assert np.array_equal(digits.labels_A, ref.target[:1500])
    first = np.rint(ref.images[0] * 255 / 16).astype(np.uint8)
    expected = np.asarray(Image.fromarray(first).resize((32, 32), Image.Resampling.BICUBIC))
    assert np.array_equal(digits.images_A[0], expected)


def test_builtin_digits_same_polarity_and_varied(digits):
    for images in (digits.images_A, digits.images_B):
        border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]], axis=1)
        assert border.mean() < 40 and images.max() == 255  # white digit on black
    sevens = digits.images_B[digits.labels_B == 7]
    assert len({s.tobytes() for s in sevens}) == len(sevens)  # no two renders identical
    assert not np.array_equal(digits.images_B, digits.images_A[:1].repeat(2000, 0))


def test_builtin_digits_deterministic_and_seeded(digits):
    again = load_builtin_digits("train", image_size=32, num_printed=200)  # image i depends on i only
    assert np.array_equal(again.images_B, digits.images_B[:200]) and np.array_equal(again.images_A, digits.images_A)
    other = load_builtin_digits("train", image_size=32, seed=1, num_printed=20)
    assert not np.array_equal(other.images_B, digits.images_B[:20])


def test_builtin_digits_fast():
    start = time.perf_counter()
    load_builtin_digits("train", image_size=32)
    assert time.perf_counter() - start < 2.0


def test_builtin_digits_bad_arguments():
    with pytest.raises(DataError, match="split"):
        load_builtin_digits("val")
    with pytest.raises(DataError, match=r"config\.data\.image_size"):
        load_builtin_digits("train", image_size=4)
