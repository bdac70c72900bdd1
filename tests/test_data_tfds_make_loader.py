"""Our TF-free tfds builder, prepared stock cycle_gan datasets, and make_loader dispatch."""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import time
import zipfile

import ml_collections
import numpy as np
import pytest
from PIL import Image

from unpaired.data import DataError, load_image, make_loader
from unpaired.data import tfds_cyclegan
from tests.helpers import needs_real_digits, real_digits

COUNTS = {"trainA": 5, "trainB": 3, "testA": 2, "testB": 2}


def _make_cyclegan_folder(root) -> str:
    """A tiny CycleGAN layout with nested folders, mixed-case extensions and odd modes."""
    rng = np.random.default_rng(0)
    for split, n in COUNTS.items():
        for i in range(n):
            sub = "nested/" if i == 1 else ""
            ext = ".PNG" if i == 2 else ".png"
            path = os.path.join(root, split, f"{sub}{split}_{i}{ext}")
            os.makedirs(os.path.dirname(path), exist_ok=True)
            arr = rng.integers(0, 256, (14 + i, 12, 3), dtype=np.uint8)
            img = Image.fromarray(arr)
            if split == "trainB" and i == 0:
                img = img.convert("L")  # a grayscale file among RGB ones
            img.save(path)
    return str(root)


@pytest.fixture(scope="module")
def cyclegan_root(tmp_path_factory):
    return _make_cyclegan_folder(tmp_path_factory.mktemp("cg") / "mini")


def _cfg(**kw) -> ml_collections.ConfigDict:
    base = dict(source="folder", dataroot=None, data_dir=None, tfds_name=None, idx_A=None, idx_B=None,
                image_size=16, preprocess="resize_and_crop", load_size=12, crop_size=8, no_flip=False,
                serial_batches=False, num_workers=0, bad_image="skip")
    base.update(kw)
    return ml_collections.ConfigDict(base)


def _same(b1, b2) -> bool:
    return all(np.array_equal(b1[k], b2[k]) for k in ("A", "B"))


# ----- our builder ----------------------------------------------------------------------------

def test_builder_round_trip_from_folder(cyclegan_root, tmp_path):
    prepared = tfds_cyclegan.prepare_cyclegan_tfds(cyclegan_root, tmp_path / "tfds")
    assert prepared.endswith(os.path.join("unpaired_cycle_gan", "mini", "1.0.0"))
    assert any(f.endswith("-00000-of-00001") and ".array_record" in f for f in os.listdir(prepared))
    for split, n in COUNTS.items():
        source = tfds_cyclegan.open_prepared(prepared, split)
        assert len(source) == n
        folder = os.path.join(cyclegan_root, split)
        names = [source[i]["file_name"].decode() for i in range(n)]
        expected = sorted(os.path.relpath(os.path.join(d, f), folder)
                          for d, _, fs in os.walk(folder) for f in fs)
        assert names == expected  # sorted file order, like the reference's folders
        for i, name in enumerate(names):
            with open(os.path.join(folder, name), "rb") as f:
                assert source[i]["image"] == f.read()  # the original encoded bytes
            assert source[i]["label"] == (0 if split.endswith("A") else 1)
    # prepared once: the second call reuses it without rewriting
    stamp = os.path.getmtime(os.path.join(prepared, "dataset_info.json"))
    assert tfds_cyclegan.prepare_cyclegan_tfds(cyclegan_root, tmp_path / "tfds") == prepared
    assert os.path.getmtime(os.path.join(prepared, "dataset_info.json")) == stamp


def test_builder_from_zip_with_top_folder_and_macos_junk(cyclegan_root, tmp_path):
    zpath = tmp_path / "mini_zip.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for d, _, fs in os.walk(cyclegan_root):
            for f in fs:
                full = os.path.join(d, f)
                zf.write(full, "mini_zip/" + os.path.relpath(full, cyclegan_root))
        zf.writestr("__MACOSX/mini_zip/trainA/._trainA_0.png", b"junk")
        zf.writestr("mini_zip/trainA/._hidden.png", b"junk")
        zf.writestr("mini_zip/README.txt", b"hello")
    prepared = tfds_cyclegan.prepare_cyclegan_tfds(zpath, tmp_path / "tfds")
    assert "mini_zip" in prepared
    folder_prepared = tfds_cyclegan.prepare_cyclegan_tfds(cyclegan_root, tmp_path / "tfds")
    for split in COUNTS:
        a, b = tfds_cyclegan.open_prepared(prepared, split), tfds_cyclegan.open_prepared(folder_prepared, split)
        assert len(a) == len(b) == COUNTS[split]
        assert all(a[i]["image"] == b[i]["image"] and a[i]["file_name"] == b[i]["file_name"] for i in range(len(a)))


def test_changed_source_is_detected(tmp_path):
    root = _make_cyclegan_folder(tmp_path / "changing")
    tfds_cyclegan.prepare_cyclegan_tfds(root, tmp_path / "tfds")
    Image.new("RGB", (9, 9)).save(os.path.join(root, "trainA", "new.png"))
    with pytest.raises(DataError, match=r"different version of .*changing.*delete"):
        tfds_cyclegan.prepare_cyclegan_tfds(root, tmp_path / "tfds")
    other = tfds_cyclegan.prepare_cyclegan_tfds(root, tmp_path / "tfds", dataset_name="changing_v2")
    assert len(tfds_cyclegan.open_prepared(other, "trainA")) == COUNTS["trainA"] + 1


def test_builder_errors(tmp_path, cyclegan_root):
    with pytest.raises(DataError, match=r"config\.data\.dataroot .*nowhere.*does not exist"):
        tfds_cyclegan.prepare_cyclegan_tfds(tmp_path / "nowhere", tmp_path / "tfds")
    (tmp_path / "empty" / "trainA").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no images found under .*empty"):
        tfds_cyclegan.prepare_cyclegan_tfds(tmp_path / "empty", tmp_path / "tfds")
    (tmp_path / "broken.zip").write_bytes(b"PK nope")
    with pytest.raises(DataError, match=r"cannot read zip file .*broken\.zip"):
        tfds_cyclegan.prepare_cyclegan_tfds(tmp_path / "broken.zip", tmp_path / "tfds")
    root = _make_cyclegan_folder(tmp_path / "trainonly")
    shutil.rmtree(os.path.join(root, "testB"))
    prepared = tfds_cyclegan.prepare_cyclegan_tfds(root, tmp_path / "tfds")
    with pytest.raises(DataError, match=r"has no split 'testB' \(it has testA, trainA, trainB\)"):
        tfds_cyclegan.open_prepared(prepared, "testB")


# ----- stock cycle_gan/<name> -------------------------------------------------------------------

def test_stock_missing_fails_fast_without_network(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("the network was touched")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    cfg = _cfg(source="tfds_stock", tfds_name="horse2zebra", data_dir=str(tmp_path / "tfds"))
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"cycle_gan/horse2zebra' is not prepared in config\.data\.data_dir=.*tfds"):
        make_loader(cfg, split="train", batch_size=1, seed=0, input_nc=3, output_nc=3)
    assert time.perf_counter() - start < 2.0
    with pytest.raises(DataError, match=r"config\.data\.tfds_name must name"):
        make_loader(_cfg(source="tfds_stock", data_dir=str(tmp_path)), split="train", batch_size=1,
                    seed=0, input_nc=3, output_nc=3)


@pytest.fixture(scope="module")
def stock_data_dir(tmp_path_factory, cyclegan_root):
    """A prepared `cycle_gan/horse2zebra` (ArrayRecord) made by the stock builder class, offline."""
    from tensorflow_datasets.image_classification import cycle_gan

    class OfflineCycleGAN(cycle_gan.CycleGAN, skip_registration=True):
        name = "cycle_gan"
        url_infos = None

        def _split_generators(self, dl_manager):
            return {s: self._generate_examples(os.path.join(cyclegan_root, s), s[-1]) for s in COUNTS}

        def _generate_examples(self, path, label):
            for d, _, fs in os.walk(path):
                for f in fs:
                    yield f, {"image": os.path.join(d, f), "label": label}

    data_dir = tmp_path_factory.mktemp("stock")
    builder = OfflineCycleGAN(config="horse2zebra", data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare()
    return str(data_dir)


def _folder_images(root, split, channels=3) -> list[np.ndarray]:
    folder = os.path.join(root, split)
    return [np.asarray(load_image(os.path.join(d, f), channels)) for d, _, fs in os.walk(folder) for f in fs]


def test_stock_array_record_is_read(stock_data_dir, cyclegan_root):
    assert tfds_cyclegan.find_stock_cyclegan("cycle_gan/horse2zebra", stock_data_dir).endswith("3.0.0")
    source = tfds_cyclegan.open_stock_cyclegan("horse2zebra", stock_data_dir, "trainB")
    assert len(source) == COUNTS["trainB"]
    expected = _folder_images(cyclegan_root, "trainB")
    got = [np.asarray(load_image(source[i]["image"], 3)) for i in range(len(source))]
    assert sorted(x.tobytes() for x in got) == sorted(x.tobytes() for x in expected)
    cfg = _cfg(source="tfds_stock", tfds_name="horse2zebra", data_dir=stock_data_dir)
    loader = make_loader(cfg, split="train", batch_size=2, seed=0, input_nc=3, output_nc=1)
    batch = loader.batch(1)
    assert batch["A"].shape == (2, 8, 8, 3) and batch["B"].shape == (2, 8, 8, 1)
    with pytest.raises(DataError, match=r"horse2zebra' is not prepared.*9\.9\.9/dataset_info\.json"):
        tfds_cyclegan.find_stock_cyclegan("horse2zebra:9.9.9", stock_data_dir)


def _write_tfrecord(path, records) -> None:
    with open(path, "wb") as f:
        for rec in records:
            header = struct.pack("<Q", len(rec))
            f.write(header + struct.pack("<I", tfds_cyclegan.masked_crc32c(header)))
            f.write(rec + struct.pack("<I", tfds_cyclegan.masked_crc32c(rec)))


def test_stock_tfrecord_is_read_without_tensorflow(stock_data_dir, tmp_path):
    """`tfds build` writes TFRecord by default; convert our ArrayRecord copy and read it back."""
    from array_record.python.array_record_module import ArrayRecordReader

    src = tfds_cyclegan.find_stock_cyclegan("horse2zebra", stock_data_dir)
    dst = tmp_path / "tfds" / "cycle_gan" / "horse2zebra" / "3.0.0"
    shutil.copytree(src, dst)
    for name in os.listdir(dst):
        if ".array_record-" in name:
            reader = ArrayRecordReader(str(dst / name))
            records = reader.read_all()
            reader.close()
            _write_tfrecord(dst / name.replace(".array_record-", ".tfrecord-"), records)
            os.remove(dst / name)
    info = json.loads((dst / "dataset_info.json").read_text())
    info.pop("fileFormat")  # TFRecord, the default, is not written
    (dst / "dataset_info.json").write_text(json.dumps(info))
    for split in COUNTS:
        a = tfds_cyclegan.open_stock_cyclegan("horse2zebra", tmp_path / "tfds", split)
        b = tfds_cyclegan.open_stock_cyclegan("horse2zebra", stock_data_dir, split)
        assert isinstance(a, tfds_cyclegan.TfRecordDataSource) and len(a) == len(b) == COUNTS[split]
        assert all(a[i]["image"] == b[i]["image"] and a[i]["label"] == b[i]["label"] for i in range(len(a)))
    shard = next(dst.glob("*trainA.tfrecord*"))
    data = shard.read_bytes()
    shard.write_bytes(data[:8] + b"\0\0\0\0" + data[12:])  # break the first length CRC
    with pytest.raises(DataError, match=r"trainA\.tfrecord.*corrupt"):
        tfds_cyclegan.open_stock_cyclegan("horse2zebra", tmp_path / "tfds", "trainA")
    shard.write_bytes(data[:-3])
    with pytest.raises(DataError, match=r"trainA\.tfrecord.*truncated"):
        tfds_cyclegan.open_stock_cyclegan("horse2zebra", tmp_path / "tfds", "trainA")


# ----- make_loader ------------------------------------------------------------------------------

def test_make_loader_folder_and_tfds_give_identical_batches(cyclegan_root, tmp_path):
    kw = dict(split="train", batch_size=2, seed=3, input_nc=1, output_nc=3)
    folder = make_loader(_cfg(dataroot=cyclegan_root), **kw)
    ours = make_loader(_cfg(source="tfds", dataroot=cyclegan_root, data_dir=str(tmp_path / "t")), **kw)
    assert folder.steps_per_epoch == ours.steps_per_epoch == 2  # max(5, 3) // 2
    for k in range(5):
        a, b = folder.batch(k), ours.batch(k)
        assert a["A"].shape == (2, 8, 8, 1) and a["B"].shape == (2, 8, 8, 3)
        assert _same(a, b)


def test_make_loader_test_split_follows_test_py(cyclegan_root):
    loader = make_loader(_cfg(dataroot=cyclegan_root, num_workers=2), split="test", batch_size=1, seed=0,
                         input_nc=3, output_nc=3)
    assert loader.serial_batches and loader.steps_per_epoch == 2
    paths = {d: sorted(os.path.join(dp, f) for dp, _, fs in os.walk(os.path.join(cyclegan_root, "test" + d)) for f in fs)
             for d in "AB"}
    with loader.iterate(0, 2) as it:
        for k, batch in enumerate(it):
            for d in "AB":
                img = load_image(paths[d][k], 3).resize((8, 8), Image.Resampling.BICUBIC)  # load = crop
                expected = (np.asarray(img, np.float32) / 255 - 0.5) / 0.5
                np.testing.assert_allclose(batch[d][0], expected, atol=1e-6)


def test_make_loader_digits_default_and_idx(tmp_path):
    cfg = _cfg(source="digits", preprocess="none", no_flip=True, image_size=16)
    loader = make_loader(cfg, split="train", batch_size=4, seed=0, input_nc=1, output_nc=3)
    assert loader.sizes == {"A": 1500, "B": 2000} and loader.steps_per_epoch == 500
    batch = loader.batch(0)
    assert batch["A"].shape == (4, 16, 16, 1) and batch["B"].shape == (4, 16, 16, 3)
    defaults = make_loader(ml_collections.ConfigDict({"preprocess": "none"}), split="test", batch_size=2,
                           seed=0, input_nc=1, output_nc=1)
    assert defaults.batch(0)["A"].shape == (2, 32, 32, 1)  # source 'digits', image_size 32 by default


@needs_real_digits
def test_make_loader_idx_train_files_find_their_t10k_siblings():
    cfg = _cfg(source="idx", idx_A=real_digits("mnist"), idx_B=real_digits("usps"), preprocess="none", image_size=32)
    test = make_loader(cfg, split="test", batch_size=8, seed=0, input_nc=1, output_nc=1)
    assert test.sizes == {"A": 10000, "B": 2007}


@needs_real_digits
def test_make_loader_idx_folders_pick_the_split_files():
    cfg = _cfg(source="idx", idx_A=os.path.dirname(real_digits("mnist")), idx_B=os.path.dirname(real_digits("usps")),
               preprocess="none", no_flip=True, image_size=32)
    train = make_loader(cfg, split="train", batch_size=8, seed=0, input_nc=1, output_nc=1)
    test = make_loader(cfg, split="test", batch_size=8, seed=0, input_nc=1, output_nc=1)
    assert train.sizes["A"] in (6112, 60000)  # our shared copy's subset, or all of MNIST (launch.fetch)
    assert train.sizes["B"] == 7291 and test.sizes == {"A": 10000, "B": 2007}
    assert train.batch(0)["B"].shape == (8, 32, 32, 1)


def test_make_loader_idx_single_files(tmp_path):
    from tests.test_data_idx_digits import _idx_bytes  # a tiny IDX writer

    for name in ("a.idx", "b.idx", "a_test.idx"):
        (tmp_path / name).write_bytes(_idx_bytes(np.zeros((4, 6, 6), np.uint8)))
    cfg = _cfg(source="idx", idx_A=str(tmp_path / "a.idx"), idx_B=str(tmp_path / "b.idx"),
               preprocess="none", image_size=8)
    assert make_loader(cfg, split="train", batch_size=2, seed=0, input_nc=1, output_nc=1).batch(0)["A"].shape == (2, 8, 8, 1)
    with pytest.raises(DataError, match=r"config\.data\.idx_A=.*single file with no t10k- sibling.*config\.data\.idx_A_test"):
        make_loader(cfg, split="test", batch_size=2, seed=0, input_nc=1, output_nc=1)
    cfg.idx_A_test = str(tmp_path / "a_test.idx")
    with pytest.raises(DataError, match=r"config\.data\.idx_B=.*single file with no t10k- sibling.*config\.data\.idx_B_test"):
        make_loader(cfg, split="test", batch_size=2, seed=0, input_nc=1, output_nc=1)
    cfg.idx_B_test = str(tmp_path / "missing.idx")
    with pytest.raises(DataError, match=r"config\.data\.idx_B_test=.*missing\.idx.*does not exist"):
        make_loader(cfg, split="test", batch_size=2, seed=0, input_nc=1, output_nc=1)


@pytest.mark.parametrize(
    "overrides,kw,pattern",
    [
        (dict(source="lmdb"), {}, r"config\.data\.source='lmdb' is not one of"),
        (dict(source="folder"), {}, r"config\.data\.dataroot must be set"),
        (dict(source="folder", dataroot=""), {}, r"config\.data\.dataroot must be set"),
        (dict(source="folder", dataroot="/no/such/dir"), {}, r"config\.data\.dataroot='/no/such/dir' is not a folder"),
        (dict(source="tfds", dataroot="/x"), {}, r"config\.data\.data_dir must be set"),
        (dict(source="idx"), {}, r"config\.data\.idx_A must be set"),
        (dict(crop_size=30), {}, r"config\.data\.crop_size=30 must be a multiple of 4"),
        (dict(preprocess="zoom"), {}, r"config\.data\.preprocess='zoom'"),
        (dict(source="digits", bad_image="drop"), {}, r"config\.data\.bad_image='drop'"),
        (dict(source="digits"), dict(input_nc=2), r"config\.input_nc=2 must be 1 or 3"),
        (dict(source="digits"), dict(split="val"), r"split must be 'train', 'test' or 'holdout'"),
    ],
)
def test_make_loader_config_errors_name_the_key(overrides, kw, pattern):
    args = dict(split="train", batch_size=1, seed=0, input_nc=3, output_nc=3)
    args.update(kw)
    with pytest.raises(DataError, match=pattern):
        make_loader(_cfg(**overrides), **args)


def test_make_loader_missing_split_folder_names_it(tmp_path):
    root = tmp_path / "ds"
    (root / "trainA").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(root / "trainA" / "x.png")
    with pytest.raises(DataError, match=r"trainB.*does not exist.*<dataroot>/trainA"):
        make_loader(_cfg(dataroot=str(root)), split="train", batch_size=1, seed=0, input_nc=3, output_nc=3)
