"""config.data.image_resize='lanczos': IDX digits resized as the DTN reference does
(PIL Image.ANTIALIAS = LANCZOS, 28x28 or 16x16 -> 32x32 on the uint8 image, then to
[-1, 1]), checked against an independent numpy statement of Pillow's separable Lanczos-3
(horizontal pass then vertical, 22-bit fixed-point weights, each pass rounded to uint8).
"""

import math

import numpy as np
import pytest

from configs import dtn as dtn_config
from unpaired import data
from unpaired.config_validation import ConfigError, validate
from unpaired.data.idx import read_idx
from unpaired.data.sources import IdxSource
from unpaired.methods.dtn import DTN
from tests.helpers import needs_real_digits as needs_data, real_digits

MNIST, USPS = real_digits("mnist"), real_digits("usps")
BITS = 22  # Pillow's PRECISION_BITS for 8-bit images


def _lanczos(x: float) -> float:
    if abs(x) >= 3:
        return 0.0
    sinc = lambda v: 1.0 if v == 0 else math.sin(math.pi * v) / (math.pi * v)
    return sinc(x) * sinc(x / 3)


def _weights(n_in: int, n_out: int) -> list[tuple[int, list[int]]]:
    """(first input index, fixed-point weights) per output pixel, Pillow's rule."""
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 3.0 * filterscale
    out = []
    for xx in range(n_out):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), n_in)
        w = [_lanczos((x + xmin - center + 0.5) / filterscale) for x in range(xmax - xmin)]
        total = sum(w)
        out.append((xmin, [int(v / total * (1 << BITS) + (0.5 if v >= 0 else -0.5)) for v in w]))
    return out


def _pass(rows: np.ndarray, n_out: int) -> np.ndarray:
    """Resample the last axis of uint8 `rows` to n_out, rounding and clipping to uint8."""
    result = np.zeros(rows.shape[:-1] + (n_out,), np.uint8)
    for xx, (xmin, w) in enumerate(_weights(rows.shape[-1], n_out)):
        acc = np.full(rows.shape[:-1], 1 << (BITS - 1), np.int64)
        for k, wk in enumerate(w):
            acc += rows[..., xmin + k].astype(np.int64) * wk
        result[..., xx] = np.clip(acc >> BITS, 0, 255)
    return result


def lanczos_resize(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W] -> [size, size]: horizontal pass, then vertical."""
    horizontal = _pass(image, size)
    return _pass(horizontal.T, size).T


@needs_data
@pytest.mark.parametrize("path", [MNIST, USPS])
def test_idx_lanczos_matches_the_independent_resize(path):
    raw = read_idx(path)[:20]
    lanczos = IdxSource(path, size=32, resample="lanczos")
    bicubic = IdxSource(path, size=32)
    differs = 0
    for i in range(20):
        ours = np.asarray(lanczos[i])
        assert ours.shape == (32, 32)
        np.testing.assert_array_equal(ours, lanczos_resize(raw[i], 32), err_msg=str(i))
        differs += int(np.any(ours != np.asarray(bicubic[i])))
    assert differs >= 15  # the filter is a real choice, not a no-op


@needs_data
def test_mnist2usps_preset_batches_are_lanczos_images_in_unit_range():
    config = dtn_config.get_config("mnist2usps")
    assert (config.data.idx_A, config.data.idx_B) == (MNIST, USPS)
    assert config.data.image_resize == "lanczos"
    assert dtn_config.get_config("digits").data.image_resize == "bicubic"
    spec = DTN.data_spec(config)
    loader = data.make_loader(config.data, split="train", batch_size=4, seed=0, spec=spec)
    try:
        batch, indices = loader.batch(0), loader.indices(0)
    finally:
        loader.close()
    for domain, path in (("A", MNIST), ("B", USPS)):
        raw = read_idx(path)
        expected = np.stack([lanczos_resize(raw[i], 32) for i in indices[domain]])
        expected = expected[..., None].astype(np.float64) / 127.5 - 1
        np.testing.assert_allclose(np.asarray(batch[domain]), expected, atol=1e-6)


def test_a_bad_filter_names_the_key():
    config = dtn_config.get_config("digits")
    config.data.image_resize = "nearest"
    with pytest.raises(ConfigError, match="config.data.image_resize"):
        validate(config)
