r"""Train each method's offline `digits` preset as the README does and score its translations.

    python -m launch.demo_benchmark                      # all four: docs/demos.md
    python -m launch.demo_benchmark --methods=ufdn,dtn   # rerun two; the others' rows are kept

See `unpaired/benchmarks/demos.py` for the protocol. Run it on an otherwise idle machine: the
table reports wall-clock time.
"""

from __future__ import annotations

import sys

from absl import app, flags

from unpaired import cli
from unpaired.benchmarks import demos

_D = demos.Settings()
_METHODS = flags.DEFINE_list("methods", list(_D.methods), f"Any of {', '.join(demos.DEMOS)}.")
_WORKROOT = flags.DEFINE_string("workroot", _D.workroot, "Where the runs go (each is retrained afresh).")
_OUTPUT = flags.DEFINE_string("output", _D.output, "The Markdown table (grids and records beside it).")
_VERBOSE = cli.define_verbose()


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    cli.setup_logging(_VERBOSE.value)
    settings = demos.Settings(methods=tuple(_METHODS.value), workroot=_WORKROOT.value, output=_OUTPUT.value)
    try:
        results = demos.run_benchmark(settings)
    except ValueError as err:
        sys.exit(f"error: {err}")
    for r in results:
        print(f"{r['method']}: translation accuracy {r['translation_accuracy']:.3f}, diversity "
              f"{r['diversity']:.3f}, {r['seconds']:.0f} s", flush=True)


if __name__ == "__main__":
    app.run(main)
