"""The training application: resume bit-identically, survive kill -9, stop on NaN, clear errors."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from configs import cyclegan as cyclegan_config
from tests.helpers import fake_digits_root
from tests.overrides import set_keys
from unpaired import checkpoint, config_validation, methods, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(**overrides):
    """The digits preset shrunk to seconds per run: 16x16, 4-channel nets, batch 2."""
    config = cyclegan_config.get_config("digits")
    config.ngf = config.ndf = 4
    config.netD, config.n_layers_D = "n_layers", 2  # a 2x2 logit map at 16x16
    config.batch_size = 2
    config.pool_size = 3
    config.data.image_size = config.data.crop_size = config.data.load_size = 16
    config.data.num_workers = 1
    config.log_every = 1
    config.sample_every = 2
    config.checkpoint_every = 2
    return set_keys(config, overrides)


def flags_for(config):
    """The --config.x=y flags that turn the digits preset into `config`."""
    return [f"--config.ngf={config.ngf}", f"--config.ndf={config.ndf}",
            f"--config.netD={config.netD}", f"--config.n_layers_D={config.n_layers_D}",
            f"--config.batch_size={config.batch_size}", f"--config.pool_size={config.pool_size}",
            f"--config.data.image_size={config.data.image_size}",
            f"--config.data.crop_size={config.data.crop_size}",
            f"--config.data.load_size={config.data.load_size}", "--config.data.num_workers=1",
            f"--config.max_steps={config.max_steps}", "--config.log_every=1",
            f"--config.checkpoint_every={config.checkpoint_every}",
            f"--config.sample_every={config.sample_every}"]


def assert_first_screen_is_short(text, workdir):
    """What launch.train prints before its first progress line: a few plain lines saying
    what trains where and from which step, no absl prefixes, no config dump."""
    lines = text.splitlines()
    first = next(i for i, line in enumerate(lines) if re.search(r"\d+/\d+ .*step/s", line))
    screen = "\n".join(lines[:first])
    assert first <= 14, screen
    assert lines[0].startswith("training cyclegan (configs/cyclegan.py, preset digits) on 1 cpu")
    assert f"workdir: {workdir}" in screen and f"starting a new run in {workdir}" in screen
    assert "training from step 0 to 6" in screen and "overrides: ngf=4 ndf=4" in screen
    assert not re.search(r"^[IWEF]\d{4} ", text, re.M), screen  # absl's `I1207 07:31:59.64 ...`
    assert "config:" not in text and "lambda_identity" not in text and "batch_size: 2" not in text


def leaves_equal(a, b):
    return checkpoint.state_matches(jax.device_get(a), jax.device_get(b))


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    """6 steps without interruption: the reference every resumed run must equal bit for bit."""
    workdir = str(tmp_path_factory.mktemp("straight"))
    state = train.train_and_evaluate(tiny_config(max_steps=6), workdir)
    return workdir, jax.device_get(state)


def test_default_run_leaves_checkpoints_events_samples_and_metrics(straight_run):
    workdir, state = straight_run
    assert int(state.step) == 6
    assert checkpoint.Checkpointer.for_workdir(workdir).all_steps() == [2, 4, 6]
    assert sorted(os.listdir(os.path.join(workdir, "samples"))) == [
        "step_00000002.png", "step_00000004.png", "step_00000006.png"]
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(workdir, "tensorboard")))
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert {"G", "D", "G_A", "cycle_A", "idt_A", "D_A", "lr"} <= set(rows[0])
    assert json.load(open(os.path.join(workdir, "config.json")))["ngf"] == 4


def test_resumed_run_equals_the_uninterrupted_run_bit_for_bit(straight_run, tmp_path):
    _, expected = straight_run
    workdir = str(tmp_path)
    train.train_and_evaluate(tiny_config(max_steps=3, checkpoint_every=3), workdir)
    resumed = train.train_and_evaluate(tiny_config(max_steps=6), workdir)
    assert int(resumed.step) == 6
    assert leaves_equal(resumed, expected)


def test_kill_9_during_training_then_resume_equals_the_uninterrupted_run(straight_run, tmp_path):
    """SIGKILL a training process (checkpointing every step) as soon as step 2 is saved."""
    _, expected = straight_run
    workdir = str(tmp_path / "run")
    config = tiny_config(max_steps=6, checkpoint_every=1)
    cmd = [sys.executable, "-m", "launch.train", f"--workdir={workdir}"] + flags_for(config)
    output = tmp_path / "output.txt"  # a file, not a pipe: an undrained pipe could block the run
    with open(output, "w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    ckpt_dir = os.path.join(workdir, "checkpoints")
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if os.path.isdir(os.path.join(ckpt_dir, "2")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert_first_screen_is_short(output.read_text(), workdir)
    latest = checkpoint.Checkpointer.for_workdir(workdir).latest_step()
    assert latest is not None and 2 <= latest < 6
    # Resumed here (the command line's resume is test_init_from's and test_ufdn_run's).
    finished = train.train_and_evaluate(config, workdir)
    assert int(finished.step) == 6
    method = methods.build(config)
    template = method.create_state(jax.random.key(0))
    state, meta = checkpoint.Checkpointer.for_workdir(workdir).restore(template)
    assert meta["data_step"] == 6
    assert leaves_equal(state, expected) and leaves_equal(finished, expected)


def test_nan_loss_stops_names_the_loss_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    original = methods.build

    def poisoned_build(config, steps_per_epoch=1):
        method = original(config, steps_per_epoch)
        step = method.train_step

        def train_step(state, batch):
            new_state, metrics = step(state, batch)
            bad = jax.numpy.where(state.step >= 3, jax.numpy.nan, 1.0)
            return new_state, {**metrics, "cycle_A": metrics["cycle_A"] * bad}

        method.train_step = train_step
        return method

    monkeypatch.setattr(methods, "build", poisoned_build)
    with pytest.raises(train.NonFiniteLossError, match=r"cycle_A=nan at step 4.*last good checkpoint is step 2"):
        train.train_and_evaluate(tiny_config(max_steps=6), str(tmp_path))
    assert checkpoint.Checkpointer.for_workdir(str(tmp_path)).all_steps() == [2]


def test_checkpoint_from_another_config_names_the_parameters_and_the_config_keys(tmp_path):
    train.train_and_evaluate(tiny_config(max_steps=2), str(tmp_path))
    with pytest.raises(checkpoint.CheckpointMismatchError, match=r"(?s)G_A/model_1/kernel.*config\.ngf: 4 -> 8"):
        train.train_and_evaluate(tiny_config(max_steps=4, ngf=8), str(tmp_path))


@pytest.mark.parametrize("key,value,message", [
    ("data.crop_size", 300, r"config\.data\.crop_size=300 is larger than config\.data\.load_size"),
    ("data.crop_size", 30, r"config\.data\.crop_size=30 must be a multiple of 4"),
    ("netG", "resnet_12blocks", r"config\.netG='resnet_12blocks' is not one of"),
    ("gan_mode", "wgan", r"config\.gan_mode='wgan'"),
    ("lr", -1.0, r"config\.lr=-1\.0 must be > 0"),
    ("beta1", 1.5, r"config\.beta1=1\.5 must be in"),
    ("data.source", "web", r"config\.data\.source='web'"),
    ("data.preprocess", "zoom", r"config\.data\.preprocess='zoom'"),
    ("pool_size", -1, r"config\.pool_size=-1 must be >= 0"),
    ("data.crop_size", 16, r"config\.data\.crop_size=16 is too small for config\.netD='basic'"),
    ("output_nc", 1, r"config\.lambda_identity=0\.5 needs config\.input_nc == config\.output_nc"),
])
def test_impossible_config_values_fail_naming_the_key(key, value, message):
    config = cyclegan_config.get_config("horse2zebra")
    if key.startswith("data."):
        config.data[key[5:]] = value
    else:
        config[key] = value
    with pytest.raises(config_validation.ConfigError, match=message):
        config_validation.validate(config)


def test_presets_validate_and_unknown_presets_fail(monkeypatch, tmp_path):
    monkeypatch.setenv("UNPAIRED_DATA", fake_digits_root(tmp_path))  # mnist2usps's IDX files exist
    for preset in ("digits", "horse2zebra", "folder", "mnist2usps"):
        config_validation.validate(cyclegan_config.get_config(preset))
    with pytest.raises(ValueError, match="unknown cyclegan preset"):
        cyclegan_config.get_config("zebra")


def test_command_line_rejects_unknown_keys_and_bad_types_naming_them(tmp_path):
    for flag, needle in (("--config.learning_rate=1", "learning_rate"),
                         ("--config.lr=fast", "lr"),
                         ("--config.data.crop_size=300", "config.data.crop_size=300")):
        result = subprocess.run(
            [sys.executable, "-m", "launch.train", f"--workdir={tmp_path}", flag],
            cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode != 0
        assert needle in result.stderr, result.stderr[-1500:]


def test_plan_run_follows_epochs_unless_max_steps_is_set():
    config = tiny_config()
    config.max_steps = -1
    config.n_epochs, config.n_epochs_decay = 2, 1
    assert train.plan_run(config, 10).total_steps == 30
    config.epoch_count = 2
    assert train.plan_run(config, 10).total_steps == 20
    config.max_steps = 7
    assert train.plan_run(config, 10).total_steps == 7


def test_config_differences_ignore_list_for_tuple_and_name_real_changes():
    """A saved config's lists (JSON) equal the live tuples; a changed item is still named."""
    saved = {"lambdas": {"feat_domain": [0.0, 1.0, 200], "kl": [1e-3, 2e-3, [1, 2]]}, "lr": 1e-4}
    same = {"lambdas": {"feat_domain": (0.0, 1.0, 200), "kl": (1e-3, 2e-3, (1, 2))}, "lr": 1e-4}
    assert train._config_differences(saved, same) == []
    changed = {"lambdas": {"feat_domain": (0.0, 1.0, 300), "kl": (1e-3, 2e-3)}, "lr": 1e-4}
    assert train._config_differences(saved, changed) == [
        "config.lambdas.feat_domain: [0.0, 1.0, 200] -> (0.0, 1.0, 300)",
        "config.lambdas.kl: [0.001, 0.002, [1, 2]] -> (0.001, 0.002)"]
