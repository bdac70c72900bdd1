"""`tf.train.AdamOptimizer` as an optax transform: TF's epsilon placement, bit for bit in form.

TF 1.x updates m <- b1 m + (1-b1) g, v <- b2 v + (1-b2) g^2 and
theta <- theta - lr_t m / (sqrt(v) + eps) with lr_t = lr sqrt(1-b2^t) / (1-b1^t): eps is
added to sqrt of the *uncorrected* v ("epsilon hat"), unlike optax.adam / torch.optim.Adam,
which add it to sqrt(v / (1-b2^t)). The two differ early in training (eps effectively
3.2e-7 instead of 1e-8 at t=1). Facts: shared/reference/dtn.md section 4 (Adam).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

Array = jax.Array


class TFAdamState(NamedTuple):
    """t (number of updates so far) and the first and second moments, one pair per leaf."""

    count: Array
    mu: optax.Updates
    nu: optax.Updates


def tf_adam(learning_rate: float, b1: float = 0.9, b2: float = 0.999,
            eps: float = 1e-8) -> optax.GradientTransformation:
    """tf.train.AdamOptimizer(learning_rate, b1, b2, eps) at a constant rate; t per instance."""

    def init(params: optax.Params) -> TFAdamState:
        zeros = jax.tree.map(jnp.zeros_like, params)
        return TFAdamState(jnp.zeros((), jnp.int32), zeros, jax.tree.map(jnp.zeros_like, params))

    def update(updates: optax.Updates, state: TFAdamState, params: optax.Params | None = None
               ) -> tuple[optax.Updates, TFAdamState]:
        del params
        count = state.count + 1
        mu = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, state.mu, updates)
        nu = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, state.nu, updates)

        def step(m: Array, v: Array) -> Array:
            t = count.astype(m.dtype)
            lr_t = learning_rate * jnp.sqrt(1 - b2 ** t) / (1 - b1 ** t)
            return -lr_t * m / (jnp.sqrt(v) + eps)

        return jax.tree.map(step, mu, nu), TFAdamState(count, mu, nu)

    return optax.GradientTransformation(init, update)
