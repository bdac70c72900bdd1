"""DTN through the generic loop: stage 1 (f classifier, test accuracy saved), stage 2 from it.

Tiny widths and a few steps on the built-in digits; checks checkpoints, samples, the
accuracy file, that stage 2 requires f from init_from and takes it, resumes bit for
bit, and translates a workdir with g(f(x)) in eval mode.
"""

import json
import os

import jax
import numpy as np
import pytest

from configs import dtn as dtn_config
from tests.helpers import workdir_at_step
from unpaired import checkpoint, config_validation, init_from, methods, train
from unpaired import translate as translate_lib
from unpaired.methods.translation import TranslationRequest


def tiny(preset, **overrides):
    config = dtn_config.get_config(preset)
    config.nf, config.feature_dim, config.ngf, config.ndf = 4, 8, 4, 4
    config.batch_size = 4
    config.data.num_workers = 1
    config.log_every = 1
    config.sample_every = 2
    config.checkpoint_every = 2
    for key, value in overrides.items():
        config[key] = value
    return config


@pytest.fixture(scope="module")
def stage1(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("stage1"))
    state = train.train_and_evaluate(tiny("digits_pretrain", max_steps=2), workdir)
    return workdir, jax.device_get(state)


@pytest.fixture(scope="module")
def stage2(stage1, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("stage2"))
    config = tiny("digits", max_steps=4, init_from=stage1[0])
    config.eval_classifier = stage1[0]  # any dtn_pretrain run; a real one is trained on A
    state = train.train_and_evaluate(config, workdir)
    return workdir, jax.device_get(state)


def test_stage1_saves_checkpoints_and_its_test_accuracy(stage1):
    workdir, state = stage1
    assert checkpoint.Checkpointer.for_workdir(workdir).all_steps() == [2]
    result = json.load(open(os.path.join(workdir, "accuracy.json")))
    assert result["step"] == 2 and result["domain"] == "B" and result["split"] == "test"
    assert 0.0 <= result["accuracy"] <= 1.0 and result["images"] >= 100
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert {"f", "accuracy"} <= set(rows[0])


def test_stage2_requires_f_and_takes_it_from_stage1(stage1, stage2):
    with pytest.raises(config_validation.ConfigError, match="config.init_from"):
        init_from.validate_init(tiny("digits"), methods.get_method_class("dtn"))
    workdir, state = stage2
    _, s1 = stage1
    # f is frozen: stage 2 ends with stage 1's f parameters exactly.
    jax.tree.map(np.testing.assert_array_equal, state.params["f"], s1.params["f"])
    assert checkpoint.Checkpointer.for_workdir(workdir).all_steps() == [2, 4]
    assert sorted(os.listdir(os.path.join(workdir, "samples"))) == ["step_00000002.png", "step_00000004.png"]
    result = json.load(open(os.path.join(workdir, "translation_accuracy.json")))
    assert result["step"] == 4 and result["source"] == "B" and result["target"] == "A"
    assert 0.0 <= result["accuracy"] <= 1.0 and result["images"] >= 100
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert {"G_src", "G_trg", "const", "tid", "tv", "D_fake_src", "D_fake_trg", "D_real"} <= set(rows[0])


def test_stage2_resumes_bit_for_bit(stage1, stage2, tmp_path):
    _, expected = stage2
    workdir = str(tmp_path)
    train.train_and_evaluate(tiny("digits", max_steps=2, init_from=stage1[0]), workdir)
    resumed = train.train_and_evaluate(tiny("digits", max_steps=4, init_from=stage1[0]), workdir)
    assert checkpoint.state_matches(jax.device_get(resumed), expected)


def test_workdir_translates_source_images_with_g_of_f_in_eval_mode(stage2):
    workdir, state = stage2
    generator = translate_lib.load_generator(workdir, request=TranslationRequest(target="A"))
    x = np.random.RandomState(0).uniform(-1, 1, (3, 32, 32, 1)).astype(np.float32)
    method = methods.build(tiny("digits"))
    expected = jax.jit(lambda p, x, s: method.translate(p, x, "AtoB", s))(state.params, x, state.model_state)
    np.testing.assert_allclose(np.asarray(generator.apply(x)), np.asarray(expected), atol=1e-6)
    with pytest.raises(translate_lib.TranslateError, match="direction=BtoA"):
        translate_lib.load_generator(workdir, direction="BtoA")


def test_code_variant_trains_f_and_resumes_bit_for_bit(stage1, tmp_path):
    """variant='code' through the loop: five TF Adam states in the checkpoint, f trained at
    the due steps (f_interval 2: steps 0 and 2 of 3), and a resume from step 2 lands on the
    same state as the straight run (the schedule comes from state.step alone)."""
    config = lambda steps: tiny("digits", max_steps=steps, init_from=stage1[0], variant="code",
                                f_interval=2, f_interval_late=2)
    straight = jax.device_get(train.train_and_evaluate(config(3), str(tmp_path / "straight")))
    assert {k: int(v.count) for k, v in straight.opt_state.items()} == {
        "d_src": 3, "g_src": 18, "f_src": 2, "d_trg": 6, "g_trg": 12}
    assert not np.array_equal(straight.params["f"]["conv1"]["kernel"],
                              stage1[1].params["f"]["conv1"]["kernel"])
    assert straight.params["D"]["conv4"]["kernel"].shape[-1] == 1
    # Resumed from the straight run's own step-2 checkpoint (a 2-step run writes the same one;
    # a resume that raises max_steps is test_stage2_resumes_bit_for_bit's).
    workdir = workdir_at_step(str(tmp_path / "straight"), 2, tmp_path / "resumed")
    resumed = train.train_and_evaluate(config(3), workdir)
    assert checkpoint.state_matches(jax.device_get(resumed), straight)
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert {"D_src", "G_src", "const", "D_trg", "G_trg", "tid", "f_updated"} <= set(rows[0])


def test_stage1_cosine_lr_schedule_decays_to_zero_and_bad_names_are_refused():
    """lr_schedule='cosine' (the classifier presets) runs lr -> 0 over n_epochs x steps; the
    default stays the reference's constant rate; an unknown schedule names its key."""
    from unpaired.methods import dtn as dtn_method

    config = dtn_config.get_config("digits_pretrain")
    assert dtn_method._stage1_schedule(config, 5) == config.lr  # the reference's constant
    config.lr_schedule, config.n_epochs = "cosine", 2
    schedule = dtn_method._stage1_schedule(config, 5)
    assert float(schedule(0)) == pytest.approx(config.lr)
    assert float(schedule(5)) == pytest.approx(config.lr / 2)
    assert float(schedule(10)) == pytest.approx(0.0, abs=1e-12)
    method = methods.build(config, steps_per_epoch=5)
    state = jax.jit(method.create_state)(jax.random.PRNGKey(0))  # one compile, not one per op
    assert float(state.opt_state["f"].hyperparams["learning_rate"]) == pytest.approx(config.lr)
    config.lr_schedule = "linear"
    with pytest.raises(config_validation.ConfigError, match="config.lr_schedule"):
        methods.get_method_class("dtn_pretrain").validate_config(config)
