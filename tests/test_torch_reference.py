"""Self-test of the PyTorch CycleGAN re-expression in ``unpaired/torch_reference/cyclegan.py``.

The parity tests trust that module, so this checks it against the documented facts of
the reference (shared/reference/cyclegan.md): parameter counts, exact state_dict keys
and shapes, output sizes, the image-pool rules, one training step and the lr schedule.
Fast and CPU-only.
"""

from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")

from unpaired.torch_reference import cyclegan as ref  # noqa: E402


def _n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _shapes(net: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


# --------------------------------------------------------------------------------------
# Architecture facts
# --------------------------------------------------------------------------------------


def test_parameter_counts_match_the_reference() -> None:
    assert _n_params(ref.define_G(3, 3, 64, "resnet_9blocks")) == 11_378_179
    assert _n_params(ref.define_G(3, 3, 64, "resnet_6blocks")) == 7_837_699
    assert _n_params(ref.define_D(3, 64, "basic")) == 2_764_737


def test_resnet_9blocks_state_dict_keys_and_shapes() -> None:
    expected = {
        "model.1.weight": (64, 3, 7, 7),
        "model.1.bias": (64,),
        "model.4.weight": (128, 64, 3, 3),
        "model.4.bias": (128,),
        "model.7.weight": (256, 128, 3, 3),
        "model.7.bias": (256,),
        "model.19.weight": (256, 128, 3, 3),  # ConvTranspose: (in, out, kH, kW)
        "model.19.bias": (128,),
        "model.22.weight": (128, 64, 3, 3),
        "model.22.bias": (64,),
        "model.26.weight": (3, 64, 7, 7),
        "model.26.bias": (3,),
    }
    for b in range(10, 19):
        for c in (1, 5):
            expected[f"model.{b}.conv_block.{c}.weight"] = (256, 256, 3, 3)
            expected[f"model.{b}.conv_block.{c}.bias"] = (256,)
    assert len(expected) == 48
    shapes = _shapes(ref.define_G(3, 3, 64, "resnet_9blocks", norm="instance"))
    assert shapes == expected


def test_basic_discriminator_state_dict_keys_and_shapes() -> None:
    expected = {
        "model.0.weight": (64, 3, 4, 4),
        "model.0.bias": (64,),
        "model.2.weight": (128, 64, 4, 4),
        "model.2.bias": (128,),
        "model.5.weight": (256, 128, 4, 4),
        "model.5.bias": (256,),
        "model.8.weight": (512, 256, 4, 4),
        "model.8.bias": (512,),
        "model.11.weight": (1, 512, 4, 4),
        "model.11.bias": (1,),
    }
    assert _shapes(ref.define_D(3, 64, "basic", norm="instance")) == expected


def test_resnet_6blocks_layer_indices() -> None:
    g = ref.define_G(3, 3, 8, "resnet_6blocks")
    assert isinstance(g.model[16], torch.nn.ConvTranspose2d)
    assert isinstance(g.model[19], torch.nn.ConvTranspose2d)
    assert isinstance(g.model[22], torch.nn.ReflectionPad2d)
    assert isinstance(g.model[23], torch.nn.Conv2d) and g.model[23].bias is not None
    assert isinstance(g.model[24], torch.nn.Tanh)
    assert len(g.model) == 25


@torch.no_grad()
def test_discriminator_output_is_30x30_at_256() -> None:
    d = ref.define_D(3, 64, "basic")
    assert d(torch.randn(1, 3, 256, 256)).shape == (1, 1, 30, 30)
    assert d(torch.randn(2, 3, 64, 64)).shape == (2, 1, 6, 6)


@torch.no_grad()
def test_n_layers_and_pixel_discriminators() -> None:
    d = ref.define_D(3, 8, "n_layers", n_layers_D=2)
    assert d(torch.randn(1, 3, 64, 64)).shape == (1, 1, 14, 14)
    p = ref.define_D(3, 8, "pixel", norm="instance")
    assert set(p.state_dict()) == {f"net.{i}.{k}" for i in (0, 2, 5) for k in ("weight", "bias")}
    assert p(torch.randn(1, 3, 16, 16)).shape == (1, 1, 16, 16)
    pb = ref.define_D(3, 8, "pixel", norm="batch")
    assert set(pb.state_dict()) == {
        "net.0.weight",
        "net.0.bias",
        "net.2.weight",
        "net.3.weight",
        "net.3.bias",
        "net.3.running_mean",
        "net.3.running_var",
        "net.3.num_batches_tracked",
        "net.5.weight",
    }


@torch.no_grad()
def test_resnet_generator_preserves_size_divisible_by_4() -> None:
    g = ref.define_G(3, 3, 8, "resnet_6blocks")
    x = torch.randn(1, 3, 64, 64)
    y = g(x)
    assert y.shape == x.shape
    assert y.abs().max() <= 1.0  # Tanh output
    assert g(torch.randn(1, 3, 36, 44)).shape == (1, 3, 36, 44)


@torch.no_grad()
def test_unet_generators() -> None:
    g128 = ref.define_G(3, 2, 8, "unet_128", norm="batch")
    assert g128(torch.randn(2, 3, 128, 128)).shape == (2, 2, 128, 128)
    keys = g128.state_dict()
    # model.model.1.model.3.model.2 is the down-path BatchNorm(ngf*4) of the third level
    assert tuple(keys["model.model.1.model.3.model.2.weight"].shape) == (32,)
    # the outermost down conv follows the bias rule (no bias under batch norm); the
    # outermost ConvT always has one
    assert "model.model.0.bias" not in keys and "model.model.3.bias" in keys
    assert "model.model.1.model.1.bias" not in keys  # conv before BN has no bias
    g256 = ref.define_G(3, 3, 8, "unet_256", norm="batch", use_dropout=True)
    n_dropout = sum(isinstance(m, torch.nn.Dropout) for m in g256.modules())
    assert n_dropout == 8 - 5


@torch.no_grad()
def test_unet_skip_carries_leaky_relu_of_input() -> None:
    """Reference quirk: the in-place LeakyReLU rewrites x before the concat."""
    block = ref.UnetSkipConnectionBlock(4, 8, innermost=True, norm="batch")
    x = torch.randn(2, 4, 8, 8)
    expected_skip = torch.nn.functional.leaky_relu(x, 0.2)
    out = block(x.clone())
    assert out.shape == (2, 8, 8, 8)
    torch.testing.assert_close(out[:, :4], expected_skip)


def test_dropout_shifts_resnet_block_keys() -> None:
    g = ref.ResnetGenerator(3, 3, ngf=8, n_blocks=1, use_dropout=True)
    keys = set(g.state_dict())
    assert {"model.10.conv_block.1.weight", "model.10.conv_block.6.weight", "model.10.conv_block.6.bias"} <= keys
    assert "model.10.conv_block.5.weight" not in keys
    assert isinstance(g.model[10].conv_block[4], torch.nn.Dropout)


def test_zero_and_replicate_padding_types() -> None:
    zero = ref.ResnetBlock(4, "zero", ref.get_norm_layer("instance"), False, True)
    assert [type(m).__name__ for m in zero.conv_block] == ["Conv2d", "InstanceNorm2d", "ReLU", "Conv2d", "InstanceNorm2d"]
    assert zero.conv_block[0].padding == (1, 1)
    rep = ref.ResnetBlock(4, "replicate", ref.get_norm_layer("instance"), False, True)
    assert isinstance(rep.conv_block[0], torch.nn.ReplicationPad2d)
    x = torch.randn(1, 4, 6, 6)
    assert zero(x).shape == rep(x).shape == x.shape


def test_batch_norm_removes_conv_biases_and_adds_bn_keys() -> None:
    g = ref.ResnetGenerator(3, 3, ngf=8, n_blocks=1, norm="batch")
    keys = set(g.state_dict())
    for idx in ("model.1", "model.4", "model.7", "model.10.conv_block.1", "model.10.conv_block.5", "model.11", "model.14"):
        assert f"{idx}.weight" in keys and f"{idx}.bias" not in keys
    for idx in ("model.2", "model.5", "model.8", "model.10.conv_block.2", "model.10.conv_block.6", "model.12", "model.15"):
        for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            assert f"{idx}.{k}" in keys
    assert "model.18.bias" in keys  # final conv always has a bias
    d = ref.define_D(3, 8, "basic", norm="batch")
    dkeys = set(d.state_dict())
    assert "model.0.bias" in dkeys and "model.11.bias" in dkeys
    assert "model.2.bias" not in dkeys and "model.3.running_mean" in dkeys
    none = ref.ResnetGenerator(3, 3, ngf=8, n_blocks=1, norm="none")
    assert isinstance(none.model[2], ref.Identity) and "model.1.bias" not in none.state_dict()


def test_instance_norm_has_no_state() -> None:
    g = ref.define_G(3, 3, 8, "resnet_6blocks", norm="instance")
    assert not any("running" in k or "num_batches" in k for k in g.state_dict())


@torch.no_grad()
def test_init_weights_is_deterministic_and_follows_the_rule() -> None:
    def make() -> torch.nn.Module:
        g = ref.ResnetGenerator(3, 3, ngf=8, n_blocks=1, norm="batch")
        return ref.init_weights(g, 0.02, generator=torch.Generator().manual_seed(0))

    a, b = make(), make()
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb
        torch.testing.assert_close(va, vb)
    conv_w = torch.cat([m.weight.flatten() for m in a.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))])
    assert abs(float(conv_w.mean())) < 2e-3 and abs(float(conv_w.std()) - 0.02) < 2e-3
    bn = [m for m in a.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    bn_w = torch.cat([m.weight for m in bn])
    assert abs(float(bn_w.mean()) - 1.0) < 0.01 and float(bn_w.std()) < 0.04
    assert all(float(m.bias.abs().max()) == 0.0 for m in bn)
    assert float(a.model[18].bias.abs().max()) == 0.0


# --------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------


def test_gan_loss_modes() -> None:
    pred = torch.tensor([[-2.0, -0.5], [0.5, 3.0]], dtype=torch.float64)
    ls = ref.GANLoss("lsgan")
    torch.testing.assert_close(ls(pred, True), ((pred - 1) ** 2).mean())
    torch.testing.assert_close(ls(pred, False), (pred**2).mean())
    van = ref.GANLoss("vanilla")
    torch.testing.assert_close(van(pred, True), torch.nn.functional.softplus(-pred).mean())
    torch.testing.assert_close(van(pred, False), torch.nn.functional.softplus(pred).mean())
    w = ref.GANLoss("wgangp")
    torch.testing.assert_close(w(pred, True), -pred.mean())
    torch.testing.assert_close(w(pred, False), pred.mean())
    h = ref.GANLoss("hinge")
    torch.testing.assert_close(h(pred, True), torch.relu(1 - pred).mean())
    torch.testing.assert_close(h(pred, False), torch.relu(1 + pred).mean())
    torch.testing.assert_close(h(pred, True, for_discriminator=False), -pred.mean())
    # the flag is ignored by the reference modes
    torch.testing.assert_close(ls(pred, True, for_discriminator=False), ls(pred, True))
    assert ls(pred, True).dtype == torch.float64
    with pytest.raises(NotImplementedError):
        ref.GANLoss("nope")


def test_gradient_penalty_on_a_linear_critic() -> None:
    torch.manual_seed(0)
    critic = torch.nn.Conv2d(2, 1, kernel_size=1, bias=False).double()
    real = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    fake = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    # d(sum of outputs)/d(input) is the 1x1 kernel at every pixel, for any input
    grad_norm = float(critic.weight.detach().norm()) * 4.0
    expected = (grad_norm - 1.0) ** 2 * 10.0
    for kind in ("real", "fake", "mixed"):
        penalty, grads = ref.cal_gradient_penalty(critic, real.clone(), fake.clone(), kind)
        assert grads.shape == (3, 32)
        assert abs(penalty.item() - expected) < 1e-9
    alpha = torch.tensor([0.0, 1.0, 0.5], dtype=torch.float64)
    penalty, _ = ref.cal_gradient_penalty(critic, real, fake, "mixed", alpha=alpha)
    penalty.backward()  # create_graph=True: differentiable w.r.t. the critic
    assert critic.weight.grad is not None
    assert ref.cal_gradient_penalty(critic, real, fake, lambda_gp=0.0) == (0.0, None)


# --------------------------------------------------------------------------------------
# ImagePool
# --------------------------------------------------------------------------------------


def _img(v: float) -> torch.Tensor:
    return torch.full((1, 1, 2, 2), float(v))


def _values(batch: torch.Tensor) -> list[float]:
    return [float(x[0, 0, 0]) for x in batch]


def test_image_pool_with_injected_draws() -> None:
    pool = ref.ImagePool(2)
    draws = iter([(0.7, 1), (0.3, 0), (0.5, 0), (0.9, 0)])
    # filling: returned as-is, no draws consumed
    assert _values(pool.query(torch.cat([_img(1), _img(2)]), draws)) == [1.0, 2.0]
    # full, p > 0.5: return pool[1] (=2), store 3 there
    assert _values(pool.query(_img(3), draws)) == [2.0]
    assert _values(torch.cat(pool.images)) == [1.0, 3.0]
    # full, p <= 0.5 (also exactly 0.5): return the current image, pool unchanged
    assert _values(pool.query(torch.cat([_img(4), _img(5)]), draws)) == [4.0, 5.0]
    assert _values(torch.cat(pool.images)) == [1.0, 3.0]
    # last pair swaps index 0
    assert _values(pool.query(_img(6), draws)) == [1.0]
    assert _values(torch.cat(pool.images)) == [6.0, 3.0]
    with pytest.raises(ValueError):
        pool.query(_img(7), draws)


def test_image_pool_partial_fill_consumes_only_for_full_pool() -> None:
    pool = ref.ImagePool(3)
    pool.query(torch.cat([_img(1), _img(2)]), [])
    # first image fills slot 3 (no draw); second consumes the first pair
    out = pool.query(torch.cat([_img(3), _img(4)]), [(0.8, 0), (0.8, 1)])
    assert _values(out) == [3.0, 1.0]
    assert _values(torch.cat(pool.images)) == [4.0, 2.0, 3.0]
    # a list restarts at its first pair on every call
    assert _values(pool.query(_img(5), [(0.8, 2)])) == [3.0]


def test_image_pool_size_zero_and_detach() -> None:
    x = torch.randn(2, 1, 2, 2, requires_grad=True)
    assert ref.ImagePool(0).query(x) is x
    out = ref.ImagePool(4).query(x * 2)
    assert not out.requires_grad
    torch.testing.assert_close(out, (x * 2).detach())


def test_image_pool_python_random_matches_replayed_draws() -> None:
    batches = [torch.cat([_img(3 * k + j) for j in range(3)]) for k in range(8)]
    random.seed(1234)
    live = ref.ImagePool(4)
    live_out = [live.query(b) for b in batches]

    # Replay: per image of a full pool, p = uniform(0,1), then i = randint only if p > 0.5.
    random.seed(1234)
    draws = []
    for _ in range(sum(len(b) for b in batches) - 4):
        p = random.uniform(0, 1)
        draws.append((p, random.randint(0, 3) if p > 0.5 else -1))
    replay = ref.ImagePool(4)
    it = iter(draws)
    replay_out = [replay.query(b, it) for b in batches]
    for a, b in zip(live_out, replay_out):
        torch.testing.assert_close(a, b)
    assert next(it, None) is None


# --------------------------------------------------------------------------------------
# Training step and schedule
# --------------------------------------------------------------------------------------


def _tiny_model(dtype: torch.dtype = torch.float32, **kwargs) -> ref.CycleGANReference:
    gen = torch.Generator().manual_seed(0)
    nets = [ref.define_G(3, 3, 8, "resnet_6blocks") for _ in range(2)] + [ref.define_D(3, 8, "basic") for _ in range(2)]
    nets = [ref.init_weights(n, 0.02, generator=gen).to(dtype) for n in nets]
    return ref.CycleGANReference(*nets, **kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_optimize_parameters_runs_and_updates_all_networks(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    model = _tiny_model(dtype)
    real_A = torch.rand(1, 3, 32, 32, dtype=dtype) * 2 - 1
    real_B = torch.rand(1, 3, 32, 32, dtype=dtype) * 2 - 1

    # The step's reported losses are computed with the pre-update networks and the
    # pre-update fakes (the pool is still filling, so it returns them unchanged).
    with torch.no_grad():
        loss_G, terms, fakes = model.generator_loss(real_A, real_B)
        loss_D, d_terms = model.discriminator_loss(real_A, real_B, fakes["fake_A"], fakes["fake_B"])
    assert loss_G.dtype == dtype and set(fakes) == {"fake_B", "rec_A", "fake_A", "rec_B", "idt_A", "idt_B"}

    nets = {"G_A": model.netG_A, "G_B": model.netG_B, "D_A": model.netD_A, "D_B": model.netD_B}
    before = {name: [p.detach().clone() for p in net.parameters()] for name, net in nets.items()}
    losses = model.optimize_parameters(real_A, real_B, pool_draws_A=[], pool_draws_B=[])

    assert set(losses) == {"G_A", "G_B", "cycle_A", "cycle_B", "idt_A", "idt_B", "D_A", "D_B", "G"}
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert abs(losses["G"] - float(loss_G)) < tol
    for k, v in terms.items():
        assert abs(losses[k] - float(v)) < tol
    for k, v in d_terms.items():
        assert abs(losses[k] - float(v)) < tol
    assert abs(losses["D_A"] + losses["D_B"] - float(loss_D)) < tol
    assert abs(losses["idt_A"] - 5.0 * float((fakes["idt_A"] - real_B).abs().mean())) < tol
    for name, net in nets.items():
        changed = any(not torch.equal(p0, p1) for p0, p1 in zip(before[name], net.parameters()))
        assert changed, f"{name} was not updated"
        assert all(p.requires_grad for p in net.parameters())
    assert model.fake_A_pool.num_imgs == model.fake_B_pool.num_imgs == 1


def test_identity_loss_off() -> None:
    model = _tiny_model(lambda_identity=0.0)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        _, terms, fakes = model.generator_loss(x, -x)
    assert float(terms["idt_A"]) == float(terms["idt_B"]) == 0.0 and "idt_A" not in fakes


# No optimizer.step() happens in this test, which torch warns about; that is intended.
@pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)`")
@pytest.mark.parametrize("n_epochs,n_epochs_decay", [(2, 3), (3, 2)])
def test_linear_lr_schedule_steps_at_end_of_epoch(n_epochs: int, n_epochs_decay: int) -> None:
    lr0 = 2e-4
    model = _tiny_model(lr=lr0, n_epochs=n_epochs, n_epochs_decay=n_epochs_decay)
    for k in range(1, n_epochs + n_epochs_decay + 1):  # the last epoch trains at lr0/(decay+1)
        expected = lr0 * (1 - max(0, k - n_epochs) / (n_epochs_decay + 1))
        assert model.lr == pytest.approx(expected, rel=1e-12)
        assert model.optimizer_D.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-12)
        model.update_learning_rate()  # end of epoch k


def test_adam_settings() -> None:
    model = _tiny_model()
    for opt in (model.optimizer_G, model.optimizer_D):
        group = opt.param_groups[0]
        assert group["betas"] == (0.5, 0.999) and group["eps"] == 1e-8 and group["weight_decay"] == 0
    n_g = _n_params(model.netG_A) + _n_params(model.netG_B)
    assert sum(p.numel() for p in model.optimizer_G.param_groups[0]["params"]) == n_g


# --------------------------------------------------------------------------------------
# The benchmark's registry of reference steps
# --------------------------------------------------------------------------------------


def test_reference_steps_registry_refuses_methods_without_one() -> None:
    """Registered methods build a step; a method without one gets NotImplementedError naming it."""
    import ml_collections

    from unpaired import torch_reference

    assert {"cyclegan", "unit", "ufdn"} <= set(torch_reference.REFERENCE_STEPS)
    config = ml_collections.ConfigDict({"method": "no_such_method"})
    with pytest.raises(NotImplementedError, match="no_such_method"):
        torch_reference.build_reference_step(config)


@pytest.mark.parametrize("variant", ["paper", "code"])
def test_dtn_reference_step_is_registered_for_both_variants(variant) -> None:
    """`build_reference_step` gives DTN's stage-2 step: it trains what the variant trains."""
    from configs import dtn as dtn_config
    from unpaired import torch_reference
    from unpaired.torch_reference import dtn as dtn_ref

    config = dtn_config.get_config("digits")
    config.nf, config.feature_dim, config.ngf, config.ndf = 4, 8, 4, 4
    config.variant = variant
    torch.manual_seed(0)
    step = torch_reference.build_reference_step(config)
    model = step.model
    nets = model.nets if variant == "code" else {"f": model.f, "g": model.g, "D": model.D}
    assert isinstance(model, dtn_ref.DTNCodeReference if variant == "code" else dtn_ref.DTNReference)
    assert nets["D"].conv4.out_channels == (1 if variant == "code" else 3)
    before = {n: [p.detach().clone() for p in net.parameters()] for n, net in nets.items()}
    images = [torch.rand(2, 1, 32, 32) * 2 - 1 for _ in range(2)]
    losses = step(*images)
    assert all(v == v and abs(v) < 1e6 for v in losses.values())
    changed = {n: any(not torch.equal(a, b) for a, b in zip(before[n], net.parameters()))
               for n, net in nets.items()}
    # The paper freezes f; the code's f_src op trains it (due every step at one batch per epoch).
    assert changed == {"f": variant == "code", "g": True, "D": True}


def test_methods_without_a_reference_step_still_raise() -> None:
    from configs import dtn as dtn_config
    from unpaired import torch_reference

    assert {"cyclegan", "unit", "dtn"} <= set(torch_reference.REFERENCE_STEPS)
    with pytest.raises(NotImplementedError, match="dtn_pretrain"):
        torch_reference.build_reference_step(dtn_config.get_config("digits_pretrain"))
