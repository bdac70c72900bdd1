"""Do the offline `digits` presets show their method? (`launch/demo_benchmark.py`, issue 23).

For each method, its built-in `digits` preset is trained as a user would (the README's
command, timed from the start of training to its end, compile included), then scored: a
digit classifier trained on the built-in TARGET rendering (`configs/classifier.py:digits`)
classifies the translations of every built-in SOURCE test digit (the DTN protocol), and the
collapse measure (`unpaired.eval.diversity`) says whether distinct inputs stay distinct.
DTN's preset is two runs (f, then g), both timed. Results go to a Markdown table with a
translation grid per method; each run's numbers are kept in `<output dir>/demos_runs/`.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import platform
import shutil
import time
from typing import Any

import ml_collections

from unpaired import logs
from unpaired.benchmarks import machine
from unpaired.data.locations import digit_rendering

# method: (config file, preset, source domain, target domain); domains as the preset names them.
DEMOS = {"cyclegan": ("cyclegan", "digits", "A", "B"),
         "unit": ("unit", "digits", "A", "B"),
         "ufdn": ("ufdn", "digits", "A", "B"),
         "dtn": ("dtn", "digits", "B", "A")}


@dataclasses.dataclass
class Settings:
    """The demo benchmark's knobs (flags of launch/demo_benchmark.py)."""

    methods: tuple[str, ...] = tuple(DEMOS)
    workroot: str = "workdirs/demo_benchmark"
    output: str = "docs/demos.md"
    overrides: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # tests: tiny widths


def _config(name: str, preset: str, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
    c = importlib.import_module(f"configs.{name}").get_config(preset)
    c.update_from_flattened_dict(overrides)
    return c


def _train(config: ml_collections.ConfigDict, workdir: str) -> float:
    """Trains `config` into `workdir`; returns the wall-clock seconds it took."""
    from unpaired import train  # pylint: disable=import-outside-toplevel

    start = time.perf_counter()
    train.train_and_evaluate(config, workdir)
    return time.perf_counter() - start


def judge(s: Settings, rendering: str) -> str:
    """The workdir of a classifier of the built-in `rendering` (trained unless there)."""
    workdir = os.path.join(s.workroot, f"classifier_{rendering}")
    if not os.path.exists(os.path.join(workdir, "accuracy.json")):
        c = _config("classifier", "digits", s.overrides.get("classifier", {}))
        c.data.digits = f"A={rendering}"
        _train(c, workdir)
    return workdir


def untranslated_accuracy(s: Settings, source: str, target: str) -> float:
    """The judge of the `target` rendering on the raw `source` test digits (the identity
    translation): what a demo's translation accuracy must beat to show any translation."""
    from unpaired.data.sets import load_set  # pylint: disable=import-outside-toplevel
    from unpaired.eval import classifier as judges, run  # pylint: disable=import-outside-toplevel

    workdir = judge(s, target)
    c = _config("classifier", "digits", s.overrides.get("classifier", {}))
    c.data.digits = f"A={source}"  # the judge's own preprocessing, the source's digits
    test = load_set(c.data, "A", "test", int(c.input_nc), True)
    return run.classified_accuracy(test.images, test.labels, judges.load_classifier(workdir), 256)


def _rendering(side: str) -> str:
    """'A (handwritten)' -> 'handwritten': a record's domain and rendering."""
    return side.split("(", 1)[1].rstrip(")")


def run_demo(s: Settings, method: str) -> dict[str, Any]:
    """Trains `method`'s digits preset as the README does, then scores its translations."""
    from unpaired.eval import report, run  # pylint: disable=import-outside-toplevel

    name, preset, src, tgt = DEMOS[method]
    config = _config(name, preset, s.overrides.get(method, {}))
    workdir = os.path.join(s.workroot, method)
    for old in (workdir, workdir + "_f"):  # afresh: a resumed run would time nothing
        shutil.rmtree(old, ignore_errors=True)
    others_busy = machine.other_busy_cores()
    seconds = 0.0
    if method == "dtn":  # stage 1 (f on the labelled source) is part of the demo's cost
        f_config = _config(name, "digits_pretrain", s.overrides.get(method, {}))
        f_dir = workdir + "_f"
        seconds += _train(f_config, f_dir)
        config.init_from = f_dir
    seconds += _train(config, workdir)
    classifier = judge(s, digit_rendering(config.data, tgt))
    model = report.load_model(workdir)
    model.config.eval.classifiers = f"{tgt}={classifier}"
    model.config.eval.test_size = 0
    data = run.load_eval_data(model.method, model.config)
    metrics = run.evaluate(model.method, model.state, model.config, data)
    request = next(q for a, b, q in data.directions if (a, b) == (src, tgt))
    x = data.test[src].images[:8]
    grid = logs.image_grid([x, run.translated(model.method, model.state, data, request, x)])
    with open(os.path.join(classifier, "accuracy.json"), encoding="utf-8") as f:
        judge_accuracy = json.load(f)["accuracy"]
    return {"method": method, "preset": f"configs/{name}.py:{preset}", "steps": int(model.state.step),
            "seconds": round(seconds, 1), "others_busy": None if others_busy is None else round(others_busy, 2),
            "source": f"{src} ({digit_rendering(config.data, src)})",
            "target": f"{tgt} ({digit_rendering(config.data, tgt)})",
            "translation_accuracy": metrics[f"translation_accuracy/{src}_to_{tgt}"],
            "untranslated_accuracy": untranslated_accuracy(s, digit_rendering(config.data, src),
                                                           digit_rendering(config.data, tgt)),
            "diversity": metrics[f"diversity/{src}_to_{tgt}"], "judge_accuracy": judge_accuracy,
            "test_images": len(data.test[src].images), "grid": grid}


def _cores(r: dict[str, Any]) -> str:
    value = r.get("others_busy")
    return "?" if value is None else f"{value:.2f}"


def write_table(s: Settings, results: list[dict[str, Any]]) -> str:
    """The Markdown page: one row per method, its translation grid below."""
    lines = ["# The offline demos: do the `digits` presets show their method?", "",
             "Made by `python -m launch.demo_benchmark`. Each preset trained as the README runs "
             "it (one seed, the preset's own seed), timed from start to end (compile included; "
             "DTN: both stages), on " + f"{platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} cores. Translation accuracy: every built-in source test digit "
             "translated, classified by a classifier of the built-in target rendering "
             "(`configs/classifier.py:digits`), against the source labels. Diversity: the "
             "collapse measure (0: every input gives one image; 1: as spread as the inputs). "
             "Untranslated: the same judge reading the source test digits as they are (the "
             "identity translation); a translation accuracy near it shows no translation that "
             "keeps the class.", "",
             "| method | preset | source -> target | steps | wall (s) | others' cores | translation acc. "
             "| untranslated | diversity | judge's own test acc. |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        identity = r.get("untranslated_accuracy")
        lines.append(f"| {r['method']} | `{r['preset']}` | {r['source']} -> {r['target']} | {r['steps']} | "
                     f"{r['seconds']:.0f} | {_cores(r)} | {r['translation_accuracy']:.3f} "
                     f"({r['test_images']} digits) | {'—' if identity is None else f'{identity:.3f}'} | "
                     f"{r['diversity']:.3f} | {r['judge_accuracy']:.3f} |")
    lines += ["", "Others' cores: how many cores other processes kept busy when the run started "
              "(`unpaired.benchmarks.machine`); above 0.25 the wall time is an upper bound.", "",
              "Left: the first 8 source test digits; right: their translations."]
    for r in results:
        lines += ["", f"![{r['method']}](demos_figures/{r['method']}.png)"]
    text = "\n".join(lines) + "\n"
    with open(s.output, "w", encoding="utf-8") as f:
        f.write(text)
    return text


def run_benchmark(s: Settings) -> list[dict[str, Any]]:
    """Every asked demo, trained afresh, scored, written to `output` with its grids and records."""
    unknown = [m for m in s.methods if m not in DEMOS]
    if unknown:
        raise ValueError(f"--methods: unknown {unknown}; available: {', '.join(DEMOS)}")
    folder = os.path.dirname(os.path.abspath(s.output))
    os.makedirs(os.path.join(folder, "demos_figures"), exist_ok=True)
    os.makedirs(os.path.join(folder, "demos_runs"), exist_ok=True)
    results = []
    for method in s.methods:
        kept = os.path.join(folder, "demos_runs", f"{method}.json")
        r = run_demo(s, method)
        logs.save_png(r.pop("grid"), os.path.join(folder, "demos_figures", f"{method}.png"))
        with open(kept, "w", encoding="utf-8") as f:
            json.dump(r, f, indent=2)
        results.append(r)
    # Rows of methods not rerun this time come from their kept records.
    for method in DEMOS:
        kept = os.path.join(folder, "demos_runs", f"{method}.json")
        if method not in s.methods and os.path.exists(kept):
            with open(kept, encoding="utf-8") as f:
                r = json.load(f)
            if "untranslated_accuracy" not in r:  # older records: judged now
                r["untranslated_accuracy"] = untranslated_accuracy(s, _rendering(r["source"]),
                                                                   _rendering(r["target"]))
                with open(kept, "w", encoding="utf-8") as f:
                    json.dump(r, f, indent=2)
            results.append(r)
    results.sort(key=lambda r: list(DEMOS).index(r["method"]))
    write_table(s, results)
    return results
