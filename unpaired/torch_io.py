"""PyTorch state_dicts <-> our network variables, for official checkpoints in and out.

Our module names spell the reference's `nn.Sequential` indices (`model_10/conv_block_5`
is `model.10.conv_block.5`), so one rule maps every network: the last `_N` of a module
name becomes `.N`, `kernel` is `weight` (OIHW <-> HWIO; ConvTranspose2d's (in, out, k, k)
weight takes the same transpose, see `layers.ConvTranspose2d`), BatchNorm's `scale` is
`weight` and its statistics are `running_mean`, `running_var`, `num_batches_tracked`.
Loading is strict: a key or shape that does not fit is an error naming it. `.pth` files
are read and written by `unpaired.weights`, without torch.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import numpy as np

from unpaired.weights.torch_pickle import load_state_dict_file
from unpaired.weights.torch_writer import write_torch_file

_INDEXED = re.compile(r"^(.*)_(\d+)$")
_STAT_NAMES = {"mean": "running_mean", "var": "running_var",
               "num_batches_tracked": "num_batches_tracked"}
_NORM_STATS = ("running_mean", "running_var", "num_batches_tracked")


class StateDictMismatchError(ValueError):
    """A state_dict does not fit the network built from the config; the message names the keys."""


def module_key(path: tuple[str, ...]) -> str:
    """('model_10', 'conv_block_5') -> 'model.10.conv_block.5'."""
    parts = []
    for name in path:
        match = _INDEXED.match(name)
        parts.append(f"{match.group(1)}.{match.group(2)}" if match else name)
    return ".".join(parts)


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out = {}
    for name, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, prefix + (name,)))
        else:
            out[prefix + (name,)] = value
    return out


def _unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path, value in flat.items():
        node = out
        for name in path[:-1]:
            node = node.setdefault(name, {})
        node[path[-1]] = value
    return out


def _torch_key(collection: str, path: tuple[str, ...]) -> str:
    *modules, leaf = path
    if collection == "params":
        leaf = {"kernel": "weight", "scale": "weight"}.get(leaf, leaf)
    else:
        leaf = _STAT_NAMES[leaf]
    return f"{module_key(tuple(modules))}.{leaf}"


def _to_numpy(value: Any) -> np.ndarray:
    """A copy (never a view: torch updates BatchNorm statistics in place)."""
    if hasattr(value, "detach"):  # a torch tensor; no torch import needed.
        value = value.detach().cpu().numpy()
    return np.array(value, copy=True)


def _to_torch_layout(array: np.ndarray) -> np.ndarray:
    return array.transpose(3, 2, 0, 1) if array.ndim == 4 else array


def _from_torch_layout(array: np.ndarray) -> np.ndarray:
    return array.transpose(2, 3, 1, 0) if array.ndim == 4 else array


def key_table(variables: Mapping[str, Any]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """torch key -> (collection, path) for one network's variables; the converter's table."""
    table = {}
    for collection in ("params", "batch_stats"):
        for path in _flatten(variables.get(collection, {})):
            table[_torch_key(collection, path)] = (collection, path)
    return table


def to_state_dict(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """One network's variables as a reference state_dict (numpy arrays, torch layouts)."""
    out = {}
    for key, (collection, path) in key_table(variables).items():
        value = np.asarray(_flatten(variables[collection])[path])
        out[key] = _to_torch_layout(value) if collection == "params" else value
    return out


def _mismatch_hint(missing: list[str], unexpected: list[str]) -> str:
    hints = []
    if any(".conv_block.6." in k for k in unexpected) and any(".conv_block.5." in k for k in missing):
        hints.append("the checkpoint was saved with dropout in the ResNet blocks "
                     "(set --config.no_dropout=False)")
    if any(k.endswith(("running_mean", "running_var")) for k in unexpected + missing):
        hints.append("the norm layers differ (check --config.norm: instance or batch)")
    if not hints:
        hints.append("check --config.netG/netD, ngf/ndf, norm and no_dropout against the "
                     "options the checkpoint was trained with")
    return "; ".join(hints)


def from_state_dict(
    state_dict: Mapping[str, Any], template: Mapping[str, Any], *, source: str = "state_dict",
    hint: str | None = None,
) -> dict[str, Any]:
    """Our variables for one network from a reference state_dict, strictly checked.

    `template` holds the network's variables as initialised from the config (only shapes
    and dtypes are used). InstanceNorm running statistics of old checkpoints (keys
    `running_mean`, `running_var`, `num_batches_tracked` where our network has no
    BatchNorm) are dropped, as the reference's loader does. A 'module.' prefix from
    DataParallel is stripped. `hint` replaces the CycleGAN advice ending a mismatch error.
    """
    table = key_table(template)
    incoming = {}
    for key, value in state_dict.items():
        key = key[len("module."):] if key.startswith("module.") else key
        incoming[key] = value
    legacy = [k for k in incoming if k not in table and k.endswith(_NORM_STATS)]
    for key in legacy:
        del incoming[key]
    missing = sorted(set(table) - set(incoming))
    unexpected = sorted(set(incoming) - set(table))
    if missing or unexpected:
        raise StateDictMismatchError(
            f"{source} does not fit the network built from the config: "
            f"missing keys {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
            f"unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}; "
            + (hint or _mismatch_hint(missing, unexpected))
        )
    flat = {"params": _flatten(template.get("params", {})),
            "batch_stats": _flatten(template.get("batch_stats", {}))}
    out = {"params": {}, "batch_stats": {}}
    for key, (collection, path) in table.items():
        value = _to_numpy(incoming[key])
        if collection == "params":
            value = _from_torch_layout(value)
        expected = flat[collection][path]
        if tuple(value.shape) != tuple(expected.shape):
            raise StateDictMismatchError(
                f"{source}: key {key!r} has shape {tuple(_to_numpy(incoming[key]).shape)} "
                f"but the network built from the config expects "
                f"{tuple(_to_torch_layout(np.zeros(expected.shape)).shape) if collection == 'params' else tuple(expected.shape)}; "
                + (hint or _mismatch_hint([], []))
            )
        out[collection][path] = np.asarray(value, dtype=expected.dtype)
    result = {"params": _unflatten(out["params"])}
    if out["batch_stats"]:
        result["batch_stats"] = _unflatten(out["batch_stats"])
    return result


def load_pth(path: str) -> dict[str, np.ndarray]:
    """Reads a `.pth` state_dict (either torch format) into numpy arrays, without torch.

    The file is read as data by `unpaired.weights` (no pickled code runs); a
    `{'state_dict': ...}` wrapper is unwrapped. Errors name the file.
    """
    return load_state_dict_file(path)


def save_pth(state_dict: Mapping[str, np.ndarray], path: str) -> None:
    """Writes a state_dict that `torch.load` and `load_state_dict` accept as the reference's.

    Written without torch (zip format); `num_batches_tracked` is stored as int64 as torch has it.
    """
    arrays = {}
    for key, value in state_dict.items():
        array = np.asarray(value)
        if key.endswith("num_batches_tracked"):
            array = array.astype(np.int64)
        arrays[key] = array
    write_torch_file(arrays, path)
