"""UFDN from the command line: a short `digits` run (3 domains), resume, translate by target/code.

The training subprocesses share the session's compilation cache (tests/conftest.py), so
the resumed run and the in-process straight run reuse the first run's compiled step.
"""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from configs import ufdn as ufdn_config
from unpaired import checkpoint, config_validation, methods, train
from unpaired import translate as tr
from unpaired.methods.translation import TranslationRequest

from tests.helpers import fake_digits_root

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = ["--config=configs/ufdn.py:digits", "--config.batch_size=2", "--config.log_every=1",
         "--config.sample_every=2", "--config.checkpoint_every=2", "--config.data.num_workers=1"]


def _run(module, *args):
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _config(max_steps):
    config = ufdn_config.get_config("digits")
    config.batch_size, config.log_every = 2, 1
    config.sample_every = config.checkpoint_every = 2
    config.data.num_workers = 1
    config.max_steps = max_steps
    return config


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """A run of 2 steps from launch.train, resumed to 3 steps by a second launch."""
    workdir = str(tmp_path_factory.mktemp("ufdn_resumed"))
    _run("launch.train", f"--workdir={workdir}", *FLAGS, "--config.max_steps=2")
    _run("launch.train", f"--workdir={workdir}", *FLAGS, "--config.max_steps=3")
    return workdir


def test_run_writes_grids_checkpoints_and_resumes_bit_identically(resumed, tmp_path):
    samples = sorted(os.listdir(os.path.join(resumed, "samples")))
    assert samples, "no sample grid written"
    grid = np.asarray(Image.open(os.path.join(resumed, "samples", samples[-1])))
    # 3 domains x (input + 3 translations) + 5 interpolation columns, 2 rows of samples.
    assert grid.shape[1] > grid.shape[0] * 5
    _, state, _ = tr.load_workdir_state(resumed)
    assert int(state.step) == 3
    straight = train.train_and_evaluate(_config(3), str(tmp_path))
    # The translate loader restores networks only (no optimizer state): compare those,
    # the step key and the step; the parameters carry every Adam update.
    ours, theirs = jax.device_get((state, straight))
    for part in ("params", "model_state"):
        assert checkpoint.state_matches(getattr(ours, part), getattr(theirs, part)), part
    assert np.array_equal(jax.random.key_data(ours.key), jax.random.key_data(theirs.key))


def test_translate_by_target_and_code(resumed, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.RandomState(0)
    for i in range(2):
        Image.fromarray(rng.randint(0, 255, (32, 32, 3), np.uint8)).save(inputs / f"{i}.png")
    # One command line (--target=B); the other flag forms through the same conversion the
    # command makes (make_request, then load_generator and translate_path), in this process.
    _run("launch.translate", f"--checkpoint={resumed}", f"--input={inputs}",
         f"--output={tmp_path / 'target'}", "--target=B")
    outs = {"target": np.asarray(Image.open(tmp_path / "target" / "0.png"), np.float64)}
    for name, target, code in (("index", "1", None), ("onehot", None, "0,1,0"),
                               ("mix", None, "0.3,0.7,0")):
        generator = tr.load_generator(resumed, request=tr.make_request(None, target, code))
        tr.translate_path(generator, inputs, tmp_path / name)
        outs[name] = np.asarray(Image.open(tmp_path / name / "0.png"), np.float64)
    assert np.array_equal(outs["target"], outs["index"])
    assert np.array_equal(outs["target"], outs["onehot"])
    assert outs["mix"].shape == outs["target"].shape
    # After 3 steps the code's effect is below 8-bit resolution: compare in float.
    method, state, _ = tr.load_workdir_state(resumed)
    x = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    one = method.translate(state.params, x, TranslationRequest(target="B"), state.model_state)
    mix = method.translate(state.params, x, TranslationRequest(code=(0.3, 0.7, 0.0)),
                           state.model_state)
    assert np.abs(np.asarray(one) - np.asarray(mix)).max() > 0


def test_requests_are_resolved_or_refused_naming_the_flag():
    method = methods.build(_config(1))
    assert method.resolve_request(TranslationRequest(target="C")).code == (0.0, 0.0, 1.0)
    assert method.resolve_request(TranslationRequest(target=0)).code == (1.0, 0.0, 0.0)
    assert method.resolve_request(TranslationRequest(code=(0.3, 0.7, 0))).code == (0.3, 0.7, 0.0)
    for request, needle in ((TranslationRequest(direction="AtoB"), "--direction"),
                            (TranslationRequest(target="Z"), "--target"),
                            (TranslationRequest(target=3), "--target"),
                            (TranslationRequest(code=(1.0, 0.0)), "--code")):
        with pytest.raises(ValueError, match=needle):
            method.resolve_request(request)


def test_presets_validate_and_bad_values_name_their_key(monkeypatch, tmp_path):
    monkeypatch.setenv("UNPAIRED_DATA", fake_digits_root(tmp_path))  # uda's MNIST/USPS files exist
    for preset in ("digits", "face", "uda", "folder"):
        config_validation.validate(ufdn_config.get_config(preset))
    for key, value, needle in (("procedure", "gan", "config.procedure"),
                               ("lambdas.kl", (1e-6, 1e-6, 0), "config.lambdas.kl"),
                               ("data.domains", "A", "config.data.domains"),
                               ("data.image_size", 64, "config.data.image_size"),
                               ("beta1", 1.5, "config.beta1"),
                               ("lr_schedule", "linear", "config.lr_schedule"),
                               ("max_steps", -1, "config.max_steps")):
        config = ufdn_config.get_config("digits")
        if key == "max_steps":  # only a cosine decay needs a length
            config.lr_schedule = "cosine"
        target = config
        *parents, leaf = key.split(".")
        for p in parents:
            target = target[p]
        target[leaf] = value
        with pytest.raises(config_validation.ConfigError, match=needle.replace(".", r"\.")):
            config_validation.validate(config)


def test_cosine_lr_schedule_decays_every_adam_to_zero_over_max_steps():
    """lr_schedule='cosine' (opt-in; the reference's rate is constant) takes every group's
    Adam from lr to 0 over max_steps; the default keeps the reference's constant rate."""
    config = ufdn_config.get_config("digits")
    config.max_steps = 10
    grads = {"w": jax.numpy.linspace(-1.0, 1.0, 4)}

    def update_at(config, group, count):
        """The group's update of `grads` with the optimizer's step counts set to `count`."""
        tx = methods.build(config, steps_per_epoch=1).tx[group]
        state = jax.tree.map(lambda x: x + count if getattr(x, "dtype", None) == jax.numpy.int32
                             and x.shape == () else x, tx.init(grads))
        return np.asarray(tx.update(grads, state, grads)[0]["w"])

    constant = {c: update_at(config, "vae", c) for c in (0, 5, 10)}
    config.lr_schedule = "cosine"
    for group in ("vae", "D_feat"):  # same Adam moments: the ratio is the schedule's factor
        for count, factor in ((0, 1.0), (5, 0.5), (10, 0.0)):
            np.testing.assert_allclose(update_at(config, group, count), factor * constant[count],
                                       rtol=1e-5, atol=1e-12)
