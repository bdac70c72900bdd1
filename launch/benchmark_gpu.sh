#!/usr/bin/env bash
# Needs (a bare GPU box): jax[cuda12], flax, optax, orbax-checkpoint, ml-collections, torch with CUDA.
#
# The four GPU target configurations of issue #5 (docs/benchmarks.md): CycleGAN horse2zebra
# at 256x256, batch 1 fp32, 4 fp32, 4 bf16, 16 bf16; JAX against the PyTorch reference,
# eager and torch.compile, timed in interleaved rounds; each run appends a markdown row.
# The step runs on random inputs, so horse2zebra's data need not be on the machine.
#
#   launch/benchmark_gpu.sh [TABLE.md [extra launch.benchmark flags...]]
#
# TABLE.md defaults to docs/benchmarks.md; extra flags go to every run (later flags win,
# e.g. `docs/benchmarks.md --steps=50`). PYTHON picks the interpreter (default: python).
# A run that fails is reported and the others still run; the exit status is then 1.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
table="${1:-docs/benchmarks.md}"
if [[ $# -ge 1 && "${table}" != /* ]]; then
  table="${PWD}/${table}"  # a path given is the caller's, relative to where they are
fi
extra=("${@:2}")
python="${PYTHON:-python}"
cd "${root}"

failed=()
run() {
  echo "=== launch.benchmark $* ${extra[*]-}" >&2
  if ! "${python}" -m launch.benchmark --config=configs/cyclegan.py:horse2zebra --image_size=256 \
      --torch=eager,compile --append="${table}" "$@" ${extra[@]+"${extra[@]}"}; then
    failed+=("$*")
  fi
}

run --batch_size=1 --precision=fp32 --dump_hlo_summary
run --batch_size=4 --precision=fp32
run --batch_size=4 --precision=bf16
run --batch_size=16 --precision=bf16

if [[ ${#failed[@]} -gt 0 ]]; then
  printf 'failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
