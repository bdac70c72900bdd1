"""What a training run shows people: a progress line, scalar logs and image grids.

Scalars go to TensorBoard event files (tensorboardX, no TensorFlow needed) and to
`metrics.jsonl`; image grids go to TensorBoard and to PNG files under `samples/`.
Everything here runs on the host, on values already fetched from the device.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Mapping, Sequence, TextIO

import numpy as np
from PIL import Image


def _format_duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class ProgressBar:
    """`[#####.....] 120/750 16% 3.2 step/s ETA 3m15s G=2.31 D=0.41` on a terminal, log lines otherwise."""

    def __init__(self, total: int, start: int = 0, stream: TextIO | None = None, width: int = 24):
        self.total = max(total, 1)
        self.start = start
        self.width = width
        self.stream = stream or sys.stderr
        self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._t0 = time.perf_counter()
        self._last_line = ""

    def rate(self, step: int) -> float:
        """Steps per second since this bar started (resumed runs count from their start)."""
        elapsed = time.perf_counter() - self._t0
        return (step - self.start) / elapsed if elapsed > 0 and step > self.start else 0.0

    def line(self, step: int, metrics: Mapping[str, float] | None = None) -> str:
        """The progress text for `step` completed steps."""
        fraction = min(step / self.total, 1.0)
        filled = int(round(self.width * fraction))
        rate = self.rate(step)
        eta = (self.total - step) / rate if rate > 0 else float("inf")
        text = (f"[{'#' * filled}{'.' * (self.width - filled)}] {step}/{self.total} "
                f"{100 * fraction:.0f}% {rate:.2f} step/s ETA {_format_duration(eta)}")
        if metrics:
            text += " " + " ".join(f"{k}={v:.3g}" for k, v in metrics.items())
        return text

    def update(self, step: int, metrics: Mapping[str, float] | None = None) -> None:
        """Redraws the bar (terminal) or prints one line (logs)."""
        self._last_line = self.line(step, metrics)
        if self.interactive:
            self.stream.write("\r" + self._last_line)
        else:
            self.stream.write(self._last_line + "\n")
        self.stream.flush()

    def close(self) -> None:
        """Ends the terminal line."""
        if self.interactive and self._last_line:
            self.stream.write("\n")
            self.stream.flush()


class MetricWriter:
    """Scalars and images to TensorBoard events (workdir/tensorboard) and metrics.jsonl."""

    def __init__(self, workdir: str):
        from tensorboardX import SummaryWriter  # imported here: only the trainer needs it

        self.workdir = workdir
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", encoding="utf-8")

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        """Writes one row of scalars for `step`."""
        for name, value in values.items():
            self._tb.add_scalar(name, float(value), step)
        self._jsonl.write(json.dumps({"step": step, **{k: float(v) for k, v in values.items()}}) + "\n")
        self._jsonl.flush()

    def image(self, step: int, name: str, image: np.ndarray) -> None:
        """Writes an HWC uint8 image."""
        self._tb.add_image(name, image, step, dataformats="HWC")

    def close(self) -> None:
        """Flushes and closes both files."""
        self._tb.close()
        self._jsonl.close()


def to_uint8(images: np.ndarray) -> np.ndarray:
    """[-1, 1] float NHWC -> uint8 NHWC with 3 channels, like the reference's tensor2im."""
    images = np.nan_to_num(np.asarray(images, np.float32), nan=-1.0)
    pixels = ((np.clip(images, -1.0, 1.0) + 1.0) / 2.0 * 255.0).astype(np.uint8)
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    return pixels


def image_grid(columns: Sequence[np.ndarray], pad: int = 2, min_side: int = 64) -> np.ndarray:
    """One uint8 HWC image: a column per entry of `columns` (each NHWC), a row per sample.

    Tiles smaller than `min_side` are enlarged by pixel repetition so digits stay legible.
    """
    tiles = [to_uint8(c) for c in columns]
    factor = max(1, -(-min_side // max(tiles[0].shape[1:3])))
    if factor > 1:
        tiles = [t.repeat(factor, axis=1).repeat(factor, axis=2) for t in tiles]
    n, h, w, _ = tiles[0].shape
    grid = np.full((n * (h + pad) + pad, len(tiles) * (w + pad) + pad, 3), 255, np.uint8)
    for col, tile in enumerate(tiles):
        for row in range(n):
            y, x = pad + row * (h + pad), pad + col * (w + pad)
            grid[y:y + h, x:x + w] = tile[row]
    return grid


def save_png(image: np.ndarray, path: str) -> None:
    """Writes an HWC uint8 image as PNG, via a temporary file so a reader never sees half of it."""
    tmp = f"{path}.tmp"
    Image.fromarray(image).save(tmp, format="PNG")
    os.replace(tmp, path)
