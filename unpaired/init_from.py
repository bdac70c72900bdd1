"""Staged training: start a fresh run with some networks taken from another run or a weight file.

`config.init_from` names the source: a training workdir (its newest checkpoint), a
`checkpoints/<step>` folder, or a weight file in the method's official format (read by
`method.import_weights`). `config.init_networks` names the networks to take,
comma-separated, `ours=theirs` where the source calls a network otherwise (`f=C` takes the
source's classifier C as our f). Every taken network is checked leaf by leaf against ours,
and the mismatches are named. Only a fresh run is initialised: a run resuming from its own
checkpoint keeps its weights. A method whose `required_init(config)` names networks (a
second stage) cannot start without `config.init_from`, so it never starts from random weights.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping

import jax
import ml_collections

from unpaired import checkpoint
from unpaired.config_checks import ConfigError

_MAX_LISTED = 10


class InitFromError(ConfigError):
    """config.init_from / config.init_networks cannot be applied; the message names the key."""


@dataclasses.dataclass(frozen=True)
class InitSource:
    """Where initial weights came from: the source path, its step (None for a file), ours->theirs."""

    path: str
    step: int | None
    networks: Mapping[str, str]

    def to_meta(self) -> dict[str, Any]:
        """The record kept in every checkpoint's meta as `init_from`."""
        return {"path": self.path, "step": self.step, "networks": dict(self.networks)}


def parse_networks(spec: str) -> dict[str, str]:
    """'G_A,f=C' -> {'G_A': 'G_A', 'f': 'C'} (ours -> the source's name)."""
    out: dict[str, str] = {}
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        ours, _, theirs = item.partition("=")
        ours, theirs = ours.strip(), (theirs.strip() or ours.strip())
        if not ours or ours in out:
            raise InitFromError(f"config.init_networks={spec!r}: {'empty' if not ours else 'repeated'} "
                                f"network name in {item!r}")
        out[ours] = theirs
    return out


def validate_init(config: ml_collections.ConfigDict, method_class: type) -> None:
    """Raises InitFromError when required networks lack a source or the names are inconsistent."""
    source = config.get("init_from", "")
    names = parse_networks(config.get("init_networks", ""))
    required = tuple(getattr(method_class, "required_init", lambda c: ())(config))
    if required and not source:
        raise InitFromError(
            f"config.init_from is empty, but {config.method} must take {', '.join(required)} "
            "from an earlier stage: set --config.init_from=<workdir or weight file> and "
            f"--config.init_networks={','.join(required)}")
    if source and not names:
        raise InitFromError(f"config.init_networks is empty: name the networks to take from "
                            f"config.init_from={source!r} (e.g. G_A,D_A or f=C)")
    if names and not source:
        raise InitFromError(f"config.init_networks={config.init_networks!r} is set but "
                            "config.init_from is empty")
    missing = [n for n in required if n not in names]
    if missing:
        raise InitFromError(f"config.init_networks={config.init_networks!r} must include "
                            f"{', '.join(missing)} (required by {config.method})")


def _resolve_checkpoint(path: str) -> tuple[Path, int | None]:
    """(checkpoints directory, step or None for the newest) of a workdir or checkpoints/<step>."""
    p = Path(path)
    if p.name.isdigit() and p.parent.name == checkpoint.CHECKPOINT_SUBDIR:
        return p.parent, int(p.name)
    if p.name == checkpoint.CHECKPOINT_SUBDIR and not checkpoint.checkpoint_dir(p).is_dir():
        return p, None
    directory = checkpoint.checkpoint_dir(p)
    if not directory.is_dir():
        raise InitFromError(f"config.init_from={path!r} has no checkpoint: expected a workdir "
                            f"with {checkpoint.CHECKPOINT_SUBDIR}/, a {checkpoint.CHECKPOINT_SUBDIR}"
                            "/<step> folder or a weight file")
    return directory, None


def read_run_networks(path: str) -> tuple[dict[str, Any], int]:
    """({network: {'params', 'model_state'}}, step) of a run's checkpoint, built from its saved config."""
    from unpaired import methods  # methods import this module's callers, not the reverse

    directory, step = _resolve_checkpoint(path)
    ckpt = checkpoint.Checkpointer(directory, async_save=False)
    try:
        if step is None:
            step = ckpt.latest_step()
            if step is None:
                raise InitFromError(f"config.init_from={path!r} has no checkpoint: {directory} is empty")
        try:
            meta = ckpt.read_meta(step)
        except checkpoint.CheckpointError as err:
            raise InitFromError(f"config.init_from={path!r}: {err}") from err
        if not isinstance(meta.get("config"), Mapping):
            raise InitFromError(f"config.init_from={path!r}: checkpoint step {step} has no saved config")
        source_method = methods.build(ml_collections.ConfigDict(meta["config"]))
        template = jax.eval_shape(source_method.create_state, jax.random.key(0))
        try:
            state, _ = ckpt.restore(template, step)
        except checkpoint.CheckpointMismatchError as err:
            if not all(m.startswith("key:") for m in err.mismatches):
                raise InitFromError(f"config.init_from={path!r}: {err}") from err
            raw_key = template.replace(key=jax.eval_shape(lambda: jax.random.PRNGKey(0)))
            state, _ = ckpt.restore(raw_key, step)  # a run saved with a raw uint32 key
    finally:
        ckpt.close()
    order = [n for n in getattr(source_method, "networks", ()) if n in state.params]
    order += [n for n in state.params if n not in order]
    networks = {name: {"params": state.params[name], "model_state": state.model_state.get(name, {})}
                for name in order}
    return networks, step


def read_file_networks(method: Any, path: str, names: Mapping[str, str]) -> dict[str, Any]:
    """{ours: {'params', 'model_state'}} from a weight file, through `method.import_weights`."""
    importer = getattr(method, "import_weights", None)
    if importer is None:
        raise InitFromError(f"config.init_from={path!r} is a file, and {type(method).__name__} "
                            "reads no weight files; give a workdir")
    try:
        variables = importer(path, tuple(names))
    except ConfigError:
        raise
    except ValueError as err:  # incl. torch_io.StateDictMismatchError
        raise InitFromError(f"config.init_from={path!r}: {err}") from err
    return {ours: {"params": v["params"], "model_state": v.get("batch_stats", {})}
            for ours, v in variables.items()}


def _mismatches(ours: str, theirs: str, source: Any, template: Any) -> list[str]:
    """checkpoint.state_layout-style lines for every leaf of `source` that does not fit `template`."""
    lines = checkpoint._layout_mismatches(  # the checkpoint module's wording, one line per leaf
        checkpoint.state_layout(source), checkpoint.state_layout(template))
    label = ours if ours == theirs else f"{ours} (source {theirs})"
    return [f"{label}/{line}" for line in lines]


def apply_init(method: Any, config: ml_collections.ConfigDict, state: Any) -> tuple[Any, InitSource]:
    """`state` with the networks of config.init_networks taken from config.init_from.

    Parameters and model state (BatchNorm statistics) are replaced; the optimizer state
    is left as initialised (Adam's moments are zeros whatever the weights).
    """
    path = os.fspath(config.init_from)
    names = parse_networks(config.init_networks)
    unknown = [n for n in names if n not in state.params]
    if unknown:
        raise InitFromError(f"config.init_networks names {', '.join(map(repr, unknown))}, which "
                            f"{config.method} does not have; it has {', '.join(state.params)}")
    weight_file = os.path.isfile(path) or os.path.isfile(path + ".index")  # or a TF prefix
    if not os.path.exists(path) and not weight_file:
        raise InitFromError(f"config.init_from={path!r} does not exist")
    if weight_file:
        taken, step = read_file_networks(method, path, names), None
    else:
        source, step = read_run_networks(path)
        absent = [t for t in names.values() if t not in source]
        if absent:
            raise InitFromError(
                f"config.init_networks names {', '.join(map(repr, absent))} which the source "
                f"does not have; it has {', '.join(source)} (config.init_from={path!r})")
        taken = {ours: source[theirs] for ours, theirs in names.items()}
    problems = []
    for ours, theirs in names.items():
        template = {"params": state.params[ours], "model_state": state.model_state.get(ours, {})}
        problems += _mismatches(ours, theirs, taken[ours], template)
    if problems:
        shown = "\n  ".join(problems[:_MAX_LISTED])
        if len(problems) > _MAX_LISTED:
            shown += f"\n  ... and {len(problems) - _MAX_LISTED} more"
        raise InitFromError(f"config.init_from={path!r} does not fit the networks built from the "
                            f"config ({len(problems)} differing leaves):\n  {shown}")
    params = dict(state.params)
    model_state = dict(state.model_state)
    for ours in names:
        params[ours] = jax.tree.map(lambda x, t: jax.numpy.asarray(x, t.dtype),
                                    taken[ours]["params"], state.params[ours])
        model_state[ours] = taken[ours]["model_state"]
    record = InitSource(os.path.abspath(path), step, names)
    return state.replace(params=params, model_state=model_state), record
