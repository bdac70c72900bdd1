"""A DTN checkpoint written by real TensorFlow loads without TF and translates like the reference.

The fixture `tests/fixtures/tf_dtn/dtn-4` (made by `make_tf_dtn_checkpoint.py`) holds a
narrow f, g and D under the reference's variable names; its values are rebuilt here
with numpy alone, loaded into the torch re-expression, and compared (float32, 1e-5).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from configs import dtn as dtn_config
from unpaired import init_from, methods
from unpaired import translate as translate_lib
from unpaired.methods.translation import TranslationRequest
from unpaired.nets import dtn as nets
from unpaired.torch_reference import dtn as ref

from tests.fixtures import make_tf_dtn_checkpoint as fixture
from tests.helpers import nchw, rel_err

PREFIX = fixture.PREFIX


def fixture_config(preset="digits"):
    config = dtn_config.get_config(preset)
    for key, value in fixture.WIDTHS.items():
        config[key] = value
    return config


def expected_arrays():
    return {n: fixture.value_for(n, s) for n, s in fixture.variables(**fixture.WIDTHS).items()}


def test_f_and_g_load_by_tf_name_with_tf_layouts_and_the_binary_d_is_refused():
    method = methods.build(fixture_config())
    variables = method.import_weights(PREFIX, ("f", "g"))
    arrays = expected_arrays()
    for name in ("f", "g"):
        ours = nets.to_tf(name, variables[name])
        for key, value in ours.items():
            if key.startswith("content_extractor/out/"):
                continue  # absent from dtn-*: f's head keeps the template's values
            np.testing.assert_array_equal(value, arrays[key], err_msg=key)
    loaded = {k for n in ("f", "g") for k in nets.to_tf(n, variables[n])}
    assert {k for k in arrays if not k.startswith("discriminator/")} <= loaded
    # The reference's D is binary (one logit); the paper's objective needs three classes.
    with pytest.raises(ValueError, match=r"discriminator/conv4/biases has shape \(1,\), "
                       r"expected \(3,\).*--config.variant=code"):
        method.import_weights(PREFIX, ("D",))
    # TF deconv kernels [kh, kw, out, in] are ours unchanged.
    assert variables["g"]["params"]["conv_transpose1"]["kernel"].shape == (4, 4, 8, 4)


def test_translates_equal_to_the_torch_reference_in_eval_mode():
    config = fixture_config()
    arrays = expected_arrays()
    f = ref.ContentExtractor(config.nf, config.feature_dim)
    arrays_f = dict(arrays)
    arrays_f["content_extractor/out/weights"] = np.zeros((1, 1, config.feature_dim, 10), np.float32)
    arrays_f["content_extractor/out/biases"] = np.zeros((10,), np.float32)
    ref.load_tf_state(f, "content_extractor", arrays_f).eval()
    g = ref.load_tf_state(ref.Generator(config.feature_dim, config.ngf, 1), "generator", arrays).eval()
    x = np.random.RandomState(0).uniform(-1, 1, (5, 32, 32, 1)).astype(np.float32)
    with torch.no_grad():
        expected = g(f(nchw(x))).numpy().transpose(0, 2, 3, 1)
    generator = translate_lib.load_generator(PREFIX, config=config, request=TranslationRequest())
    ours = np.asarray(generator.apply(x))
    assert rel_err(ours, expected) < 1e-5
    assert generator.in_channels == 1 and generator.out_channels == 1


def test_stage2_takes_f_from_a_tf_checkpoint_prefix():
    config = fixture_config()
    config.init_from, config.init_networks = PREFIX, "f"
    method = methods.build(config)
    state = jax.eval_shape(method.create_state, jax.random.key(0))
    state = jax.tree.map(lambda t: jnp.zeros(t.shape, t.dtype), state)
    state, record = init_from.apply_init(method, config, state)
    np.testing.assert_array_equal(state.params["f"]["conv1"]["kernel"],
                                  expected_arrays()["content_extractor/conv1/weights"])
    assert record.networks == {"f": "f"}


def test_wrong_widths_name_the_variable_and_shape():
    config = fixture_config()
    config.ngf = 3
    method = methods.build(config)
    with pytest.raises(ValueError, match=r"generator/bn1/beta has shape \(8,\), expected \(12,\)"):
        method.import_weights(PREFIX, ("g",))
    with pytest.raises(ValueError, match="no such file"):
        method.import_weights(os.path.join(os.path.dirname(PREFIX), "dtn-5"), ("g",))


def test_the_code_variant_loads_the_binary_d_f_and_g_and_each_matches_torch():
    """config.variant='code' has the reference's binary D: all three networks load, and D
    (train and eval mode) and g(f(x)) equal the torch re-expression on the same arrays."""
    config = fixture_config()
    config.variant = "code"
    method = methods.build(config)
    variables = method.import_weights(PREFIX, ("f", "g", "D"))
    arrays = expected_arrays()
    loaded = {k: v for n in ("f", "g", "D") for k, v in nets.to_tf(n, variables[n]).items()}
    assert set(arrays) <= set(loaded)
    for key, value in arrays.items():
        np.testing.assert_array_equal(loaded[key], value, err_msg=key)
    d = ref.load_tf_state(ref.Discriminator(1, config.ndf, 1), "discriminator", arrays)
    x = np.random.RandomState(1).uniform(-1, 1, (5, 32, 32, 1)).astype(np.float32)
    for train in (False, True):
        with torch.no_grad():
            expected = d.train(train)(nchw(x)).numpy()
        ours = method.modules["D"].apply(variables["D"], x, train, mutable=["batch_stats"])[0]
        assert ours.shape == (5, 1) and rel_err(ours, expected) < 1e-5, train
    f = ref.load_tf_state(ref.ContentExtractor(config.nf, config.feature_dim), "content_extractor",
                          {**arrays, **nets.to_tf("f", variables["f"])}).eval()
    g = ref.load_tf_state(ref.Generator(config.feature_dim, config.ngf, 1), "generator", arrays).eval()
    with torch.no_grad():
        expected = g(f(nchw(x))).numpy().transpose(0, 2, 3, 1)
    params = {n: variables[n]["params"] for n in ("f", "g")}
    stats = {n: variables[n]["batch_stats"] for n in ("f", "g")}
    assert rel_err(method.translate(params, x, "AtoB", stats), expected) < 1e-5
