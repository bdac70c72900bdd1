"""unpaired.benchmarks.machine: other processes' CPU use, seen and not seen."""

import os
import subprocess
import sys

import pytest

from unpaired.benchmarks import machine


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux's /proc/stat")
def test_a_busy_process_is_seen():
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert machine.other_busy_cores(1.0) > 0.5  # the spinner keeps one core busy
    finally:
        spinner.kill()
        spinner.wait()


CPUINFO_X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx avx2 fma bmi2

processor\t: 1
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse sse2 avx avx2 fma bmi2
"""


def test_cpu_model_and_vector_extensions_from_cpuinfo_text():
    assert machine.cpu_model(CPUINFO_X86) == "AMD EPYC 7B13"
    assert machine.vector_extensions(CPUINFO_X86) == "AVX2+FMA"  # AVX is implied by AVX2
    sapphire = "model name : Intel Xeon\nflags : avx avx2 fma avx512f avx512_bf16 amx_tile amx_bf16\n"
    assert machine.vector_extensions(sapphire) == "AVX512F+FMA+AVX512_BF16+AMX"
    arm = "processor : 0\nFeatures : fp asimd sve sve2 bf16\nCPU part : 0xd4f\n"
    assert machine.vector_extensions(arm) == "NEON+SVE2"
    assert machine.vector_extensions("flags : fpu sse2\n") is None


def test_describe_cpu_falls_back_to_platform_processor(monkeypatch):
    monkeypatch.setattr(machine.platform, "processor", lambda: "arm")
    described = machine.describe_cpu("")
    assert described["cpu_model"] == "arm" and described["cpu_vector_ext"] is None
    assert described["jax_threads"] == len(os.sched_getaffinity(0))
    assert machine.describe_cpu(CPUINFO_X86)["cpu_model"] == "AMD EPYC 7B13"


def test_watch_load_refuses_before_the_block(monkeypatch):
    monkeypatch.setattr(machine, "other_busy_cores", lambda seconds=1.0: 1.5)
    ran = []
    with pytest.raises(machine.LoadedMachineError, match=r"1\.50 cores.*--allow_loaded"):
        with machine.watch_load(refuse=True, settle_s=0.01):
            ran.append(1)
    assert ran == []  # refused before timing anything
    with machine.watch_load(refuse=False, settle_s=0.01) as record:  # --allow_loaded: recorded
        ran.append(1)
    assert ran == [1] and record["other_busy_cores"] == 1.5
    assert record["other_busy_cores_timed"] is None  # a block under MIN_WINDOW_S is not judged
    assert machine.loaded_cores(record) == 1.5 and machine.is_loaded(machine.loaded_cores(record))


def test_watch_load_judges_the_block_itself(monkeypatch):
    monkeypatch.setattr(machine, "other_busy_cores", lambda seconds=1.0: 0.0)
    monkeypatch.setattr(machine, "MIN_WINDOW_S", 0.0)
    monkeypatch.setattr(machine.BusyWindow, "other_cores", lambda self: 0.8)
    with pytest.raises(machine.LoadedMachineError, match="during the timed part"):
        with machine.watch_load(refuse=True, settle_s=0.01):
            pass
    with machine.watch_load(refuse=True, settle_s=0, prefix="peak_") as record:
        monkeypatch.setattr(machine.BusyWindow, "other_cores", lambda self: 0.1)
    assert record["peak_other_busy_cores_timed"] == 0.1 and "peak_other_busy_cores" not in record


def test_watch_load_without_proc_never_refuses(monkeypatch):
    monkeypatch.setattr(machine, "other_busy_cores", lambda seconds=1.0: None)
    monkeypatch.setattr(machine.BusyWindow, "start", classmethod(lambda cls: None))
    with machine.watch_load(refuse=True, settle_s=0.01) as record:
        pass
    assert record["other_busy_cores"] is None and record["other_busy_cores_timed"] is None
    assert machine.loaded_cores(record) is None and not machine.is_loaded(None)
