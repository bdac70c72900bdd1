"""UFDN networks against the PyTorch re-expression with the same weights.

Weights are built in PyTorch (the reference's `weights_init`) and loaded through
`unpaired.torch_io`, so the test also checks that our names map one to one onto the
reference's state_dict keys. Outputs in float32 (TF32 off) within 1e-5 relative, in train
mode (batch statistics, injected eps) and eval mode (running statistics, z = mu); the
BatchNorm running statistics after one train-mode pass must match too.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from configs import ufdn as ufdn_config
from unpaired import torch_io
from unpaired.nets import ufdn as nets
from unpaired.torch_reference import ufdn as ref

from tests.helpers import nchw, nhwc, rel_err

torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False

ENC = [["conv", 8, 4, 2, 1, "bn", "LeakyReLU"], ["conv", 16, 4, 2, 1, "bn", "ReLU"],
       ["conv", 16, 4, 2, 1, "bn", "LeakyReLU"], ["conv", 12, 4, 2, 1, "", ""]]
# Code inserted at two layers (1x1 and 2x2), to exercise the tiling.
DEC = [["conv", 16, 4, 2, 1, "bn", "LeakyReLU", True], ["conv", 8, 4, 2, 1, "", "ReLU", True],
       ["conv", 8, 4, 2, 1, "bn", "LeakyReLU", False], ["conv", 3, 4, 2, 1, "", "Tanh", False]]
D_PIX = [["conv", 4, 4, 2, 1, "", "LeakyReLU"], ["conv", 8, 4, 2, 1, "bn", "LeakyReLU"],
         ["fc", 16, "", "LeakyReLU", 0], ["fc", [1, 3], "", "", 0]]
D_FEAT = [["fc", 16, "", "LeakyReLU", 0], ["fc", 8, "", "LeakyReLU", 0], ["fc", 4, "", "", 0]]
D_DIGIT = [["fc", 10, "", "", 0]]
SIZE, N, K = 16, 6, 4


def _vae_pair():
    torch.manual_seed(0)
    tnet = ref.UFDN(ENC, DEC, K)
    module = nets.UFDN(nets.freeze(ENC), nets.freeze(DEC))
    template = module.init(jax.random.key(0), jnp.zeros((2, SIZE, SIZE, 3)), jnp.zeros((2, K)),
                           jnp.zeros((2, 12)), train=False)
    return tnet, module, torch_io.from_state_dict(tnet.state_dict(), template)


def _inputs():
    rng = np.random.RandomState(1)
    x = rng.uniform(-1, 1, (N, SIZE, SIZE, 3)).astype(np.float32)
    code = rng.uniform(0, 1, (N, K)).astype(np.float32)  # fractional codes, as at inference
    eps = rng.randn(N, 12).astype(np.float32)
    return x, code, eps


def test_state_dict_keys_and_init_follow_the_reference():
    tnet, module, variables = _vae_pair()
    assert set(torch_io.to_state_dict(variables)) == set(tnet.state_dict())
    fresh = module.init(jax.random.key(3), *(jnp.asarray(a) for a in _inputs()), train=False)
    gamma = np.asarray(fresh["params"]["enc_0_1"]["scale"])
    assert abs(gamma.mean()) < 0.02 and 0.005 < gamma.std() < 0.05  # N(0, 0.02), not N(1, .)
    # dec_0's input channels: z then the code, as the reference concatenates them.
    assert tnet.state_dict()["dec_0.0.weight"].shape == (12 + K, 16, 4, 4)


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_ufdn_outputs_and_statistics_match(train):
    tnet, module, variables = _vae_pair()
    x, code, eps = _inputs()
    tnet.train(train)
    with torch.no_grad():
        t_rec, t_mu, t_logvar = tnet(nchw(x), torch.from_numpy(code), eps=torch.from_numpy(eps))
        t_z = tnet(nchw(x), return_enc=True, eps=torch.from_numpy(eps))
    apply = jax.jit(module.apply, static_argnames=("train", "mode", "mutable"))
    if train:
        (rec, mu, logvar), updated = apply(variables, x, code, eps, train=True,
                                           mutable=("batch_stats",))
    else:
        rec, mu, logvar = apply(variables, x, code, eps, train=False)
    assert rel_err(rec, nhwc(t_rec)) < 1e-5
    assert rel_err(mu, t_mu.numpy()) < 1e-5
    assert rel_err(logvar, t_logvar.numpy()) < 1e-5
    z = apply(variables, x, None, eps if train else None, train=False, mode="encode")
    if not train:  # eval mode: z = mu
        assert rel_err(z, t_z.numpy()) < 1e-5
    if train:
        # torch ran two train-mode passes (full, then encode): replay the encode one.
        _, updated = apply({**variables, **updated}, x, None, eps, train=True, mode="encode",
                           mutable=("batch_stats",))
        variables = {**variables, **updated}
        exported = torch_io.to_state_dict(variables)
        for key, value in tnet.state_dict().items():
            if "running" in key or "num_batches" in key:
                assert rel_err(exported[key], value.numpy()) < 1e-6, key
    # The decoder alone (eval mode, the statistics both sides now hold), code as given.
    mu = np.array(mu)
    dec = apply(variables, mu, code, train=False, mode="decode")
    with torch.no_grad():
        tnet.eval()
        t_dec = tnet.decode(torch.from_numpy(mu), torch.from_numpy(code))
    assert rel_err(dec, nhwc(t_dec)) < 1e-5


@pytest.mark.parametrize("dnn,in_shape", [
    (D_PIX, (N, SIZE, SIZE, 3)), (D_FEAT, (N, 12)), (D_DIGIT, (N, 12)),
], ids=["D_pix", "D_feat", "D_digit"])
@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
def test_discriminator_outputs_match(dnn, in_shape, train):
    torch.manual_seed(0)
    spatial = len(in_shape) == 4
    tnet = ref.Discriminator(dnn, in_shape[-1], SIZE if spatial else 1)
    module = nets.Discriminator(nets.freeze(dnn))
    template = module.init(jax.random.key(0), jnp.zeros((2,) + in_shape[1:]), train=False)
    variables = torch_io.from_state_dict(tnet.state_dict(), template)
    x = np.random.RandomState(2).uniform(-1, 1, in_shape).astype(np.float32)
    tnet.train(train)
    with torch.no_grad():
        expected = tnet(nchw(x) if spatial else torch.from_numpy(x))
    if train:
        out, updated = module.apply(variables, x, train=True, mutable=("batch_stats",))
    else:
        out = module.apply(variables, x, train=False)
    expected = expected if isinstance(expected, tuple) else (expected,)
    out = out if isinstance(out, tuple) else (out,)
    assert len(out) == len(expected)
    for ours, theirs in zip(out, expected):
        assert rel_err(ours, theirs.numpy()) < 1e-5
    if train and "batch_stats" in variables:
        exported = torch_io.to_state_dict({**variables, **updated})
        for key, value in tnet.state_dict().items():
            if "running" in key:
                assert rel_err(exported[key], value.numpy()) < 1e-6, key


def test_face_preset_networks_have_the_reference_shapes():
    """face_hd.yaml: the state_dict shapes of section 2.4 (no values computed)."""
    config = ufdn_config.get_config("face")
    vae = nets.UFDN(nets.freeze(list(config.encoder)), nets.freeze(list(config.decoder)))
    shapes = jax.eval_shape(lambda: vae.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)),
                                             jnp.zeros((1, 3)), jnp.zeros((1, 1024)), train=False))
    sd = torch_io.to_state_dict(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes))
    assert len(sd) == 76
    assert sd["dec_0.0.weight"].shape == (1027, 1024, 4, 4)
    assert sd["enc_mu.0.weight"].shape == (1024, 1024, 4, 4)
    n_params = sum(v.size for k, v in sd.items() if "running" not in k and "num_batches" not in k)
    assert n_params == 72_683_139
    d_pix = nets.Discriminator(nets.freeze(list(config.D_pix)))
    shapes = jax.eval_shape(lambda: d_pix.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)),
                                               train=False))
    sd = torch_io.to_state_dict(jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes))
    assert sd["layer_5.0.weight"].shape == (512, 1024)
    assert sd["layer_out_1.0.weight"].shape == (3, 512)
    assert sum(v.size for v in sd.values()) == 1_224_436
