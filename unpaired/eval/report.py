"""Everything a trained model can report, for `launch/evaluate.py` and the digits benchmark.

`load_model` reads one of our workdirs (its saved config rebuilds the networks) or an
official weight file read by the method (`method.load_official`, one direction);
`report` computes `unpaired.eval.run.evaluate`'s metrics and, on request, the pixel-level
DA accuracy (`unpaired.eval.pixel_da`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

import jax
import ml_collections

from unpaired.eval import config as eval_config
from unpaired.eval import pixel_da, run
from unpaired.methods.translation import TranslationRequest


@dataclasses.dataclass
class Model:
    """A method with the weights to evaluate; `served` limits it to one direction (weight files)."""

    method: Any
    state: Any
    config: ml_collections.ConfigDict
    source: str
    served: TranslationRequest | None = None


@dataclasses.dataclass
class InferenceState:
    """The parts of a TrainState evaluation reads (an official weight file has no more)."""

    params: Any
    model_state: Any
    step: int = 0


def _with_eval_block(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The config with an `eval` block (runs saved before it existed get the defaults)."""
    config = ml_collections.ConfigDict(config.to_dict())
    defaults = eval_config.eval_config()
    if "eval" in config:
        defaults.update({k: v for k, v in config.eval.items() if k in defaults})
    config.eval = defaults
    return config


def load_model(path: str, *, config: ml_collections.ConfigDict | None = None, step: int | None = None,
               overrides: Mapping[str, Any] | None = None,
               request: TranslationRequest | None = None, flag: str = "--checkpoint") -> Model:
    """A workdir (or its checkpoints/<step>, or its best/) or, with `config`, an official weight
    file. Errors name `flag`, the command-line flag that gave `path`."""
    from unpaired import methods, translate  # pylint: disable=import-outside-toplevel

    if os.path.isdir(path):
        workdir, step = translate.resolve_workdir(path, step)
        method, state, cfg = translate.load_workdir_state(workdir, step, overrides)
        return Model(method, state, _with_eval_block(cfg),
                     f"{os.path.abspath(workdir)} step {int(state.step)}")
    if not os.path.exists(path) and not os.path.exists(path + ".index"):
        raise ValueError(f"{flag}={path!r} does not exist")
    if flag == "--workdir":
        raise ValueError(f"--workdir={path!r} is a file, not a training workdir; an official "
                         "weight file goes to --checkpoint, with --config (its architecture)")
    if config is None:
        raise ValueError(f"{flag}={path!r} is a weight file: give --config (its architecture)")
    config = _with_eval_block(config)
    method = methods.build(config)
    params, model_state, served = method.load_official(path, request or TranslationRequest())
    state = InferenceState(*jax.device_put((params, model_state)))
    return Model(method, state, config, f"{path} ({config.method})", served)


def report(model: Model, *, pixel_da_steps: int = 0) -> dict[str, Any]:
    """{metric: value} of everything the model supports, plus its step and source."""
    data = run.load_eval_data(model.method, model.config)
    if model.served is not None:  # a weight file: only the direction it holds
        data.directions = [d for d in data.directions if d[2] == model.served]
    metrics: dict[str, Any] = dict(run.evaluate(model.method, model.state, model.config, data))
    if pixel_da_steps > 0:
        metrics.update(pixel_da.pixel_da_metrics(model.method, model.state, model.config, data,
                                                 pixel_da_steps))
    return {"source": model.source, "step": int(model.state.step), "method": model.config.method,
            **metrics}
