"""Learning-rate schedules with the reference's per-epoch semantics, as optax schedules.

The reference (pytorch-CycleGAN-and-pix2pix, current master) steps its LambdaLR at the
end of every epoch, so the rate is constant within an epoch. Here the epoch is derived
from the optimizer's update count, so the schedule position lives in the optimizer
state and survives checkpoints: epoch e (0-based) = count // steps_per_epoch.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from unpaired.config_checks import ConfigError

LR_POLICIES = ("linear", "step", "cosine", "plateau", "constant")
# config.lr_schedule of the methods whose reference keeps one constant rate (DTN stage 1, UFDN).
LR_SCHEDULES = ("constant", "cosine")
# The reference's `ReduceLROnPlateau(mode='min', factor=0.2, threshold=0.01, patience=5)`,
# with torch's defaults threshold_mode='rel', cooldown=0, min_lr=0, eps=1e-8.
PLATEAU_FACTOR = 0.2
PLATEAU_PATIENCE = 5
PLATEAU_EPS = 1e-8


def constant_or_cosine(kind: str, lr: float, total_steps: int) -> float | optax.Schedule:
    """`lr` (kind 'constant', the references'), or a cosine decay from `lr` to 0 over
    `total_steps` (kind 'cosine'): small late steps settle a short run, so its last
    checkpoints are its best. Any other `kind` is a ConfigError naming config.lr_schedule."""
    if kind not in LR_SCHEDULES:
        raise ConfigError(f"config.lr_schedule={kind!r} must be one of {', '.join(LR_SCHEDULES)}")
    if kind == "constant":
        return lr
    return optax.cosine_decay_schedule(lr, max(int(total_steps), 1))


def plateau_reductions(epoch, lr: float):
    """How many times `lr_policy=plateau` has cut the rate before 0-based `epoch`.

    The reference steps its ReduceLROnPlateau once per epoch with `model.metric`, which
    CycleGAN never sets: the constant 0 of BaseModel. The first step sets best=0; every
    later one is no improvement (0 < 0 * 0.99 fails), so after patience + 1 such steps
    the rate is cut and the count restarts: cuts after steps 7, 13, 19, ... A cut that
    would change the rate by no more than eps is skipped, which caps the count.
    """
    cap, value = 0, lr
    while value - value * PLATEAU_FACTOR > PLATEAU_EPS:
        value *= PLATEAU_FACTOR
        cap += 1
    steps = jnp.asarray(epoch)  # scheduler steps taken before this epoch
    return jnp.clip((steps - 1) // (PLATEAU_PATIENCE + 1), 0, cap)


def epoch_schedule(
    lr: float,
    *,
    policy: str = "linear",
    steps_per_epoch: int,
    n_epochs: int = 100,
    n_epochs_decay: int = 100,
    epoch_count: int = 1,
    lr_decay_iters: int = 50,
) -> optax.Schedule:
    """lr(count) for the reference's `--lr_policy` (linear, step, cosine, plateau) or constant.

    linear: lr * (1 - max(0, e + epoch_count - n_epochs) / (n_epochs_decay + 1));
    step: lr * 0.1 ** (e // lr_decay_iters); cosine: lr * (1 + cos(pi * e / n_epochs)) / 2;
    plateau: lr * 0.2 ** `plateau_reductions(e, lr)` (a pure function of e for CycleGAN).
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    if policy not in LR_POLICIES:
        raise ValueError(f"unknown lr_policy {policy!r}; expected one of {LR_POLICIES}")

    def schedule(count):
        epoch = (jnp.asarray(count) // steps_per_epoch) * 1.0  # default float dtype (f64 under x64)
        if policy == "linear":
            factor = 1.0 - jnp.maximum(0.0, epoch + epoch_count - n_epochs) / (n_epochs_decay + 1)
        elif policy == "step":
            factor = 0.1 ** jnp.floor(epoch / lr_decay_iters)
        elif policy == "cosine":
            factor = (1.0 + jnp.cos(jnp.pi * epoch / n_epochs)) / 2.0
        elif policy == "plateau":
            cuts = plateau_reductions(jnp.asarray(count) // steps_per_epoch, lr)
            factor = PLATEAU_FACTOR ** (cuts * 1.0)
        else:
            factor = jnp.ones_like(epoch)
        return lr * factor

    return schedule


def adam(
    schedule: optax.Schedule, b1: float = 0.5, b2: float = 0.999, eps: float = 1e-8
) -> optax.GradientTransformation:
    """torch.optim.Adam(betas=(b1, b2), eps) with the learning rate readable from the state."""
    return optax.inject_hyperparams(optax.adam)(learning_rate=schedule, b1=b1, b2=b2, eps=eps)
