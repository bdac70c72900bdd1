"""Scale-out (issue 14): every method on 8 simulated devices, checkpoints across device counts,
per-device BatchNorm, jax.distributed flags, the loader's host shards, and 2 processes
training together on localhost (CPU, gloo).

The 8-device checks run in subprocesses (XLA_FLAGS must be set before JAX starts): two
at once, each over half of the methods (tests/multidevice_worker.py).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.scale_configs import cyclegan
from unpaired import checkpoint, config_validation, data, distributed, layers, methods

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(devices: int | None = None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    if devices:
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                            f" --xla_force_host_platform_device_count={devices}").strip()
    return env


def _communicate_all(procs: list, timeout: float) -> list[str]:
    """The outputs of `procs`; on a timeout (a hang) every one still running is killed first."""
    try:
        return [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()


def _flat(state) -> dict:
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(jax.device_get(state))[0]:
        if jnp.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        out[jax.tree_util.keystr(path)] = np.asarray(leaf)
    return out


def test_grouped_batch_norm_normalises_each_slice_by_itself():
    x = np.random.RandomState(0).normal(2.0, 3.0, (8, 3, 3, 2)).astype(np.float32)
    bn = layers.BatchNorm()
    variables = bn.init(jax.random.key(0), x, False)
    with distributed.per_device_batch_norm(4):
        y, new = bn.apply(variables, x, True, mutable=["batch_stats"])
    scale, bias = np.asarray(variables["params"]["scale"]), np.asarray(variables["params"]["bias"])
    means, variances = [], []
    for part, out in zip(np.split(x, 4), np.split(np.asarray(y), 4)):
        ref, stats = bn.apply(variables, part, True, mutable=["batch_stats"])
        np.testing.assert_allclose(out, np.asarray(ref), rtol=1e-5, atol=1e-5)
        mean, var = part.mean((0, 1, 2)), part.var((0, 1, 2))
        np.testing.assert_allclose(out, (part - mean) / np.sqrt(var + 1e-5) * scale + bias, atol=1e-4)
        means.append(mean)
        variances.append(var * 18 / 17)  # unbiased over the 2*3*3 values of one slice
    stats = new["batch_stats"]
    np.testing.assert_allclose(stats["mean"], 0.1 * np.mean(means, 0), rtol=1e-5)
    np.testing.assert_allclose(stats["var"], 0.9 + 0.1 * np.mean(variances, 0), rtol=1e-5)
    # groups=1 and outside the context: the whole batch's statistics, as before.
    with distributed.per_device_batch_norm(1):
        whole = bn.apply(variables, x, True, mutable=["batch_stats"])[0]
    np.testing.assert_array_equal(whole, bn.apply(variables, x, True, mutable=["batch_stats"])[0])
    assert np.max(np.abs(np.asarray(whole) - np.asarray(y))) > 1e-2
    with pytest.raises(ValueError, match="bn_sync"), distributed.per_device_batch_norm(3):
        bn.apply(variables, x, True, mutable=["batch_stats"])


def test_bn_sync_picks_the_groups_and_a_bad_value_is_named():
    config = cyclegan(norm="batch")
    assert distributed.bn_groups(config, 8) == 1
    config.bn_sync = False
    assert distributed.bn_groups(config, 8) == 8
    with config.ignore_type():  # e.g. a config file's typo; --config.bn_sync=no is refused by ml_collections
        config.bn_sync = "no"
    with pytest.raises(config_validation.ConfigError, match="config.bn_sync"):
        config_validation.validate(config, num_devices=1)
    config = cyclegan(norm="batch", batch_size=6)
    with pytest.raises(config_validation.ConfigError, match="config.batch_size=6"):
        config_validation.validate(config, num_devices=4)


def test_initialize_takes_flags_then_the_environment_and_names_what_is_missing(monkeypatch):
    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
    assert not distributed.initialize(env={})  # nothing asked: a single-process run
    assert distributed.initialize("10.0.0.1:1234", 4, 2, heartbeat_timeout_s=7, env={})
    assert calls[-1]["coordinator_address"] == "10.0.0.1:1234"
    assert (calls[-1]["num_processes"], calls[-1]["process_id"]) == (4, 2)
    assert calls[-1]["heartbeat_timeout_seconds"] == 7
    env = {distributed.ENV_COORDINATOR: "head:99", distributed.ENV_NUM_PROCESSES: "2",
           distributed.ENV_PROCESS_ID: "1"}
    assert distributed.initialize(env=env)
    assert (calls[-1]["coordinator_address"], calls[-1]["process_id"]) == ("head:99", 1)
    assert distributed.initialize(process_id=0, env=env) and calls[-1]["process_id"] == 0
    assert distributed.initialize(auto=True, env={})  # JAX's own cluster detection
    assert "coordinator_address" not in calls[-1]
    with pytest.raises(ValueError, match="missing num_processes, process_id"):
        distributed.initialize("head:99", env={})
    with pytest.raises(ValueError, match="process_id=2"):
        distributed.initialize("head:99", 2, 2, env={})
    with pytest.raises(ValueError, match="UNPAIRED_NUM_PROCESSES"):
        distributed.initialize(env={**env, distributed.ENV_NUM_PROCESSES: "two"})


def test_each_host_reads_its_own_contiguous_slice_of_every_global_batch():
    config = cyclegan(batch_size=4)
    spec = methods.get_method_class("cyclegan").data_spec(config)
    make = lambda i, n: data.make_loader(config.data, split="train", batch_size=4, seed=0, spec=spec,
                                         shard_index=i, shard_count=n)
    whole, first, second = make(0, 1), make(0, 2), make(1, 2)
    try:
        for step in (0, 5):
            full, a, b = whole.batch(step), first.batch(step), second.batch(step)
            for key in full:
                assert a[key].shape[0] == b[key].shape[0] == 2
                np.testing.assert_array_equal(np.concatenate([a[key], b[key]]), full[key])
                assert not np.array_equal(a[key], b[key])
    finally:
        for loader in (whole, first, second):
            loader.close()


def test_every_method_on_8_devices_equals_one_device_and_checkpoints_cross_device_counts(tmp_path):
    """Each method's sharded step == its one-device step (float64); 1 -> 8 -> 1 device checkpoints."""
    config = cyclegan()
    method = methods.build(config, steps_per_epoch=10)
    saved = method.create_state(jax.random.key(7))
    ckpt_in, ckpt_out = str(tmp_path / "from_1_device"), str(tmp_path / "from_8_devices")
    with checkpoint.Checkpointer(ckpt_in, keep=None) as ckpt:
        ckpt.save(0, saved, {"devices": 1})
    np.savez(f"{ckpt_in}.npz", **_flat(saved))

    worker = [sys.executable, "-m", "tests.multidevice_worker"]
    # Balanced by measured CPU time (compiles dominate: two per case, sharded and not).
    jobs = [worker + ["cyclegan_batchnorm", "dtn_pretrain", "bn_per_device", "bn_layer",
                      "ufdn_translation", ckpt_in, ckpt_out],
            worker + ["unit", "unit_da", "ufdn_uda", "dtn"]]
    procs = [subprocess.Popen(cmd, cwd=REPO, env=_env(8), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for cmd in jobs]
    outputs = _communicate_all(procs, timeout=1500)
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0 and "ALL OK" in out, out[-4000:]
    print("\n".join(outputs))

    # The 8-device checkpoint, restored on this 1-device process, bit for bit.
    with checkpoint.Checkpointer(ckpt_out, keep=None) as ckpt:
        restored, meta = ckpt.restore(method.create_state(jax.random.key(1)))
    assert meta["devices"] == 8 and int(restored.step) == 1
    expected = np.load(f"{ckpt_out}.npz")
    got = _flat(restored)
    assert set(got) == set(expected.files)
    for path, value in got.items():
        assert value.dtype == expected[path].dtype, path
        np.testing.assert_array_equal(value, expected[path], err_msg=path)
    np.testing.assert_array_equal(got[".params['G_A']['model_1']['kernel']"],
                                  _flat(saved)[".params['G_A']['model_1']['kernel']"] / 2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _two_processes(tmp_path, workdir, steps: int) -> list[dict]:
    """Runs tests.multihost_worker as processes 0 and 1 of one jax.distributed run; their reports."""
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, "-m", "tests.multihost_worker", f"localhost:{port}", "2", str(i),
         str(workdir), str(steps), str(tmp_path / f"p{i}.json")],
        cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for i in range(2)]
    outputs = _communicate_all(procs, timeout=900)
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-4000:]
    return [json.loads((tmp_path / f"p{i}.json").read_text()) for i in range(2)]


def test_two_processes_train_together_write_one_set_of_logs_and_agree_bit_for_bit(tmp_path):
    workdir = tmp_path / "run"
    results = _two_processes(tmp_path, workdir, 3)
    assert [r["process"] for r in results] == [0, 1] and results[0]["step"] == results[1]["step"] == 3
    assert results[0]["crc"] == results[1]["crc"] and len(results[0]["crc"]) > 50
    # One set of logs: process 0 alone wrote each line, grid and event file.
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3]
    assert sorted(os.listdir(workdir / "samples")) == ["step_00000002.png", "step_00000003.png"]
    assert len(os.listdir(workdir / "tensorboard")) == 1
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "3"]
    # The checkpoint both processes saved holds their (common) state.
    method = methods.build(cyclegan(batch_size=4), steps_per_epoch=10)
    with checkpoint.Checkpointer(workdir / "checkpoints", keep=None) as ckpt:
        restored, _ = ckpt.restore(method.create_state(jax.random.key(0)))
    assert checkpoint.leaf_checksums(restored) == results[0]["crc"]
    # Both processes restore it (orbax on every host) and go on together.
    resumed = _two_processes(tmp_path, workdir, 4)
    assert resumed[0]["step"] == resumed[1]["step"] == 4 and resumed[0]["crc"] == resumed[1]["crc"]
    assert resumed[0]["crc"] != results[0]["crc"]
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4]


def test_killing_one_process_stops_the_other_with_an_error_instead_of_a_hang(tmp_path):
    workdir, port = tmp_path / "run", _free_port()
    # The 2-process test's config (tests/multihost_worker.py): its compiled step is reused.
    flags = ["--config.ngf=4", "--config.ndf=4", "--config.netD=n_layers", "--config.n_layers_D=2",
             "--config.batch_size=4", "--config.pool_size=3", "--config.data.image_size=16",
             "--config.data.crop_size=16", "--config.data.load_size=16",
             "--config.data.num_workers=1", "--config.max_steps=100000",
             "--config.log_every=1", "--config.sample_every=100000", "--config.checkpoint_every=100000",
             f"--workdir={workdir}", f"--coordinator_address=localhost:{port}", "--num_processes=2",
             "--heartbeat_timeout=5"]
    procs = [subprocess.Popen([sys.executable, "-m", "launch.train", *flags, f"--process_id={i}"],
                              cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for i in range(2)]
    try:
        deadline = time.monotonic() + 600
        metrics = workdir / "metrics.jsonl"
        while not (metrics.exists() and metrics.read_text().count("\n") >= 2):
            assert time.monotonic() < deadline and procs[0].poll() is None, "training never started"
            time.sleep(0.5)
        procs[1].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        out = procs[0].communicate(timeout=120)[0]
        waited = time.monotonic() - killed_at
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    print(out[-3000:], f"\nstopped {waited:.1f} s after the kill")
    assert procs[0].returncode == 1, out[-3000:]
    assert "error: process 0 of 2: a collective with the other processes failed" in out, out[-3000:]
    assert "another process died" in out
    assert waited < 60  # gloo sees the closed connection; the heartbeat timeout is the backstop


def test_weak_scaling_benchmark_runs_on_2_simulated_devices():
    result = subprocess.run(
        [sys.executable, "-m", "launch.benchmark", "--config=configs/cyclegan.py:digits",
         "--config.ngf=4", "--config.ndf=4", "--config.netD=n_layers", "--config.n_layers_D=2",
         "--image_size=16", "--batch_size=1", "--devices=1,2", "--steps=2", "--warmup=0",
         "--allow_loaded"],  # the suite's other worker shares the cores
        cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert [r["devices"] for r in report["rows"]] == [1, 2]
    assert [r["global_batch"] for r in report["rows"]] == [1, 2]
    assert report["rows"][0]["weak_scaling_efficiency"] == 1.0
    assert all(r["img_per_s"] > 0 and r["weak_scaling_efficiency"] > 0 for r in report["rows"])
    assert "weak scaling on cpu" in result.stdout
    assert isinstance(report["loaded"], bool) and "other_busy_cores_timed" in report
