"""Inference benchmark: the method's generator forward (what `launch/translate.py` runs) against
the PyTorch reference generator's forward, in the same interleaved rounds as the step benchmark.

`launch/benchmark.py --mode=translate` is the command line around it.

* `prepare_jax_translate(config, ...)`: the method named by `config.method`, freshly
  initialised, served through `unpaired.translate.method_generator` (eval mode, the
  method's default request, e.g. CycleGAN's AtoB = G_A), on one random batch of
  `config.batch_size` images of side `config.data.crop_size`; the runner 'jax'.
* `prepare_torch_translate(config, mode=...)`: the reference generator with the same
  architecture (`unpaired.torch_reference.translators`), eval mode under
  `torch.inference_mode()`, eager or `torch.compile`; the runner 'torch_<mode>'.
* `benchmark_translate_interleaved`: both timed by `unpaired.benchmarks.step.time_rounds`,
  ratios by `round_ratios`; the result dicts have the step benchmark's keys, so
  `benchmark.compare`, `format_table` and `markdown_row` apply unchanged ("steps" are
  forward calls, img/s = batch_size / forward time).

Weights are random on both sides (timing does not depend on them). Nothing here changes
numerics. A method without a `translate` raises `TranslateBenchmarkError` naming it.
"""

from __future__ import annotations

import time
from typing import Any, Callable, ContextManager, Sequence

import ml_collections

from unpaired.benchmarks import step as benchmark
from unpaired.benchmarks.step import Runner


class TranslateBenchmarkError(ValueError):
    """The config cannot be benchmarked in translate mode; the message names the method or key."""


def _method_and_request(config: ml_collections.ConfigDict):
    """(method class, built method, resolved default request), or TranslateBenchmarkError naming the method."""
    from unpaired import methods
    from unpaired.methods.translation import TranslationRequest

    cls = methods.get_method_class(config.method)
    if not callable(getattr(cls, "translate", None)):
        raise TranslateBenchmarkError(
            f"config.method={config.method!r} has no translate path (no generator to run at "
            "inference); --mode=translate needs a translating method, e.g. cyclegan, unit, ufdn, dtn")
    method = methods.build(config, steps_per_epoch=1)
    request = method.resolve_request(TranslationRequest())
    size, multiple = int(config.data.crop_size), int(method.size_multiple)
    if size % multiple:
        raise TranslateBenchmarkError(
            f"--image_size={size} (config.data.crop_size) is not a multiple of {multiple}, "
            f"which {config.method}'s generator needs")
    return cls, method, request


def prepare_jax_translate(
    config: ml_collections.ConfigDict, *, warmup: int = 3, seed: int = 0,
) -> Runner:
    """The method's jitted eval-mode generator (as launch/translate.py builds it), compiled (timed)
    and warmed up, as the runner 'jax'. `info`: compile_s, flops_per_step (one forward),
    device, platform, request, in/out channels; `finish()`: peak memory as the step benchmark."""
    import jax
    import numpy as np

    from unpaired import translate

    _, method, request = _method_and_request(config)
    device = jax.devices()[0]
    key_state, key_data = jax.random.split(jax.random.PRNGKey(seed))
    state = method.create_state(key_state)
    params, model_state = state.params, state.model_state
    del state  # optimizer moments are not needed at inference
    generator = translate.method_generator(method, params, model_state, request, source="benchmark")
    size = int(config.data.crop_size)
    x = jax.device_put(jax.random.uniform(
        key_data, (int(config.batch_size), size, size, generator.in_channels), jax.numpy.float32, -1.0, 1.0))
    flops = benchmark._cost_flops(jax.jit(generator.apply).lower(x))  # pylint: disable=protected-access
    out: dict[str, Any] = {}

    def call() -> None:
        out["y"] = jax.block_until_ready(generator.apply(x))

    start = time.perf_counter()
    call()  # compiles (once per input shape) and runs once
    compile_s = time.perf_counter() - start
    for _ in range(warmup):
        call()

    def finish() -> dict[str, Any]:
        y = np.asarray(out["y"])
        if not np.all(np.isfinite(y)):
            raise FloatingPointError("the generator's output is not finite")
        peak = benchmark._device_peak_memory(device)  # pylint: disable=protected-access
        return {
            "peak_memory_bytes": peak if peak is not None else benchmark.max_rss_bytes(),
            "peak_memory_kind": "device_peak_bytes_in_use" if peak is not None else "process_max_rss",
            "output_shape": list(y.shape),
        }

    info = {
        "steps_per_dispatch": 1,
        "compile_s": compile_s,  # first call: compile plus one forward
        "flops_per_step": flops,
        "device": device.device_kind,
        "platform": device.platform,
        "device_count": jax.device_count(),
        "request": str(request),
        "generator": method.describe(request),
        "in_channels": generator.in_channels,
        "out_channels": generator.out_channels,
    }
    return Runner("jax", call, 1, info, finish)


def prepare_torch_translate(
    config: ml_collections.ConfigDict, *, mode: str = "eager", device: str = "cpu",
    warmup: int = 3, seed: int = 0,
) -> Runner:
    """The reference generator's eval-mode forward in `mode` (eager, compile), first-called (timed)
    and warmed up, as 'torch_<mode>'. bf16 runs under autocast. Call inside `benchmark.torch_settings`."""
    import torch

    from unpaired.torch_reference import translators

    if mode not in benchmark.TORCH_MODES:
        raise ValueError(f"unknown torch mode {mode!r}; expected some of {benchmark.TORCH_MODES}")
    _, method, request = _method_and_request(config)
    in_nc, _ = method.translation_channels(request)
    cuda = device == "cuda"
    dtype = torch.bfloat16 if benchmark.precision_of(config) == "bf16" else torch.float32
    size = int(config.data.crop_size)
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(int(config.batch_size), int(in_nc), size, size, generator=gen) * 2 - 1).to(device)
    torch.manual_seed(seed)
    forward = translators.build_reference_translator(
        config, device=device, dtype=dtype, compile=(mode == "compile"))

    def call() -> None:
        forward(x)
        if cuda:
            torch.cuda.synchronize()

    start = time.perf_counter()
    call()
    key = f"torch_{mode}"
    info: dict[str, Any] = {f"{key}_first_step_s": time.perf_counter() - start}
    for _ in range(max(warmup - 1, 0)):
        call()
    return Runner(key, call, 1, info, dict, may_fail=True)


def benchmark_translate_interleaved(
    config: ml_collections.ConfigDict,
    *,
    torch_modes: Sequence[str] = ("eager",),
    torch_device: str = "cpu",
    steps: int = 20,
    torch_steps: int | None = None,
    rounds: int = 5,
    warmup: int = 3,
    seed: int = 0,
    flush_denormal: bool = True,
    threads: int | None = None,
    device_lock: str | None = None,
    device_lock_parties: int = 1,
    device_lock_barrier_s: float = 600.0,
    load_watch: Callable[[], ContextManager[dict[str, Any]]] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """JAX and torch generator forwards timed in alternating rounds; returns (jax figures, torch
    figures) with the keys of `benchmark.benchmark_interleaved` (a "step" is one forward;
    `load_watch` as there)."""
    for mode in torch_modes:
        if mode not in benchmark.TORCH_MODES:
            raise ValueError(f"unknown torch mode {mode!r}; expected some of {benchmark.TORCH_MODES}")
    torch_steps = int(torch_steps or steps)
    benchmark._check_counts(min(steps, torch_steps), warmup, 1, rounds)  # pylint: disable=protected-access
    batch_size = int(config.batch_size)
    jax_runner = prepare_jax_translate(config, warmup=warmup, seed=seed)
    return benchmark.time_against_torch(
        jax_runner,
        lambda mode: prepare_torch_translate(config, mode=mode, device=torch_device, warmup=warmup, seed=seed),
        torch_modes=torch_modes, torch_device=torch_device, steps=steps, torch_steps=torch_steps,
        rounds=rounds, batch_size=batch_size, flush_denormal=flush_denormal, threads=threads,
        device_lock=device_lock, device_lock_parties=device_lock_parties,
        device_lock_barrier_s=device_lock_barrier_s, load_watch=load_watch)

