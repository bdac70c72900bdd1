"""Keys every config of a method that counts its run in iterations shares (UNIT, UNIT DA, UFDN)."""

import ml_collections

from unpaired.eval.config import add_eval_keys


def add_run_keys(c: ml_collections.ConfigDict, *, max_steps: int, log_every: int,
                 sample_every: int, checkpoint_every: int) -> ml_collections.ConfigDict:
    """The generic loop's keys for a method that counts its run in iterations (UNIT, UNIT DA,
    UFDN): one epoch, float32, 3 checkpoints kept and verified, no staged start, eval keys."""
    c.n_epochs = 1                # the loop's epoch keys; the run is counted in max_steps
    c.n_epochs_decay = 0
    c.epoch_count = 1
    c.dtype = "float32"           # float32 (parity) | bfloat16
    c.max_steps = max_steps
    c.log_every = log_every
    c.sample_every = sample_every
    c.checkpoint_every = checkpoint_every
    c.keep_checkpoints = 3
    c.init_from = ""              # a workdir, or the method's official weights file
    c.init_networks = ""          # which networks to take from it (all: empty)
    c.verify_checkpoints = True
    add_eval_keys(c)           # eval_every (0: off) and the eval block (unpaired.eval)
    c.bn_sync = True  # BatchNorm statistics over the global batch; False: per device (docs/scaling.md)
    return c
