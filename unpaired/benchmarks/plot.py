"""A line chart as a PNG with PIL (already a dependency; matplotlib is not one)."""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

COLORS = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
          (140, 86, 75), (227, 119, 194), (127, 127, 127))


def line_chart(series: Mapping[str, Sequence[tuple[float, float]]], title: str = "",
               y_range: tuple[float, float] = (0.0, 1.0), size: tuple[int, int] = (640, 400)) -> np.ndarray:
    """An HWC uint8 chart: one polyline per named series of (x, y) points, with a legend."""
    w, h = size
    left, right, top, bottom = 56, 170, 28, 36
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    xs = [x for pts in series.values() for x, _ in pts] or [0.0, 1.0]
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x1 = x0 + 1.0
    y0, y1 = y_range

    def to_px(x: float, y: float) -> tuple[float, float]:
        px = left + (x - x0) / (x1 - x0) * (w - left - right)
        py = h - bottom - (min(max(y, y0), y1) - y0) / (y1 - y0) * (h - top - bottom)
        return px, py

    draw.rectangle([left, top, w - right, h - bottom], outline=(0, 0, 0))
    for i in range(6):  # y grid and labels
        y = y0 + (y1 - y0) * i / 5
        _, py = to_px(x0, y)
        draw.line([left, py, w - right, py], fill=(225, 225, 225))
        draw.text((6, py - 6), f"{y:.2f}", fill=(0, 0, 0))
    for i in range(5):  # x labels
        x = x0 + (x1 - x0) * i / 4
        px, _ = to_px(x, y0)
        draw.text((px - 12, h - bottom + 6), f"{x:.0f}", fill=(0, 0, 0))
    draw.text((left, 6), title, fill=(0, 0, 0))
    for k, (name, pts) in enumerate(series.items()):
        color = COLORS[k % len(COLORS)]
        points = [to_px(x, y) for x, y in sorted(pts) if math.isfinite(y)]
        if len(points) > 1:
            draw.line(points, fill=color, width=2)
        for px, py in points:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=color)
        ly = top + 4 + 16 * k
        draw.line([w - right + 8, ly + 6, w - right + 28, ly + 6], fill=color, width=3)
        draw.text((w - right + 32, ly), name[:22], fill=(0, 0, 0))
    return np.asarray(img)
