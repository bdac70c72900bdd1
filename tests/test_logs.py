"""Host-side logging helpers: grids, pixel conversion, the progress bar (tqdm on a terminal, plain lines in logs)."""

import io
import sys

import numpy as np

from unpaired import logs


def test_to_uint8_truncates_like_tensor2im_and_tiles_gray_to_rgb():
    x = np.array([-1.0, 0.0, 0.999, 1.0, np.nan], np.float32).reshape(1, 1, 5, 1)
    out = logs.to_uint8(x)
    assert out.shape == (1, 1, 5, 3)
    np.testing.assert_array_equal(out[0, 0, :, 0], [0, 127, 254, 255, 0])


def test_image_grid_places_columns_and_rows_and_enlarges_small_tiles():
    a = -np.ones((2, 8, 8, 1), np.float32)
    b = np.ones((2, 8, 8, 3), np.float32)
    grid = logs.image_grid([a, b], pad=2, min_side=16)
    assert grid.shape == (2 * (16 + 2) + 2, 2 * (16 + 2) + 2, 3)
    assert (grid[2:18, 2:18] == 0).all() and (grid[2:18, 20:36] == 255).all()


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_log_lines_count_rate_and_eta_from_the_resumed_step_and_show_the_metrics():
    clock, stream = Clock(), io.StringIO()
    bar = logs.ProgressBar(total=100, start=40, stream=stream, clock=clock)
    clock.now += 10.0
    bar.update(60, {"G": 1.25, "D": 0.5})
    # 20 steps in 10 s since the resume (not 60 in 10): 2 steps/s, 40 steps left: 20 s.
    assert bar.rate(60) == 2.0
    assert stream.getvalue() == "step 60/100 60% [00:10<00:20, 2.00 step/s, G=1.25, D=0.5]\n"
    clock.now += 70.0  # slower than a step a second: still steps per second, not seconds per step
    bar.update(80)
    assert stream.getvalue().splitlines()[-1] == "step 80/100 80% [01:20<00:40, 0.50 step/s]"


def test_log_lines_are_rate_limited_but_the_first_and_last_always_print():
    clock, stream = Clock(), io.StringIO()
    bar = logs.ProgressBar(total=100, stream=stream, line_every_s=30.0, clock=clock)
    for step in range(10, 101, 10):  # one update every 10 s
        clock.now += 10.0
        bar.update(step, {"G": 1.0})
    bar.close()
    lines = stream.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["10/100", "40/100", "70/100", "100/100"]
    assert "\r" not in stream.getvalue()


def test_close_prints_the_step_a_run_stopped_at_once():
    clock, stream = Clock(), io.StringIO()
    bar = logs.ProgressBar(total=100, stream=stream, clock=clock)
    bar.update(10)
    clock.now += 1.0
    bar.update(20)  # within the interval: not printed yet
    bar.close()
    assert [line.split()[1] for line in stream.getvalue().splitlines()] == ["10/100", "20/100"]
    empty = io.StringIO()
    logs.ProgressBar(total=100, stream=empty, clock=clock).close()  # nothing ran: nothing to say
    assert empty.getvalue() == ""


def test_terminal_gets_a_redrawn_tqdm_bar_with_the_metrics():
    stream = Terminal()
    bar = logs.ProgressBar(total=100, start=0, stream=stream)
    bar.update(50, {"G": 1.25, "D": 0.5})
    bar.close()
    text = stream.getvalue()
    assert "\r" in text and text.endswith("\n") and text.count("\n") == 1
    last = text.rstrip("\n").split("\r")[-1]
    assert "50/100" in last and "50%" in last and "step/s" in last and "G=1.25, D=0.5" in last


def test_prints_during_a_terminal_bar_come_out_whole_and_stdout_is_restored(monkeypatch):
    out = Terminal()
    monkeypatch.setattr(sys, "stdout", out)
    bar = logs.ProgressBar(total=10, stream=Terminal())
    bar.update(5)
    print("eval step 5: accuracy=0.5")
    print("unfinished", end="")
    bar.close()
    assert out.getvalue() == "eval step 5: accuracy=0.5\nunfinished" and sys.stdout is out
