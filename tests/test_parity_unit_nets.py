"""UNIT networks (master) against the PyTorch re-expression with the same weights.

Weights are built in PyTorch with the reference init and loaded through
`unpaired.torch_io`, so the state_dict names are checked too. Outputs in float32 with TF32
off, relative error < 1e-5; the full-size 256x256 generator once, in eval-free form.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from unpaired import layers, torch_io
from unpaired.nets import unit as nets
from unpaired.torch_reference import unit as ref

from tests.helpers import nchw, nhwc, rel_err


def _pair_gen(in_nc, dim, n_down, n_res, size, pad_type="reflect", seed=0):
    torch.manual_seed(seed)
    tnet = ref.weights_init(ref.VAEGen(in_nc, dim, n_down, n_res, "relu", pad_type), "kaiming",
                            torch.Generator().manual_seed(seed))
    module = nets.VAEGen(in_nc, dim, n_down, n_res, "relu", pad_type)
    template = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, size, size, in_nc)))
    return tnet, module, torch_io.from_state_dict(tnet.state_dict(), template)


@pytest.mark.parametrize("in_nc,dim,n_down,n_res,size,pad", [
    (3, 8, 2, 2, 32, "reflect"), (1, 4, 1, 3, 16, "zero"), (3, 4, 3, 1, 24, "replicate"),
])
def test_encoder_and_decoder_match(in_nc, dim, n_down, n_res, size, pad):
    tnet, module, variables = _pair_gen(in_nc, dim, n_down, n_res, size, pad)
    x = np.random.RandomState(0).uniform(-1, 1, (2, size, size, in_nc)).astype(np.float32)
    with torch.no_grad():
        t_h = tnet.enc(nchw(x))
        z = t_h + torch.randn_like(t_h)
        t_out = tnet.dec(z)
    h = module.apply(variables, x, method="encode")
    assert rel_err(h, nhwc(t_h)) < 1e-5
    out = module.apply(variables, jnp.asarray(nhwc(z)), method="decode")
    assert rel_err(out, nhwc(t_out)) < 1e-5


def test_state_dict_names_are_the_reference_ones():
    tnet, module, variables = _pair_gen(3, 64, 2, 4, 32)
    keys = set(torch_io.to_state_dict(variables))
    assert keys == set(tnet.state_dict())
    assert "enc.model.3.model.3.model.1.conv.weight" in keys and "dec.model.4.norm.gamma" in keys
    assert len(keys) == 48
    assert sum(int(np.prod(v.shape)) for v in tnet.state_dict().values()) == 11_140_483
    dis = ref.MsImageDis(3)
    template = jax.eval_shape(nets.MsImageDis().init, jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    assert set(torch_io.key_table(template)) == set(dis.state_dict())
    assert sum(int(np.prod(v.shape)) for v in dis.state_dict().values()) == 8_271_171


@pytest.mark.parametrize("in_nc,dim,n_layer,scales,size", [(3, 8, 4, 3, 64), (1, 4, 3, 3, 32)])
def test_discriminator_matches_on_every_scale(in_nc, dim, n_layer, scales, size):
    torch.manual_seed(1)
    tnet = ref.weights_init(ref.MsImageDis(in_nc, dim, n_layer, scales), "gaussian",
                            torch.Generator().manual_seed(1))
    module = nets.MsImageDis(dim, n_layer, scales)
    template = jax.eval_shape(module.init, jax.random.key(0), jnp.zeros((1, size, size, in_nc)))
    variables = torch_io.from_state_dict(tnet.state_dict(), template)
    x = np.random.RandomState(1).uniform(-1, 1, (2, size, size, in_nc)).astype(np.float32)
    with torch.no_grad():
        t_outs = tnet(nchw(x))
    outs = module.apply(variables, x)
    assert len(outs) == scales
    assert [o.shape[1] for o in outs] == nets.discriminator_sizes(size, n_layer, scales)
    for o, t in zip(outs, t_outs):
        assert rel_err(o, nhwc(t)) < 1e-5


def test_full_size_generator_matches_at_256():
    tnet, module, variables = _pair_gen(3, 64, 2, 4, 256)
    x = np.random.RandomState(2).uniform(-1, 1, (1, 256, 256, 3)).astype(np.float32)
    with torch.no_grad():
        t_out = tnet.dec(tnet.enc(nchw(x)))
    out = jax.jit(module.apply)(variables, x)
    assert rel_err(out, nhwc(t_out)) < 3e-5


def test_layer_norm_avg_pool_and_upsample_match_torch():
    rng = np.random.RandomState(3)
    x = rng.normal(size=(3, 5, 7, 4)).astype(np.float32) * 3 + 1
    tln = ref.LayerNorm(4)
    variables = {"params": {"gamma": tln.gamma.detach().numpy(), "beta": rng.normal(size=4).astype(np.float32)}}
    with torch.no_grad():
        tln.beta.copy_(torch.from_numpy(variables["params"]["beta"]))
        want = tln(nchw(x))
    assert rel_err(layers.SampleLayerNorm().apply(variables, x), nhwc(want)) < 1e-6
    one = x[:1]  # the reference's batch-1 branch is the same maths
    with torch.no_grad():
        assert rel_err(layers.SampleLayerNorm().apply(variables, one), nhwc(tln(nchw(one)))) < 1e-6
    pool = torch.nn.AvgPool2d(3, stride=2, padding=[1, 1], count_include_pad=False)
    assert rel_err(layers.avg_pool2d(x, 3, 2, 1), nhwc(pool(nchw(x)))) < 1e-6
    up = torch.nn.Upsample(scale_factor=2)
    assert rel_err(layers.upsample_nearest(x), nhwc(up(nchw(x)))) == 0.0
    gamma = layers.SampleLayerNorm().init(jax.random.key(0), x)["params"]["gamma"]
    assert float(jnp.min(gamma)) >= 0 and float(jnp.max(gamma)) <= 1 and float(jnp.std(gamma)) > 0.05
