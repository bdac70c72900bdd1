"""unpaired.benchmarks.plot: matplotlib line charts of (step, value) series."""

import os
import sys

import numpy as np
import pytest
from PIL import Image

from unpaired.benchmarks import plot


def test_line_chart_writes_a_png_with_ticks_at_the_evaluated_steps_a_legend_and_titles(tmp_path):
    path = tmp_path / "accuracy.png"
    chart = plot.line_chart(
        {"cyclegan": [(500, 0.5), (250, 0.2), (750, 0.6), (1000, float("nan"))],
         "ufdn": [(250, 0.3), (500, 0.4), (750, 0.7), (1000, 0.8)]},
        "mnist2usps: target test accuracy vs step", "target test accuracy", str(path), ylim=(0, 1))
    assert chart.xticks == (250, 500, 750, 1000)  # the evaluated steps, not 250, 438, 625, 812
    assert chart.ylim == (0.0, 1.0) and chart.legend == ("cyclegan", "ufdn")
    assert (chart.title, chart.xlabel, chart.ylabel) == (
        "mnist2usps: target test accuracy vs step", "training step", "target test accuracy")
    assert sorted(os.listdir(tmp_path)) == ["accuracy.png"]  # no temporary file left
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size == (750, 420)
        pixels = np.asarray(img.convert("RGB")).reshape(-1, 3)
    for color in ((0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)):  # matplotlib's first two line colours
        assert (pixels == color).all(-1).sum() > 100, color


def test_without_ylim_the_axis_fits_the_values_and_an_empty_chart_still_writes(tmp_path):
    chart = plot.line_chart({"G": [(1, 12.0), (2, 9.5), (3, 8.0)]}, "losses", "loss",
                            str(tmp_path / "loss.png"))
    assert chart.xticks == (1, 2, 3) and chart.ylim[0] < 8.0 < 12.0 < chart.ylim[1]
    empty = plot.line_chart({}, "nothing yet", "accuracy", str(tmp_path / "empty.png"))
    assert empty.legend == () and os.path.getsize(tmp_path / "empty.png") > 1000


def test_many_evaluated_steps_label_every_kth_and_keep_the_last():
    assert plot.tick_steps([500, 250, 250, 750]) == [250, 500, 750]
    ticks = plot.tick_steps(range(0, 5001, 100))  # 51 evaluations
    assert len(ticks) <= plot.MAX_TICKS and ticks[-1] == 5000 and ticks[0] == 0
    assert set(np.diff(ticks)) == {500}
    mixed = plot.tick_steps(list(range(500, 3001, 500)) + list(range(1000, 20001, 1000)))
    assert len(mixed) <= plot.MAX_TICKS and mixed[-1] == 20000
    assert min(np.diff(mixed)) >= 19500 / (plot.MAX_TICKS - 1)  # no crowded labels at the start


def test_missing_matplotlib_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"^[^\n]*pip install 'unpaired\[bench\]'[^\n]*$"):
        plot.require_matplotlib()
