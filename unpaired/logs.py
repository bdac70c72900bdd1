"""What a training run shows people: a progress bar (tqdm), scalar logs and image grids.

Scalars go to TensorBoard event files (tensorboardX, no TensorFlow needed) and to
`metrics.jsonl`; image grids go to TensorBoard and to PNG files under `samples/`.
Everything here runs on the host, on values already fetched from the device.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from typing import Callable, Mapping, Sequence, TextIO

import numpy as np
from PIL import Image
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

LINE_FORMAT = "step {n_fmt}/{total_fmt} {percentage:.0f}% [{elapsed}<{remaining}, {rate_noinv:.2f} step/s{postfix}]"


class ProgressBar:
    """tqdm's bar on a terminal; elsewhere (a log file, a pipe) plain lines, at most one every
    `line_every_s` seconds besides the first and the last, so logs stay short.

    Rates and ETAs count from `start`, the step a resumed run began at. While the bar is
    open on a terminal, log records (and prints, when stdout is a terminal too) are written
    above it instead of through it.
    """

    def __init__(self, total: int, start: int = 0, stream: TextIO | None = None,
                 line_every_s: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.total = max(total, 1)
        self.start = start
        self.stream = stream or sys.stderr
        self.interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.line_every_s = line_every_s
        self._clock = clock
        self._t0 = clock()
        self._step, self._metrics = start, {}
        self._printed: tuple[float, int] | None = None  # (time, step) of the last plain line
        self._redirect = contextlib.ExitStack()
        self._bar = None
        if self.interactive:
            self._bar = tqdm(total=self.total, initial=start, file=self.stream, unit="step",
                             dynamic_ncols=True)
            self._redirect.enter_context(logging_redirect_tqdm())
            if sys.stdout.isatty():
                above = _LinesAbove(self._bar, sys.stdout)
                self._redirect.enter_context(contextlib.redirect_stdout(above))
                self._redirect.callback(above.drain)

    def rate(self, step: int) -> float:
        """Steps per second since this bar started (resumed runs count from their start)."""
        elapsed = self._clock() - self._t0
        return (step - self.start) / elapsed if elapsed > 0 and step > self.start else 0.0

    def line(self, step: int, metrics: Mapping[str, float] | None = None) -> str:
        """The plain progress text for `step` completed steps, e.g.
        `step 120/750 16% [00:37<03:15, 3.20 step/s, G=2.31, D=0.41]`."""
        return tqdm.format_meter(step, self.total, self._clock() - self._t0, unit=" step",
                                 rate=self.rate(step), initial=self.start, bar_format=LINE_FORMAT,
                                 postfix=_postfix(metrics))

    def update(self, step: int, metrics: Mapping[str, float] | None = None) -> None:
        """Moves the bar to `step` (terminal), or prints a line if one is due (logs)."""
        self._step, self._metrics = step, dict(metrics or {})
        if self._bar is not None:
            self._bar.set_postfix_str(_postfix(metrics), refresh=False)
            self._bar.update(step - self._bar.n)
            return
        now = self._clock()
        if self._printed is None or step >= self.total or now - self._printed[0] >= self.line_every_s:
            self._print_line(now)

    def _print_line(self, now: float) -> None:
        self.stream.write(self.line(self._step, self._metrics) + "\n")
        self.stream.flush()
        self._printed = (now, self._step)

    def close(self) -> None:
        """Ends the bar (terminal) or prints the last step if its line is not out yet (logs)."""
        if self._bar is not None:
            self._bar.close()
            self._redirect.close()
        elif self._step > self.start and (self._printed is None or self._printed[1] != self._step):
            self._print_line(self._clock())


class _LinesAbove:
    """A stdout whose whole lines are written above a tqdm bar (the bar cleared, then redrawn).

    tqdm's own DummyTqdmFile clears only bars on the same stream, and the bar is on stderr."""

    def __init__(self, bar: tqdm, out: TextIO):
        self._bar, self._out, self._pending = bar, out, ""

    def write(self, text: str) -> int:
        done, newline, self._pending = (self._pending + text).rpartition("\n")
        if newline:
            self._bar.clear()
            self._out.write(done + newline)
            self._out.flush()
            self._bar.refresh()
        return len(text)

    def flush(self) -> None:
        self._out.flush()

    def drain(self) -> None:
        """Writes what is left of an unfinished line (when the bar closes)."""
        if self._pending:
            self._out.write(self._pending)
            self._out.flush()
            self._pending = ""

    def __getattr__(self, name: str):
        return getattr(self._out, name)


def _postfix(metrics: Mapping[str, float] | None) -> str:
    """`G=2.31, D=0.41`: tqdm's short number format."""
    return ", ".join(f"{k}={tqdm.format_num(v)}" for k, v in (metrics or {}).items())


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
