"""Weak scaling of the data-parallel step: throughput on 1, 2, 4, ... devices at a fixed per-device batch.

`launch.benchmark --devices=1,2,4,8` calls `weak_scaling`; on CPU the devices are simulated
(`--xla_force_host_platform_device_count`), so the figures there show overheads, not speed-ups.
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from unpaired import distributed, methods


def random_batch(config: ml_collections.ConfigDict, batch_size: int, seed: int = 0) -> dict[str, np.ndarray]:
    """A batch of uniform [-1, 1] images (and labels) for every domain the method reads."""
    spec = methods.get_method_class(config.method).data_spec(config)
    size = config.data.crop_size
    rng = np.random.RandomState(seed)
    batch = {d: rng.uniform(-1, 1, (batch_size, size, size, spec.channels[d])).astype(np.float32)
             for d in spec.domains}
    for d in spec.labels:
        batch[spec.label_key(d)] = rng.randint(0, 10, batch_size).astype(np.int32)
    return batch


def time_devices(config: ml_collections.ConfigDict, devices: int, per_device_batch: int,
                 steps: int, warmup: int, seed: int = 0) -> dict[str, Any]:
    """Steps/s and images/s of the jitted data-parallel step on the first `devices` devices."""
    if devices > jax.device_count():
        raise ValueError(f"--devices asks for {devices} devices; {jax.device_count()} are available")
    config = ml_collections.ConfigDict(config.to_dict())
    config.batch_size = per_device_batch * devices
    mesh = Mesh(np.array(jax.devices()[:devices]), ("data",))
    method = methods.build(config, steps_per_epoch=max(steps + warmup, 1))
    step, replicated, batch_sharding = distributed.data_parallel_step(
        method, mesh, distributed.bn_groups(config, devices))
    state = jax.device_put(method.create_state(jax.random.key(seed)), replicated)
    batch = jax.device_put(random_batch(config, config.batch_size, seed), batch_sharding)
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    for _ in range(warmup):
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(steps):
        state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    seconds = time.perf_counter() - start
    return {"devices": devices, "global_batch": config.batch_size, "steps": steps,
            "steps_per_s": steps / seconds, "img_per_s": steps * config.batch_size / seconds,
            "first_step_s": compile_s}


def weak_scaling(config: ml_collections.ConfigDict, device_counts: Sequence[int], per_device_batch: int,
                 steps: int = 10, warmup: int = 2, seed: int = 0) -> list[dict[str, Any]]:
    """One row per device count; efficiency = img/s on n devices / (n x img/s on the first count)."""
    rows = [time_devices(config, n, per_device_batch, steps, warmup, seed) for n in device_counts]
    base = rows[0]["img_per_s"] / rows[0]["devices"]
    for row in rows:
        row["weak_scaling_efficiency"] = row["img_per_s"] / (row["devices"] * base)
    return rows


def format_rows(rows: Sequence[dict[str, Any]], platform: str) -> str:
    """A plain-text table of `weak_scaling`'s rows."""
    lines = [f"weak scaling on {platform}: devices  global batch  steps/s  img/s  efficiency"]
    for r in rows:
        lines.append(f"{r['devices']:>30d}  {r['global_batch']:>12d}  {r['steps_per_s']:7.2f}  "
                     f"{r['img_per_s']:6.1f}  {r['weak_scaling_efficiency']:9.2f}")
    return "\n".join(lines)
