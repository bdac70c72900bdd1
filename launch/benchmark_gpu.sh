#!/usr/bin/env bash
# Needs (a bare GPU box): jax[cuda], flax, optax, orbax-checkpoint, ml-collections, torch with CUDA.
#
# The GPU rows of docs/benchmarks.md (issue #15): the four CycleGAN horse2zebra targets at
# 256x256 (batch 1 fp32, 4 fp32, 4 bf16, 16 bf16), then each other method in its largest
# preset (UNIT folder, UFDN face, DTN faces); JAX against the PyTorch reference, eager and
# torch.compile, timed in interleaved rounds; each run appends a markdown row. The step runs
# on random inputs, so no dataset need be on the machine.
#
#   launch/benchmark_gpu.sh [TABLE.md [extra launch.benchmark flags...]]
#
# TABLE.md defaults to docs/benchmarks.md; extra flags go to every run (later flags win,
# e.g. `docs/benchmarks.md --steps=50`). Environment:
#   PYTHON      the interpreter (default: python)
#   CONCURRENT  N (default 1): start the runs N at a time, in waves; a wave's runs compile
#               side by side and, once all are warmed up, take the device one at a time for
#               their timed rounds (--device_lock), so no timed round overlaps a compilation.
#               Mind the device memory: each run holds JAX's and both torch modes' buffers.
#   BARRIER_S   CONCURRENT > 1: how long a warmed-up run waits for the others before timing (600)
#   LOGDIR      where each run's log goes, <name>.log (default: a new temporary folder)
#   ONLY        run only these names (space separated), e.g. "cyclegan_b1_fp32 unit_folder"
# A run that fails is reported and the others still run; the exit status is then 1.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
table="${1:-docs/benchmarks.md}"
if [[ $# -ge 1 && "${table}" != /* ]]; then
  table="${PWD}/${table}"  # a path given is the caller's, relative to where they are
fi
extra=("${@:2}")
python="${PYTHON:-python}"
logdir="${LOGDIR:-$(mktemp -d)}"
mkdir -p "${logdir}"
cd "${root}"

cyclegan=(--config=configs/cyclegan.py:horse2zebra --image_size=256)
names=(cyclegan_b1_fp32 cyclegan_b16_bf16 cyclegan_b4_fp32 cyclegan_b4_bf16 unit_folder ufdn_face dtn_faces)
declare -A args=(
  [cyclegan_b1_fp32]="${cyclegan[*]} --batch_size=1 --precision=fp32 --dump_hlo_summary"
  [cyclegan_b16_bf16]="${cyclegan[*]} --batch_size=16 --precision=bf16"
  [cyclegan_b4_fp32]="${cyclegan[*]} --batch_size=4 --precision=fp32"
  [cyclegan_b4_bf16]="${cyclegan[*]} --batch_size=4 --precision=bf16"
  [unit_folder]="--config=configs/unit.py:folder --precision=fp32"
  [ufdn_face]="--config=configs/ufdn.py:face --precision=fp32"
  [dtn_faces]="--config=configs/dtn.py:faces --precision=fp32"
)
if [[ -n "${ONLY:-}" ]]; then
  read -r -a names <<< "${ONLY}"
fi

lock=()
lock_for_wave() {  # the --device_lock flags of a wave of $1 runs numbered $2 (none for one run)
  lock=()
  if [[ "$1" -gt 1 ]]; then
    lockfile="${logdir}/device.lock.$2"
    rm -rf "${lockfile}" "${lockfile}.ready"
    lock=(--device_lock="${lockfile}" --device_lock_parties="$1"
          --device_lock_barrier_s="${BARRIER_S:-600}"
          --notes="compiled side by side with $(($1 - 1)) other benchmark(s), timed one at a time under a device lock once all were warmed up")
  fi
}

run() {  # name: one launch.benchmark run, its log in ${logdir}/name.log
  local name="$1"
  echo "=== ${name}: launch.benchmark ${args[${name}]} ${extra[*]-}" >&2
  # shellcheck disable=SC2086  # the args strings are word lists
  if "${python}" -m launch.benchmark ${args[${name}]} --torch=eager,compile --append="${table}" \
      ${lock[@]+"${lock[@]}"} ${extra[@]+"${extra[@]}"} > "${logdir}/${name}.log" 2>&1; then
    echo "=== ${name}: done; $(tail -n 1 "${logdir}/${name}.log" | cut -c1-400)" >&2
    return 0
  fi
  if [[ ${#lock[@]} -gt 0 ]]; then  # a failed run must not hold the others at the barrier
    mkdir -p "${lockfile}.ready" && touch "${lockfile}.ready/failed-${name}"
  fi
  echo "=== ${name}: FAILED; the end of ${logdir}/${name}.log:" >&2
  tail -n 15 "${logdir}/${name}.log" >&2
  return 1
}

failed=()
per_wave="${CONCURRENT:-1}"
for ((first = 0; first < ${#names[@]}; first += per_wave)); do
  wave=("${names[@]:first:per_wave}")
  lock_for_wave "${#wave[@]}" "${first}"
  declare -A pids=()
  for name in "${wave[@]}"; do
    run "${name}" & pids[${name}]=$!
  done
  for name in "${wave[@]}"; do
    wait "${pids[${name}]}" || failed+=("${name}")
  done
  unset pids
done

if [[ ${#failed[@]} -gt 0 ]]; then
  printf 'failed: %s\n' "${failed[@]}" >&2
  exit 1
fi
