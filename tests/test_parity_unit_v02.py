"""UNIT version_02 (COCOResGen2 + COCOSharedDis, COCOGANTrainer) against the PyTorch re-expression.

The version_02 state_dicts load one to one (strict key and shape check); network outputs and
every loss term (identical injected GaussianNoiseLayer draws) in float32 to 1e-5; whole-loss
gradients and parameters after 3 iterations (dis_update then gen_update, Adam with coupled
weight decay, no lr decay) in float64 to 1e-9. Conv biases in front of an affine-free
InstanceNorm have a mathematically zero gradient and are held to an absolute bound, as in
the master step test.
"""

import os

import jax
import numpy as np
import pytest
import torch

from configs import unit as unit_config
from unpaired import methods

from tests.helpers import (assert_grads_match, assert_params_match, assert_step_losses_match,
                           biases_before_instance_norm, nchw, nhwc, rel_err, state_from_torch, x64)
from unpaired.torch_reference import unit_v02 as ref

SIZE, BATCH = 8, 2
NETS = ("gen", "dis")
DIS_NOISE = ("n_a", "n_b")
GEN_NOISE = ("n_a", "n_b", "n_ba", "n_ab")


def tiny_config(**overrides):
    config = unit_config.get_config("digits_v02")
    config.input_dim_a, config.input_dim_b = 3, 2  # different channel counts per domain
    config.gen_dim, config.dis_dim = 4, 4
    config.gen_n_enc_front_blk = config.gen_n_gen_front_blk = 2
    config.gen_n_enc_res_blk = config.gen_n_gen_res_blk = 1
    config.dis_n_front_layer, config.dis_n_shared_layer = 2, 1
    config.data.crop_size = config.data.load_size = config.data.image_size = SIZE
    config.batch_size = BATCH
    for key, value in overrides.items():
        config[key] = value
    return config


def hyper(config):
    keys = ("gan_w", "recon_x_w", "recon_kl_w", "recon_x_cyc_w", "recon_kl_cyc_w", "lr",
            "beta1", "beta2", "weight_decay")
    return {k: config[k] for k in keys}


def build(config, dtype=torch.float32):
    tnets = {k: v.to(dtype) for k, v in ref.build_unit_v02(config).items()}
    method = methods.build(config)
    state = state_from_torch(method, tnets, NETS, dtype)
    return method, state, ref.COCOGANReference(tnets, hyper(config))


def batch_of(seed, config, dtype=np.float32):
    rng = np.random.RandomState(seed)
    return {d: rng.uniform(-1, 1, (BATCH, SIZE, SIZE, config[f"input_dim_{d.lower()}"])).astype(dtype)
            for d in "AB"}


def noise_of(seed, config, names, dtype=torch.float32):
    """NCHW torch noise shaped like the shared code, and the same as NHWC numpy for our side."""
    side = SIZE // 2 ** (config.gen_n_enc_front_blk - 1)
    ch = config.gen_dim * 2 ** (config.gen_n_enc_front_blk - 1)
    gen = torch.Generator().manual_seed(seed)
    t = {n: torch.randn(BATCH, ch, side, side, generator=gen, dtype=torch.float64).to(dtype)
         for n in names}
    return t, {n: nhwc(v) for n, v in t.items()}


@pytest.mark.parametrize("gen_name", ["COCOResGen2", "COCOResGen"])
def test_state_dicts_map_one_to_one_and_outputs_match(gen_name, tmp_path):
    config = tiny_config(gen_name=gen_name)
    method, state, reference = build(config)
    for name, shared_key in (("gen", "enc_shared.0.model.3.weight"), ("dis", "model_S.1.weight")):
        theirs = getattr(reference, name).state_dict()  # the export gives back exactly these
        ours = method.official_state_dict(state.params, name)
        assert set(ours) == set(theirs) and shared_key in ours
        for key, value in theirs.items():
            np.testing.assert_array_equal(ours[key], value.numpy())
    files = method.export_official(state.params, state.model_state, str(tmp_path))
    assert [os.path.basename(f) for f in files] == ["gen.pkl", "dis.pkl"]
    for name, path in zip(("gen", "dis"), files):  # torch loads the exported files strictly
        getattr(reference, name).load_state_dict(torch.load(path, weights_only=True), strict=True)
    batch = batch_of(0, config)
    x_a, x_b = nchw(batch["A"]), nchw(batch["B"])
    for direction, a2b, x in (("AtoB", True, batch["A"]), ("BtoA", False, batch["B"])):
        ours = jax.jit(method.translate, static_argnums=2)(state.params, x, direction)
        assert rel_err(ours, nhwc(reference.translate(nchw(x), a2b))) < 1e-5, direction
    with torch.no_grad():
        (t_a,), (t_b,) = reference.dis(x_a, x_b)
    for domain, expected in (("A", t_a), ("B", t_b)):
        ours = method.discriminate(domain, state.params, batch[domain])
        assert rel_err(np.asarray(ours).transpose(0, 3, 1, 2).reshape(-1), expected.numpy()) < 1e-5


def test_every_loss_term_matches_in_float32():
    config = tiny_config()
    method, state, reference = build(config)
    batch = batch_of(1, config)
    t_dn, dn = noise_of(5, config, DIS_NOISE)
    t_gn, gn = noise_of(6, config, GEN_NOISE)
    g, d = {"gen": state.params["gen"]}, {"dis": state.params["dis"]}
    d_total, d_aux = jax.jit(method.discriminator_loss)(d, g, batch, dn)
    g_total, g_aux = jax.jit(method.generator_loss)(g, d, batch, gn)
    with torch.no_grad():
        td_total, td_terms = reference.dis_loss(nchw(batch["A"]), nchw(batch["B"]), t_dn)
        tg_total, tg_terms, t_images = reference.gen_loss(nchw(batch["A"]), nchw(batch["B"]), t_gn)
    assert set(g_aux["terms"]) == set(tg_terms) and len(tg_terms) == 9
    for name, value in {**tg_terms, "total": tg_total}.items():
        ours = g_aux["terms"].get(name, g_total)
        assert rel_err(ours, value.numpy()) < 1e-5, name
    for name, value in {**td_terms, "total": td_total}.items():
        assert rel_err(d_aux["terms"].get(name, d_total), value.numpy()) < 1e-5, name
    for name, value in t_images.items():
        assert rel_err(g_aux["images"][name], nhwc(value)) < 1e-5, name
    # The KL terms see the noisy code (version_02's GaussianNoiseLayer comes first).
    assert float(g_aux["terms"]["enc_loss"]) > 0.5


def float64_iteration(reference, config, i):
    """Iteration i's float64 batch and noise, run through the reference's step first: the
    batch, our step's noise and the reference's losses by name (D, G and every term)."""
    batch = batch_of(10 + i, config, np.float64)
    t_dn, dn = noise_of(20 + i, config, DIS_NOISE, torch.float64)
    t_gn, gn = noise_of(30 + i, config, GEN_NOISE, torch.float64)
    (d_loss, d_terms), (g_loss, g_terms) = reference.step(
        nchw(batch["A"]), nchw(batch["B"]), t_dn, t_gn)
    return batch, {"dis": dn, "gen": gn}, {**d_terms, **g_terms, "D": d_loss, "G": g_loss}


def _named(prefix, net, grads):
    return {f"{prefix}/{k}": g.numpy() for (k, _), g in zip(net.named_parameters(), grads)}


def test_total_loss_gradients_match_in_float64():
    config = tiny_config()
    method, state, reference = build(config, torch.float64)
    batch = batch_of(2, config, np.float64)
    t_dn, dn = noise_of(7, config, DIS_NOISE, torch.float64)
    t_gn, gn = noise_of(8, config, GEN_NOISE, torch.float64)
    x_a, x_b = nchw(batch["A"]), nchw(batch["B"])
    loss_d, _ = reference.dis_loss(x_a, x_b, t_dn)
    expected = _named("dis", reference.dis, torch.autograd.grad(loss_d, list(reference.dis.parameters())))
    loss_g, _, _ = reference.gen_loss(x_a, x_b, t_gn)
    expected.update(_named("gen", reference.gen,
                           torch.autograd.grad(loss_g, list(reference.gen.parameters()))))
    with x64():
        g, d = {"gen": state.params["gen"]}, {"dis": state.params["dis"]}
        dd = jax.jit(jax.grad(method.discriminator_loss, has_aux=True))(d, g, batch, dn)[0]
        dg = jax.jit(jax.grad(method.generator_loss, has_aux=True))(g, d, batch, gn)[0]
    assert_grads_match({**dd, **dg}, expected)


def test_three_training_steps_match_the_reference_in_float64():
    config = tiny_config()
    method, state, reference = build(config, torch.float64)
    step = jax.jit(method.train_step)
    with x64():
        for i in range(3):
            batch, noise, losses = float64_iteration(reference, config, i)
            state, metrics = step(state, batch, noise)
            assert float(metrics["lr"]) == pytest.approx(config.lr, rel=1e-7)  # no decay
            assert_step_losses_match(i, metrics, losses)
            for name in NETS:
                net = getattr(reference, name)
                assert_params_match(i, name, state.params[name], net,
                                    biases_before_instance_norm(net), 8 * config.lr)
    assert int(state.step) == 3


def test_reference_step_is_registered_for_the_benchmark():
    from unpaired.torch_reference import build_reference_step
    config = tiny_config()
    step = build_reference_step(config)
    before = [p.detach().clone() for p in step.model.gen.enc_shared.parameters()]
    x_a = torch.rand(BATCH, 3, SIZE, SIZE) * 2 - 1
    x_b = torch.rand(BATCH, 2, SIZE, SIZE) * 2 - 1
    (d_loss, d_terms), (g_loss, g_terms) = step(x_a, x_b)
    assert np.isfinite(d_loss.item()) and np.isfinite(g_loss.item())
    assert set(d_terms) == {"dis_a", "dis_b"} and len(g_terms) == 9
    assert any(not torch.equal(a, b) for a, b in zip(before, step.model.gen.enc_shared.parameters()))


def test_version_02_weight_files_load_without_torch(tmp_path):
    """`<prefix>_gen_XXXXXXXX.pkl` as COCOGANTrainer.save writes it (with the PyTorch-0.3
    InstanceNorm running statistics old files carry) loads into `gen`; a stray key is named."""
    config = tiny_config()
    method, state, reference = build(config)
    sd = dict(reference.gen.state_dict())
    sd["encode_A.2.model.1.running_mean"] = torch.zeros(8)
    sd["encode_A.2.model.1.running_var"] = torch.ones(8)
    torch.save(sd, tmp_path / "v02_gen_00000001.pkl")
    torch.save(reference.dis.state_dict(), tmp_path / "v02_dis_00000001.pkl")
    for name in NETS:
        loaded = method.import_weights(str(tmp_path / f"v02_{name}_00000001.pkl"), (name,))
        for a, b in zip(jax.tree.leaves(loaded[name]["params"]), jax.tree.leaves(state.params[name])):
            np.testing.assert_array_equal(a, b)
    sd["decode_A.9.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "stray.pkl")
    with pytest.raises(ValueError, match=r"decode_A\.9\.weight"):
        method.import_weights(str(tmp_path / "stray.pkl"), ("gen",))
    with pytest.raises(ValueError, match="init_networks must be gen"):
        method.import_weights(str(tmp_path / "v02_gen_00000001.pkl"), ("dis",))
