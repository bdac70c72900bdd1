"""The digit classifier (configs/classifier.py, method dtn_pretrain): short training runs that
write accuracy.json, its penultimate `features`, the shift augmentation, and the
classifier-feature FID of the offline digit experiments."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import classifier as classifier_config
from unpaired import config_validation, methods, train
from unpaired.data import builtin_digits
from unpaired.eval import features as eval_features
from unpaired.eval import fid
from tests.helpers import needs_real_digits, real_digits



def as_images(pixels):
    """uint8 (N, 32, 32) -> float32 (N, 32, 32, 1) in [-1, 1], as the loader gives them."""
    return (pixels.astype(np.float32) / 127.5 - 1.0)[..., None]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("classifier"))
    config = classifier_config.get_config("digits")
    config.max_steps, config.log_every, config.checkpoint_every = 40, 20, 40
    config.data.num_workers = 1
    config.augment_shift = 1
    state = train.train_and_evaluate(config, workdir)
    return workdir, config, jax.device_get(state)


def test_digits_classifier_trains_and_writes_its_test_accuracy(digits_run):
    workdir, _, state = digits_run
    result = json.load(open(os.path.join(workdir, "accuracy.json")))
    assert result["step"] == 40 and result["domain"] == "A" and result["split"] == "test"
    # after_training scores every image of the test split (the last batch padded).
    assert result["images"] == len(builtin_digits.handwritten_digits("test")[1])
    assert result["accuracy"] > 0.3  # chance is 0.1


def test_features_are_the_penultimate_layer_in_eval_mode(digits_run):
    _, config, state = digits_run
    method = methods.build(config)
    x = as_images(builtin_digits.handwritten_digits("test")[0][:6])
    features, classify = jax.jit(method.features), jax.jit(method.classify)  # one compile each
    feats = features(state.params, state.model_state, x)
    assert feats.shape == (6, config.feature_dim)
    out = state.params["f"]["out"]
    logits = feats @ out["kernel"][0, 0] + out["bias"]
    np.testing.assert_array_equal(np.argmax(logits, -1), classify(state.params, state.model_state, x))
    # Eval mode: an image's features do not depend on the rest of its batch.
    np.testing.assert_allclose(features(state.params, state.model_state, x[:2]), feats[:2], atol=1e-6)


def test_shift_augmentation_is_an_edge_padded_crop_within_the_range():
    config = classifier_config.get_config("digits")
    config.augment_shift = 2
    method = methods.build(config)
    images = jnp.asarray(np.random.RandomState(0).uniform(-1, 1, (16, 32, 32, 1)), jnp.float32)
    shifted = np.asarray(method.augment(images, jax.random.key(3)))
    padded = np.pad(np.asarray(images), ((0, 0), (2, 2), (2, 2), (0, 0)), mode="edge")
    seen = set()
    for i in range(16):
        matches = [(dy, dx) for dy in range(5) for dx in range(5)
                   if np.array_equal(padded[i, dy:dy + 32, dx:dx + 32], shifted[i])]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 3  # a shift per image, not one per batch
    config.augment_shift = 16
    with pytest.raises(config_validation.ConfigError, match="config.augment_shift"):
        methods.get_method_class("dtn_pretrain").validate_config(config)


def test_without_augmentation_the_step_keeps_the_reference_key():
    config = classifier_config.get_config("digits")
    config.nf, config.feature_dim = 2, 4
    method = methods.build(config)
    # Jitted whole, as the loop runs them: op by op these cost hundreds of small compiles.
    s0 = jax.jit(method.create_state)(jax.random.key(0))
    batch = {"A": jnp.zeros((4, 32, 32, 1)), "A_label": jnp.arange(4)}
    s1, _ = jax.jit(method.train_step)(s0, batch)
    assert jnp.array_equal(jax.random.key_data(s1.key), jax.random.key_data(s0.key))
    config.augment_shift = 2
    s2, _ = jax.jit(methods.build(config).train_step)(s0, batch)
    assert not jnp.array_equal(jax.random.key_data(s2.key), jax.random.key_data(s0.key))


def test_classifier_feature_fid_separates_handwritten_from_printed(digits_run):
    workdir = digits_run[0]
    hand = as_images(builtin_digits.handwritten_digits("test")[0])
    printed = as_images(builtin_digits.printed_digits("test")[0])
    halves = [hand[:148]], [hand[148:]]
    same = eval_features.classifier_fid(workdir, *halves, kid_subsets=5, kid_subset_size=100)
    apart = eval_features.classifier_fid(workdir, [hand[:148], hand[148:]], [printed[:200], printed[200:]],
                                         kid_subsets=5, kid_subset_size=100)
    assert apart["images_a"] == 297 and apart["images_b"] == 400
    assert 0 <= same["fid"] < apart["fid"] and same["kid_mean"] < apart["kid_mean"]
    # The same numbers as fid.fid_between over the method's features directly.
    feature_fn = eval_features.classifier_feature_fn(workdir)
    assert fid.fid_between(feature_fn, *halves, kid_subsets=5, kid_subset_size=100)["fid"] == \
        pytest.approx(same["fid"], rel=1e-9)


@pytest.mark.parametrize("preset", ["mnist", "usps"])
def test_real_data_presets_resolve_and_validate(preset):
    config = classifier_config.get_config(preset)
    assert config.method == "dtn_pretrain" and config.augment_shift > 0
    assert os.path.basename(os.path.dirname(config.data.idx_A)) == preset
    methods.get_method_class(config.method).validate_config(config)
    with pytest.raises(ValueError, match="unknown classifier preset"):
        classifier_config.get_config("svhn")


@needs_real_digits
def test_usps_classifier_short_run_on_the_real_test_set(tmp_path):
    config = classifier_config.get_config("usps")
    assert config.data.idx_A == real_digits("usps")
    config.max_steps, config.checkpoint_every, config.log_every = 15, 15, 15
    config.data.num_workers = 1
    train.train_and_evaluate(config, str(tmp_path))
    result = json.load(open(os.path.join(tmp_path, "accuracy.json")))
    assert result["images"] == 2007 and result["accuracy"] > 0.2  # every USPS test image; chance 0.1
