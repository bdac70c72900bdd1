"""Training-step benchmark: JAX (this library) against the PyTorch reference, same run.

Pure functions; `launch/benchmark.py` is the command line around them.

* `benchmark_jax(config, ...)` builds the method named by `config.method` through
  `unpaired.methods.build`, jits its `train_step` (state donated), and measures compile
  time, the median step time over synchronised timed steps, img/s, peak memory and
  the XLA cost analysis of the compiled step.
* `benchmark_torch(config, ...)` times the same step in the PyTorch reference, looked up by
  `config.method` in `tests.torch_reference.REFERENCE_STEPS` (eager, and `torch.compile`
  where it works). torch and the reference are imported lazily, only here.
* `compare`, `format_table`, `markdown_row` turn the two dicts into the result line,
  the human table and a row of `docs/benchmarks.md`.

img/s counts images per domain per step: `batch_size / step time` (what the reference
reports and what the PyTorch figures in `shared/reference/performance.md` mean).
Nothing here changes numerics: the benchmarked step is the library's own `train_step`.
"""

from __future__ import annotations

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
from typing import Any, Callable, Mapping, Sequence

import ml_collections

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
    pass the same `n` as `threads` to `benchmark_torch`. Returns the CPUs kept.
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


# --------------------------------------------------------------------------- JAX


def _random_batch(method_config: ml_collections.ConfigDict, key, leading: tuple[int, ...] = ()):
    import jax
    import jax.numpy as jnp

    size = int(method_config.data.crop_size)
    shape = lambda c: leading + (int(method_config.batch_size), size, size, int(c))
    key_a, key_b = jax.random.split(key)
    return {
        "A": jax.random.uniform(key_a, shape(method_config.input_nc), jnp.float32, -1.0, 1.0),
        "B": jax.random.uniform(key_b, shape(method_config.output_nc), jnp.float32, -1.0, 1.0),
    }


def _cost_flops(compiled) -> float | None:
    try:
        cost = compiled.cost_analysis()
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


def benchmark_jax(
    config: ml_collections.ConfigDict,
    *,
    steps: int = 20,
    warmup: int = 3,
    steps_per_dispatch: int = 1,
    unroll: bool = True,
    donate: bool = True,
    seed: int = 0,
    hlo_summary_wanted: bool = False,
) -> dict[str, Any]:
    """Measures the method's jitted `train_step` on the default JAX device.

    Each timed call is synchronised with `block_until_ready`; with `steps_per_dispatch`
    k > 1 one call runs k steps under `lax.scan` (on k different random batches) and
    per-step figures are the call's time / k; `unroll` (default) unrolls that scan fully:
    XLA:CPU runs a CycleGAN step inside a rolled while loop about 7x slower (see
    docs/benchmarks.md). `steps` counts timed calls. Returns
    img_per_s, step_ms (median), step_ms_min, compile_s (lower + compile),
    flops_per_step (XLA cost analysis, None where the backend has none),
    peak_memory_bytes (device peak on GPU/TPU, process max RSS on CPU, see
    peak_memory_kind), device, platform, and hlo (counts, if asked).
    """
    import jax

    from unpaired import methods

    if steps < 1 or warmup < 0 or steps_per_dispatch < 1:
        raise ValueError("need steps >= 1, warmup >= 0, steps_per_dispatch >= 1")
    device = jax.devices()[0]
    method = methods.build(config, steps_per_epoch=1)
    key_state, key_data = jax.random.split(jax.random.PRNGKey(seed))
    state = method.create_state(key_state)
    k = int(steps_per_dispatch)
    if k == 1:
        step_fn = method.train_step
        batch = _random_batch(config, key_data)
    else:
        def step_fn(state, batches):
            return jax.lax.scan(method.train_step, state, batches, unroll=k if unroll else 1)

        batch = _random_batch(config, key_data, leading=(k,))
    jitted = jax.jit(step_fn, donate_argnums=(0,) if donate else ())

    start = time.perf_counter()
    lowered = jitted.lower(state, batch)
    compiled = lowered.compile()
    compile_s = time.perf_counter() - start
    flops = _cost_flops(compiled)
    if flops is not None and k > 1 and unroll:
        flops /= k  # an unrolled scan holds k steps; a rolled one is counted once by XLA
    hlo = hlo_summary(lowered.as_text(), compiled.as_text()) if hlo_summary_wanted else None

    for _ in range(warmup):
        state, metrics = compiled(state, batch)
        jax.block_until_ready((state, metrics))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = compiled(state, batch)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - start)
    _check_finite(metrics)

    step_ms = _median_ms(times) / k
    batch_size = int(config.batch_size)
    peak = _device_peak_memory(device)
    out = {
        "img_per_s": 1e3 * batch_size / step_ms,
        "step_ms": step_ms,
        "step_ms_min": 1e3 * min(times) / k,
        "timed_steps": steps * k,
        "steps_per_dispatch": k,
        "scan_unrolled": bool(unroll) if k > 1 else None,
        "compile_s": compile_s,
        "flops_per_step": flops,
        "peak_memory_bytes": peak if peak is not None else max_rss_bytes(),
        "peak_memory_kind": "device_peak_bytes_in_use" if peak is not None else "process_max_rss",
        "device": device.device_kind,
        "platform": device.platform,
        "device_count": jax.device_count(),
        "donate": donate,
    }
    if hlo is not None:
        out["hlo"] = hlo
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


def benchmark_torch(
    config: ml_collections.ConfigDict,
    *,
    device: str = "cpu",
    modes: Sequence[str] = ("eager",),
    steps: int = 20,
    warmup: int = 3,
    seed: int = 0,
    flush_denormal: bool = True,
    threads: int | None = None,
) -> dict[str, Any]:
    """Times the PyTorch reference's training step for `config` in each of `modes`.

    The reference step comes from `tests.torch_reference.build_reference_step` (looked
    up by `config.method`): same architecture, batch, init and losses; bf16 runs under
    `torch.autocast(device, torch.bfloat16)`. On CUDA `cudnn.benchmark=True` and the
    default TF32 settings are used, and every timed step ends with
    `torch.cuda.synchronize()`. On CPU, `flush_denormal` (default) sets
    `torch.set_flush_denormal(True)`, which XLA:CPU does by default (`--xla_cpu_ftz=true`):
    without it the reference's CPU step spends most of its time on denormal arithmetic
    (7x slower on the digits config, see docs/benchmarks.md), which would flatter JAX.
    `threads` sets `torch.set_num_threads` (CPU). Per mode it returns `torch_<mode>_img_per_s`,
    `torch_<mode>_step_ms` and, for a mode that failed, None with `torch_<mode>_error`.
    """
    import torch

    _ensure_repo_root_on_path()
    reference = importlib.import_module("tests.torch_reference")

    for mode in modes:
        if mode not in TORCH_MODES:
            raise ValueError(f"unknown torch mode {mode!r}; expected some of {TORCH_MODES}")
    if device == "cuda":
        torch.backends.cudnn.benchmark = True
    if device == "cpu":
        torch.set_flush_denormal(bool(flush_denormal))  # process-wide; reset to torch's default below
        if threads:
            torch.set_num_threads(int(threads))
    dtype = torch.bfloat16 if precision_of(config) == "bf16" else torch.float32
    batch_size = int(config.batch_size)
    size = int(config.data.crop_size)
    gen = torch.Generator().manual_seed(seed)
    real_A = (torch.rand(batch_size, int(config.input_nc), size, size, generator=gen) * 2 - 1).to(device)
    real_B = (torch.rand(batch_size, int(config.output_nc), size, size, generator=gen) * 2 - 1).to(device)

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    out: dict[str, Any] = {
        "torch_device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch_threads": torch.get_num_threads(),
        "torch_flush_denormal": bool(flush_denormal) if device == "cpu" else None,
    }
    for mode in modes:
        key = f"torch_{mode}"
        out[f"{key}_img_per_s"] = None
        out[f"{key}_step_ms"] = None
        try:
            torch.manual_seed(seed)
            step = reference.build_reference_step(
                config, device=device, dtype=dtype, compile=(mode == "compile"))
            start = time.perf_counter()
            step(real_A, real_B)  # first call: compiles under torch.compile
            sync()
            first_s = time.perf_counter() - start
            for _ in range(max(warmup - 1, 0)):
                step(real_A, real_B)
            sync()
            times = []
            for _ in range(steps):
                start = time.perf_counter()
                step(real_A, real_B)
                sync()
                times.append(time.perf_counter() - start)
        except Exception as err:  # noqa: BLE001 - report, do not crash the benchmark
            out[f"{key}_error"] = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"[:300]
            continue
        step_ms = _median_ms(times)
        out[f"{key}_img_per_s"] = 1e3 * batch_size / step_ms
        out[f"{key}_step_ms"] = step_ms
        out[f"{key}_step_ms_min"] = 1e3 * min(times)
        out[f"{key}_first_step_s"] = first_s
        if device == "cuda":
            out[f"{key}_peak_memory_bytes"] = int(torch.cuda.max_memory_allocated())
            torch.cuda.reset_peak_memory_stats()
    if device == "cpu":
        torch.set_flush_denormal(False)
    return out


def _ensure_repo_root_on_path() -> None:
    """`tests.torch_reference` lives in the repo, not the package: import it from the root."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if root not in sys.path:
        sys.path.insert(0, root)


# --------------------------------------------------------------------------- report


def compare(
    config: ml_collections.ConfigDict,
    jax_result: Mapping[str, Any],
    torch_result: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The result record: JAX figures, torch figures, ratios (>1: JAX faster), context."""
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
    peak = peak_flops(jax_result.get("device"), precision)
    flops = jax_result.get("flops_per_step")
    out["peak_flops"] = peak
    out["fraction_of_peak"] = (
        flops / (jax_result["step_ms"] / 1e3) / peak if peak and flops else None
    )
    torch_result = dict(torch_result or {})
    for mode in TORCH_MODES:
        torch_result.setdefault(f"torch_{mode}_img_per_s", None)
    out.update(torch_result)
    for mode in TORCH_MODES:
        theirs = out.get(f"torch_{mode}_img_per_s")
        out[f"ratio_vs_torch_{mode}"] = out["img_per_s"] / theirs if theirs else None
    out["versions"] = versions()
    return out


def _fmt(value: Any, spec: str = ".1f") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return format(value, spec)
    return str(value)


def _cores(result: Mapping[str, Any]) -> str:
    cpus = result.get("cpus")
    return f"{len(cpus)} CPU core(s); " if result.get("platform") == "cpu" and cpus else ""


def format_table(result: Mapping[str, Any]) -> str:
    """A human-readable table of one `compare` record."""
    v = result.get("versions", {})
    lines = [
        f"method {result['method']} (G {result.get('netG')} ngf {result.get('ngf')}, "
        f"D {result.get('netD')} ndf {result.get('ndf')}), batch {result['batch_size']}, "
        f"image {result['image_size']}x{result['image_size']}, precision {result['precision']}",
        f"device {result.get('device')} ({result.get('platform')}); torch device "
        f"{result.get('torch_device', '-')}; {_cores(result)}"
        f"load avg {result.get('load_avg_1m', '-')}",
        f"jax {v.get('jax')} jaxlib {v.get('jaxlib')} flax {v.get('flax')} torch {v.get('torch')} "
        f"python {v.get('python')}",
        "",
        f"{'':<16}{'img/s':>10}{'step ms':>10}{'vs JAX':>9}  notes",
    ]
    lines.append(
        f"{'jax':<16}{_fmt(result['img_per_s']):>10}{_fmt(result['step_ms'], '.2f'):>10}"
        f"{'1.00':>9}  compile {_fmt(result.get('compile_s'), '.1f')} s, "
        f"steps/dispatch {result.get('steps_per_dispatch', 1)}"
    )
    for mode in TORCH_MODES:
        ips = result.get(f"torch_{mode}_img_per_s")
        err = result.get(f"torch_{mode}_error")
        if ips is None and err is None:
            continue
        rel = result["img_per_s"] / ips if ips else None
        lines.append(
            f"{'torch ' + mode:<16}{_fmt(ips):>10}{_fmt(result.get(f'torch_{mode}_step_ms'), '.2f'):>10}"
            f"{_fmt(1 / rel if rel else None, '.2f'):>9}  {err or ''}"
        )
    lines.append("")
    for mode in TORCH_MODES:
        ratio = result.get(f"ratio_vs_torch_{mode}")
        if ratio is not None:
            lines.append(f"JAX / torch {mode}: {ratio:.2f}x")
    flops = result.get("flops_per_step")
    lines.append(
        f"XLA flops/step {_fmt(flops / 1e9 if flops else None, '.2f')} GFLOP; "
        f"fraction of peak {_fmt(result.get('fraction_of_peak'), '.3f')}; "
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


def markdown_row(result: Mapping[str, Any], notes: str = "") -> str:
    """One row for `docs/benchmarks.md` (columns: `MARKDOWN_HEADER`)."""
    v = result.get("versions", {})
    cells = [
        time.strftime("%Y-%m-%d"),
        f"{result.get('device')}" + (f" ({_cores(result)[:-2]})" if _cores(result) else ""),
        str(result["method"]),
        f"{result.get('netG')} ngf{result.get('ngf')} / {result.get('netD')} ndf{result.get('ndf')}",
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
        notes,
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
