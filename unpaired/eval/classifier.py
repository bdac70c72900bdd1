"""A trained classifier run (e.g. dtn_pretrain's f) as a batched predict function."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import numpy as np


@dataclasses.dataclass
class Classifier:
    """`predict(images) -> int class per image` in eval mode; `source` says what was loaded."""

    predict: Callable[[Any], jax.Array]
    source: str
    method: Any = None
    state: Any = None


def from_state(method: Any, state: Any, source: str = "in memory") -> Classifier:
    """A Classifier around a method with `classify(params, model_state, images)`."""
    if not hasattr(method, "classify"):
        raise ValueError(f"{source} is a {getattr(method, 'name', type(method).__name__)} run; "
                         "a classifier run (e.g. a dtn_pretrain preset) is needed")
    fn = jax.jit(method.classify)
    return Classifier(lambda x: fn(state.params, state.model_state, x), source, method, state)


def load_classifier(workdir: str, key: str = "config.eval.classifiers") -> Classifier:
    """The newest checkpoint of a classifier run; errors name `key` and the workdir."""
    from unpaired import translate  # pylint: disable=import-outside-toplevel

    try:
        method, state, config = translate.load_workdir_state(workdir)
    except Exception as err:
        raise ValueError(f"{key}: cannot load the classifier run {workdir!r}: {err}") from err
    where = f"{key} {os.path.abspath(workdir)} step {int(state.step)}"
    if not hasattr(method, "classify"):
        raise ValueError(f"{key}: {workdir!r} is a {config.method} run; expected a classifier "
                         "run (a dtn_pretrain preset trained on the target domain)")
    return from_state(method, state, where)
