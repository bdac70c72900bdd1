"""N named domains with optional labels: CycleGAN's draws unchanged, 3-domain and labelled runs, errors."""

from __future__ import annotations

import os

import ml_collections
import numpy as np
import pytest
from PIL import Image

from configs import cyclegan as cyclegan_config
from unpaired import config_validation
from unpaired.data import (
    ArraySource, DataError, DataSpec, Preprocess, UnpairedLoader, make_loader, read_idx, render_digits,
)
from unpaired.data.builtin_digits import handwritten_digits, printed_digits
from unpaired.methods.cyclegan import CycleGAN

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(REPO_ROOT, "..", "shared", "data")
needs_idx = pytest.mark.skipif(not os.path.isdir(SHARED_DATA), reason=f"real IDX files not present at {SHARED_DATA}")
MNIST = os.path.join(SHARED_DATA, "mnist")
USPS = os.path.join(SHARED_DATA, "usps")


def _cfg(**kw) -> ml_collections.ConfigDict:
    base = cyclegan_config.get_config("digits").data
    base.unlock()
    base.update(dict(image_size=16, crop_size=16, load_size=16, num_workers=0))
    base.update(kw)
    return base


def _same(b1: dict, b2: dict) -> bool:
    return b1.keys() == b2.keys() and all(np.array_equal(b1[k], b2[k]) for k in b1)


def _concat(parts: list[dict]) -> dict:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _old_rule_batch(images_a, images_b, step, *, batch_size, seed, transform, channels=1) -> dict:
    """Today's (A, B) draw rule written out independently: what CycleGAN's batches must stay."""
    n_a, n_b = len(images_a), len(images_b)
    steps = max(n_a, n_b) // batch_size
    epoch, j = divmod(step, steps)
    perm = np.random.default_rng([seed, epoch]).permutation(max(n_a, n_b))
    out = {"A": [], "B": []}
    for p in range(j * batch_size, (j + 1) * batch_size):
        rng_a = np.random.default_rng([seed, epoch, p, 0])
        rng_b = np.random.default_rng([seed, epoch, p, 1])
        b = int(rng_b.integers(n_b))
        for d, img, rng in (("A", images_a[perm[p] % n_a], rng_a), ("B", images_b[b], rng_b)):
            pil = Image.fromarray(img, "L").convert("L" if channels == 1 else "RGB")
            out[d].append(transform(pil, rng))
    return {d: np.stack(x).astype(np.float32) for d, x in out.items()}


# ----- CycleGAN's batches are today's --------------------------------------------------------

def test_cyclegan_digits_batches_follow_the_old_rule_bit_for_bit():
    cfg = _cfg(preprocess="resize_and_crop", load_size=20, crop_size=16, no_flip=False)
    legacy = make_loader(cfg, split="train", batch_size=4, seed=3, input_nc=1, output_nc=1)
    config = cyclegan_config.get_config("digits")
    with_spec = make_loader(cfg, split="train", batch_size=4, seed=3, spec=CycleGAN.data_spec(config))
    images_a, _ = handwritten_digits("train", image_size=16)
    images_b, _ = printed_digits("train", image_size=16)
    transform = Preprocess(mode="resize_and_crop", load_size=20, crop_size=16, flip=True)
    for step in (0, 1, 374, 375, 900):  # 500 steps per epoch: epochs 0 and 1
        expected = _old_rule_batch(images_a, images_b, step, batch_size=4, seed=3, transform=transform)
        got = legacy.batch(step)
        assert set(got) == {"A", "B"}
        for d in "AB":
            assert np.array_equal(got[d], expected[d]), (step, d)
        assert _same(got, with_spec.batch(step))


@needs_idx
def test_cyclegan_idx_batches_follow_the_old_rule_bit_for_bit():
    cfg = _cfg(source="idx", idx_A=os.path.join(MNIST, "train-images-idx3-ubyte.gz"), idx_B=USPS,
               image_size=32, crop_size=32, load_size=32, preprocess="none", no_flip=True)
    loader = make_loader(cfg, split="train", batch_size=8, seed=1, spec=DataSpec(("A", "B"), {"A": 1, "B": 1}))
    mnist = read_idx(os.path.join(MNIST, "train-images-idx3-ubyte.gz"))
    usps = read_idx(os.path.join(USPS, "train-images-idx3-ubyte.gz"))
    transform = Preprocess(mode="none", load_size=32, crop_size=32, flip=False)

    def expected(images: np.ndarray, picks: list[int]) -> np.ndarray:
        pils = [Image.fromarray(images[i], "L").resize((32, 32), Image.Resampling.BICUBIC) for i in picks]
        return np.stack([transform(x, np.random.default_rng(0)) for x in pils]).astype(np.float32)

    n_a, n_b = len(mnist), len(usps)
    steps = max(n_a, n_b) // 8
    for step in (0, 7, steps - 1, steps + 2):
        epoch, j = divmod(step, steps)
        perm = np.random.default_rng([1, epoch]).permutation(max(n_a, n_b))
        positions = range(j * 8, j * 8 + 8)
        want_a = [int(perm[p]) % n_a for p in positions]
        want_b = [int(np.random.default_rng([1, epoch, p, 1]).integers(n_b)) for p in positions]
        assert loader.indices(step) == {"A": want_a, "B": want_b}
        got = loader.batch(step)
        assert set(got) == {"A", "B"}
        assert np.array_equal(got["A"], expected(mnist, want_a))
        assert np.array_equal(got["B"], expected(usps, want_b))
