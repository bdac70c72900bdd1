"""The CycleGAN image history pool as a pure, jit-able function of (pool, images, draws).

Same semantics as the reference's `util/image_pool.py`, image by image in batch order:
while the pool holds fewer than `size` images, store the image and return it; once it is
full, draw p ~ U(0, 1); if p > 0.5 return a stored image i ~ U{0..size-1} and store the
new image in its place, else return the new image. The pool lives in the train state,
so it is checkpointed (the reference loses it on resume).
"""

from __future__ import annotations

import flax.struct
import jax
import jax.numpy as jnp

Array = jax.Array


@flax.struct.dataclass
class ImagePool:
    """Stored images (size, H, W, C) and how many slots are filled (int32 scalar)."""

    images: Array
    count: Array

    @property
    def size(self) -> int:
        return self.images.shape[0]


def init_pool(size: int, image_shape: tuple[int, int, int], dtype=jnp.float32) -> ImagePool:
    """An empty pool for `size` images of shape (H, W, C)."""
    return ImagePool(jnp.zeros((size,) + tuple(image_shape), dtype), jnp.zeros((), jnp.int32))


def draw(key: Array, batch: int, size: int) -> tuple[Array, Array]:
    """The per-image random draws (p ~ U[0,1), i ~ U{0..size-1}) for one query."""
    key_p, key_i = jax.random.split(key)
    uniforms = jax.random.uniform(key_p, (batch,), jnp.float32)
    indices = jax.random.randint(key_i, (batch,), 0, max(size, 1), jnp.int32)
    return uniforms, indices


def query_with_draws(
    pool: ImagePool, images: Array, uniforms: Array, indices: Array
) -> tuple[ImagePool, Array]:
    """Passes `images` (N, H, W, C) through the pool with explicit draws (tests replay them).

    Draw n is used by image n only if the pool is full when image n arrives, like the
    reference, which only calls `random` then.
    """
    if pool.size == 0:
        return pool, images
    images = images.astype(pool.images.dtype)

    def one(carry, inputs):
        stored, count = carry
        image, u, i = inputs
        filling = count < pool.size
        swap = jnp.logical_and(jnp.logical_not(filling), u > 0.5)
        slot = jnp.where(filling, count, i)
        returned = jnp.where(swap, stored[i], image)
        write = jnp.logical_or(filling, swap)
        stored = stored.at[slot].set(jnp.where(write, image, stored[slot]))
        return (stored, count + filling.astype(jnp.int32)), returned

    (stored, count), out = jax.lax.scan(
        one, (pool.images, pool.count), (images, uniforms, indices)
    )
    return ImagePool(stored, count), out


def query(pool: ImagePool, images: Array, key: Array) -> tuple[ImagePool, Array]:
    """Passes `images` through the pool, drawing its randomness from `key`."""
    uniforms, indices = draw(key, images.shape[0], pool.size)
    return query_with_draws(pool, images, uniforms, indices)
