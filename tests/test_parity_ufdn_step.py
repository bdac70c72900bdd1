"""The UFDN translation step (train_face.py) against the PyTorch re-expression.

Same weights (built in PyTorch, loaded through torch_io), same mixed batch, the same
noise (every eps and the GP's alpha drawn by `UFDN.draw_noise` and fed to torch). The
torch side builds its batch and targets the reference's way (3 domains: even steps
k -> k+1, odd steps k -> k+2), so the test also checks our target cycling. Loss weights
ramp within the 3 steps (including an overshooting increment), so the ramp rule is
checked too. Tolerances: loss terms in float32 within 1e-5 relative; gradients of the
three losses (the GP's double backward included) and all parameters and BatchNorm
statistics after 3 full steps in float64 within 1e-9.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from configs import ufdn as ufdn_config
from unpaired import methods, torch_io
from unpaired.methods import ufdn as ufdn_method
from unpaired.torch_reference import ufdn as ref

from tests.helpers import grad_errors, nchw, rel_err, x64

torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False

BATCH, SIZE, DOMAINS = 2, 16, ("A", "B", "C")
LAMBDAS = dict(pix_recon=(10.0, 1.0, 2), kl=(1e-3, 2e-3, 2), feat_domain=(0.5, 1.0, 3),
               gp=(100.0, 100.0, 1), pix_adv=(0.1, 0.35, 2), pix_clf=(0.2, 0.1, 3))
NETS = {"vae": "vae", "D_feat": "d_feat", "D_pix": "d_pix"}


def conv(out, norm="bn", act="LeakyReLU"):
    """A config layer list's k4 s2 p1 conv."""
    return ["conv", out, 4, 2, 1, norm, act]


def tiny_vae(config, batch_size):
    """Batches of `batch_size` SIZE x SIZE images through a 4 + 4 layer VAE (z 6): smaller than
    the presets (16x16, 4 + 4 layers) to keep compile times short."""
    config.batch_size = batch_size
    config.data.image_size = config.data.load_size = config.data.crop_size = SIZE
    config.encoder = [conv(4), conv(8), conv(8), conv(6, "", "")]
    config.decoder = [conv(8) + [True], conv(8) + [False], conv(4) + [False],
                      conv(3, "", "Tanh") + [False]]
    return config


def tiny_config():
    config = tiny_vae(ufdn_config.get_config("digits"), BATCH)
    config.D_feat = [["fc", 8, "", "LeakyReLU", 0], ["fc", 3, "", "", 0]]
    # A BatchNorm in D_x too, for the statistics of the GP pass.
    config.D_pix = [conv(4, ""), conv(8, "bn"), ["fc", 8, "", "LeakyReLU", 0],
                    ["fc", [1, 3], "", "", 0]]
    for name, value in LAMBDAS.items():
        config.lambdas[name] = value
    config.lr = 2e-4  # the step's parity, not the preset's rate: the 1e-9 bounds were set at it
    return config


def to_f64(tree):
    return jax.tree.map(
        lambda x: jnp.asarray(x, jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def torch_variables(method, tnets):
    """Our variables for `method` (templates from key 0) holding the torch nets' weights."""
    templates = method.init_variables(jax.random.key(0))
    return {n: torch_io.from_state_dict(t.state_dict(), templates[n]) for n, t in tnets.items()}


def build(dtype=torch.float32, objective="code"):
    """(method, state, reference): identical weights, float64 state when dtype is double."""
    config = tiny_config()
    config.objective = objective
    torch.manual_seed(0)
    z_dim = config.encoder[-1][1]
    tnets = {"vae": ref.UFDN(config.encoder, config.decoder, len(DOMAINS)),
             "D_feat": ref.Discriminator(config.D_feat, z_dim),
             "D_pix": ref.Discriminator(config.D_pix, 3, SIZE)}
    tnets = {k: v.to(dtype) for k, v in tnets.items()}
    method = methods.build(config)
    variables = torch_variables(method, tnets)
    if dtype == torch.float64:
        with x64():
            state = to_f64(method.state_from_variables(variables, jax.random.key(7)))
    else:
        state = method.state_from_variables(variables, jax.random.key(7))
    reference = ref.UFDNFaceReference(tnets["vae"], tnets["D_feat"], tnets["D_pix"],
                                      config.lambdas.to_dict(), lr=config.lr,
                                      betas=(config.beta1, config.beta2), objective=objective)
    return method, state, reference, tnets


def batch_of(seed, dtype=np.float32):
    rng = np.random.RandomState(seed)
    return {d: rng.uniform(-1, 1, (BATCH, SIZE, SIZE, 3)).astype(dtype) for d in DOMAINS}


def torch_batch(batch, step, dtype):
    """The reference's x, v and t: domains concatenated in order, one-hot codes."""
    x = torch.cat([nchw(batch[d]) for d in DOMAINS])
    eye = torch.eye(len(DOMAINS), dtype=dtype)
    owner = torch.arange(len(DOMAINS)).repeat_interleave(BATCH)
    shift = 1 if step % 2 == 0 else 2  # forward on even steps, backward on odd ones
    return x, eye[owner], eye[(owner + shift) % len(DOMAINS)]


def noise_for(method, key, dtype):
    """The noise `train_step` draws from a state key, as (next key, numpy dict)."""
    key, noise_key = jax.random.split(key)
    noise = method.draw_noise(noise_key, BATCH * len(DOMAINS), dtype)
    return key, {k: torch.from_numpy(np.array(v)) for k, v in noise.items()}


def test_target_cycling_and_ramps():
    targets = [np.asarray(ufdn_method.target_indices(s, 3)).tolist() for s in range(3)]
    assert targets == [[1, 2, 0], [2, 0, 1], [1, 2, 0]]
    assert np.asarray(ufdn_method.target_indices(5, 2)).tolist() == [1, 0]
    table = ufdn_method.ramp_table(100.0, 1.0, 1000)
    assert table[1000] == 0.9999999999996614 and len(table) == 1001  # the facts' value
    table = ufdn_method.ramp_table(0.0, 1.0, 10000)
    assert table[-1] == 1.0000999999999063 and len(table) == 10002
    ramp = ref.LambdaRamp(0.0, 1e-6, 10000)
    for _ in range(10000):
        ramp.update()
    assert ufdn_method.ramp_table(0.0, 1e-6, 10000)[-1] == ramp.cur == 1.000000000000063e-06


def test_every_loss_term_matches_in_float32():
    method, state, reference, _ = build()
    batch = batch_of(1)
    _, noise = noise_for(method, state.key, jnp.float32)
    _, metrics = jax.jit(method.train_step)(state, batch)
    terms = reference.step(*torch_batch(batch, 0, torch.float32), noise)
    for name, value in terms.items():
        assert rel_err(metrics[name], value.numpy()) < 1e-5, name
    assert float(metrics["lambda_feat_domain"]) == pytest.approx(0.5)


def our_gradients(method, state, batch):
    """Our step-0 loss terms and the gradients of L_Dv, L_Dx and the E/G sum, in float64, with
    the noise `train_step` would draw: (terms, gradients by network, that noise for torch)."""
    with x64():
        _, noise = noise_for(method, state.key, jnp.float64)
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
            return terms, {"D_feat": g_dv, "D_pix": g_dx, "vae": g_vae["vae"]}

        terms, grads = values_and_gradients(state.params, state.model_state, mixed, jnoise, lam)
    return terms, grads, noise


def reference_gradients(reference, tnets, batch, noise):
    """The reference's step-0 terms and gradients of the same three losses (its backward)."""
    x, v, t = torch_batch(batch, 0, torch.float64)
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
    return {"Dv": l_dv, **dx_terms, **vae_terms}, theirs


def assert_gradients_match(ours, theirs):
    """Each network's gradients within 1e-9 (`grad_errors`)."""
    for name in ("D_feat", "D_pix", "vae"):
        errors = grad_errors(torch_io.to_state_dict({"params": ours[name]}),
                             {k: g.numpy() for k, g in theirs[name].items()})
        assert max(errors.values()) < 1e-9, (name, max(errors.items(), key=lambda kv: kv[1]))


def test_gradients_match_in_float64():
    """Gradients of L_Dv, L_Dx (with the GP's double backward) and the E/G sum, same weights."""
    method, state, reference, tnets = build(torch.float64)
    batch = batch_of(2, np.float64)
    _, ours, noise = our_gradients(method, state, batch)
    _, theirs = reference_gradients(reference, tnets, batch, noise)
    assert_gradients_match(ours, theirs)


def three_steps(method, state, reference):
    """Three float64 translation steps on both sides, every loss term within 1e-9."""
    with x64():
        step = jax.jit(method.train_step)
        key = state.key
        for s in range(3):
            batch = batch_of(10 + s, np.float64)
            key, noise = noise_for(method, key, jnp.float64)
            state, metrics = step(state, batch)
            terms = reference.step(*torch_batch(batch, s, torch.float64), noise)
            for name, value in terms.items():
                assert rel_err(metrics[name], value.numpy()) < 1e-9, (s, name)
    return state


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
        cancelled = biases_before_batch_norm(net)
        for k, v in theirs.items():
            if v.dtype.is_floating_point:
                err = float(np.max(np.abs(np.asarray(ours[k]) - v.numpy())))
                # A conv bias feeding a BatchNorm has a zero gradient up to rounding,
                # which Adam scales to steps of up to lr on either side.
                assert err < (3 * lr if k in cancelled else 1e-9 * scale), (name, k, err)
            else:
                assert int(ours[k]) == int(v), (name, k)


def test_parameters_and_statistics_after_three_steps_match_in_float64():
    method, state, reference, tnets = build(torch.float64)
    state = three_steps(method, state, reference)
    assert int(state.step) == 3
    assert_networks_match(state, tnets, tiny_config().lr)


def biases_before_batch_norm(net: torch.nn.Module) -> set:
    """state_dict keys of conv biases directly followed by a BatchNorm (cancelled by it)."""
    keys = set()
    for prefix, module in net.named_modules():
        if isinstance(module, torch.nn.Sequential) and len(module) > 1 and \
                isinstance(module[1], torch.nn.BatchNorm2d):
            keys.add(f"{prefix}.0.bias")
    return keys
