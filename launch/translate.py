r"""Translate images with a trained generator: one of our workdirs or an official weight file.

    python -m launch.translate --checkpoint=workdirs/h2z --input=photos/ --output=out/
    python -m launch.translate --checkpoint=workdirs/h2z --direction=BtoA ...
    python -m launch.translate --checkpoint=workdirs/h2z --target=A ...   # same as BtoA
    python -m launch.translate --checkpoint=checkpoints/horse2zebra_pretrained/latest_net_G.pth \
        --input=datasets/horse2zebra/testA --output=results/h2z

--checkpoint is a training workdir, its `checkpoints/` or `checkpoints/<step>` folder (the
newest step unless --step says otherwise; the architecture comes from the saved config,
--config.x=y overrides apply on top), or an official weight file of the method, read by
the method (CycleGAN: a PyTorch generator state_dict); then the architecture comes from --config, whose
default is `configs/cyclegan.py:folder` -- the reference's test defaults (resnet_9blocks,
ngf 64, instance norm, no dropout, 3 channels in and out) -- so the official pretrained
CycleGAN models load as they are; a pix2pix model needs e.g. --config.netG=unet_256
--config.norm=batch --config.no_dropout=False. --direction does not apply to a .pth.

What to translate to is asked of the method: --direction=AtoB|BtoA (two-domain methods),
--target=<domain name or index> (CycleGAN: A or B; --target=B is AtoB), or a continuous
--code=0.3,0.7,0 (N-domain methods such as UFDN; CycleGAN refuses it). --eval_mode=false
runs the networks in train mode like the reference's test.py without --eval: BatchNorm
uses each batch's own statistics (so results depend on which images share a batch: use
--batch_size=1 for the reference's per-image behaviour) and dropout is on, with a fixed key.

Writes one PNG per input (same stem, subfolders kept; `a.jpg` + `a.png` become `a_jpg.png`
+ `a_png.png`), PNG copies of the inputs under `inputs/`, and `index.html`.
"""

from __future__ import annotations

import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from unpaired import cli

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DEFAULT_CONFIG = os.path.join(_REPO, "configs", "cyclegan.py") + ":folder"

if __name__ == "__main__":  # before the flag below applies --config.x overrides to its default
    cli.exit_on_config_errors(sys.argv[1:], default_config=_DEFAULT_CONFIG)

_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", None, "A training workdir (or its checkpoints/<step> folder) or a PyTorch "
    "generator .pth file (e.g. latest_net_G.pth, latest_net_G_A.pth, horse2zebra.pth).")
_INPUT = flags.DEFINE_string("input", None, "An image file or a folder (searched recursively).")
_OUTPUT = flags.DEFINE_string("output", None, "Folder for the PNG outputs and index.html.")
_DIRECTION = flags.DEFINE_enum(
    "direction", None, ["AtoB", "BtoA"],
    "Two-domain methods: the direction (default: the method's, AtoB). A weight file "
    "holding one generator serves one direction; the method says which.")
_TARGET = flags.DEFINE_string(
    "target", None, "The domain to translate to, by name or index (CycleGAN: A or B).")
_CODE = flags.DEFINE_string(
    "code", None, "N-domain methods: a continuous domain code, e.g. 0.3,0.7,0.")
_EVAL_MODE = flags.DEFINE_bool(
    "eval_mode", True, "false: run the generator in train mode as the reference's default "
    "test.py does (BatchNorm batch statistics, so batch composition matters; dropout on "
    "with a fixed key).")
_STEP = flags.DEFINE_integer(
    "step", None, "Workdir checkpoints: the step to load (default: newest).")
_RESIZE = flags.DEFINE_enum(
    "resize", "pad", ["pad", "resize"],
    "Sizes the generator cannot take (the method says what sides must be multiples of): "
    "'pad' reflect-pads and crops the output back; 'resize' resizes (bicubic) to the nearest "
    "valid size and the output back. Outputs always have the input's size.")
_BATCH_SIZE = flags.DEFINE_integer(
    "batch_size", 1, "Images per generator call (images of the same size are batched).")
_CONFIG = config_flags.DEFINE_config_file(
    "config", _DEFAULT_CONFIG,
    "Architecture for a .pth checkpoint (default: the reference's test defaults, "
    "resnet_9blocks, ngf 64, instance norm, no dropout, RGB). For a workdir only "
    "--config.x=y overrides are used, on top of the saved config.",
)

_VERBOSE = cli.define_verbose()
log = logging.getLogger(__name__)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    cli.setup_logging(_VERBOSE.value)
    from unpaired import translate
    from unpaired.checkpoint import CheckpointError
    from unpaired.data.errors import DataError

    checkpoint = _CHECKPOINT.value
    if not os.path.exists(_INPUT.value):  # before the (slow) model load
        sys.exit(f"error: input {_INPUT.value!r} does not exist")
    overrides = dict(config_flags.get_override_values(flags.FLAGS["config"]))
    is_file = os.path.isfile(checkpoint) or os.path.isfile(checkpoint + ".index")  # or a TF prefix
    if is_file and flags.FLAGS["step"].present:
        log.warning("--step is ignored for the .pth file %s", checkpoint)
    if not is_file and flags.FLAGS["config"].present:
        log.warning("--config file is ignored for a workdir (its saved config is used); "
                    "--config.x=y overrides still apply")
    try:  # user errors (a wrong path, option or architecture) end with their message only
        request = translate.make_request(_DIRECTION.value, _TARGET.value, _CODE.value)
        generator = translate.load_generator(
            checkpoint, config=_CONFIG.value, step=_STEP.value, overrides=overrides,
            request=request, eval_mode=_EVAL_MODE.value,
        )
    except (ValueError, CheckpointError, ImportError) as e:  # incl. StateDictMismatchError
        sys.exit(f"error: {e}")
    log.info("generator: %s", generator.source)
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
    cli.run(main, default_config=_DEFAULT_CONFIG)
