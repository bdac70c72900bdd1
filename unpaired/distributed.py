"""Scaling out: the data-parallel step, per-device BatchNorm, and JAX's multi-host runtime.

The loop shards each global batch over a 1-D 'data' mesh of every device (all hosts) and
keeps the TrainState replicated; XLA inserts the gradient all-reduce. Everything random
is drawn inside the jitted step for the global batch from the state's key, and the image
pools are updated on the global batch, so a run gives the same numbers on 1 or N devices.

BatchNorm statistics: `config.bn_sync=True` (default) normalises with the statistics of
the global batch (synchronised, as SyncBatchNorm): the result does not depend on the
device count. `bn_sync=False` gives each device's slice of the batch its own statistics,
as the PyTorch reference's DDP computes them per process; the running statistics follow
their average over devices (the reference keeps rank 0's).
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Callable, Iterator, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
from jax.sharding import NamedSharding, PartitionSpec

from unpaired import layers

log = logging.getLogger(__name__)

Array = jax.Array

# Environment variables `initialize` reads when no flag gives the value.
ENV_COORDINATOR = "UNPAIRED_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "UNPAIRED_NUM_PROCESSES"
ENV_PROCESS_ID = "UNPAIRED_PROCESS_ID"


def grouped_moments(xf: Array, groups: int) -> tuple[Array, Array]:
    """Mean and biased variance over (N/groups, H, W) of each contiguous batch slice: (groups, C)."""
    if xf.shape[0] % groups:
        raise ValueError(f"a BatchNorm input of {xf.shape[0]} samples cannot be split into "
                         f"{groups} per-device groups (config.bn_sync=False)")
    g = xf.reshape(groups, xf.shape[0] // groups, *xf.shape[1:])
    mean = jnp.mean(g, axis=(1, 2, 3))
    var = jnp.mean(jnp.square(g - mean[:, None, None, None]), axis=(1, 2, 3))
    return mean, var


@contextlib.contextmanager
def per_device_batch_norm(groups: int) -> Iterator[None]:
    """While tracing inside it, every `layers.BatchNorm` normalises `groups` batch slices apart.

    With the batch sharded contiguously over `groups` devices, slice i is device i's part
    of the batch: per-device statistics, computed without communication. groups=1: no change.
    """
    def interceptor(next_fun: Callable[..., Any], args: tuple, kwargs: dict, context: Any) -> Any:
        if isinstance(context.module, layers.BatchNorm) and context.method_name == "batch_moments":
            return grouped_moments(*args, groups=groups)
        return next_fun(*args, **kwargs)

    if groups == 1:
        yield
        return
    with nn.intercept_methods(interceptor):
        yield


def bn_groups(config: ml_collections.ConfigDict, num_devices: int) -> int:
    """How many groups BatchNorm statistics are taken over: 1 (synchronised) or the device count."""
    return 1 if config.get("bn_sync", True) else num_devices


def traced_step(method: Any, groups: int = 1) -> Callable[[Any, Any], Any]:
    """`method.train_step`, with per-device BatchNorm statistics over `groups` slices if > 1."""
    if groups == 1:
        return method.train_step

    def step(state: Any, batch: Any) -> Any:
        with per_device_batch_norm(groups):
            return method.train_step(state, batch)

    return step


def data_parallel_step(
    method: Any, mesh: jax.sharding.Mesh, groups: int = 1
) -> tuple[Callable[[Any, Any], Any], NamedSharding, NamedSharding]:
    """(jitted step, state sharding, batch sharding): batch split over 'data', state replicated.

    The step donates its input state and returns it replicated on every device.
    """
    replicated = NamedSharding(mesh, PartitionSpec())
    batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
    step = jax.jit(traced_step(method, groups), donate_argnums=0,
                   out_shardings=(replicated, replicated))
    return step, replicated, batch_sharding


def replicated_state(method: Any, key: Array, sharding: NamedSharding) -> Any:
    """A fresh TrainState created directly with `sharding` (a global array on every host)."""
    return jax.jit(method.create_state, out_shardings=sharding)(key)


def is_primary() -> bool:
    """Whether this process writes the logs, grids and TensorBoard events (process 0)."""
    return jax.process_index() == 0


class NullWriter:
    """The MetricWriter of hosts other than process 0: logs nothing."""

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Drops `values` (process 0 writes them)."""

    def image(self, step: int, name: str, image: Any) -> None:
        """Drops `image` (process 0 writes it)."""

    def close(self) -> None:
        """Nothing to close."""


def _env_int(env: Mapping[str, str], name: str) -> int | None:
    """The integer value of environment variable `name`, None if unset or empty."""
    value = env.get(name, "")
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be an integer") from None


def initialize(
    coordinator_address: str = "", num_processes: int | None = None, process_id: int | None = None,
    *, auto: bool = False, heartbeat_timeout_s: int = 100, initialization_timeout_s: int = 300,
    env: Mapping[str, str] | None = None,
) -> bool:
    """Starts `jax.distributed` when asked; returns whether it did.

    Explicit values (flags) come first, then UNPAIRED_COORDINATOR_ADDRESS /
    UNPAIRED_NUM_PROCESSES / UNPAIRED_PROCESS_ID. `auto=True` without them lets JAX
    detect the cluster itself (TPU pod slices, SLURM, Open MPI). Nothing given and
    auto False: a single-process run, nothing is started. Must run before any other JAX call.
    """
    env = os.environ if env is None else env
    coordinator_address = coordinator_address or env.get(ENV_COORDINATOR, "")
    num_processes = _env_int(env, ENV_NUM_PROCESSES) if num_processes is None else num_processes
    process_id = _env_int(env, ENV_PROCESS_ID) if process_id is None else process_id
    explicit = bool(coordinator_address) or num_processes is not None or process_id is not None
    if not explicit and not auto:
        return False
    if explicit and not (coordinator_address and num_processes is not None and process_id is not None):
        missing = [n for n, v in (("coordinator_address", coordinator_address),
                                  ("num_processes", num_processes),
                                  ("process_id", process_id)) if v in ("", None)]
        raise ValueError(f"multi-host training needs --coordinator_address, --num_processes and "
                         f"--process_id together; missing {', '.join(missing)}")
    if explicit and not 0 <= process_id < num_processes:
        raise ValueError(f"--process_id={process_id} must be in [0, {num_processes})")
    kwargs: dict[str, Any] = dict(initialization_timeout=initialization_timeout_s,
                                  heartbeat_timeout_seconds=heartbeat_timeout_s)
    if explicit:
        kwargs.update(coordinator_address=coordinator_address, num_processes=num_processes,
                      process_id=process_id)
    jax.distributed.initialize(**kwargs)
    log.info("jax.distributed: process %d of %d, %d local / %d global devices",
             jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())
    return True
