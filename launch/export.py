"""Exports a training run's networks as the official implementation's plain state_dicts.

    python -m launch.export --workdir=workdirs/ufdn_uda_small --output=exported/
    python -m launch.export --workdir=workdirs/ufdn --step=5000 --output=exported/

Written without torch, by the method (`export_official`, see `unpaired.export`); e.g.
UFDN writes `vae.pth` and `dnet.pth`, which `UFDN.load_state_dict(torch.load(...))` takes.
"""

import os
import sys

from absl import app, flags

from unpaired import cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A training workdir (or its checkpoints/<step>).")
_OUTPUT = flags.DEFINE_string("output", None, "Folder for the exported files.")
_STEP = flags.DEFINE_integer("step", None, "The checkpoint step to export (default: newest).")
_VERBOSE = cli.define_verbose()


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    cli.setup_logging(_VERBOSE.value)
    from unpaired import export, translate  # after flag parsing: imports jax
    from unpaired.checkpoint import CheckpointError

    if not os.path.exists(_WORKDIR.value):
        sys.exit(f"error: --workdir={_WORKDIR.value!r} does not exist")
    try:
        workdir, step = translate.resolve_workdir(_WORKDIR.value, _STEP.value)
        files = export.export_workdir(workdir, _OUTPUT.value, step)
    except (ValueError, CheckpointError, translate.TranslateError) as e:
        sys.exit(f"error: {e}")
    for path in files:
        print(path)


if __name__ == "__main__":
    flags.mark_flags_as_required(["workdir", "output"])
    app.run(main)
