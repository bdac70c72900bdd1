r"""Everything a trained model can report, as one JSON object on the last stdout line.

    python -m launch.evaluate --workdir=workdirs/cyclegan_mnist2usps \
        --classifiers=A=workdirs/clf_mnist,B=workdirs/clf_usps --pixel_da_steps=2000
    python -m launch.evaluate --checkpoint=dtn-20 --config=configs/dtn.py:mnist2usps ...

--workdir is a training run (its newest checkpoint, or --step; `<workdir>/best` is the
model-selected one): the saved config rebuilds the networks and names the data, and its
`eval` block the classifiers (--classifiers and --test_size override it). --checkpoint with
--config reads an official weight file with the method (one direction). Metrics are those
of `unpaired.eval.run` (translation accuracy per direction with a target-domain
classifier, cycle L1, the method's digit_accuracy) and, with --pixel_da_steps > 0, the
pixel-level DA accuracy (a classifier trained on translated source images, tested on the
real target test set).
"""

from __future__ import annotations

import json
import logging
import os
import sys

from absl import app, flags
from ml_collections import config_flags

from unpaired import cli

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DEFAULT_CONFIG = os.path.join(_REPO, "configs", "cyclegan.py") + ":folder"

if __name__ == "__main__":
    cli.exit_on_config_errors(sys.argv[1:], default_config=_DEFAULT_CONFIG)

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir, its checkpoints/<step>, or its best/.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", None, "An official weight file (with --config).")
_STEP = flags.DEFINE_integer("step", None, "Workdir: the checkpoint step (default: newest).")
_CLASSIFIERS = flags.DEFINE_string(
    "classifiers", None, "domain=workdir,...: a classifier run per target domain "
    "(default: the run's config.eval.classifiers).")
_TEST_SIZE = flags.DEFINE_integer("test_size", None, "The first N test images per domain (0: all).")
_PIXEL_DA_STEPS = flags.DEFINE_integer(
    "pixel_da_steps", None, "Train a classifier this many steps on translated source images and "
    "report its target test accuracy (default: config.eval.pixel_da_steps; 0: off).")
_DIRECTION = flags.DEFINE_enum("direction", None, ["AtoB", "BtoA"], "Weight file: the direction it holds.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", _DEFAULT_CONFIG, "The architecture of a --checkpoint weight file; for a workdir only "
    "--config.x=y overrides apply, on top of the saved config.")

_VERBOSE = cli.define_verbose()
log = logging.getLogger(__name__)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    cli.setup_logging(_VERBOSE.value)
    from unpaired.checkpoint import CheckpointError
    from unpaired.data.errors import DataError
    from unpaired.eval import config as eval_config
    from unpaired.eval import report
    from unpaired.methods.translation import TranslationRequest

    if bool(_WORKDIR.value) == bool(_CHECKPOINT.value):
        sys.exit("error: give exactly one of --workdir and --checkpoint")
    overrides = dict(config_flags.get_override_values(flags.FLAGS["config"]))
    try:
        if _WORKDIR.value:
            model = report.load_model(_WORKDIR.value, step=_STEP.value, overrides=overrides,
                                      flag="--workdir")
        else:
            model = report.load_model(_CHECKPOINT.value, config=_CONFIG.value,
                                      request=TranslationRequest(direction=_DIRECTION.value))
        e = model.config.eval
        if _CLASSIFIERS.value is not None:
            e.classifiers = _CLASSIFIERS.value
        if _TEST_SIZE.value is not None:
            e.test_size = _TEST_SIZE.value
        if _PIXEL_DA_STEPS.value is not None:
            e.pixel_da_steps = _PIXEL_DA_STEPS.value
        eval_config.validate_eval(model.config, tuple(type(model.method).data_spec(model.config).domains))
        log.info("evaluating %s", model.source)
        metrics = report.report(model, pixel_da_steps=int(e.pixel_da_steps))
    except (ValueError, CheckpointError, DataError) as err:  # incl. ConfigError
        sys.exit(f"error: {err}")
    for key, value in metrics.items():
        if isinstance(value, float):
            print(f"{key}: {value:.4f}")
    print(json.dumps(metrics, sort_keys=True), flush=True)


if __name__ == "__main__":
    cli.run(main, default_config=_DEFAULT_CONFIG)
