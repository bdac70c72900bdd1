"""`init_type` (normal, xavier, kaiming, orthogonal) against torch's `init_weights` of the same layout."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from unpaired import layers, torch_io
from unpaired.nets import cyclegan as nets
from unpaired.torch_reference import cyclegan as ref

GAIN = 0.02
INIT_TYPES = ("normal", "xavier", "kaiming", "orthogonal")
# Asymmetric channels, so that fan_in and fan_out differ 8-fold and a swapped fan shows.
CONV = dict(in_ch=16, out_ch=128, k=3)


def torch_weight(kind, init_type, seed=0):
    """The torch weight (numpy) of Conv2d(16->128) or ConvTranspose2d(16->128), reference init."""
    c = CONV
    cls = torch.nn.Conv2d if kind == "conv" else torch.nn.ConvTranspose2d
    module = cls(c["in_ch"], c["out_ch"], c["k"])
    ref.init_weights(module, GAIN, torch.Generator().manual_seed(seed), init_type=init_type)
    assert not module.bias.detach().any()
    return module.weight.detach().numpy()


def our_weight(kind, init_type, seed=0):
    """Our kernel of the same layer, in torch's layout (the checkpoint converter's rule)."""
    c = CONV
    cls = layers.Conv2d if kind == "conv" else layers.ConvTranspose2d
    module = cls(c["out_ch"], c["k"], init_gain=GAIN, init_type=init_type)
    x = jnp.zeros((1, 8, 8, c["in_ch"]))
    params = module.init(jax.random.key(seed), x)["params"]
    assert not np.asarray(params["bias"]).any()
    (weight,) = [v for k, v in torch_io.to_state_dict({"params": params}).items() if k.endswith("weight")]
    return weight


def expected_std(init_type, shape):
    """The std torch's formula gives for a weight of `shape` (fan_in from dim 1, fan_out dim 0)."""
    receptive = shape[2] * shape[3]
    fan_in, fan_out = shape[1] * receptive, shape[0] * receptive
    if init_type == "normal":
        return GAIN
    if init_type == "xavier":
        return GAIN * math.sqrt(2.0 / (fan_in + fan_out))
    if init_type == "kaiming":
        return math.sqrt(2.0 / fan_in)
    rows, cols = shape[0], fan_in
    return GAIN / math.sqrt(max(rows, cols))  # orthonormal rows/cols of length 1 in max(rows, cols)


@pytest.mark.parametrize("init_type", INIT_TYPES)
@pytest.mark.parametrize("kind", ["conv", "conv_transpose"])
def test_weight_statistics_match_torch_and_its_fan_rule(kind, init_type):
    theirs, ours = torch_weight(kind, init_type), our_weight(kind, init_type)
    assert ours.shape == theirs.shape
    std = expected_std(init_type, theirs.shape)
    # ~18k samples: the std's relative standard error is ~0.5%; 4% is 8 sigma.
    assert abs(theirs.std() / std - 1) < 0.04, (theirs.std(), std)  # our reading of torch's rule
    assert abs(ours.std() / std - 1) < 0.04, (ours.std(), std)
    assert abs(ours.mean()) < 4 * std / math.sqrt(ours.size)


@pytest.mark.parametrize("kind", ["conv", "conv_transpose"])
def test_kaiming_uses_torch_fan_in_not_fan_out(kind):
    """The fan that kaiming divides by is dim 1 of torch's weight (out channels for ConvTranspose2d)."""
    ours = our_weight(kind, "kaiming")
    fan_dim1 = ours.shape[1] * ours.shape[2] * ours.shape[3]
    fan_dim0 = ours.shape[0] * ours.shape[2] * ours.shape[3]
    assert fan_dim0 != fan_dim1
    assert abs(ours.std() * math.sqrt(fan_dim1 / 2) - 1) < 0.04
    assert abs(ours.std() * math.sqrt(fan_dim0 / 2) - 1) > 0.5


@pytest.mark.parametrize("kind,in_ch,out_ch", [
    ("conv", 4, 64),            # torch weight (64, 36): taller than wide, columns orthonormal
    ("conv", 16, 8),            # (8, 144): rows orthonormal
    ("conv_transpose", 16, 128),  # (16, 1152): rows orthonormal
    ("conv_transpose", 64, 2),  # (64, 18): columns orthonormal
])
def test_orthogonal_is_orthogonal_in_torch_flattening(kind, in_ch, out_ch):
    cls = layers.Conv2d if kind == "conv" else layers.ConvTranspose2d
    module = cls(out_ch, 3, init_gain=GAIN, init_type="orthogonal")
    params = module.init(jax.random.key(1), jnp.zeros((1, 8, 8, in_ch)))["params"]
    (weight,) = [v for k, v in torch_io.to_state_dict({"params": params}).items() if k.endswith("weight")]
    flat = weight.reshape(weight.shape[0], -1).astype(np.float64) / GAIN
    gram = flat @ flat.T if flat.shape[0] <= flat.shape[1] else flat.T @ flat
    np.testing.assert_allclose(gram, np.eye(gram.shape[0]), atol=1e-5)


def test_batchnorm_keeps_n_1_gain_and_bad_types_are_rejected():
    for init_type in INIT_TYPES:
        module = nets.define_D("basic", 8, 3, "batch", GAIN, init_type=init_type)
        params = module.init(jax.random.key(0), jnp.zeros((1, 32, 32, 1)), False)["params"]
        scales = [np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(params)
                  if str(p[-1].key) == "scale"]
        assert len(scales) == 3
        pooled = np.concatenate(scales)  # 112 values of N(1, GAIN)
        assert abs(pooled.mean() - 1) < 5 * GAIN / np.sqrt(pooled.size)
        assert abs(pooled.std() / GAIN - 1) < 0.35
    with pytest.raises(ValueError, match="unknown init_type 'he'"):
        layers.weight_init("he", GAIN)


@pytest.mark.parametrize("init_type", INIT_TYPES)
def test_whole_generator_and_discriminator_match_torch_tensor_by_tensor(init_type):
    """resnet_6blocks (ngf 8) and the basic PatchGAN (ndf 8): every large tensor's std as torch's."""
    for kind in ("G", "D"):
        if kind == "G":
            tnet = ref.define_G(3, 3, 8, "resnet_6blocks", "instance", False)
            module = nets.define_G("resnet_6blocks", 3, 8, "instance", False, GAIN,
                                   init_type=init_type)
        else:
            tnet = ref.define_D(3, 8, "basic", 3, "instance")
            module = nets.define_D("basic", 8, 3, "instance", GAIN, init_type=init_type)
        ref.init_weights(tnet, GAIN, torch.Generator().manual_seed(0), init_type=init_type)
        variables = module.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), False)
        ours = torch_io.to_state_dict(variables)
        theirs = {k: v.detach().numpy() for k, v in tnet.state_dict().items()}
        assert sorted(ours) == sorted(theirs)
        for key, value in ours.items():
            assert value.shape == theirs[key].shape, key
            if key.endswith("bias"):
                assert not value.any() and not theirs[key].any(), key
            elif value.size >= 2000:
                ratio = value.std() / theirs[key].std()
                assert abs(ratio - 1) < 0.1, (key, ratio)
