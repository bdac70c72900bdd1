"""Trains a method from a config file: `python -m launch.train --config=configs/cyclegan.py:digits`.

Thin entry point in the style of the Flax examples: flags in, `unpaired.train` does the
work. With no flags it trains CycleGAN on the built-in offline digits into
`workdirs/cyclegan_digits`; run it again to resume from the newest checkpoint there.
A missing config file, unknown preset, unknown `--config.key` or bad value ends in one
`error:` line (see `unpaired.cli`). The first lines say what trains where (the full config
is in `<workdir>/config.json`; `--verbose` prints it and the libraries' INFO logs).
"""

import os
import sys

from absl import app, flags
from ml_collections import config_flags

from unpaired import cli

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DEFAULT_CONFIG = os.path.join(_REPO, "configs", "cyclegan.py") + ":digits"

if __name__ == "__main__":  # before the flag below applies --config.x overrides to its default
    cli.exit_on_config_errors(sys.argv[1:], default_config=_DEFAULT_CONFIG)
config_flags.DEFINE_config_file(
    "config", _DEFAULT_CONFIG,
    "Config file and preset, e.g. configs/cyclegan.py:horse2zebra; override fields with --config.x=y.",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Where checkpoints, logs and samples go (default: workdirs/<method>_<preset>).")
# Multi-host (docs/scaling.md): run the same command on every host with its own --process_id.
flags.DEFINE_string("coordinator_address", "", "host:port of process 0 for jax.distributed "
                    "(or UNPAIRED_COORDINATOR_ADDRESS); empty: a single-process run.")
flags.DEFINE_integer("num_processes", None, "How many processes train together (or UNPAIRED_NUM_PROCESSES).")
flags.DEFINE_integer("process_id", None, "This process's index in [0, num_processes) (or UNPAIRED_PROCESS_ID).")
flags.DEFINE_bool("distributed", False, "Start jax.distributed with JAX's own cluster detection "
                  "(TPU pod slices, SLURM, Open MPI) when no coordinator is given.")
flags.DEFINE_integer("heartbeat_timeout", 100, "Seconds without a heartbeat after which the "
                     "other processes of a multi-host run stop with an error instead of waiting.")
_VERBOSE = cli.define_verbose()


def _default_workdir(config_arg: str, method: str) -> str:
    preset = config_arg.rsplit(":", 1)[1] if ":" in config_arg else "default"
    return os.path.join("workdirs", f"{method}_{preset}")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    cli.setup_logging(_VERBOSE.value)
    from unpaired import distributed  # before anything else touches the JAX backend
    try:
        distributed.initialize(flags.FLAGS.coordinator_address, flags.FLAGS.num_processes,
                               flags.FLAGS.process_id, auto=flags.FLAGS.distributed,
                               heartbeat_timeout_s=flags.FLAGS.heartbeat_timeout)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    import jax  # pylint: disable=import-outside-toplevel  (after flag parsing)

    from unpaired import checkpoint, config_validation, train
    from unpaired.data import DataError

    config = flags.FLAGS.config
    config_arg = getattr(flags.FLAGS["config"], "config_filename", "") or _DEFAULT_CONFIG
    workdir = flags.FLAGS.workdir or _default_workdir(config_arg, config.method)
    if distributed.is_primary():
        header = cli.header_lines(
            "training", config.method, config_arg, workdir,
            cli.describe_devices(jax.devices(), jax.process_count()),
            config_flags.get_override_values(flags.FLAGS["config"]))
        print("\n".join(header + ([f"config:\n{config}"] if _VERBOSE.value else [])), flush=True)
    try:
        train.train_and_evaluate(config, workdir)
    except (config_validation.ConfigError, DataError, checkpoint.CheckpointError,
            train.NonFiniteLossError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except Exception as err:  # pylint: disable=broad-except
        if jax.process_count() == 1 or not isinstance(err, jax.errors.JaxRuntimeError):
            raise
        # Another process died (or the network broke) during a collective: say so in one line
        # and leave now, before JAX's exit-time shutdown waits on the dead peers.
        print(f"error: process {jax.process_index()} of {jax.process_count()}: a collective with "
              f"the other processes failed ({str(err).splitlines()[0][:300]}); another process died "
              "or the network broke. Restart the job: training resumes from the newest checkpoint.",
              file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(1)  # pylint: disable=protected-access
    print(f"done: checkpoints in {workdir}/checkpoints, samples in {workdir}/samples, "
          f"TensorBoard events in {workdir}/tensorboard", flush=True)


if __name__ == "__main__":
    cli.run(main, default_config=_DEFAULT_CONFIG)  # flag and config errors in one line
