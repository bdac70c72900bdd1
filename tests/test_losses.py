"""Losses against the reference's GANLoss / L1Loss / cal_gradient_penalty."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from unpaired import losses, torch_io
from unpaired.nets import cyclegan as nets

from tests.helpers import grad_errors, nchw, rel_err, x64
from unpaired.torch_reference import cyclegan as ref


@pytest.mark.parametrize("mode", ["lsgan", "vanilla", "wgangp", "hinge"])
@pytest.mark.parametrize("real", [True, False])
def test_gan_loss_matches_reference(mode, real):
    pred = np.random.RandomState(0).randn(2, 1, 5, 5) * 2
    criterion = ref.GANLoss(mode)
    for for_d in (True, False):
        if mode == "hinge" and not for_d and not real:
            with pytest.raises(ValueError):
                losses.gan_loss(jnp.asarray(pred), real, mode, for_discriminator=False)
            continue
        expected = criterion(torch.from_numpy(pred), real, for_discriminator=for_d).item()
        with x64():
            ours = losses.gan_loss(jnp.asarray(pred), real, mode, for_discriminator=for_d)
            grad = jax.grad(lambda p: losses.gan_loss(p, real, mode, for_discriminator=for_d))(
                jnp.asarray(pred))
        pt = torch.tensor(pred, requires_grad=True)
        criterion(pt, real, for_discriminator=for_d).backward()
        assert abs(float(ours) - expected) <= 1e-12 * max(1.0, abs(expected))
        assert rel_err(grad, pt.grad.numpy()) < 1e-12


def test_losses_are_float32_scalars_for_bf16_inputs():
    x = jnp.ones((2, 4, 4, 3), jnp.bfloat16)
    for value in (losses.l1_loss(x, 0 * x), losses.mse_loss(x, 0 * x),
                  losses.gan_loss(x, True, "vanilla"), losses.discriminator_loss(x, x)):
        chex.assert_shape(value, ())
        chex.assert_type(value, jnp.float32)


def test_l1_and_discriminator_loss_reductions():
    a = np.random.RandomState(1).randn(3, 4, 4, 2).astype(np.float32)
    b = np.random.RandomState(2).randn(3, 4, 4, 2).astype(np.float32)
    expected = torch.nn.L1Loss()(torch.from_numpy(a), torch.from_numpy(b)).item()
    np.testing.assert_allclose(float(losses.l1_loss(a, b)), expected, rtol=1e-6)
    d = losses.discriminator_loss(jnp.asarray(a), jnp.asarray(b), "lsgan")
    np.testing.assert_allclose(
        float(d), 0.5 * (np.mean((a - 1) ** 2) + np.mean(b ** 2)), rtol=1e-6)
    with pytest.raises(ValueError, match="gan_mode"):
        losses.gan_loss(a, True, "relativistic")


@pytest.mark.parametrize("kind", ["mixed", "real", "fake"])
def test_gradient_penalty_matches_reference_in_float64(kind):
    torch.manual_seed(0)
    tnet = ref.init_weights(ref.define_D(3, 4, "basic", 3, "instance"), 0.02,
                            torch.Generator().manual_seed(0)).double()
    module = nets.define_D("basic", 4, 3, "instance")
    template = module.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)), False)
    variables = torch_io.from_state_dict(tnet.state_dict(), template)
    rng = np.random.RandomState(3)
    real, fake = rng.uniform(-1, 1, (2, 2, 32, 32, 3))
    alpha = rng.uniform(size=2)
    expected, _ = ref.cal_gradient_penalty(
        tnet, nchw(real), nchw(fake), type=kind, lambda_gp=10.0,
        alpha=torch.from_numpy(alpha).view(2, 1, 1, 1))
    params = [p for p in tnet.parameters()]
    # The last bias does not move the input gradient: its penalty gradient is zero.
    expected_grads = [torch.zeros_like(p) if g is None else g for p, g in
                      zip(params, torch.autograd.grad(expected, params, allow_unused=True))]
    with x64():
        vars64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), variables)

        def penalty(v):
            disc = lambda x: module.apply(v, x, True)
            return losses.gradient_penalty(disc, jnp.asarray(real), jnp.asarray(fake),
                                           jnp.asarray(alpha), kind=kind, weight=10.0)

        value, grads = jax.jit(jax.value_and_grad(penalty))(vars64)
    assert abs(float(value) - expected.item()) <= 1e-10 * abs(expected.item())
    errors = grad_errors(torch_io.to_state_dict(grads),
                         {k: g.numpy() for (k, _), g in zip(tnet.named_parameters(), expected_grads)})
    assert max(errors.values()) < 1e-9, max(errors.items(), key=lambda kv: kv[1])
