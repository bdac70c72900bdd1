"""TF-semantics options of the shared layers against explicit torch statements of TF's ops.

'SAME' conv (asymmetric pad), 'SAME' conv2d_transpose (full transposed conv, cropped),
slim batch_norm (eps 1e-3, decay 0.95, biased moving variance), Glorot-uniform init.
Outputs in float32 within 1e-5 relative; gradients in float64 within 1e-10.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unpaired import layers
from unpaired.torch_reference import dtn as ref

from tests.helpers import nchw, nhwc, rel_err, x64


@pytest.mark.parametrize("size,k,s", [(32, 3, 2), (16, 3, 2), (7, 3, 2), (9, 4, 2), (8, 5, 1), (6, 1, 2)])
def test_tf_same_padding_split_matches_tf_rule(size, k, s):
    top, bottom = layers.tf_same_padding(size, k, s)
    out = -(-size // s)
    assert (size + top + bottom - k) // s + 1 == out  # output ceil(size / stride)
    assert bottom - top in (0, 1)  # the extra pixel goes after
    assert (top, bottom) == ref.same_padding(size, k, s)
    if (size, k, s) == (32, 3, 2):
        assert (top, bottom) == (0, 1)  # not PyTorch's padding=1 on both sides


@pytest.mark.parametrize("shape,k,s", [((2, 32, 32, 3), 3, 2), ((2, 7, 9, 4), 3, 2), ((1, 8, 8, 2), 4, 2)])
def test_conv2d_tf_same_matches_explicit_pad(shape, k, s):
    rng = np.random.RandomState(0)
    x = rng.randn(*shape).astype(np.float32)
    module = layers.Conv2d(5, k, stride=s, padding_mode="tf_same", init_type="xavier_uniform",
                           init_gain=1.0)
    variables = module.init(jax.random.key(0), jnp.asarray(x))
    variables = jax.tree.map(lambda v: v + 0.1, variables)  # nonzero bias too
    ours = module.apply(variables, jnp.asarray(x))
    tconv = ref.TFConv(shape[-1], 5, k, "SAME", stride=s)
    with torch.no_grad():
        tconv.weight.copy_(torch.from_numpy(np.asarray(variables["params"]["kernel"]).transpose(3, 2, 0, 1)))
        tconv.bias.copy_(torch.from_numpy(np.asarray(variables["params"]["bias"])))
        theirs = tconv(nchw(x))
    assert ours.shape[1:3] == (-(-shape[1] // s), -(-shape[2] // s))
    assert rel_err(ours, nhwc(theirs)) < 1e-5
    # On even sides PyTorch's symmetric padding differs (odd sides pad (1, 1) in both).
    if k == 3 and shape[1] % 2 == 0:
        sym = F.conv2d(nchw(x), tconv.weight, tconv.bias, stride=s, padding=1)
        assert sym.shape == theirs.shape and rel_err(nhwc(sym), nhwc(theirs)) > 1e-2


@pytest.mark.parametrize("shape,k", [((2, 4, 4, 6), 3), ((2, 5, 3, 6), 3), ((2, 4, 4, 6), 4), ((2, 4, 4, 6), 5)])
def test_conv_transpose_tf_same_forward_and_gradients(shape, k):
    rng = np.random.RandomState(1)
    x = rng.randn(*shape)
    module = layers.ConvTranspose2d(3, k, stride=2, padding_mode="tf_same")
    with x64():
        variables = module.init(jax.random.key(0), jnp.asarray(x))
        w = np.asarray(variables["params"]["kernel"], np.float64)  # (k, k, out, in) = TF layout
        b = rng.randn(3)
        variables = {"params": {"kernel": jnp.asarray(w), "bias": jnp.asarray(b)}}
        fn = lambda v, x: jnp.sum(jnp.sin(module.apply(v, x)))
        ours = module.apply(variables, jnp.asarray(x))
        gv, gx = jax.grad(fn, argnums=(0, 1))(variables, jnp.asarray(x))
    tdeconv = ref.TFDeconv(shape[-1], 3, k, "SAME").double()
    with torch.no_grad():
        tdeconv.weight.copy_(torch.from_numpy(w.transpose(3, 2, 0, 1)))
        tdeconv.bias.copy_(torch.from_numpy(b))
    tx = nchw(x).requires_grad_(True)
    theirs = tdeconv(tx)
    torch.sin(theirs).sum().backward()
    assert ours.shape == (shape[0], 2 * shape[1], 2 * shape[2], 3)
    assert rel_err(ours, nhwc(theirs)) < 1e-10
    assert rel_err(gx, nhwc(tx.grad)) < 1e-10
    assert rel_err(gv["params"]["kernel"], tdeconv.weight.grad.numpy().transpose(2, 3, 1, 0)) < 1e-10
    if k == 3:  # PyTorch's padding=1, output_padding=1 is shifted by a pixel
        shifted = F.conv_transpose2d(nchw(x), tdeconv.weight, tdeconv.bias, stride=2, padding=1,
                                     output_padding=1)
        assert rel_err(nhwc(shifted), nhwc(theirs.detach())) > 1e-2


def test_batch_norm_tf_options_match_slim_statistics():
    rng = np.random.RandomState(2)
    x = rng.randn(4, 5, 5, 3).astype(np.float32) * 2 + 1
    bn = layers.BatchNorm(momentum=0.05, eps=1e-3, init_gain=0.0, running_var="biased")
    variables = bn.init(jax.random.key(0), jnp.asarray(x), False)
    np.testing.assert_array_equal(variables["params"]["scale"], np.ones(3))  # gamma starts at 1
    tbn = ref.TFBatchNorm(3)
    y, updated = bn.apply(variables, jnp.asarray(x), True, mutable=["batch_stats"])
    ty = tbn(nchw(x))
    assert rel_err(y, nhwc(ty.detach())) < 1e-5
    stats = updated["batch_stats"]
    assert rel_err(stats["mean"], tbn.running_mean.numpy()) < 1e-6
    assert rel_err(stats["var"], tbn.running_var.numpy()) < 1e-6
    biased = x.reshape(-1, 3).var(axis=0)
    np.testing.assert_allclose(stats["var"], 0.95 + 0.05 * biased, rtol=1e-5)
    # PyTorch's rule (unbiased) is measurably different at this batch size.
    unbiased = layers.BatchNorm(momentum=0.05, eps=1e-3, init_gain=0.0)
    _, upd = unbiased.apply(variables, jnp.asarray(x), True, mutable=["batch_stats"])
    assert rel_err(upd["batch_stats"]["var"], stats["var"]) > 1e-4
    tbn.eval()
    variables = {"params": variables["params"], "batch_stats": stats}
    assert rel_err(bn.apply(variables, jnp.asarray(x), False), nhwc(tbn(nchw(x)).detach())) < 1e-5


def test_xavier_uniform_init_has_glorot_bound():
    module = layers.ConvTranspose2d(512, 4, padding_mode="zero", padding=0, output_padding=0,
                                    init_type="xavier_uniform", init_gain=1.0)
    kernel = module.init(jax.random.key(0), jnp.zeros((1, 1, 1, 128)))["params"]["kernel"]
    bound = np.sqrt(6.0 / (16 * (128 + 512)))  # 0.0242, the reference's generator deconv1
    assert np.max(np.abs(kernel)) <= bound
    assert np.max(np.abs(kernel)) > 0.99 * bound
    assert abs(float(np.std(kernel)) - bound / np.sqrt(3)) < 0.02 * bound
