"""The largest square image a method's training step fits in a memory budget (#15).

`step_memory(config, size)` compiles the jitted, donated training step for abstract inputs
(no state is materialised) and reads XLA's memory analysis: arguments + outputs - the
outputs aliased to donated arguments + temporaries, the bytes the step holds at its peak.
`largest_size` fits that total as a + b * size**2 from two sizes (parameters, optimizer
state and image pools are the constant; activations grow with the pixel count), predicts
the largest size in multiples of `multiple`, and confirms it by compiling there and one
multiple above. `confirm_on_device` then runs the step at that size on the device and
steps down while it runs out of memory, so the figure reported is one that ran.
`launch/benchmark.py --mode=max_size` prints it with and without `config.remat`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import ml_collections

from unpaired.benchmarks.step import _random_batch, resolve_config


@dataclasses.dataclass(frozen=True)
class StepMemory:
    """XLA's memory analysis of one compiled training step at `size` x `size`."""

    size: int
    argument_bytes: int
    output_bytes: int
    alias_bytes: int
    temp_bytes: int

    @property
    def total_bytes(self) -> int:
        """What the step holds at once: its inputs, its non-aliased outputs and its temporaries."""
        return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes


def sized(config: ml_collections.ConfigDict, size: int) -> ml_collections.ConfigDict:
    """`config` at `size` x `size` (load_size too, so a preset that resizes first stays valid)."""
    out = resolve_config(config, image_size=size)
    with out.unlocked():
        if "load_size" in out.data:
            out.data.load_size = int(size)
    return out


def step_memory(config: ml_collections.ConfigDict, size: int) -> StepMemory:
    """The compiled step's memory at `size`, from abstract state and batch (nothing allocated)."""
    import jax  # pylint: disable=import-outside-toplevel

    from unpaired import methods  # pylint: disable=import-outside-toplevel

    c = sized(config, size)
    method = methods.build(c, steps_per_epoch=1)
    state = jax.eval_shape(method.create_state, jax.random.PRNGKey(0))
    batch = jax.eval_shape(lambda k: _random_batch(c, k), jax.random.PRNGKey(1))
    compiled = jax.jit(method.train_step, donate_argnums=(0,)).lower(state, batch).compile()
    analysis = compiled.memory_analysis()
    if analysis is None:
        raise ValueError(f"the {jax.default_backend()} backend gives no memory analysis of a compiled step")
    return StepMemory(int(size), int(analysis.argument_size_in_bytes), int(analysis.output_size_in_bytes),
                      int(analysis.alias_size_in_bytes), int(analysis.temp_size_in_bytes))


def predict_size(a: StepMemory, b: StepMemory, budget_bytes: int, multiple: int) -> int:
    """The largest multiple of `multiple` whose total, on the line through a and b in size**2, fits."""
    if a.size == b.size:
        raise ValueError("two different sizes are needed to fit memory against the pixel count")
    slope = (b.total_bytes - a.total_bytes) / (b.size ** 2 - a.size ** 2)
    base = a.total_bytes - slope * a.size ** 2
    if slope <= 0:
        raise ValueError(f"the step's memory does not grow with the image ({a} -> {b})")
    if budget_bytes <= base:
        return 0
    return int(math.sqrt((budget_bytes - base) / slope) // multiple) * multiple


def largest_size(config: ml_collections.ConfigDict, budget_bytes: int, *, multiple: int = 64,
                 measure: Callable[[ml_collections.ConfigDict, int], StepMemory] = step_memory,
                 ) -> dict[str, Any]:
    """{'size': the largest multiple of `multiple` whose step fits `budget_bytes` (0: none),
    'memory': its StepMemory, 'probes': every StepMemory compiled on the way}."""
    if multiple < 1 or budget_bytes < 1:
        raise ValueError("need multiple >= 1 and a positive memory budget")
    probes: dict[int, StepMemory] = {}

    def probe(size: int) -> StepMemory:
        if size not in probes:
            probes[size] = measure(config, size)
        return probes[size]

    first, second = probe(2 * multiple), probe(4 * multiple)
    guess = max(multiple, predict_size(first, second, budget_bytes, multiple))
    # Confirm: step down while the guess does not fit, then up while the next one does.
    while guess > multiple and probe(guess).total_bytes > budget_bytes:
        guess -= multiple
    if probe(guess).total_bytes > budget_bytes:
        return {"size": 0, "memory": None, "probes": sorted(probes.values(), key=lambda m: m.size)}
    while probe(guess + multiple).total_bytes <= budget_bytes:
        guess += multiple
    return {"size": guess, "memory": probes[guess], "probes": sorted(probes.values(), key=lambda m: m.size)}


def is_out_of_memory(err: BaseException) -> bool:
    """True for an accelerator allocation failure (XLA's RESOURCE_EXHAUSTED)."""
    text = f"{type(err).__name__}: {err}"
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def confirm_on_device(config: ml_collections.ConfigDict, size: int, multiple: int, *,
                      steps: int = 2) -> dict[str, Any]:
    """Runs `steps` real steps at `size`, stepping down by `multiple` while the device runs out
    of memory; {'ran_size', 'peak_memory_bytes' (None where the device keeps no peak),
    'out_of_memory_at': [sizes that failed]}."""
    import jax  # pylint: disable=import-outside-toplevel

    from unpaired.benchmarks.step import _device_peak_memory  # pylint: disable=import-outside-toplevel
    from unpaired import methods  # pylint: disable=import-outside-toplevel

    failed = []
    while size >= multiple:
        c = sized(config, size)
        try:
            method = methods.build(c, steps_per_epoch=1)
            step = jax.jit(method.train_step, donate_argnums=(0,))
            state = method.create_state(jax.random.PRNGKey(0))
            batch = _random_batch(c, jax.random.PRNGKey(1))
            for _ in range(steps):
                state, metrics = step(state, batch)
            jax.block_until_ready(metrics)
            return {"ran_size": size, "peak_memory_bytes": _device_peak_memory(jax.devices()[0]),
                    "out_of_memory_at": failed}
        except Exception as err:  # noqa: BLE001 - only an allocation failure steps down
            if not is_out_of_memory(err):
                raise
            failed.append(size)
            size -= multiple
    return {"ran_size": 0, "peak_memory_bytes": None, "out_of_memory_at": failed}
