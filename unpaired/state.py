"""The TrainState pytree: everything a run needs to continue bit-identically.

Parameters and non-trainable statistics per network, one optax state per optimizer
group, the step, the PRNG key and any method-specific buffers (image pools). It is one
pytree, so `jit`, donation, sharding and checkpointing treat it as a unit.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.struct
import jax
import optax

Array = jax.Array


@flax.struct.dataclass
class TrainState:
    """params[net], model_state[net] (e.g. BatchNorm stats), opt_state[group], buffers, step, key."""

    step: Array
    params: dict[str, Any]
    model_state: dict[str, Any]
    opt_state: dict[str, Any]
    buffers: dict[str, Any]
    key: Array


def apply_group_update(
    tx: optax.GradientTransformation,
    opt_state: optax.OptState,
    params: Mapping[str, Any],
    grads: Mapping[str, Any],
) -> tuple[dict[str, Any], optax.OptState]:
    """One optimizer step for a group of networks (e.g. G_A and G_B under one Adam)."""
    updates, opt_state = tx.update(dict(grads), opt_state, dict(params))
    return optax.apply_updates(dict(params), updates), opt_state

