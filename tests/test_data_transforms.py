"""The reference preprocess options: sizes, resampling, randomness, validation."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from unpaired.data import DataError, Preprocess, preprocess, validate_preprocess
from unpaired.data.transforms import to_unit_range


def _img(w=20, h=14, mode="RGB", seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


def _run(img, mode, load, crop, flip=False, seed=0):
    return preprocess(img, mode=mode, load_size=load, crop_size=crop, flip=flip,
                      rng=np.random.default_rng(seed))


@pytest.mark.parametrize(
    "mode,size,load,crop,expected",
    [
        ("resize_and_crop", (20, 14), 12, 8, (8, 8, 3)),
        ("crop", (20, 14), 99, 8, (8, 8, 3)),
        ("scale_width", (20, 14), 12, 8, (8, 12, 3)),  # h = max(int(12*14/20)=8, 8)
        ("scale_width", (20, 10), 12, 8, (8, 12, 3)),  # 6 < crop_size -> 8 (reference floor)
        ("scale_width", (12, 40), 12, 8, (40, 12, 3)),  # already load_size wide: untouched
        ("scale_width_and_crop", (20, 30), 12, 8, (8, 8, 3)),
        ("none", (30, 45), 1, 4, (44, 32, 3)),  # round(7.5)*4=32, round(11.25)*4=44
        ("none", (16, 12), 1, 4, (12, 16, 3)),
    ],
)
def test_output_shapes(mode, size, load, crop, expected):
    out = _run(_img(*size), mode, load, crop, flip=True)
    assert out.shape == expected and out.dtype == np.float32


def test_grayscale_keeps_one_channel():
    assert _run(_img(mode="L"), "resize_and_crop", 12, 8).shape == (8, 8, 1)


def test_value_range_and_normalisation():
    arr = np.array([[0, 128, 255]], dtype=np.uint8)
    out = to_unit_range(arr)
    assert out.dtype == np.float32
    mid = (np.float32(128) / np.float32(255) - np.float32(0.5)) / np.float32(0.5)
    np.testing.assert_array_equal(out[..., 0], np.array([[-1.0, mid, 1.0]], np.float32))
    x = _run(_img(40, 40), "resize_and_crop", 36, 32, flip=True)
    assert -1.0 <= x.min() and x.max() <= 1.0 and x.min() < -0.9 and x.max() > 0.9


def test_resize_is_pil_bicubic_and_distorts_aspect():
    img = _img(30, 10)
    out = _run(img, "resize_and_crop", 16, 16)  # load == crop: the crop is the whole image
    expected = to_unit_range(np.asarray(img.resize((16, 16), Image.Resampling.BICUBIC)))
    np.testing.assert_array_equal(out, expected)
    bilinear = to_unit_range(np.asarray(img.resize((16, 16), Image.Resampling.BILINEAR)))
    assert not np.array_equal(out, bilinear)


def test_scale_width_and_none_use_bicubic():
    img = _img(30, 18)
    np.testing.assert_array_equal(
        _run(img, "scale_width", 20, 8),
        to_unit_range(np.asarray(img.resize((20, 12), Image.Resampling.BICUBIC))),
    )
    np.testing.assert_array_equal(
        _run(img, "none", 1, 4),
        # Python's round() as the reference: 30/4=7.5 -> 8, 18/4=4.5 -> 4 (half to even)
        to_unit_range(np.asarray(img.resize((32, 16), Image.Resampling.BICUBIC))),
    )


def test_crop_mode_is_a_window_of_the_original():
    img = _img(20, 14)
    full = to_unit_range(np.asarray(img))
    seen = set()
    for seed in range(30):
        out = _run(img, "crop", 8, 8, seed=seed)
        hits = [(t, l) for t in range(7) for l in range(13)
                if np.array_equal(full[t:t + 8, l:l + 8], out)]
        assert hits
        seen.add(hits[0])
    assert len(seen) > 5  # the offset is random


def test_flip_happens_for_some_seeds_and_not_others():
    img = _img(8, 8)
    plain = _run(img, "crop", 8, 8, flip=False)
    flipped = [np.array_equal(_run(img, "crop", 8, 8, flip=True, seed=s), plain[:, ::-1]) for s in range(40)]
    unflipped = [np.array_equal(_run(img, "crop", 8, 8, flip=True, seed=s), plain) for s in range(40)]
    assert any(flipped) and any(unflipped)
    assert all(f != u for f, u in zip(flipped, unflipped))
    assert all(np.array_equal(_run(img, "crop", 8, 8, flip=False, seed=s), plain) for s in range(10))


def test_same_rng_same_output():
    img = _img(30, 30)
    a = _run(img, "resize_and_crop", 24, 16, flip=True, seed=7)
    b = _run(img, "resize_and_crop", 24, 16, flip=True, seed=7)
    np.testing.assert_array_equal(a, b)


def test_image_smaller_than_crop_names_file_and_sizes():
    with pytest.raises(DataError, match=r"small\.png is 6x5 pixels, smaller than config\.data\.crop_size=8"):
        preprocess(_img(6, 5), mode="crop", load_size=8, crop_size=8, flip=False,
                   rng=np.random.default_rng(0), name="small.png")
    # resize_and_crop upscales anything to load_size first, so tiny images are fine there
    assert _run(_img(3, 2), "resize_and_crop", 12, 8).shape == (8, 8, 3)


@pytest.mark.parametrize(
    "mode,load,crop,pattern",
    [
        ("resize", 286, 256, r"config\.data\.preprocess='resize' is not one of"),
        ("resize_and_crop", 256, 288, r"config\.data\.crop_size=288 is larger than config\.data\.load_size=256"),
        ("scale_width_and_crop", 100, 120, r"config\.data\.crop_size=120 is larger"),
        ("crop", 286, 255, r"config\.data\.crop_size=255 must be a multiple of 4"),
        ("resize_and_crop", 0, 256, r"config\.data\.load_size=0 must be a positive integer"),
        ("crop", 286, -4, r"config\.data\.crop_size=-4 must be a positive integer"),
        ("crop", 286, 25.6, r"config\.data\.crop_size=25\.6 must be a positive integer"),
    ],
)
def test_validation_names_the_key(mode, load, crop, pattern):
    with pytest.raises(DataError, match=pattern):
        validate_preprocess(mode, load, crop)
    with pytest.raises(DataError, match=pattern):
        Preprocess(mode=mode, load_size=load, crop_size=crop)


def test_valid_combinations_pass():
    for mode in ("resize_and_crop", "crop", "scale_width", "scale_width_and_crop", "none"):
        validate_preprocess(mode, 286, 256)
    validate_preprocess("none", 1, 3)  # 'none' ignores the sizes' multiples
