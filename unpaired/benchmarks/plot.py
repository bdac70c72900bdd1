"""Line charts of (step, value) series as PNG files, drawn with matplotlib (the `bench` extra).

`line_chart` draws any named series of (step, value) points: accuracy curves, loss terms,
a diversity measure. matplotlib is imported only when a chart is drawn, through its
object-oriented `Figure` (the Agg renderer, no pyplot state, no display needed).
"""

from __future__ import annotations

import dataclasses
import math
import os
import textwrap
from typing import Mapping, Sequence

INSTALL_HINT = ("the benchmark figures need matplotlib, which is not installed: "
                "pip install 'unpaired[bench]' (or pip install matplotlib)")
MAX_TICKS = 12  # more evaluated steps than this: every k-th is labelled, so labels never overlap


@dataclasses.dataclass(frozen=True)
class Chart:
    """What a written chart shows, read back from its axes: for callers and tests."""

    path: str
    xticks: tuple[float, ...]
    ylim: tuple[float, float]
    legend: tuple[str, ...]
    title: str
    xlabel: str
    ylabel: str


def require_matplotlib() -> None:
    """Raises ImportError with `INSTALL_HINT` when matplotlib is missing (check before a long run)."""
    try:
        import matplotlib  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err


def tick_steps(steps: Sequence[float], max_ticks: int = MAX_TICKS) -> list[float]:
    """The evaluated steps, sorted and distinct; every k-th (the last kept) when there are
    more than `max_ticks`. Where runs evaluated at different intervals share a chart (500
    and 1,000), ticks are instead kept at least a `max_ticks`-th of the range apart, from
    the last one back, so the dense early steps do not crowd their labels."""
    steps = sorted(set(steps))
    if len(steps) <= max_ticks:
        return steps
    if len({round(b - a, 9) for a, b in zip(steps, steps[1:])}) > 1:
        gap = (steps[-1] - steps[0]) / (max_ticks - 1)
        kept = [steps[-1]]
        for step in reversed(steps[:-1]):
            if kept[-1] - step >= gap:
                kept.append(step)
        return kept[::-1]
    stride = max(1, math.ceil(len(steps) / max_ticks))
    return steps[::-1][::stride][::-1]


def line_chart(series: Mapping[str, Sequence[tuple[float, float]]], title: str, ylabel: str,
               path: str, ylim: tuple[float, float] | None = None, xlabel: str = "training step",
               size: tuple[float, float] = (7.5, 4.2), dpi: int = 100) -> Chart:
    """Writes a PNG at `path`: one line with markers per named series of (step, value) points
    (non-finite values skipped), x ticks at the evaluated steps, a legend beside the axes."""
    require_matplotlib()
    from matplotlib.figure import Figure  # pylint: disable=import-outside-toplevel

    fig = Figure(figsize=size, dpi=dpi, layout="constrained")
    ax = fig.subplots()
    for name, points in series.items():
        kept = sorted((x, y) for x, y in points if math.isfinite(y))
        ax.plot([x for x, _ in kept], [y for _, y in kept], marker="o", markersize=4,
                linewidth=1.5, label=name)
    steps = [x for points in series.values() for x, _ in points]
    if steps:
        ax.set_xticks(tick_steps(steps))
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.suptitle("\n".join(textwrap.wrap(title, 70)))
    ax.grid(True, alpha=0.3)
    legend = ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0)) if series else None
    chart = Chart(path=path, xticks=tuple(float(t) for t in ax.get_xticks()),
                  ylim=tuple(float(v) for v in ax.get_ylim()),
                  legend=tuple(t.get_text() for t in legend.get_texts()) if legend else (),
                  title=fig.get_suptitle(), xlabel=ax.get_xlabel(), ylabel=ax.get_ylabel())
    tmp = f"{path}.tmp"  # a reader never sees half a file
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return chart
