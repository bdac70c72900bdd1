"""Is anything else using the CPU? Read before a timed run, so a table can mark loaded rows.

The 1-minute load average cannot say it: it still counts the benchmark's own previous run for
a minute after it ends. `other_busy_cores` samples /proc/stat (all CPUs' busy time) and this
process's own time over a short window and returns the cores the rest of the machine kept busy.
"""

from __future__ import annotations

import os
import time

LOADED_CORES = 0.25  # other processes busier than a quarter core: the timing is an upper bound


def _busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat's first line."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def other_busy_cores(seconds: float = 1.0) -> float | None:
    """Cores kept busy by other processes over the next `seconds` (None where /proc is absent)."""
    if not os.path.exists("/proc/stat"):
        return None
    own0, (busy0, total0), t0 = time.process_time(), _busy_jiffies(), time.monotonic()
    time.sleep(seconds)
    own1, (busy1, total1), t1 = time.process_time(), _busy_jiffies(), time.monotonic()
    cores = os.cpu_count() or 1
    busy_cores = (busy1 - busy0) / max(total1 - total0, 1) * cores
    return max(0.0, busy_cores - (own1 - own0) / (t1 - t0))
