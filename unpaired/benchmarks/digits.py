"""MNIST <-> USPS for every available method, beside the papers' numbers (`launch/digits_benchmark.py`).

Protocol, per direction (source -> target) and seed:
1. a digit classifier per domain (`configs/classifier.py`, dtn_pretrain's f) trained on that
   domain's labelled training images minus its `holdout`: the judge of translations into
   the domain, and DTN's f when the domain is DTN's source (one f per source, shared by
   the seeds);
2. the method trained `steps` steps on the source and target training images, minus
   `holdout` per domain, evaluated every `eval_every` steps (the curves: the first
   `curve_test_size` test images); the checkpoint kept is the best by the source held-out
   accuracy (no target label is read to select);
3. that checkpoint's translation accuracy (source test set translated, classified by the
   target classifier), its own DA accuracy where it has its own classifier
   (`digit_accuracy`: UNIT DA's head on the shared D trunk, UFDN's on the shared latent),
   and the pixel-level DA accuracy (a fresh classifier trained on the translated labelled
   source training images, tested on the real target test set).
Runs live under `workroot`; a finished run (its result.json) is reused, so the command resumes.
Each finished run's small files are also kept beside the table (`record_dir`: result.json,
metrics.jsonl, config.json), so `--report_only` rebuilds the table and curves without the runs.
"""

from __future__ import annotations

import ast
import dataclasses
import gzip
import importlib
import json
import os
import re
import time
from typing import Any

import ml_collections
import numpy as np

from unpaired import logs
from unpaired.data import cache
from unpaired.data.config import data_config
from unpaired.benchmarks import machine, plot

DIRECTIONS = {"mnist2usps": ("mnist", "usps"), "usps2mnist": ("usps", "mnist")}
METHODS = ("cyclegan", "unit", "unit_da", "ufdn", "dtn")
NETWORKS = ("preset", "small", "cpu")  # the presets' widths, narrower ones, or the CPU presets
# --networks=cpu: each method's CPU preset in its config file, taken whole (widths, learning
# rate, batch, schedule and max_steps chosen to learn in one run of at most 20 minutes on a
# 2-core CPU; each preset lists its deviations from the reference). {direction} is filled in.
CPU_PRESETS = {"ufdn": ("ufdn", "uda_cpu"), "unit_da": ("unit", "{direction}_cpu"),
               "dtn": ("dtn", "{direction}_cpu"), "cyclegan": ("cyclegan", "{direction}_cpu"),
               "unit": ("unit", "{direction}_master_cpu")}
# Reported DA accuracy (MNIST->USPS, USPS->MNIST), from the issue text: CoGAN (Liu & Tuzel
# 2016), UNIT (Liu et al. 2017, Table 2: its DA model, our unit_da), UFDN (Liu et al. 2018,
# Table 3; USPS->MNIST 0.93-0.94).
PAPERS = {"cogan": {"mnist2usps": "0.957", "usps2mnist": "0.932"},
          "unit_da": {"mnist2usps": "0.960", "usps2mnist": "0.936"},
          "ufdn": {"mnist2usps": "0.971", "usps2mnist": "0.93-0.94"},
          "cyclegan": {}, "unit": {}, "dtn": {}}
LATENT_DA = ("unit_da", "ufdn")  # methods with their own classifier (digit_accuracy): select on it
TINY_PIXEL_DA = (2, 8)  # --tiny: the pixel-level DA classifier's width and batch
# Metrics a method's digit procedure does not train: UFDN's `uda` procedure (train_uda.py)
# never trains its decoder to translate (no pixel adversary, no translation loss), so its
# translations, and a classifier trained on them, measure nothing. Shown as "n/t".
NOT_TRAINED = {"ufdn": ("translation_accuracy", "pixel_da_accuracy", "diversity",
                        "diversity_within_class")}


@dataclasses.dataclass
class Settings:
    """The benchmark's knobs (every one a flag of launch/digits_benchmark.py)."""

    data_root: str = dataclasses.field(default_factory=cache.data_root)  # $UNPAIRED_DATA or ~/.cache/unpaired
    workroot: str = "workdirs/digits_benchmark"
    output: str = "docs/results.md"
    methods: tuple[str, ...] = METHODS
    directions: tuple[str, ...] = tuple(DIRECTIONS)
    seeds: int = 3
    steps: int = 10000
    method_steps: str = ""  # "cyclegan=600,...": a method's own training length (else `steps`)
    classifier_steps: int = 0  # 0: the classifier preset's epochs (configs/classifier.py)
    eval_every: int = 1000
    holdout: int = 500
    test_size: int = 0  # the final numbers: 0 = whole test sets
    curve_test_size: int = 2000  # the evaluations during training (curves): first N test images
    pixel_da_steps: int = 3000
    pixel_da_size: int = 0
    networks: str = "preset"
    report_only: bool = False  # write the table from the finished runs; train nothing
    tiny: bool = False  # tiny widths: for the test suite only
    overrides: str = ""  # "key=value,...": a diagnostic change to every run's config (its own runs)


def image_count(path: str) -> int | None:
    """The image count in a gzip IDX file's header (None if unreadable): which MNIST a run used."""
    try:
        with gzip.open(path) as f:
            head = f.read(8)
    except (OSError, EOFError):
        return None
    return int.from_bytes(head[4:8], "big") if len(head) == 8 else None


def _mnist_train_phrase(s: Settings) -> str:
    """The protocol's words for the MNIST training set the runs read."""
    n = image_count(cache.digits_train_images("mnist", s.data_root))
    if n == 60000:
        return "all 60,000 (as the papers; some sample 2,000)"
    if n:
        return f"our **{n:,}-image subset** (the papers use all 60,000, or 2,000 sampled)"
    return "the data root's (the papers use all 60,000, or 2,000 sampled)"


def _load_config(name: str, preset: str) -> ml_collections.ConfigDict:
    return importlib.import_module(f"configs.{name}").get_config(preset)


def _digits_data(s: Settings, a: str, b: str) -> ml_collections.ConfigDict:
    """IDX data: domain A = `a`, B = `b`, 32x32, unflipped, `holdout` held out."""
    d = data_config("idx", preprocess="none", image_size=32, load_size=32, crop_size=32,
                    no_flip=True, num_workers=2, holdout=s.holdout)
    d.idx_A, d.idx_B = (cache.digits_train_images(x, s.data_root) for x in (a, b))
    return d


def rescale_schedules(c: ml_collections.ConfigDict, steps: int) -> None:
    """Stretches the schedules counted in steps to a run of `steps` instead of the preset's
    max_steps: UNIT's StepLR step_size and UFDN's loss-weight ramps. Without it a preset made
    for 300 steps, run for 1,000, halves its learning rate five times (issue 23). Schedules
    counted in epochs (CycleGAN, DTN) are left as they are."""
    base = int(c.get("max_steps", -1))
    if base <= 0 or steps == base:
        return
    ratio = steps / base
    if c.get("lr_policy") == "step" and "step_size" in c:
        c.step_size = max(1, round(c.step_size * ratio))
    if "lambdas" in c:
        for name, (init, final, length) in c.lambdas.items():
            if length > 1:
                c.lambdas[name] = (init, final, max(1, round(length * ratio)))


def _run_keys(c: ml_collections.ConfigDict, s: Settings, seed: int, steps: int) -> None:
    rescale_schedules(c, steps)
    c.seed = seed
    c.max_steps = steps
    c.log_every = max(1, min(100, steps))
    c.sample_every = max(1, steps)
    c.checkpoint_every = max(1, min(s.eval_every, steps))
    c.keep_checkpoints = 1
    c.eval_every = s.eval_every
    c.eval.test_size = _curve_size(s)
    c.eval.pixel_da_size = s.pixel_da_size
    if s.tiny:
        c.eval.batch_size = 16
        c.eval.pixel_da_nf, c.eval.pixel_da_batch = TINY_PIXEL_DA


def _preset(s: Settings, method: str, direction: str, default: str) -> str:
    """The preset `method` starts from: its CPU preset with --networks=cpu, else `default`."""
    if s.networks != "cpu":
        return default
    if method not in CPU_PRESETS:
        raise ValueError(f"--networks=cpu: {method} has no CPU preset yet; methods with one: "
                         f"{', '.join(CPU_PRESETS)}")
    return CPU_PRESETS[method][1].format(direction=direction)


def steps_of(s: Settings, method: str) -> int:
    """The training length of `method`: its --method_steps entry, else (--networks=cpu) its CPU
    preset's max_steps, else --steps."""
    table = {}
    for part in filter(None, (p.strip() for p in s.method_steps.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name.strip() not in METHODS or not value.strip().isdigit() or int(value) < 1:
            raise ValueError(f"--method_steps={s.method_steps!r}: expected method=steps entries "
                             f"(methods {', '.join(METHODS)}, steps >= 1); bad entry {part!r}")
        table[name.strip()] = int(value)
    if method not in table and s.networks == "cpu" and method in CPU_PRESETS:
        name, preset = CPU_PRESETS[method]
        return int(_load_config(name, preset.format(direction="mnist2usps")).max_steps)
    return table.get(method, s.steps)


def _curve_size(s: Settings) -> int:
    """Test images per evaluation during training: the first curve_test_size (never more than test_size)."""
    sizes = [n for n in (s.test_size, s.curve_test_size) if n > 0]
    return min(sizes) if sizes else 0


def classifier_config(s: Settings, domain: str) -> ml_collections.ConfigDict:
    """configs/classifier.py's `domain` preset on its training images minus the held-out ones:
    the judge of translations into `domain`, and DTN's f when `domain` is DTN's source."""
    c = _load_config("classifier", domain)
    c.data = _digits_data(s, domain, "usps" if domain == "mnist" else "mnist")
    c.data.idx_B = ""
    c.source_domain, c.target_domain = "A", "B"
    _run_keys(c, s, 0, s.classifier_steps if s.classifier_steps > 0 else 1000)
    if s.classifier_steps <= 0:  # the preset's epochs decide
        c.max_steps, c.log_every, c.sample_every, c.checkpoint_every = -1, 50, 1000, 1000
    c.eval_every = 0
    if s.tiny:
        c.nf, c.feature_dim, c.batch_size = 4, 8, 8
    return c


def method_config(s: Settings, method: str, direction: str, seed: int, classifiers: dict[str, str]
                  ) -> tuple[ml_collections.ConfigDict, dict[str, str]]:
    """(config, {config domain: dataset}) of one run; eval.classifiers judge translations into a domain."""
    src, tgt = DIRECTIONS[direction]
    if s.networks not in NETWORKS:
        raise ValueError(f"--networks={s.networks!r}: expected one of {', '.join(NETWORKS)}")
    small = s.networks == "small"
    if method == "cyclegan":
        c = _load_config("cyclegan", _preset(s, method, direction, "mnist2usps"))
        c.data = _digits_data(s, src, tgt)
        names = {"A": src, "B": tgt}
        if small:  # the digits preset's networks: resnet_6blocks ngf 16, basic D ndf 16, batch 8
            c.ngf = c.ndf = 16
            c.batch_size = 8
        if s.tiny:
            c.ngf = c.ndf = 2
            c.batch_size, c.pool_size = 2, 2
    elif method == "unit":
        c = _load_config("unit", _preset(s, method, direction, "digits"))
        c.data = _digits_data(s, src, tgt)
        names = {"A": src, "B": tgt}
        if s.tiny:
            c.gen_dim = c.dis_dim = 2
            c.batch_size = 2
    elif method == "unit_da":
        c = _load_config("unit", _preset(s, method, direction, direction))  # the DA model: CoVAE32x32 + CoDis32x32 (version_02)
        c.data = _digits_data(s, src, tgt)
        names = {"A": src, "B": tgt}
        if small:  # base widths 8 (the reference: gen 96, dis 64), batch 16 per domain (64):
            c.gen_ch = c.dis_ch = 8  # at 32/32 and batch 32 a step is 108 GFLOP, 1.2 s on 2 cores
            c.batch_size = 16
        if s.tiny:
            c.gen_ch = c.dis_ch = 4
            c.batch_size = 4
    elif method == "dtn":
        c = _load_config("dtn", _preset(s, method, direction, "mnist2usps"))
        c.data = _digits_data(s, src, tgt)
        c.source_domain, c.target_domain = "A", "B"
        names = {"A": src, "B": tgt}
        if small:  # g's decoder and D at 32 wide (the reference: 128), batch 32 (100); f stays
            c.ngf = c.ndf = 32
            c.batch_size = 32
        if s.tiny:
            c.nf, c.feature_dim, c.ngf, c.ndf, c.batch_size = 4, 8, 4, 4, 4
    elif method == "ufdn":
        c = _load_config("ufdn", _preset(s, method, direction, "uda_small" if small else "uda"))
        c.data = _digits_data(s, src, tgt)
        c.data.domains = f"{src},{tgt}"  # the labelled source first
        c.data.idx = ",".join(f"{d}={cache.digits_train_images(d, s.data_root)}" for d in (src, tgt))
        c.data.idx_A = c.data.idx_B = ""
        names = {src: src, tgt: tgt}
        if s.tiny:
            from configs import ufdn as ufdn_config  # pylint: disable=import-outside-toplevel

            c.encoder = [ufdn_config._conv(4), ufdn_config._conv(4), ufdn_config._conv(8),
                         ufdn_config._conv(8), ufdn_config._conv(8, "", "")]
            c.decoder = [ufdn_config._deconv(8, insert=True), ufdn_config._deconv(8),
                         ufdn_config._deconv(4), ufdn_config._deconv(4),
                         ufdn_config._deconv(3, "", "Tanh")]
            c.D_feat = [ufdn_config._fc(8), ufdn_config._fc(2, "")]
            c.batch_size = 2
    else:
        raise ValueError(f"--methods: {method!r} is not one of {', '.join(METHODS)}")
    _run_keys(c, s, seed, steps_of(s, method))
    c.eval.classifiers = ",".join(f"{d}={classifiers[n]}" for d, n in names.items() if n in classifiers)
    # Select on the source's held-out labels only: the reverse direction's accuracy reads the
    # target's labels, which domain adaptation does not have (it is reported, never selects).
    src_key = next(d for d, n in names.items() if n == src)
    tgt_key = next(d for d, n in names.items() if n == tgt)
    c.eval.select = (f"da_accuracy_holdout/{src_key}" if method in LATENT_DA
                     else f"translation_accuracy_holdout/{src_key}_to_{tgt_key}")
    apply_overrides(c, s)
    return c, names


def _train(config: ml_collections.ConfigDict, workdir: str) -> None:
    from unpaired import train  # pylint: disable=import-outside-toplevel

    train.train_and_evaluate(config, workdir)


# Keys --overrides may not set: the benchmark's own flags decide them.
OWN_KEYS = ("seed", "max_steps", "eval_every", "eval", "data")


def parse_overrides(text: str) -> list[tuple[str, Any]]:
    """--overrides "lr_schedule=cosine,lambdas.kl=(0,1e-5,100)": (dotted key, value) pairs,
    each value a Python literal where it parses as one, else the string."""
    pairs, depth, part = [], 0, ""
    for ch in text + ",":  # split at commas outside brackets
        depth += 1 if ch in "([{" else -1 if ch in ")]}" else 0
        if ch == "," and depth == 0:
            if part.strip():
                key, sep, value = part.strip().partition("=")
                if not sep or not key.strip():
                    raise ValueError(f"--overrides={text!r}: expected key=value entries; bad entry {part.strip()!r}")
                if key.strip().split(".")[0] in OWN_KEYS:
                    raise ValueError(f"--overrides: {key.strip()!r} is set by the benchmark's own flags "
                                     f"(--seeds, --steps/--method_steps, --eval_every, --data_root)")
                try:
                    parsed = ast.literal_eval(value.strip())
                except (ValueError, SyntaxError):
                    parsed = value.strip()
                pairs.append((key.strip(), parsed))
            part = ""
        else:
            part += ch
    return pairs


def apply_overrides(c: ml_collections.ConfigDict, s: Settings) -> None:
    """Sets each --overrides key on a run's config; a key the config lacks is named."""
    for key, value in parse_overrides(s.overrides):
        *parents, leaf = key.split(".")
        target = c
        for name in parents:
            if name not in target:
                raise ValueError(f"--overrides: {key!r}: the {c.method} config has no {name!r}")
            target = target[name]
        if leaf not in target:
            raise ValueError(f"--overrides: {key!r}: the {c.method} config has no {leaf!r}")
        target[leaf] = value


def run_name(s: Settings, method: str, direction: str, seed: int) -> str:
    """`ufdn_mnist2usps_cpu_seed0`: a run's folder name; the networks (but for the presets'
    own) and any --overrides are part of it, so runs of other settings are never reused for
    each other (`ufdn_mnist2usps_cpu_lr_schedule-cosine_seed0`)."""
    networks = "" if s.networks == "preset" else f"_{s.networks}"
    changed = "".join(f"_{k}-{v}" for k, v in parse_overrides(s.overrides))
    changed = re.sub(r"[^A-Za-z0-9._-]+", "", changed.replace(" ", ""))
    return f"{method}_{direction}{networks}{changed}_seed{seed}"


def record_dir(s: Settings) -> str:
    """Where finished runs' small files (result.json, metrics.jsonl) are kept beside --output
    (`docs/results_runs` by default, in the repository): the table and its curves can be rebuilt
    from them with --report_only after the workroot (checkpoints) is gone."""
    return os.path.join(os.path.dirname(os.path.abspath(s.output)), "results_runs")


def _keep(s: Settings, name: str, workdir: str, files: tuple[str, ...]) -> None:
    """Copies a finished run's small `files` into record_dir(s)/name."""
    kept = os.path.join(record_dir(s), name)
    os.makedirs(kept, exist_ok=True)
    for f in files:
        if os.path.exists(os.path.join(workdir, f)):
            with open(os.path.join(workdir, f), encoding="utf-8") as src:
                text = portable(src.read(), s.data_root)
            with open(os.path.join(kept, f), "w", encoding="utf-8") as dst:
                dst.write(text)


def portable(text: str, data_root: str) -> str:
    """`text` with this machine's data root written as `$UNPAIRED_DATA`: kept records name the
    data by the variable a reader sets, never by the path the run happened to use."""
    for root in sorted({os.path.abspath(data_root), data_root.rstrip("/")}, key=len, reverse=True):
        if root:
            text = text.replace(root, f"${cache.ENV}")
    return text


def train_classifier(s: Settings, domain: str) -> str:
    """The workdir of `domain`'s classifier, trained unless already there."""
    workdir = os.path.join(s.workroot, f"classifier_{domain}")
    if not os.path.exists(os.path.join(workdir, "accuracy.json")):
        _train(classifier_config(s, domain), workdir)
        _keep(s, f"classifier_{domain}", workdir, ("accuracy.json",))
    return workdir


def _finished(s: Settings, name: str) -> str | None:
    """The folder with `name`'s accuracy.json (a classifier or a baseline): the workroot, else
    the record; None when neither has it."""
    for folder in (os.path.join(s.workroot, name), os.path.join(record_dir(s), name)):
        if os.path.exists(os.path.join(folder, "accuracy.json")):
            return folder
    return None


def _finished_classifier(s: Settings, domain: str) -> str | None:
    """The folder with `domain`'s finished classifier's accuracy.json: the workroot, else the record."""
    return _finished(s, f"classifier_{domain}")


def _kept_accuracy(s: Settings, name: str) -> float | None:
    """The accuracy in `name`'s finished accuracy.json (the workroot, else the record), or None."""
    kept = _finished(s, name)
    if kept is None:
        return None
    with open(os.path.join(kept, "accuracy.json"), encoding="utf-8") as f:
        return json.load(f)["accuracy"]


def _record_accuracy(s: Settings, name: str, record: dict[str, Any]) -> float:
    """Writes `record` as workroot/name/accuracy.json, keeps it beside --output, returns its accuracy."""
    workdir = os.path.join(s.workroot, name)
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "accuracy.json"), "w", encoding="utf-8") as f:
        json.dump(record, f, indent=2)
    _keep(s, name, workdir, ("accuracy.json",))
    return record["accuracy"]


# The pixel-level DA classifier's two baselines per direction, trained on real images instead of
# translations: the raw labelled source (no adaptation: what a translation must beat) and the
# target's own labels (the ceiling no label-free method reaches).
BASELINES = {"source": "source only (no adaptation)", "target": "target labels (ceiling)"}


def baseline_accuracy(s: Settings, direction: str, which: str) -> float | None:
    """Target test accuracy of the pixel-level DA classifier (its recipe, --pixel_da_steps)
    trained on the real `which` ('source' or 'target') training images of `direction`, less
    the held-out ones: kept as baseline_<direction>_<which>/accuracy.json, trained unless
    finished (None with --report_only when it is not)."""
    from unpaired.data.sets import load_set  # pylint: disable=import-outside-toplevel
    from unpaired.eval import config as eval_config, pixel_da  # pylint: disable=import-outside-toplevel

    name = f"baseline_{direction}_{which}"
    kept = _kept_accuracy(s, name)
    if kept is not None:
        return kept
    if s.report_only or s.pixel_da_steps <= 0:
        return None
    src, tgt = DIRECTIONS[direction]
    data = _digits_data(s, src, tgt)
    e = eval_config.eval_config()
    nf, batch = TINY_PIXEL_DA if s.tiny else (int(e.pixel_da_nf), int(e.pixel_da_batch))
    train = load_set(data, "A" if which == "source" else "B", "train", 1, True,
                     s.pixel_da_size if which == "source" else 0)
    test = load_set(data, "B", "test", 1, True, s.test_size)
    start = time.perf_counter()
    accuracy = pixel_da.trained_accuracy(train.images, train.labels, test, steps=s.pixel_da_steps,
                                         nf=nf, lr=float(e.pixel_da_lr), batch_size=batch, seed=0)
    record = {"accuracy": accuracy,
              "trained_on": f"{tgt if which == 'target' else src} training images ({len(train.images)})",
              "tested_on": f"{tgt} test images ({len(test.images)})", "steps": s.pixel_da_steps,
              "train_seconds": round(time.perf_counter() - start, 1)}
    return _record_accuracy(s, name, record)


def untranslated_accuracy(s: Settings, direction: str, classifiers: dict[str, str]) -> float | None:
    """The target judge's accuracy on the raw, untranslated source test digits (the identity
    translation): what a translation accuracy must beat to say the method translated anything.
    Kept as baseline_<direction>_untranslated/accuracy.json; None when neither that record nor
    the judge's weights are there (an evaluation, not training: --report_only computes it too)."""
    from unpaired.data.sets import load_set  # pylint: disable=import-outside-toplevel
    from unpaired.eval import classifier as judges, run  # pylint: disable=import-outside-toplevel

    name = f"baseline_{direction}_untranslated"
    kept = _kept_accuracy(s, name)
    if kept is not None:
        return kept
    src, tgt = DIRECTIONS[direction]
    judge = classifiers.get(tgt)
    if judge is None or not os.path.isdir(os.path.join(judge, "checkpoints")):
        return None
    test = load_set(_digits_data(s, src, tgt), "A", "test", 1, True, s.test_size)
    accuracy = run.classified_accuracy(test.images, test.labels, judges.load_classifier(judge), 256)
    record = {"accuracy": accuracy, "judge": f"the {tgt} classifier",
              "tested_on": f"{src} test images ({len(test.images)}), untranslated"}
    return _record_accuracy(s, name, record)


def run_one(s: Settings, method: str, direction: str, seed: int, classifiers: dict[str, str]
            ) -> dict[str, Any] | None:
    """Trains (or reuses) one run and returns its selected checkpoint's metrics (with
    `report_only`, None for a run that has not finished)."""
    from unpaired.eval import pixel_da, report, run  # pylint: disable=import-outside-toplevel

    name = run_name(s, method, direction, seed)
    workdir = os.path.join(s.workroot, name)
    done = os.path.join(workdir, "result.json")
    for folder in (workdir, os.path.join(record_dir(s), name)):  # the workroot, else the record
        if os.path.exists(os.path.join(folder, "result.json")):
            with open(os.path.join(folder, "result.json"), encoding="utf-8") as f:
                kept = json.load(f)
            kept["workdir"] = folder
            return kept
    if s.report_only:
        return None
    config, names = method_config(s, method, direction, seed, classifiers)
    if method == "dtn":  # stage 1 is the source's classifier (trained without its held-out images)
        config.init_from = classifiers[DIRECTIONS[direction][0]]
    others_busy = machine.other_busy_cores()
    window = machine.BusyWindow.start()
    start = time.perf_counter()
    _train(config, workdir)
    train_seconds = time.perf_counter() - start
    others_during = None if window is None else window.other_cores()
    selected = os.path.join(workdir, "best")
    model = report.load_model(selected if os.path.isdir(selected) else workdir)
    model.config.eval.classifiers = config.eval.classifiers
    model.config.eval.test_size = s.test_size  # the final numbers: the whole test sets by default
    data = run.load_eval_data(model.method, model.config)
    metrics = run.evaluate(model.method, model.state, model.config, data)
    src = next(d for d, n in names.items() if n == DIRECTIONS[direction][0])
    tgt = next(d for d, n in names.items() if n == DIRECTIONS[direction][1])
    request = next(r for a, b, r in data.directions if (a, b) == (src, tgt))
    if s.pixel_da_steps > 0 and "pixel_da_accuracy" not in NOT_TRAINED.get(method, ()):
        metrics[f"pixel_da_accuracy/{src}_to_{tgt}"] = pixel_da.pixel_da_accuracy(
            model.method, model.state, model.config, src, tgt, request, steps=s.pixel_da_steps,
            seed=seed)
    result = {"method": method, "direction": direction, "seed": seed, "step": int(model.state.step),
              "steps": steps_of(s, method), "networks": "tiny" if s.tiny else s.networks,
              "workdir": workdir, "src": src, "tgt": tgt, "metrics": metrics,
              "train_seconds": round(train_seconds, 1),
              "others_busy": None if others_busy is None else round(others_busy, 2),
              "others_busy_during": None if others_during is None else round(others_during, 2),
              "translation_accuracy": metrics.get(f"translation_accuracy/{src}_to_{tgt}"),
              "da_accuracy": metrics.get(f"da_accuracy/{tgt}"),
              "pixel_da_accuracy": metrics.get(f"pixel_da_accuracy/{src}_to_{tgt}"),
              "diversity": metrics.get(f"diversity/{src}_to_{tgt}"),
              "diversity_within_class": metrics.get(f"diversity_within_class/{src}_to_{tgt}")}
    with open(done, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    _keep(s, name, workdir, ("result.json", "metrics.jsonl", "config.json"))
    return result


def _mean_spread(values: list[float | None]) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "—"
    if len(vals) == 1:
        return f"{vals[0]:.3f} (1 seed)"
    return f"{np.mean(vals):.3f} ± {np.std(vals, ddof=1):.3f}"


def curve_key(r: dict[str, Any]) -> str:
    """The metrics.jsonl key of a run's target test accuracy during training (its curve)."""
    if r["method"] in LATENT_DA:
        return f"eval/da_accuracy/{r['tgt']}"
    return f"eval/translation_accuracy/{r['src']}_to_{r['tgt']}"


def curve(r: dict[str, Any]) -> list[tuple[int, float]]:
    """(step, target test accuracy) at every evaluation of a run, from its metrics.jsonl."""
    path = os.path.join(r["workdir"], "metrics.jsonl")
    if not os.path.exists(path):
        return []
    key = curve_key(r)
    with open(path, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [(int(row["step"]), float(row[key])) for row in rows if key in row]


def reference_selection(r: dict[str, Any]) -> float | None:
    """The references' model selection, for comparison only: the best target test accuracy over
    the evaluations during training (UFDN's and UNIT's DA scripts keep that checkpoint)."""
    points = curve(r)
    return max(v for _, v in points) if points else None


def last_evaluation(r: dict[str, Any]) -> float | None:
    """The target test accuracy at the run's last evaluation: a fixed training length, the
    other selection that reads no target label (source accuracy saturates long before the
    domains are aligned, so the source held-out selection tends to keep early steps)."""
    points = curve(r)
    return points[-1][1] if points else None


def _number(value: float | None) -> str:
    """A table cell: three decimals, or a dash where there is no value."""
    return "—" if value is None else f"{value:.3f}"


def _cell(rs: list[dict[str, Any]], method: str, name: str) -> str:
    if name in NOT_TRAINED.get(method, ()):
        return "n/t"
    return _mean_spread([r.get(name) for r in rs])


def _loaded(r: dict[str, Any]) -> bool:
    """Whether other processes shared the cores right before the run's training or on average
    over it, or when its record says `shared_cores` (older records sampled the start only: such
    a run that trained beside another is marked by hand; older still, the 1-minute load average,
    which also counts the benchmark's own previous run)."""
    if r.get("shared_cores"):  # set by hand on runs known to have trained beside others
        return True
    samples = [r[k] for k in ("others_busy", "others_busy_during") if r.get(k) is not None]
    if samples:
        return max(samples) > machine.LOADED_CORES
    return r.get("load_before", 0.0) > 0.5


def _runs_length(rs: list[dict[str, Any]]) -> str:
    """'10000 (preset)': the training length and networks of a row's runs (each distinct one)."""
    kinds = sorted({f"{r.get('steps', '?')} ({r.get('networks', '?')})" for r in rs})
    times = [r["train_seconds"] for r in rs if r.get("train_seconds")]
    loaded = any(_loaded(r) for r in rs)
    minutes = f", {np.mean(times) / 60:.1f} min{' (loaded)' if loaded else ''}" if times else ""
    return ", ".join(kinds) + minutes


def figures(s: Settings, results: list[dict[str, Any]], folder: str) -> dict[str, list[str]]:
    """Translation grids (the same 8 source test digits per direction) and accuracy curves."""
    from unpaired.eval import report, run  # pylint: disable=import-outside-toplevel

    os.makedirs(folder, exist_ok=True)
    out: dict[str, list[str]] = {"translations": [], "curves": []}
    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for r in results:
        points = curve(r)
        if points and r["seed"] == 0:
            curves.setdefault(r["direction"], {})[r["method"]] = points
        if r["seed"] != 0 or "translation_accuracy" in NOT_TRAINED.get(r["method"], ()):
            continue  # no grid of translations the procedure never trained
        name = f"translations_{r['method']}_{r['direction']}.png"
        if not os.path.isdir(os.path.join(r["workdir"], "checkpoints")):  # a kept record: no weights
            if os.path.exists(os.path.join(folder, name)):
                out["translations"].append(name)  # the grid drawn when the run finished
            continue
        selected = os.path.join(r["workdir"], "best")
        model = report.load_model(selected if os.path.isdir(selected) else r["workdir"])
        model.config.eval.test_size = 8
        model.config.eval.classifiers = ""
        data = run.load_eval_data(model.method, model.config)
        request = next(q for a, b, q in data.directions if (a, b) == (r["src"], r["tgt"]))
        x = data.test[r["src"]].images[:8]
        fake = run.translated(model.method, model.state, data, request, x)
        logs.save_png(logs.image_grid([x, fake]), os.path.join(folder, name))
        out["translations"].append(name)
    for direction, series in curves.items():
        name = f"accuracy_over_steps_{direction}.png"
        plot.line_chart(series, f"{direction}: target test accuracy (translation; "
                        f"{', '.join(LATENT_DA)}: own classifier) vs step, seed 0",
                        "target test accuracy", os.path.join(folder, name), ylim=(0.0, 1.0))
        out["curves"].append(name)
    return out


def _eval_every_phrase(s: Settings, results: list[dict[str, Any]]) -> str:
    """How often the table's runs were evaluated: --eval_every, or each method's own where
    reused runs (--report_only) were evaluated at other intervals (their config.json says)."""
    every: dict[str, set[int]] = {}
    for r in results:
        path = os.path.join(r.get("workdir", ""), "config.json")
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                every.setdefault(r["method"], set()).add(int(json.load(f).get("eval_every", s.eval_every)))
    if all(v == {s.eval_every} for v in every.values()):
        return str(s.eval_every)
    return ", ".join(f"{'/'.join(str(n) for n in sorted(v))} ({m})" for m, v in every.items())


def write_results(s: Settings, results: list[dict[str, Any]], classifier_acc: dict[str, float],
                  figs: dict[str, list[str]], figure_dir: str,
                  baselines: dict[tuple[str, str], float | None] | None = None) -> str:
    """docs/results.md: the table beside the papers, the protocol and the figures."""
    rel = os.path.relpath(figure_dir, os.path.dirname(os.path.abspath(s.output)))
    lines = ["# Results: MNIST <-> USPS", "",
             "Made by `python -m launch.digits_benchmark` "
             f"(--methods={','.join(s.methods)} --seeds={s.seeds} "
             + (f"--steps={s.steps} " if s.networks != "cpu" else "")
             + (f"--method_steps={s.method_steps} " if s.method_steps else "") +
             f"--networks={s.networks} --eval_every={s.eval_every} --pixel_da_steps={s.pixel_da_steps}"
             f"{' --report_only' if s.report_only else ''}{' --tiny' if s.tiny else ''}"
             f"{f' --overrides={s.overrides!r}' if s.overrides else ''}).", "",
             "| method | direction | translation acc. (DTN protocol) | latent DA acc. | pixel-level DA acc. "
             "| diversity | within class | last step | best target test (references' selection) "
             "| paper (DA) | seeds | steps (networks) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for method in tuple(s.methods) + ("cogan",):
        for direction in s.directions:
            rs = [r for r in results if r["method"] == method and r["direction"] == direction]
            paper = PAPERS.get(method, {}).get(direction, "—")
            if not rs and method != "cogan":
                continue
            if method == "cogan":
                lines.append(f"| CoGAN (paper only) | {direction} | — | — | — | — | — | — | — | {paper} | — | — |")
                for which, label in BASELINES.items():
                    value = (baselines or {}).get((direction, which))
                    identity = (baselines or {}).get((direction, "untranslated")) if which == "source" else None
                    if value is not None or identity is not None:
                        lines.append(f"| {label} | {direction} | {_number(identity)} | — | {_number(value)} | "
                                     f"— | — | — | — | — | — | {s.pixel_da_steps} (classifier) |")
                continue
            lines.append(f"| {method} | {direction} | {_cell(rs, method, 'translation_accuracy')} | "
                         f"{_cell(rs, method, 'da_accuracy')} | {_cell(rs, method, 'pixel_da_accuracy')} | "
                         f"{_cell(rs, method, 'diversity')} | {_cell(rs, method, 'diversity_within_class')} | "
                         f"{_mean_spread([last_evaluation(r) for r in rs])} | "
                         f"{_mean_spread([reference_selection(r) for r in rs])} | {paper} | {len(rs)} | "
                         f"{_runs_length(rs)} |")
    if s.networks == "cpu":
        without = [m for m in METHODS if m not in CPU_PRESETS]
        if without:
            lines += ["", f"No CPU preset yet (issue 23), so no row: {', '.join(without)}. Their earlier "
                      "1,000-step runs at narrowed widths learned little (docs/quality.md quotes them)."]
    lines += ["", "Mean ± sample standard deviation over seeds 0..n-1 of the checkpoint selected by "
              "the source held-out accuracy. **Diversity**: the collapse measure "
              "(`unpaired.eval.diversity`), the translations' mean pairwise RMS distance over the "
              "inputs' on the first 256 source test digits: 0 when every input gives one image. "
              "**Within class**: the same ratio inside each digit class (first 1,024 source test "
              "digits), averaged over the classes: 0 when every input of a class gives one image, "
              "which the global ratio cannot see (docs/quality.md DT3). "
              "**Last step**: the target test accuracy (the method's own classifier for UNIT DA "
              "and UFDN, else translation accuracy) at the run's last evaluation, on the curves' "
              "test images: a fixed training length, which reads no target label either. "
              "**Best target test**: the references' own selection (the best target test accuracy "
              "over the evaluations during training, on the curves' test images), beside ours for "
              "comparison; it reads target labels, so it is not a domain-adaptation result. "
              "**n/t**: a metric the method's procedure does not train (UFDN's `uda` procedure "
              "never trains its decoder to translate).", ""]
    if any(r.get("networks") in ("small", "tiny") for r in results):
        lines += ["**Read these rows as short CPU runs, not as the methods' accuracy.** Rows marked "
                  "`small` or `tiny` train narrowed networks for a few hundred to a thousand steps "
                  "(the papers: full widths, tens of thousands of iterations); they check the "
                  "protocol end to end and show early trends. The comparison with the papers "
                  "needs `python -m launch.digits_benchmark` at the presets' widths "
                  "(`--networks=preset`, 10,000 steps, 3 seeds), a GPU job.", ""]
    lines += ["## Protocol", "",
              f"- Data: the MNIST and USPS IDX files of `--data_root` (default `${cache.ENV}`, else "
              "~/.cache/unpaired: `python -m launch.fetch mnist usps`, docs/data.md). MNIST training "
              f"set: {_mnist_train_phrase(s)}; MNIST test: all 10,000; USPS: 7,291 train / 2,007 "
              "test. All images resized to 32x32, grey (UFDN: grey repeated to RGB).",
              f"- Held out for model selection: {s.holdout} training images per domain (a fixed "
              "subset, `unpaired.data.holdout`), never trained on.",
              "- Training: " + ("each CPU preset's own length" if s.networks == "cpu" else f"{s.steps} steps per run")
              + (f" ({s.method_steps})" if s.method_steps else "") + " (a reused run keeps its own length: the "
              "table's last column), evaluated every "
              f"{_eval_every_phrase(s, results)} steps on the first {_curve_size(s) or 'all'} test images per domain "
              f"(the curves) and the held-out images; {s.seeds} seed(s) asked"
              + (" (--report_only: the finished ones; the seeds column counts them)" if s.report_only else "")
              + ". Networks "
              f"(--networks={s.networks}): the presets named in `unpaired/benchmarks/digits.py`"
              + (" shrunk to tiny widths (a smoke run, not a result)" if s.tiny else
                 "; `small`: CycleGAN at ngf/ndf 16 and batch 8, UFDN's uda_small (z 64) instead "
                 "of the official uda widths, DTN's g and D at 32 wide and batch 32, UNIT DA at base "
                 "widths 8 and batch 16" if s.networks == "small" else
                 "; `cpu`: each method's CPU preset taken whole (" + ", ".join(
                     f"`configs/{n}.py:{p}`" for n, p in CPU_PRESETS.values())
                 + "; each lists its deviations from the reference beside it)" if s.networks == "cpu"
                 else "") + ". Last column: steps (networks), mean training minutes per run, "
              "`(loaded)` when other processes kept more than a quarter core busy right before a "
              "run's training or on average over it (`unpaired.benchmarks.machine`; records made "
              "before 2026-12-07 evening sampled the start only, and older ones a 1-minute load "
              "average above 0.5, which also counts the previous run), so its time is an upper bound. Why each preset is what it is: docs/quality.md.",
              "- **Model selection**: the step with the best source held-out accuracy "
              "(UNIT DA and UFDN: their own classifier on held-out source images; the others: translation "
              "accuracy of held-out source images judged by the target classifier). No target "
              "label is used to select: neither the target test set nor the target's held-out "
              "images (the reverse direction's accuracy is reported, never selected on).",
              "- Translation accuracy (DTN protocol): the source test set translated to the target "
              "domain, classified by a target-domain classifier (`configs/classifier.py`, "
              + (f"{s.classifier_steps} steps" if s.classifier_steps > 0 else "its preset's epochs")
              + " on the target's labelled training set minus its held-out images), scored "
              "against the source labels, on "
              + (f"the first {s.test_size} test images" if s.test_size > 0 else "the whole test sets")
              + ". DTN's f is the source domain's classifier (one per source, shared by the "
              "seeds). Classifier test accuracy: "
              + (", ".join(f"{d} {a:.4f}" for d, a in sorted(classifier_acc.items())) or "—") + ".",
              "- Latent DA accuracy: the method's own classifier (UFDN's D_digit on the shared "
              "latent mu; UNIT DA's classifier head on the shared D trunk), on the target test set.",
              f"- Pixel-level DA: a fresh classifier ({s.pixel_da_steps} steps) trained on the "
              "translated labelled source training images, tested on the real target test set. "
              "Its two baselines (rows under the methods, one classifier each, seed 0): the same "
              "recipe trained on the raw source training images (**source only**: what a "
              "translation must beat to help) and on the target's own labelled training images "
              "(**target labels**: the ceiling no label-free method reaches). The source-only row's "
              "translation accuracy is the target classifier reading the **untranslated** source test "
              "digits (the identity translation): a method's translation accuracy near it says the "
              "translation kept the class no better than leaving the digit alone.",
              "- Paper numbers are domain-adaptation accuracies as reported (issue 13); papers "
              "differ in data subsets and protocol.", "", "## Figures", "",
              "Translations of the first 8 source test digits (left: source, right: translated), "
              "seed 0, selected checkpoint:", ""]
    lines += [f"![{n}]({rel}/{n})" for n in figs["translations"]] or [
        "None: no row here trains its translations (n/t)."]
    lines += ["", "Target test accuracy over training steps (seed 0), drawn with matplotlib "
              "(`unpaired.benchmarks.plot`):", ""]
    lines += [f"![{n}]({rel}/{n})" for n in figs["curves"]]
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(os.path.abspath(s.output)), exist_ok=True)
    with open(s.output, "w", encoding="utf-8") as f:
        f.write(text)
    return text


def run_benchmark(s: Settings) -> list[dict[str, Any]]:
    """Classifiers, then every method x direction x seed, then results.md and its figures."""
    unknown = [m for m in s.methods if m not in METHODS]
    if unknown:
        raise ValueError(f"--methods: unknown {unknown}; available: {', '.join(METHODS)}")
    bad = [d for d in s.directions if d not in DIRECTIONS]
    if bad:
        raise ValueError(f"--directions: unknown {bad}; expected {', '.join(DIRECTIONS)}")
    if s.networks not in NETWORKS:
        raise ValueError(f"--networks={s.networks!r}: expected one of {', '.join(NETWORKS)}")
    for m in s.methods:
        steps_of(s, m)  # a bad --method_steps fails before any training
    for domain in ("mnist", "usps"):
        if not os.path.exists(cache.digits_train_images(domain, s.data_root)):
            raise ValueError(f"--data_root={s.data_root!r} has no {domain}/train-images-idx3-ubyte.gz: "
                             f"{cache.fetch_command(['mnist', 'usps'])}")
    # Judges of translations into a domain, for the methods whose translations are trained
    # (none for UFDN's uda procedure alone: its rows show n/t there).
    judged = [m for m in s.methods if "translation_accuracy" not in NOT_TRAINED.get(m, ())]
    domains = {DIRECTIONS[d][1] for d in s.directions} if judged else set()
    if "dtn" in s.methods:
        domains |= {DIRECTIONS[d][0] for d in s.directions}  # DTN's f on its source
    if s.report_only:
        missing = [d for d in sorted(domains) if _finished_classifier(s, d) is None]
        if missing:
            raise ValueError(f"--report_only: no finished classifier for {', '.join(missing)} under "
                             f"--workroot={s.workroot!r} or {record_dir(s)!r}")
        classifiers = {d: _finished_classifier(s, d) for d in sorted(domains)}
    else:
        classifiers = {d: train_classifier(s, d) for d in sorted(domains)}
    accuracy = {}
    for d, w in classifiers.items():
        with open(os.path.join(w, "accuracy.json"), encoding="utf-8") as f:
            accuracy[d] = json.load(f)["accuracy"]
    # Seed by seed: an interrupted benchmark has every method's seed 0 first.
    results = [r for r in (run_one(s, m, d, seed, classifiers)
                           for seed in range(s.seeds) for m in s.methods for d in s.directions)
               if r is not None]
    baselines = {(d, which): baseline_accuracy(s, d, which) for d in s.directions for which in BASELINES}
    if judged:
        baselines |= {(d, "untranslated"): untranslated_accuracy(s, d, classifiers) for d in s.directions}
    figure_dir = os.path.join(os.path.dirname(os.path.abspath(s.output)), "results_figures")
    figs = figures(s, results, figure_dir)
    write_results(s, results, accuracy, figs, figure_dir, baselines=baselines)
    return results
