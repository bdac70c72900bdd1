"""Methods by name: the train loop, translate and benchmark look them up here, never by branching.

A method is a class built as `Method(config, steps_per_epoch)` with `networks`, `groups`,
`create_state(key)`, `state_from_variables(variables, key)`, `train_step(state, batch)`,
`translate(...)` and `visuals(params, batch, model_state)`, and two classmethods that run
before it is built:

* `data_spec(config) -> unpaired.data.spec.DataSpec`: the domains it reads (batch keys),
  their channels and which need labels; the loader is built from it.
* `validate_config(config)`: raises `config_checks.ConfigError` naming the first of
  its own keys whose value cannot work (generic keys are checked by `config_validation`).

Optional: `after_training(state, workdir, load_run)`, called by the loop when a run reaches
its last step (e.g. DTN stage 1 prints and saves its test accuracy). `load_run(workdir) ->
(method, state, config)` reads another finished run (DTN's target classifier): the loop
hands it over so that methods never import the floors above them (`translate`).
Optional: `export_official(params, model_state, path) -> list[str]`, used by
`launch/export.py` (`unpaired.export`): writes the networks under folder `path` in the
reference's plain format (UFDN: `vae.pth`, `dnet.pth`, ...; UNIT: `gen.pt`, `dis.pt`).

Staged training (`unpaired.init_from`, config keys `init_from`, `init_networks`):

* `required_init(config) -> tuple[str, ...]` (classmethod): networks that must be taken
  from `config.init_from` (e.g. DTN's pretrained f); validation fails naming
  `config.init_from` when they are required and it is empty. CycleGAN: ().
* `network_template(name)`: the shapes/dtypes of network `name`'s variables.
* `import_weights(path, names) -> {name: variables}`: networks from a weight file in the
  method's official format (CycleGAN: one reference state_dict `.pth` per network).

Translation (`unpaired.translate`, `launch/translate.py`), which never names a method's
networks; requests are `unpaired.methods.translation.TranslationRequest(direction,
target, code)`:

* `size_multiple: int`: generator input sides must be multiples of it.
* `input_size: int` (optional): the one square side the networks take, where they take no
  other (DTN, UFDN, UNIT DA); translate then resizes every image to it and the output back.
* `resolve_request(request) -> TranslationRequest`: the request completed with the
  method's defaults, or ValueError naming the flag it cannot serve (--code for CycleGAN).
* `translation_channels(request) -> (in, out)` and `describe(request) -> str`.
* `translate(params, images, request, model_state, train=False, key=None)`: NHWC [-1, 1]
  images translated; `train=True` is the reference's test without --eval (batch
  statistics, dropout from `key`).
* `load_official(path, request) -> (params, model_state, served_request)`: an official
  weight file read without running code from it; `served_request` is what those weights
  translate (a file with one generator serves one direction).
"""

from __future__ import annotations

import importlib
from typing import Any

import ml_collections

_REGISTRY = {
    "cyclegan": ("unpaired.methods.cyclegan", "CycleGAN"),
    "unit": ("unpaired.methods.unit_family", "UNITFamily"),  # by config.arch
    "unit_da": ("unpaired.methods.unit_da", "UNITDA"),
    "dtn_pretrain": ("unpaired.methods.dtn", "DTNPretrain"),
    "dtn": ("unpaired.methods.dtn", "DTN"),
    "ufdn": ("unpaired.methods.ufdn", "UFDN"),
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
