"""DTN's `faces` preset: 64x64 RGB, one more block in f, g and D (parity with the torch
re-expression at tiny widths), the paper's face weights, and f taken through init_from from
an encoder a user converted to a `.pth` state_dict (loaded without torch; clear errors)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from configs import dtn as dtn_config
from unpaired import config_validation, init_from, methods
from unpaired.nets import dtn as nets
from unpaired.torch_reference import dtn as ref
from unpaired.weights import write_torch_file

from tests.helpers import nchw, rel_err


def faces_config(tmp_path, **widths):
    for domain in ("trainA", "trainB"):
        (tmp_path / domain).mkdir(exist_ok=True)
    config = dtn_config.get_config("faces")
    config.data.dataroot = str(tmp_path)
    config.nf, config.feature_dim, config.ngf, config.ndf = 2, 4, 2, 2
    for key, value in widths.items():
        config[key] = value
    return config


def zero_state(method):
    state = jax.eval_shape(method.create_state, jax.random.key(0))
    return jax.tree.map(lambda t: jnp.zeros(t.shape, t.dtype), state)


def test_faces_preset_has_the_papers_weights_and_no_stage1(tmp_path):
    config = faces_config(tmp_path)
    assert (config.alpha, config.beta, config.gamma) == (100.0, 1.0, 0.05)
    assert (config.data.crop_size, config.input_nc, config.output_nc) == (64, 3, 3)
    config.init_from = str(tmp_path / "encoder.pth")
    config_validation.validate(config)
    with pytest.raises(ValueError, match="no stage 1"):
        dtn_config.get_config("faces_pretrain")
    config.f_arch = "paper"
    with pytest.raises(config_validation.ConfigError, match="config.data.crop_size=64 must be 32"):
        config_validation.validate(config)


def test_64px_networks_match_torch_in_float32(tmp_path):
    config = faces_config(tmp_path)
    method = methods.build(config)
    variables = method.init_variables(jax.random.key(0))
    assert "conv5" in variables["f"]["params"] and "conv_transpose5" in variables["g"]["params"]
    tnets = {"f": ref.ContentExtractor(2, 4, 10, size=64), "g": ref.Generator(4, 2, 3, size=64),
             "D": ref.Discriminator(3, 2, 3, size=64)}
    for name, net in tnets.items():
        variables[name] = nets.from_tf(name, ref.tf_state(ref.glorot_init(net), nets.SCOPES[name]),
                                       variables[name])
    x = np.random.RandomState(0).uniform(-1, 1, (3, 64, 64, 3)).astype(np.float32)
    with torch.no_grad():
        feature = tnets["f"](nchw(x))
        image = tnets["g"](feature)
        logits = tnets["D"](nchw(x))
    run = lambda n, v: method.modules[n].apply(variables[n], v, True, mutable=["batch_stats"])
    ours_f, stats_f = run("f", x)
    # g on torch's own features: its BatchNorm over a batch of 3 1x1 maps magnifies f's
    # rounding differences, which would then be charged to g.
    ours_g, _ = run("g", feature.numpy().transpose(0, 2, 3, 1))
    ours_d, _ = run("D", x)
    assert ours_f.shape == (3, 1, 1, 4) and rel_err(ours_f, feature.numpy().transpose(0, 2, 3, 1)) < 1e-5
    assert ours_g.shape == (3, 64, 64, 3) and rel_err(ours_g, image.numpy().transpose(0, 2, 3, 1)) < 1e-5
    assert ours_d.shape == (3, 3) and rel_err(ours_d, logits.numpy()) < 1e-5
    theirs = ref.tf_state(tnets["f"], "content_extractor")
    got = nets.to_tf("f", {"params": variables["f"]["params"], **stats_f})
    for key in [k for k in theirs if "moving" in k]:
        assert rel_err(got[key], theirs[key]) < 1e-5, key


def test_f_from_a_converted_pth_encoder_and_its_errors(tmp_path):
    config = faces_config(tmp_path)
    encoder = ref.glorot_init(ref.ContentExtractor(2, 4, 10, size=64))
    with torch.no_grad():
        for name, value in encoder.named_buffers():
            if "running" in name:
                value.uniform_(0.5, 1.5)
    state = {k: v.numpy() for k, v in encoder.state_dict().items()
             if not k.startswith("out.") and "num_batches" not in k}  # an encoder has no head
    path = tmp_path / "encoder.pth"
    write_torch_file(state, path)
    config.init_from, config.init_networks = str(path), "f"
    method = methods.build(config)
    loaded, record = init_from.apply_init(method, config, zero_state(method))
    assert record.networks == {"f": "f"}
    x = np.random.RandomState(1).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
    with torch.no_grad():
        expected = encoder.eval()(nchw(x)).numpy().transpose(0, 2, 3, 1)
    ours = method.modules["f"].apply({"params": loaded.params["f"],
                                      "batch_stats": loaded.model_state["f"]}, x, False)
    assert rel_err(ours, expected) < 1e-5
    # Wider than the config: the entry, its shape and the expected one, in torch layout.
    wide = {k: v for k, v in ref.ContentExtractor(3, 4, 10, size=64).state_dict().items()
            if "num_batches" not in k}
    write_torch_file({k: v.numpy() for k, v in wide.items()}, tmp_path / "wide.pth")
    with pytest.raises(ValueError, match=r"wide.pth: state_dict entry bn1.bias has shape \(3,\), expected \(2,\)"):
        method.import_weights(str(tmp_path / "wide.pth"), ("f",))
    del state["bn5.running_var"]
    write_torch_file(state, tmp_path / "partial.pth")
    with pytest.raises(ValueError, match=r"bn5.running_var .* is missing"):
        method.import_weights(str(tmp_path / "partial.pth"), ("f",))
    with pytest.raises(ValueError, match="provides f only"):
        method.import_weights(str(path), ("f", "g"))
