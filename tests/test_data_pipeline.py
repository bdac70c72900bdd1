"""UnpairedLoader: reference sampling, exact resumability, sharding, bad images, clean shutdown."""

from __future__ import annotations

import gc
import logging
import threading
import time

import numpy as np
import pytest
from PIL import Image

from unpaired.data import ArraySource, DataError, FolderSource, Preprocess, UnpairedLoader

IDENTITY = Preprocess(mode="none", load_size=8, crop_size=8, flip=False)
AUGMENT = Preprocess(mode="resize_and_crop", load_size=12, crop_size=8, flip=True)


def _labelled(n: int, offset: int = 0, side: int = 8) -> np.ndarray:
    """n constant images whose pixel value encodes their index (value = offset + i)."""
    return (np.arange(n, dtype=np.uint8)[:, None, None] + offset) * np.ones((1, side, side), np.uint8)


def _loader(n_a=10, n_b=7, *, transform=IDENTITY, **kw) -> UnpairedLoader:
    kw.setdefault("batch_size", 3)
    kw.setdefault("seed", 0)
    kw.setdefault("num_workers", 0)
    return UnpairedLoader(
        ArraySource(_labelled(n_a), name="A"), ArraySource(_labelled(n_b, 100), name="B"),
        transform_A=transform, transform_B=transform, **kw,
    )


def _ids(x: np.ndarray, offset: int = 0) -> list[int]:
    """Recover the encoded indices from an IDENTITY-transformed batch."""
    return [int(v) - offset for v in np.rint((x[:, 0, 0, 0] + 1) / 2 * 255)]


def _same(b1: dict, b2: dict) -> bool:
    return b1.keys() == b2.keys() and all(np.array_equal(b1[k], b2[k]) for k in b1)


def _data_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("unpaired-data")]


# ----- sampling semantics ----------------------------------------------------------------------

def test_epoch_length_drop_last_and_shapes():
    loader = _loader(10, 7, batch_size=3)
    assert loader.num_samples == 10 and loader.steps_per_epoch == 3  # floor(10 / 3), drop_last
    batch = loader.batch(0)
    assert set(batch) == {"A", "B"}
    assert batch["A"].shape == (3, 8, 8, 1) and batch["A"].dtype == np.float32


def test_shuffled_a_follows_an_epoch_permutation_and_b_is_random():
    loader = _loader(10, 7, batch_size=3, seed=5)
    for epoch in range(2):
        perm = np.random.default_rng([5, epoch]).permutation(10)
        a = sum((_ids(loader.batch(epoch * 3 + j)["A"]) for j in range(3)), [])
        assert a == list(perm[:9] % 10)
        assert len(set(a)) == 9
    b = sum((_ids(loader.batch(k)["B"], 100) for k in range(12)), [])
    assert all(0 <= i < 7 for i in b) and len(set(b)) > 3
    assert _ids(loader.batch(0)["A"]) != _ids(loader.batch(3)["A"])  # a new order each epoch


def test_smaller_a_wraps_with_modulo():
    loader = _loader(4, 10, batch_size=5, seed=1)
    perm = np.random.default_rng([1, 0]).permutation(10)
    assert _ids(loader.batch(0)["A"]) + _ids(loader.batch(1)["A"]) == list(perm % 4)


def test_serial_batches_is_index_modulo_size():
    loader = _loader(10, 7, batch_size=3, serial_batches=True)
    assert _ids(loader.batch(2)["A"]) == [6, 7, 8]
    assert _ids(loader.batch(2)["B"], 100) == [6, 0, 1]
    assert _ids(loader.batch(3)["A"]) == [0, 1, 2]  # next epoch restarts (drop_last)


def test_indices_reports_what_batch_reads():
    loader = _loader(10, 7, batch_size=3, seed=3)
    for k in (0, 4, 7):
        idx = loader.indices(k)
        batch = loader.batch(k)
        assert idx["A"] == _ids(batch["A"]) and idx["B"] == _ids(batch["B"], 100)


def test_a_and_b_are_augmented_independently():
    same = np.random.default_rng(0).integers(0, 256, (1, 16, 16), dtype=np.uint8)
    loader = UnpairedLoader(ArraySource(same), ArraySource(same), batch_size=1, seed=0,
                            transform_A=AUGMENT, transform_B=AUGMENT, num_workers=0)
    differ = [not np.array_equal(loader.batch(k)["A"], loader.batch(k)["B"]) for k in range(10)]
    assert sum(differ) >= 8


# ----- determinism and resumability ------------------------------------------------------------

def test_same_seed_same_batches_and_other_seed_differs():
    a, b = _loader(transform=AUGMENT, seed=11), _loader(transform=AUGMENT, seed=11)
    for k in (0, 1, 5, 40):
        assert _same(a.batch(k), b.batch(k))
    c = _loader(transform=AUGMENT, seed=12)
    assert not _same(a.batch(0), c.batch(0))


def test_batch_k_equals_kth_batch_of_iterate_and_resume():
    ref = _loader(transform=AUGMENT, seed=2, num_workers=2)
    with ref.iterate(0, num_steps=8) as it:
        stream = list(it)
    assert len(stream) == 8
    fresh = _loader(transform=AUGMENT, seed=2)
    for k in range(8):
        assert _same(fresh.batch(k), stream[k])
    resumed = _loader(transform=AUGMENT, seed=2, num_workers=2)
    with resumed.iterate(5) as it:
        tail = [next(it) for _ in range(3)]
        assert it.step == 8
    assert all(_same(x, y) for x, y in zip(tail, stream[5:]))


def test_iterate_without_workers_matches():
    loader = _loader(transform=AUGMENT, seed=4, num_workers=0)
    assert all(_same(x, loader.batch(k)) for k, x in enumerate(loader.iterate(0, 4)))


# ----- sharding ---------------------------------------------------------------------------------

def test_shards_are_disjoint_slices_of_the_global_batch():
    global_loader = _loader(12, 9, batch_size=4, transform=AUGMENT, seed=9)
    hosts = [_loader(12, 9, batch_size=4, transform=AUGMENT, seed=9, shard_index=s, shard_count=2) for s in range(2)]
    assert all(h.local_batch_size == 2 and h.steps_per_epoch == 3 for h in hosts)
    for k in range(6):
        epoch_pos = [h.positions(k) for h in hosts]
        assert not set(epoch_pos[0][1]) & set(epoch_pos[1][1])
        full = global_loader.batch(k)
        parts = [h.batch(k) for h in hosts]
        for d in "AB":
            assert np.array_equal(np.concatenate([p[d] for p in parts]), full[d])


def test_shard_arguments_are_checked():
    with pytest.raises(DataError, match="divisible by shard_count=2"):
        _loader(batch_size=3, shard_count=2)
    with pytest.raises(DataError, match="shard_index=2 must be < shard_count=2"):
        _loader(batch_size=4, shard_index=2, shard_count=2)


def test_other_arguments_are_checked():
    with pytest.raises(DataError, match=r"config\.data\.bad_image='ignore'"):
        _loader(bad_image="ignore")
    with pytest.raises(DataError, match="batch_size=20 is larger than the epoch"):
        _loader(batch_size=20)
    with pytest.raises(DataError, match="seed"):
        _loader(seed=-1)
    with pytest.raises(DataError, match="step must be a non-negative"):
        _loader().batch(-1)


# ----- bad images ------------------------------------------------------------------------------

@pytest.fixture
def folder_with_bad_files(tmp_path):
    root = tmp_path / "trainA"
    root.mkdir()
    for i in range(6):
        Image.fromarray(np.full((8, 8, 3), 10 * i, np.uint8)).save(root / f"{i}.png")
    (root / "1.png").write_bytes(b"not a png")  # corrupt
    big = root / "4.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(big)
    big.write_bytes(big.read_bytes()[:200])  # truncated
    return root


def _folder_loader(root, **kw) -> UnpairedLoader:
    kw.setdefault("bad_image", "skip")
    return UnpairedLoader(
        FolderSource(root), ArraySource(_labelled(6, 100), channels=3),
        batch_size=6, seed=0, serial_batches=True, num_workers=0,
        transform_A=IDENTITY, transform_B=IDENTITY, **kw,
    )


def test_bad_images_are_skipped_counted_and_warned_once(folder_with_bad_files, caplog):
    loader = _folder_loader(folder_with_bad_files)
    with caplog.at_level(logging.WARNING, logger="unpaired.data.pipeline"):
        first = loader.batch(0)
        second = loader.batch(1)
    values = [int(v) for v in np.rint((first["A"][:, 0, 0, 0] + 1) / 2 * 255)]
    assert values == [0, 20, 20, 30, 50, 50]  # 1 -> next valid 2; 4 -> 5
    assert _same(first, second)  # serial: same indices, same replacements
    assert loader.skipped == 4
    assert [n.rsplit("/", 1)[-1] for n in loader.bad_items["A"]] == ["1.png", "4.png"]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 2 and any("1.png" in w for w in warnings) and any("4.png" in w for w in warnings)


def test_bad_image_error_mode_names_the_file(folder_with_bad_files):
    loader = _folder_loader(folder_with_bad_files, bad_image="error")
    with pytest.raises(DataError, match=r"1\.png"):
        loader.batch(0)


def test_all_images_bad_is_an_error(tmp_path):
    root = tmp_path / "trainA"
    root.mkdir()
    for i in range(3):
        (root / f"{i}.jpg").write_bytes(b"junk")
    loader = UnpairedLoader(FolderSource(root), ArraySource(_labelled(3)), batch_size=1, seed=0,
                            transform_A=IDENTITY, transform_B=IDENTITY, num_workers=0)
    with pytest.raises(DataError, match="none of its 3 images"):
        loader.batch(0)


def test_image_smaller_than_crop_is_skipped_or_named(tmp_path):
    root = tmp_path / "trainA"
    root.mkdir()
    Image.new("RGB", (6, 6)).save(root / "0_small.png")
    Image.new("RGB", (10, 10), (255, 0, 0)).save(root / "1_big.png")
    crop = Preprocess(mode="crop", load_size=8, crop_size=8, flip=False)
    kw = dict(batch_size=1, seed=0, serial_batches=True, num_workers=0, transform_A=crop, transform_B=IDENTITY)
    loader = UnpairedLoader(FolderSource(root), ArraySource(_labelled(2)), **kw)
    assert loader.batch(0)["A"].shape == (1, 8, 8, 3) and loader.skipped == 1
    strict = UnpairedLoader(FolderSource(root), ArraySource(_labelled(2)), bad_image="error", **kw)
    with pytest.raises(DataError, match=r"0_small\.png.*6x6 pixels, smaller than config\.data\.crop_size=8"):
        strict.batch(0)


def test_variable_sizes_in_a_batch_explain_the_preprocess(tmp_path):
    root = tmp_path / "trainA"
    root.mkdir()
    Image.new("RGB", (8, 8)).save(root / "a.png")
    Image.new("RGB", (12, 8)).save(root / "b.png")
    loader = UnpairedLoader(FolderSource(root), ArraySource(_labelled(2)), batch_size=2, seed=0,
                            transform_A=IDENTITY, transform_B=IDENTITY, num_workers=0)
    with pytest.raises(DataError, match=r"different sizes.*config\.data\.preprocess"):
        loader.batch(0)


# ----- thread pool shutdown --------------------------------------------------------------------

class _SlowSource(ArraySource):
    """An array source that sleeps per read so batches are in flight when we close."""

    def __getitem__(self, index):
        time.sleep(0.01)
        return super().__getitem__(index)


def _slow_loader(**kw) -> UnpairedLoader:
    return UnpairedLoader(_SlowSource(_labelled(40)), _SlowSource(_labelled(40)), batch_size=4, seed=0,
                          transform_A=IDENTITY, transform_B=IDENTITY, num_workers=2, **kw)


def test_close_mid_stream_joins_threads_quickly():
    loader = _slow_loader()
    it = loader.iterate(0)  # endless
    next(it)
    next(it)
    assert _data_threads()
    start = time.perf_counter()
    it.close()
    assert time.perf_counter() - start < 2.0
    assert not _data_threads()
    with pytest.raises(StopIteration):
        next(it)
    it.close()  # idempotent


def test_context_managers_and_loader_close():
    loader = _slow_loader()
    with loader.iterate(3) as it:
        for _ in it:
            break
    assert not _data_threads()
    with loader:
        its = [loader.iterate(0), loader.iterate(10)]
        next(its[0])
        next(its[1])
    assert not _data_threads()
    assert all(i._closed for i in its)  # pylint: disable=protected-access


def test_worker_error_propagates_and_closes(tmp_path):
    root = tmp_path / "trainA"
    root.mkdir()
    for i in range(4):
        (root / f"{i}.png").write_bytes(b"junk")
    loader = UnpairedLoader(FolderSource(root), ArraySource(_labelled(4)), batch_size=2, seed=0,
                            transform_A=IDENTITY, transform_B=IDENTITY, num_workers=2, bad_image="error")
    it = loader.iterate(0)
    with pytest.raises(DataError, match=r"\.png"):
        next(it)
    assert not _data_threads()
    with pytest.raises(StopIteration):
        next(it)


def test_abandoned_iterator_releases_threads():
    loader = _slow_loader()
    it = loader.iterate(0)
    next(it)
    del it
    gc.collect()
    deadline = time.perf_counter() + 5
    while _data_threads() and time.perf_counter() < deadline:
        time.sleep(0.02)
    assert not _data_threads()


# ----- device prefetch -------------------------------------------------------------------------

def test_prefetch_to_device_matches_and_closes_source():
    import jax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from unpaired.data import prefetch_to_device

    loader = _loader(transform=AUGMENT, seed=3, num_workers=2)
    it = loader.iterate(0)
    stream = prefetch_to_device(it, size=2)
    for k in range(3):
        batch = next(stream)
        assert isinstance(batch["A"], jax.Array)
        assert np.array_equal(np.asarray(batch["A"]), loader.batch(k)["A"])
    stream.close()
    assert it._closed  # pylint: disable=protected-access
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    sharding = NamedSharding(mesh, PartitionSpec("data"))
    sharded = list(prefetch_to_device(loader.iterate(0, 2), size=3, sharding=sharding))
    assert len(sharded) == 2 and sharded[1]["B"].sharding == sharding
    assert np.array_equal(np.asarray(sharded[1]["B"]), loader.batch(1)["B"])
    with pytest.raises(ValueError, match="positive"):
        next(prefetch_to_device(iter([]), size=0))


def test_minimal_user_source_returning_arrays():
    class Plain:
        """Only __len__ and __getitem__ (uint8 arrays); no name, no item_name."""

        def __init__(self, arrays):
            self.arrays = arrays

        def __len__(self):
            return len(self.arrays)

        def __getitem__(self, i):
            return self.arrays[i]

    gray = [np.full((8, 8), i, np.uint8) for i in range(5)]
    rgb = [np.full((8, 8, 3), i, np.uint8) for i in range(4)]
    loader = UnpairedLoader(Plain(gray), Plain(rgb), batch_size=2, seed=0, num_workers=0,
                            transform_A=IDENTITY, transform_B=IDENTITY)
    batch = loader.batch(0)
    assert batch["A"].shape == (2, 8, 8, 1) and batch["B"].shape == (2, 8, 8, 3)
    bad = UnpairedLoader(Plain([np.zeros((8, 8), np.float64)]), Plain(rgb), batch_size=1, seed=0,
                         num_workers=0, transform_A=IDENTITY, transform_B=IDENTITY, bad_image="error")
    with pytest.raises(DataError, match=r"Plain\[0\].*must be uint8"):
        bad.batch(0)
