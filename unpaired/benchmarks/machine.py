"""The machine a benchmark runs on: is anything else using the CPU, and which CPU is it.

The 1-minute load average cannot say the first: it still counts the benchmark's own previous
run for a minute after it ends. `other_busy_cores` samples /proc/stat (all CPUs' busy time) and
this process's own time over a short window and returns the cores the rest of the machine kept
busy; `BusyWindow` does the same over a window of any length (the timed rounds themselves), and
`watch_load` refuses (`LoadedMachineError`) a run that other processes load. `describe_cpu`
names the CPU, its vector extensions and the threads each framework may use, for the record.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import platform
import time
from typing import Any, Iterator

LOADED_CORES = 0.25  # other processes busier than a quarter core: the timing is an upper bound
MIN_WINDOW_S = 1.0  # a shorter window is a few jiffies (10 ms ticks): too coarse to judge

# cpuinfo flags worth naming beside a CPU timing (x86 `flags`, Arm `Features`), in report
# order; a label is left out where a wider one it implies is present (AVX2 implies AVX).
VECTOR_EXTENSIONS: tuple[tuple[str, str], ...] = (
    ("avx", "AVX"), ("avx2", "AVX2"), ("avx512f", "AVX512F"), ("fma", "FMA"),
    ("avx512_bf16", "AVX512_BF16"), ("amx_tile", "AMX"),
    ("asimd", "NEON"), ("sve", "SVE"), ("sve2", "SVE2"),
)
_IMPLIED_BY = {"avx": "avx2", "avx2": "avx512f", "sve": "sve2"}


class LoadedMachineError(RuntimeError):
    """Other processes kept the CPU busy before or during a timing that needs an idle machine."""


def _busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat's first line."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


@dataclasses.dataclass(frozen=True)
class BusyWindow:
    """A start point of `other_cores`: all CPUs' jiffies, this process's CPU time, the clock."""

    own_s: float
    busy: int
    total: int
    wall_s: float

    @classmethod
    def start(cls) -> BusyWindow | None:
        """The window's start, None where /proc/stat is absent (macOS)."""
        if not os.path.exists("/proc/stat"):
            return None
        busy, total = _busy_jiffies()
        return cls(time.process_time(), busy, total, time.monotonic())

    def elapsed_s(self) -> float:
        """Wall seconds since `start`."""
        return time.monotonic() - self.wall_s

    def other_cores(self) -> float:
        """Cores kept busy by other processes since `start`."""
        own, (busy, total), wall = time.process_time(), _busy_jiffies(), time.monotonic()
        cores = os.cpu_count() or 1
        busy_cores = (busy - self.busy) / max(total - self.total, 1) * cores
        return max(0.0, busy_cores - (own - self.own_s) / max(wall - self.wall_s, 1e-9))


def other_busy_cores(seconds: float = 1.0) -> float | None:
    """Cores kept busy by other processes over the next `seconds` (None where /proc is absent)."""
    window = BusyWindow.start()
    if window is None:
        return None
    time.sleep(seconds)
    return window.other_cores()


def is_loaded(other_cores: float | None) -> bool:
    """Whether other processes' cores (None: unknown, taken as idle) exceed `LOADED_CORES`."""
    return other_cores is not None and other_cores > LOADED_CORES


def load_average_1m() -> float | None:
    """The 1-minute load average, None where the system has none."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def loaded_message(other_cores: float, when: str) -> str:
    """The refusal's text: how busy the others were, that timings need an idle machine, the flag."""
    return (f"other processes kept {other_cores:.2f} cores busy {when} (more than {LOADED_CORES}): "
            "timings need an idle machine; pass --allow_loaded to time anyway (the result is "
            "marked loaded)")


@contextlib.contextmanager
def watch_load(refuse: bool, settle_s: float = 1.0, prefix: str = "",
               what: str = "the timed part") -> Iterator[dict[str, Any]]:
    """Samples other processes' CPU use for `settle_s` before the block and over the block.

    Yields a dict filled with `<prefix>other_busy_cores` (before the block),
    `<prefix>load_avg_1m_before_timing` and, once the block is done,
    `<prefix>other_busy_cores_timed` (during it; None if it took under `MIN_WINDOW_S`); with
    `refuse`, raises `LoadedMachineError` before the block, or after it, when either sample is
    above `LOADED_CORES` (its message names `what` was timed). `settle_s=0` skips the sample
    before. Unknown (no /proc) never refuses.
    """
    record: dict[str, Any] = {f"{prefix}load_avg_1m_before_timing": load_average_1m()}
    if settle_s > 0:
        before = other_busy_cores(settle_s)
        record[f"{prefix}other_busy_cores"] = before
        if refuse and is_loaded(before):
            raise LoadedMachineError(loaded_message(before, f"right before {what}"))
    window = BusyWindow.start()
    yield record
    long_enough = window is not None and window.elapsed_s() >= MIN_WINDOW_S
    during = window.other_cores() if long_enough else None
    record[f"{prefix}other_busy_cores_timed"] = during
    if refuse and is_loaded(during):
        raise LoadedMachineError(loaded_message(during, f"during {what}"))


def loaded_cores(record: dict[str, Any]) -> float | None:
    """The largest of a record's `*other_busy_cores*` samples, None if it has none."""
    samples = [v for k, v in record.items() if "other_busy_cores" in k and isinstance(v, (int, float))]
    return max(samples) if samples else None


# --------------------------------------------------------------------------- which CPU


def read_cpuinfo() -> str:
    """/proc/cpuinfo's text, empty where it is absent."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _cpuinfo_field(cpuinfo: str, names: tuple[str, ...]) -> str | None:
    """The value of the first line whose key is one of `names` (the first CPU's)."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in names and value.strip():
            return value.strip()
    return None


def cpu_model(cpuinfo: str) -> str | None:
    """The CPU's model name from cpuinfo text, else `platform.processor()`, else None."""
    return _cpuinfo_field(cpuinfo, ("model name", "cpu model")) or platform.processor() or None


def vector_extensions(cpuinfo: str) -> str | None:
    """The named vector extensions in cpuinfo's flags, e.g. 'AVX2+FMA'; None if none is listed."""
    flags = set((_cpuinfo_field(cpuinfo, ("flags", "features")) or "").split())
    present = [(flag, label) for flag, label in VECTOR_EXTENSIONS if flag in flags]
    labels = [label for flag, label in present if _IMPLIED_BY.get(flag) not in flags]
    return "+".join(labels) or None


def usable_cpus() -> int:
    """How many CPUs this process may run on (its affinity mask; XLA:CPU sizes its pool by it)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def describe_cpu(cpuinfo: str | None = None) -> dict[str, Any]:
    """cpu_model, cpu_vector_ext and jax_threads (usable CPUs) for the record; reads /proc by default."""
    text = read_cpuinfo() if cpuinfo is None else cpuinfo
    return {"cpu_model": cpu_model(text), "cpu_vector_ext": vector_extensions(text),
            "jax_threads": usable_cpus()}
