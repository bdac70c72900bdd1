"""launch/digits_benchmark end to end in a short configuration (its chart writer: test_plot)."""

import json
import os
import re
import subprocess
import sys

import pytest
from PIL import Image

from tests.helpers import REAL_DIGITS as DATA, needs_real_digits

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@needs_real_digits
def test_digits_benchmark_runs_end_to_end(tmp_path):
    out = tmp_path / "results.md"
    proc = subprocess.run(
        [sys.executable, "-m", "launch.digits_benchmark", "--methods=cyclegan",
         "--directions=mnist2usps", "--seeds=1", "--steps=2", "--classifier_steps=2",
         "--eval_every=2", "--holdout=16", "--test_size=16", "--pixel_da_steps=2",
         "--pixel_da_size=32", "--tiny", f"--workroot={tmp_path / 'runs'}", f"--output={out}"],
        cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    row = next(line for line in text.splitlines() if line.startswith("| cyclegan | mnist2usps |"))
    result = json.load(open(tmp_path / "runs" / "cyclegan_mnist2usps_seed0" / "result.json"))
    assert f"{result['translation_accuracy']:.3f}" in row and f"{result['pixel_da_accuracy']:.3f}" in row
    assert re.search(r"\| 1 \| 2 \(tiny\), \d+\.\d min( \(loaded\))? \|$", row), row  # steps, training minutes
    assert "| CoGAN (paper only) | mnist2usps | — | — | — | — | — | — | — | 0.957 |" in text
    assert f"{result['diversity']:.3f}" in row  # the collapse measure of the selected checkpoint
    assert f"{result['diversity_within_class']:.3f}" in row  # and its within-class form
    # The data is named by its flag and variable, never by this machine's path.
    assert "`--data_root` (default `$UNPAIRED_DATA`" in text and DATA not in text
    assert "our **6,112-image subset**" in text or "MNIST training set: all 60,000" in text
    for phrase in ("Model selection", "No target label is used to select", "16 training images per domain",
                   "2 steps per run", "1 seed(s)"):
        assert phrase in text, phrase
    kept = tmp_path / "results_runs"  # the small files a table is rebuilt from, beside it
    assert sorted(os.listdir(kept / "cyclegan_mnist2usps_seed0")) == ["config.json", "metrics.jsonl", "result.json"]
    assert os.listdir(kept / "classifier_usps") == ["accuracy.json"]
    # The pixel-level DA classifier's baselines: raw source and target-label training images.
    # The source-only row's translation accuracy: the USPS judge on the untranslated MNIST digits.
    identity = json.load(open(kept / "baseline_mnist2usps_untranslated" / "accuracy.json"))
    assert identity["tested_on"] == "mnist test images (16), untranslated"
    assert 0.0 <= identity["accuracy"] <= 1.0 and identity["accuracy"] * 16 == round(identity["accuracy"] * 16)
    for which, label in (("source", "source only (no adaptation)"), ("target", "target labels (ceiling)")):
        record = json.load(open(kept / f"baseline_mnist2usps_{which}" / "accuracy.json"))
        assert record["tested_on"] == "usps test images (16)" and record["steps"] == 2
        first = f"{identity['accuracy']:.3f}" if which == "source" else "—"
        assert f"| {label} | mnist2usps | {first} | — | {record['accuracy']:.3f} |" in text
    assert "usps training images" in json.load(open(kept / "baseline_mnist2usps_target" / "accuracy.json"))["trained_on"]
    best = json.load(open(tmp_path / "runs" / "cyclegan_mnist2usps_seed0" / "best.json"))
    assert best["select"] == "translation_accuracy_holdout/A_to_B" and result["step"] == best["step"]
    for name in ("translations_cyclegan_mnist2usps.png", "accuracy_over_steps_mnist2usps.png"):
        assert f"](results_figures/{name})" in text
        with Image.open(tmp_path / "results_figures" / name) as img:
            assert img.size[0] > 60 and img.size[1] > 60

    # --report_only: the table of what finished (cyclegan seed 0 of the 2 asked; no unit run),
    # nothing trained (in-process: the command line's flags were exercised above).
    from unpaired.benchmarks import digits as bench

    partial = tmp_path / "partial.md"
    bench.run_benchmark(bench.Settings(data_root=DATA, methods=("cyclegan", "unit"), directions=("mnist2usps",),
                                       seeds=2, report_only=True, tiny=True, workroot=str(tmp_path / "runs"),
                                       output=str(partial)))
    table = partial.read_text()
    assert re.search(r"\| 1 \| 2 \(tiny\), ", next(line for line in table.splitlines()
                                                  if line.startswith("| cyclegan | mnist2usps |")))
    assert "| unit |" not in table and "--report_only" in table
    assert sorted(os.listdir(tmp_path / "runs")) == ["baseline_mnist2usps_source", "baseline_mnist2usps_target",
                                                     "baseline_mnist2usps_untranslated", "classifier_usps",
                                                     "cyclegan_mnist2usps_seed0"]
    assert "| source only (no adaptation) | mnist2usps |" in table  # the kept baselines, not retrained


@needs_real_digits
def test_report_only_without_classifiers_names_the_flag(tmp_path):
    from unpaired.benchmarks import digits as bench

    with pytest.raises(ValueError, match="--report_only: no finished classifier for usps"):
        bench.run_benchmark(bench.Settings(data_root=DATA, methods=("cyclegan",), directions=("mnist2usps",),
                                           report_only=True, workroot=str(tmp_path),
                                           output=str(tmp_path / "results.md")))  # not docs/results_runs


@needs_real_digits
@pytest.mark.parametrize("networks,tiny", [("preset", False), ("small", False), ("preset", True)])
def test_every_method_config_validates(networks, tiny, tmp_path):
    from unpaired import config_validation
    from unpaired.benchmarks import digits as bench

    clf = tmp_path / "clf"
    (clf / "checkpoints").mkdir(parents=True)
    settings = bench.Settings(data_root=DATA, tiny=tiny, networks=networks,
                              method_steps="cyclegan=7", steps=11, curve_test_size=300)
    for direction, (src, tgt) in bench.DIRECTIONS.items():
        judge = bench.classifier_config(settings, tgt)
        config_validation.validate(judge)
        # The judge is also DTN's f: trained without the held-out images the selection reads.
        assert judge.data.holdout == settings.holdout and judge.eval_every == 0
        assert judge.max_steps == -1 and judge.n_epochs == 20 and judge.lr_schedule == "cosine"
        for method in bench.METHODS:
            config, names = bench.method_config(settings, method, direction, 0, {tgt: str(clf)})
            if method == "dtn":
                config.init_from = str(clf)
            config_validation.validate(config)
            assert sorted(names.values()) == sorted((src, tgt)), method
            assert config.data.holdout == settings.holdout and config.eval_every == settings.eval_every
            assert config.max_steps == (7 if method == "cyclegan" else 11), method
            assert config.eval.test_size == 300, method  # the curves; the final numbers use test_size
            judged = [d for d, n in names.items() if n == tgt]
            assert config.eval.classifiers == f"{judged[0]}={clf}", method
            # Selection reads the source's held-out labels only, never the target's.
            from_src = [d for d, n in names.items() if n == src][0]
            assert config.eval.select == (f"da_accuracy_holdout/{from_src}" if method in ("ufdn", "unit_da")
                                          else f"translation_accuracy_holdout/{from_src}_to_{judged[0]}"), method
    small = dict(networks="small", data_root=DATA)
    if networks == "small" and not tiny:
        assert bench.method_config(bench.Settings(**small), "cyclegan", "mnist2usps", 0, {})[0].ngf == 16
        assert bench.method_config(bench.Settings(**small), "dtn", "mnist2usps", 0, {})[0].ngf == 32
        assert len(bench.method_config(bench.Settings(**small), "ufdn", "mnist2usps", 0, {})[0].D_feat) == 2


def test_method_steps_and_bad_flags_are_named():
    from unpaired.benchmarks import digits as bench

    s = bench.Settings(steps=100, method_steps="cyclegan=60, dtn=5")
    assert [bench.steps_of(s, m) for m in bench.METHODS] == [60, 100, 100, 100, 5]
    for bad in ("cyclegan", "gan=3", "unit=0", "unit=x"):
        with pytest.raises(ValueError, match="--method_steps"):
            bench.steps_of(bench.Settings(method_steps=bad), "unit")
    with pytest.raises(ValueError, match="--networks"):
        bench.method_config(bench.Settings(networks="huge"), "unit", "mnist2usps", 0, {})
    with pytest.raises(ValueError, match="--method_steps"):
        bench.run_benchmark(bench.Settings(method_steps="unit=-1", workroot="/nonexistent"))
