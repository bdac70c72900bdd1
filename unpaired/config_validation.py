"""Checks a resolved config once at start, so a bad value fails with the key's name, not a trace.

ml_collections already rejects unknown keys and wrong types given as `--config.x=y`;
this catches values that parse but cannot work (a crop larger than the load size, sizes
the generator cannot take, unknown choices, negative weights).
"""

from __future__ import annotations

from typing import Any, Iterable

import ml_collections

from unpaired.data import SOURCES
from unpaired.data.transforms import PREPROCESS_MODES
from unpaired.losses import GAN_MODES
from unpaired.nets.cyclegan import DISCRIMINATORS, GENERATORS, discriminator_output_size
from unpaired.layers import NORMS
from unpaired.schedules import LR_POLICIES

# The smallest factor image sides must be a multiple of, per generator.
SIZE_MULTIPLE = {"resnet_9blocks": 4, "resnet_6blocks": 4, "unet_128": 128, "unet_256": 256}
DTYPES = ("float32", "bfloat16")


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key (config.x.y)."""


def _choice(config: Any, key: str, choices: Iterable[str], prefix: str = "config") -> None:
    value = config[key]
    if value not in choices:
        raise ConfigError(f"{prefix}.{key}={value!r} is not one of {', '.join(choices)}")


def _at_least(config: Any, key: str, minimum: float, prefix: str = "config") -> None:
    value = config[key]
    if value < minimum:
        raise ConfigError(f"{prefix}.{key}={value!r} must be >= {minimum}")


def validate(config: ml_collections.ConfigDict, *, num_devices: int = 1) -> None:
    """Raises ConfigError naming the first key whose value cannot work for training."""
    for key in ("method", "netG", "netD", "norm", "gan_mode", "lr_policy", "dtype"):
        if key not in config:
            raise ConfigError(f"config.{key} is missing; start from a file in configs/")
    _choice(config, "netG", GENERATORS)
    _choice(config, "netD", DISCRIMINATORS)
    _choice(config, "norm", NORMS)
    _choice(config, "gan_mode", GAN_MODES)
    _choice(config, "lr_policy", LR_POLICIES)
    _choice(config, "dtype", DTYPES)
    for key in ("input_nc", "output_nc", "ngf", "ndf", "n_layers_D", "batch_size",
                "n_epochs", "epoch_count", "lr_decay_iters", "log_every", "sample_every",
                "checkpoint_every", "keep_checkpoints"):
        _at_least(config, key, 1)
    for key in ("lambda_A", "lambda_B", "lambda_identity", "gp_weight", "pool_size",
                "n_epochs_decay", "init_gain"):
        _at_least(config, key, 0)
    if not config.lr > 0:
        raise ConfigError(f"config.lr={config.lr!r} must be > 0")
    for key in ("beta1", "beta2"):
        if not 0 <= config[key] < 1:
            raise ConfigError(f"config.{key}={config[key]!r} must be in [0, 1)")
    if config.lambda_identity > 0 and config.input_nc != config.output_nc:
        raise ConfigError(
            f"config.lambda_identity={config.lambda_identity} needs config.input_nc == "
            f"config.output_nc (got {config.input_nc} and {config.output_nc}); "
            "set --config.lambda_identity=0"
        )
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
    _validate_data(config)


def _validate_data(config: ml_collections.ConfigDict) -> None:
    # Imported here so this function's edits stay inside it (the rest of the file is being split).
    from unpaired.data import DataError, check_locations, parse_domains  # pylint: disable=import-outside-toplevel
    from unpaired.data.locations import parse_mapping  # pylint: disable=import-outside-toplevel
    from unpaired.methods import get_method_class  # pylint: disable=import-outside-toplevel

    data = config.data
    _choice(data, "source", SOURCES, "config.data")
    _choice(data, "preprocess", PREPROCESS_MODES, "config.data")
    for key in ("crop_size", "load_size", "image_size"):
        _at_least(data, key, 1, "config.data")
    _at_least(data, "num_workers", 0, "config.data")
    if data.bad_image not in ("skip", "error"):
        raise ConfigError(f"config.data.bad_image={data.bad_image!r} is not one of skip, error")
    if data.preprocess in ("resize_and_crop", "scale_width_and_crop") and data.crop_size > data.load_size:
        raise ConfigError(
            f"config.data.crop_size={data.crop_size} is larger than config.data.load_size="
            f"{data.load_size}; the crop must fit in the resized image"
        )
    multiple = SIZE_MULTIPLE[config.netG]
    if data.crop_size % multiple:
        raise ConfigError(
            f"config.data.crop_size={data.crop_size} must be a multiple of {multiple} for "
            f"config.netG={config.netG!r}, or the generator's output size differs from its input"
        )
    if discriminator_output_size(config.netD, config.n_layers_D, data.crop_size) < 1:
        raise ConfigError(
            f"config.data.crop_size={data.crop_size} is too small for config.netD="
            f"{config.netD!r} (n_layers_D={config.n_layers_D}): its logit map would be empty; "
            "use larger images or fewer discriminator layers"
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
        if data.image_size % multiple:
            raise ConfigError(
                f"config.data.image_size={data.image_size} must be a multiple of {multiple} for "
                f"config.netG={config.netG!r}"
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
