"""Checks run in a process with 8 simulated CPU devices (started by tests/test_scale_out.py).

`python -m tests.multidevice_worker <ckpt_in> <ckpt_out>` with
XLA_FLAGS=--xla_force_host_platform_device_count=8. For every method: data-parallel steps
on 8 devices (`distributed.data_parallel_step`, which the training loop's
`train.data_parallel` returns) equal one-device steps on the same global batch (float64;
CycleGAN over 2 steps); BatchNorm with per-device statistics (config.bn_sync=False, on
DTN's classifier f) equals the same grouping on one device and differs from synchronised
statistics. Then restores the checkpoint the 1-device test
process wrote into an 8-device replicated state and saves one of its own for the other way.
"""

from __future__ import annotations

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

from tests.scale_configs import CASES, DEVICES, cyclegan  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

from unpaired import checkpoint, distributed, layers, methods, train  # noqa: E402


# CycleGAN over 2 steps: the second reads the image pools and Adam moments the first left.
STEPS = {"cyclegan_batchnorm": 2}


def to_f64(tree):
    return jax.tree.map(
        lambda x: x.astype(jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def batches(config, n=2, seed=0):
    """n random global batches with every domain (and label) the method reads, float64."""
    spec = methods.get_method_class(config.method).data_spec(config)
    size = config.data.crop_size
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(n):
        b = {d: rng.uniform(-1, 1, (config.batch_size, size, size, spec.channels[d])) for d in spec.domains}
        for d in spec.labels:
            b[spec.label_key(d)] = rng.randint(0, 10, config.batch_size).astype(np.int32)
        out.append(b)
    return out


def worst_relative(a, b):
    """Per network: max |a - b| over its leaves relative to its largest parameter."""
    out = {}
    for net in b.params:
        ours, ref = jax.tree.leaves(a.params[net]), jax.tree.leaves(b.params[net])
        scale = max(float(np.max(np.abs(np.asarray(x)))) for x in ref)
        out[net] = max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(ours, ref)) / scale
    return out


def run_single(method, state, data, groups):
    step = jax.jit(distributed.traced_step(method, groups))
    for b in data:
        state, metrics = step(state, b)
    return state, metrics


def run_sharded(method, state, data, groups):
    step, replicated, batch_sharding = distributed.data_parallel_step(method, train.data_mesh(), groups)
    state = jax.device_put(state, replicated)
    for b in data:
        state, metrics = step(state, jax.device_put(b, batch_sharding))
    assert all(x.sharding.is_fully_replicated and len(x.sharding.device_set) == DEVICES
               for x in jax.tree.leaves(state.params))
    return state, metrics


def check_method(name, config, groups=1, steps=1):
    """Sharded over 8 devices == one device on the same global batch (params, stats, pools, metrics)."""
    method = methods.build(config, steps_per_epoch=10)
    data = batches(config, n=steps)
    state = to_f64(method.create_state(jax.random.key(0)))
    single, m1 = run_single(method, state, data, groups)
    sharded, m2 = run_sharded(method, state, data, groups)
    errors = worst_relative(sharded, single)
    print(name, f"groups={groups}", {k: f"{v:.1e}" for k, v in errors.items()}, flush=True)
    # 2e-8: conv biases before an InstanceNorm move by noise only (Adam on a ~1e-14 gradient
    # with eps 1e-8 moves them by up to lr * 1e-6; tests/helpers.biases_before_instance_norm); a
    # wrong reduction or per-shard noise moves parameters by O(lr) = 1e-4 relative.
    assert max(errors.values()) < 2e-8, (name, errors)
    for part in ("model_state", "buffers"):  # BatchNorm statistics, image pools
        for x, y in zip(jax.tree.leaves(getattr(sharded, part)), jax.tree.leaves(getattr(single, part))):
            if jnp.issubdtype(x.dtype, jnp.floating):
                np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-9, atol=1e-12,
                                           err_msg=f"{name} {part}")
            else:
                np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=f"{name} {part}")
    for k in m1:
        assert abs(float(m1[k]) - float(m2[k])) <= 1e-9 * max(1.0, abs(float(m1[k]))), (name, k)
    return single


def check_batch_norm_layer_per_device():
    """The grouped statistics are each device's own: equal to BatchNorm run per shard (shard_map)."""
    mesh = train.data_mesh()
    x = np.random.RandomState(5).normal(1.0, 2.0, (2 * DEVICES, 4, 4, 3))
    bn = layers.BatchNorm()
    variables = to_f64(bn.init(jax.random.key(0), x, False))
    apply = lambda v, x: bn.apply(v, x, True, mutable=["batch_stats"])

    def grouped(v, x):
        with distributed.per_device_batch_norm(DEVICES):
            return apply(v, x)

    def per_shard(v, x):
        y, new = apply(v, x)
        stats = {k: jax.lax.pmean(new["batch_stats"][k], "data") for k in ("mean", "var")}
        return y, stats

    x_sharded = jax.device_put(x, NamedSharding(mesh, PartitionSpec("data")))
    y, new = jax.jit(grouped)(variables, x_sharded)
    y_ref, stats_ref = jax.jit(jax.shard_map(per_shard, mesh=mesh, in_specs=(PartitionSpec(), PartitionSpec("data")),
                                             out_specs=(PartitionSpec("data"), PartitionSpec())))(variables, x_sharded)
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), rtol=0, atol=1e-12)
    for k in ("mean", "var"):
        np.testing.assert_allclose(np.asarray(new["batch_stats"][k]), np.asarray(stats_ref[k]), rtol=1e-12)
    synced, _ = jax.jit(apply)(variables, x_sharded)
    assert float(np.max(np.abs(np.asarray(synced) - np.asarray(y)))) > 1e-3
    print("per-device BatchNorm layer == shard_map per shard OK", flush=True)


def flat_host(state):
    """{path: host array} of every leaf (typed PRNG keys as their key data), to compare bits."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(state))[0]:
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out[jax.tree_util.keystr(path)] = np.asarray(leaf)
    return out


def check_checkpoint_round_trip(ckpt_in: str, ckpt_out: str) -> None:
    """Restore the 1-device test process's checkpoint onto 8 devices; save one from 8 devices."""
    config = cyclegan()
    method = methods.build(config, steps_per_epoch=10)
    mesh = train.data_mesh()
    replicated = NamedSharding(mesh, PartitionSpec())
    template = distributed.replicated_state(method, jax.random.key(1), replicated)
    with checkpoint.Checkpointer(ckpt_in, keep=None) as ckpt:
        restored, _ = ckpt.restore(template)
    assert all(len(x.sharding.device_set) == DEVICES for x in jax.tree.leaves(restored))
    expected = np.load(f"{ckpt_in}.npz")
    for path, value in flat_host(restored).items():
        np.testing.assert_array_equal(value, expected[path], err_msg=path)
    # A different state, computed on the 8 devices: floats halved, the step advanced.
    halve = lambda x: x / 2 if jnp.issubdtype(x.dtype, jnp.floating) else x
    state = jax.jit(lambda s: jax.tree.map(halve, s).replace(step=s.step + 1),
                    out_shardings=replicated)(restored)
    with checkpoint.Checkpointer(ckpt_out, keep=None) as ckpt:
        ckpt.save(int(state.step), state, {"devices": DEVICES})
    np.savez(f"{ckpt_out}.npz", **flat_host(state))
    print("checkpoint round trip on 8 devices OK", flush=True)


def main(argv):
    assert jax.device_count() == DEVICES, jax.devices()
    names = [a for a in argv[1:] if not a.startswith("/")]
    paths = [a for a in argv[1:] if a.startswith("/")]
    results = {}
    for name in names:
        t = time.process_time()
        if name == "bn_layer":
            check_batch_norm_layer_per_device()
        elif name == "bn_per_device":  # DTN's classifier f (BatchNorm), config.bn_sync=False
            config = CASES["dtn_pretrain"]()
            config.bn_sync = False
            groups = distributed.bn_groups(config, jax.device_count())
            assert groups == DEVICES
            per_device = check_method(name, config, groups=groups)
            synced = results["dtn_pretrain"]  # run before it, same batch and initial state
            assert max(worst_relative(per_device, synced).values()) > 1e-6, "bn_sync=False changed nothing"
        else:
            results[name] = check_method(name, CASES[name](), steps=STEPS.get(name, 1))
        print(f"  {time.process_time() - t:.1f} s CPU", flush=True)
    if len(paths) == 2:
        with jax.enable_x64(False):  # the float32 state the 1-device process saved
            check_checkpoint_round_trip(*paths)
    print("ALL OK", flush=True)


if __name__ == "__main__":
    main(sys.argv)
