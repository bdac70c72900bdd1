"""Where a step's time goes: per-op device time from a `jax.profiler` trace (E2 of performance.md).

`launch/benchmark.py --profile_dir=DIR` traces a few JAX steps (and each torch mode under
`torch.profiler`) after the timed rounds. `summarize(xplane_path, steps)` reads the JAX
trace with `jax.profiler.ProfileData` (no TensorBoard needed, so a trace brought back from
a GPU machine can be read on any CPU box): the ops on each device's "XLA Ops" line (on a
CPU-only trace, the XLA thread pools' events), their time per step, and a coarse category
per op, so that convolutions, reductions (InstanceNorm), pads and layout copies can be
weighed against each other. `python -m unpaired.benchmarks.profile_summary TRACE.xplane.pb STEPS`
prints the same summary.
"""

from __future__ import annotations

import collections
import glob
import json
import os
import sys
from typing import Any

# Host-side bookkeeping events of the CPU runtime, not computation.
_CPU_NOISE = ("ThreadpoolListener", "ThunkExecutor", "end: ")
CATEGORIES = ("convolution", "reduce", "pad/concat", "layout (copy/transpose)", "elementwise fusion",
              "collective", "other")


def category(name: str, long_name: str = "") -> str:
    """A coarse kind for an XLA op, from its name and (if known) its HLO text."""
    text = f"{name} {long_name}".lower()
    # ynn_fusion: XLA:CPU's YNNPACK call, the matmul that most convs and dots lower to.
    if any(k in text for k in ("conv", "cudnn", "gemm", "dot", "ynn_fusion")):
        return "convolution"
    if any(k in text for k in ("all-reduce", "all-gather", "reduce-scatter", "collective")):
        return "collective"
    if "reduce" in text:
        return "reduce"
    if "pad" in text or "concatenate" in text:
        return "pad/concat"
    if "transpose" in text or "copy" in text:
        return "layout (copy/transpose)"
    if "fusion" in text:
        return "elementwise fusion"
    return "other"


def _stats(event: Any) -> dict[str, Any]:
    try:
        return {str(k): v for k, v in event.stats}
    except Exception:  # noqa: BLE001 - stats are optional in the trace format
        return {}


def _op_events(data: Any) -> tuple[str, list[Any]]:
    """(where the ops came from, their events): device "XLA Ops" lines, else the CPU XLA threads."""
    planes = [p for p in data.planes if p.name.startswith("/device:")]
    for wanted in (lambda name: name == "XLA Ops", lambda name: name.startswith("Stream")):
        device = [(plane, line) for plane in planes for line in plane.lines if wanted(line.name)]
        if device:  # the HLO ops, else the raw kernels on the device's streams
            where = ", ".join(sorted({f"{p.name} {l.name.split('(')[0].strip()}" for p, l in device}))
            return where, [e for _, l in device for e in l.events]
    cpu = [(plane, line) for plane in data.planes if plane.name.startswith("/host:CPU")
           for line in plane.lines if line.name.startswith("tf_XLA")]
    events = [e for _, l in cpu for e in l.events
              if e.duration_ns > 0 and not e.name.startswith(_CPU_NOISE)]
    return "host CPU XLA threads", events


def summarize(xplane_path: str, steps: int, top: int = 25) -> dict[str, Any]:
    """Per-step op time of a trace of `steps` steps: totals by category and the `top` ops."""
    import jax  # pylint: disable=import-outside-toplevel

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    data = jax.profiler.ProfileData.from_file(xplane_path)
    source, events = _op_events(data)
    by_name: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0, ""])
    for event in events:
        entry = by_name[event.name]
        entry[0] += event.duration_ns
        entry[1] += 1
        if not entry[2]:
            stats = _stats(event)
            entry[2] = str(stats.get("long_name") or stats.get("hlo_op") or stats.get("tf_op") or "")
    by_category = {c: 0.0 for c in CATEGORIES}
    rows = []
    for name, (ns, count, long_name) in by_name.items():
        kind = category(name, long_name)
        by_category[kind] += ns / 1e6 / steps
        rows.append({"op": name, "ms_per_step": ns / 1e6 / steps, "calls_per_step": count / steps,
                     "category": kind, "hlo": long_name[:200]})
    rows.sort(key=lambda r: -r["ms_per_step"])
    total = sum(by_category.values())
    return {"trace": xplane_path, "source": source, "steps": steps, "op_ms_per_step": total,
            "ms_per_step_by_category": {k: v for k, v in by_category.items() if v > 0},
            "distinct_ops": len(rows), "top": rows[:top]}


def find_trace(directory: str) -> str:
    """The newest *.xplane.pb under `directory` (jax.profiler.trace writes plugins/profile/<time>/)."""
    found = sorted(glob.glob(os.path.join(directory, "**", "*.xplane.pb"), recursive=True),
                   key=os.path.getmtime)
    if not found:
        raise FileNotFoundError(f"no *.xplane.pb under {directory!r}")
    return found[-1]


def format_summary(summary: dict[str, Any]) -> str:
    """A short text table: the categories, then the top ops."""
    lines = [f"op time per step: {summary['op_ms_per_step']:.3f} ms over {summary['distinct_ops']} ops "
             f"({summary['source']}; {summary['steps']} traced steps)"]
    for kind, ms in sorted(summary["ms_per_step_by_category"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {kind:<26} {ms:9.3f} ms  {100 * ms / max(summary['op_ms_per_step'], 1e-12):5.1f}%")
    for row in summary["top"]:
        lines.append(f"  {row['ms_per_step']:9.3f} ms  x{row['calls_per_step']:<5.3g} {row['category']:<24} "
                     f"{row['op']}")
    return "\n".join(lines)


def write(summary: dict[str, Any], directory: str, name: str = "jax_ops") -> list[str]:
    """`<name>.json` and `<name>.txt` in `directory`; returns their paths."""
    json_path, text_path = (os.path.join(directory, f"{name}.{ext}") for ext in ("json", "txt"))
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
    with open(text_path, "w", encoding="utf-8") as f:
        f.write(format_summary(summary) + "\n")
    return [json_path, text_path]


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python -m unpaired.benchmarks.profile_summary TRACE.xplane.pb|DIR STEPS")
    path = sys.argv[1] if sys.argv[1].endswith(".pb") else find_trace(sys.argv[1])
    print(format_summary(summarize(path, int(sys.argv[2]))))
