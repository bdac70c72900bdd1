"""This CPU's float32 matmul peak, the yardstick for a CPU step's GFLOP/s (`fraction_of_peak`).

No data sheet gives a CPU's reachable FLOP/s for our thread count, so the benchmark measures
it: an `n` x `n` float32 matmul, jitted `jnp.dot` in JAX and `torch.mm` in PyTorch (the
threads the benchmark gives torch), the best of `repeats` runs each after one untimed run.
The peak is the faster of the two. It is measured on the threads this process may use, so
run it under the same `--cpu_threads` as the step it is compared with.
"""

from __future__ import annotations

import math
import time
from typing import Any, Callable

DEFAULT_SIZE = 2048  # 17 GFLOP a matmul: large enough for full-speed kernels, ~0.1-1 s a run
DEFAULT_REPEATS = 5


def matmul_flops(n: int) -> float:
    """FLOPs of one n x n by n x n matmul (a multiply and an add per term)."""
    return 2.0 * n ** 3


def best_gflops(run: Callable[[], None], flops: float, repeats: int) -> float:
    """GFLOP/s of the fastest of `repeats` timed calls of `run` (after one untimed call)."""
    if repeats < 1:
        raise ValueError(f"need repeats >= 1, got {repeats}")
    run()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return flops / max(best, 1e-9) / 1e9


def jax_matmul_gflops(n: int = DEFAULT_SIZE, repeats: int = DEFAULT_REPEATS) -> float:
    """Best GFLOP/s of a jitted float32 `jnp.dot` of two n x n matrices on JAX's default device."""
    import jax
    import jax.numpy as jnp

    key_a, key_b = jax.random.split(jax.random.PRNGKey(0))
    a = jax.random.normal(key_a, (n, n), jnp.float32)
    b = jax.random.normal(key_b, (n, n), jnp.float32)
    dot = jax.jit(jnp.dot)
    return best_gflops(lambda: dot(a, b).block_until_ready(), matmul_flops(n), repeats)


def torch_matmul_gflops(n: int = DEFAULT_SIZE, repeats: int = DEFAULT_REPEATS,
                        threads: int | None = None) -> float:
    """Best GFLOP/s of a float32 `torch.mm` of two n x n matrices on the CPU, under the
    benchmark's torch settings (`threads` as `step.torch_settings` sets them)."""
    import torch

    from unpaired.benchmarks import step

    with step.torch_settings("cpu", threads=threads):
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(n, n, generator=gen, dtype=torch.float32)
        b = torch.randn(n, n, generator=gen, dtype=torch.float32)
        return best_gflops(lambda: torch.mm(a, b), matmul_flops(n), repeats)


def measure_cpu_peak(n: int = DEFAULT_SIZE, repeats: int = DEFAULT_REPEATS, *,
                     threads: int | None = None, with_torch: bool = True) -> dict[str, Any]:
    """The record of this CPU's float32 matmul peak: peak_gflops (the faster framework's),
    peak_jax_gflops, peak_torch_gflops (None without torch), peak_torch_threads,
    peak_matmul_size, peak_source."""
    jax_gflops = jax_matmul_gflops(n, repeats)
    torch_gflops = torch_matmul_gflops(n, repeats, threads) if with_torch else None
    return {
        "peak_gflops": max(g for g in (jax_gflops, torch_gflops) if g is not None),
        "peak_jax_gflops": jax_gflops,
        "peak_torch_gflops": torch_gflops,
        "peak_torch_threads": _torch_threads(threads) if with_torch else None,
        "peak_matmul_size": int(n),
        "peak_source": "measured",
    }


def _torch_threads(threads: int | None) -> int:
    """The threads torch runs on under `step.torch_settings(threads=threads)`."""
    import torch

    return int(threads) if threads else torch.get_num_threads()


def given_peak(gflops: float) -> dict[str, Any]:
    """The record of a peak given by the user (--peak_gflops) instead of measured."""
    if not gflops > 0:
        raise ValueError(f"the peak must be > 0 GFLOP/s, got {gflops}")
    return {"peak_gflops": float(gflops), "peak_jax_gflops": None, "peak_torch_gflops": None,
            "peak_torch_threads": None, "peak_matmul_size": None, "peak_source": "--peak_gflops"}
