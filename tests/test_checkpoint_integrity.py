"""Checkpoint integrity: corruption on disk is detected, named, moved aside and never used.

Unit tests on a small synthetic state (``tests.test_checkpoint.make_state``), then the
trainer and the command lines on a tiny CycleGAN run (``tests.test_train.tiny_config``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import jax
import pytest

from tests.test_checkpoint import abstract, make_meta, make_state
from tests.test_train import flags_for, tiny_config
from unpaired import checkpoint, train, translate
from unpaired.checkpoint import CheckpointCorruptError, CheckpointError, Checkpointer, state_layout

REPO = Path(__file__).resolve().parents[1]


def state_files(step_dir: Path) -> list[Path]:
    return sorted(p for p in (step_dir / "state").rglob("*") if p.is_file())


def largest_state_file(step_dir: Path) -> Path:
    return max(state_files(step_dir), key=lambda p: p.stat().st_size)


def flip(path: Path, nbytes: int = 64, mask: int = 0xFF) -> None:
    """XORs ``nbytes`` bytes in the middle of ``path`` with ``mask`` (a bad disk, a bad copy)."""
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    for i in range(mid, min(mid + nbytes, len(data))):
        data[i] ^= mask
    path.write_bytes(bytes(data))


def truncate_half(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def one_clean_line(message: str) -> None:
    assert "\n" not in message, message
    assert "TensorStore(" not in message and "'driver'" not in message, message
    assert len(message) < 700, message


@pytest.fixture
def two_steps(tmp_path: Path) -> Checkpointer:
    ckpt = Checkpointer(tmp_path / "ckpt", async_save=False)
    ckpt.save(1, make_state(1), make_meta(1))
    ckpt.save(2, make_state(2), make_meta(2))
    return ckpt


# --------------------------------------------------------------------------- detection


def test_64_flipped_bytes_in_the_largest_array_file_are_detected_naming_the_array(two_steps):
    flip(largest_state_file(two_steps.directory / "2"))
    with pytest.raises(CheckpointCorruptError) as info:
        two_steps.restore(abstract(make_state(2)))
    err = info.value
    assert err.step == 2 and err.directory == two_steps.directory
    assert err.array in {path for path, _, _ in state_layout(make_state(2))}
    assert f"array {err.array}" in str(err) and "step 2" in str(err) and str(two_steps.directory) in str(err)
    one_clean_line(str(err))
    two_steps.close()


def test_every_single_bit_flip_in_the_state_is_detected_or_harmless(tmp_path):
    """A flipped bit anywhere in ``state/`` either fails the restore or changes no restored bit.

    Small arrays live inside OCDBT's b-tree nodes, large ones in data files: both kinds are
    covered, and at least one flip must be caught by the per-array CRC-32.
    """
    good = tmp_path / "good"
    with Checkpointer(good, async_save=False) as ckpt:
        ckpt.save(2, make_state(2), make_meta(2))
    expected, caught_by_crc, detected = make_state(2), 0, 0
    for rel in [p.relative_to(good) for p in state_files(good / "2")]:
        work = tmp_path / "work"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(good, work)
        flip(work / rel, nbytes=1, mask=0x10)
        with Checkpointer(work, async_save=False) as ckpt:
            try:
                restored, _ = ckpt.restore(abstract(expected))
            except CheckpointCorruptError as err:
                one_clean_line(str(err))
                detected += 1
                caught_by_crc += "CRC-32" in str(err)
                continue
        assert checkpoint.state_matches(jax.device_get(restored), expected), f"{rel}: silently corrupted"
    assert detected >= 3 and caught_by_crc >= 1


def test_truncated_array_file_is_detected_in_one_line_naming_the_array(two_steps):
    truncate_half(largest_state_file(two_steps.directory / "2"))
    with pytest.raises(CheckpointCorruptError, match=r"step 2 .*array \S+") as info:
        two_steps.restore(abstract(make_state(2)))
    one_clean_line(str(info.value))
    two_steps.close()


def test_checkpoint_without_checksums_restores_and_says_it_is_unverified(tmp_path, caplog):
    with Checkpointer(tmp_path, async_save=False, verify=False) as ckpt:  # as before checksums existed
        ckpt.save(3, make_state(3), make_meta(3))
    assert not (tmp_path / "3" / "checksums").exists()
    with caplog.at_level(logging.WARNING), Checkpointer(tmp_path, async_save=False) as ckpt:
        restored, _ = ckpt.restore(abstract(make_state(3)))
    assert checkpoint.state_matches(jax.device_get(restored), make_state(3))
    assert "step 3" in caplog.text and "unverified" in caplog.text


def test_verify_off_neither_writes_nor_checks(two_steps, tmp_path):
    """What verify=False trades away: a flip only the CRC catches goes through.

    The flipped file is the largest one whose flip the decoder does not catch itself (a
    zstd-compressed chunk fails to decode; OCDBT file names are random, so size ties
    would otherwise pick one at random)."""
    two_steps.close()
    files = sorted(state_files(two_steps.directory / "2"), key=lambda p: (-p.stat().st_size, p.name))
    for path in files:
        original = path.read_bytes()
        flip(path)
        try:
            with Checkpointer(two_steps.directory, async_save=False, verify=False) as ckpt:
                restored, _ = ckpt.restore(abstract(make_state(2)))
            break
        except checkpoint.CheckpointError:
            path.write_bytes(original)  # caught without the CRC: not what this test is about
    else:
        pytest.fail("every flip was caught by the decoder itself")
    assert not checkpoint.state_matches(jax.device_get(restored), make_state(2))
    with pytest.raises(CheckpointCorruptError, match="CRC-32"):
        with Checkpointer(two_steps.directory, async_save=False) as ckpt:
            ckpt.restore(abstract(make_state(2)))


# --------------------------------------------------------------------------- fall back


def test_restore_newest_good_moves_the_corrupt_step_aside_and_loads_the_previous(two_steps):
    bad = largest_state_file(two_steps.directory / "2")
    flip(bad)
    state, meta, step, skipped = two_steps.restore_newest_good(abstract(make_state(2)))
    assert step == 1 and meta == make_meta(1)
    assert checkpoint.state_matches(jax.device_get(state), make_state(1))
    assert skipped == ["step 2 (moved to 2.corrupt-1)"]
    assert two_steps.all_steps() == [1]
    moved = two_steps.directory / "2.corrupt-1" / bad.relative_to(two_steps.directory / "2")
    assert moved.is_file() and not bad.exists()
    # Saving goes on (orbax's step cache was refreshed) and never reuses a moved-aside name.
    two_steps.save(2, make_state(2), make_meta(2))
    flip(largest_state_file(two_steps.directory / "2"))
    _, _, step, skipped = two_steps.restore_newest_good(abstract(make_state(2)))
    assert step == 1 and skipped == ["step 2 (moved to 2.corrupt-2)"]
    assert (two_steps.directory / "2.corrupt-1").is_dir() and (two_steps.directory / "2.corrupt-2").is_dir()
    two_steps.save(2, make_state(2), make_meta(2))
    assert two_steps.all_steps() == [1, 2]
    two_steps.close()


def test_readers_do_not_move_anything(two_steps):
    truncate_half(largest_state_file(two_steps.directory / "2"))
    _, _, step, skipped = two_steps.restore_newest_good(abstract(make_state(2)), move_aside=False)
    assert step == 1 and skipped == ["step 2 (left in place)"]
    assert two_steps.all_steps() == [1, 2]
    two_steps.close()


def test_no_good_checkpoint_stops_in_one_line_and_keeps_them_all(tmp_path):
    ckpt = Checkpointer(tmp_path, async_save=False)
    ckpt.save(5, make_state(5), make_meta(5))
    truncate_half(largest_state_file(tmp_path / "5"))
    expected = r"no usable checkpoint .*step 5 \(moved to 5\.corrupt-1\); all are still on disk"
    with pytest.raises(CheckpointError, match=expected) as info:
        ckpt.restore_newest_good(abstract(make_state(5)))
    one_clean_line(str(info.value))
    assert (tmp_path / "5.corrupt-1" / "state").is_dir()
    ckpt.close()


def test_a_failed_restore_prints_no_event_loop_tracebacks(tmp_path):
    """orbax closes its event loop while TensorStore reads are still in flight; their callbacks
    used to print 'RuntimeError: Event loop is closed' tracebacks (timing-dependent, so several tries)."""
    with Checkpointer(tmp_path / "good", async_save=False) as ckpt:
        ckpt.save(2, make_state(2), make_meta(2))
    script = textwrap.dedent(f"""
        import shutil, sys
        from pathlib import Path
        from tests.test_checkpoint import abstract, make_state
        from tests.test_checkpoint_integrity import flip
        from unpaired.checkpoint import Checkpointer, CheckpointError
        good, work = Path({str(tmp_path / "good")!r}), Path({str(tmp_path / "work")!r})
        for attempt in range(6):
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(good, work)
            for f in (work / "2" / "state" / "d").iterdir():  # the arrays' zarr metadata
                flip(f, nbytes=1, mask=0x10)
            with Checkpointer(work, async_save=False) as ckpt:
                try:
                    ckpt.restore(abstract(make_state(2)))
                    sys.exit("restored a corrupted checkpoint")
                except CheckpointError as e:
                    print(e)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Event loop is closed" not in result.stderr and "Traceback" not in result.stderr, result.stderr[-3000:]


def test_the_unraisable_filter_drops_only_abandoned_orbax_reads(monkeypatch):
    """A read coroutine closed unfinished prints 'Exception ignored in <coroutine
    _read_array_index_and_device_put>' (seen in CI under load); the filter drops exactly that."""
    async def _read_array_index_and_device_put():  # orbax's name for one array read
        return None

    async def some_other_coroutine():
        return None

    def unraisable(coroutine_function, message):
        coroutine = coroutine_function()
        coroutine.close()
        return SimpleNamespace(object=coroutine, exc_type=Exception, exc_value=Exception(message),
                               exc_traceback=None, err_msg=None)

    passed_on = []
    monkeypatch.setattr(sys, "unraisablehook", passed_on.append)
    checkpoint._silence_closed_loop_callbacks()
    read_error = "Encountered error while reading array index: (slice(0, 3, 1),)"
    sys.unraisablehook(unraisable(_read_array_index_and_device_put, read_error))
    assert passed_on == []
    others = [unraisable(some_other_coroutine, read_error),
              unraisable(_read_array_index_and_device_put, "some other failure")]
    for other in others:
        sys.unraisablehook(other)
    assert passed_on == others


# --------------------------------------------------------------------------- training and CLIs


@pytest.fixture(scope="module")
def trained_4_steps(tmp_path_factory):
    """A tiny CycleGAN workdir with checkpoints at steps 2 and 4 (copied by each test)."""
    workdir = tmp_path_factory.mktemp("four")
    train.train_and_evaluate(tiny_config(max_steps=4), str(workdir))
    assert checkpoint.Checkpointer.for_workdir(workdir).all_steps() == [2, 4]
    return workdir


def copy_of(workdir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(workdir, target)
    return target


def test_training_with_a_corrupt_newest_checkpoint_resumes_from_the_previous_bit_identically(
        trained_4_steps, tmp_path):
    """Step 4 corrupt: the run goes back to step 2 and ends equal to the uninterrupted 0 -> 4 run."""
    workdir = copy_of(trained_4_steps, tmp_path)
    ckpt_dir = checkpoint.checkpoint_dir(workdir)
    flip(largest_state_file(ckpt_dir / "4"))
    resumed = train.train_and_evaluate(tiny_config(max_steps=4), str(workdir))
    template = jax.eval_shape(lambda: resumed)
    with checkpoint.Checkpointer.for_workdir(trained_4_steps) as ckpt:
        expected, _ = ckpt.restore(template, 4)
    assert int(resumed.step) == 4
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl", encoding="utf-8")]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 3, 4]  # resumed at step 2, not from scratch
    assert checkpoint.state_matches(jax.device_get(resumed), jax.device_get(expected))
    assert checkpoint.Checkpointer.for_workdir(workdir).all_steps() == [2, 4]
    assert (ckpt_dir / "4.corrupt-1" / "state").is_dir()


def test_train_cli_with_only_a_corrupt_checkpoint_stops_in_one_line_and_keeps_it(trained_4_steps, tmp_path):
    workdir = copy_of(trained_4_steps, tmp_path)
    ckpt_dir = checkpoint.checkpoint_dir(workdir)
    shutil.rmtree(ckpt_dir / "2")  # the test's doing: leave a single checkpoint
    truncate_half(largest_state_file(ckpt_dir / "4"))
    cmd = [sys.executable, "-m", "launch.train", f"--workdir={workdir}"] + flags_for(tiny_config(max_steps=6))
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=400)
    assert result.returncode != 0
    # One error line (orbax may print an abandoned read's repr after it at exit, under load).
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert errors[0].startswith("error: no usable checkpoint") and "step 4 (moved to 4.corrupt-1)" in errors[0]
    assert "Traceback" not in result.stderr and "Event loop" not in result.stderr, result.stderr[-3000:]
    assert (ckpt_dir / "4.corrupt-1" / "state").is_dir()
    assert checkpoint.Checkpointer.for_workdir(workdir).all_steps() == []


def test_translate_cli_uses_the_newest_good_step_and_says_which(trained_4_steps, tmp_path):
    workdir = copy_of(trained_4_steps, tmp_path)
    ckpt_dir = checkpoint.checkpoint_dir(workdir)
    flip(largest_state_file(ckpt_dir / "4"))
    image = tmp_path / "a.png"
    from PIL import Image
    Image.new("L", (16, 16), 128).save(image)
    cmd = [sys.executable, "-m", "launch.translate", f"--checkpoint={workdir}", f"--input={image}",
           f"--output={tmp_path / 'out'}"]
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "using checkpoint step 2" in result.stderr and "step 4" in result.stderr, result.stderr[-3000:]
    assert (tmp_path / "out" / "a.png").is_file()
    assert checkpoint.Checkpointer.for_workdir(workdir).all_steps() == [2, 4]  # readers move nothing
    assert "Traceback" not in result.stderr


def test_translate_with_no_good_checkpoint_reports_one_line(trained_4_steps, tmp_path):
    workdir = copy_of(trained_4_steps, tmp_path)
    ckpt_dir = checkpoint.checkpoint_dir(workdir)
    for step in ("2", "4"):
        truncate_half(largest_state_file(ckpt_dir / step))
    with pytest.raises(CheckpointError, match=r"no usable checkpoint in .*step 4, step 2") as info:
        translate.load_workdir_state(workdir)
    assert "\n" not in str(info.value)
    with pytest.raises(CheckpointCorruptError, match=r"step 4 .*array"):  # an explicit --step: no fallback
        translate.load_workdir_state(workdir, step=4)
    assert checkpoint.Checkpointer.for_workdir(workdir).all_steps() == [2, 4]
