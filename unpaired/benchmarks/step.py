"""Training-step benchmark: JAX (this library) against the PyTorch reference, same run.

Pure functions; `launch/benchmark.py` is the command line around them.

* Each contender is a `Runner`: `prepare_jax(config, ...)` builds the method named by
  `config.method` through `unpaired.methods.build`, jits its `train_step` (state donated,
  kept in the runner's closure), times the compile and warms up; `prepare_torch(config,
  mode=...)` does the same for the PyTorch reference step, looked up by `config.method` in
  `unpaired.torch_reference.REFERENCE_STEPS`, eager or under `torch.compile` (torch and the
  reference are imported lazily, only there).
* `benchmark_interleaved` times JAX and the torch modes in alternating rounds (A B C, A B C,
  ...) so that load drift on a shared machine hits every contender alike, and reports the
  median over rounds of the per-round JAX/torch ratio; with no torch modes it times JAX
  alone.
* `measure_data_rate` times the input pipeline alone (make_loader + prefetch_to_device, as
  `unpaired.train` builds it), to compare with the step rate.
* `compare`, `format_table`, `markdown_row` turn the dicts into the result line, the human
  table and a row of `docs/benchmarks.md`.

img/s counts images per domain per step: `batch_size / step time` (what the reference
reports and what the PyTorch figures in `shared/reference/performance.md` mean).
Nothing here changes numerics: the benchmarked step is the library's own `train_step`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.metadata
import math
import os
import platform
import re
import resource
import statistics
import sys
import time
from typing import Any, Callable, ContextManager, Iterator, Mapping, Sequence

import ml_collections

from unpaired.benchmarks import machine

PRECISIONS = {"fp32": "float32", "bf16": "bfloat16"}
TORCH_MODES = ("eager", "compile")

# Dense (no sparsity) peak FLOP/s per device, from NVIDIA's data sheets. fp32 runs are
# compared with the TF32 peak: both JAX (default precision) and PyTorch (cudnn.allow_tf32)
# run fp32 convolutions on TF32 tensor cores by default. Matched by substring of
# `device_kind`, first match wins (so 'H100 PCIe' precedes the generic 'H100').
PEAK_FLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H100 PCIe", {"bf16": 756e12, "fp32": 378e12}),
    ("H100 NVL", {"bf16": 835e12, "fp32": 418e12}),
    ("H100", {"bf16": 989e12, "fp32": 495e12}),   # SXM5 (H100 80GB HBM3)
    ("H200", {"bf16": 989e12, "fp32": 495e12}),
    ("A100", {"bf16": 312e12, "fp32": 156e12}),
)


# --------------------------------------------------------------------------- config


def resolve_config(
    config: ml_collections.ConfigDict,
    batch_size: int | None = None,
    image_size: int | None = None,
    precision: str | None = None,
) -> ml_collections.ConfigDict:
    """A copy of `config` with the benchmark's batch size, image size and precision applied.

    `None` keeps the config's own value (`batch_size`, `data.crop_size`, `dtype`).
    """
    config = ml_collections.ConfigDict(config.to_dict())
    with config.unlocked():
        if batch_size is not None:
            config.batch_size = int(batch_size)
        if image_size is not None:
            config.data.crop_size = int(image_size)
        if precision is not None:
            if precision not in PRECISIONS:
                raise ValueError(f"unknown precision {precision!r}; expected one of {sorted(PRECISIONS)}")
            config.dtype = PRECISIONS[precision]
    return config


def precision_of(config: ml_collections.ConfigDict) -> str:
    """'fp32' or 'bf16' for `config.dtype`."""
    names = {v: k for k, v in PRECISIONS.items()}
    if config.dtype not in names:
        raise ValueError(f"config.dtype {config.dtype!r} has no benchmark precision name")
    return names[config.dtype]


def peak_flops(device_kind: str | None, precision: str) -> float | None:
    """The device's dense peak FLOP/s for `precision` ('fp32' = TF32), None if unknown."""
    if not device_kind:
        return None
    for key, peaks in PEAK_FLOPS:
        if key.lower() in device_kind.lower():
            return peaks.get(precision)
    return None


def limit_cpus(n: int) -> list[int]:
    """Pins this process to the first `n` CPUs of its affinity mask (before JAX starts).

    XLA:CPU sizes its thread pool from the schedulable CPUs, so this limits JAX's threads;
    pass the same `n` as `threads` to `benchmark_interleaved`. Returns the CPUs kept.
    """
    cpus = sorted(os.sched_getaffinity(0))[: max(int(n), 1)]
    os.sched_setaffinity(0, cpus)
    return cpus


def _median_ms(times_s: Sequence[float]) -> float:
    return 1e3 * statistics.median(times_s)


def max_rss_bytes() -> int:
    """This process's peak resident set size (Linux reports KiB, macOS bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """Installed versions of jax, jaxlib, flax, torch (torch is not imported) and Python."""
    out = {name: _version(name) for name in ("jax", "jaxlib", "flax", "torch")}
    out["python"] = platform.python_version()
    return out


# --------------------------------------------------------------------------- HLO


def hlo_summary(lowered_text: str, optimized_text: str = "") -> dict[str, int]:
    """Inventory of the convolutions in a jitted step, for experiment E1 (performance.md).

    From the StableHLO JAX hands to XLA (`jitted.lower(...).as_text()`):
      `stablehlo_convolution`; `stablehlo_lhs_dilated` (zero-stuffed input: transposed-conv
      forwards and input gradients of strided convs); `stablehlo_weight_grad` (kernel
      gradients: output dims start with a spatial dim, `->[0, 1, ...]`); and
      `stablehlo_lhs_dilated_weight_grad`, the kernel gradient of a naively differentiated
      transposed conv, which XLA cannot send to cuDNN backward-filter. With
      `layers.conv_transpose2d`'s custom VJP it must be 0.
    From the optimized HLO (`compiled.as_text()`), after XLA's rewrites:
      `hlo_convolution` ops and those with `lhs_dilate=` (`hlo_lhs_dilated`); on GPU the
      cuDNN custom calls by target (`cudnn_conv_forward`, `cudnn_conv_backward_input`,
      `cudnn_conv_backward_filter`, `cudnn_conv_other`), forward ones whose window is
      >= 32 px on a side (`cudnn_conv_forward_large_window`, a weight gradient run as a
      forward conv), and pads with interior padding (`pad_interior`, materialised zeros).
    """
    counts = dict.fromkeys(
        (
            "stablehlo_convolution", "stablehlo_lhs_dilated", "stablehlo_weight_grad",
            "stablehlo_lhs_dilated_weight_grad",
            "hlo_convolution", "hlo_lhs_dilated",
            "cudnn_conv_forward", "cudnn_conv_forward_large_window",
            "cudnn_conv_backward_input", "cudnn_conv_backward_filter", "cudnn_conv_other",
            "pad_interior",
        ),
        0,
    )
    for line in lowered_text.splitlines():
        if "stablehlo.convolution" not in line:
            continue
        counts["stablehlo_convolution"] += 1
        dilate = re.search(r"lhs_dilate = \[([0-9, ]+)\]", line)
        lhs_dilated = bool(dilate) and any(int(d) != 1 for d in dilate.group(1).split(","))
        out_dims = re.search(r"->\[\s*(\w)", line)
        weight_grad = bool(out_dims) and out_dims.group(1).isdigit()
        counts["stablehlo_lhs_dilated"] += lhs_dilated
        counts["stablehlo_weight_grad"] += weight_grad
        counts["stablehlo_lhs_dilated_weight_grad"] += lhs_dilated and weight_grad
    for line in optimized_text.splitlines():
        if " convolution(" in line:
            counts["hlo_convolution"] += 1
            counts["hlo_lhs_dilated"] += "lhs_dilate=" in line
        if "custom-call(" in line and "cudnn$conv" in line:
            if "cudnn$convForward" in line:
                counts["cudnn_conv_forward"] += 1
                size = re.search(r"window=\{size=(\d+)x(\d+)", line)
                if size and max(int(size.group(1)), int(size.group(2))) >= 32:
                    counts["cudnn_conv_forward_large_window"] += 1
            elif "cudnn$convBackwardInput" in line:
                counts["cudnn_conv_backward_input"] += 1
            elif "cudnn$convBackwardFilter" in line:
                counts["cudnn_conv_backward_filter"] += 1
            else:
                counts["cudnn_conv_other"] += 1
        if " pad(" in line:
            config = re.search(r"padding=([0-9_x\-]+)", line)
            if config and any(
                len(d.split("_")) == 3 and d.split("_")[2] != "0" for d in config.group(1).split("x")
            ):
                counts["pad_interior"] += 1
    return counts


# --------------------------------------------------------------------------- runners and rounds


@dataclasses.dataclass(frozen=True)
class Runner:
    """One prepared, warmed-up contender: `call()` runs one synchronised call of `steps_per_call` steps.

    `info` holds the figures known after preparation (compile time, first step); `finish()`
    those known only after timing (final metrics checked, peak memory). A runner with
    `may_fail` is dropped from the rounds, with its error, if a call raises.
    """

    name: str
    call: Callable[[], None]
    steps_per_call: int = 1
    info: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    finish: Callable[[], dict[str, Any]] = dict
    may_fail: bool = False


def round_sizes(calls: int, rounds: int) -> list[int]:
    """`calls` timed calls split over `rounds` rounds as evenly as possible (at least 1 each)."""
    if calls < 1 or rounds < 1:
        raise ValueError(f"need calls >= 1 and rounds >= 1, got {calls}, {rounds}")
    base, extra = divmod(calls, rounds)
    return [max(base + (r < extra), 1) for r in range(rounds)]


def error_text(err: BaseException) -> str:
    """`Type: first line of the message`, at most 300 characters, for the result record."""
    message = str(err).splitlines()[0] if str(err) else ""
    return f"{type(err).__name__}: {message}"[:300]


def time_rounds(
    runners: Sequence[Runner], calls: Mapping[str, int], rounds: int
) -> tuple[dict[str, list[list[float]]], dict[str, str]]:
    """Times the runners in turn (A B C, A B C, ...) for `rounds` rounds, so load drift hits all alike.

    Runner `name` makes `calls[name]` timed calls in all, split by `round_sizes`. Returns
    per runner per round the seconds per step (call time / steps_per_call), and the errors
    of the `may_fail` runners dropped after raising (their partial times are discarded).
    """
    sizes = {r.name: round_sizes(int(calls[r.name]), rounds) for r in runners}
    times: dict[str, list[list[float]]] = {r.name: [] for r in runners}
    errors: dict[str, str] = {}
    for round_index in range(rounds):
        for runner in runners:
            if runner.name in errors:
                continue
            per_step = []
            try:
                for _ in range(sizes[runner.name][round_index]):
                    start = time.perf_counter()
                    runner.call()
                    per_step.append((time.perf_counter() - start) / runner.steps_per_call)
            except Exception as err:  # noqa: BLE001 - a failing optional contender is reported
                if not runner.may_fail:
                    raise
                errors[runner.name] = error_text(err)
                del times[runner.name]
                continue
            times[runner.name].append(per_step)
    return times, errors


@contextlib.contextmanager
def exclusive_device(lock_path: str | None, runners: Sequence[Runner] = (), rewarm: int = 2,
                     parties: int = 1, barrier_timeout_s: float = 600.0) -> Iterator[tuple[float, int]]:
    """Holds an exclusive lock on `lock_path` (no lock if None), then re-warms every runner.

    Lets several benchmark processes share one accelerator: they compile and warm up
    concurrently, and only the timed rounds, the part whose figures are reported, run one
    process at a time. With `parties` > 1 each first waits (at most `barrier_timeout_s`)
    until that many processes are ready, so no timed round overlaps another's compilation
    (whose autotuning also runs on the device). Yields (seconds spent waiting, processes
    seen ready when the barrier was passed).
    """
    if lock_path is None:
        yield 0.0, 1
        return
    import fcntl  # pylint: disable=import-outside-toplevel  (POSIX only; only this option needs it)

    start = time.perf_counter()
    if parties > 1:
        ready = f"{lock_path}.ready"
        os.makedirs(ready, exist_ok=True)
        open(os.path.join(ready, f"{os.getpid()}-{time.time_ns()}"), "w").close()
        while len(os.listdir(ready)) < parties and time.perf_counter() - start < barrier_timeout_s:
            time.sleep(0.2)
    seen_ready = len(os.listdir(f"{lock_path}.ready")) if parties > 1 else 1
    with open(lock_path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        waited = time.perf_counter() - start
        try:
            for runner in runners:  # clocks and caches back up after another process's turn
                for _ in range(rewarm):
                    try:
                        runner.call()
                    except Exception:  # noqa: BLE001 - time_rounds reports a failing contender
                        if not runner.may_fail:
                            raise
            yield waited, seen_ready
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def step_figures(rounds_times: Sequence[Sequence[float]], batch_size: int) -> dict[str, float]:
    """img_per_s and step_ms from the median step over all rounds, step_ms_min from the fastest."""
    flat = [t for round_times in rounds_times for t in round_times]
    step_ms = _median_ms(flat)
    return {"img_per_s": 1e3 * batch_size / step_ms, "step_ms": step_ms, "step_ms_min": 1e3 * min(flat)}


def round_ratios(
    jax_rounds: Sequence[Sequence[float]], torch_rounds: Sequence[Sequence[float]]
) -> list[float]:
    """Per round, JAX img/s over torch img/s (each from that round's median step): >1, JAX faster."""
    return [
        statistics.median(theirs) / statistics.median(ours)
        for ours, theirs in zip(jax_rounds, torch_rounds)
    ]


# --------------------------------------------------------------------------- JAX


def jax_platform() -> str:
    """The platform of JAX's default device ('cpu', 'gpu', 'tpu'); initialises the backend."""
    import jax

    return jax.devices()[0].platform


def _random_batch(method_config: ml_collections.ConfigDict, key, leading: tuple[int, ...] = ()):
    """Uniform [-1, 1] images for every domain the method reads (and labels in [0, 10))."""
    import jax
    import jax.numpy as jnp

    from unpaired import methods

    spec = methods.get_method_class(method_config.method).data_spec(method_config)
    size = int(method_config.data.crop_size)
    leading = leading + (int(method_config.batch_size),)
    batch = {}
    for domain, k in zip(spec.domains, jax.random.split(key, len(spec.domains))):
        image_key, label_key = jax.random.split(k)
        batch[domain] = jax.random.uniform(
            image_key, leading + (size, size, int(spec.channels[domain])), jnp.float32, -1.0, 1.0)
        if domain in spec.labels:
            batch[spec.label_key(domain)] = jax.random.randint(label_key, leading, 0, 10)
    return batch


def _cost_flops(stage) -> float | None:
    """XLA's FLOP count of a lowered or compiled computation, None if it has none."""
    try:
        cost = stage.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends have no cost model
        return None
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else None
    if not cost or "flops" not in cost:
        return None
    flops = float(cost["flops"])
    return flops if flops > 0 and math.isfinite(flops) else None


def _device_peak_memory(device) -> int | None:
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - CPU devices may not implement it
        stats = None
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"])
    return None


def _check_counts(steps: int, warmup: int, steps_per_dispatch: int = 1, rounds: int = 1) -> None:
    """ValueError unless the step, warm-up, dispatch and round counts make sense."""
    if steps < 1 or warmup < 0 or steps_per_dispatch < 1 or rounds < 1:
        raise ValueError("need steps >= 1, warmup >= 0, steps_per_dispatch >= 1, rounds >= 1")


def prepare_jax(
    config: ml_collections.ConfigDict,
    *,
    warmup: int = 3,
    steps_per_dispatch: int = 1,
    unroll: bool = True,
    donate: bool = True,
    seed: int = 0,
    hlo_summary_wanted: bool = False,
) -> Runner:
    """The method's jitted `train_step`, compiled (timed) and warmed up, as the runner 'jax'.

    The donated train state lives in the runner's closure. With `steps_per_dispatch` k > 1
    one call runs k steps under `lax.scan` on k different random batches, fully unrolled
    with `unroll` (XLA:CPU runs a CycleGAN step inside a rolled while loop about 7x slower,
    see docs/benchmarks.md). `info`: compile_s (lower + compile), flops_per_step (XLA cost
    analysis, None where the backend has none), device, platform, hlo (if asked), ...;
    `finish()` checks the last metrics are finite and gives peak_memory_bytes (device peak
    on GPU/TPU, process max RSS on CPU, see peak_memory_kind).
    """
    import jax

    from unpaired import methods

    _check_counts(1, warmup, steps_per_dispatch)
    device = jax.devices()[0]
    method = methods.build(config, steps_per_epoch=1)
    key_state, key_data = jax.random.split(jax.random.PRNGKey(seed))
    k = int(steps_per_dispatch)
    if k == 1:
        step_fn = method.train_step
        batch = _random_batch(config, key_data)
    else:
        def step_fn(state, batches):
            return jax.lax.scan(method.train_step, state, batches, unroll=k if unroll else 1)

        batch = _random_batch(config, key_data, leading=(k,))
    jitted = jax.jit(step_fn, donate_argnums=(0,) if donate else ())
    carry = {"state": method.create_state(key_state), "metrics": None}

    start = time.perf_counter()
    lowered = jitted.lower(carry["state"], batch)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    # The lowered (platform-independent) module's count: XLA:GPU's compiled cost analysis
    # gives the cuDNN convolution custom calls no FLOPs (H200 runs read ~40x too low).
    flops = _cost_flops(lowered) or _cost_flops(compiled)
    if flops is not None and k > 1 and unroll:
        flops /= k  # an unrolled scan holds k steps; a rolled one is counted once by XLA

    def call() -> None:
        carry["state"], carry["metrics"] = compiled(carry["state"], batch)
        jax.block_until_ready((carry["state"], carry["metrics"]))

    def finish() -> dict[str, Any]:
        if carry["metrics"] is not None:
            _check_finite(carry["metrics"])
        peak = _device_peak_memory(device)
        return {
            "peak_memory_bytes": peak if peak is not None else max_rss_bytes(),
            "peak_memory_kind": "device_peak_bytes_in_use" if peak is not None else "process_max_rss",
        }

    for _ in range(warmup):
        call()
    info: dict[str, Any] = {
        "steps_per_dispatch": k,
        "scan_unrolled": bool(unroll) if k > 1 else None,
        "compile_s": compile_s,
        "flops_per_step": flops,
        "device": device.device_kind,
        "platform": device.platform,
        "device_count": jax.device_count(),
        "donate": donate,
    }
    if hlo_summary_wanted:
        info["hlo"] = hlo_summary(lowered.as_text(), compiled.as_text())
    return Runner("jax", call, k, info, finish)


def _jax_result(runner: Runner, rounds_times: Sequence[Sequence[float]], batch_size: int) -> dict[str, Any]:
    """The JAX figures of a timed runner: img_per_s, step_ms (median), step_ms_min, timed_steps,
    and the runner's compile_s, flops_per_step, peak_memory_bytes, peak_memory_kind, device,
    platform and hlo (counts, if asked)."""
    out = step_figures(rounds_times, batch_size)
    out["timed_steps"] = sum(len(r) for r in rounds_times) * runner.steps_per_call
    out.update(runner.info)
    out.update(runner.finish())
    return out


def _check_finite(metrics: Mapping[str, Any]) -> None:
    import jax
    import numpy as np

    for name, value in jax.device_get(metrics).items():
        if not np.all(np.isfinite(np.asarray(value, np.float64))):
            raise FloatingPointError(f"metric {name} is not finite: {value}")


# --------------------------------------------------------------------------- torch


def torch_device_for(jax_platform: str) -> tuple[str | None, str | None]:
    """The torch device matching JAX's platform, or (None, reason) when there is none."""
    import torch

    if jax_platform == "cpu":
        return "cpu", None
    if jax_platform in ("gpu", "cuda", "rocm"):
        if torch.cuda.is_available():
            return "cuda", None
        return None, f"torch {torch.__version__} has no CUDA device"
    return None, f"no torch device matches JAX platform {jax_platform!r}"


@contextlib.contextmanager
def torch_settings(
    device: str, *, flush_denormal: bool = True, threads: int | None = None
) -> Iterator[dict[str, Any]]:
    """torch's process-wide settings for the benchmark, restored on exit; yields them for the record.

    On CUDA `cudnn.benchmark=True` (default TF32 settings kept). On CPU, `flush_denormal`
    sets `torch.set_flush_denormal(True)`, which XLA:CPU does by default
    (`--xla_cpu_ftz=true`): without it the reference's CPU step spends most of its time on
    denormal arithmetic (7x slower on the digits config, see docs/benchmarks.md), which
    would flatter JAX; `threads` sets `torch.set_num_threads`.
    """
    import torch

    old_benchmark, old_threads = torch.backends.cudnn.benchmark, torch.get_num_threads()
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    if device == "cpu":
        torch.set_flush_denormal(bool(flush_denormal))
        if threads:
            torch.set_num_threads(int(threads))
    try:
        yield {
            "torch_device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
            "torch_threads": torch.get_num_threads(),
            "torch_flush_denormal": bool(flush_denormal) if device == "cpu" else None,
        }
    finally:
        torch.backends.cudnn.benchmark = old_benchmark
        if device == "cpu":
            torch.set_flush_denormal(False)  # torch's default; it has no getter
            torch.set_num_threads(old_threads)


def prepare_torch(
    config: ml_collections.ConfigDict,
    *,
    mode: str = "eager",
    device: str = "cpu",
    warmup: int = 3,
    seed: int = 0,
) -> Runner:
    """The PyTorch reference's training step in `mode`, first-called (timed) and warmed up, as 'torch_<mode>'.

    The step comes from `unpaired.torch_reference.build_reference_step` (looked up by
    `config.method`): same architecture, batch, init and losses; bf16 runs under
    `torch.autocast(device, torch.bfloat16)`; every call ends with `torch.cuda.synchronize()`
    on CUDA. `info`: torch_<mode>_first_step_s (compiles under torch.compile) and, on CUDA,
    torch_<mode>_peak_memory_bytes: `torch.cuda.max_memory_allocated()` over the build,
    first and warm-up steps (peak stats reset first), less what was allocated before the
    build (other modes' models), so it is this mode's own footprint. Call inside
    `torch_settings`. Exceptions propagate.
    """
    import torch

    if mode not in TORCH_MODES:
        raise ValueError(f"unknown torch mode {mode!r}; expected some of {TORCH_MODES}")
    from unpaired import torch_reference as reference  # the optional `test` extra
    cuda = device == "cuda"

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    if cuda:
        sync()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    dtype = torch.bfloat16 if precision_of(config) == "bf16" else torch.float32
    batch_size, size = int(config.batch_size), int(config.data.crop_size)
    gen = torch.Generator().manual_seed(seed)
    from unpaired import methods

    spec = methods.get_method_class(config.method).data_spec(config)
    images = [(torch.rand(batch_size, int(spec.channels[d]), size, size, generator=gen) * 2 - 1).to(device)
              for d in spec.domains]  # NCHW, one per domain in the method's order
    torch.manual_seed(seed)
    step = reference.build_reference_step(config, device=device, dtype=dtype, compile=(mode == "compile"))

    def call() -> None:
        step(*images)
        sync()

    start = time.perf_counter()
    call()  # first call: compiles under torch.compile
    key = f"torch_{mode}"
    info: dict[str, Any] = {f"{key}_first_step_s": time.perf_counter() - start}
    for _ in range(max(warmup - 1, 0)):
        call()
    if cuda:
        info[f"{key}_peak_memory_bytes"] = int(torch.cuda.max_memory_allocated() - base)
    return Runner(key, call, 1, info, dict, may_fail=True)


def _torch_result(runner: Runner, rounds_times: Sequence[Sequence[float]], batch_size: int) -> dict[str, Any]:
    """torch_<mode>_img_per_s, _step_ms, _step_ms_min, _timed_steps and the runner's info."""
    figures = step_figures(rounds_times, batch_size)
    out = {f"{runner.name}_{k}": v for k, v in figures.items()}
    out[f"{runner.name}_timed_steps"] = sum(len(r) for r in rounds_times)
    out.update(runner.info)
    return out


def _torch_failed(mode: str, error: str) -> dict[str, Any]:
    """The record of a torch mode that raised: no figures, its error."""
    return {f"torch_{mode}_img_per_s": None, f"torch_{mode}_step_ms": None, f"torch_{mode}_error": error}


# --------------------------------------------------------------------------- interleaved


def benchmark_interleaved(
    config: ml_collections.ConfigDict,
    *,
    torch_modes: Sequence[str] = ("eager",),
    torch_device: str = "cpu",
    steps: int = 20,
    torch_steps: int | None = None,
    rounds: int = 5,
    warmup: int = 3,
    steps_per_dispatch: int = 1,
    unroll: bool = True,
    donate: bool = True,
    seed: int = 0,
    hlo_summary_wanted: bool = False,
    flush_denormal: bool = True,
    threads: int | None = None,
    device_lock: str | None = None,
    device_lock_parties: int = 1,
    device_lock_barrier_s: float = 600.0,
    profile_dir: str | None = None,
    profile_steps: int = 5,
    load_watch: Callable[[], ContextManager[dict[str, Any]]] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """JAX and the torch modes timed in alternation, so a shared machine's load drift cancels in the ratios.

    Every contender is prepared and warmed up first (`prepare_jax`, `prepare_torch`), then
    timed in `rounds` rounds (at most `steps` and `torch_steps`), each timing its share of
    the `steps` JAX calls and `torch_steps` (default `steps`) torch steps of every contender
    in turn. Returns (JAX figures as `_jax_result`'s plus `rounds`; torch figures as
    `_torch_result`'s and `torch_settings`' plus, per timed mode, `ratio_vs_torch_<mode>`:
    the median over rounds of JAX img/s / torch img/s from that round's median steps, and
    the per-round list `ratio_vs_torch_<mode>_rounds`). A torch mode that raises is reported with its
    error and dropped from the rounds. Without `torch_modes` torch is not imported. With
    `device_lock`, the rounds run under `exclusive_device` (`device_lock_wait_s` reported),
    after `device_lock_parties` processes are ready (or `device_lock_barrier_s` passed;
    `device_lock_ready` says how many were). `load_watch` (e.g. `machine.watch_load`) wraps
    the timed rounds alone, its record joins the JAX figures; it may refuse a loaded machine.
    """
    for mode in torch_modes:
        if mode not in TORCH_MODES:
            raise ValueError(f"unknown torch mode {mode!r}; expected some of {TORCH_MODES}")
    torch_steps = int(torch_steps or steps)
    _check_counts(min(steps, torch_steps), warmup, steps_per_dispatch, rounds)
    batch_size = int(config.batch_size)
    jax_runner = prepare_jax(config, warmup=warmup, steps_per_dispatch=steps_per_dispatch,
                             unroll=unroll, donate=donate, seed=seed, hlo_summary_wanted=hlo_summary_wanted)
    return time_against_torch(
        jax_runner, lambda mode: prepare_torch(config, mode=mode, device=torch_device, warmup=warmup, seed=seed),
        torch_modes=torch_modes, torch_device=torch_device, steps=steps, torch_steps=torch_steps,
        rounds=rounds, batch_size=batch_size, flush_denormal=flush_denormal, threads=threads,
        device_lock=device_lock, device_lock_parties=device_lock_parties,
        device_lock_barrier_s=device_lock_barrier_s, profile_dir=profile_dir, profile_steps=profile_steps,
        load_watch=load_watch)


def _watching(load_watch: Callable[[], ContextManager[dict[str, Any]]] | None) -> ContextManager[dict[str, Any]]:
    """`load_watch()`, or a context yielding an empty record where there is none."""
    return load_watch() if load_watch is not None else contextlib.nullcontext({})


def time_against_torch(
    jax_runner: Runner,
    prepare_torch_runner: Callable[[str], Runner],
    *,
    torch_modes: Sequence[str],
    torch_device: str,
    steps: int,
    torch_steps: int,
    rounds: int,
    batch_size: int,
    flush_denormal: bool,
    threads: int | None,
    device_lock: str | None,
    device_lock_parties: int,
    device_lock_barrier_s: float,
    profile_dir: str | None = None,
    profile_steps: int = 5,
    load_watch: Callable[[], ContextManager[dict[str, Any]]] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The rounds and figures both benchmarks share: a prepared JAX runner and one torch runner
    per mode (`prepare_torch_runner(mode)`; one that raises is reported), timed in turn under
    `exclusive_device`. Returns (JAX figures, torch figures with per-round ratios). With
    `profile_dir`, `profile_steps` calls of each are then traced (`profile_runners`), still
    holding the device, and the JAX figures get a `profile` summary. `load_watch()` is entered
    right before the rounds and left right after them (its record joins the JAX figures)."""
    if not torch_modes:
        n_rounds = min(rounds, steps)
        with exclusive_device(device_lock, [jax_runner], parties=device_lock_parties,
                              barrier_timeout_s=device_lock_barrier_s) as (waited, ready):
            with _watching(load_watch) as load:
                times, _ = time_rounds([jax_runner], {jax_runner.name: steps}, n_rounds)
            profile = profile_runners([jax_runner], profile_dir, profile_steps, torch_device) \
                if profile_dir else None
        out = {**_jax_result(jax_runner, times[jax_runner.name], batch_size), "rounds": n_rounds,
               "device_lock_wait_s": waited, "device_lock_ready": ready, **load}
        return ({**out, "profile": profile} if profile else out), {}

    with torch_settings(torch_device, flush_denormal=flush_denormal, threads=threads) as settings:
        torch_out: dict[str, Any] = dict(settings)
        runners = [jax_runner]
        for mode in torch_modes:
            try:
                runners.append(prepare_torch_runner(mode))
            except Exception as err:  # noqa: BLE001 - report, do not crash the benchmark
                torch_out.update(_torch_failed(mode, error_text(err)))
        n_rounds = min(rounds, steps, torch_steps)
        calls = {r.name: steps if r is jax_runner else torch_steps for r in runners}
        with exclusive_device(device_lock, runners, parties=device_lock_parties,
                              barrier_timeout_s=device_lock_barrier_s) as (waited, ready):
            with _watching(load_watch) as load:
                times, errors = time_rounds(runners, calls, n_rounds)
            profile = profile_runners([r for r in runners if r.name not in errors], profile_dir,
                                      profile_steps, torch_device) if profile_dir else None
        jax_out = {**_jax_result(jax_runner, times[jax_runner.name], batch_size), "rounds": n_rounds,
                   "device_lock_wait_s": waited, "device_lock_ready": ready, **load}
        if profile:
            jax_out["profile"] = profile
        for runner in runners[1:]:
            mode = runner.name[len("torch_"):]
            if runner.name in errors:
                torch_out.update(_torch_failed(mode, errors[runner.name]))
                continue
            torch_out.update(_torch_result(runner, times[runner.name], batch_size))
            per_round = round_ratios(times[jax_runner.name], times[runner.name])
            torch_out[f"ratio_vs_torch_{mode}"] = statistics.median(per_round)
            torch_out[f"ratio_vs_torch_{mode}_rounds"] = per_round
    return jax_out, torch_out


# --------------------------------------------------------------------------- profiles


def profile_runners(runners: Sequence[Runner], directory: str, steps: int, torch_device: str
                    ) -> dict[str, Any]:
    """Traces `steps` calls of each runner into `directory` (E2 of performance.md): JAX under
    `jax.profiler.trace` (jax_trace/, summarised to jax_ops.json and .txt by
    `unpaired.benchmarks.profile_summary`), a torch mode under `torch.profiler` (its op table,
    <name>_ops.txt). Returns {'jax': the per-category summary, '<name>': its files}."""
    import jax

    from unpaired.benchmarks import profile_summary

    if steps < 1:
        raise ValueError(f"profile steps must be >= 1, got {steps}")
    os.makedirs(directory, exist_ok=True)
    out: dict[str, Any] = {}
    for runner in runners:
        if runner.name == "jax":
            trace_dir = os.path.join(directory, "jax_trace")
            with jax.profiler.trace(trace_dir):
                for _ in range(steps):
                    runner.call()
            summary = profile_summary.summarize(profile_summary.find_trace(trace_dir),
                                                steps * runner.steps_per_call, top=40)
            files = profile_summary.write(summary, directory)
            out["jax"] = {k: summary[k] for k in ("source", "op_ms_per_step", "ms_per_step_by_category")}
            out["jax"]["files"] = files
        else:
            out[runner.name] = {"files": [_profile_torch(runner, directory, steps, torch_device)]}
    return out


def _profile_torch(runner: Runner, directory: str, steps: int, torch_device: str) -> str:
    """`steps` calls under torch.profiler; the op table sorted by self device time, as a file."""
    from torch.profiler import ProfilerActivity, profile

    cuda = torch_device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            runner.call()
    averages = prof.key_averages()
    table = None
    for key in (("self_device_time_total", "self_cuda_time_total") if cuda else ("self_cpu_time_total",)):
        try:
            table = averages.table(sort_by=key, row_limit=40)
            break
        except (KeyError, AttributeError, ValueError):
            continue
    path = os.path.join(directory, f"{runner.name}_ops.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"{runner.name}: {steps} call(s) of {runner.steps_per_call} step(s)\n{table}\n")
    return path


# --------------------------------------------------------------------------- input pipeline


def measure_data_rate(
    config: ml_collections.ConfigDict,
    *,
    batches: int = 20,
    warmup: int | None = None,
    prefetch: int = 2,
) -> dict[str, Any]:
    """The input pipeline alone, built as `unpaired.train` builds it, to see if it can keep the step busy.

    `make_loader(config.data, split='train', ...)` feeds `prefetch_to_device` (`prefetch`
    batches in flight, batch-sharded over `train.data_mesh()`); after `warmup` batches
    (default: the loader's and the device queue's depth plus one, so the first burst is not
    timed) `batches` batches are pulled back to back, each until `block_until_ready`.
    Returns data_img_per_s (batch_size / median seconds per batch), data_batch_ms (median),
    data_first_batch_s (make_loader to the first batch on device), data_batch_shape (A's),
    data_source and data_batches. Nothing else runs meanwhile: on CPU, where training's
    pipeline shares the cores with the step, this is an upper bound.
    """
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    from unpaired import data, methods, train

    if batches < 1 or (warmup is not None and warmup < 0):
        raise ValueError("need batches >= 1 and warmup >= 0")
    start = time.perf_counter()
    loader = data.make_loader(
        config.data, split="train", batch_size=config.batch_size, seed=config.seed,
        spec=methods.get_method_class(config.method).data_spec(config),
        shard_index=jax.process_index(), shard_count=jax.process_count())
    warmup = loader.prefetch + prefetch + 1 if warmup is None else int(warmup)
    sharding = NamedSharding(train.data_mesh(), PartitionSpec("data"))
    stream = data.prefetch_to_device(loader.iterate(0, 1 + warmup + batches), size=prefetch, sharding=sharding)
    try:
        first = jax.block_until_ready(next(stream))
        first_s = time.perf_counter() - start
        for _ in range(warmup):
            jax.block_until_ready(next(stream))
        times = []
        for _ in range(batches):
            start = time.perf_counter()
            jax.block_until_ready(next(stream))
            times.append(time.perf_counter() - start)
    finally:
        stream.close()
        loader.close()
    batch_ms = _median_ms(times)
    return {
        "data_img_per_s": 1e3 * int(config.batch_size) / batch_ms,
        "data_batch_ms": batch_ms,
        "data_first_batch_s": first_s,
        "data_batch_shape": list(first["A"].shape),
        "data_source": str(config.data.source),
        "data_batches": int(batches),
    }


# --------------------------------------------------------------------------- report


def compare(
    config: ml_collections.ConfigDict,
    jax_result: Mapping[str, Any],
    torch_result: Mapping[str, Any] | None = None,
    data_result: Mapping[str, Any] | None = None,
    cpu_peak: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The result record: JAX figures, torch figures, ratios (>1: JAX faster), data rate, context.

    `ratio_vs_torch_<mode>` is the torch result's per-round median ratio where it has one
    (`benchmark_interleaved`), else the ratio of the whole-run medians, which is always
    `ratio_vs_torch_<mode>_of_medians`. With a `measure_data_rate` result,
    `data_bound_ratio` = data_img_per_s / img_per_s (>1: the input pipeline keeps up).
    The peak is `PEAK_FLOPS`' for a known GPU, else `cpu_peak`'s `peak_gflops` (this CPU's
    measured float32 matmul peak, `unpaired.benchmarks.peak`, whose record joins the result);
    `gflops` and `torch_<mode>_gflops` are XLA's FLOP count of the step over each one's
    median step time, `fraction_of_peak` and `torch_<mode>_fraction_of_peak` those over the peak.
    """
    precision = precision_of(config)
    out: dict[str, Any] = {
        "method": config.method,
        "netG": config.get("netG"),
        "netD": config.get("netD"),
        "ngf": config.get("ngf"),
        "ndf": config.get("ndf"),
        "batch_size": int(config.batch_size),
        "image_size": int(config.data.crop_size),
        "precision": precision,
    }
    out.update(jax_result)
    out.update(cpu_peak or {})
    peak = peak_flops(jax_result.get("device"), precision)
    if peak is None and cpu_peak and cpu_peak.get("peak_gflops"):
        peak = float(cpu_peak["peak_gflops"]) * 1e9
    flops = jax_result.get("flops_per_step")
    out["peak_flops"] = peak
    out["gflops"], out["fraction_of_peak"] = utilisation(flops, jax_result.get("step_ms"), peak)
    torch_result = dict(torch_result or {})
    for mode in TORCH_MODES:
        torch_result.setdefault(f"torch_{mode}_img_per_s", None)
    out.update(torch_result)
    for mode in TORCH_MODES:
        if out.get(f"torch_{mode}_step_ms"):
            out[f"torch_{mode}_gflops"], out[f"torch_{mode}_fraction_of_peak"] = utilisation(
                flops, out[f"torch_{mode}_step_ms"], peak)
    for mode in TORCH_MODES:
        theirs = out.get(f"torch_{mode}_img_per_s")
        of_medians = out["img_per_s"] / theirs if theirs else None
        per_round = torch_result.get(f"ratio_vs_torch_{mode}")
        out[f"ratio_vs_torch_{mode}"] = per_round if per_round is not None and theirs else of_medians
        out[f"ratio_vs_torch_{mode}_of_medians"] = of_medians
    if data_result is not None:
        out.update(data_result)
        rate = data_result.get("data_img_per_s")
        out["data_bound_ratio"] = rate / out["img_per_s"] if rate else None
    out["versions"] = versions()
    return out


def utilisation(flops: float | None, step_ms: float | None, peak: float | None
                ) -> tuple[float | None, float | None]:
    """(GFLOP/s, fraction of `peak` FLOP/s) of `flops` per step at `step_ms`; None where unknown."""
    if not flops or not step_ms:
        return None, None
    per_s = flops / (step_ms / 1e3)
    return per_s / 1e9, (per_s / peak if peak else None)


def _fmt(value: Any, spec: str = ".1f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def cpu_description(result: Mapping[str, Any]) -> str:
    """'AMD EPYC 7B13, AVX2+FMA, 2 cores; jax 2 / torch 2 threads' for a CPU record, '' otherwise."""
    if result.get("platform") != "cpu":
        return ""
    cpus = result.get("cpus")
    parts = [result.get("cpu_model"), result.get("cpu_vector_ext"), f"{len(cpus)} cores" if cpus else None]
    threads = f"jax {_fmt(result.get('jax_threads'))} / torch {_fmt(result.get('torch_threads'))} threads"
    return "; ".join(filter(None, [", ".join(filter(None, parts)), threads]))


def _load_line(result: Mapping[str, Any]) -> str:
    """The table's line on other processes' CPU use around the timed rounds, '' if unmeasured."""
    before, during = result.get("other_busy_cores"), result.get("other_busy_cores_timed")
    if before is None and during is None:
        return ""
    mark = " -> LOADED (timed with --allow_loaded)" if result.get("loaded") else ""
    during_text = (f"{during:.2f} during them" if during is not None
                   else f"not judged during them (under {machine.MIN_WINDOW_S:.0f} s)")
    return (f"other processes: {_fmt(before, '.2f')} cores busy right before the timed rounds, "
            f"{during_text} (idle: <= {machine.LOADED_CORES}){mark}")


def _utilisation_line(result: Mapping[str, Any]) -> str:
    """GFLOP/s of JAX and each torch mode, as fractions of the peak, and where the peak came from."""
    parts = [f"JAX {_fmt(result.get('gflops'), '.1f')} GFLOP/s, fraction of peak "
             f"{_fmt(result.get('fraction_of_peak'), '.3f')}"]
    for mode in TORCH_MODES:
        if result.get(f"torch_{mode}_gflops") is not None:
            parts.append(f"torch {mode} {result[f'torch_{mode}_gflops']:.1f} GFLOP/s "
                         f"({_fmt(result.get(f'torch_{mode}_fraction_of_peak'), '.3f')})")
    peak = result.get("peak_flops")
    source = result.get("peak_source")
    if peak and source == "measured":
        parts.append(f"peak {peak / 1e9:.1f} GFLOP/s (float32 matmul {result.get('peak_matmul_size')}: "
                     f"jax {_fmt(result.get('peak_jax_gflops'))}, torch {_fmt(result.get('peak_torch_gflops'))})")
    elif peak:
        parts.append(f"peak {peak / 1e9:.1f} GFLOP/s ({source or 'data sheet'})")
    return "; ".join(parts)


def format_table(result: Mapping[str, Any]) -> str:
    """A human-readable table of one `compare` record."""
    v = result.get("versions", {})
    lines = [
        f"method {result['method']} (G {result.get('netG')} ngf {result.get('ngf')}, "
        f"D {result.get('netD')} ndf {result.get('ndf')}), batch {result['batch_size']}, "
        f"image {result['image_size']}x{result['image_size']}, precision {result['precision']}",
        f"device {result.get('device')} ({result.get('platform')}); torch device "
        f"{result.get('torch_device', '-')}; load avg {result.get('load_avg_1m', '-')}",
        f"jax {v.get('jax')} jaxlib {v.get('jaxlib')} flax {v.get('flax')} torch {v.get('torch')} "
        f"python {v.get('python')}",
    ]
    cpu = cpu_description(result)
    lines += [line for line in (cpu and f"cpu {cpu}", _load_line(result)) if line]
    lines += [
        "",
        f"{'':<16}{'img/s':>10}{'step ms':>10}{'min ms':>10}{'vs JAX':>9}  notes",
    ]
    lines.append(
        f"{'jax':<16}{_fmt(result['img_per_s']):>10}{_fmt(result['step_ms'], '.2f'):>10}"
        f"{_fmt(result.get('step_ms_min'), '.2f'):>10}"
        f"{'1.00':>9}  compile {_fmt(result.get('compile_s'), '.1f')} s, "
        f"steps/dispatch {result.get('steps_per_dispatch', 1)}, {result.get('timed_steps')} timed steps"
        + (f" in {result['rounds']} rounds" if result.get("rounds") else "")
    )
    for mode in TORCH_MODES:
        ips = result.get(f"torch_{mode}_img_per_s")
        err = result.get(f"torch_{mode}_error")
        if ips is None and err is None:
            continue
        rel = result["img_per_s"] / ips if ips else None
        first = result.get(f"torch_{mode}_first_step_s")
        note = err or (f"first step {first:.1f} s" if first is not None else "")
        lines.append(
            f"{'torch ' + mode:<16}{_fmt(ips):>10}{_fmt(result.get(f'torch_{mode}_step_ms'), '.2f'):>10}"
            f"{_fmt(result.get(f'torch_{mode}_step_ms_min'), '.2f'):>10}"
            f"{_fmt(1 / rel if rel else None, '.2f'):>9}  {note}"
        )
    lines.append("")
    for mode in TORCH_MODES:
        ratio = result.get(f"ratio_vs_torch_{mode}")
        if ratio is None:
            continue
        per_round = result.get(f"ratio_vs_torch_{mode}_rounds")
        if per_round:
            lines.append(
                f"JAX / torch {mode}: {ratio:.2f}x (median of {len(per_round)} per-round ratios, "
                f"{min(per_round):.2f}-{max(per_round):.2f}; of whole-run medians "
                f"{_fmt(result.get(f'ratio_vs_torch_{mode}_of_medians'), '.2f')}x)"
            )
        else:
            lines.append(f"JAX / torch {mode}: {ratio:.2f}x")
    if result.get("data_img_per_s") is not None:
        lines.append(
            f"input pipeline alone ({result.get('data_source')}, batch "
            f"{'x'.join(map(str, result.get('data_batch_shape') or []))}): "
            f"{result['data_img_per_s']:.1f} img/s, {result['data_batch_ms']:.2f} ms/batch; "
            f"data-bound ratio {_fmt(result.get('data_bound_ratio'), '.2f')} (>1: it keeps up with the JAX step)"
        )
    elif result.get("data_rate_error"):
        lines.append(f"input pipeline alone: {result['data_rate_error']}")
    flops = result.get("flops_per_step")
    lines.append(
        f"XLA flops/step {_fmt(flops / 1e9 if flops else None, '.2f')} GFLOP; "
        f"{_utilisation_line(result)}; "
        f"peak memory {_fmt(result['peak_memory_bytes'] / 2**20, '.0f')} MiB "
        f"({result.get('peak_memory_kind')})"
    )
    if result.get("hlo"):
        lines.append("HLO: " + ", ".join(f"{k} {n}" for k, n in result["hlo"].items()))
    return "\n".join(lines)


MARKDOWN_HEADER = (
    "| date | device | method | G / D | batch | image | precision | JAX img/s | JAX step ms "
    "| torch eager img/s | torch compile img/s | JAX / eager | JAX / compile | compile s "
    "| peak MiB | versions | notes |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def _data_note(result: Mapping[str, Any]) -> str:
    """The markdown notes' mention of the input pipeline's rate, if it was measured."""
    rate = result.get("data_img_per_s")
    if rate is None:
        return ""
    return f"input pipeline alone {rate:.0f} img/s ({_fmt(result.get('data_bound_ratio'), '.2f')}x the JAX step)"


def _cpu_use_note(result: Mapping[str, Any]) -> str:
    """The markdown notes' GFLOP/s and share of the measured matmul peak, for a CPU row."""
    if result.get("platform") != "cpu" or result.get("gflops") is None:
        return ""
    peak = result.get("peak_flops")
    share = (f" ({result['fraction_of_peak']:.0%} of the {peak / 1e9:.0f} GFLOP/s float32 matmul peak)"
             if peak and result.get("fraction_of_peak") is not None else "")
    torch = [f"torch {mode} {result[f'torch_{mode}_gflops']:.1f}"
             + (f" ({result[f'torch_{mode}_fraction_of_peak']:.0%})"
                if result.get(f"torch_{mode}_fraction_of_peak") is not None else "")
             for mode in TORCH_MODES if result.get(f"torch_{mode}_gflops") is not None]
    return f"CPU use: JAX {result['gflops']:.1f} GFLOP/s{share}" + "".join(f", {t}" for t in torch)


def _loaded_note(result: Mapping[str, Any]) -> str:
    """'loaded (other processes: X.XX cores)' for a run timed on a loaded CPU (--allow_loaded)."""
    if not result.get("loaded"):
        return ""
    return f"loaded (other processes: {_fmt(machine.loaded_cores(dict(result)), '.2f')} cores)"


def markdown_row(result: Mapping[str, Any], notes: str = "") -> str:
    """One row for `docs/benchmarks.md` (columns: `MARKDOWN_HEADER`)."""
    v = result.get("versions", {})
    cpu = cpu_description(result)
    cells = [
        time.strftime("%Y-%m-%d"),
        f"{result.get('device')}" + (f": {cpu}" if cpu else ""),
        str(result["method"]),
        (f"{result.get('netG')} ngf{result.get('ngf')} / {result.get('netD')} ndf{result.get('ndf')}"
         if result.get("netG") else "-"),
        str(result["batch_size"]),
        str(result["image_size"]),
        str(result["precision"]),
        _fmt(result["img_per_s"]),
        _fmt(result["step_ms"], ".1f"),
        _fmt(result.get("torch_eager_img_per_s")),
        _fmt(result.get("torch_compile_img_per_s")) if result.get("torch_compile_error") is None
        else "failed",
        _fmt(result.get("ratio_vs_torch_eager"), ".2f"),
        _fmt(result.get("ratio_vs_torch_compile"), ".2f"),
        _fmt(result.get("compile_s"), ".1f"),
        _fmt(result["peak_memory_bytes"] / 2**20, ".0f"),
        f"jax {v.get('jax')}, torch {v.get('torch')}",
        "; ".join(filter(None, [_loaded_note(result), notes, _cpu_use_note(result), _data_note(result)])),
    ]
    return "| " + " | ".join(c.replace("|", "/") for c in cells) + " |"


def append_markdown_row(path: str, row: str) -> None:
    """Appends `row` to the markdown table that ends `path` (header first if none does)."""
    text = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            text = f.read()
    lines = [line for line in text.splitlines() if line.strip()]
    prefix = ""
    if text and not text.endswith("\n"):
        prefix = "\n"
    if not lines or not lines[-1].lstrip().startswith("|"):
        prefix += "\n" + MARKDOWN_HEADER + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(prefix + row + "\n")
