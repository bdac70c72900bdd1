"""Host-side data: CycleGAN folders, our TF-free tfds datasets, IDX files, built-in digits.

`make_loader(data_config, ...)` turns the `config.data` fields into an `UnpairedLoader`:

- source: 'digits' (built-in, offline; default), 'folder' (dataroot/{train,test}{A,B}),
  'idx' (idx_A/idx_B IDX image files or folders), 'tfds' (our ArrayRecord dataset built once
  from the dataroot folder or zip into data_dir), 'tfds_stock' (a prepared `cycle_gan/<tfds_name>`
  in data_dir; never downloaded).
- dataroot, idx_A, idx_B, idx_A_test, idx_B_test, tfds_name, data_dir: where the data is
  (None or "" means unset).
- image_size: the square size of 'digits'/'idx' images before preprocessing (default 32).
- preprocess, load_size, crop_size, no_flip: the reference's transform options (defaults
  'resize_and_crop', 286, 256, False). Digits usually want preprocess='none', no_flip=True.
- serial_batches, num_workers, bad_image ('skip' or 'error').

Heavy dependencies (tensorflow_datasets, jax) are imported only by the paths that need them.
"""

from __future__ import annotations

import os
from typing import Any

from unpaired.data.builtin_digits import load_builtin_digits
from unpaired.data.decode import load_image
from unpaired.data.errors import DataError
from unpaired.data.folders import IMAGE_EXTENSIONS, list_images
from unpaired.data.idx import read_idx
from unpaired.data.pipeline import UnpairedLoader
from unpaired.data.sources import ArraySource, DomainSource, FolderSource, IdxSource, TfdsSource
from unpaired.data.transforms import PREPROCESS_MODES, Preprocess, preprocess, validate_preprocess

__all__ = [
    "ArraySource", "DataError", "DomainSource", "FolderSource", "IMAGE_EXTENSIONS", "IdxSource",
    "PREPROCESS_MODES", "Preprocess", "SOURCES", "TfdsSource", "UnpairedLoader",
    "list_images", "load_builtin_digits", "load_image", "make_loader", "prefetch_to_device",
    "preprocess", "read_idx", "validate_preprocess",
]

SOURCES = ("digits", "folder", "idx", "tfds", "tfds_stock")
_MISSING = object()
# config.data fields with defaults; the source-specific paths have none.
_DEFAULTS: dict[str, Any] = {
    "source": "digits", "image_size": 32, "preprocess": "resize_and_crop", "load_size": 286,
    "crop_size": 256, "no_flip": False, "serial_batches": False, "num_workers": 2,
    "bad_image": "skip", "tfds_name": None, "idx_A_test": None, "idx_B_test": None,
}
# Standard MNIST-style file names used when idx_A/idx_B name a folder.
_IDX_FILES = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}


def __getattr__(name: str) -> Any:
    """Lazy `prefetch_to_device` (it imports jax)."""
    if name == "prefetch_to_device":
        from unpaired.data.device import prefetch_to_device  # pylint: disable=import-outside-toplevel

        return prefetch_to_device
    raise AttributeError(name)


def _get(cfg: Any, key: str) -> Any:
    """config.data.<key> from a ConfigDict, a mapping or any object; DataError if required and absent."""
    default = _DEFAULTS.get(key, _MISSING)
    if isinstance(cfg, dict):
        value = cfg.get(key, default)
    else:
        try:
            value = getattr(cfg, key)
        except (AttributeError, KeyError):
            value = default
    if value is _MISSING or (value in (None, "") and key not in _DEFAULTS):
        raise DataError(f"config.data.{key} must be set for config.data.source={_get(cfg, 'source')!r}")
    return value


def _idx_path(cfg: Any, domain: str, split: str) -> str:
    """The IDX image file of a domain and split.

    idx_<X> may be a folder (the standard train-/t10k-images-idx3-ubyte[.gz] name is picked
    by split) or a file. For split 'test', idx_<X>_test wins when set; otherwise a file named
    train-* is swapped for its t10k-* sibling (the MNIST/USPS naming) when that exists.
    """
    key = f"idx_{domain}"
    if split == "test" and _get(cfg, f"{key}_test"):
        key = f"{key}_test"
    path = os.fspath(_get(cfg, key))
    if os.path.isdir(path):
        for candidate in (_IDX_FILES[split] + ".gz", _IDX_FILES[split]):
            if os.path.isfile(os.path.join(path, candidate)):
                return os.path.join(path, candidate)
        raise DataError(
            f"config.data.{key}={path!r} is a folder without {_IDX_FILES[split]}[.gz] "
            f"(the {split} images)"
        )
    if not os.path.exists(path):
        raise DataError(f"config.data.{key}={path!r} does not exist")
    if split == "test" and key == f"idx_{domain}":
        folder, base = os.path.split(path)
        sibling = os.path.join(folder, "t10k-" + base[len("train-"):]) if base.startswith("train-") else None
        if sibling is None or not os.path.isfile(sibling):
            raise DataError(
                f"config.data.{key}={path!r} is a single file with no t10k- sibling; for split 'test' "
                f"set config.data.{key}_test, or point {key} at a folder with train-/t10k- IDX files"
            )
        return sibling
    return path


def _sources(cfg: Any, split: str, input_nc: int, output_nc: int) -> tuple[DomainSource, DomainSource]:
    """The (A, B) sources named by config.data.source for a split."""
    kind = _get(cfg, "source")
    channels = {"A": input_nc, "B": output_nc}
    if kind == "digits":
        size = _get(cfg, "image_size")
        digits = load_builtin_digits(split, image_size=size)
        return (
            ArraySource(digits.images_A, channels=input_nc, labels=digits.labels_A, name=f"builtin digits A ({split})"),
            ArraySource(digits.images_B, channels=output_nc, labels=digits.labels_B, name=f"builtin digits B ({split})"),
        )
    if kind == "idx":
        size = _get(cfg, "image_size")
        return tuple(  # type: ignore[return-value]
            IdxSource(_idx_path(cfg, d, split), channels=channels[d], size=size) for d in ("A", "B")
        )
    phase_splits = {d: f"{split}{d}" for d in ("A", "B")}
    if kind == "folder":
        root = os.fspath(_get(cfg, "dataroot"))
        if not os.path.isdir(root):
            raise DataError(
                f"config.data.dataroot={root!r} is not a folder; expected <dataroot>/trainA, "
                "trainB, testA, testB (use source='tfds' to read a .zip)"
            )
        return tuple(  # type: ignore[return-value]
            FolderSource(os.path.join(root, phase_splits[d]), channels=channels[d]) for d in ("A", "B")
        )
    if kind in ("tfds", "tfds_stock"):
        from unpaired.data import tfds_cyclegan  # pylint: disable=import-outside-toplevel

        data_dir = os.fspath(_get(cfg, "data_dir"))
        if kind == "tfds":
            prepared = tfds_cyclegan.prepare_cyclegan_tfds(
                _get(cfg, "dataroot"), data_dir, dataset_name=_get(cfg, "tfds_name")
            )
            opened = {d: tfds_cyclegan.open_prepared(prepared, phase_splits[d]) for d in ("A", "B")}
            label = prepared
        else:
            name = _get(cfg, "tfds_name")
            if not name:
                raise DataError("config.data.tfds_name must name the dataset, e.g. 'horse2zebra'")
            opened = {d: tfds_cyclegan.open_stock_cyclegan(name, data_dir, phase_splits[d]) for d in ("A", "B")}
            label = f"cycle_gan/{name.split('/')[-1]} in {data_dir}"
        return tuple(  # type: ignore[return-value]
            TfdsSource(opened[d], channels=channels[d], name=f"tfds {label}:{phase_splits[d]}") for d in ("A", "B")
        )
    raise DataError(f"config.data.source={kind!r} is not one of {', '.join(SOURCES)}")


def make_loader(
    data_config: Any,
    *,
    split: str,
    batch_size: int,
    seed: int,
    input_nc: int,
    output_nc: int,
    shard_index: int = 0,
    shard_count: int = 1,
) -> UnpairedLoader:
    """An UnpairedLoader for `split` ('train' or 'test') from the config.data fields.

    Domain A has input_nc channels, B output_nc (1 = grayscale, as the reference's per-side
    Grayscale). 'test' follows the reference's test.py: load_size = crop_size, no flip,
    serial batches (testA[i] with testB[i % |B|]).
    """
    if split not in ("train", "test"):
        raise DataError(f"split must be 'train' or 'test', got {split!r}")
    for key, nc in (("input_nc", input_nc), ("output_nc", output_nc)):
        if nc not in (1, 3):
            raise DataError(f"config.{key}={nc!r} must be 1 or 3")
    bad_image = _get(data_config, "bad_image")
    if bad_image not in ("skip", "error"):  # checked before any (slow) source is built
        raise DataError(f"config.data.bad_image={bad_image!r} must be 'skip' or 'error'")
    mode = _get(data_config, "preprocess")
    crop_size = _get(data_config, "crop_size")
    load_size = crop_size if split == "test" else _get(data_config, "load_size")
    validate_preprocess(mode, _get(data_config, "load_size"), crop_size)
    flip = split == "train" and not _get(data_config, "no_flip")
    transform = Preprocess(mode=mode, load_size=load_size, crop_size=crop_size, flip=flip)
    source_a, source_b = _sources(data_config, split, input_nc, output_nc)
    return UnpairedLoader(
        source_a,
        source_b,
        batch_size=batch_size,
        transform_A=transform,
        transform_B=transform,
        seed=seed,
        serial_batches=split == "test" or bool(_get(data_config, "serial_batches")),
        num_workers=_get(data_config, "num_workers"),
        shard_index=shard_index,
        shard_count=shard_count,
        bad_image=bad_image,
    )
