"""Smoke test of the training-step benchmark (launch/benchmark.py, unpaired/benchmarks/step.py).

One small CPU run through the command line (digits preset, batch 2, 32x32, ngf/ndf 8,
no identity loss, 3 timed steps in 3 interleaved rounds, JAX and torch eager; about 20-30 s)
checks the JSON contract of the last stdout line and the markdown row; the input pipeline's
rate and the rounds' bookkeeping are checked by direct calls. Timings are never asserted,
only that they are positive and finite. The command runs with other processes' load
reported (`machine.other_busy_cores` replaced in its process), so no test depends on
what else this machine is doing: loaded runs are refused, or timed and marked with
--allow_loaded.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cyclegan
from unpaired import layers
from unpaired.benchmarks import machine, peak, step as benchmark

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _run_with_others_busy(args, cores):
    """launch.benchmark in a subprocess where other processes are measured to keep `cores` busy
    (before a timed part: `machine.other_busy_cores`, during it: `BusyWindow.other_cores`)."""
    code = ("import runpy, sys\n"
            "from unpaired.benchmarks import machine\n"
            f"machine.other_busy_cores = lambda seconds=1.0: {cores!r}\n"
            f"machine.BusyWindow.other_cores = lambda self: {cores!r}\n"
            f"sys.argv = ['launch/benchmark.py', *{list(args)!r}]\n"
            "runpy.run_module('launch.benchmark', run_name='__main__')\n")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_launch_benchmark_smoke(tmp_path):
    table = tmp_path / "benchmarks.md"
    table.write_text("# Benchmarks\n\nsome text\n")
    args = [
        "--config=configs/cyclegan.py:digits",
        "--batch_size=2", "--image_size=32", "--precision=fp32", "--config.ngf=8",
        "--config.ndf=8", "--config.lambda_identity=0", "--steps=3", "--warmup=1", "--torch=eager", "--dump_hlo_summary",
        f"--append={table}", "--notes=smoke", "--allow_loaded", "--peak_size=64",
    ]
    # The test session's XLA_FLAGS (backend optimisation level 0, conftest.py) is inherited:
    # it halves the compile time and timings are not checked. Other processes are reported
    # 1.5 cores busy (whatever this machine does): --allow_loaded times and marks the run.
    proc = _run_with_others_busy(args, 1.5)
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    result = json.loads(lines[-1])

    for key in ("img_per_s", "torch_eager_img_per_s", "ratio_vs_torch_eager", "compile_s",
                "step_ms", "peak_memory_bytes", "flops_per_step"):
        assert _positive(result[key]), (key, result[key])
    assert result["img_per_s"] == pytest.approx(2e3 / result["step_ms"])
    # Interleaved rounds: the ratio is the median of per-round ratios; the medians' ratio is kept.
    assert result["ratio_vs_torch_eager_of_medians"] == pytest.approx(
        result["img_per_s"] / result["torch_eager_img_per_s"])
    assert result["rounds"] == 3 and len(result["ratio_vs_torch_eager_rounds"]) == 3
    assert all(_positive(r) for r in result["ratio_vs_torch_eager_rounds"])
    assert result["timed_steps"] == result["torch_eager_timed_steps"] == 3
    assert result["step_ms_min"] <= result["step_ms"]
    # The CPU's matmul peak, measured (64x64 here): the step's share of it, JAX's and torch's.
    assert result["peak_source"] == "measured" and result["peak_matmul_size"] == 64
    assert result["peak_flops"] == pytest.approx(1e9 * result["peak_gflops"])
    for key in ("peak_jax_gflops", "peak_torch_gflops", "gflops", "fraction_of_peak",
                "torch_eager_gflops", "torch_eager_fraction_of_peak"):
        assert _positive(result[key]), (key, result[key])
    # The machine: CPU model (None only where neither cpuinfo nor platform names one), threads,
    # and other processes' load (reported 1.5 cores: timed with --allow_loaded, marked).
    assert "cpu_model" in result and "cpu_vector_ext" in result
    assert result["jax_threads"] == len(os.sched_getaffinity(0)) and _positive(result["torch_threads"])
    assert result["loaded"] is True and result["other_busy_cores"] == 1.5
    assert "other_busy_cores_timed" in result and "LOADED" in proc.stdout
    assert result["torch_compile_img_per_s"] is None and result["ratio_vs_torch_compile"] is None
    assert result["ratio_vs_torch_compile_of_medians"] is None
    assert "data_img_per_s" not in result  # only with --data_rate
    assert (result["batch_size"], result["image_size"], result["precision"]) == (2, 32, "fp32")
    assert result["method"] == "cyclegan" and result["ngf"] == 8
    assert result["device"] and result["platform"] == "cpu"
    assert set(result["versions"]) >= {"jax", "jaxlib", "flax", "torch"}
    assert result["versions"]["torch"]
    # The transposed convs' custom VJP: no lhs-dilated (zero-stuffed) kernel gradients.
    hlo = result["hlo"]
    assert hlo["stablehlo_lhs_dilated_weight_grad"] == 0
    assert hlo["stablehlo_convolution"] > 0 and hlo["stablehlo_weight_grad"] > 0

    assert "JAX / torch eager" in proc.stdout
    rows = [line for line in table.read_text().splitlines() if line.startswith("|")]
    assert rows[0] == benchmark.MARKDOWN_HEADER.splitlines()[0]
    assert len(rows) == 3 and "smoke" in rows[-1] and "| 2 | 32 | fp32 |" in rows[-1]
    assert rows[-1].split("|")[2].strip().startswith("cpu: ")  # the device cell names the CPU
    assert f"jax {result['jax_threads']} / torch {result['torch_threads']} threads |" in rows[-1]
    assert "| loaded (other processes: 1.50 cores); smoke; CPU use: JAX" in rows[-1]


def test_launch_benchmark_dtn_digits_with_profiles(tmp_path):
    """DTN's stage-2 step beside its torch reference step: 2 timed steps, narrow nets, then
    2 traced calls of each (--profile_dir): the JAX op summary and the torch op table."""
    cmd = [
        sys.executable, "-m", "launch.benchmark", "--config=configs/dtn.py:digits",
        "--batch_size=2", "--precision=fp32", "--config.nf=4", "--config.feature_dim=8",
        "--config.ngf=4", "--config.ndf=4", "--steps=2", "--rounds=1", "--warmup=1",
        "--torch=eager", f"--profile_dir={tmp_path / 'profile'}", "--profile_steps=2",
        "--allow_loaded", "--peak_gflops=50",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads([line for line in proc.stdout.splitlines() if line.strip()][-1])
    assert result["method"] == "dtn"
    for key in ("img_per_s", "torch_eager_img_per_s", "ratio_vs_torch_eager"):
        assert _positive(result[key]), (key, result[key])
    assert result["timed_steps"] == result["torch_eager_timed_steps"] == 2
    assert "random" in result["method_note"] and "random" in proc.stdout
    profile = result["profile"]
    assert _positive(profile["jax"]["op_ms_per_step"]) and "JAX profile" in proc.stdout
    assert sum(profile["jax"]["ms_per_step_by_category"].values()) == pytest.approx(
        profile["jax"]["op_ms_per_step"])
    summary = json.load(open(tmp_path / "profile" / "jax_ops.json"))
    assert summary["steps"] == 2 and summary["top"][0]["ms_per_step"] >= summary["top"][-1]["ms_per_step"]
    table = open(profile["torch_eager"]["files"][0]).read()
    assert "torch_eager: 2 call(s)" in table and "aten::" in table  # torch's own op names


def test_launch_benchmark_refuses_a_loaded_cpu(tmp_path):
    """Other processes busy: one error line naming --allow_loaded before the timed rounds (after
    compiling) or the matmul peak, and no row (the smoke test above times a loaded run with
    --allow_loaded)."""
    table = tmp_path / "benchmarks.md"
    table.write_text("# Benchmarks\n")
    args = ["--mode=translate", "--config=configs/cyclegan.py:digits", "--batch_size=1",  # the cheapest compile
            "--image_size=16", "--precision=fp32", "--config.ngf=4", "--config.ndf=4",
            "--config.netD=n_layers", "--config.n_layers_D=2", "--steps=1", "--rounds=1",
            "--warmup=0", "--torch=none", "--peak_size=16", f"--append={table}"]
    refused = _run_with_others_busy(args, 1.5)
    assert refused.returncode != 0, refused.stdout[-2000:]
    assert [line for line in refused.stderr.splitlines() if line.strip()] == [
        "error: other processes kept 1.50 cores busy right before the timed rounds (more than "
        "0.25): timings need an idle machine; pass --allow_loaded to time anyway (the result is "
        "marked loaded)"], refused.stderr[-2000:]
    assert "img/s" not in refused.stdout and table.read_text() == "# Benchmarks\n"
    refused = _run_with_others_busy(["--mode=peak", "--peak_size=16"], 1.5)
    assert refused.returncode != 0 and [line for line in refused.stderr.splitlines() if line.strip()] == [
        "error: other processes kept 1.50 cores busy right before the matmul peak measurement (more "
        "than 0.25): timings need an idle machine; pass --allow_loaded to time anyway (the result "
        "is marked loaded)"], refused.stderr[-2000:]
    refused = _run_with_others_busy(["--devices=1", "--config=configs/cyclegan.py:digits"], 1.5)
    assert refused.returncode != 0 and [line for line in refused.stderr.splitlines() if line.strip()] == [
        "error: other processes kept 1.50 cores busy right before the weak-scaling steps (more "
        "than 0.25): timings need an idle machine; pass --allow_loaded to time anyway (the result "
        "is marked loaded)"], refused.stderr[-2000:]


def test_profile_categories():
    from unpaired.benchmarks import profile_summary

    assert profile_summary.category("custom-call.3", "__cudnn$convBackwardFilter") == "convolution"
    assert profile_summary.category("input_reduce_fusion.2") == "reduce"
    assert profile_summary.category("loop_pad_fusion") == "pad/concat"
    assert profile_summary.category("copy.7") == "layout (copy/transpose)"
    assert profile_summary.category("loop_multiply_fusion.1") == "elementwise fusion"
    assert profile_summary.category("ynn_fusion.44") == "convolution"  # XLA:CPU matmuls
    assert profile_summary.category("all-reduce.1") == "collective"


def test_imports_without_torch():
    """`--torch=none` must work without torch: nothing imports it at module load."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import unpaired.benchmarks.step, launch.benchmark, unpaired.torch_reference\n"
        "assert unpaired.benchmarks.step.versions()['jax']\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_hlo_summary_detects_naive_transposed_conv_weight_grad():
    x = jnp.ones((2, 8, 8, 16))
    k = jnp.full((3, 3, 8, 16), 0.1)

    def naive(x, k):
        return jnp.sum(layers._conv_transpose_direct(x, k, 2, 1, 1, None) ** 2)

    def custom(x, k):
        return jnp.sum(layers.conv_transpose2d(x, k, 2, 1, 1) ** 2)

    counts = {}
    for name, f in (("naive", naive), ("custom", custom)):
        lowered = jax.jit(jax.grad(f, argnums=(0, 1))).lower(x, k)
        counts[name] = benchmark.hlo_summary(lowered.as_text())
    assert counts["naive"]["stablehlo_lhs_dilated_weight_grad"] == 1
    assert counts["custom"]["stablehlo_lhs_dilated_weight_grad"] == 0
    assert counts["custom"]["stablehlo_weight_grad"] == 1


def test_peak_flops_table_and_append(tmp_path):
    assert benchmark.peak_flops("NVIDIA H100 80GB HBM3", "bf16") == 989e12
    assert benchmark.peak_flops("NVIDIA H100 PCIe", "fp32") == 378e12
    assert benchmark.peak_flops("NVIDIA A100-SXM4-80GB", "fp32") == 156e12
    assert benchmark.peak_flops("cpu", "fp32") is None
    assert benchmark.peak_flops(None, "bf16") is None
    path = tmp_path / "b.md"
    benchmark.append_markdown_row(str(path), "| a |")
    benchmark.append_markdown_row(str(path), "| b |")
    assert path.read_text().splitlines()[-2:] == ["| a |", "| b |"]
    assert path.read_text().count(benchmark.MARKDOWN_HEADER) == 1


def test_data_rate_digits():
    """--data_rate's measurement on the built-in digits (offline): positive, finite, the preset's shape."""
    config = benchmark.resolve_config(cyclegan.get_config("digits"), batch_size=4)
    rate = benchmark.measure_data_rate(config, batches=5, warmup=1)
    assert _positive(rate["data_img_per_s"]) and _positive(rate["data_batch_ms"])
    assert rate["data_img_per_s"] == pytest.approx(4e3 / rate["data_batch_ms"])
    assert rate["data_batch_shape"] == [4, 32, 32, 1] and rate["data_source"] == "digits"
    fake_step = {"img_per_s": 50.0, "step_ms": 80.0, "device": "cpu", "flops_per_step": None}
    result = benchmark.compare(config, fake_step, None, rate)
    assert _positive(result["data_bound_ratio"])
    assert result["data_bound_ratio"] == pytest.approx(rate["data_img_per_s"] / 50.0)


def test_rounds_interleave_and_drop_failures():
    """time_rounds runs A B C per round, splits the calls evenly and drops a failing optional runner."""
    order = []

    def runner(name, fail_at=None, may_fail=True, k=1):
        def call():
            order.append(name)
            if fail_at is not None and order.count(name) == fail_at:
                raise RuntimeError(f"{name} broke\nsecond line")
        return benchmark.Runner(name, call, k, may_fail=may_fail)

    runners = [runner("jax", may_fail=False, k=2), runner("torch_eager"), runner("torch_compile", fail_at=2)]
    times, errors = benchmark.time_rounds(
        runners, {"jax": 5, "torch_eager": 3, "torch_compile": 3}, rounds=3)
    assert order[:6] == ["jax", "jax", "torch_eager", "torch_compile", "jax", "jax"]
    assert [len(r) for r in times["jax"]] == [2, 2, 1] and [len(r) for r in times["torch_eager"]] == [1, 1, 1]
    assert errors == {"torch_compile": "RuntimeError: torch_compile broke"} and "torch_compile" not in times
    assert benchmark.round_sizes(7, 3) == [3, 2, 2] and benchmark.round_sizes(2, 3) == [1, 1, 1]
    assert benchmark.round_ratios([[1.0, 3.0], [2.0]], [[4.0], [1.0, 1.0]]) == [2.0, 0.5]
    with pytest.raises(RuntimeError):
        benchmark.time_rounds([runner("boom", fail_at=1, may_fail=False)], {"boom": 1}, rounds=1)


def test_device_lock_serialises_the_timed_part_and_rewarms(tmp_path):
    """Two holders of exclusive_device on one lock file never overlap; each re-warms its runners."""
    import threading
    import time

    lock = str(tmp_path / "device.lock")
    spans, calls = {}, []
    entered = threading.Event()

    def hold(name):
        runner = benchmark.Runner(name, lambda: calls.append(name), 1)
        with benchmark.exclusive_device(lock, [runner], rewarm=2) as (waited, ready):
            assert ready == 1
            start = time.perf_counter()
            entered.set()
            time.sleep(0.3)
            spans[name] = (start, time.perf_counter(), waited)

    first = threading.Thread(target=hold, args=("a",))
    first.start()
    assert entered.wait(10)
    second = threading.Thread(target=hold, args=("b",))
    second.start()
    first.join(10)
    second.join(10)
    assert spans["b"][0] >= spans["a"][1] and spans["b"][2] > 0.1  # b waited for a's turn
    assert calls == ["a", "a", "b", "b"]
    with benchmark.exclusive_device(None) as (waited, ready):  # no lock: nothing waits, nothing runs
        assert (waited, ready) == (0.0, 1)
    with benchmark.exclusive_device(lock, parties=3, barrier_timeout_s=0.5) as (waited, ready):
        assert ready == 1 and waited >= 0.5  # the barrier gave up on the two that never came


def _fake_runner(name, calls):
    return benchmark.Runner(name, lambda: calls.append(name), 1, may_fail=name != "jax")


_ROUNDS_ARGS = dict(torch_device="cpu", steps=2, torch_steps=2, rounds=2, batch_size=1,
                    flush_denormal=True, threads=None, device_lock=None, device_lock_parties=1,
                    device_lock_barrier_s=1.0)


def test_a_loaded_machine_is_refused_before_the_timed_rounds(monkeypatch):
    """The load watch wraps the rounds alone: refused, nothing is timed; allowed, its record joins JAX's."""
    calls = []
    monkeypatch.setattr(machine, "other_busy_cores", lambda seconds=1.0: 1.5)
    with pytest.raises(machine.LoadedMachineError, match=r"1\.50 cores busy right before the timed part"):
        benchmark.time_against_torch(
            _fake_runner("jax", calls), lambda mode: _fake_runner(f"torch_{mode}", calls),
            torch_modes=("eager",), load_watch=lambda: machine.watch_load(True, 0.01), **_ROUNDS_ARGS)
    assert calls == []
    jax_out, torch_out = benchmark.time_against_torch(
        _fake_runner("jax", calls), lambda mode: _fake_runner(f"torch_{mode}", calls),
        torch_modes=("eager",), load_watch=lambda: machine.watch_load(False, 0.01), **_ROUNDS_ARGS)
    assert calls == ["jax", "torch_eager", "jax", "torch_eager"]
    assert jax_out["other_busy_cores"] == 1.5 and "other_busy_cores_timed" in jax_out
    assert "ratio_vs_torch_eager" in torch_out
    jax_only, _ = benchmark.time_against_torch(_fake_runner("jax", calls), None, torch_modes=(),
                                               load_watch=None, **_ROUNDS_ARGS)
    assert "other_busy_cores" not in jax_only  # no watch, no record


def _cpu_result(**extra):
    """A `compare` record of a CPU run as launch/benchmark.py completes it (no step was run)."""
    config = benchmark.resolve_config(cyclegan.get_config("digits"), batch_size=2, precision="fp32")
    jax_result = {"img_per_s": 20.0, "step_ms": 100.0, "device": "cpu", "platform": "cpu",
                  "flops_per_step": 4e9, "peak_memory_bytes": 2 ** 30, "other_busy_cores": 0.05,
                  "other_busy_cores_timed": 0.1}
    torch_result = {"torch_eager_img_per_s": 10.0, "torch_eager_step_ms": 200.0, "torch_threads": 2}
    result = benchmark.compare(config, jax_result, torch_result, None, peak.given_peak(80.0))
    result.update(machine.describe_cpu("model name : AMD EPYC 7B13\nflags : fpu avx avx2 fma\n"))
    result.update({"cpus": [0, 1], "jax_threads": 2, "loaded": False, **extra})
    return result


def test_cpu_rows_name_the_machine_and_the_share_of_its_peak():
    result = _cpu_result()
    assert (result["cpu_model"], result["cpu_vector_ext"]) == ("AMD EPYC 7B13", "AVX2+FMA")
    # 4 GFLOP in 100 ms: 40 GFLOP/s, half the 80 GFLOP/s peak; torch at 200 ms: 20 GFLOP/s.
    assert result["gflops"] == pytest.approx(40.0) and result["fraction_of_peak"] == pytest.approx(0.5)
    assert result["torch_eager_gflops"] == pytest.approx(20.0)
    assert result["torch_eager_fraction_of_peak"] == pytest.approx(0.25)
    assert result["peak_flops"] == 80e9 and result["peak_source"] == "--peak_gflops"
    row = benchmark.markdown_row(result, "idle")
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == len(benchmark.MARKDOWN_HEADER.splitlines()[0].strip("|").split("|"))
    assert cells[1] == "cpu: AMD EPYC 7B13, AVX2+FMA, 2 cores; jax 2 / torch 2 threads"
    assert cells[-1] == ("idle; CPU use: JAX 40.0 GFLOP/s (50% of the 80 GFLOP/s float32 matmul "
                         "peak), torch eager 20.0 (25%)")
    table = benchmark.format_table(result)
    assert "cpu AMD EPYC 7B13, AVX2+FMA, 2 cores; jax 2 / torch 2 threads" in table
    assert "JAX 40.0 GFLOP/s, fraction of peak 0.500; torch eager 20.0 GFLOP/s (0.250)" in table
    assert "0.05 cores busy right before the timed rounds, 0.10 during" in table and "LOADED" not in table


def test_a_loaded_cpu_row_says_so():
    result = _cpu_result(loaded=True, other_busy_cores=1.234)
    assert benchmark.markdown_row(result).split("|")[-2].strip().startswith(
        "loaded (other processes: 1.23 cores); CPU use:")
    assert "LOADED (timed with --allow_loaded)" in benchmark.format_table(result)
    gpu = {**result, "platform": "gpu", "device": "NVIDIA H100 80GB HBM3"}
    assert benchmark.cpu_description(gpu) == "" and "| NVIDIA H100 80GB HBM3 |" in benchmark.markdown_row(gpu)


def test_cpu_matmul_peak_on_a_tiny_matrix():
    measured = peak.measure_cpu_peak(32, repeats=2, threads=1)
    assert _positive(measured["peak_jax_gflops"]) and _positive(measured["peak_torch_gflops"])
    assert measured["peak_gflops"] == max(measured["peak_jax_gflops"], measured["peak_torch_gflops"])
    assert measured["peak_torch_threads"] == 1 and measured["peak_matmul_size"] == 32
    assert peak.measure_cpu_peak(32, repeats=1, with_torch=False)["peak_torch_gflops"] is None
    assert peak.matmul_flops(32) == 2 * 32 ** 3
    with pytest.raises(ValueError):
        peak.given_peak(0.0)
    gflops, fraction = benchmark.utilisation(2 * 32 ** 3, 1.0, measured["peak_gflops"] * 1e9)
    assert fraction == pytest.approx(gflops / measured["peak_gflops"])
    assert benchmark.utilisation(None, 1.0, 1e9) == (None, None)


def test_mode_peak_alone_and_a_bad_peak_flag():
    """--mode=peak: the CPU's matmul peak and its machine, no --config; --peak_gflops=0: one error line."""
    proc = _run_with_others_busy(["--mode=peak", "--peak_size=32"], 0.0)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert record["mode"] == "peak" and record["loaded"] is False and record["peak_matmul_size"] == 32
    assert _positive(record["peak_gflops"]) and _positive(record["peak_torch_gflops"])
    assert record["jax_threads"] == len(os.sched_getaffinity(0)) and _positive(record["peak_torch_threads"])
    assert "float32 matmul 32" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "launch.benchmark", "--mode=peak", "--peak_gflops=0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0
    assert [line for line in bad.stderr.splitlines() if line.strip()] == [
        "error: --peak_gflops must be > 0, got 0.0"]


def test_conv_paths_times_forms_that_compute_the_same_conv():
    """`python -m unpaired.benchmarks.conv_paths` compares forms of one conv: they must agree."""
    from unpaired.benchmarks import conv_paths

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((1, 10, 10, 4)), jnp.float32)
    w = jnp.asarray(rng.standard_normal((3, 3, 4, 2)), jnp.float32)
    results = [jax.grad(lambda x, w, f=f: jnp.sum(jnp.sin(f(x, w))), (0, 1))(x, w)
               for f in conv_paths.forms().values()]
    for other in results[1:]:
        chex.assert_trees_all_close(other, results[0], rtol=1e-4, atol=1e-4)
    assert conv_paths.median_ms(lambda: jnp.ones(3), repeats=2) > 0
