"""Checks a resolved config once at start, so a bad value fails with the key's name, not a trace.

ml_collections already rejects unknown keys and wrong types given as `--config.x=y`;
this catches values that parse but cannot work. `validate` checks what every method's
run uses (the method's name, batch and devices, epochs, logging and checkpoint cadence,
seed, dtype, the data) and then asks the method, through the registry, to check its own
keys (`Method.validate_config(config)`: for CycleGAN netG, netD, norm, lambdas, sizes the
generator can take, ...). ConfigError and the shared checks live in `config_checks`, the
floor below the methods; this module sits above them (it looks methods up by name).
"""

from __future__ import annotations

import ml_collections

from unpaired.config_checks import ConfigError, check_at_least, check_choice, check_present
from unpaired.data import SOURCES, DataError, check_locations, parse_domains
from unpaired.data.locations import parse_mapping
from unpaired.data.transforms import PREPROCESS_MODES
from unpaired.eval.config import validate_eval
from unpaired.methods import get_method_class

DTYPES = ("float32", "bfloat16")
# Keys the train loop itself reads, whatever the method.
GENERIC_KEYS = ("method", "seed", "dtype", "batch_size", "n_epochs", "n_epochs_decay",
                "epoch_count", "max_steps", "log_every", "sample_every", "checkpoint_every",
                "keep_checkpoints", "data")


def validate(config: ml_collections.ConfigDict, *, num_devices: int = 1) -> None:
    """Raises ConfigError naming the first key whose value cannot work for training."""
    check_present(config, ("method",))
    try:
        method = get_method_class(config.method)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    check_present(config, GENERIC_KEYS)
    check_choice(config, "dtype", DTYPES)
    if not isinstance(config.seed, int) or isinstance(config.seed, bool):
        raise ConfigError(f"config.seed={config.seed!r} must be an integer")
    for key in ("batch_size", "n_epochs", "epoch_count", "log_every", "sample_every",
                "checkpoint_every", "keep_checkpoints"):
        check_at_least(config, key, 1)
    check_at_least(config, "n_epochs_decay", 0)
    if config.epoch_count > config.n_epochs + config.n_epochs_decay:
        raise ConfigError(
            f"config.epoch_count={config.epoch_count} is past the last epoch "
            f"(n_epochs + n_epochs_decay = {config.n_epochs + config.n_epochs_decay})"
        )
    if config.batch_size % num_devices:
        raise ConfigError(
            f"config.batch_size={config.batch_size} must be a multiple of the {num_devices} "
            "devices it is split over"
        )
    if not isinstance(config.get("bn_sync", True), bool):
        raise ConfigError(f"config.bn_sync={config.bn_sync!r} must be True (BatchNorm statistics "
                          "over the global batch) or False (per device)")
    _validate_data(config)
    method.validate_config(config)
    if "eval_every" in config or "eval" in config:
        validate_eval(config, tuple(method.data_spec(config).domains))


def _validate_data(config: ml_collections.ConfigDict) -> None:
    data = config.data
    check_choice(data, "source", SOURCES, "config.data")
    check_choice(data, "preprocess", PREPROCESS_MODES, "config.data")
    for key in ("crop_size", "load_size", "image_size"):
        check_at_least(data, key, 1, "config.data")
    check_at_least(data, "num_workers", 0, "config.data")
    if data.get("image_resize", "bicubic") not in ("bicubic", "lanczos"):
        raise ConfigError(f"config.data.image_resize={data.image_resize!r} is not one of bicubic, lanczos")
    if "holdout" in data:
        check_at_least(data, "holdout", 0, "config.data")
    if data.bad_image not in ("skip", "error"):
        raise ConfigError(f"config.data.bad_image={data.bad_image!r} is not one of skip, error")
    if data.preprocess in ("resize_and_crop", "scale_width_and_crop") and data.crop_size > data.load_size:
        raise ConfigError(
            f"config.data.crop_size={data.crop_size} is larger than config.data.load_size="
            f"{data.load_size}; the crop must fit in the resized image"
        )
    if data.preprocess in ("none", "scale_width") and data.source in ("folder", "tfds", "tfds_stock"):
        raise ConfigError(
            f"config.data.preprocess={data.preprocess!r} keeps each image's own size, but training "
            "batches and the image pools need one size; train with resize_and_crop, crop or "
            "scale_width_and_crop (translate handles any size, as the reference advises)"
        )
    if data.source in ("digits", "idx") and data.preprocess == "none":
        if data.image_size != data.crop_size:
            raise ConfigError(
                f"config.data.crop_size={data.crop_size} must equal config.data.image_size="
                f"{data.image_size} with preprocess='none' (the images keep that size)"
            )
    # Every domain the method reads has a location, and labels it needs a file (no image is read).
    try:
        spec = get_method_class(config.method).data_spec(config)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    try:
        if "domains" in data:
            parse_domains(data.domains)
        for key in ("idx", "idx_test", "idx_labels", "idx_test_labels", "digits"):
            if key in data:
                parse_mapping(data[key], key)
        check_locations(data, spec, "train")
    except DataError as err:
        raise ConfigError(str(err)) from err
