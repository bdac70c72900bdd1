"""Host-side data: N named domains (labels optional) from folders, IDX files, built-in digits, tfds.

`make_loader(data_config, split=..., spec=DataSpec(...), ...)` turns the `config.data` fields into
one `UnpairedLoader` over the domains the method's `DataSpec` names, in its order. A batch is
`{domain: float32 [n,H,W,C] in [-1, 1]}` plus `'<domain>_label': int32 [n]` for the domains whose
labels the spec asks for. CycleGAN's (A, B) is the two-domain case (`input_nc`/`output_nc`
without a spec still mean that).

Where each domain is (config.data fields; None or "" means unset):

- source: 'digits' (built-in, offline; default), 'folder', 'idx', 'tfds' (our ArrayRecord dataset
  built once from the dataroot folder or zip into data_dir), 'tfds_stock' (a prepared
  `cycle_gan/<tfds_name>` in data_dir; never downloaded). tfds sources hold A and B only.
- folder: `dataroot/<split><domain>/` (the reference's trainA/, testB/, ...) or, when that does
  not exist, the general `dataroot/<split>/<domain>/`, for any domain names. No labels.
- idx: the IDX image file or folder of domain A is `idx_A`, of B `idx_B`; any domain's (also
  A's or B's) can be an entry of `idx`, a comma-separated `name=path` list ('C=/data/c'), since a
  locked config takes no new keys such as idx_C. Test images: `idx_A_test`/`idx_B_test` or
  `idx_test` entries, else a train-* file's t10k-* sibling or the folder's t10k- file. Labels are
  the MNIST-named file beside the images (train-images-idx3-ubyte[.gz] ->
  train-labels-idx1-ubyte[.gz], t10k likewise) or an entry of `idx_labels` / `idx_test_labels`.
- digits: each domain is a rendering of the built-in digits (`builtin_digits.RENDERINGS`:
  handwritten, printed, thick, inverted; all labelled), from a `digits` entry ('C=inverted'),
  else by letter A=handwritten, B=printed, C=thick, D=inverted, else the domain's own name.
- domains: comma-separated names (default 'A,B') for methods whose domains come from the data
  (`parse_domains`); CycleGAN always reads A and B.
- dataroot, tfds_name, data_dir: the folder and tfds locations.
- image_size: the square size of 'digits'/'idx' images before preprocessing (default 32).
- preprocess, load_size, crop_size, no_flip: the reference's transform options (defaults
  'resize_and_crop', 286, 256, False). Digits usually want preprocess='none', no_flip=True.
- serial_batches, num_workers, bad_image ('skip' or 'error').

`locations.check_locations(data_config, spec)` checks all this without reading an image (config
validation uses it). Heavy dependencies (tensorflow_datasets, jax) are imported only by the paths
that need them.
"""

from __future__ import annotations

import os
from typing import Any

from unpaired.data import cache
from unpaired.data.builtin_digits import RENDERINGS, load_builtin_digits, render_digits
from unpaired.data.decode import load_image
from unpaired.data.errors import DataError
from unpaired.data.folders import IMAGE_EXTENSIONS, list_images
from unpaired.data.idx import read_idx
from unpaired.data.locations import (
    check_locations, digit_rendering, folder_path, get_field, idx_image_path, idx_label_path, parse_domains,
)
from unpaired.data.pipeline import UnpairedLoader
from unpaired.data.sources import ArraySource, DomainSource, FolderSource, IdxSource, TfdsSource
from unpaired.data.spec import DataSpec
from unpaired.data.transforms import PREPROCESS_MODES, Preprocess, preprocess, validate_preprocess

__all__ = [
    "ArraySource", "DataError", "DataSpec", "DomainSource", "FolderSource", "IMAGE_EXTENSIONS", "IdxSource",
    "PREPROCESS_MODES", "Preprocess", "RENDERINGS", "SOURCES", "TfdsSource", "UnpairedLoader",
    "check_locations", "list_images", "load_builtin_digits", "load_image", "make_loader",
    "parse_domains", "prefetch_to_device", "preprocess", "read_idx", "render_digits", "validate_preprocess",
]

SOURCES = ("digits", "folder", "idx", "tfds", "tfds_stock")
_get = get_field


def __getattr__(name: str) -> Any:
    """Lazy `prefetch_to_device` (it imports jax)."""
    if name == "prefetch_to_device":
        from unpaired.data.device import prefetch_to_device  # pylint: disable=import-outside-toplevel

        return prefetch_to_device
    raise AttributeError(name)


def _idx_source(cfg: Any, domain: str, split: str, channels: int, labelled: bool) -> IdxSource:
    """A domain's IDX images (and label file when `labelled`)."""
    image = idx_image_path(cfg, domain, split)
    labels = idx_label_path(cfg, domain, split, image) if labelled else None
    return IdxSource(image[1], channels=channels, size=_get(cfg, "image_size"), labels_path=labels,
                     resample=_get(cfg, "image_resize"))


def _tfds_sources(cfg: Any, kind: str, split: str, spec: DataSpec) -> dict[str, DomainSource]:
    """Domains A and B of our prepared tfds dataset or of a stock cycle_gan one."""
    from unpaired.data import tfds_cyclegan  # pylint: disable=import-outside-toplevel

    phase_splits = {d: f"{split}{d}" for d in spec.domains}
    data_dir = os.fspath(_get(cfg, "data_dir"))
    if kind == "tfds":
        prepared = tfds_cyclegan.prepare_cyclegan_tfds(
            _get(cfg, "dataroot"), data_dir, dataset_name=_get(cfg, "tfds_name")
        )
        opened = {d: tfds_cyclegan.open_prepared(prepared, phase_splits[d]) for d in spec.domains}
        label = prepared
    else:
        name = _get(cfg, "tfds_name")
        if not name:
            raise DataError("config.data.tfds_name must name the dataset, e.g. 'horse2zebra'")
        opened = {d: tfds_cyclegan.open_stock_cyclegan(name, data_dir, phase_splits[d]) for d in spec.domains}
        label = f"cycle_gan/{name.split('/')[-1]} in {data_dir}"
    return {
        d: TfdsSource(opened[d], channels=spec.channels[d], name=f"tfds {label}:{phase_splits[d]}")
        for d in spec.domains
    }


def _sources(cfg: Any, split: str, spec: DataSpec) -> dict[str, DomainSource]:
    """The spec's domains' sources (in its order) named by config.data.source for a split."""
    kind = _get(cfg, "source")
    if kind not in SOURCES:
        raise DataError(f"config.data.source={kind!r} is not one of {', '.join(SOURCES)}")
    if kind != "idx":  # idx domains are checked while their files are opened
        check_locations(cfg, spec, split)
    if kind == "digits":
        size = _get(cfg, "image_size")
        out: dict[str, DomainSource] = {}
        for d in spec.domains:
            rendering = digit_rendering(cfg, d)
            images, labels = render_digits(rendering, split, image_size=size)
            out[d] = ArraySource(images, channels=spec.channels[d], labels=labels,
                                 name=f"builtin digits {d} ({rendering}, {split})")
        return out
    if kind == "idx":
        return {d: _idx_source(cfg, d, split, spec.channels[d], d in spec.labels) for d in spec.domains}
    if kind == "folder":
        root = os.fspath(_get(cfg, "dataroot"))
        if not os.path.isdir(root):
            fetch = cache.missing_message([("config.data.dataroot", root)])
            raise DataError(fetch or (
                f"config.data.dataroot={root!r} is not a folder; expected <dataroot>/trainA, "
                "trainB, testA, testB or <dataroot>/<split>/<domain>/ (use source='tfds' to read a .zip)"
            ))
        return {d: FolderSource(folder_path(root, split, d), channels=spec.channels[d]) for d in spec.domains}
    return _tfds_sources(cfg, kind, split, spec)


def _spec_from(spec: DataSpec | None, input_nc: int | None, output_nc: int | None) -> DataSpec:
    """The spec to load: `spec`, or CycleGAN's (A, B) from input_nc/output_nc."""
    if spec is not None:
        if input_nc is not None or output_nc is not None:
            raise DataError("make_loader takes spec= or input_nc/output_nc, not both")
        return spec
    if input_nc is None or output_nc is None:
        raise DataError("make_loader needs spec= (the method's data_spec(config)) or input_nc and output_nc")
    for key, nc in (("input_nc", input_nc), ("output_nc", output_nc)):
        if nc not in (1, 3):
            raise DataError(f"config.{key}={nc!r} must be 1 or 3")
    return DataSpec(domains=("A", "B"), channels={"A": input_nc, "B": output_nc})


def _with_holdout(sources: dict[str, DomainSource], data_config: Any, split: str) -> dict[str, Any]:
    """The 'train' split without config.data.holdout images per domain, or the 'holdout' split."""
    from unpaired.data.holdout import split_holdout  # pylint: disable=import-outside-toplevel

    count = _get(data_config, "holdout")
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise DataError(f"config.data.holdout={count!r} must be an integer >= 0")
    if split == "holdout" and count == 0:
        raise DataError("config.data.holdout is 0: there is no held-out split to read")
    return split_holdout(sources, count, split)


def make_loader(
    data_config: Any,
    *,
    split: str,
    batch_size: int,
    seed: int,
    spec: DataSpec | None = None,
    input_nc: int | None = None,
    output_nc: int | None = None,
    shard_index: int = 0,
    shard_count: int = 1,
) -> UnpairedLoader:
    """An UnpairedLoader for `split` ('train' or 'test') of the spec's domains from config.data.

    `spec` is the method's `data_spec(config)`; without it, input_nc/output_nc give CycleGAN's
    (A, B) (1 = grayscale, as the reference's per-side Grayscale). 'test' follows the
    reference's test.py: load_size = crop_size, no flip, serial batches (testA[i] with
    testB[i % |B|]). 'holdout' reads the config.data.holdout training images that 'train'
    then leaves out (`unpaired.data.holdout`), prepared like 'test'.
    """
    if split not in ("train", "test", "holdout"):
        raise DataError(f"split must be 'train', 'test' or 'holdout', got {split!r}")
    spec = _spec_from(spec, input_nc, output_nc)
    for d in spec.domains:
        if spec.channels[d] not in (1, 3):
            raise DataError(f"domain {d!r} has {spec.channels[d]!r} channels in the method's data spec; must be 1 or 3")
    bad_image = _get(data_config, "bad_image")
    if bad_image not in ("skip", "error"):  # checked before any (slow) source is built
        raise DataError(f"config.data.bad_image={bad_image!r} must be 'skip' or 'error'")
    mode = _get(data_config, "preprocess")
    crop_size = _get(data_config, "crop_size")
    load_size = _get(data_config, "load_size") if split == "train" else crop_size
    validate_preprocess(mode, _get(data_config, "load_size"), crop_size)
    flip = split == "train" and not _get(data_config, "no_flip")
    transform = Preprocess(mode=mode, load_size=load_size, crop_size=crop_size, flip=flip)
    sources = _sources(data_config, "test" if split == "test" else "train", spec)
    if split != "test":  # config.data.holdout training images are held out of 'train'
        sources = _with_holdout(sources, data_config, split)
    return UnpairedLoader(
        sources,
        batch_size=batch_size,
        transforms=transform,
        labels=spec.labels,
        seed=seed,
        serial_batches=split != "train" or bool(_get(data_config, "serial_batches")),
        num_workers=_get(data_config, "num_workers"),
        shard_index=shard_index,
        shard_count=shard_count,
        bad_image=bad_image,
    )
