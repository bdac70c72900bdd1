"""UFDN with `config.objective='paper'` against the PyTorch re-expression of the same equations.

The paper's (2)-(5) with the seed post's sign corrections (ufdn.md 4.6): softmax domain
classifiers for D_v and D_x, E minimising +E[log P(v_c | z)], a log-loss D_x without a
gradient penalty, G minimising -E[log D(fake)]. Same weights, batches and injected noise
as tests/test_parity_ufdn_step.py; everything in float64 within 1e-9: each loss term of
both procedures, the gradients of the three translation losses, and parameters and
BatchNorm statistics after 3 full steps.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from unpaired import config_validation, methods, torch_io
from unpaired.methods import ufdn as ufdn_method
from unpaired.torch_reference import ufdn as ref

from tests import test_parity_ufdn_step as face
from tests import test_parity_ufdn_uda_step as uda
from tests.helpers import grad_errors, rel_err, x64

torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False


def build_face():
    """(method, float64 state, reference, torch nets) for the translation step, paper form."""
    config = face.tiny_config()
    config.objective = "paper"
    torch.manual_seed(0)
    z_dim = config.encoder[-1][1]
    tnets = {"vae": ref.UFDN(config.encoder, config.decoder, len(face.DOMAINS)),
             "D_feat": ref.Discriminator(config.D_feat, z_dim),
             "D_pix": ref.Discriminator(config.D_pix, 3, face.SIZE)}
    tnets = {k: v.double() for k, v in tnets.items()}
    method = methods.build(config)
    templates = method.init_variables(jax.random.key(0))
    variables = {n: torch_io.from_state_dict(t.state_dict(), templates[n]) for n, t in tnets.items()}
    with x64():
        state = face.to_f64(method.state_from_variables(variables, jax.random.key(7)))
    reference = ref.UFDNFaceReference(tnets["vae"], tnets["D_feat"], tnets["D_pix"],
                                      config.lambdas.to_dict(), lr=config.lr,
                                      betas=(config.beta1, config.beta2), objective="paper")
    return method, state, reference, tnets


def assert_networks_match(state, tnets, lr):
    """Parameters and BatchNorm statistics within 1e-9 (biases before a BN: an lr bound)."""
    for name, net in tnets.items():
        variables = {"params": state.params[name]}
        if state.model_state[name]:
            variables["batch_stats"] = state.model_state[name]
        ours = torch_io.to_state_dict(variables)
        theirs = net.state_dict()
        assert set(ours) == set(theirs)
        scale = max(float(v.abs().max()) for v in theirs.values() if v.dtype.is_floating_point)
        cancelled = face.biases_before_batch_norm(net)
        for k, v in theirs.items():
            if v.dtype.is_floating_point:
                err = float(np.max(np.abs(np.asarray(ours[k]) - v.numpy())))
                assert err < (3 * lr if k in cancelled else 1e-9 * scale), (name, k, err)
            else:
                assert int(ours[k]) == int(v), (name, k)


def test_paper_losses_are_the_sign_corrected_equations():
    """Direct values on small logits: softmax CE, E = -L_Dv, log-loss D_x and G."""
    paper, code = ufdn_method.Objective("paper"), ufdn_method.Objective("code")
    logits = jnp.asarray([[2.0, -1.0, 0.5], [0.0, 1.0, -3.0]])
    v = jnp.asarray([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    p = jax.nn.softmax(logits)
    nll = -np.mean(np.log([p[0, 0], p[1, 2]]))
    assert float(paper.domain_loss(logits, v)) == pytest.approx(nll, rel=1e-6)
    assert float(paper.encoder_adversarial(logits, v)) == pytest.approx(-nll, rel=1e-6)
    assert float(code.domain_loss(logits, v)) != pytest.approx(nll, rel=1e-3)
    s_real, s_fake = jnp.asarray([3.0, 1.0]), jnp.asarray([-2.0, 0.5])
    sig = lambda s: 1 / (1 + np.exp(-np.asarray(s)))
    real, fake = paper.critic_terms(s_real, s_fake)
    assert float(real) == pytest.approx(np.mean(np.log(1 - sig(s_real))), rel=1e-6)
    assert float(fake) == pytest.approx(np.mean(np.log(sig(s_fake))), rel=1e-6)
    assert float(paper.generator_adversarial(s_fake)) == pytest.approx(-float(fake), rel=1e-6)
    config = face.tiny_config()
    config.objective = "papers"
    with pytest.raises(config_validation.ConfigError, match=r"config\.objective"):
        config_validation.validate(config)


def test_paper_translation_terms_and_gradients_match_in_float64():
    """Each loss term and the gradients of L_Dv, L_Dx and the E/G sum, same weights and noise."""
    method, state, reference, tnets = build_face()
    batch = face.batch_of(2, np.float64)
    x, v, t = face.torch_batch(batch, 0, torch.float64)
    with x64():
        _, noise = face.noise_for(method, state.key, jnp.float64)
        jnoise = {k: jnp.asarray(v_.numpy()) for k, v_ in noise.items()}
        mixed = method.mixed_batch(batch, jnp.asarray(0))
        lam = method.lambdas(jnp.asarray(0))
        vae = method.modules["vae"]

        @jax.jit
        def values_and_gradients(p, ms, mixed, jnoise, lam):
            vars_ = {"params": p["vae"], "batch_stats": ms["vae"]}
            z1 = vae.apply(vars_, mixed["x"], None, jnoise["eps_dv"], train=True, mode="encode",
                           mutable=["batch_stats"])[0]
            l_dv, g_dv = jax.value_and_grad(
                lambda q: method.d_feat_loss(q, ms, z1, mixed["v"])[0])(p["D_feat"])
            x_fake = vae.apply(vars_, mixed["x"], mixed["t"], jnoise["eps_dx"], train=True,
                               mutable=["batch_stats"])[0][0]
            (_, dx), g_dx = jax.value_and_grad(lambda q: method.d_pix_loss(
                q, ms, mixed["x"], x_fake, mixed["v"], jnoise["alpha"], lam["gp"]), has_aux=True)(
                    p["D_pix"])
            others = {"D_feat": p["D_feat"], "D_pix": p["D_pix"]}
            (_, aux), g_vae = jax.value_and_grad(
                lambda q: method.vae_loss(q, others, ms, mixed, jnoise, lam), has_aux=True)(
                    {"vae": p["vae"]})
            terms = {"Dv": l_dv, **dx["terms"], **aux["terms"]}
            return terms, g_dv, g_dx, g_vae["vae"]

        terms, g_dv, g_dx, g_vae = values_and_gradients(state.params, state.model_state, mixed,
                                                        jnoise, lam)
    for net in tnets.values():
        net.zero_grad()
    l_dv = reference.d_feat_loss(x, v, noise["eps_dv"])
    l_dv.backward()
    l_dx, dx_terms = reference.d_pix_loss(x, v, t, noise["eps_dx"], noise["alpha"])
    l_dx.backward()
    theirs = {n: {k: q.grad.clone() for k, q in tnets[n].named_parameters()}
              for n in ("D_feat", "D_pix")}
    rec, feat, pix, vae_terms = reference.vae_losses(x, v, t, noise["eps_rec"], noise["eps_feat"],
                                                     noise["eps_pix"], noise["eps_unused"])
    (rec + feat + pix).backward()
    theirs["vae"] = {k: q.grad for k, q in tnets["vae"].named_parameters()}
    expected = {"Dv": l_dv, **dx_terms, **vae_terms}
    assert set(terms) == set(expected) and "gp" not in terms  # the paper's D_x has no GP
    for name, value in expected.items():
        assert rel_err(terms[name], value.detach().numpy()) < 1e-9, name
    for name, grads in (("D_feat", g_dv), ("D_pix", g_dx), ("vae", g_vae)):
        ours = torch_io.to_state_dict({"params": grads})
        errors = grad_errors(ours, {k: g.numpy() for k, g in theirs[name].items()})
        assert max(errors.values()) < 1e-9, (name, max(errors.items(), key=lambda kv: kv[1]))


def test_paper_translation_after_three_steps_matches_in_float64():
    method, state, reference, tnets = build_face()
    with x64():
        step = jax.jit(method.train_step)
        key = state.key
        for s in range(3):
            batch = face.batch_of(10 + s, np.float64)
            key, noise = face.noise_for(method, key, jnp.float64)
            state, metrics = step(state, batch)
            terms = reference.step(*face.torch_batch(batch, s, torch.float64), noise)
            for name, value in terms.items():
                assert rel_err(metrics[name], value.numpy()) < 1e-9, (s, name)
    assert int(state.step) == 3
    assert_networks_match(state, tnets, face.tiny_config().lr)


def test_paper_uda_terms_and_parameters_after_three_steps_match_in_float64():
    config = uda.tiny_config()
    config.objective = "paper"
    torch.manual_seed(0)
    tnets = {"vae": ref.UFDN(config.encoder, config.decoder, 2),
             "D_feat": ref.Discriminator(config.D_feat, 6),
             "D_digit": ref.Discriminator(config.D_digit, 6)}
    tnets = {k: v.double() for k, v in tnets.items()}
    method = methods.build(config)
    templates = method.init_variables(jax.random.key(0))
    variables = {n: torch_io.from_state_dict(t.state_dict(), templates[n]) for n, t in tnets.items()}
    reference = ref.UFDNUdaReference(tnets["vae"], tnets["D_feat"], tnets["D_digit"],
                                     config.lambdas.to_dict(), lr=config.lr, objective="paper")
    with x64():
        state = face.to_f64(method.state_from_variables(variables, jax.random.key(3)))
        step = jax.jit(method.train_step)
        key = state.key
        for s in range(3):
            batch = uda.batch_of(20 + s, np.float64)
            key, noise_key = jax.random.split(key)
            noise = {k: torch.from_numpy(np.array(v)) for k, v in
                     method.draw_noise(noise_key, 2 * uda.BATCH, jnp.float64).items()}
            state, metrics = step(state, batch)
            terms = reference.step(*uda.torch_inputs(batch, torch.float64), noise)
            for name, value in terms.items():
                assert rel_err(metrics[name], value.numpy()) < 1e-9, (s, name)
            assert float(metrics["feat"]) < 0  # +lambda * E[log P(v_c | z)] is negative
    assert_networks_match(state, tnets, config.lr)
