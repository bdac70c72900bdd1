"""UNIT master's VGG perceptual loss against the PyTorch re-expression (random weights).

Full-size VGG16 relu5_3 features in float32 (one forward, weights read without torch from
both accepted layouts); the loss's gradient w.r.t. the generated image in float64; the UNIT
step with vgg_w > 0 (every loss term in float32, parameters after 3 iterations in float64)
on tiny images with a narrow VGG of the same layout. Bad weight files fail at validation,
naming config.vgg_model_path.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from unpaired import config_validation, methods
from unpaired.nets import vgg as jvgg
from unpaired.torch_reference import unit as ref
from unpaired.torch_reference import vgg as tvgg

from tests.helpers import assert_params_match, assert_step_losses_match, nchw, nhwc, rel_err, x64
from tests.test_parity_unit_step import (_cancelled_biases, batch_of, build_nets, float64_iteration,
                                         hyper, noise_of, small_config)

NARROW = (4, 4, 8, 8, 8)
SIZE, BATCH = 16, 2
NETS = ("gen_a", "gen_b", "dis_a", "dis_b")


def _vgg_file(tmp_path, widths, seed=0, torchvision=False):
    torch.manual_seed(seed)
    net = tvgg.Vgg16(widths)
    with torch.no_grad():  # variance-preserving random weights: relu5_3 carries the image
        for m in net.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.normal_(0.0, (2.0 / m.weight[0].numel()) ** 0.5)
                m.bias.uniform_(-0.1, 0.1)
    state = net.state_dict()
    if torchvision:  # the same tensors under torchvision's vgg16 names, plus a classifier
        state = {f"features.{i}.{leaf}": state[f"{n}.{leaf}"]
                 for n, i in zip(jvgg.NAMES, jvgg.TORCHVISION_INDEX) for leaf in ("weight", "bias")}
        state["classifier.0.weight"] = torch.zeros(4, 4)
    path = tmp_path / ("tv.pth" if torchvision else "vgg16.weight")
    torch.save(state, path)
    return str(path), tvgg.frozen(net)


@pytest.mark.parametrize("torchvision", [False, True])
def test_features_match_in_float32(tmp_path, torchvision):
    """Full size from the reference's layout; torchvision's layout at narrow widths (speed)."""
    widths = NARROW if torchvision else jvgg.WIDTHS
    path, net = _vgg_file(tmp_path, widths, torchvision=torchvision)
    params = jvgg.load_vgg16(path)
    assert jvgg.widths_of(params) == widths
    x = np.random.RandomState(0).uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    ours = jvgg.Vgg16(widths).apply({"params": params}, jvgg.vgg_preprocess(jnp.asarray(x)))
    with torch.no_grad():
        pre = tvgg.vgg_preprocess(nchw(x))
        theirs = net(pre)
    assert rel_err(jvgg.vgg_preprocess(x), nhwc(pre)) < 1e-6
    assert ours.shape == (1, 4, 4, widths[-1])  # 1/8 resolution: no pool after relu4_3
    assert rel_err(ours, nhwc(theirs)) < 1e-5


def test_loss_gradient_wrt_the_generated_image_matches_in_float64(tmp_path):
    path, net = _vgg_file(tmp_path, NARROW, seed=1)
    net = net.double()
    rng = np.random.RandomState(2)
    img, target = (rng.uniform(-1, 1, (2, SIZE, SIZE, 3)) for _ in range(2))
    t_img = nchw(img).requires_grad_(True)
    loss = tvgg.compute_vgg_loss(net, t_img, nchw(target))
    (grad,) = torch.autograd.grad(loss, [t_img])
    with x64():
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), jvgg.load_vgg16(path))
        value, ours = jax.value_and_grad(jvgg.vgg_loss, argnums=1)(params, jnp.asarray(img),
                                                                   jnp.asarray(target))
    assert abs(float(value) - loss.item()) <= 1e-9 * abs(loss.item())
    assert loss.item() > 1e-3 and rel_err(ours, nhwc(grad)) < 1e-9


def vgg_config(path, **overrides):
    return small_config(**{"vgg_w": 0.7, "vgg_model_path": path, **overrides})


def _build(config, net, dtype):
    tnets, method, state = build_nets(config, dtype)
    hp = {**hyper(config), "vgg_w": config.vgg_w}
    return method, state, ref.UNITReference(tnets, hp, vgg=net.to(dtype))


def test_unit_loss_terms_with_vgg_match_in_float32(tmp_path):
    path, net = _vgg_file(tmp_path, NARROW, seed=3)
    config = vgg_config(path)
    methods.get_method_class("unit").validate_config(config)
    method, state, reference = _build(config, net, torch.float32)
    assert set(state.buffers) == {"vgg"} and "vgg" not in state.params
    assert set(state.opt_state) == {"gen", "dis"}  # no optimizer state for the frozen VGG
    batch = batch_of(4)
    t_gn, gn = noise_of(6, config, ("n_a", "n_b", "n_a_recon", "n_b_recon"))
    g = {n: state.params[n] for n in ("gen_a", "gen_b")}
    d = {n: state.params[n] for n in ("dis_a", "dis_b")}
    total, aux = jax.jit(method.generator_loss)(g, d, batch, gn, state.buffers["vgg"])
    with torch.no_grad():
        t_total, t_terms, _ = reference.gen_loss(nchw(batch["A"]), nchw(batch["B"]), t_gn)
    assert set(aux["terms"]) == set(t_terms) and {"vgg_a", "vgg_b"} <= set(t_terms)
    for name, value in t_terms.items():
        assert rel_err(aux["terms"][name], value.numpy()) < 1e-5, name
    assert rel_err(total, t_total.numpy()) < 1e-5 and float(aux["terms"]["vgg_a"]) > 1e-3


def test_three_training_steps_with_vgg_match_in_float64(tmp_path):
    path, net = _vgg_file(tmp_path, NARROW, seed=5)
    config = vgg_config(path)
    method, state, reference = _build(config, net, torch.float64)
    vgg_before = jax.tree.map(np.asarray, state.buffers["vgg"])
    step = jax.jit(method.train_step)
    with x64():
        for i in range(3):
            batch, noise, losses = float64_iteration(reference, config, i)
            state, metrics = step(state, batch, noise)
            assert_step_losses_match(i, metrics, losses)
            for name in NETS:
                tnet = getattr(reference, name)
                assert_params_match(i, name, state.params[name], tnet, _cancelled_biases(tnet),
                                    8 * config.lr)
    for a, b in zip(jax.tree.leaves(vgg_before), jax.tree.leaves(state.buffers["vgg"])):
        np.testing.assert_array_equal(a, b)  # frozen


def test_bad_vgg_settings_fail_at_validation_naming_the_key(tmp_path):
    validate = methods.get_method_class("unit").validate_config
    path, _ = _vgg_file(tmp_path, NARROW)
    bad = tmp_path / "bad.pth"
    torch.save({"conv1_1.weight": torch.zeros(4, 3, 3, 3), "conv1_1.bias": torch.zeros(4)}, bad)
    cases = [({"vgg_model_path": ""}, r"config\.vgg_model_path is empty"),
             ({"vgg_model_path": str(tmp_path / "absent.weight")}, r"config\.vgg_model_path=.*no such"),
             ({"vgg_model_path": str(bad)}, r"config\.vgg_model_path=.*missing conv1_2\.weight"),
             ({"input_dim_b": 1}, r"config\.input_dim_b"),
             ({"data.crop_size": 8}, r"config\.data\.crop_size"),
             ({"vgg_w": -0.5}, r"config\.vgg_w")]
    for overrides, message in cases:
        config = vgg_config(path)
        for key, value in overrides.items():
            target = config.data if key.startswith("data.") else config
            target[key.split(".")[-1]] = value
        with pytest.raises(config_validation.ConfigError, match=message):
            validate(config)
    # The reference's folder layout (<vgg_model_path>/models/vgg16.weight) is found too.
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "vgg16.weight").write_bytes(open(path, "rb").read())
    validate(vgg_config(str(tmp_path)))


def test_reference_step_reads_the_same_vgg_file(tmp_path):
    from unpaired.torch_reference import build_reference_step
    path, net = _vgg_file(tmp_path, NARROW, seed=7)
    step = build_reference_step(vgg_config(path))
    for name, param in net.state_dict().items():
        assert torch.equal(step.model.vgg.state_dict()[name], param), name
    assert not any(p.requires_grad for p in step.model.vgg.parameters())
    x = torch.rand(BATCH, 3, SIZE, SIZE) * 2 - 1
    _, (g_loss, g_terms) = step(x, -x)
    assert {"vgg_a", "vgg_b"} <= set(g_terms) and np.isfinite(g_loss.item())
