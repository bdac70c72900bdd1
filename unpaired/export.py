"""Exports a training run's networks in the official implementation's plain format.

One seam for every method: a method that can write its networks as the reference's
files has the optional hook `export_official(params, model_state, path) -> list[str]`
(write under folder `path`, return the files written; UFDN: `vae.pth`, `dnet.pth`, ...;
UNIT: `gen.pt` and `dis.pt`, each `{"a": ..., "b": ...}`). `launch/export.py` is the command.
"""

from __future__ import annotations

import os

from unpaired import translate


def export_workdir(workdir: str | os.PathLike[str], output: str | os.PathLike[str],
                   step: int | None = None) -> list[str]:
    """Writes checkpoint `step` (default: the newest) of `workdir` under `output`; the files."""
    method, state, config = translate.load_workdir_state(workdir, step)
    export = getattr(method, "export_official", None)
    if export is None:
        raise ValueError(f"config.method={config.method!r} has no official export format "
                         f"(workdir {os.fspath(workdir)!r})")
    return list(export(state.params, state.model_state, os.fspath(output)))
