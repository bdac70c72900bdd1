"""Test-session setup: fast XLA compiles on CPU, TF32 off in torch.

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
# One compilation cache for the session and the subprocesses it starts: the training tests
# compile the same tiny step in several processes.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      tempfile.mkdtemp(prefix="unpaired-test-jax-cache-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")

import torch  # noqa: E402

torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
