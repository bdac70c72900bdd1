"""Times a stride-1 reflect-padded conv's forward+backward in each of its CPU forms (entry 15
of docs/benchmarks.md): `python -m unpaired.benchmarks.conv_paths`.

The forms: XLA's plain VALID conv; the padded-then-cropped conv differentiated by autodiff
(its weight gradient is the slow one where the output has few channels); and `layers.conv2d`
as it is now (padded forward and input gradient, the plain conv's weight gradient). One
line per shape: batch, side, channels in -> out, kernel, then the median milliseconds.
"""

from __future__ import annotations

import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from unpaired import layers

# (batch, output side, in channels, out channels, kernel): the generators' last 7x7 conv at
# 64 and 256 px, their first, a ResNet block's 3x3, and the digits preset's last layer.
SHAPES = ((1, 64, 64, 3, 7), (1, 256, 64, 3, 7), (1, 64, 3, 64, 7), (1, 16, 256, 256, 3),
          (8, 32, 16, 3, 7))


def median_ms(fn: Callable, *args, repeats: int = 5) -> float:
    """Median wall milliseconds of `fn(*args)` after one untimed call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def forms() -> dict[str, Callable]:
    """Name -> conv(x, kernel) for each form timed."""
    return {"valid": lambda x, w: layers._conv_xla(x, w, (1, 1), (0, 0), None),
            # the padded-then-cropped conv with plain autodiff (the form before entry 15)
            "padded (autodiff)": lambda x, w: layers._conv_unpadded_same(x, w, None),
            "conv2d (now)": lambda x, w: layers.conv2d(x, w)}


def main() -> None:
    """Prints one line per shape: each form's forward+backward median time."""
    rng = np.random.default_rng(0)
    print(f"jax {jax.__version__}, {jax.default_backend()}, float32; fwd+bwd medians in ms")
    for batch, side, c_in, c_out, k in SHAPES:
        x = jnp.asarray(rng.standard_normal((batch, side + k - 1, side + k - 1, c_in)), jnp.float32)
        w = jnp.asarray(rng.standard_normal((k, k, c_in, c_out)) * 0.02, jnp.float32)
        cells = []
        for name, conv in forms().items():
            step = jax.jit(jax.grad(lambda x, w, conv=conv: jnp.sum(jnp.sin(conv(x, w))), (0, 1)))
            cells.append(f"{name} {median_ms(step, x, w):8.2f}")
        print(f"b{batch} {side}x{side} {c_in}->{c_out} k{k}: " + " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()
