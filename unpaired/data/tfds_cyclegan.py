"""TensorFlow-free tfds support: our ArrayRecord builder for CycleGAN folders/zips, and the stock
`cycle_gan/<name>` datasets when already prepared on disk.

What works without TensorFlow in tfds 4.9.10 (checked):
- GeneratorBasedBuilder.download_and_prepare(file_format='array_record') writes ArrayRecord
  shards as long as every feature is encodable without TF: an Image feature given the
  *encoded file bytes* (or a path) is stored as is; only numpy-array images need TF to encode.
- `builder.as_data_source()` / `tfds.builder_from_directory(dir).as_data_source()` read
  ArrayRecord without TF; `decoders={'image': tfds.decode.SkipDecoding()}` returns the stored
  bytes, which we decode with our own decoder (16-bit, palette, CMYK, corrupt-file errors).
- `tfds.data_source(...)` cannot read TFRecord-format datasets (NotImplementedError), and a
  TFRecord-prepared stock dataset is the usual case (`tfds build` defaults to it); we read such
  shards with a small framing reader plus tfds's TF-free example parser instead.
- The stock `cycle_gan` builder downloads a zip from the network whenever it is not prepared,
  so we never instantiate it: we look for `<data_dir>/cycle_gan/<name>/<version>/
  dataset_info.json` on disk and open that folder with `tfds.builder_from_directory`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import tempfile
import zipfile
from typing import Any, Iterator, Sequence

import tensorflow_datasets as tfds

from unpaired.data.errors import DataError
from unpaired.data.folders import LAYOUT_HINT, is_image_file, list_images

BUILDER_NAME = "unpaired_cycle_gan"
SPLITS = ("trainA", "trainB", "testA", "testB")
STOCK_NAME = "cycle_gan"
_METADATA_FILE = "metadata.json"


# ----- the source layout: a folder or a zip of one ---------------------------------------------

def dataset_name_for(dataroot: str) -> str:
    """A tfds config name from the folder or zip name: lower case, [a-z0-9_]."""
    base = os.path.basename(os.path.normpath(dataroot))
    base = base[:-4] if base.lower().endswith(".zip") else base
    name = re.sub(r"[^a-z0-9_]+", "_", base.lower()).strip("_")
    return name or "dataset"


def _zip_members(zip_path: str) -> dict[str, list[tuple[str, zipfile.ZipInfo]]]:
    """Image members per split of a zip holding `trainA/...` or `<name>/trainA/...`."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
    except (OSError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read zip file {zip_path!r}: {e}") from e
    out: dict[str, list[tuple[str, zipfile.ZipInfo]]] = {s: [] for s in SPLITS}
    for info in infos:
        parts = info.filename.split("/")
        if "__MACOSX" in parts or not is_image_file(parts[-1]):
            continue
        for depth in (0, 1):  # trainA/x.jpg or horse2zebra/trainA/x.jpg
            if len(parts) > depth + 1 and parts[depth] in SPLITS:
                out[parts[depth]].append(("/".join(parts[depth + 1:]), info))
                break
    return {s: sorted(v, key=lambda t: t[0]) for s, v in out.items() if v}


def _folder_members(dataroot: str) -> dict[str, list[tuple[str, str]]]:
    """Image files per split of a CycleGAN folder, as (path relative to the split folder, path)."""
    out: dict[str, list[tuple[str, str]]] = {}
    for split in SPLITS:
        folder = os.path.join(dataroot, split)
        if os.path.isdir(folder):
            try:
                paths = list_images(folder)
            except DataError:
                continue  # an empty split folder is simply absent
            out[split] = [(os.path.relpath(p, folder).replace(os.sep, "/"), p) for p in paths]
    return out


class _Layout:
    """The images of a CycleGAN dataset, from a folder or a zip, with a content fingerprint."""

    def __init__(self, dataroot: str) -> None:
        """List the images now (cheap) so errors surface before any writing."""
        self.dataroot = os.path.abspath(dataroot)
        if not os.path.exists(self.dataroot):
            raise DataError(f"config.data.dataroot {dataroot!r} does not exist; {LAYOUT_HINT}")
        self.is_zip = os.path.isfile(self.dataroot)
        if self.is_zip:
            zmembers = _zip_members(self.dataroot)
            self.members = {s: [(rel, info.filename) for rel, info in v] for s, v in zmembers.items()}
            facts = [(s, rel, i.file_size, i.CRC) for s, v in zmembers.items() for rel, i in v]
        else:
            self.members = _folder_members(self.dataroot)
            facts = [(s, rel, os.path.getsize(p)) for s, v in self.members.items() for rel, p in v]
        if not self.members:
            raise DataError(f"no images found under {self.dataroot!r}; {LAYOUT_HINT}")
        self.fingerprint = hashlib.sha256(json.dumps(facts).encode()).hexdigest()

    def read(self, split: str) -> Iterator[tuple[str, bytes]]:
        """(relative name, encoded bytes) of each image of a split, in sorted order."""
        if self.is_zip:
            with zipfile.ZipFile(self.dataroot) as zf:
                for rel, member in self.members[split]:
                    yield rel, zf.read(member)
        else:
            for rel, path in self.members[split]:
                with open(path, "rb") as f:
                    yield rel, f.read()


# ----- our builder ---------------------------------------------------------------------------------

class CycleGanFolderBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """ArrayRecord dataset of a CycleGAN folder/zip: splits trainA/trainB/testA/testB.

    Features: `image` (the original encoded file bytes; declared 3-channel like the stock
    dataset), `label` ('A'/'B'), `file_name` (path inside the split folder). Records are in
    sorted file order (shuffling disabled) so test splits list like the reference's folders.
    Not registered in the tfds registry: read it with `open_prepared`/builder_from_directory.
    """

    name = BUILDER_NAME
    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    # Nothing is downloaded. Shadowing tfds's url_infos classproperty also avoids its checksum-file
    # lookup, which in tfds 4.9.10 needs the `importlib_resources` backport for packaged builders.
    url_infos = None

    def __init__(self, *, dataroot: str, dataset_name: str | None = None, **kwargs: Any) -> None:
        """Bind the source; the config (and dataset folder) is named after it."""
        self._layout = _Layout(dataroot)
        config = tfds.core.BuilderConfig(name=dataset_name or dataset_name_for(dataroot))
        super().__init__(config=config, **kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        """Features and the source fingerprint (kept in metadata.json)."""
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"CycleGAN-layout images from {self._layout.dataroot}",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3)),
                "label": tfds.features.ClassLabel(names=["A", "B"]),
                "file_name": tfds.features.Text(),
            }),
            supervised_keys=("image", "label"),
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(
                source=self._layout.dataroot, fingerprint=self._layout.fingerprint
            ),
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
        """One split per split folder present."""
        del dl_manager  # nothing is downloaded
        return {split: self._generate_examples(split) for split in self._layout.members}

    def _generate_examples(self, split: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """Examples in sorted file order, images as their stored bytes."""
        for rel, data in self._layout.read(split):
            yield rel, {"image": data, "label": split[-1], "file_name": rel}


def prepare_cyclegan_tfds(
    dataroot: str | os.PathLike[str], data_dir: str | os.PathLike[str], *, dataset_name: str | None = None
) -> str:
    """Build (once) our ArrayRecord dataset of a CycleGAN folder/zip; returns its directory.

    The dataset goes to `<data_dir>/unpaired_cycle_gan/<name>/1.0.0`. A prepared dataset is
    reused when its recorded source fingerprint (names, sizes, zip CRCs) still matches; if the
    source changed, a DataError says which folder to delete.
    """
    dataroot, data_dir = os.fspath(dataroot), os.fspath(data_dir)
    builder = CycleGanFolderBuilder(
        dataroot=dataroot, dataset_name=dataset_name, data_dir=data_dir, file_format="array_record"
    )
    prepared = os.fspath(builder.data_dir)
    if builder.is_prepared():
        stored = _read_metadata(prepared)
        if stored.get("fingerprint") != builder._layout.fingerprint:  # pylint: disable=protected-access
            raise DataError(
                f"the prepared dataset {prepared!r} was built from a different version of "
                f"{stored.get('source', dataroot)!r} than {dataroot!r} holds now; delete {prepared!r} "
                "to rebuild it, or set config.data.tfds_name to another name"
            )
        return prepared
    try:
        with tempfile.TemporaryDirectory(prefix="unpaired-tfds-") as tmp:
            builder.download_and_prepare(
                download_dir=tmp,
                download_config=tfds.download.DownloadConfig(try_download_gcs=False),
            )
    except OSError as e:
        raise DataError(f"cannot write the dataset to config.data.data_dir={data_dir!r}: {e}") from e
    return prepared


def _read_metadata(prepared_dir: str) -> dict[str, Any]:
    """The metadata.json our builder wrote (empty if absent)."""
    path = os.path.join(prepared_dir, _METADATA_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        return json.load(f)


# ----- reading prepared datasets ---------------------------------------------------------------

_SKIP_IMAGE = {"image": tfds.decode.SkipDecoding()}


def _open_split(prepared_dir: str, split: str, what: str) -> Sequence[dict[str, Any]]:
    """A random-access source of one split of a prepared dataset (ArrayRecord or TFRecord)."""
    try:
        builder = tfds.builder_from_directory(prepared_dir)
    except Exception as e:  # corrupt or foreign dataset_info.json
        raise DataError(f"cannot open the prepared {what} at {prepared_dir!r}: {e}") from e
    if split not in builder.info.splits:
        raise DataError(
            f"the prepared {what} at {prepared_dir!r} has no split {split!r} "
            f"(it has {', '.join(sorted(builder.info.splits)) or 'none'})"
        )
    file_format = builder.info.file_format
    if file_format is None or str(getattr(file_format, "value", file_format)) == "tfrecord":
        return TfRecordDataSource(builder, split, decoders=_SKIP_IMAGE)
    try:
        return builder.as_data_source(split=split, decoders=_SKIP_IMAGE)
    except NotImplementedError as e:
        raise DataError(f"cannot read the {file_format} files of {prepared_dir!r}: {e}") from e


def open_prepared(prepared_dir: str | os.PathLike[str], split: str) -> Sequence[dict[str, Any]]:
    """One split of a dataset prepared by `prepare_cyclegan_tfds`, images as encoded bytes."""
    return _open_split(os.fspath(prepared_dir), split, "dataset")


def _version_key(name: str) -> tuple[int, ...]:
    """'3.0.0' -> (3, 0, 0); non-versions sort first."""
    try:
        return tuple(int(p) for p in name.split("."))
    except ValueError:
        return (-1,)


def find_stock_cyclegan(name: str, data_dir: str | os.PathLike[str]) -> str:
    """The prepared folder of stock `cycle_gan/<name>` in `data_dir`, found on disk only.

    `name` is 'horse2zebra', 'cycle_gan/horse2zebra' or 'cycle_gan/horse2zebra:3.0.0'. Never
    touches the network: if nothing is prepared, a DataError names data_dir and the dataset.
    """
    data_dir = os.fspath(data_dir)
    bare = name.split(":", 1)[0]
    version = name.split(":", 1)[1] if ":" in name else None
    config = bare.split("/", 1)[1] if bare.startswith(STOCK_NAME + "/") else bare
    if not config or "/" in config:
        raise DataError(f"config.data.tfds_name={name!r} should look like 'horse2zebra' or 'cycle_gan/horse2zebra'")
    config_dir = os.path.join(data_dir, STOCK_NAME, config)
    versions = sorted(
        (v for v in (os.listdir(config_dir) if os.path.isdir(config_dir) else [])
         if os.path.isfile(os.path.join(config_dir, v, "dataset_info.json")) and v == (version or v)),
        key=_version_key,
    )
    if not versions:
        raise DataError(
            f"the TFDS dataset '{STOCK_NAME}/{config}' is not prepared in config.data.data_dir={data_dir!r} "
            f"(no {config_dir}/{version or '<version>'}/dataset_info.json). It is never downloaded here "
            f"(offline-safe); prepare it where TensorFlow and the network exist with `tfds build "
            f"{STOCK_NAME}/{config} --data_dir=<dir> --file_format=array_record` and copy <dir>, or unzip "
            "the CycleGAN dataset and use config.data.source='folder' or 'tfds'"
        )
    return os.path.join(config_dir, versions[-1])


def open_stock_cyclegan(name: str, data_dir: str | os.PathLike[str], split: str) -> Sequence[dict[str, Any]]:
    """One split (trainA/trainB/testA/testB) of a prepared stock `cycle_gan/<name>` dataset."""
    return _open_split(find_stock_cyclegan(name, data_dir), split, f"TFDS dataset {STOCK_NAME}/{name}")


# ----- TFRecord without TensorFlow -------------------------------------------------------------

def _crc32c_table() -> list[int]:
    """The CRC-32C (Castagnoli) lookup table."""
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C of `data` (pure Python; used here only on 8-byte record headers)."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC: rotate right by 15 and add a constant."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def index_tfrecord(path: str) -> list[tuple[int, int]]:
    """(offset, length) of every record of a TFRecord file; header CRCs are checked."""
    out = []
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        offset = 0
        while offset < size:
            header = f.read(12)
            if len(header) < 12:
                raise DataError(f"TFRecord file {path!r} is truncated at byte {offset}")
            length, crc = struct.unpack("<QI", header)
            if masked_crc32c(header[:8]) != crc:
                raise DataError(f"TFRecord file {path!r} is corrupt at byte {offset} (bad length CRC)")
            if offset + 12 + length + 4 > size:
                raise DataError(f"TFRecord file {path!r} is truncated at byte {offset}")
            out.append((offset + 12, length))
            offset += 12 + length + 4
            f.seek(offset)
    return out


class TfRecordDataSource(Sequence[dict[str, Any]]):
    """Random access to one split of a TFRecord-format tfds dataset, without TensorFlow.

    Shards are indexed once (headers only; data CRCs are not verified), records are parsed
    with the dataset's own features (`deserialize_example_np`, TF-free).
    """

    def __init__(self, builder: Any, split: str, *, decoders: Any = None) -> None:
        """Index the split's shards in order."""
        self._features = builder.info.features
        self._decoders = decoders
        self._records: list[tuple[str, int, int]] = []
        for instruction in builder.info.splits[split].file_instructions:
            path = os.fspath(instruction.filename)
            records = index_tfrecord(path)
            skip = instruction.skip or 0
            take = instruction.take if instruction.take is not None and instruction.take >= 0 else len(records)
            self._records.extend((path, off, n) for off, n in records[skip:skip + take])

    def __len__(self) -> int:
        """Number of records in the split."""
        return len(self._records)

    def __getitem__(self, index: int) -> dict[str, Any]:  # type: ignore[override]
        """Parse record `index` into a dict of numpy values."""
        path, offset, length = self._records[index]
        with open(path, "rb") as f:
            f.seek(offset)
            raw = f.read(length)
        return self._features.deserialize_example_np(raw, decoders=self._decoders)
