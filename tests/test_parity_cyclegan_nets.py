"""CycleGAN networks against the PyTorch re-expression with the same weights.

Weights are built in PyTorch (reference init) and loaded through `unpaired.torch_io`,
so every test also exercises the checkpoint converter. Tolerances: outputs in float32
with TF32 off, relative error (max abs diff over max abs) < 1e-5 (3e-5 for the full
256x256 9-block generator, whose 28 layers accumulate float32 rounding); gradients in
float64 < 1e-9.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from unpaired import torch_io
from unpaired.nets import cyclegan as nets

from unpaired.torch_reference import cyclegan as ref

from tests.helpers import grad_errors, nchw, nhwc, rel_err, x64

torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False


def build_pair(kind, netname, in_nc, out_nc=None, width=8, norm="instance", dropout=False,
               n_layers=3, size=32, seed=0, dtype=torch.float32):
    """The same network in PyTorch (reference init, seeded) and in Flax, weights copied."""
    torch.manual_seed(seed)
    if kind == "G":
        tnet = ref.define_G(in_nc, out_nc, width, netname, norm, dropout)
        module = nets.define_G(netname, out_nc, width, norm, dropout)
    else:
        tnet = ref.define_D(in_nc, width, netname, n_layers, norm)
        module = nets.define_D(netname, width, n_layers, norm)
    ref.init_weights(tnet, 0.02, torch.Generator().manual_seed(seed))
    tnet = tnet.to(dtype)
    # Shapes and dtypes are all the converter reads: an abstract init compiles nothing.
    template = jax.eval_shape(lambda k, x: module.init(k, x, False), jax.random.key(0),
                              jax.ShapeDtypeStruct((1, size, size, in_nc), jnp.float32))
    variables = torch_io.from_state_dict(tnet.state_dict(), template)
    return tnet, module, variables


CASES = [
    # kind, netname, in_nc, out_nc, width, norm, dropout, n_layers, size
    ("G", "resnet_6blocks", 3, 3, 8, "instance", False, 3, 32),
    ("G", "resnet_6blocks", 1, 3, 8, "batch", False, 3, 32),
    ("G", "resnet_9blocks", 3, 1, 4, "none", True, 3, 24),
    ("G", "unet_128", 3, 3, 4, "batch", True, 3, 128),
    ("G", "unet_256", 1, 1, 2, "instance", False, 3, 256),
    ("D", "basic", 3, None, 8, "instance", False, 3, 64),
    ("D", "n_layers", 1, None, 4, "batch", False, 4, 64),
    ("D", "n_layers", 3, None, 4, "none", False, 2, 32),
    ("D", "pixel", 3, None, 8, "instance", False, 3, 16),
    ("D", "pixel", 3, None, 8, "batch", False, 3, 16),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[1]}-{c[5]}-drop{c[6]}")
def test_network_outputs_match_in_eval_and_train_mode(case):
    kind, netname, in_nc, out_nc, width, norm, dropout, n_layers, size = case
    tnet, module, variables = build_pair(kind, netname, in_nc, out_nc, width, norm, dropout,
                                         n_layers, size)
    x = np.random.RandomState(1).uniform(-1, 1, (2, size, size, in_nc)).astype(np.float32)
    tnet.eval()  # eval: BN running stats, dropout off
    with torch.no_grad():
        expected = nhwc(tnet(nchw(x)))
    apply = jax.jit(module.apply, static_argnums=2, static_argnames="mutable")
    out = apply(variables, jnp.asarray(x), False)
    assert out.shape == expected.shape
    assert rel_err(out, expected) < 1e-5
    if dropout:
        return  # train mode draws dropout masks from different RNGs
    tnet.train()  # train: batch statistics, and BN running stats updated once
    with torch.no_grad():
        expected = nhwc(tnet(nchw(x)))
    out, updated = apply(variables, jnp.asarray(x), True, mutable=("batch_stats",))
    assert rel_err(out, expected) < 1e-5
    if norm == "batch":
        exported = torch_io.to_state_dict({**variables, **updated})
        for key, value in tnet.state_dict().items():
            if key.endswith(("running_mean", "running_var")):
                assert rel_err(exported[key], value.numpy()) < 1e-5, key
            if key.endswith("num_batches_tracked"):
                assert int(exported[key]) == int(value) == 1


def test_full_default_generator_and_discriminator_at_256():
    """resnet_9blocks (ngf 64, 11.4 M params) and the 70x70 PatchGAN at the full 256x256."""
    tnet, module, variables = build_pair("G", "resnet_9blocks", 3, 3, 64, size=256)
    x = np.random.RandomState(2).uniform(-1, 1, (1, 256, 256, 3)).astype(np.float32)
    with torch.no_grad():
        expected = nhwc(tnet(nchw(x)))
    out = jax.jit(module.apply, static_argnums=2)(variables, jnp.asarray(x), True)
    assert sum(np.size(p) for p in jax.tree.leaves(variables)) == 11_378_179
    assert rel_err(out, expected) < 3e-5

    dnet, dmodule, dvars = build_pair("D", "basic", 3, width=64, size=256)
    with torch.no_grad():
        dexpected = nhwc(dnet(nchw(x)))
    dout = jax.jit(dmodule.apply, static_argnums=2)(dvars, jnp.asarray(x), True)
    assert dout.shape == (1, 30, 30, 1)
    assert sum(np.size(p) for p in jax.tree.leaves(dvars)) == 2_764_737
    assert rel_err(dout, dexpected) < 1e-5


GRAD_CASES = [
    ("G", "resnet_6blocks", 3, 3, 4, "instance", 3, 16),
    ("G", "unet_128", 1, 1, 2, "batch", 3, 128),
    ("D", "basic", 3, None, 4, "instance", 3, 32),
    ("D", "pixel", 3, None, 4, "batch", 3, 8),
]


@pytest.mark.parametrize("case", GRAD_CASES, ids=lambda c: f"{c[1]}-{c[5]}")
def test_network_gradients_match_in_float64(case):
    kind, netname, in_nc, out_nc, width, norm, n_layers, size = case
    tnet, module, variables = build_pair(kind, netname, in_nc, out_nc, width, norm, False,
                                         n_layers, size, dtype=torch.float64)
    tnet.train()
    rng = np.random.RandomState(3)
    x = rng.uniform(-1, 1, (2, size, size, in_nc))
    xt = nchw(x).requires_grad_(True)
    yt = tnet(xt)
    cot = rng.randn(*nhwc(yt).shape)
    yt.backward(nchw(cot))
    with x64():
        vars64 = jax.tree.map(lambda a: np.asarray(a, np.float64) if a.dtype.kind == "f" else a, variables)
        stats = vars64.get("batch_stats", {})

        def loss(params, inputs):
            v = {"params": params, **({"batch_stats": stats} if stats else {})}
            out = module.apply(v, inputs, True, mutable=["batch_stats"])[0]
            return jnp.sum(out * cot)

        dparams, dx = jax.jit(jax.grad(loss, argnums=(0, 1)))(vars64["params"], jnp.asarray(x))
    assert rel_err(dx, nhwc(xt.grad)) < 1e-9
    errors = grad_errors(torch_io.to_state_dict({"params": dparams}),
                         {k: p.grad.numpy() for k, p in tnet.named_parameters()})
    assert max(errors.values()) < 1e-9, max(errors.items(), key=lambda kv: kv[1])


def test_export_loads_back_into_pytorch_and_gives_the_same_outputs(tmp_path):
    module = nets.define_G("resnet_6blocks", 3, 8, "instance", False)
    variables = jax.jit(lambda k: module.init(k, jnp.zeros((1, 32, 32, 3)), False))(jax.random.key(7))
    path = tmp_path / "latest_net_G_A.pth"
    torch_io.save_pth(torch_io.to_state_dict(variables), str(path))
    tnet = ref.define_G(3, 3, 8, "resnet_6blocks", "instance", False)
    tnet.load_state_dict(torch.load(path, weights_only=True), strict=True)
    x = np.random.RandomState(4).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        expected = nhwc(tnet(nchw(x)))
    assert rel_err(jax.jit(module.apply, static_argnums=2)(variables, jnp.asarray(x), False), expected) < 1e-5
    # And back again through a file, as an official checkpoint would come in.
    reloaded = torch_io.from_state_dict(torch_io.load_pth(str(path)), variables)
    for a, b in zip(jax.tree.leaves(reloaded), jax.tree.leaves(variables)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_legacy_instance_norm_running_stats_are_dropped():
    tnet, module, variables = build_pair("G", "resnet_6blocks", 3, 3, 4, size=16)
    state = dict(tnet.state_dict())
    for key in ("model.2", "model.10.conv_block.2", "model.10.conv_block.6"):
        state[f"{key}.running_mean"] = torch.zeros(4 if key == "model.2" else 16)
        state[f"{key}.running_var"] = torch.ones(4 if key == "model.2" else 16)
        state[f"{key}.num_batches_tracked"] = torch.tensor(0)
    loaded = torch_io.from_state_dict(state, variables)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(variables)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_checkpoint_saved_with_dropout_gets_a_clear_error():
    with_dropout, _, _ = build_pair("G", "resnet_6blocks", 3, 3, 4, dropout=True, size=16)
    _, _, template = build_pair("G", "resnet_6blocks", 3, 3, 4, dropout=False, size=16)
    with pytest.raises(torch_io.StateDictMismatchError, match=r"conv_block\.5.*no_dropout=False"):
        torch_io.from_state_dict(with_dropout.state_dict(), template, source="latest_net_G.pth")


def test_shape_mismatch_names_the_key():
    wide, _, _ = build_pair("G", "resnet_6blocks", 3, 3, 8, size=16)
    _, module, _ = build_pair("G", "resnet_6blocks", 3, 3, 4, size=16)
    # An eagerly initialised template keeps the layers' order (jit or eval_shape would sort
    # the keys), so the first key checked, and named, is the first layer's weight.
    template = module.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)), False)
    with pytest.raises(torch_io.StateDictMismatchError, match=r"model\.1\.weight.*\(8, 3, 7, 7\)"):
        torch_io.from_state_dict(wide.state_dict(), template)


def test_resnet_generator_with_remat_has_the_same_parameters_and_outputs():
    plain = nets.define_G("resnet_6blocks", 3, 4, "instance", False)
    remat = nets.define_G("resnet_6blocks", 3, 4, "instance", False, remat=True)
    x = jnp.asarray(np.random.RandomState(5).uniform(-1, 1, (1, 16, 16, 3)), jnp.float32)
    variables = jax.jit(lambda k: plain.init(k, x, False))(jax.random.key(0))  # one compile, not one per op
    remat_vars = jax.eval_shape(lambda k: remat.init(k, x, False), jax.random.key(0))
    assert jax.tree.structure(variables) == jax.tree.structure(remat_vars)
    assert jax.tree.map(jnp.shape, variables) == jax.tree.map(lambda a: a.shape, remat_vars)
    g1 = jax.jit(jax.grad(lambda v: jnp.sum(plain.apply(v, x, True) ** 2)))(variables)
    g2 = jax.jit(jax.grad(lambda v: jnp.sum(remat.apply(v, x, True) ** 2)))(variables)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)


def test_unet_generator_with_remat_has_the_same_parameters_and_float64_gradients():
    """unet_128 with BatchNorm and dropout: remat changes neither the parameter tree, nor
    the float64 gradients, nor the updated batch statistics."""
    with x64():
        plain = nets.define_G("unet_128", 1, 2, "batch", True)
        remat = nets.define_G("unet_128", 1, 2, "batch", True, remat=True)
        x = jnp.asarray(np.random.RandomState(6).uniform(-1, 1, (1, 128, 128, 1)), jnp.float64)
        shapes_of = lambda m: jax.eval_shape(lambda k: m.init(k, x, False), jax.random.key(0))
        shapes = shapes_of(plain)
        assert shapes == shapes_of(remat)
        rng = np.random.RandomState(7)  # seeded values: eager Flax init of a U-Net is slow

        def fill(path, leaf):
            name = str(path[-1].key)
            if name == "num_batches_tracked":
                return jnp.zeros(leaf.shape, leaf.dtype)
            base = {"scale": 1.0, "var": 1.0}.get(name, 0.0)
            return jnp.asarray(base + 0.1 * rng.standard_normal(leaf.shape), jnp.float64)

        variables = jax.tree_util.tree_map_with_path(fill, shapes)
        rngs = {"dropout": jax.random.key(3)}
        jaxpr = lambda m: str(jax.make_jaxpr(lambda v: m.apply(v, x, False))(variables))
        assert jaxpr(plain).count("remat") == 0
        assert jaxpr(remat).count("remat") == 6  # every non-outermost skip block of 7

        def loss(module, params):
            y, stats = module.apply({**variables, "params": params}, x, True, rngs=rngs,
                                    mutable=["batch_stats"])
            return jnp.sum(y**2), stats

        g1, s1 = jax.jit(jax.grad(lambda p: loss(plain, p), has_aux=True))(variables["params"])
        g2, s2 = jax.jit(jax.grad(lambda p: loss(remat, p), has_aux=True))(variables["params"])
        for a, b in zip(jax.tree.leaves((g1, s1)), jax.tree.leaves((g2, s2))):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-12, atol=1e-14)
        assert min(float(np.max(np.abs(a))) for a in jax.tree.leaves(g1)) > 0
