"""Benchmark one training step, JAX against the PyTorch reference, from the repo root.

  python -m launch.benchmark --config=configs/cyclegan.py:digits --precision=fp32
  python -m launch.benchmark --config=configs/cyclegan.py:horse2zebra \\
      --batch_size=1 --image_size=256 --precision=fp32 --torch=eager,compile \\
      --append=docs/benchmarks.md

`--config.x=y` overrides any config field (e.g. `--config.ngf=8`). Prints a human table,
then, as the LAST stdout line, one JSON object (img_per_s, torch_eager_img_per_s,
ratio_vs_torch_eager, step_ms, compile_s, flops_per_step, fraction_of_peak, ...).
`--torch=none` needs no torch installed. All logic is in `unpaired.benchmarks.step`.

JAX and the torch modes are prepared and warmed up first, then timed in `--rounds`
alternating rounds (JAX, torch eager, torch compile, then again), so that load drift on a
shared machine hits all of them alike; `ratio_vs_torch_<mode>` is the median of the
per-round ratios, `ratio_vs_torch_<mode>_of_medians` that of the whole-run medians.
`--data_rate` also times the config's input pipeline alone (as `unpaired.train` builds
it): `data_img_per_s` and `data_bound_ratio` (>1: the pipeline keeps up with the step).
`launch/benchmark_gpu.sh` runs the four GPU target configurations.

CPU timings need an idle machine. Right before the timed rounds (after compiling and
warming up) and over the rounds themselves, `unpaired.benchmarks.machine` measures the cores
other processes keep busy; above 0.25 the run stops with one `error:` line and appends
nothing, unless `--allow_loaded` (then "loaded": true, and the markdown notes say so). On a
GPU/TPU the host's load is only recorded. Every CPU result names the CPU (model, vector
extensions, cores; JAX's and torch's threads) and, against this CPU's float32 matmul peak
(measured after the rounds, a few seconds, or given as `--peak_gflops`; `--mode=peak`
measures it alone), the GFLOP/s of JAX and of each torch mode (gflops, fraction_of_peak,
torch_<mode>_gflops, torch_<mode>_fraction_of_peak).

`--mode=translate` times inference instead: the method's eval-mode generator forward, as
`launch/translate.py` runs it on one batch (default request, e.g. CycleGAN AtoB), against
the reference generator's forward (`unpaired.benchmarks.translate`); same rounds, table,
JSON line (plus "mode") and markdown row (method cell `<method> translate`). A method
without a translate path is one `error:` line naming it.

`--mode=max_size` answers "how large an image fits": per remat setting (both, where the
config has `remat`), the largest square `--size_multiple` multiple whose training step fits
the device's memory (or `--memory_gib`), from XLA's memory analysis of the compiled step
(`unpaired.benchmarks.memory`); on a GPU/TPU that size is then run for real, stepping down on
out-of-memory. JAX only; its last line is JSON too.

GPU memory: JAX and PyTorch share the device in one process, so unless
XLA_PYTHON_CLIENT_PREALLOCATE is already set this sets it to `false` before JAX starts
(JAX would otherwise reserve 75% of the device and the torch side could run out of
memory); JAX's reported peak (`peak_bytes_in_use`) does not depend on it.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys

# `python launch/benchmark.py` works too: the repo root (configs/, tests/) goes on the path.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from unpaired import cli  # noqa: E402

_MODE = flags.DEFINE_enum(
    "mode", "train", ["train", "translate", "max_size", "peak"],
    "train: one training step; translate: the generator's inference forward (launch/translate.py); "
    "max_size: the largest square image whose training step fits the memory, with and without remat; "
    "peak: this CPU's float32 matmul peak alone (JAX and torch; no --config), to pass as --peak_gflops.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Method config, e.g. configs/cyclegan.py:digits.", lock_config=True
)
_BATCH = flags.DEFINE_integer("batch_size", None, "Batch size (default: the config's).")
_IMAGE = flags.DEFINE_integer("image_size", None, "Image side (default: config.data.crop_size).")
_PRECISION = flags.DEFINE_enum(
    "precision", None, ["fp32", "bf16"], "Compute precision (default: config.dtype)."
)
_STEPS = flags.DEFINE_integer("steps", 20, "Timed steps per framework (median reported).")
_ROUNDS = flags.DEFINE_integer(
    "rounds", 5,
    "Timing rounds (at most --steps): each times its share of the steps of every contender in "
    "turn (JAX, torch eager, torch compile); ratio_vs_torch_* is the median per-round ratio.",
)
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps after compilation.")
_TORCH = flags.DEFINE_string(
    "torch", "eager", "Comma-separated PyTorch modes to time (eager, compile), or 'none'."
)
_TORCH_STEPS = flags.DEFINE_integer("torch_steps", None, "Timed torch steps (default: --steps).")
_TORCH_FTZ = flags.DEFINE_bool(
    "torch_flush_denormal", True,
    "On CPU, torch.set_flush_denormal(True), matching XLA:CPU's default flush-to-zero.",
)
_SPD = flags.DEFINE_integer(
    "steps_per_dispatch", 1, "JAX steps per jitted call (lax.scan over k batches)."
)
_UNROLL = flags.DEFINE_bool(
    "scan_unroll", True, "Unroll the --steps_per_dispatch scan (XLA:CPU runs rolled loops slowly)."
)
_CPU_THREADS = flags.DEFINE_integer(
    "cpu_threads", None,
    "CPU runs: pin the process to this many cores (JAX's pool follows) and torch.set_num_threads.",
)
_DONATE = flags.DEFINE_bool("donate", True, "Donate the train state to the jitted step.")
_HLO = flags.DEFINE_bool(
    "dump_hlo_summary", False, "Count conv kinds in the lowered and optimized HLO (E1)."
)
_XLA_FLAGS = flags.DEFINE_string(
    "xla_flags", "", "Appended to XLA_FLAGS before JAX starts (e.g. --xla_cpu_use_onednn=true)."
)
_APPEND = flags.DEFINE_string("append", None, "Append a markdown row to this file.")
_NOTES = flags.DEFINE_string("notes", "", "Free text for the markdown row's notes column.")
_DEVICE_LOCK = flags.DEFINE_string(
    "device_lock", None, "Lock file: the timed rounds hold it exclusively, so benchmarks run "
    "side by side on one accelerator compile and warm up concurrently but time one at a time.")
_DEVICE_LOCK_PARTIES = flags.DEFINE_integer(
    "device_lock_parties", 1, "With --device_lock: first wait (see --device_lock_barrier_s) until this many "
    "benchmarks are compiled and warmed up, so that no timed round overlaps a compilation.")
_DEVICE_LOCK_BARRIER = flags.DEFINE_float(
    "device_lock_barrier_s", 600.0, "With --device_lock_parties: wait at most this long for the others.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed for the initial state and random inputs.")
_PROFILE_DIR = flags.DEFINE_string(
    "profile_dir", None, "After the timed rounds, trace --profile_steps calls of JAX (jax.profiler; "
    "summarised per op and category in jax_ops.txt/.json) and of each torch mode (torch.profiler "
    "op table) into this folder (E2 of performance.md).")
_PROFILE_STEPS = flags.DEFINE_integer("profile_steps", 5, "Calls traced per contender with --profile_dir.")
_MEMORY_GIB = flags.DEFINE_float(
    "memory_gib", None, "--mode=max_size: the memory budget in GiB (default: the device's "
    "bytes_limit, JAX's share of it as XLA_PYTHON_CLIENT_MEM_FRACTION sets; required on CPU).")
_SIZE_MULTIPLE = flags.DEFINE_integer(
    "size_multiple", 64, "--mode=max_size: image sizes searched in multiples of this.")
_DATA_RATE = flags.DEFINE_bool(
    "data_rate", False,
    "Also time the config's input pipeline alone (make_loader + prefetch_to_device, as in "
    "training): data_img_per_s and data_bound_ratio = data_img_per_s / img_per_s.",
)
_DATA_BATCHES = flags.DEFINE_integer("data_batches", 20, "Timed batches for --data_rate.")
_DEVICES = flags.DEFINE_list(
    "devices", None, "Weak scaling instead of the torch comparison: e.g. 1,2,4,8 devices at "
    "--batch_size per device (CPU: simulated devices); steps/s, img/s and efficiency per count.")
_ALLOW_LOADED = flags.DEFINE_bool(
    "allow_loaded", False,
    "CPU runs: time even if other processes keep more than 0.25 cores busy right before or during "
    "the timed rounds (or the peak's matmuls); the result is marked loaded (JSON \"loaded\": true, "
    "'loaded (other processes: X cores)' in the markdown notes). Without it such a run stops with "
    "an error line and appends nothing. On a GPU/TPU the host's load is only recorded.")
_PEAK_GFLOPS = flags.DEFINE_float(
    "peak_gflops", None,
    "CPU runs: this CPU's float32 matmul peak in GFLOP/s (e.g. from --mode=peak, same --cpu_threads), "
    "against which the step's GFLOP/s are reported (fraction_of_peak). Default: measured after the "
    "timed rounds (a few seconds, see --peak_size).")
_PEAK_SIZE = flags.DEFINE_integer(
    "peak_size", 2048, "Side of the square float32 matrices whose jnp.dot and torch.mm give the CPU's "
    "matmul peak (best of 5 runs each), with --mode=peak or a CPU run without --peak_gflops.")
_VERBOSE = cli.define_verbose()


def _finite(value):
    """JSON-safe: NaN/inf become null, nested containers recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cli.setup_logging(_VERBOSE.value)
    _check_peak_flags()
    if _MODE.value == "peak":
        return _peak()
    if _CONFIG.value is None:
        raise app.UsageError("--config is required, e.g. --config=configs/cyclegan.py:digits")
    if _XLA_FLAGS.value:  # before the first JAX computation initialises the backend
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {_XLA_FLAGS.value}".strip()
    if _DEVICES.value:
        return _weak_scaling()
    if _MODE.value == "max_size":
        return _max_size()
    # On GPU, leave room for PyTorch in the same process (a user's setting wins).
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

    from unpaired.benchmarks import machine, step as benchmark

    cpus = benchmark.limit_cpus(_CPU_THREADS.value) if _CPU_THREADS.value else None

    torch_modes = [m.strip() for m in _TORCH.value.split(",") if m.strip()]
    if torch_modes == ["none"]:
        torch_modes = []
    for mode in torch_modes:
        if mode not in benchmark.TORCH_MODES:
            raise app.UsageError(f"--torch: unknown mode {mode!r}; use eager, compile or none")

    config = benchmark.resolve_config(_CONFIG.value, _BATCH.value, _IMAGE.value, _PRECISION.value)
    load_before = os.getloadavg()[0]
    if _ROUNDS.value < 1:
        raise app.UsageError("--rounds must be >= 1")
    skipped = {}
    torch_device = None
    platform = benchmark.jax_platform()
    if torch_modes:
        torch_device, reason = benchmark.torch_device_for(platform)
        if torch_device is None:
            skipped = {f"torch_{m}_error": f"skipped: {reason}" for m in torch_modes}
            torch_modes = []
    translate_mode = _MODE.value == "translate"
    if translate_mode and (_SPD.value != 1 or _HLO.value or _PROFILE_DIR.value):
        raise app.UsageError("--mode=translate times one forward per call: --steps_per_dispatch, "
                             "--dump_hlo_summary and --profile_dir apply to --mode=train only")
    refuse = platform == "cpu" and not _ALLOW_LOADED.value  # GPU/TPU: the host's load is recorded
    load_watch = functools.partial(machine.watch_load, refuse, what="the timed rounds")
    if translate_mode:
        jax_result, torch_result = _refused_if_loaded(
            lambda: _translate_rounds(config, torch_modes, torch_device, load_watch))
    else:
        jax_result, torch_result = _refused_if_loaded(lambda: benchmark.benchmark_interleaved(
            config, torch_modes=torch_modes, torch_device=torch_device or "cpu",
            steps=_STEPS.value, torch_steps=_TORCH_STEPS.value, rounds=_ROUNDS.value,
            warmup=_WARMUP.value, steps_per_dispatch=_SPD.value, unroll=_UNROLL.value,
            donate=_DONATE.value, seed=_SEED.value, hlo_summary_wanted=_HLO.value,
            flush_denormal=_TORCH_FTZ.value, threads=_CPU_THREADS.value, device_lock=_DEVICE_LOCK.value,
            device_lock_parties=_DEVICE_LOCK_PARTIES.value, device_lock_barrier_s=_DEVICE_LOCK_BARRIER.value,
            profile_dir=_PROFILE_DIR.value, profile_steps=_PROFILE_STEPS.value, load_watch=load_watch,
        ))
    torch_result.update(skipped)
    # After the rounds, so that a config or method error comes first: the CPU's matmul peak.
    cpu_peak = _refused_if_loaded(lambda: _cpu_peak(bool(torch_modes), refuse)) if platform == "cpu" else None
    data_result = None
    if _DATA_RATE.value:
        try:
            data_result = benchmark.measure_data_rate(config, batches=_DATA_BATCHES.value)
        except Exception as err:  # noqa: BLE001 - e.g. the preset's dataset is absent here
            data_result = {"data_img_per_s": None, "data_rate_error": benchmark.error_text(err)}
    result = benchmark.compare(config, jax_result, torch_result, data_result, cpu_peak)
    result.update(machine.describe_cpu())  # cpu_model, cpu_vector_ext, jax_threads (usable CPUs)
    result["loaded"] = machine.is_loaded(machine.loaded_cores(result)) if platform == "cpu" else None
    result["mode"] = _MODE.value
    result["xla_flags"] = os.environ.get("XLA_FLAGS", "")
    result["xla_python_client_preallocate"] = os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE")
    result["cpus"] = cpus if cpus is not None else sorted(os.sched_getaffinity(0))
    result["load_avg_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    from unpaired import methods

    note = getattr(methods.get_method_class(config.method), "benchmark_note", "")
    if note:  # e.g. DTN: the stage-2 step runs from a random f
        result["method_note"] = note
        print(f"note ({config.method}): {note}")

    if translate_mode:
        print(f"mode translate: eval-mode generator forward ({result.get('generator')}; "
              f"request {result.get('request')}); 'step' = one forward of the batch")
    print(benchmark.format_table(result))
    if result.get("profile"):
        with open(result["profile"]["jax"]["files"][1], encoding="utf-8") as f:
            print(f"JAX profile ({_PROFILE_DIR.value}):\n{f.read()}", end="")
    if _APPEND.value:
        row_result = {**result, "method": f"{config.method} translate"} if translate_mode else result
        benchmark.append_markdown_row(_APPEND.value, benchmark.markdown_row(row_result, _NOTES.value))
        print(f"appended a row to {_APPEND.value}")
    sys.stdout.flush()
    print(json.dumps(_finite(result), sort_keys=True, default=str), flush=True)


def _check_peak_flags():
    """--peak_gflops and --peak_size make sense (one `error:` line otherwise)."""
    if _PEAK_GFLOPS.value is not None and not _PEAK_GFLOPS.value > 0:
        cli.fail(f"--peak_gflops must be > 0, got {_PEAK_GFLOPS.value}")
    if _PEAK_SIZE.value < 1:
        cli.fail(f"--peak_size must be >= 1, got {_PEAK_SIZE.value}")


def _refused_if_loaded(run):
    """`run()`, or one `error:` line where the machine is loaded (machine.LoadedMachineError)."""
    from unpaired.benchmarks import machine  # pylint: disable=import-outside-toplevel

    try:
        return run()
    except machine.LoadedMachineError as err:
        cli.fail(str(err))


def _cpu_peak(with_torch, refuse):
    """The CPU's float32 matmul peak record: --peak_gflops, else measured (its load watched:
    machine.LoadedMachineError with `refuse`)."""
    from unpaired.benchmarks import machine, peak  # pylint: disable=import-outside-toplevel

    if _PEAK_GFLOPS.value is not None:
        return peak.given_peak(_PEAK_GFLOPS.value)
    with machine.watch_load(refuse, prefix="peak_", what="the matmul peak measurement") as load:
        measured = peak.measure_cpu_peak(_PEAK_SIZE.value, threads=_CPU_THREADS.value, with_torch=with_torch)
    return {**measured, **load}


def _peak():
    """--mode=peak: this CPU's float32 matmul peak alone, its table line and JSON."""
    from unpaired.benchmarks import machine, step as benchmark  # pylint: disable=import-outside-toplevel

    if _CPU_THREADS.value:
        benchmark.limit_cpus(_CPU_THREADS.value)
    platform = benchmark.jax_platform()
    if platform != "cpu":
        cli.fail(f"--mode=peak measures the CPU, but JAX runs on {platform} here; run it with "
                 "JAX_PLATFORMS=cpu")
    with_torch = _TORCH.value.strip() != "none"
    record = _refused_if_loaded(lambda: _cpu_peak(with_torch, refuse=not _ALLOW_LOADED.value))
    record.update(machine.describe_cpu())
    record.update({"mode": "peak", "platform": platform, "versions": benchmark.versions(),
                   "loaded": machine.is_loaded(machine.loaded_cores(record))})
    print(f"cpu {record['cpu_model']} ({record['cpu_vector_ext'] or 'no vector extension named'}), "
          f"{record['jax_threads']} usable CPU(s); float32 matmul {record['peak_matmul_size']}: "
          f"jax {_fmt_gflops(record['peak_jax_gflops'])}, torch {_fmt_gflops(record['peak_torch_gflops'])} "
          f"(torch threads {record.get('peak_torch_threads', '-')}); "
          f"peak {record['peak_gflops']:.1f} GFLOP/s" + (" (LOADED)" if record["loaded"] else ""))
    print(json.dumps(_finite(record), sort_keys=True, default=str), flush=True)


def _fmt_gflops(value):
    """'12.3 GFLOP/s', or '-' for a framework not measured."""
    return f"{value:.1f} GFLOP/s" if value is not None else "-"


def _translate_rounds(config, torch_modes, torch_device, load_watch):
    """--mode=translate: (jax, torch) figures of the generator forwards; a method without a
    translate path (or a bad image size) is one `error:` line."""
    from unpaired.benchmarks import translate as translate_benchmark  # pylint: disable=import-outside-toplevel

    try:
        return translate_benchmark.benchmark_translate_interleaved(
            config, torch_modes=torch_modes, torch_device=torch_device or "cpu",
            steps=_STEPS.value, torch_steps=_TORCH_STEPS.value, rounds=_ROUNDS.value,
            warmup=_WARMUP.value, seed=_SEED.value, flush_denormal=_TORCH_FTZ.value,
            threads=_CPU_THREADS.value, device_lock=_DEVICE_LOCK.value,
            device_lock_parties=_DEVICE_LOCK_PARTIES.value,
            device_lock_barrier_s=_DEVICE_LOCK_BARRIER.value, load_watch=load_watch)
    except translate_benchmark.TranslateBenchmarkError as err:
        cli.fail(str(err))


def _max_size():
    """--mode=max_size: per remat setting, the largest image size the step fits (unpaired.benchmarks.memory)."""
    import jax  # pylint: disable=import-outside-toplevel

    from unpaired.benchmarks import memory as memory_probe, step as benchmark  # pylint: disable=import-outside-toplevel

    if _SIZE_MULTIPLE.value < 1:
        raise app.UsageError(f"--size_multiple must be >= 1, got {_SIZE_MULTIPLE.value}")
    device = jax.devices()[0]
    limit = (device.memory_stats() or {}).get("bytes_limit") if device.platform != "cpu" else None
    if _MEMORY_GIB.value is not None:
        if _MEMORY_GIB.value <= 0:
            raise app.UsageError(f"--memory_gib must be > 0, got {_MEMORY_GIB.value}")
        limit = int(_MEMORY_GIB.value * 2 ** 30)
    if not limit:
        raise app.UsageError(f"--mode=max_size on {device.platform} needs --memory_gib (the device "
                             "reports no memory limit)")
    config = benchmark.resolve_config(_CONFIG.value, _BATCH.value, _IMAGE.value, _PRECISION.value)
    settings = (False, True) if "remat" in config else (None,)
    rows = []
    for remat in settings:
        c = benchmark.resolve_config(config)
        if remat is not None:
            c.remat = remat
        found = memory_probe.largest_size(c, limit, multiple=_SIZE_MULTIPLE.value)
        row = {"remat": remat, "size": found["size"],
               "predicted_bytes": found["memory"].total_bytes if found["memory"] else None,
               "probes": {m.size: m.total_bytes for m in found["probes"]}}
        if device.platform != "cpu" and found["size"]:
            row.update(memory_probe.confirm_on_device(c, found["size"], _SIZE_MULTIPLE.value))
        rows.append(row)
        ran = f", ran {row['ran_size']} (peak {row['peak_memory_bytes']} B)" if "ran_size" in row else ""
        print(f"remat={remat}: largest {row['size']}x{row['size']} at batch {c.batch_size} "
              f"({row['predicted_bytes']} B predicted of {limit}){ran}", flush=True)
    print(json.dumps(_finite({
        "mode": "max_size", "method": config.method, "batch_size": config.batch_size,
        "precision": benchmark.precision_of(config), "device": device.device_kind,
        "platform": device.platform, "budget_bytes": limit, "size_multiple": _SIZE_MULTIPLE.value,
        "versions": benchmark.versions(), "rows": rows}), sort_keys=True, default=str), flush=True)


def _weak_scaling():
    """--devices: the data-parallel step's throughput per device count (unpaired.benchmarks.scaling)."""
    try:
        counts = [int(n) for n in _DEVICES.value]
    except ValueError:
        raise app.UsageError(f"--devices must be integers, e.g. 1,2,4,8; got {_DEVICES.value}") from None
    if not counts or min(counts) < 1:
        raise app.UsageError(f"--devices must be positive, got {_DEVICES.value}")
    # Simulated CPU devices (ignored by GPU and TPU backends); before JAX starts its backend.
    os.environ["XLA_FLAGS"] = (f"{os.environ.get('XLA_FLAGS', '')} "
                               f"--xla_force_host_platform_device_count={max(counts)}").strip()
    import jax  # pylint: disable=import-outside-toplevel

    from unpaired.benchmarks import machine, scaling as scaling_benchmark, step as benchmark  # pylint: disable=import-outside-toplevel

    config = benchmark.resolve_config(_CONFIG.value, _BATCH.value, _IMAGE.value, _PRECISION.value)
    refuse = jax.default_backend() == "cpu" and not _ALLOW_LOADED.value  # simulated devices share the cores

    def timed():
        with machine.watch_load(refuse, what="the weak-scaling steps") as load:
            rows = scaling_benchmark.weak_scaling(config, counts, config.batch_size, steps=_STEPS.value,
                                                  warmup=_WARMUP.value, seed=_SEED.value)
        return rows, load

    rows, load = _refused_if_loaded(timed)
    print(scaling_benchmark.format_rows(rows, jax.default_backend()))
    print(json.dumps(_finite({"platform": jax.default_backend(), "per_device_batch": config.batch_size,
                              "rows": rows, **load, "loaded": machine.is_loaded(machine.loaded_cores(load))}),
                     sort_keys=True), flush=True)


if __name__ == "__main__":
    cli.run(main)  # config file, preset, key and value errors in one line
