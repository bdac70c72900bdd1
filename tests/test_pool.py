"""The jit-able image pool against the reference ImagePool with the same draws."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import torch

from unpaired import pool

from unpaired.torch_reference import cyclegan as ref


def test_pool_matches_reference_over_many_queries():
    size, batch = 5, 3
    state = pool.init_pool(size, (2, 2, 1))
    reference = ref.ImagePool(size)
    query = jax.jit(pool.query_with_draws)
    rng = np.random.RandomState(0)
    for step in range(8):
        images = rng.randn(batch, 2, 2, 1).astype(np.float32)
        uniforms = rng.uniform(size=batch).astype(np.float32)
        indices = rng.randint(0, size, batch).astype(np.int32)
        count = int(state.count)
        draws = [(float(uniforms[n]), int(indices[n])) for n in range(batch) if count + n >= size]
        expected = reference.query(torch.from_numpy(images.transpose(0, 3, 1, 2)), draws)
        state, out = query(state, jnp.asarray(images), jnp.asarray(uniforms), jnp.asarray(indices))
        np.testing.assert_array_equal(np.asarray(out), expected.numpy().transpose(0, 2, 3, 1))
        stored = np.concatenate([t.numpy() for t in reference.images]).transpose(0, 2, 3, 1)
        np.testing.assert_array_equal(np.asarray(state.images)[: len(stored)], stored)
    assert int(state.count) == size


def test_pool_of_size_zero_passes_images_through():
    state = pool.init_pool(0, (4, 4, 3))
    images = jnp.ones((2, 4, 4, 3))
    new_state, out = pool.query(state, images, jax.random.key(0))
    chex.assert_trees_all_equal(out, images)
    assert new_state.images.shape == (0, 4, 4, 3)


def test_pool_query_is_jittable_and_deterministic_for_a_key():
    state = pool.init_pool(4, (3, 3, 1))
    images = jnp.arange(6 * 9, dtype=jnp.float32).reshape(6, 3, 3, 1)
    run = jax.jit(pool.query)
    a = run(state, images, jax.random.key(1))
    b = run(state, images, jax.random.key(1))
    chex.assert_trees_all_equal(a, b)
    # The first four images fill the pool and come back unchanged.
    np.testing.assert_array_equal(np.asarray(a[1][:4]), np.asarray(images[:4]))
