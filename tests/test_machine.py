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
