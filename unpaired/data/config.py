"""The `config.data` block every method's config file uses, defined once.

Each field says where a domain's images are or how they are prepared (see the
`unpaired.data` docstring for the scheme); a config file calls `data_config(source, ...)`
with its own defaults, so a flag such as `--config.data.idx_A=...` means the same for every
method.
"""

from __future__ import annotations

from typing import Any

import ml_collections


def data_config(source: str = "folder", **defaults: Any) -> ml_collections.ConfigDict:
    """The data fields with the reference's defaults, `defaults` (existing keys only) on top."""
    c = ml_collections.ConfigDict(dict(
        source=source,          # digits | folder | idx | tfds | tfds_stock
        domains="A,B",          # domain names, for methods whose domains come from the data (CycleGAN: A,B)
        dataroot="",            # folder (or .zip: tfds) with trainA/ ... or <split>/<domain>/
        idx_A="",               # IDX image file or folder for domain A (source=idx)
        idx_B="",               # IDX image file or folder for domain B (source=idx)
        idx_A_test="",          # test IDX file for A (default: the t10k- sibling of idx_A)
        idx_B_test="",          # test IDX file for B
        idx="",                 # IDX files of any domains: "C=path,D=path" (idx_A/idx_B win for A/B)
        idx_test="",            # test IDX files "name=path" (default: the t10k- sibling of the train file)
        idx_labels="",          # IDX label files "name=path" (default: *-labels-idx1-ubyte[.gz] beside the images)
        idx_test_labels="",     # the same for the test split
        digits="",              # built-in renderings "name=rendering" (default A=handwritten, B=printed, C=thick, D=inverted)
        tfds_name="",           # our builder's name (tfds) or e.g. cycle_gan/horse2zebra
        data_dir="",            # tensorflow-datasets data_dir
        image_size=32,          # digits / idx: images are resized to this
        image_resize="bicubic",  # idx: the resize filter, bicubic | lanczos (PIL; DTN's reference)
        preprocess="resize_and_crop",  # resize_and_crop | crop | scale_width | scale_width_and_crop | none
        load_size=286,
        crop_size=256,
        no_flip=False,
        serial_batches=False,
        num_workers=4,
        bad_image="skip",       # skip (counted warning) | error
        holdout=0,              # training images per domain held out for model selection (unpaired.data.holdout)
    ))
    unknown = sorted(set(defaults) - set(c.keys()))
    if unknown:
        raise KeyError(f"data_config got unknown fields {unknown}; known: {sorted(c.keys())}")
    c.update(defaults)
    return c
