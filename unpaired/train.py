"""The training loop, the same for every method: data, jitted steps, logs, checkpoints, resume.

`train_and_evaluate(config, workdir)` builds the method named by `config.method`, resumes
from the newest checkpoint in `workdir` if there is one (the whole TrainState and the data
position, so the run continues bit-identically), and trains until `config.max_steps` or
the end of the preset's epochs. The device never waits on the host inside the loop:
metrics are fetched every `config.log_every` steps, batches are prefetched to the device.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding

import unpaired
from unpaired import checkpoint, config_validation, data, distributed, init_from, logs, methods, translate

log = logging.getLogger(__name__)

SAMPLE_IMAGES = 4


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or inf; the message names it and the last good checkpoint."""


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """How long the run is: steps per epoch (from the data) and the step to stop at."""

    steps_per_epoch: int
    total_steps: int


def plan_run(config: ml_collections.ConfigDict, steps_per_epoch: int) -> RunPlan:
    """Total steps: `max_steps` if set, else epochs epoch_count..n_epochs+n_epochs_decay."""
    epochs = config.n_epochs + config.n_epochs_decay - config.epoch_count + 1
    total = epochs * steps_per_epoch
    if config.max_steps > 0:
        total = config.max_steps
    return RunPlan(steps_per_epoch, total)


def data_mesh() -> jax.sharding.Mesh:
    """A 1-D mesh over every device: the batch is split along it, the state replicated.

    Auto (compiler-propagated) sharding: the steps are written for one device and XLA
    inserts the gradient all-reduce, as with pmap but without changing the code.
    """
    axis_type = getattr(jax.sharding, "AxisType", None)
    if axis_type is None:  # older JAX: every mesh axis is automatic
        return jax.make_mesh((jax.device_count(),), ("data",))
    return jax.make_mesh((jax.device_count(),), ("data",), axis_types=(axis_type.Auto,))


def data_parallel(method: Any, mesh: jax.sharding.Mesh) -> tuple[Any, NamedSharding, NamedSharding]:
    """(jitted step, state sharding, batch sharding): batch split over 'data', state replicated.

    The step donates its input state; the output state stays replicated, so the same
    code runs on one CPU or many accelerators. (Synchronised BatchNorm; see
    `unpaired.distributed.data_parallel_step` for per-device statistics.)
    """
    return distributed.data_parallel_step(method, mesh)


def _fetch_finite(metrics: Mapping[str, Any], step: int, last_good: int | None) -> dict[str, float]:
    """Host copies of the metrics; NonFiniteLossError naming each loss that is NaN or inf."""
    values = {k: float(v) for k, v in jax.device_get(dict(metrics)).items()}
    bad = sorted(k for k, v in values.items() if not math.isfinite(v))
    if bad:
        where = (f"the last good checkpoint is step {last_good}" if last_good is not None
                 else "no checkpoint was written")
        raise NonFiniteLossError(
            f"loss {', '.join(f'{k}={values[k]}' for k in bad)} at step {step}; training "
            f"stopped and {where}. Lower config.lr, check the data, or resume from there."
        )
    return values


def _same_value(a: Any, b: Any) -> bool:
    """Equal config values, a list equal to the tuple with the same items: a saved config
    comes back from JSON with lists where the live one has tuples (UFDN's lambda schedules)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    return a == b


def _config_differences(saved: Mapping[str, Any], current: Mapping[str, Any], prefix: str = "config") -> list[str]:
    """`config.key: saved -> current` for every key whose value differs."""
    out = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key, "<absent>"), current.get(key, "<absent>")
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out += _config_differences(a, b, f"{prefix}.{key}")
        elif not _same_value(a, b):
            out.append(f"{prefix}.{key}: {a!r} -> {b!r}")
    return out


def restore_or_create(
    method: Any, config: ml_collections.ConfigDict, ckpt: checkpoint.Checkpointer,
    sharding: NamedSharding | None = None,
) -> tuple[Any, int | None]:
    """The newest good checkpointed state in the workdir, or a fresh one; and its step (or None).

    Unreadable or corrupt newer checkpoints are moved aside (`<step>.corrupt-<n>`), never deleted.
    With several processes and a `sharding`, the state is created (and restored) with it:
    global arrays spanning every host, as orbax and the jitted step need there.
    """
    if sharding is not None and jax.process_count() > 1:
        state = distributed.replicated_state(method, jax.random.key(config.seed), sharding)
    else:
        state = method.create_state(jax.random.key(config.seed))
    if ckpt.latest_step() is None:
        return state, None
    try:
        state, meta, latest, _ = ckpt.restore_newest_good(state)
    except checkpoint.CheckpointMismatchError as err:
        saved_config = ckpt.read_meta(ckpt.latest_step()).get("config", {})
        changes = _config_differences(saved_config, config.to_dict())
        raise checkpoint.CheckpointMismatchError(
            f"{err}\nThe config differs from the one the checkpoint was trained with: "
            + ("; ".join(changes) or "(no key differs: the code's networks changed)")
            + ". Use another --workdir to start a new run.", err.mismatches) from err
    changes = _config_differences(meta.get("config", {}), config.to_dict())
    benign = [c for c in changes if not c.startswith(("config.max_steps", "config.log_every",
                                                      "config.sample_every", "config.checkpoint_every",
                                                      "config.eval_every", "config.eval.",
                                                      "config.keep_checkpoints", "config.data.num_workers",
                                                      # ignored on resume (logged) / checks only:
                                                      "config.init_from", "config.init_networks",
                                                      "config.verify_checkpoints"))]
    if benign:
        log.warning("resuming step %d with a changed config: %s", latest, "; ".join(benign))
    return state, latest


def start_or_resume(
    method: Any, config: ml_collections.ConfigDict, ckpt: checkpoint.Checkpointer, state: Any,
    restored_step: int | None, workdir: str,
) -> tuple[Any, dict[str, Any] | None]:
    """Says whether the run starts or resumes; a new run takes config.init_from's networks.

    Returns the state and the record of where its initial weights came from (kept in
    every checkpoint's meta; a resumed run carries its first stage's record forward).
    """
    source = config.get("init_from", "")
    if restored_step is not None:
        log.info("resuming from step %d in %s", restored_step, workdir)
        if source:
            log.info("config.init_from=%s is ignored: the run resumes from its own checkpoint", source)
        return state, ckpt.read_meta(restored_step).get("init_from")
    log.info("starting a new run in %s", workdir)
    if not source:
        return state, None
    state, record = init_from.apply_init(method, config, state)
    names = ", ".join(o if o == t else f"{o} (its {t})" for o, t in record.networks.items())
    where = record.path if record.step is None else f"{record.path} step {record.step}"
    log.info("initialising %s from %s", names, where)
    return state, record.to_meta()


def _make_evaluator(method: Any, config: ml_collections.ConfigDict, workdir: str) -> Any:
    """unpaired.eval's in-training evaluator when config.eval_every > 0 (imported only then)."""
    if int(config.get("eval_every", 0)) <= 0:
        return None
    from unpaired.eval import during_training  # pylint: disable=import-outside-toplevel

    return during_training.make_evaluator(method, config, workdir)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> Any:
    """Trains `config.method` in `workdir` (resuming if it holds checkpoints); returns the final state."""
    config_validation.validate(config, num_devices=jax.device_count())
    init_from.validate_init(config, methods.get_method_class(config.method))
    os.makedirs(workdir, exist_ok=True)
    loader = data.make_loader(
        config.data, split="train", batch_size=config.batch_size, seed=config.seed,
        spec=methods.get_method_class(config.method).data_spec(config),
        shard_index=jax.process_index(), shard_count=jax.process_count())
    plan = plan_run(config, loader.steps_per_epoch)
    method = methods.build(config, plan.steps_per_epoch)
    ckpt = checkpoint.Checkpointer.for_workdir(
        workdir, keep=config.keep_checkpoints, verify=config.get("verify_checkpoints", True))
    mesh = data_mesh()
    train_step, replicated, batch_sharding = distributed.data_parallel_step(
        method, mesh, distributed.bn_groups(config, jax.device_count()))
    try:
        state, last_good = restore_or_create(method, config, ckpt, replicated)
        state, init_record = start_or_resume(method, config, ckpt, state, last_good, workdir)
        evaluator = _make_evaluator(method, config, workdir)
    except BaseException:
        ckpt.close()  # release orbax's threads and the data workers before the error propagates
        loader.close()
        raise
    start = int(state.step)
    primary = distributed.is_primary()  # one host writes config.json, logs, grids and events
    if primary:
        with open(os.path.join(workdir, "config.json"), "w", encoding="utf-8") as f:
            json.dump(config.to_dict(), f, indent=2)
    if start >= plan.total_steps:
        log.info("step %d already reached the planned %d steps; nothing to do", start, plan.total_steps)
        ckpt.close()
        loader.close()
        return state

    state = jax.device_put(state, replicated)
    visuals = jax.jit(method.visuals)
    sample = {k: v[:SAMPLE_IMAGES] for k, v in loader.batch(0).items()}

    writer = logs.MetricWriter(workdir) if primary else distributed.NullWriter()
    os.makedirs(os.path.join(workdir, "samples"), exist_ok=True)
    batches = data.prefetch_to_device(
        loader.iterate(start, plan.total_steps - start), size=2, sharding=batch_sharding)
    log.info("training from step %d to %d (%d steps per epoch)", start, plan.total_steps,
             plan.steps_per_epoch)

    def checkpoint_meta(step: int) -> dict[str, Any]:
        meta = {"config": config.to_dict(), "method": config.method, "data_step": step,
                "version": unpaired.__version__}
        if init_record is not None:
            meta["init_from"] = init_record
        return meta

    def save(step: int, metrics: Mapping[str, Any]) -> None:
        nonlocal last_good
        _fetch_finite(metrics, step, last_good)  # never checkpoint a state that went bad
        ckpt.save(step, state, checkpoint_meta(step))
        last_good = step

    def write_samples(step: int) -> None:
        images = jax.device_get(visuals(state.params, sample, state.model_state))
        if not primary:
            return
        grid = logs.image_grid([images[k] for k in method.visual_names])
        logs.save_png(grid, os.path.join(workdir, "samples", f"step_{step:08d}.png"))
        writer.image(step, "samples", grid)

    step = start
    metrics: Mapping[str, Any] = {}
    bar = logs.ProgressBar(plan.total_steps, start, stream=None if primary else io.StringIO())
    try:
        for batch in batches:
            state, metrics = train_step(state, batch)
            step += 1
            last = step == plan.total_steps
            if step % config.log_every == 0 or last:
                values = _fetch_finite(metrics, step, last_good)
                values["steps_per_s"] = bar.rate(step)
                writer.scalars(step, values)
                bar.update(step, {k: values[k] for k in ("G", "D") if k in values})
            if step % config.sample_every == 0 or last:
                write_samples(step)
            if step % config.checkpoint_every == 0 or last:
                save(step, metrics)
            if evaluator is not None and (step % config.eval_every == 0 or last):
                evaluator(step, state, writer, checkpoint_meta(step))
    except KeyboardInterrupt:
        if step > start and (last_good is None or step > last_good):
            log.warning("interrupted at step %d; saving a checkpoint before exiting", step)
            try:
                save(step, metrics)
            except Exception as err:  # e.g. interrupted inside a step whose inputs were donated
                log.warning("could not save at step %d (%s); step %s is the newest", step, err, last_good)
        raise
    finally:
        bar.close()
        batches.close()
        loader.close()
        writer.close()
        ckpt.close()
    if loader.skipped:
        log.warning("%d unreadable images were skipped: %s", loader.skipped, loader.bad_items)
    finish = getattr(method, "after_training", None)  # e.g. DTN stage 1's test accuracy
    if finish is not None:
        finish(state, workdir, translate.load_workdir_state)
    return state
