r"""Translate images with a trained generator: one of our workdirs or an official `.pth`.

    python -m launch.translate --checkpoint=workdirs/h2z --input=photos/ --output=out/
    python -m launch.translate --checkpoint=workdirs/h2z --direction=BtoA ...
    python -m launch.translate --checkpoint=checkpoints/horse2zebra_pretrained/latest_net_G.pth \
        --input=datasets/horse2zebra/testA --output=results/h2z

--checkpoint is a training workdir, its `checkpoints/` or `checkpoints/<step>` folder (the
newest step unless --step says otherwise; the architecture comes from the saved config,
--config.x=y overrides apply on top, and --direction picks G_A (AtoB) or G_B (BtoA)), or a
PyTorch generator state_dict file: then the architecture comes from --config, whose
default is `configs/cyclegan.py:folder` -- the reference's test defaults (resnet_9blocks,
ngf 64, instance norm, no dropout, 3 channels in and out) -- so the official pretrained
CycleGAN models load as they are; a pix2pix model needs e.g. --config.netG=unet_256
--config.norm=batch --config.no_dropout=False. --direction does not apply to a .pth.

Writes one PNG per input (same stem, subfolders kept; `a.jpg` + `a.png` become `a_jpg.png`
+ `a_png.png`), PNG copies of the inputs under `inputs/`, and `index.html`.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "A training workdir (or its checkpoints/<step> folder) or a PyTorch "
    "generator .pth file (e.g. latest_net_G.pth, latest_net_G_A.pth, horse2zebra.pth).")
_INPUT = flags.DEFINE_string("input", None, "An image file or a folder (searched recursively).")
_OUTPUT = flags.DEFINE_string("output", None, "Folder for the PNG outputs and index.html.")
_DIRECTION = flags.DEFINE_enum(
    "direction", "AtoB", ["AtoB", "BtoA"],
    "Workdir checkpoints: AtoB runs G_A, BtoA runs G_B. Ignored for a .pth (one generator).")
_STEP = flags.DEFINE_integer(
    "step", None, "Workdir checkpoints: the step to load (default: newest).")
_RESIZE = flags.DEFINE_enum(
    "resize", "pad", ["pad", "resize"],
    "Sizes the generator cannot take (ResNet: multiples of 4, unet_128: 128, unet_256: 256): "
    "'pad' reflect-pads and crops the output back; 'resize' resizes (bicubic) to the nearest "
    "valid size and the output back. Outputs always have the input's size.")
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 1, "Images per generator call (images of the same size are batched).")
_CONFIG = config_flags.DEFINE_config_file(
    "config", os.path.join(_REPO, "configs", "cyclegan.py") + ":folder",
    "Architecture for a .pth checkpoint (default: the reference's test defaults, "
    "resnet_9blocks, ngf 64, instance norm, no dropout, RGB). For a workdir only "
    "--config.x=y overrides are used, on top of the saved config.",
)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from unpaired import translate
    from unpaired.checkpoint import CheckpointError
    from unpaired.data.errors import DataError

    checkpoint = _CHECKPOINT.value
    if not os.path.exists(_INPUT.value):  # before the (slow) model load
        sys.exit(f"error: input {_INPUT.value!r} does not exist")
    overrides = dict(config_flags.get_override_values(flags.FLAGS["config"]))
    is_file = os.path.isfile(checkpoint)
    if is_file and flags.FLAGS["direction"].present:
        logging.warning("--direction=%s is ignored: %s holds a single generator",
                        _DIRECTION.value, checkpoint)
    if is_file and flags.FLAGS["step"].present:
        logging.warning("--step is ignored for the .pth file %s", checkpoint)
    if not is_file and flags.FLAGS["config"].present:
        logging.warning("--config file is ignored for a workdir (its saved config is used); "
                        "--config.x=y overrides still apply")
    try:  # user errors (a wrong path, option or architecture) end with their message only
        generator = translate.load_generator(
            checkpoint, config=_CONFIG.value, direction=_DIRECTION.value, step=_STEP.value,
            overrides=overrides,
        )
    except (ValueError, CheckpointError, ImportError) as e:  # incl. StateDictMismatchError
        sys.exit(f"error: {e}")
    logging.info("generator: %s", generator.source)
    try:
        rows = translate.translate_path(
            generator, _INPUT.value, _OUTPUT.value, resize=_RESIZE.value,
            batch_size=_BATCH_SIZE.value,
        )
    except (translate.TranslateError, DataError) as e:
        sys.exit(f"error: {e}")
    index = os.path.join(_OUTPUT.value, translate.INDEX_FILE)
    print(f"translated {len(rows)} image(s) into {_OUTPUT.value}; see {index}")


if __name__ == "__main__":
    flags.mark_flags_as_required(["checkpoint", "input", "output"])
    app.run(main)
