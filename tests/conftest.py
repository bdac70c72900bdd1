"""Test-session setup: fast XLA compiles on CPU, TF32 off in torch, the real digits' folder.

The suite compiles many small programs and runs each a few times, so XLA's backend
optimisation level 0 (about half the compile time on CPU) is the right trade here; it
changes no results beyond float rounding, which every tolerance already covers.
A user-set XLA_FLAGS is respected. Compiled programs are cached on disk for the session
(and the training subprocesses it starts).
"""

import os
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# One compilation cache for the session, its xdist workers (they inherit this process's
# environment) and the subprocesses they start: the training tests compile the same tiny
# step in several processes.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      tempfile.mkdtemp(prefix="unpaired-test-jax-cache-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# Real MNIST/USPS for the tests that need them (tests.helpers.needs_real_digits): the copy at
# ../shared/data beside our checkouts, when there is one and UNPAIRED_DATA does not say
# otherwise. A test-side choice: the presets' own default is the user's cache folder.
_SHARED_DATA = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
if os.path.isdir(_SHARED_DATA):
    os.environ.setdefault("UNPAIRED_DATA", _SHARED_DATA)

import torch  # noqa: E402

torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False


# --- compile statistics (UNPAIRED_TEST_COMPILE_STATS=<file.jsonl>): how many XLA compiles
# each test pays for and their seconds, to find programs compiled again where they could be
# shared. Every pytest process (each xdist worker) appends one line per test to the file.
if os.environ.get("UNPAIRED_TEST_COMPILE_STATS"):
    import collections
    import json

    import jax.monitoring
    import pytest

    _COMPILES: dict = collections.defaultdict(lambda: [0, 0.0, 0.0])  # test -> [n, backend s, trace s]
    _CURRENT = ["(collection)"]

    def _on_duration(event: str, seconds: float, **_: object) -> None:
        entry = _COMPILES[_CURRENT[0]]
        if event == "/jax/core/compile/backend_compile_duration":
            entry[0] += 1
            entry[1] += seconds
        elif event in ("/jax/core/compile/jaxpr_trace_duration",
                       "/jax/core/compile/jaxpr_to_mlir_module_duration"):
            entry[2] += seconds

    jax.monitoring.register_event_duration_secs_listener(_on_duration)

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item, nextitem):  # noqa: D103
        _CURRENT[0] = item.nodeid
        yield

    def pytest_sessionfinish(session):  # noqa: D103
        with open(os.environ["UNPAIRED_TEST_COMPILE_STATS"], "a", encoding="utf-8") as f:
            for test, (n, secs, trace) in _COMPILES.items():
                f.write(json.dumps({"test": test, "compiles": n, "compile_s": round(secs, 3),
                                    "trace_s": round(trace, 3), "pid": os.getpid()}) + "\n")
