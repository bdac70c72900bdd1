"""The UNIT digit-DA objective and training step against the PyTorch re-expression of
version_02's `COCOGANDAContextTrainer` (dis_update then gen_update on the same batch).

Same weights (the reference's init in PyTorch, loaded through torch_io), same inputs, the
VAE noise and every dropout keep mask injected identically. Every loss term in float32
(TF32 off) to 1e-5; whole-loss gradients and the parameters and BatchNorm statistics after
3 full iterations (Adam with coupled weight decay) in float64 to 1e-9.
"""

import jax
import jax.numpy as jnp
import numpy as np
import torch

from configs import unit as unit_config
from unpaired import methods, torch_io
from unpaired.methods import unit_da
from unpaired.nets import unit_da as nets
from unpaired.torch_reference import unit_da as ref

from tests.helpers import grad_errors, nchw, nhwc, rel_err, x64

BATCH, CH, DCH = 2, 4, 4


def tiny_config():
    config = unit_config.get_config("mnist2usps")
    config.gen_ch, config.dis_ch, config.batch_size = CH, DCH, BATCH
    # Make the small terms weigh in visibly (defaults: 1e-4, 1e-4, 1e-3).
    config.feature_w, config.kl_normalized_direct_w, config.ll_normalized_direct_w = 0.05, 0.01, 0.02
    return config


def hyper(config):
    return {k: float(config[k]) for k in unit_da.WEIGHTS}


def build(config, dtype=torch.float32):
    torch.manual_seed(0)
    tgen = ref.CoVAE32x32(CH, 3, 1, 3, 1)
    tdis = ref.CoDis32x32(DCH, 1, 1)
    ref.init_reference(tgen, tdis)
    tgen, tdis = tgen.to(dtype).train(), tdis.to(dtype).train()
    method = methods.build(config)
    variables = {"gen": torch_io.from_state_dict(tgen.state_dict(), method.network_template("gen")),
                 "dis": torch_io.from_state_dict(tdis.state_dict(), method.network_template("dis"))}
    reference = ref.UNITDAReference(tgen, tdis, hyper(config), config.lr,
                                    (config.beta1, config.beta2), config.weight_decay)
    if dtype == torch.float64:
        with x64():
            variables = jax.tree.map(
                lambda x: jnp.asarray(x, jnp.float64) if np.issubdtype(x.dtype, np.floating) else x,
                variables)
            return method, method.state_from_variables(variables, jax.random.key(42)), reference
    return method, method.state_from_variables(variables, jax.random.key(42)), reference


def batch_of(seed, dtype=np.float32):
    rng = np.random.RandomState(seed)
    batch = {k: rng.uniform(-1, 1, (BATCH, 32, 32, 1)).astype(dtype) for k in "AB"}
    batch["A_label"] = rng.randint(0, 10, BATCH).astype(np.int32)
    return batch


def draws_of(seed, names, dtype=np.float32):
    """Injected draws as (ours: NHWC numpy, theirs: NCHW torch)."""
    rng = np.random.RandomState(seed)
    ours, theirs = {}, {}
    for name in names:
        if name == "eps":
            eps = rng.randn(2 * BATCH, 1, 1, 8 * CH).astype(dtype)
            ours[name], theirs[name] = eps, nchw(eps)
            continue
        n = BATCH if name == "cls" else 2 * BATCH
        shapes = [(n, 16, 16, DCH), (n, 8, 8, DCH * 2), (n, 4, 4, DCH * 4), (n, 2, 2, DCH * 8)]
        masks = [rng.uniform(size=s) >= r for s, r in zip(shapes, nets.DROPOUT_RATES)]
        ours[name], theirs[name] = masks, [nchw(m) for m in masks]
    return ours, theirs


def _torch_inputs(batch):
    return nchw(batch["A"]), torch.from_numpy(batch["A_label"]).long(), nchw(batch["B"])


def test_every_loss_term_and_the_bn_statistics_match_in_float32():
    config = tiny_config()
    method, state, reference = build(config)
    batch = batch_of(1)
    dn, t_dn = draws_of(5, unit_da.DIS_DRAWS)
    gn, t_gn = draws_of(6, unit_da.GEN_DRAWS)
    g, d, stats = state.params["gen"], state.params["dis"], state.model_state["gen"]
    d_total, d_aux = jax.jit(method.discriminator_loss)(d, g, stats, batch, dn)
    gen_loss = jax.jit(method.generator_loss)
    g_total, g_aux = gen_loss(g, d_aux["gen_stats"], d, batch, gn)
    x_a, labels, x_b = _torch_inputs(batch)
    with torch.no_grad():
        td_total = reference.dis_loss(x_a, labels, x_b, t_dn)
        t_stats_after_dis = {k: v.clone() for k, v in reference.gen.state_dict().items()}
        tg_total = reference.gen_loss(x_a, x_b, t_gn)
    terms = {**d_aux["terms"], **g_aux["terms"]}
    compared = 0
    for name, value in reference.terms.items():
        if name in ("D", "G"):
            continue
        assert rel_err(terms[name], value.numpy()) < 1e-5, name
        compared += 1
    assert compared == 9
    assert rel_err(d_total, td_total.numpy()) < 1e-5 and rel_err(g_total, tg_total.numpy()) < 1e-5
    for ours, theirs in zip(("x_aa", "x_ba", "x_ab", "x_bb"), reference.images):
        assert rel_err(g_aux["images"][ours], nhwc(theirs)) < 1e-5, ours
    ours_after_dis = torch_io.to_state_dict({"params": g, "batch_stats": d_aux["gen_stats"]})
    ours_after_gen = torch_io.to_state_dict({"params": g, "batch_stats": g_aux["gen_stats"]})
    for key, value in reference.gen.state_dict().items():
        if "running" in key:
            assert rel_err(ours_after_dis[key], t_stats_after_dis[key].numpy()) < 1e-5, key
            assert rel_err(ours_after_gen[key], value.numpy()) < 1e-5, key
    # The draws matter: other masks and noise change the adversarial and KL terms.
    _, other = gen_loss(g, d_aux["gen_stats"], d, batch, draws_of(9, unit_da.GEN_DRAWS)[0])
    assert abs(float(other["terms"]["ad"]) - float(g_aux["terms"]["ad"])) > 1e-6


def _torch_grads(net):
    return {k: p.grad.numpy().copy() for k, p in net.named_parameters()}


def test_total_loss_gradients_match_in_float64():
    config = tiny_config()
    method, state, reference = build(config, torch.float64)
    batch = batch_of(2, np.float64)
    dn, t_dn = draws_of(7, unit_da.DIS_DRAWS, np.float64)
    gn, t_gn = draws_of(8, unit_da.GEN_DRAWS, np.float64)
    x_a, labels, x_b = _torch_inputs(batch)
    reference.dis.zero_grad()
    reference.dis_loss(x_a, labels, x_b, t_dn).backward()
    t_d_grads = _torch_grads(reference.dis)
    reference.gen.zero_grad()
    reference.gen_loss(x_a, x_b, t_gn).backward()
    t_g_grads = _torch_grads(reference.gen)
    with x64():
        g, d, stats = state.params["gen"], state.params["dis"], state.model_state["gen"]
        d_grads, d_aux = jax.jit(jax.grad(method.discriminator_loss, has_aux=True))(d, g, stats, batch, dn)
        g_grads, _ = jax.jit(jax.grad(method.generator_loss, has_aux=True))(
            g, d_aux["gen_stats"], d, batch, gn)
        ours_d = torch_io.to_state_dict({"params": d_grads})
        ours_g = torch_io.to_state_dict({"params": g_grads})
    assert len(t_d_grads) == 14 and len(t_g_grads) == 38
    errors = {**{f"dis/{k}": v for k, v in grad_errors(ours_d, t_d_grads).items()},
              **{f"gen/{k}": v for k, v in grad_errors(ours_g, t_g_grads).items()}}
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-9, (worst, errors[worst])
    assert np.max(np.abs(t_d_grads["conv_cl.weight"])) > 0  # the classifier head is trained


def test_three_full_steps_match_in_float64():
    config = tiny_config()
    method, state, reference = build(config, torch.float64)
    with x64():
        step = jax.jit(method.train_step)
        for i in range(3):
            batch = batch_of(10 + i, np.float64)
            dn, t_dn = draws_of(20 + i, unit_da.DIS_DRAWS, np.float64)
            gn, t_gn = draws_of(30 + i, unit_da.GEN_DRAWS, np.float64)
            state, metrics = step(state, batch, {"dis": dn, "gen": gn})
            x_a, labels, x_b = _torch_inputs(batch)
            reference.step(x_a, labels, x_b, (t_dn, t_gn))
            assert rel_err(metrics["G"], reference.terms["G"].detach().numpy()) < 1e-9
            assert rel_err(metrics["D"], reference.terms["D"].detach().numpy()) < 1e-9
        ours = {"gen": torch_io.to_state_dict({"params": state.params["gen"],
                                               "batch_stats": state.model_state["gen"]}),
                "dis": torch_io.to_state_dict({"params": state.params["dis"]})}
    assert int(state.step) == 3
    for name, net in (("gen", reference.gen), ("dis", reference.dis)):
        theirs = net.state_dict()
        assert set(ours[name]) == set(theirs)
        for key, value in theirs.items():
            if key.endswith("num_batches_tracked"):
                assert int(ours[name][key]) == int(value) == 6, key  # two G passes per step
            else:
                assert rel_err(ours[name][key], value.numpy()) < 1e-9, (name, key)


def test_reference_step_is_registered_for_the_benchmark():
    from unpaired.torch_reference import build_reference_step

    config = tiny_config()
    step = build_reference_step(config)
    before = [p.detach().clone() for p in step.model.gen.parameters()]
    x = torch.rand(BATCH, 1, 32, 32) * 2 - 1
    d_loss, g_loss = step(x, -x)
    assert np.isfinite(float(d_loss)) and np.isfinite(float(g_loss))
    assert any(not torch.equal(a, b) for a, b in zip(before, step.model.gen.parameters()))
    assert step.model.dis_opt.param_groups[0]["weight_decay"] == config.weight_decay
