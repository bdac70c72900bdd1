"""Layers against their PyTorch modules on random tensors (float32 outputs, float64 gradients)."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from unpaired import layers

from tests.helpers import nchw, nhwc, rel_err, x64

torch.backends.cudnn.allow_tf32 = False
F32_TOL = 1e-5  # float32 outputs: relative (max-abs over max-abs) error
F64_TOL = 1e-10  # float64 gradients


@pytest.mark.parametrize("mode,torch_pad", [
    ("reflect", torch.nn.ReflectionPad2d), ("replicate", torch.nn.ReplicationPad2d),
    ("zero", torch.nn.ZeroPad2d)])
def test_pad2d_matches_torch(mode, torch_pad):
    x = np.random.RandomState(0).randn(2, 7, 9, 3).astype(np.float32)
    ours = layers.pad2d(jnp.asarray(x), (1, 2, 3, 1), mode)
    # PyTorch orders (left, right, top, bottom).
    ref = torch_pad((3, 1, 1, 2))(nchw(x))
    chex.assert_shape(ours, (2, 10, 13, 3))
    np.testing.assert_array_equal(np.asarray(ours), nhwc(ref))


@pytest.mark.parametrize("k,s,p", [(3, 1, 1), (3, 2, 1), (4, 2, 1), (4, 1, 1), (7, 1, 0), (1, 1, 0)])
def test_conv2d_matches_torch(k, s, p):
    rng = np.random.RandomState(1)
    x = rng.randn(2, 16, 12, 5).astype(np.float32)
    w = rng.randn(6, 5, k, k).astype(np.float32) * 0.1
    ours = layers.conv2d(jnp.asarray(x), jnp.asarray(w.transpose(2, 3, 1, 0)), stride=s, padding=p)
    ref = torch.nn.functional.conv2d(nchw(x), torch.from_numpy(w), stride=s, padding=p)
    assert rel_err(ours, nhwc(ref)) < F32_TOL


@pytest.mark.parametrize("shape,k,s,p", [
    ((2, 4, 4, 6), 4, 1, 1),   # the 32x32 PatchGAN's model_8: 4x4 -> 3x3
    ((2, 3, 3, 6), 4, 1, 1),   # its model_11: 3x3 -> 2x2, one output channel below
    ((2, 5, 7, 3), 4, 2, 1),   # strided, non-square
    ((1, 3, 3, 4), 3, 1, 0),   # 1x1 output from a 3x3 kernel
    ((2, 4, 4, 3), 5, 1, 2),   # CoDis32x32's conv3: 5x5 over a 4x4 map
    ((2, 8, 8, 3), 8, 1, 0),   # CoVAE32x32's g_en_conv2: 8x8 to 1x1
])
@pytest.mark.parametrize("path", ["conv2d", "small_output"])
def test_conv2d_with_output_smaller_than_kernel_matches_torch_gradients(shape, k, s, p, path):
    """conv2d takes the im2col matmul on CPU (`_conv_as_matmul`) and `_conv_small_output`
    (input gradient as matmul + col2im) elsewhere; both are checked here, on any backend."""
    rng = np.random.RandomState(4)
    x = rng.randn(*shape)
    c_out = 1 if shape[1] == 3 else 5
    w = rng.randn(c_out, shape[-1], k, k) * 0.1
    with x64():
        if path == "conv2d":
            f = lambda x_, k_: layers.conv2d(x_, k_, stride=s, padding=p)  # noqa: E731
        else:
            f = lambda x_, k_: layers._conv_small_output(x_, k_, (s, s), (p, p), None)  # noqa: E731
        y, vjp = jax.vjp(f, jnp.asarray(x), jnp.asarray(w.transpose(2, 3, 1, 0)))
        assert min(y.shape[1:3]) < k  # the small-output path is the one under test
        cot = rng.randn(*y.shape)
        dx, dk = vjp(jnp.asarray(cot))
    xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    yt = torch.nn.functional.conv2d(xt, wt, stride=s, padding=p)
    yt.backward(torch.from_numpy(cot.transpose(0, 3, 1, 2)))
    assert rel_err(y, nhwc(yt)) < F64_TOL
    assert rel_err(dx, nhwc(xt.grad)) < F64_TOL
    assert rel_err(dk, wt.grad.numpy().transpose(2, 3, 1, 0)) < F64_TOL


@pytest.mark.parametrize("k,s,p,op", [(3, 2, 1, 1), (4, 2, 1, 0), (3, 1, 1, 0), (5, 2, 2, 1)])
def test_conv_transpose2d_forward_and_gradients_match_torch(k, s, p, op):
    rng = np.random.RandomState(2)
    x = rng.randn(2, 6, 5, 4)
    w = rng.randn(4, 3, k, k) * 0.1  # PyTorch ConvTranspose2d weight: (C_in, C_out, k, k)
    kernel = w.transpose(2, 3, 1, 0)
    with x64():
        def f(x_, k_):
            return layers.conv_transpose2d(x_, k_, s, p, op)
        y = f(jnp.asarray(x), jnp.asarray(kernel))
        cot = np.random.RandomState(3).randn(*y.shape)
        _, vjp = jax.vjp(f, jnp.asarray(x), jnp.asarray(kernel))
        dx, dk = vjp(jnp.asarray(cot))
        # The custom VJP must equal plain autodiff of the direct formulation.
        _, vjp_auto = jax.vjp(
            lambda a, b: layers._conv_transpose_direct(a, b, s, p, op, None),
            jnp.asarray(x), jnp.asarray(kernel))
        dx_auto, dk_auto = vjp_auto(jnp.asarray(cot))
    xt = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    yt = torch.nn.functional.conv_transpose2d(xt, wt, stride=s, padding=p, output_padding=op)
    yt.backward(torch.from_numpy(cot.transpose(0, 3, 1, 2)))
    assert y.shape == tuple(nhwc(yt).shape)
    assert rel_err(y, nhwc(yt)) < F64_TOL
    assert rel_err(dx, nhwc(xt.grad)) < F64_TOL
    assert rel_err(dk, wt.grad.numpy().transpose(2, 3, 1, 0)) < F64_TOL
    assert rel_err(dx, dx_auto) < F64_TOL and rel_err(dk, dk_auto) < F64_TOL


def test_conv_transpose_module_float32_matches_torch():
    rng = np.random.RandomState(4)
    x = rng.randn(1, 8, 8, 6).astype(np.float32)
    module = layers.ConvTranspose2d(4, 3, 2, 1, 1)
    variables = module.init(jax.random.key(0), jnp.asarray(x))
    kernel = np.asarray(variables["params"]["kernel"])
    chex.assert_shape(kernel, (3, 3, 4, 6))
    ref = torch.nn.ConvTranspose2d(6, 4, 3, 2, 1, output_padding=1)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(np.array(kernel.transpose(3, 2, 0, 1))))
        ref.bias.copy_(torch.from_numpy(np.array(variables["params"]["bias"])))
        expected = nhwc(ref(nchw(x)))
    out = module.apply(variables, jnp.asarray(x))
    chex.assert_shape(out, (1, 16, 16, 4))
    assert rel_err(out, expected) < F32_TOL


def test_conv2d_module_reflect_padding_and_init():
    module = layers.Conv2d(32, 7, padding=3, padding_mode="reflect")
    x = jnp.ones((1, 9, 9, 8))
    variables = module.init(jax.random.key(0), x)
    kernel = np.asarray(variables["params"]["kernel"])
    chex.assert_shape(kernel, (7, 7, 8, 32))
    assert abs(kernel.std() - 0.02) < 0.002 and abs(kernel.mean()) < 0.002
    np.testing.assert_array_equal(np.asarray(variables["params"]["bias"]), 0.0)
    chex.assert_shape(module.apply(variables, x), (1, 9, 9, 32))


def test_instance_norm_matches_torch_and_keeps_dtype():
    x = (np.random.RandomState(5).randn(3, 10, 7, 4) * 3 + 2).astype(np.float32)
    ref = torch.nn.InstanceNorm2d(4, affine=False, track_running_stats=False)(nchw(x))
    assert rel_err(layers.instance_norm(jnp.asarray(x)), nhwc(ref)) < F32_TOL
    chex.assert_type(layers.instance_norm(jnp.asarray(x, jnp.bfloat16)), jnp.bfloat16)


def test_batch_norm_train_and_eval_match_torch_including_running_stats():
    rng = np.random.RandomState(6)
    xs = [(rng.randn(4, 5, 6, 3) * 2 + 1).astype(np.float32) for _ in range(3)]
    module = layers.BatchNorm()
    variables = module.init(jax.random.key(1), jnp.asarray(xs[0]))
    ref = torch.nn.BatchNorm2d(3)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(np.array(variables["params"]["scale"])))
    params, stats = variables["params"], variables["batch_stats"]
    for x in xs:
        out, updated = module.apply({"params": params, "batch_stats": stats}, jnp.asarray(x),
                                    True, mutable=["batch_stats"])
        stats = updated["batch_stats"]
        expected = nhwc(ref(nchw(x)))
        assert rel_err(out, expected) < F32_TOL
    assert rel_err(stats["mean"], ref.running_mean.numpy()) < F32_TOL
    assert rel_err(stats["var"], ref.running_var.numpy()) < F32_TOL
    assert int(stats["num_batches_tracked"]) == int(ref.num_batches_tracked) == 3
    ref.eval()
    out = module.apply({"params": params, "batch_stats": stats}, jnp.asarray(xs[0]), False)
    assert rel_err(out, nhwc(ref(nchw(xs[0])))) < F32_TOL


def test_leaky_relu_value_and_gradient_match_torch():
    x = np.array([-2.0, -0.0, 0.0, 1.5], np.float64)
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.leaky_relu(xt, 0.2).sum().backward()
    with x64():
        value = layers.leaky_relu(jnp.asarray(x))
        grad = jax.grad(lambda v: layers.leaky_relu(v).sum())(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(value), torch.nn.functional.leaky_relu(torch.tensor(x), 0.2).numpy())
    np.testing.assert_allclose(np.asarray(grad), xt.grad.numpy())


def test_unknown_names_are_rejected():
    with pytest.raises(ValueError, match="padding mode"):
        layers.pad2d(jnp.zeros((1, 4, 4, 1)), 1, "circular")
    with pytest.raises(ValueError, match="norm"):
        layers.make_norm("group", "n")


def test_linear_matches_torch_linear_with_the_torch_weight_layout():
    """`layers.Linear` keeps nn.Linear's (out, in) `weight`, so state_dicts map unchanged."""
    _torch = torch
    _torch.manual_seed(0)
    tlin = _torch.nn.Linear(7, 5)
    module = layers.Linear(5, name=None)
    template = module.init(jax.random.key(0), jnp.zeros((1, 7)))
    assert template["params"]["weight"].shape == (5, 7)
    bound = 1 / 7 ** 0.5  # PyTorch's default init range
    assert float(jnp.max(jnp.abs(template["params"]["weight"]))) <= bound
    variables = {"params": {k: v.detach().numpy() for k, v in tlin.state_dict().items()}}
    x = np.random.RandomState(0).randn(3, 7).astype(np.float32)
    with _torch.no_grad():
        expected = tlin(_torch.from_numpy(x)).numpy()
    out = module.apply(variables, x)
    assert np.max(np.abs(np.asarray(out) - expected)) < 1e-6 * np.max(np.abs(expected))


def test_batch_norm_scale_mean_option_draws_gamma_around_it():
    """scale_mean=0 is UFDN's `weights_init` (gamma ~ N(0, 0.02)); the default stays N(1, 0.02)."""
    x = jnp.zeros((2, 4, 4, 256))
    ufdn = layers.BatchNorm(scale_mean=0.0).init(jax.random.key(0), x, False)["params"]["scale"]
    default = layers.BatchNorm().init(jax.random.key(0), x, False)["params"]["scale"]
    assert abs(float(jnp.mean(ufdn))) < 0.01 and abs(float(jnp.mean(default)) - 1) < 0.01
    assert np.allclose(np.asarray(default) - 1.0, np.asarray(ufdn), atol=1e-6)
    assert 0.015 < float(jnp.std(ufdn)) < 0.025


def test_small_output_conv_on_cpu_is_a_matmul_without_convolutions():
    """XLA:CPU runs a conv whose output is smaller than its kernel on a generic loop (100x
    slower than the matmul at UNIT DA's 5x5 conv over 4x4x256): on CPU neither the conv
    nor its gradient may contain a convolution."""
    if jax.default_backend() != "cpu":
        pytest.skip("the matmul path is CPU's; other backends keep XLA's convolution")
    x, w = jnp.ones((2, 4, 4, 3)), jnp.ones((5, 5, 3, 4))
    grad = jax.grad(lambda x, w: jnp.sum(layers.conv2d(x, w, padding=2)), (0, 1))
    assert "convolution" not in jax.jit(grad).lower(x, w).as_text()
    assert "convolution" in jax.jit(grad).lower(jnp.ones((2, 8, 8, 3)), w).as_text()


@pytest.mark.parametrize("k", [3, 4, 7])
def test_unpadded_conv_run_padded_then_cropped_is_the_plain_conv(k):
    """conv2d's CPU path for stride-1 convs without padding (pad by itself, crop back; its
    custom VJP takes the weight gradient from the plain conv): values and both gradients
    equal XLA's plain VALID conv in float64 (to rounding)."""
    with x64():
        rng = np.random.default_rng(k)
        x = jnp.asarray(rng.standard_normal((2, 17, 16, 3)))  # outputs >= the kernel
        w = jnp.asarray(rng.standard_normal((k, k, 3, 5)))
        plain = lambda x, w: layers._conv_xla(x, w, (1, 1), (0, 0), None)
        cropped = lambda x, w: layers._conv_unpadded_via_padded(x, w, None)
        if jax.default_backend() == "cpu":  # conv2d takes this path there
            jaxpr = jax.make_jaxpr(lambda x, w: layers.conv2d(x, w))(x, w)
            assert jaxpr.jaxpr.eqns[-1].primitive.name.startswith("custom_vjp") and "slice" in str(jaxpr)
        chex.assert_trees_all_close(cropped(x, w), plain(x, w), rtol=1e-12, atol=1e-12)
        loss = lambda f: lambda x, w: jnp.sum(jnp.sin(f(x, w)))
        chex.assert_trees_all_close(jax.grad(loss(cropped), (0, 1))(x, w),
                                    jax.grad(loss(plain), (0, 1))(x, w), rtol=1e-12, atol=1e-12)
