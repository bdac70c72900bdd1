"""Folder listing and image decoding: extensions, sorting, odd modes, broken files."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from unpaired.data import DataError, list_images, load_image


def _save(path, img: Image.Image, **kwargs) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img.save(path, **kwargs)
    return str(path)


def _rgb(h=6, w=8, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


# ----- list_images ------------------------------------------------------------------------------

def test_list_images_recursive_mixed_case_sorted(tmp_path):
    root = tmp_path / "trainA"
    names = ["b.JPG", "a.png", "sub/c.Jpeg", "sub/deeper/d.BMP", "e.tif", "f.TIFF", "g.ppm", "h.PnG"]
    for n in names:
        fmt = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "bmp": "BMP", "tif": "TIFF",
               "tiff": "TIFF", "ppm": "PPM"}[n.rsplit(".", 1)[1].lower()]
        _save(root / n, _rgb(), format=fmt)
    (root / "notes.txt").write_text("not an image")
    (root / "._a.png").write_bytes(b"macOS metadata")
    (root / "sub" / "x.gif").write_bytes(b"GIF89a")  # not an accepted extension (as the reference)
    got = list_images(root)
    assert got == sorted(str(root / n) for n in names)
    assert got == sorted(got)


def test_list_images_missing_folder_names_it_and_layout(tmp_path):
    with pytest.raises(DataError, match=r"nope.*does not exist.*trainA.*trainB.*testA.*testB"):
        list_images(tmp_path / "nope")


def test_list_images_empty_folder(tmp_path):
    (tmp_path / "trainA" / "sub").mkdir(parents=True)
    (tmp_path / "trainA" / "readme.md").write_text("x")
    with pytest.raises(DataError, match=r"no images found in folder .*trainA"):
        list_images(tmp_path / "trainA")


def test_list_images_file_instead_of_folder(tmp_path):
    f = tmp_path / "trainA"
    f.write_text("x")
    with pytest.raises(DataError, match="is not a folder"):
        list_images(f)


def test_list_images_survives_symlink_cycle(tmp_path):
    root = tmp_path / "trainA"
    _save(root / "a.png", _rgb())
    os.symlink(root, root / "loop")
    assert list_images(root) == [str(root / "a.png")]


# ----- load_image -------------------------------------------------------------------------------

def test_rgb_roundtrip_and_grayscale_conversion(tmp_path):
    img = _rgb()
    path = _save(tmp_path / "x.png", img)
    rgb = load_image(path, 3)
    assert rgb.mode == "RGB" and np.array_equal(np.asarray(rgb), np.asarray(img))
    gray = load_image(path, 1)
    assert gray.mode == "L"
    assert np.array_equal(np.asarray(gray), np.asarray(img.convert("L")))  # reference: Grayscale(1)


def test_grayscale_file_to_three_channels(tmp_path):
    arr = np.arange(48, dtype=np.uint8).reshape(6, 8) * 5
    path = _save(tmp_path / "g.png", Image.fromarray(arr, "L"))
    rgb = np.asarray(load_image(path, 3))
    assert rgb.shape == (6, 8, 3)
    assert all(np.array_equal(rgb[..., c], arr) for c in range(3))
    assert np.array_equal(np.asarray(load_image(path, 1)), arr)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32768, 65535], [128, 129, 1000, 60000]], dtype=np.uint16)
    path = _save(tmp_path / "g16.png", Image.fromarray(values))
    with Image.open(path) as opened:
        assert opened.mode == "I;16"
    out = np.asarray(load_image(path, 1))
    assert out.dtype == np.uint8
    assert np.array_equal(out, np.rint(values / 257.0).astype(np.uint8))
    assert out[0, 2] == 128  # mid grey stays mid grey (PIL's own convert would give 255)
    rgb = np.asarray(load_image(path, 3))
    assert rgb.shape == (2, 4, 3) and np.array_equal(rgb[..., 1], out)


def test_thirty_two_bit_int_and_float_tiff(tmp_path):
    ints = np.array([[0, 257 * 100, 70000]], dtype=np.int32)  # 'I': taken as 16-bit, clipped
    path = _save(tmp_path / "i.tif", Image.fromarray(ints))
    assert np.array_equal(np.asarray(load_image(path, 1)), [[0, 100, 255]])
    floats = np.array([[0.0, 0.5, 2.0]], dtype=np.float32)  # 'F': taken as [0, 1]
    path = _save(tmp_path / "f.tif", Image.fromarray(floats))
    assert np.array_equal(np.asarray(load_image(path, 1)), [[0, 128, 255]])


def test_rgba_la_palette_cmyk_bilevel(tmp_path):
    rgba = Image.new("RGBA", (4, 3), (10, 20, 30, 0))
    out = np.asarray(load_image(_save(tmp_path / "a.png", rgba), 3))
    assert out.shape == (3, 4, 3) and (out == [10, 20, 30]).all()  # alpha dropped, as the reference
    la = np.asarray(load_image(_save(tmp_path / "la.png", Image.new("LA", (4, 3), (100, 7))), 1))
    assert la.shape == (3, 4) and (la == 100).all()
    pal = Image.new("RGB", (4, 3), (255, 0, 0)).convert("P")
    assert (np.asarray(load_image(_save(tmp_path / "p.png", pal), 3)) == [255, 0, 0]).all()
    transparent = _save(tmp_path / "pt.png", pal, transparency=0)
    assert (np.asarray(load_image(transparent, 3)) == [255, 0, 0]).all()
    cmyk = _save(tmp_path / "c.jpg", Image.new("CMYK", (8, 8), (0, 255, 255, 0)))
    out = np.asarray(load_image(cmyk, 3)).astype(int)
    assert out.shape == (8, 8, 3) and (abs(out - [255, 0, 0]) <= 3).all()
    bilevel = np.asarray(load_image(_save(tmp_path / "b.bmp", Image.new("1", (4, 4), 1)), 1))
    assert (bilevel == 255).all()


def test_bytes_input(tmp_path):
    path = _save(tmp_path / "x.png", _rgb())
    with open(path, "rb") as f:
        data = f.read()
    assert np.array_equal(np.asarray(load_image(data, 3)), np.asarray(load_image(path, 3)))
    with pytest.raises(DataError, match="my-record"):
        load_image(b"garbage", 3, name="my-record")


def test_corrupt_file_names_it(tmp_path):
    path = tmp_path / "bad.jpg"
    path.write_bytes(b"this is not a jpeg at all")
    with pytest.raises(DataError, match=r"bad\.jpg"):
        load_image(path, 3)


@pytest.mark.parametrize("fmt,suffix", [("PNG", "png"), ("JPEG", "jpg")])
def test_truncated_file_names_it(tmp_path, fmt, suffix):
    path = tmp_path / f"full.{suffix}"
    _rgb(64, 64).save(path, format=fmt)
    data = path.read_bytes()
    cut = tmp_path / f"cut.{suffix}"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"cut\.{suffix}.*(truncated|corrupt)"):
        load_image(cut, 3)


def test_missing_file_names_it(tmp_path):
    with pytest.raises(DataError, match=r"gone\.png.*does not exist"):
        load_image(tmp_path / "gone.png", 3)


def test_bad_channel_count():
    with pytest.raises(DataError, match="1 or 3 channels"):
        load_image(b"", 2)
