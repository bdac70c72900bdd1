"""The same training step on 2 devices (batch split, state replicated) as on one device.

Compared in float64: in float32, Adam's first updates of near-zero gradients flip with
rounding (a different reduction order across devices) and move parameters by 2 lr.
"""

import os
import subprocess
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import jax, jax.numpy as jnp, numpy as np
    jax.config.update("jax_enable_x64", True)
    from tests.test_parity_cyclegan_step import to_f64
    from tests.test_train import tiny_config
    from unpaired import methods, train
    assert jax.device_count() == 2, jax.devices()
    config = tiny_config(batch_size=4)
    method = methods.build(config)
    rng = np.random.RandomState(0)
    batches = [{k: rng.uniform(-1, 1, (4, 16, 16, 1)) for k in "AB"}
               for _ in range(3)]
    single = to_f64(method.create_state(jax.random.key(0)))
    single_step = jax.jit(method.train_step)
    for b in batches:
        single, m1 = single_step(single, b)
    mesh = train.data_mesh()
    step, replicated, batch_sharding = train.data_parallel(method, mesh)
    state = jax.device_put(to_f64(method.create_state(jax.random.key(0))), replicated)
    for b in batches:
        state, m2 = step(state, jax.device_put(b, batch_sharding))
    assert state.params["G_A"]["model_1"]["kernel"].sharding.is_fully_replicated
    # Network-wise: conv biases before InstanceNorm move by rounding noise only (see
    # tests/helpers.biases_before_instance_norm), so per-tensor ratios say nothing there.
    for net in state.params:
        ours, ref = jax.tree.leaves(state.params[net]), jax.tree.leaves(single.params[net])
        scale = max(float(np.max(np.abs(np.asarray(b)))) for b in ref)
        worst = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(ours, ref))
        print(net, "worst difference relative to the largest parameter", worst / scale)
        # 2e-8: those noise-driven biases move by up to lr * 1e-6 (Adam on a ~1e-14
        # gradient with eps 1e-8); a wrong reduction would be off by O(lr), 1e-2 here.
        assert worst / scale < 2e-8, (net, worst / scale)
    for k in m1:
        assert abs(float(m1[k]) - float(m2[k])) <= 1e-9 * max(1.0, abs(float(m1[k]))), k
    print("OK")
""")


def test_two_device_data_parallel_step_matches_one_device():
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()
    result = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "OK" in result.stdout
