"""Tests for unpaired.checkpoint: round trip, retention, mismatch errors, kill -9, disk full.

Run as ``python -m tests.test_checkpoint child <dir> <mode>`` this module is the
child process of the kill -9 test (see ``_child_main``).
"""

from __future__ import annotations

import errno
import os
import queue
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import struct

from unpaired.checkpoint import (
    CheckpointError,
    Checkpointer,
    CheckpointMismatchError,
    checkpoint_dir,
    state_layout,
    state_matches,
)

REPO = Path(__file__).resolve().parents[1]
TMP = ".orbax-checkpoint-tmp"


@struct.dataclass
class TrainState:
    step: jax.Array
    params: dict
    opt_state: Any
    pools: dict
    key: jax.Array
    model_state: dict


def _tx() -> optax.GradientTransformation:
    return optax.inject_hyperparams(optax.adam)(learning_rate=2e-4, b1=0.5)


@jax.jit
def _opt_state(params: dict, step: jax.Array) -> Any:
    """Adam state after one update with step-dependent gradients (non-zero mu, nu, count)."""
    tx = _tx()
    opt_state = tx.init(params)
    grads = jax.tree.map(lambda p: jnp.sin(p * (step + 1)), params)
    return tx.update(grads, opt_state, params)[1]


def make_state(step: int, *, width: int = 8, big: bool = False, typed_key: bool = True) -> TrainState:
    """A realistic TrainState whose every bit is a deterministic function of ``step``.

    ``big`` makes it ~12 MB (4 MB kernel plus Adam mu/nu) so a kill can land
    in the middle of writing it.
    """
    rng = np.random.default_rng(step)
    n = 1_000_000 if big else 64
    params = {
        "G_A": {
            "model_1": {
                "kernel": jnp.asarray(rng.standard_normal((7, 7, 3, width), dtype=np.float32)),
                "bias": jnp.asarray(rng.standard_normal((width,), dtype=np.float32)),
            },
            "big": {"w": jnp.asarray(rng.standard_normal((n,), dtype=np.float32))},
        },
        "D_A": {"conv": {"kernel": jnp.asarray(rng.standard_normal((4, 4, 3, 4), dtype=np.float32))}},
    }
    opt_state = _opt_state(params, step)
    key = jax.random.key(step) if typed_key else jax.random.PRNGKey(step)
    return TrainState(
        step=jnp.asarray(step, jnp.int32),
        params=params,
        opt_state=opt_state,
        pools={
            "fake_A": jnp.asarray(rng.integers(0, 256, (50 if big else 4, 16, 16, 3), dtype=np.uint8)),
            "fake_B": jnp.asarray(rng.uniform(-1, 1, (4, 16, 16, 3)).astype(np.float32)),
        },
        key=jax.random.fold_in(key, 7),
        model_state={},
    )


def make_meta(step: int) -> dict:
    return {"config": {"method": "cyclegan", "lr": 2e-4, "sizes": [1, 2]}, "data_step": step, "version": "0.1.0"}


def abstract(state: Any) -> Any:
    return jax.eval_shape(lambda: state)


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("typed_key", [True, False], ids=["typed_key", "raw_key"])
@pytest.mark.parametrize("template_kind", ["concrete", "abstract"])
def test_round_trip_is_bitwise(tmp_path, typed_key, template_kind):
    state = make_state(3, typed_key=typed_key)
    with Checkpointer(checkpoint_dir(tmp_path)) as ckpt:
        assert ckpt.latest_step() is None
        assert ckpt.save(3, state, make_meta(3))
    assert (tmp_path / "checkpoints" / "3").is_dir()

    with Checkpointer.for_workdir(tmp_path) as ckpt:
        assert ckpt.latest_step() == 3
        other = make_state(99, typed_key=typed_key)  # same tree, other values
        template = other if template_kind == "concrete" else abstract(other)
        restored, meta = ckpt.restore(template)
    assert isinstance(restored, TrainState)
    assert jax.tree.structure(restored) == jax.tree.structure(state)
    assert state_layout(restored) == state_layout(state)
    assert state_matches(restored, state)
    assert meta == make_meta(3)
    if typed_key:
        assert jax.dtypes.issubdtype(restored.key.dtype, jax.dtypes.prng_key)
        # The restored key continues the same random stream.
        np.testing.assert_array_equal(jax.random.normal(restored.key, (3,)), jax.random.normal(state.key, (3,)))
    assert restored.step.dtype == jnp.int32 and restored.pools["fake_A"].dtype == jnp.uint8
    assert restored.opt_state.hyperparams["learning_rate"] == pytest.approx(2e-4)


def test_zero_size_leaves_round_trip(tmp_path):
    """E.g. an image pool of size 0 (orbax cannot store zero-size arrays itself)."""
    state = make_state(2)
    state = state.replace(pools={**state.pools, "empty": jnp.zeros((0, 16, 16, 3), jnp.uint8)})
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(2, state, make_meta(2))
        for template in [state, abstract(state)]:
            restored, _ = ckpt.restore(template)
            assert state_matches(restored, state)
        grown = r"pools/empty: checkpoint \(0,16,16,3\) vs model \(5,16,16,3\)"
        with pytest.raises(CheckpointMismatchError, match=grown):
            ckpt.restore(state.replace(pools={**state.pools, "empty": jnp.zeros((5, 16, 16, 3), jnp.uint8)}))


def test_state_matches_is_bitwise():
    a = make_state(1)
    assert state_matches(a, make_state(1))
    assert not state_matches(a, make_state(2))
    assert not state_matches(a, a.replace(key=jax.random.key(123)))
    bias = a.params["G_A"]["model_1"]["bias"]
    one_ulp = jax.tree.map(lambda x: x, a.params)
    one_ulp["G_A"]["model_1"]["bias"] = bias.at[0].set(np.nextafter(bias[0], np.float32(9)))
    assert not state_matches(a, a.replace(params=one_ulp))
    nan = {"x": jnp.array([np.nan, 1.0])}
    assert state_matches(nan, {"x": jnp.array([np.nan, 1.0])})
    assert not state_matches({"x": jnp.zeros(2)}, {"x": jnp.zeros(2, jnp.int32)})
    assert not state_matches({"x": jnp.zeros(2)}, {"y": jnp.zeros(2)})


# --------------------------------------------------------------------------- retention, steps


def test_keeps_newest_n_and_reopens(tmp_path):
    with Checkpointer(tmp_path, keep=2) as ckpt:
        for step in [10, 20, 30, 40, 50]:
            assert ckpt.save(step, make_state(step), make_meta(step))
        ckpt.wait()
        assert ckpt.all_steps() == [40, 50]
    assert sorted(os.listdir(tmp_path)) == ["40", "50"]  # no tmp or trash left behind
    with Checkpointer(tmp_path, keep=2) as ckpt:
        assert ckpt.latest_step() == 50
        ckpt.save(60, make_state(60), make_meta(60))
        ckpt.wait()
        assert ckpt.all_steps() == [50, 60]
        restored, meta = ckpt.restore(make_state(0), step=50)
        assert state_matches(restored, make_state(50)) and meta["data_step"] == 50


def test_restore_explicit_step_and_missing_step(tmp_path):
    with Checkpointer(tmp_path, keep=None) as ckpt:
        for step in [1, 2, 3]:
            ckpt.save(step, make_state(step), make_meta(step))
        restored, meta = ckpt.restore(make_state(0), step=2)
        assert state_matches(restored, make_state(2)) and meta == make_meta(2)
        assert ckpt.read_meta(2) == make_meta(2) and ckpt.read_meta()["data_step"] == 3
        restored, _ = ckpt.restore(make_state(0))
        assert state_matches(restored, make_state(3))
        with pytest.raises(CheckpointError, match=rf"no checkpoint for step 7 in {tmp_path}.*\[1, 2, 3\]"):
            ckpt.restore(make_state(0), step=7)


def test_restore_from_empty_directory_raises(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(CheckpointError, match=f"no complete checkpoint in {tmp_path}"):
            ckpt.restore(make_state(0))


def test_latest_step_ignores_temporary_and_foreign_entries(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        ckpt.save(5, make_state(5), make_meta(5))
    junk = [f"9{TMP}", f"4{TMP}-1700000000", "notes", "12abc", "007", ".trash"]
    for name in junk:
        (tmp_path / name).mkdir()
    (tmp_path / "11").write_text("a file, not a checkpoint")
    with Checkpointer(tmp_path) as reader:
        assert reader.all_steps() == [5]
        assert reader.latest_step() == 5
        restored, _ = reader.restore(make_state(0))
        assert state_matches(restored, make_state(5))
    assert all((tmp_path / name).exists() for name in junk)  # a reader deletes nothing
    with Checkpointer(tmp_path) as writer:
        writer.save(6, make_state(6), make_meta(6))  # a writer clears what a dead writer left
    assert sorted(os.listdir(tmp_path)) == ["007", "11", "12abc", "5", "6", "notes"]


def test_existing_or_older_step_is_not_saved_unless_forced(tmp_path):
    with Checkpointer(tmp_path, keep=None) as ckpt:
        assert ckpt.save(5, make_state(5), make_meta(5))
        assert not ckpt.save(5, make_state(6), make_meta(6))  # never overwrites
        assert not ckpt.save(3, make_state(3), make_meta(3))  # older: skipped ...
        assert ckpt.save(3, make_state(3), make_meta(3), force=True)  # ... unless forced
        ckpt.wait()
        assert ckpt.all_steps() == [3, 5]
        restored, _ = ckpt.restore(make_state(0), step=5)
        assert state_matches(restored, make_state(5))


def test_meta_must_be_json(tmp_path):
    with Checkpointer(tmp_path) as ckpt:
        with pytest.raises(CheckpointError, match="not JSON-serializable"):
            ckpt.save(1, make_state(1), {"bad": object()})
        assert ckpt.latest_step() is None
        assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- mismatch


def _saved(tmp_path: Path) -> Checkpointer:
    ckpt = Checkpointer(tmp_path)
    ckpt.save(1, make_state(1, width=64), make_meta(1))
    return ckpt


def test_mismatch_names_path_shapes_and_directory(tmp_path):
    with _saved(tmp_path) as ckpt:
        with pytest.raises(CheckpointMismatchError) as err:
            ckpt.restore(make_state(0, width=32))
    msg = str(err.value)
    assert str(tmp_path) in msg and "step 1" in msg
    assert err.value.mismatches[0] == "params/G_A/model_1/bias: checkpoint (64,) vs model (32,)"
    assert "params/G_A/model_1/kernel: checkpoint (7,7,3,64) vs model (7,7,3,32)" in msg
    assert "opt_state/inner_state/0/mu/G_A/model_1/kernel: checkpoint (7,7,3,64) vs model (7,7,3,32)" in msg


def test_mismatch_missing_and_extra_keys(tmp_path):
    with _saved(tmp_path) as ckpt:
        state = make_state(0, width=64)
        params = {k: v for k, v in state.params.items() if k != "D_A"}
        params["G_B"] = {"w": jnp.zeros((2, 2))}
        with pytest.raises(CheckpointMismatchError) as err:
            ckpt.restore(state.replace(params=params))
        msg = str(err.value)
        assert "params/G_B/w: missing from checkpoint (model has (2,2) float32)" in msg
        assert "params/D_A/conv/kernel: in checkpoint ((4,4,3,4) float32) but not in model" in msg

        with pytest.raises(CheckpointMismatchError, match="model_state/bn/mean: missing from checkpoint"):
            ckpt.restore(state.replace(model_state={"bn": {"mean": jnp.zeros(3)}}))


def test_mismatch_dtype_and_key_kind_are_not_cast(tmp_path):
    with _saved(tmp_path) as ckpt:
        state = make_state(0, width=64)
        as_bf16 = state.replace(pools={**state.pools, "fake_B": state.pools["fake_B"].astype(jnp.bfloat16)})
        bf16_msg = "pools/fake_B: checkpoint dtype float32 vs model dtype bfloat16"
        with pytest.raises(CheckpointMismatchError, match=bf16_msg):
            ckpt.restore(abstract(as_bf16))
        with pytest.raises(CheckpointMismatchError, match=r"key: checkpoint \(\) key<fry> vs model \(2,\) uint32"):
            ckpt.restore(make_state(0, width=64, typed_key=False))


# --------------------------------------------------------------------------- async


def test_async_save_then_restore_after_wait(tmp_path):
    ckpt = Checkpointer(tmp_path, async_save=True)
    state = make_state(4)
    ckpt.save(4, state, make_meta(4))
    ckpt.wait()
    assert ckpt.latest_step() == 4
    restored, meta = ckpt.restore(abstract(state))
    assert state_matches(restored, state) and meta == make_meta(4)
    ckpt.close()


def test_async_save_survives_deleting_the_saved_buffers(tmp_path):
    ckpt = Checkpointer(tmp_path, async_save=True)
    state = make_state(4, big=True)
    ckpt.save(4, state, make_meta(4))
    for leaf in jax.tree.leaves(state):  # as a donating train step would
        leaf.delete()
    ckpt.save(5, make_state(5), make_meta(5))  # waits for 4 first: no overlap
    restored, _ = ckpt.restore(make_state(0, big=True), step=4)
    assert state_matches(restored, make_state(4, big=True))
    ckpt.close()


# --------------------------------------------------------------------------- disk full

# After a failed async write orbax (0.12.8) leaves tensorstore callbacks aimed at
# an event loop it has closed; Python reports them as unraisable. Harmless noise.
orbax_aborted_write_noise = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@orbax_aborted_write_noise
@pytest.mark.parametrize("async_save", [True, False], ids=["async", "sync"])
def test_disk_full_keeps_previous_checkpoint(tmp_path, monkeypatch, async_save):
    from orbax.checkpoint._src.path import async_path  # what orbax writes small files with

    ckpt = Checkpointer(tmp_path, keep=1, async_save=async_save)
    ckpt.save(1, make_state(1), make_meta(1))
    ckpt.wait()

    real_write_text = async_path.write_text
    calls = []

    async def full_disk(path, text):
        if f"2{TMP}" in str(path):  # only the save of step 2, after some of it is written
            calls.append(str(path))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return await real_write_text(path, text)

    monkeypatch.setattr(async_path, "write_text", full_disk)
    with pytest.raises(CheckpointError) as err:
        ckpt.save(2, make_state(2), make_meta(2))
        ckpt.wait()
    assert calls, "the patched writer was not used; orbax internals changed?"
    msg = str(err.value)
    assert "disk full (No space left on device)" in msg
    assert str(tmp_path) in msg and "step 2" in msg and "still step 1" in msg
    assert isinstance(err.value.__cause__, Exception)

    assert ckpt.all_steps() == [1]
    assert sorted(os.listdir(tmp_path)) == ["1"]  # partial step 2 removed to free space
    restored, meta = ckpt.restore(make_state(0))
    assert state_matches(restored, make_state(1)) and meta == make_meta(1)

    monkeypatch.setattr(async_path, "write_text", real_write_text)  # space freed
    ckpt.save(3, make_state(3), make_meta(3))
    ckpt.close()
    assert Checkpointer(tmp_path).all_steps() == [3]


@orbax_aborted_write_noise
def test_disk_full_on_a_real_tiny_filesystem(tmp_path):
    """The same with a real ENOSPC (tensorstore reports it as a ValueError); needs root for tmpfs."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root on Linux to mount a tmpfs")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount tmpfs: {mounted.stderr.decode().strip()}")
    try:
        ckpt = Checkpointer(mnt, keep=1)
        ckpt.save(1, make_state(1), make_meta(1))
        ckpt.wait()
        with pytest.raises(CheckpointError, match=r"disk full \(No space left on device\).*still step 1") as err:
            ckpt.save(2, make_state(2, big=True), make_meta(2))
            ckpt.wait()
        assert str(mnt) in str(err.value)
        assert ckpt.all_steps() == [1]
        restored, _ = ckpt.restore(make_state(0))
        assert state_matches(restored, make_state(1))
        ckpt.close()
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


# --------------------------------------------------------------------------- kill -9


def _child_main(directory: str, mode: str) -> None:
    """Resumes from ``directory`` (checking what it restores), then saves big states forever."""
    ckpt = Checkpointer(directory, keep=2, async_save=True)
    start = ckpt.latest_step()
    if start is not None:
        restored, meta = ckpt.restore(abstract(make_state(0, big=True)))
        assert state_matches(restored, make_state(start, big=True)) and meta == make_meta(start)
    else:
        start = 0
    print(f"resumed {start}", flush=True)
    if mode == "finalize":  # stop with every file written but the step not yet renamed into place
        from orbax.checkpoint._src.path import atomicity

        real_finalize = atomicity.AtomicRenameTemporaryPath.finalize

        async def slow_finalize(self):
            if self.get_final().name.isdigit() and int(self.get_final().name) >= start + 2:
                print(f"finalizing {self.get_final().name}", flush=True)
                time.sleep(120)
            return await real_finalize(self)

        atomicity.AtomicRenameTemporaryPath.finalize = slow_finalize
    prev = None
    for step in range(start + 1, start + 1000):
        state = make_state(step, big=True)
        print(f"saving {step}", flush=True)
        ckpt.save(step, state, make_meta(step))
        if prev is not None:
            print(f"committed {prev}", flush=True)  # save() waits for the previous save
        prev = step


def _run_and_kill(directory: Path, mode: str, rng: random.Random) -> tuple[list[str], list[str]]:
    """Runs the child until a kill point of kind ``mode``; returns its output lines and the dir listing at the kill."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu", "TF_CPP_MIN_LOG_LEVEL": "3"}
    stderr_path = directory.parent / f"child-{mode}.stderr"  # a file: an undrained pipe could block the child
    with open(stderr_path, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.test_checkpoint", "child", str(directory), mode],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True,
        )
    lines: list[str] = []
    q: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            q.put(line.strip())

    threading.Thread(target=pump, daemon=True).start()

    def child_failed() -> AssertionError:
        proc.kill()
        proc.wait(timeout=30)
        return AssertionError(f"child died or hung; output {lines}; stderr:\n{stderr_path.read_text()[-3000:]}")

    def next_line(timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = q.get(timeout=0.2)
                break
            except queue.Empty:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise child_failed() from None
        lines.append(line)
        return line

    try:
        while not (line := next_line(60)).startswith("resumed"):
            pass
        start = int(line.split()[1])
        if mode == "finalize":
            while not next_line(60).startswith("finalizing"):
                pass
        elif mode.startswith("tmp"):  # a save of step >= start+2 is under way (tmp dir exists)
            deadline = time.monotonic() + 60
            target = {f"{s}{TMP}" for s in range(start + 2, start + 50)}
            while not target.intersection(os.listdir(directory)):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise child_failed()
                time.sleep(0.0005)
            if mode == "tmp+delay":
                time.sleep(0.03)
        elif mode == "random":
            while next_line(60) != f"saving {start + 2}":
                pass
            time.sleep(rng.uniform(0.0, 0.6))
        listing = sorted(os.listdir(directory))
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    while not q.empty():
        lines.append(q.get())
    return lines, listing


def test_kill9_during_save_leaves_last_complete_checkpoint(tmp_path):
    directory = tmp_path / "checkpoints"
    rng = random.Random(0)
    seen_mid_save = False
    for mode in ["tmp", "finalize", "tmp+delay", "random"]:
        lines, listing = _run_and_kill(directory, mode, rng)
        started = [int(line.split()[1]) for line in lines if line.startswith("saving")]
        committed = [int(line.split()[1]) for line in lines if line.startswith("committed")]
        seen_mid_save |= any(name.endswith(TMP) for name in listing)

        ckpt = Checkpointer(directory, keep=2)
        steps = ckpt.all_steps()
        latest = ckpt.latest_step()
        assert latest is not None, (mode, lines, listing)
        assert latest <= max(started), (mode, lines, listing)
        if committed:
            assert latest >= max(committed), (mode, lines, listing)
        if mode == "finalize":  # fully written but not renamed: must not count
            finalizing = int([line for line in lines if line.startswith("finalizing")][0].split()[1])
            assert f"{finalizing}{TMP}" in listing and latest == finalizing - 1, (lines, listing)
        for step in steps:  # every checkpoint that is listed is complete and exact
            restored, meta = ckpt.restore(abstract(make_state(0, big=True)), step=step)
            assert state_matches(restored, make_state(step, big=True)), (mode, step)
            assert meta == make_meta(step)
        ckpt.close()
    assert seen_mid_save


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "child":
    _child_main(sys.argv[2], sys.argv[3])
