"""The UNIT (master) objective and training step against the PyTorch re-expression.

Same weights (reference init in PyTorch, loaded through torch_io), same inputs, the
encoders' Gaussian noise injected identically on both sides. Every loss term in float32
(TF32 off) to 1e-5; whole-loss gradients and parameters over 3 full iterations (StepLR
stepped first, D update, G update, Adam with coupled weight decay) in float64 to 1e-9.
Conv biases in front of an affine-free InstanceNorm get a mathematically zero gradient
(rounding noise on both sides, which Adam scales up to lr-sized steps); they are held to
an absolute bound, as in the CycleGAN step test.
"""

import jax
import numpy as np
import pytest
import torch

from configs import unit as unit_config
from unpaired import methods

from tests.helpers import (assert_grads_match, assert_params_match, assert_step_losses_match,
                           nchw, nhwc, rel_err, state_from_torch, x64)
from unpaired.torch_reference import unit as ref

SIZE, BATCH = 16, 2
NETS = ("gen_a", "gen_b", "dis_a", "dis_b")


def small_config(**overrides):
    """The folder preset at tiny widths and SIZE crops, StepLR(2, 0.5), then `overrides`."""
    config = unit_config.get_config("folder")
    config.gen_dim, config.gen_n_res, config.dis_dim, config.dis_n_layer = 4, 1, 4, 2
    config.data.crop_size = SIZE
    config.batch_size = BATCH
    config.step_size, config.gamma = 2, 0.5  # the lr halves within the 3 compared steps
    for key, value in overrides.items():
        config[key] = value
    return config


def tiny_config(**overrides):
    # KL terms weigh in visibly
    return small_config(**{"recon_kl_w": 0.3, "recon_kl_cyc_w": 0.2, **overrides})


def hyper(config):
    keys = ("gan_w", "recon_x_w", "recon_kl_w", "recon_x_cyc_w", "recon_kl_cyc_w", "lr",
            "beta1", "beta2", "weight_decay", "step_size", "gamma")
    return {k: config[k] for k in keys}


def build_nets(config, dtype=torch.float32):
    """The reference's freshly initialised networks, our method and its state holding them."""
    tnets = ref.build_unit(3, 3, config.gen_dim, config.gen_n_downsample, config.gen_n_res,
                           config.dis_dim, config.dis_n_layer, config.dis_num_scales)
    tnets = {k: v.to(dtype) for k, v in tnets.items()}
    method = methods.build(config)
    return tnets, method, state_from_torch(method, tnets, NETS, dtype)


def build(config, dtype=torch.float32):
    tnets, method, state = build_nets(config, dtype)
    return method, state, ref.UNITReference(tnets, hyper(config))


def batch_of(seed, dtype=np.float32):
    rng = np.random.RandomState(seed)
    return {k: rng.uniform(-1, 1, (BATCH, SIZE, SIZE, 3)).astype(dtype) for k in "AB"}


def noise_of(seed, config, names, dtype=torch.float32):
    """NCHW torch noise shaped like h, and the same as NHWC numpy for our side."""
    side = SIZE // 2**config.gen_n_downsample
    ch = config.gen_dim * 2**config.gen_n_downsample
    gen = torch.Generator().manual_seed(seed)
    t = {n: torch.randn(BATCH, ch, side, side, generator=gen, dtype=torch.float64).to(dtype)
         for n in names}
    return t, {n: nhwc(v) for n, v in t.items()}


def test_every_loss_term_matches_in_float32():
    config = tiny_config()
    method, state, reference = build(config)
    batch = batch_of(1)
    t_dn, dn = noise_of(5, config, ("n_a", "n_b"))
    t_gn, gn = noise_of(6, config, ("n_a", "n_b", "n_a_recon", "n_b_recon"))
    g = {n: state.params[n] for n in ("gen_a", "gen_b")}
    d = {n: state.params[n] for n in ("dis_a", "dis_b")}
    d_total, d_aux = jax.jit(method.discriminator_loss)(d, g, batch, dn)
    g_total, g_aux = jax.jit(method.generator_loss)(g, d, batch, gn)
    with torch.no_grad():
        td_total, td_terms = reference.dis_loss(nchw(batch["A"]), nchw(batch["B"]), t_dn)
        tg_total, tg_terms, t_images = reference.gen_loss(nchw(batch["A"]), nchw(batch["B"]), t_gn)
    assert set(g_aux["terms"]) == set(tg_terms) and len(tg_terms) == 10
    for name, value in tg_terms.items():
        assert rel_err(g_aux["terms"][name], value.numpy()) < 1e-5, name
    for name, value in td_terms.items():
        assert rel_err(d_aux["terms"][name], value.numpy()) < 1e-5, name
    assert rel_err(g_total, tg_total.numpy()) < 1e-5
    assert rel_err(d_total, td_total.numpy()) < 1e-5
    for name, value in t_images.items():
        assert rel_err(g_aux["images"][name], nhwc(value)) < 1e-5, name
    # The noise matters: another draw changes the reconstruction terms.
    _, other = jax.jit(method.generator_loss)(g, d, batch, jax.random.key(3))
    assert abs(float(other["terms"]["recon_x_a"]) - float(g_aux["terms"]["recon_x_a"])) > 1e-6


def _named_grads(nets, grads):
    out, it = {}, iter(grads)
    for name, net in nets:
        for key, _ in net.named_parameters():
            out[f"{name}/{key}"] = next(it).numpy()
    return out


def test_total_loss_gradients_match_in_float64():
    config = tiny_config()
    method, state, reference = build(config, torch.float64)
    batch = batch_of(2, np.float64)
    t_dn, dn = noise_of(7, config, ("n_a", "n_b"), torch.float64)
    t_gn, gn = noise_of(8, config, ("n_a", "n_b", "n_a_recon", "n_b_recon"), torch.float64)
    x_a, x_b = nchw(batch["A"]), nchw(batch["B"])
    g_nets = [("gen_a", reference.gen_a), ("gen_b", reference.gen_b)]
    d_nets = [("dis_a", reference.dis_a), ("dis_b", reference.dis_b)]
    loss_d, _ = reference.dis_loss(x_a, x_b, t_dn)
    expected = _named_grads(d_nets, torch.autograd.grad(
        loss_d, [p for _, n in d_nets for p in n.parameters()]))
    loss_g, _, _ = reference.gen_loss(x_a, x_b, t_gn)
    expected.update(_named_grads(g_nets, torch.autograd.grad(
        loss_g, [p for _, n in g_nets for p in n.parameters()])))
    with x64():
        g = {n: state.params[n] for n in ("gen_a", "gen_b")}
        d = {n: state.params[n] for n in ("dis_a", "dis_b")}
        dd = jax.jit(jax.grad(method.discriminator_loss, has_aux=True))(d, g, batch, dn)[0]
        dg = jax.jit(jax.grad(method.generator_loss, has_aux=True))(g, d, batch, gn)[0]
    assert_grads_match({**dd, **dg}, expected)


def float64_iteration(reference, config, i):
    """Iteration i's float64 batch and noise, run through the reference's step first: the
    batch, our step's noise and the reference's losses by name (D, G and every term)."""
    batch = batch_of(10 + i, np.float64)
    t_dn, dn = noise_of(20 + i, config, ("n_a", "n_b"), torch.float64)
    t_gn, gn = noise_of(30 + i, config, ("n_a", "n_b", "n_a_recon", "n_b_recon"), torch.float64)
    (d_loss, d_terms), (g_loss, g_terms) = reference.step(
        nchw(batch["A"]), nchw(batch["B"]), t_dn, t_gn)
    return batch, {"dis": dn, "gen": gn}, {**d_terms, **g_terms, "D": d_loss, "G": g_loss}


def _cancelled_biases(net):
    """Conv biases of blocks with an InstanceNorm: their gradient is rounding noise."""
    return {f"{prefix}.conv.bias" for prefix, m in net.named_modules()
            if isinstance(m, ref.Conv2dBlock) and isinstance(m.norm, torch.nn.InstanceNorm2d)}


def test_three_training_steps_match_the_reference_in_float64():
    """Parameters, losses and learning rates after each of 3 iterations (lr step, D, G)."""
    config = tiny_config()
    method, state, reference = build(config, torch.float64)
    step = jax.jit(method.train_step)
    lrs = []
    with x64():
        for i in range(3):
            batch, noise, losses = float64_iteration(reference, config, i)
            lr_used = reference.gen_opt.param_groups[0]["lr"]
            lrs.append(lr_used)
            state, metrics = step(state, batch, noise)
            assert abs(float(metrics["lr"]) - lr_used) <= 1e-7 * lr_used, (i, lr_used)
            assert_step_losses_match(i, metrics, losses)
            for name in NETS:
                net = getattr(reference, name)
                ours, theirs, kept = assert_params_match(i, name, state.params[name], net,
                                                         _cancelled_biases(net), 8 * config.lr)
                for key in kept:
                    assert rel_err(ours[key], theirs[key]) < 1e-7, (i, name, key)
    assert lrs == [1e-4, 5e-5, 5e-5]  # StepLR(2, 0.5) stepped before each update
    assert int(state.step) == 3


def test_schedule_and_optimizer_follow_torch():
    from unpaired.methods import unit as unit_method
    sched = unit_method.step_lr_schedule(1.0, "step", 3, 0.5)
    assert [float(sched(i)) for i in range(7)] == [1, 1, 0.5, 0.5, 0.5, 0.25, 0.25]
    assert float(unit_method.step_lr_schedule(2.0, "constant", 3, 0.5)(10)) == 2.0


def test_reference_step_is_registered_for_the_benchmark():
    from unpaired.torch_reference import build_reference_step
    config = tiny_config()
    step = build_reference_step(config)
    before = [p.detach().clone() for p in step.model.gen_a.parameters()]
    x = torch.rand(BATCH, 3, SIZE, SIZE) * 2 - 1
    (d_loss, _), (g_loss, g_terms) = step(x, -x)
    assert np.isfinite(float(d_loss)) and np.isfinite(float(g_loss)) and len(g_terms) == 10
    assert any(not torch.equal(a, b) for a, b in zip(before, step.model.gen_a.parameters()))
    with pytest.raises(NotImplementedError, match="gen_shared_blocks=0"):
        build_reference_step(tiny_config(gen_shared_blocks=1))
