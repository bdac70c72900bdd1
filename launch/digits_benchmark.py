r"""MNIST <-> USPS for every available method; writes docs/results.md beside the papers' numbers.

    python -m launch.digits_benchmark                       # all methods, 3 seeds (hours on a GPU)
    python -m launch.digits_benchmark --methods=ufdn,cyclegan --seeds=3 --steps=20000
    python -m launch.digits_benchmark --networks=small --steps=1000 --method_steps=cyclegan=600 \
        --eval_every=250 --pixel_da_steps=300  # 2-core CPU: ~5 min a run (CycleGAN ~11)
    python -m launch.digits_benchmark --report_only ...    # the table of the runs finished so far

Trains a target-domain classifier per target, then each method x direction x seed (a
finished run is reused, so re-running resumes), selects each run's checkpoint by the
source held-out accuracy, and writes the table, the protocol and the figures
(`results_figures/` beside --output; the curves need matplotlib: `pip install
'unpaired[bench]'`). See `unpaired/benchmarks/digits.py`.
"""

from __future__ import annotations

import sys

from absl import app, flags

from unpaired import cli
from unpaired.benchmarks import digits as bench
from unpaired.benchmarks import plot

_D = bench.Settings()
_METHODS = flags.DEFINE_list("methods", list(_D.methods), f"Of {', '.join(bench.METHODS)}.")
_DIRECTIONS = flags.DEFINE_list("directions", list(_D.directions), "mnist2usps and/or usps2mnist.")
_SEEDS = flags.DEFINE_integer("seeds", _D.seeds, "Seeds per method and direction (0..n-1).")
_STEPS = flags.DEFINE_integer("steps", _D.steps, "Training steps per run.")
_METHOD_STEPS = flags.DEFINE_string("method_steps", _D.method_steps,
                                    "Per-method training lengths, e.g. cyclegan=600 (others: --steps).")
_CLASSIFIER_STEPS = flags.DEFINE_integer("classifier_steps", _D.classifier_steps,
                                         "Steps of each domain's classifier (the judge, and DTN's f); "
                                         "0: configs/classifier.py's epochs.")
_EVAL_EVERY = flags.DEFINE_integer("eval_every", _D.eval_every, "Evaluate (and select) every k steps.")
_HOLDOUT = flags.DEFINE_integer("holdout", _D.holdout, "Training images per domain held out for selection.")
_TEST_SIZE = flags.DEFINE_integer("test_size", _D.test_size,
                                   "First N test images per domain in the final numbers (0: all).")
_CURVE_TEST_SIZE = flags.DEFINE_integer("curve_test_size", _D.curve_test_size,
                                        "First N test images per domain in the evaluations during "
                                        "training (the curves; 0: as --test_size).")
_NETWORKS = flags.DEFINE_enum("networks", _D.networks, list(bench.NETWORKS),
                              "preset: the presets' widths; small: narrower CycleGAN and UFDN for a CPU.")
_PIXEL_DA_STEPS = flags.DEFINE_integer("pixel_da_steps", _D.pixel_da_steps,
                                       "Pixel-level DA classifier steps (0: off).")
_PIXEL_DA_SIZE = flags.DEFINE_integer("pixel_da_size", _D.pixel_da_size,
                                      "Translated source images it learns from (0: all).")
_DATA_ROOT = flags.DEFINE_string("data_root", _D.data_root, "Folder with mnist/ and usps/ IDX files "
                                  "(default: $UNPAIRED_DATA, else ~/.cache/unpaired; python -m launch.fetch "
                                  "mnist usps fills it).")
_WORKROOT = flags.DEFINE_string("workroot", _D.workroot, "Where the runs go.")
_OUTPUT = flags.DEFINE_string("output", _D.output, "The results file (figures go beside it).")
_REPORT_ONLY = flags.DEFINE_bool(
    "report_only", False, "Write --output from the runs already finished under --workroot (each "
    "row counts its seeds); train nothing. For a benchmark stopped part way.")
_TINY = flags.DEFINE_bool("tiny", False, "Tiny network widths: a smoke run for the test suite.")
_OVERRIDES = flags.DEFINE_string(
    "overrides", "", "A diagnostic change to every run's config, key=value[,key=value] (dotted keys, "
    "Python literals), e.g. lr_schedule=cosine: the runs get their own folders (the change is in "
    "their names) and the table's command line names it. docs/quality.md's runs use it.")
_VERBOSE = cli.define_verbose()


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    cli.setup_logging(_VERBOSE.value)
    try:
        plot.require_matplotlib()  # the figures come last: say so before hours of training
    except ImportError as err:
        sys.exit(f"error: {err}")
    settings = bench.Settings(
        data_root=_DATA_ROOT.value, workroot=_WORKROOT.value, output=_OUTPUT.value,
        methods=tuple(_METHODS.value), directions=tuple(_DIRECTIONS.value), seeds=_SEEDS.value,
        steps=_STEPS.value, method_steps=_METHOD_STEPS.value, classifier_steps=_CLASSIFIER_STEPS.value, eval_every=_EVAL_EVERY.value,
        holdout=_HOLDOUT.value, test_size=_TEST_SIZE.value,
        curve_test_size=_CURVE_TEST_SIZE.value, networks=_NETWORKS.value, pixel_da_steps=_PIXEL_DA_STEPS.value,
        pixel_da_size=_PIXEL_DA_SIZE.value, report_only=_REPORT_ONLY.value, tiny=_TINY.value,
        overrides=_OVERRIDES.value)
    try:
        results = bench.run_benchmark(settings)
    except ValueError as err:
        sys.exit(f"error: {err}")
    print(f"{len(results)} run(s); results in {settings.output}", flush=True)


if __name__ == "__main__":
    app.run(main)
