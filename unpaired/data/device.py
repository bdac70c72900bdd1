"""Moving host batches onto accelerators ahead of use, so the step never waits for a copy."""

from __future__ import annotations

import collections
from typing import Any, Iterable, Iterator

import jax


def _put(batch: Any, sharding: Any) -> Any:
    """Transfer one batch: plain device_put, or with `sharding`; multi-host assembles the global array."""
    if sharding is None:
        return jax.device_put(batch)
    if jax.process_count() > 1:
        # Each host holds its shard of the global batch (UnpairedLoader's shard_index slice).
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)
    return jax.device_put(batch, sharding)


def prefetch_to_device(iterator: Iterable[Any], size: int = 2, sharding: Any = None) -> Iterator[Any]:
    """Yield the batches of `iterator` already transferred, keeping `size` transfers in flight.

    `sharding` (e.g. a NamedSharding over the data axis) is applied to every leaf. Closing this
    generator also closes `iterator` when it has a close() (e.g. UnpairedLoader.iterate's).
    """
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"prefetch size must be a positive integer, got {size!r}")
    source = iter(iterator)
    queue: collections.deque[Any] = collections.deque()

    def enqueue(n: int) -> None:
        """Start the transfer of up to n more batches."""
        for _ in range(n):
            try:
                batch = next(source)
            except StopIteration:
                return
            queue.append(_put(batch, sharding))

    try:
        enqueue(size)
        while queue:
            out = queue.popleft()
            enqueue(1)
            yield out
    finally:
        close = getattr(iterator, "close", None) or getattr(source, "close", None)
        if callable(close):
            close()
