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
from tests.helpers import needs_real_digits as needs_idx, real_digits

MNIST = os.path.dirname(real_digits("mnist"))
USPS = os.path.dirname(real_digits("usps"))


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


# ----- three domains on the built-in digits ---------------------------------------------------

THREE = DataSpec(("A", "B", "C"), {"A": 1, "B": 1, "C": 3}, labels=("A", "B", "C"))


@pytest.fixture(scope="module")
def three_digits():
    return make_loader(_cfg(preprocess="none", no_flip=True), split="train", batch_size=6, seed=2, spec=THREE)


def test_three_digit_domains_batch_with_labels(three_digits):
    loader = three_digits
    assert loader.domains == ("A", "B", "C") and loader.sizes == {"A": 1500, "B": 2000, "C": 1500}
    batch = loader.batch(5)
    assert list(batch) == ["A", "A_label", "B", "B_label", "C", "C_label"]
    assert batch["C"].shape == (6, 16, 16, 3) and batch["C"].dtype == np.float32
    renderings = {"A": "handwritten", "B": "printed", "C": "thick"}
    idx = loader.indices(5)
    epoch, positions = loader.positions(5)
    assert idx["C"] == [int(np.random.default_rng([2, epoch, p, 2]).integers(1500)) for p in positions]
    for d, name in renderings.items():
        images, labels = render_digits(name, "train", image_size=16)
        assert batch[f"{d}_label"].dtype == np.int32
        assert np.array_equal(batch[f"{d}_label"], labels[idx[d]])
        pixels = images[idx[d]].astype(np.float32)[..., None]
        assert np.allclose(batch[d], (pixels / 255 - 0.5) / 0.5, atol=1e-6)  # C: gray repeated to RGB
    thick, _ = render_digits("thick", "train", image_size=16)
    hand, _ = render_digits("handwritten", "train", image_size=16)
    assert (thick >= hand).all() and thick.sum() > 1.2 * hand.sum()  # bolder strokes, same digits


def _rebuilt(loader: UnpairedLoader, **kw) -> UnpairedLoader:
    """A fresh loader over the same sources and options (a restarted run, or another host)."""
    kw.setdefault("num_workers", 0)
    return UnpairedLoader(loader.sources, transforms=loader.transforms, labels=tuple(loader.labels),
                          batch_size=loader.batch_size, seed=loader.seed, serial_batches=loader.serial_batches, **kw)


def test_three_digit_domains_resume_and_shards(three_digits):
    with three_digits.iterate(0, 5) as it:
        stream = list(it)
    with _rebuilt(three_digits, num_workers=2).iterate(3, 2) as it:
        assert all(_same(x, y) for x, y in zip(it, stream[3:], strict=True))
    shards = [_rebuilt(three_digits, shard_index=i, shard_count=3) for i in range(3)]
    assert _same(_concat([s.batch(4) for s in shards]), stream[4])


def test_digit_renderings_by_name_and_list():
    spec = DataSpec(("A", "inverted", "X"), {"A": 1, "inverted": 1, "X": 1}, labels=("X",))
    loader = make_loader(_cfg(preprocess="none", no_flip=True, digits="X=printed"), split="test", batch_size=2,
                         seed=0, spec=spec)
    assert loader.sizes == {"A": 297, "inverted": 400, "X": 400}
    inverted, _ = render_digits("inverted", "test", image_size=16)
    printed, labels = render_digits("printed", "test", image_size=16)
    assert np.array_equal(inverted, 255 - printed)
    batch = loader.batch(1)  # test split: serial, position 2 and 3
    assert np.array_equal(batch["X_label"], labels[[2, 3]])
    assert np.allclose(batch["inverted"][..., 0], (inverted[[2, 3]] / 255 - 0.5) / 0.5, atol=1e-6)


# ----- labelled IDX -----------------------------------------------------------------------------

@needs_idx
def test_labelled_idx_run_three_domains_resume_and_shards():
    cfg = _cfg(source="idx", idx_A=MNIST, idx_B=os.path.join(USPS, "train-images-idx3-ubyte.gz"),
               idx=f"C={USPS}", idx_labels=f"C={os.path.join(USPS, 'train-labels-idx1-ubyte.gz')}",
               image_size=16, preprocess="none", no_flip=True)
    spec = DataSpec(("A", "B", "C"), {"A": 1, "B": 1, "C": 1}, labels=("A", "B", "C"))
    loader = make_loader(cfg, split="train", batch_size=8, seed=4, spec=spec)
    labels = {"A": read_idx(os.path.join(MNIST, "train-labels-idx1-ubyte.gz")),
              "B": read_idx(os.path.join(USPS, "train-labels-idx1-ubyte.gz"))}
    labels["C"] = labels["B"]
    with loader.iterate(0, 4) as it:
        stream = list(it)
    for k, batch in enumerate(stream):
        idx = loader.indices(k)
        for d in "ABC":
            assert batch[f"{d}_label"].dtype == np.int32
            assert np.array_equal(batch[f"{d}_label"], labels[d][idx[d]])
        assert not np.array_equal(batch["B"], batch["C"])  # C has its own draws
    with _rebuilt(loader, num_workers=2).iterate(2, 1) as it:
        assert _same(next(it), stream[2])
    halves = [_rebuilt(loader, shard_index=i, shard_count=2) for i in range(2)]
    assert _same(_concat([h.batch(3) for h in halves]), stream[3])
    test = make_loader(cfg, split="test", batch_size=8, seed=4, spec=spec)  # t10k files and labels by name
    t10k = read_idx(os.path.join(MNIST, "t10k-labels-idx1-ubyte.gz"))
    assert test.sizes["A"] == len(t10k) and np.array_equal(test.batch(2)["A_label"], t10k[16:24])


def test_idx_labels_found_beside_the_images_by_mnist_naming(tmp_path):
    from tests.test_data_idx_digits import _idx_bytes  # a tiny IDX writer

    images = np.arange(5, dtype=np.uint8)[:, None, None] * np.ones((1, 8, 8), np.uint8)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(_idx_bytes(images))
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(_idx_bytes(np.array([9, 8, 7, 6, 5], np.uint8)))
    cfg = _cfg(source="idx", idx_A=str(tmp_path / "train-images-idx3-ubyte"), idx_B=str(tmp_path),
               image_size=8, preprocess="none", no_flip=True)
    spec = DataSpec(("A", "B"), {"A": 1, "B": 1}, labels=("B",))
    loader = make_loader(cfg, split="train", batch_size=5, seed=0, spec=spec)
    batch = loader.batch(0)
    assert set(batch) == {"A", "B", "B_label"}
    ids = np.rint((batch["B"][:, 0, 0, 0] + 1) / 2 * 255).astype(int)
    assert np.array_equal(batch["B_label"], 9 - ids)


# ----- labels follow bad-image replacement ------------------------------------------------------

class _Flaky(ArraySource):
    """An ArraySource whose image 1 cannot be read."""

    def __getitem__(self, index):
        if index == 1:
            raise DataError(f"{self.item_name(index)}: broken")
        return super().__getitem__(index)


def test_label_is_the_label_of_the_image_delivered():
    images = np.arange(4, dtype=np.uint8)[:, None, None] * np.ones((1, 8, 8), np.uint8)
    sources = {"X": ArraySource(images, labels=np.array([0, 1, 2, 3])),
               "Y": _Flaky(images, labels=np.array([10, 11, 12, 13]))}
    loader = UnpairedLoader(sources, batch_size=4, seed=0, num_workers=0, serial_batches=True, labels=("Y",),
                            transforms=Preprocess(mode="none", load_size=8, crop_size=8, flip=False))
    batch = loader.batch(0)
    ids = np.rint((batch["Y"][:, 0, 0, 0] + 1) / 2 * 255).astype(int)
    assert list(ids) == [0, 2, 2, 3] and list(batch["Y_label"]) == [10, 12, 12, 13]
    assert loader.skipped == 1


# ----- folders: the reference's trainA/ and the general <split>/<domain>/ ------------------------

def test_general_folder_layout_for_any_domain_names(tmp_path):
    for split, domain, n in (("train", "photo", 3), ("train", "sketch", 2), ("test", "photo", 1), ("test", "sketch", 1)):
        for i in range(n):
            (tmp_path / split / domain).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (8, 8), (10 * i, 0, 0)).save(tmp_path / split / domain / f"{i}.png")
    (tmp_path / "trainpaint").mkdir()  # the reference form, mixed in
    Image.new("RGB", (8, 8)).save(tmp_path / "trainpaint" / "0.png")
    cfg = _cfg(source="folder", dataroot=str(tmp_path), preprocess="none", crop_size=8, load_size=8, no_flip=True)
    spec = DataSpec(("photo", "sketch", "paint"), {"photo": 3, "sketch": 1, "paint": 3})
    loader = make_loader(cfg, split="train", batch_size=2, seed=0, spec=spec)
    assert loader.sizes == {"photo": 3, "sketch": 2, "paint": 1}
    assert loader.batch(0)["sketch"].shape == (2, 8, 8, 1)
    assert loader.sources["paint"].root == str(tmp_path / "trainpaint")


# ----- errors name the key ----------------------------------------------------------------------

def _three_domain_method(monkeypatch, spec: DataSpec) -> None:
    """Make config.method='cyclegan' ask for `spec` (a stand-in for the N-domain methods to come)."""
    monkeypatch.setattr(CycleGAN, "data_spec", classmethod(lambda cls, config: spec))


@needs_idx
def test_missing_domain_is_an_error_naming_the_key(monkeypatch):
    config = cyclegan_config.get_config("mnist2usps")
    config.data.idx_A, config.data.idx_B = MNIST, USPS
    config.lock()  # as config_flags hands it over: no new keys
    spec = DataSpec(("A", "B", "C"), {"A": 1, "B": 1, "C": 1})
    message = r"config\.data\.idx entry C must be set for config\.data\.source='idx' \(the method needs domain 'C'\): add C=<path> to config\.data\.idx"
    with pytest.raises(DataError, match=message):
        make_loader(config.data, split="train", batch_size=2, seed=0, spec=spec)
    _three_domain_method(monkeypatch, spec)
    with pytest.raises(config_validation.ConfigError, match=message):
        config_validation.validate(config)
    config.data.idx = f"C={USPS}"  # a locked config takes the list: no new key needed
    config_validation.validate(config)
    config.data.idx_B = ""
    with pytest.raises(config_validation.ConfigError, match=r"config\.data\.idx_B must be set .*needs domain 'B'"):
        config_validation.validate(config)


def test_missing_label_file_is_an_error_naming_the_key(monkeypatch, tmp_path):
    from tests.test_data_idx_digits import _idx_bytes

    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(_idx_bytes(np.zeros((4, 8, 8), np.uint8)))
    config = cyclegan_config.get_config("mnist2usps")
    config.data.idx_A = config.data.idx_B = str(tmp_path)
    spec = DataSpec(("A", "B"), {"A": 1, "B": 1}, labels=("A",))
    message = (r"no label file for .*train-images-idx3-ubyte\.gz' \(config\.data\.idx_A; the method needs labels "
               r"of domain 'A'\): expected .*train-labels-idx1-ubyte\[\.gz\] beside it; add A=<label file> to "
               r"config\.data\.idx_labels")
    with pytest.raises(DataError, match=message):
        make_loader(config.data, split="train", batch_size=2, seed=0, spec=spec)
    _three_domain_method(monkeypatch, spec)
    with pytest.raises(config_validation.ConfigError, match=message):
        config_validation.validate(config)
    config.data.idx_labels = f"A={tmp_path / 'nothing.gz'}"
    with pytest.raises(config_validation.ConfigError, match=r"config\.data\.idx_labels entry A=.*nothing\.gz' does not exist"):
        config_validation.validate(config)


@pytest.mark.parametrize("overrides,spec,pattern", [
    (dict(digits="C=cursive"), THREE, r"config\.data\.digits has no built-in rendering for domain 'C' \('cursive'"),
    (dict(), DataSpec(("A", "Z"), {"A": 1, "Z": 1}), r"config\.data\.digits has no built-in rendering for domain 'Z'"),
    (dict(source="idx", idx="C"), THREE, r"config\.data\.idx='C' must be comma-separated domain=value"),
    (dict(source="tfds", data_dir="/x", dataroot="/x"), DataSpec(("A", "B", "C"), {"A": 3, "B": 3, "C": 3}), r"source='tfds' holds only domains A and B"),
    (dict(source="folder", dataroot="/x"), DataSpec(("A",), {"A": 3}, labels=("A",)), r"source='folder' has no labels"),
    (dict(), DataSpec(("A",), {"A": 2}), r"domain 'A' has 2 channels"),
])
def test_other_domain_errors_name_the_key(overrides, spec, pattern):
    with pytest.raises(DataError, match=pattern):
        make_loader(_cfg(**overrides), split="train", batch_size=1, seed=0, spec=spec)


def test_cyclegan_configs_still_validate_and_domains_are_checked():
    for preset in ("digits", "folder", "horse2zebra"):
        config_validation.validate(cyclegan_config.get_config(preset))
    config = cyclegan_config.get_config("digits")
    config.data.domains = "A,A"
    with pytest.raises(config_validation.ConfigError, match=r"config\.data\.domains='A,A' must be distinct"):
        config_validation.validate(config)
