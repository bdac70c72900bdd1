"""Methods by name: the train loop, translate and benchmark look them up here, never by branching.

A method is a class built as `Method(config, steps_per_epoch)` with `networks`, `groups`,
`create_state(key)`, `state_from_variables(variables, key)`, `train_step(state, batch)`,
`translate(params, images, direction, model_state)` and `visuals(params, batch, model_state)`.
"""

from __future__ import annotations

import importlib
from typing import Any

import ml_collections

_REGISTRY = {
    "cyclegan": ("unpaired.methods.cyclegan", "CycleGAN"),
}


def get_method_class(name: str) -> type:
    """The method class registered as `name` (e.g. 'cyclegan')."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown config.method {name!r}; expected one of {sorted(_REGISTRY)}")
    module, attr = _REGISTRY[name]
    return getattr(importlib.import_module(module), attr)


def build(config: ml_collections.ConfigDict, steps_per_epoch: int = 1) -> Any:
    """Builds the method named by `config.method` from a resolved config."""
    return get_method_class(config.method)(config, steps_per_epoch)
