"""Host-side logging helpers: grids, pixel conversion, the progress line."""

import io

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


def test_progress_line_reports_rate_and_eta_and_metrics():
    stream = io.StringIO()
    bar = logs.ProgressBar(total=100, start=0, stream=stream)
    bar.update(50, {"G": 1.25, "D": 0.5})
    line = stream.getvalue()
    assert "50/100" in line and "50%" in line and "step/s" in line and "ETA" in line
    assert "G=1.25" in line and "D=0.5" in line
