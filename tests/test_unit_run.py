"""UNIT end to end on the built-in digits: `launch.train` (grids, checkpoints, resume
bit-identical) and `launch.translate` from the workdir (gen_a.encode -> gen_b.decode)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from configs import unit as unit_config
from tests.helpers import workdir_at_step
from tests.overrides import set_keys
from unpaired import checkpoint, config_validation, methods, train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {"gen_dim": 4, "gen_n_res": 1, "dis_dim": 4, "dis_n_layer": 2, "batch_size": 2,
        "data.image_size": 16, "data.crop_size": 16, "data.load_size": 16,
        "data.num_workers": 1, "log_every": 1, "sample_every": 2, "checkpoint_every": 2}


def tiny_config(**overrides):
    config = unit_config.get_config("digits")
    return set_keys(config, {**TINY, **overrides})


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """4 steps through `python -m launch.train --config=configs/unit.py:digits`."""
    workdir = str(tmp_path_factory.mktemp("unit_cli"))
    flags = [f"--config.{k}={v}" for k, v in TINY.items()]
    cmd = [sys.executable, "-m", "launch.train", f"--workdir={workdir}",
           "--config=configs/unit.py:digits", "--config.max_steps=4"] + flags
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir


def test_cli_run_leaves_grids_checkpoints_and_every_loss_term(cli_run):
    assert checkpoint.Checkpointer.for_workdir(cli_run).all_steps() == [2, 4]
    assert sorted(os.listdir(os.path.join(cli_run, "samples"))) == [
        "step_00000002.png", "step_00000004.png"]
    grid = np.asarray(Image.open(os.path.join(cli_run, "samples", "step_00000004.png")))
    assert grid.shape[0] >= 16 * 2 and grid.std() > 0
    rows = [json.loads(line) for line in open(os.path.join(cli_run, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert {"G", "D", "adv_a", "recon_x_b", "recon_kl_cyc_aba", "dis_a", "lr"} <= set(rows[0])
    assert json.load(open(os.path.join(cli_run, "config.json")))["method"] == "unit"


def test_resumed_run_equals_the_cli_run_bit_for_bit(cli_run, tmp_path):
    config = tiny_config(max_steps=4)
    template = methods.build(config).create_state(jax.random.key(0))
    expected, _ = checkpoint.Checkpointer.for_workdir(cli_run).restore(template, 4)
    # The CLI process's step-2 checkpoint, resumed here for the last two steps.
    resumed = train.train_and_evaluate(tiny_config(max_steps=4), workdir_at_step(cli_run, 2, tmp_path))
    assert int(resumed.step) == 4
    assert checkpoint.state_matches(jax.device_get(resumed), jax.device_get(expected))


def test_translate_cli_from_the_workdir_is_encode_a_then_decode_b(cli_run, tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.RandomState(0)
    image = rng.randint(0, 256, (16, 16), np.uint8)
    Image.fromarray(image).save(src / "x.png")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "launch.translate", f"--checkpoint={cli_run}", f"--input={src}",
           f"--output={out}", "--direction=AtoB"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = np.asarray(Image.open(out / "x.png")).astype(np.float64)
    config = tiny_config(max_steps=4)
    method = methods.build(config)
    state, _ = checkpoint.Checkpointer.for_workdir(cli_run).restore(
        method.create_state(jax.random.key(0)), 4)
    x = (image.astype(np.float32) / 127.5 - 1.0)[None, :, :, None]
    h = method.encode("gen_a", state.params, x)
    want = np.asarray(method.decode("gen_b", state.params, h))[0, :, :, 0]
    assert np.max(np.abs(got - (want + 1.0) * 127.5)) <= 1.0


def test_presets_validate_and_bad_values_name_the_key():
    for preset in ("folder", "digits"):
        config = unit_config.get_config(preset)
        if preset == "folder":
            config.data.dataroot = REPO  # any existing folder; no image is read
        config_validation.validate(config)
    for key, value, message in [("vgg_w", -1.0, "config.vgg_w"), ("recon_h_w", 1.0, "config.recon_h_w"),
                                ("dis_n_layer", 6, "config.dis_n_layer"),
                                ("gen_pad_type", "circular", "config.gen_pad_type"),
                                ("gamma", 0.0, "config.gamma"), ("lr_policy", "linear", "config.lr_policy")]:
        config = tiny_config(**{key: value})
        with pytest.raises(config_validation.ConfigError, match=message.replace(".", r"\.")):
            config_validation.validate(config)
    with pytest.raises(ValueError, match="unknown unit preset"):
        unit_config.get_config("nope")
