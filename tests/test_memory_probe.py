"""unpaired.benchmarks.memory (launch/benchmark.py --mode=max_size): the size search on known memory
curves, XLA's analysis of a real step, and the command's errors."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from unpaired.benchmarks import memory as memory_probe
from unpaired.benchmarks.memory import StepMemory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _curve(base: int, per_pixel: float, cubic: float = 0.0):
    """A measure whose total is base + per_pixel * s**2 + cubic * s**3, and the sizes it was asked."""
    asked = []

    def measure(config, size):
        del config
        asked.append(size)
        return StepMemory(size, base, 0, 0, int(per_pixel * size ** 2 + cubic * size ** 3))
    return measure, asked


def test_predict_size_inverts_a_line_in_the_pixel_count():
    a = StepMemory(64, 1000, 0, 0, 2 * 64 ** 2)
    b = StepMemory(128, 1000, 0, 0, 2 * 128 ** 2)
    budget = 1000 + 2 * 300 ** 2  # exactly 300 pixels fit; the largest multiple of 32 below is 288
    assert memory_probe.predict_size(a, b, budget, 32) == 288
    assert memory_probe.predict_size(a, b, 999, 32) == 0
    with pytest.raises(ValueError, match="two different sizes"):
        memory_probe.predict_size(a, a, budget, 32)


def test_largest_size_on_a_line_compiles_four_sizes_and_is_exact():
    measure, asked = _curve(10_000, 3.0)
    budget = 10_000 + 3 * 700 ** 2
    found = memory_probe.largest_size(None, budget, multiple=64, measure=measure)
    assert found["size"] == 640 and found["memory"].total_bytes <= budget
    assert 10_000 + 3 * 704 ** 2 > budget  # 704 = 640 + 64 does not fit
    assert asked == [128, 256, 640, 704]


def test_largest_size_corrects_a_wrong_prediction_both_ways():
    # Memory growing faster than the line through the first two sizes: the guess is too big.
    measure, _ = _curve(0, 1.0, cubic=0.05)
    budget = 1.0 * 900 ** 2 + 0.05 * 900 ** 3
    found = memory_probe.largest_size(None, budget, multiple=32, measure=measure)
    true = max(s for s in range(32, 2000, 32) if s ** 2 + 0.05 * s ** 3 <= budget)
    assert found["size"] == true == 896
    # Nothing fits: size 0, no memory, and the probes that showed it.
    found = memory_probe.largest_size(None, 100, multiple=32, measure=_curve(1000, 1.0)[0])
    assert found["size"] == 0 and found["memory"] is None and found["probes"][0].size == 32


def test_step_memory_of_a_real_step_counts_the_donated_state_once():
    from configs import cyclegan

    config = cyclegan.get_config("digits")
    config.ngf = config.ndf = 2
    config.batch_size = 1
    m = memory_probe.step_memory(config, 32)
    from unpaired import methods

    built = methods.build(memory_probe.sized(config, 32), steps_per_epoch=1)
    state = jax.eval_shape(built.create_state, jax.random.PRNGKey(0))
    state_bytes = sum(int(np.prod(x.shape)) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(state))
    batch_bytes = 2 * 32 * 32 * 1 * 4  # A and B, one 1-channel float32 image each
    # The arguments are the state and the batch (XLA may drop a few bytes of unused scalars).
    assert abs(m.argument_bytes - (state_bytes + batch_bytes)) <= 64
    # The donated state is aliased by the new state: counted once, not twice.
    assert state_bytes - 64 <= m.alias_bytes <= state_bytes
    assert m.temp_bytes > 0 and m.total_bytes < m.argument_bytes + m.output_bytes + m.temp_bytes


def test_max_size_on_cpu_without_a_budget_names_the_flag():
    proc = subprocess.run(
        [sys.executable, "-m", "launch.benchmark", "--mode=max_size",
         "--config=configs/cyclegan.py:digits"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode != 0
    assert "--memory_gib" in proc.stderr and "Traceback" not in proc.stderr


def test_out_of_memory_is_told_apart_from_other_errors():
    assert memory_probe.is_out_of_memory(RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 3 bytes"))
    assert not memory_probe.is_out_of_memory(ValueError("DTN networks take 32 or 64-pixel images"))
