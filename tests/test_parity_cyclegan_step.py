"""The CycleGAN objective and training step against the PyTorch reference step.

Same weights (built in PyTorch, loaded through torch_io), same inputs, the pool's random
draws replayed on the PyTorch side. Tolerances: every loss term in float32 (TF32 off)
within 1e-5 relative; gradients of the total G and D losses, and all parameters and
losses over 3 full Adam steps, in float64 within 1e-9 relative.

Parameters after Adam steps are compared network-wise (max abs error over the network's
largest parameter < 1e-9) and per tensor at 1e-7: Adam normalises each update by the
gradient's own size, so a small bias whose gradient is a sum of strongly cancelling
terms keeps float64 rounding of ~1e-9 of its own (tiny) value, while a wrong update rule
would be off by O(1). Conv biases cancelled by an InstanceNorm have a rounding-noise
gradient on both sides and are held to an absolute bound (`biases_before_instance_norm`).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from configs import cyclegan as cyclegan_config
from unpaired import methods, pool, torch_io
from unpaired.methods import cyclegan as cyclegan_method

from tests.helpers import (assert_grads_match, assert_params_match, biases_before_instance_norm,
                           nchw, rel_err, x64)
from unpaired.torch_reference import cyclegan as ref

SIZE, BATCH, WIDTH = 32, 2, 4


def tiny_config(**overrides):
    config = cyclegan_config.get_config("folder")
    config.netG = "resnet_6blocks"
    config.ngf = config.ndf = WIDTH
    config.data.crop_size = SIZE
    config.batch_size = BATCH
    config.pool_size = 3
    config.n_epochs, config.n_epochs_decay = 1, 2  # lr decays within the 3 compared steps
    for key, value in overrides.items():
        config[key] = value
    return config


def build(config, dtype=torch.float32, seed=0):
    """(method, state, reference) with identical weights; float64 state when dtype is double.

    The float64 state is created under x64, so that the optimizer's hyperparameters
    (b2 = 0.999 above all) are float64 too, as PyTorch's Python floats are.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    tnets = {}
    for name in ("G_A", "G_B"):
        tnets[name] = ref.init_weights(ref.define_G(3, 3, WIDTH, config.netG, config.norm,
                                                    not config.no_dropout), 0.02, gen)
    for name in ("D_A", "D_B"):
        tnets[name] = ref.init_weights(ref.define_D(3, WIDTH, config.netD, config.n_layers_D,
                                                    config.norm), 0.02, gen)
    tnets = {k: v.to(dtype) for k, v in tnets.items()}
    method = methods.build(config, steps_per_epoch=1)
    templates = method.init_variables(jax.random.key(0))
    variables = {n: torch_io.from_state_dict(tnets[n].state_dict(), templates[n]) for n in tnets}
    if dtype == torch.float64:
        with x64():
            state = to_f64(method.state_from_variables(variables, jax.random.key(42)))
    else:
        state = method.state_from_variables(variables, jax.random.key(42))
    reference = ref.CycleGANReference(
        tnets["G_A"], tnets["G_B"], tnets["D_A"], tnets["D_B"], lr=config.lr,
        beta1=config.beta1, lambda_A=config.lambda_A, lambda_B=config.lambda_B,
        lambda_identity=config.lambda_identity, gan_mode=config.gan_mode,
        pool_size=config.pool_size, n_epochs=config.n_epochs,
        n_epochs_decay=config.n_epochs_decay, epoch_count=config.epoch_count)
    return method, state, reference


def batch_of(seed, dtype=np.float32):
    rng = np.random.RandomState(seed)
    return {k: rng.uniform(-1, 1, (BATCH, SIZE, SIZE, 3)).astype(dtype) for k in "AB"}


def to_f64(tree):
    return jax.tree.map(
        lambda x: jnp.asarray(x, jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


@pytest.mark.parametrize("overrides", [
    {}, {"gan_mode": "vanilla"}, {"lambda_identity": 0.0}, {"gan_mode": "wgangp", "gp_weight": 0.0},
    {"gan_mode": "hinge"}, {"fuse_passes": False}, {"norm": "batch"},
], ids=["lsgan", "vanilla", "no-identity", "wgangp-no-gp", "hinge", "unfused", "batchnorm"])
def test_every_loss_term_matches_in_float32(overrides):
    config = tiny_config(**overrides)
    method, state, reference = build(config)
    batch = batch_of(1)
    d_params = {n: state.params[n] for n in ("D_A", "D_B")}
    g_params = {n: state.params[n] for n in ("G_A", "G_B")}
    total, aux = jax.jit(method.generator_loss)(g_params, d_params, state.model_state,
                                                batch, jax.random.key(0))
    with torch.no_grad():
        t_total, t_terms, t_fakes = reference.generator_loss(nchw(batch["A"]), nchw(batch["B"]))
        d_total, d_terms = reference.discriminator_loss(
            nchw(batch["A"]), nchw(batch["B"]), t_fakes["fake_A"], t_fakes["fake_B"])
    for name, value in t_terms.items():
        assert rel_err(aux["terms"][name], value.numpy()) < 1e-5 or float(value) == 0.0, name
    assert rel_err(total, t_total.numpy()) < 1e-5
    for name in ("fake_A", "fake_B", "rec_A", "rec_B"):
        assert rel_err(aux["fakes"][name], t_fakes[name].numpy().transpose(0, 2, 3, 1)) < 1e-5
    ours_d, d_aux = jax.jit(method.discriminator_loss)(
        d_params, state.model_state, batch, aux["fakes"]["fake_A"], aux["fakes"]["fake_B"],
        jax.random.key(1))
    for name in ("D_A", "D_B"):
        assert rel_err(d_aux["terms"][name], d_terms[name].numpy()) < 1e-5
    # The total is judged against the size of its terms: under wgangp they nearly cancel.
    scale = sum(abs(float(v)) for v in d_terms.values())
    assert abs(float(ours_d) - float(d_total)) < 1e-5 * scale


@pytest.mark.parametrize("fuse_passes", [True, False], ids=["fused", "unfused"])
def test_total_loss_gradients_match_in_float64(fuse_passes):
    config = tiny_config(fuse_passes=fuse_passes)
    assert methods.build(config).fuse_passes == fuse_passes
    method, state, reference = build(config, torch.float64)
    batch = batch_of(2, np.float64)
    real_A, real_B = nchw(batch["A"]), nchw(batch["B"])
    loss_G, _, fakes = reference.generator_loss(real_A, real_B)
    g_nets = [reference.netG_A, reference.netG_B]
    d_nets = [reference.netD_A, reference.netD_B]
    g_grads = torch.autograd.grad(loss_G, [p for n in g_nets for p in n.parameters()])
    loss_D, _ = reference.discriminator_loss(real_A, real_B, fakes["fake_A"], fakes["fake_B"])
    d_grads = torch.autograd.grad(loss_D, [p for n in d_nets for p in n.parameters()])
    expected = {}
    grads_iter = iter(g_grads + d_grads)
    for name, net in zip(("G_A", "G_B", "D_A", "D_B"), g_nets + d_nets):
        for key, _ in net.named_parameters():
            expected[f"{name}/{key}"] = next(grads_iter).numpy()
    with x64():
        g_params = {n: state.params[n] for n in ("G_A", "G_B")}
        d_params = {n: state.params[n] for n in ("D_A", "D_B")}
        (_, aux), dg = jax.jit(jax.value_and_grad(method.generator_loss, has_aux=True))(
            g_params, d_params, state.model_state, batch, jax.random.key(0))
        dd = jax.jit(jax.grad(method.discriminator_loss, has_aux=True))(
            d_params, state.model_state, batch, aux["fakes"]["fake_A"], aux["fakes"]["fake_B"],
            jax.random.key(1))[0]
    assert_grads_match({**dg, **dd}, expected)


def test_three_training_steps_match_the_reference_in_float64():
    """Parameters, losses, pools and learning rates after each of 3 full Adam steps."""
    config = tiny_config()
    method, state, reference = build(config, torch.float64)
    step = jax.jit(method.train_step)
    with x64():
        for i in range(3):
            batch = batch_of(10 + i, np.float64)
            keys = method.step_keys(state.key)
            draws = {}
            for side in ("A", "B"):
                u, idx = pool.draw(keys[f"pool_{side}"], BATCH, config.pool_size)
                # Image n uses draw n only if the pool is full when it arrives; the reference
                # consumes draws only then, so hand it exactly those.
                count = int(state.buffers[f"fake_{side}"].count)
                draws[side] = [(float(u[n]), int(idx[n])) for n in range(BATCH)
                               if count + n >= config.pool_size]
            lr_used = reference.lr
            losses = reference.optimize_parameters(
                nchw(batch["A"]), nchw(batch["B"]), pool_draws_A=draws["A"], pool_draws_B=draws["B"])
            reference.update_learning_rate()  # steps_per_epoch = 1: every step ends an epoch
            state, metrics = step(state, batch)
            assert abs(float(metrics["lr"]) - lr_used) <= 1e-7 * lr_used, (i, lr_used)
            for name, value in losses.items():
                assert abs(float(metrics[name]) - value) <= 1e-9 * max(abs(value), 1e-3), (i, name)
            for name, net in (("G_A", reference.netG_A), ("G_B", reference.netG_B),
                              ("D_A", reference.netD_A), ("D_B", reference.netD_B)):
                # cancelled biases: noise-driven on both sides; must stay noise-sized
                ours, theirs, kept = assert_params_match(
                    i, name, state.params[name], net, biases_before_instance_norm(net), 1e-7)
                for key in kept:  # and no tensor on its own scale is off (a wrong rule is O(1))
                    assert rel_err(ours[key], theirs[key]) < 1e-7, (i, name, key)
    assert int(state.step) == 3
    assert int(state.buffers["fake_A"].count) == config.pool_size
    pooled = np.concatenate([t.numpy() for t in reference.fake_A_pool.images]).transpose(0, 2, 3, 1)
    assert rel_err(state.buffers["fake_A"].images, pooled) < 1e-9


def test_train_step_runs_without_host_transfers_and_learns_with_bf16():
    """No device-to-host copy inside the jitted step; bf16 compute keeps float32 state."""
    config = tiny_config(dtype="bfloat16")
    method = methods.build(config)
    state = method.create_state(jax.random.key(0))
    batch = jax.device_put({k: jnp.asarray(v) for k, v in batch_of(3).items()})
    step = jax.jit(method.train_step, donate_argnums=0)
    step_lowered = step.lower(state, batch).compile()
    with jax.transfer_guard("disallow"):
        state, metrics = step_lowered(state, batch)
        state, metrics = step_lowered(state, batch)
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(state.params))
    assert metrics["G"].dtype == jnp.float32


def test_passes_are_fused_only_where_samples_stay_independent():
    """BatchNorm mixes the samples of a pass and dropout draws per call: no fusion there."""
    assert methods.build(tiny_config()).fuse_passes
    assert not methods.build(tiny_config(norm="batch")).fuse_passes
    assert not methods.build(tiny_config(no_dropout=False)).fuse_passes
    assert not methods.build(tiny_config(fuse_passes=False)).fuse_passes
    a, b = jnp.arange(6.0).reshape(3, 2), -jnp.arange(6.0).reshape(3, 2)
    both = cyclegan_method._concat(a, b)
    np.testing.assert_array_equal(both[0], a[0])
    np.testing.assert_array_equal(both[1], b[0])  # interleaved: shards stay on their device
    first, second = cyclegan_method._split(both)
    np.testing.assert_array_equal(first, a)
    np.testing.assert_array_equal(second, b)
