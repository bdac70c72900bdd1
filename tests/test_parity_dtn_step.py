"""DTN stage 1 and stage 2 (the paper's objective) against the torch re-expression.

Same weights (Glorot in torch, loaded by TF variable names), same inputs. Every loss
term in float32 within 1e-5; whole-loss gradients in float64 within 1e-9 (per tensor,
floored at 1e-3 of the largest, `tests.helpers.grad_errors`); parameters, moving
statistics and Adam moments after 3 full steps in float64, network-wise within 1e-9.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from configs import dtn as dtn_config
from unpaired import losses, methods
from unpaired.nets import dtn as nets
from unpaired.torch_reference import dtn as ref

from tests.helpers import grad_errors, nchw, rel_err, x64

BATCH = 4
SCOPE = nets.SCOPES


def tiny_config(stage1=False, **overrides):
    config = dtn_config.get_config("digits_pretrain" if stage1 else "digits")
    config.nf, config.feature_dim, config.ngf, config.ndf = 4, 8, 4, 4
    config.batch_size = BATCH
    for key, value in overrides.items():
        config[key] = value
    return config


def torch_nets(config, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    tnets = {
        "f": (ref.PaperContentExtractor if config.get("f_arch", "code") == "paper"
              else ref.ContentExtractor)(config.nf, config.feature_dim, config.num_classes),
        "g": ref.Generator(config.feature_dim, config.ngf, config.output_nc),
        "D": ref.Discriminator(config.output_nc, config.ndf,
                               1 if config.get("variant", "paper") == "code" else 3),
    }
    for net in tnets.values():
        ref.glorot_init(net, gen)
        with torch.no_grad():  # a "pretrained" f: non-trivial BN parameters and statistics
            for name, value in list(net.named_parameters()) + list(net.named_buffers()):
                if name.startswith("bn"):
                    value.copy_(torch.rand(value.shape, generator=gen) * 0.5 + 0.75)
    return {k: v.to(dtype).train() for k, v in tnets.items()}


def to_f64(tree):
    return jax.tree.map(
        lambda x: jnp.asarray(x, jnp.float64) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def build(config, dtype=torch.float32):
    """(method, state, torch nets) with identical weights; float64 state for torch.double."""
    tnets = torch_nets(config, dtype)
    method = methods.build(config)

    def make():
        fresh = method.init_variables(jax.random.key(0))
        variables = {n: nets.from_tf(n, ref.tf_state(tnets[n], SCOPE[n]), fresh[n])
                     for n in method.networks}
        if dtype == torch.float64:  # before the optimizer state, so its b1, b2 are float64 too
            variables = to_f64(variables)
        return method.state_from_variables(variables, jax.random.key(1))

    if dtype == torch.float64:
        with x64():
            return method, make(), tnets
    return method, make(), tnets


def batch_of(config, seed, dtype=np.float32):
    rng = np.random.RandomState(seed)
    batch = {d: rng.uniform(-1, 1, (BATCH, 32, 32, 1)).astype(dtype)
             for d in (config.source_domain, config.target_domain)}
    batch[f"{config.source_domain}_label"] = rng.randint(0, 10, BATCH).astype(np.int32)
    return batch


def tf_named(scope, tree_by_layer):
    """{TF name: array} of a params-shaped tree (gradients, Adam moments)."""
    return nets.to_tf(scope, {"params": tree_by_layer})


def torch_named(net, scope, values):
    """{TF name: numpy} of per-parameter tensors of `net` (grads or optimizer moments)."""
    state = dict(zip([k for k, _ in net.named_parameters()], values))
    fake = type("N", (), {"state_dict": lambda self: state})()  # tf_state reads state_dict()
    return ref.tf_state(fake, scope)


def test_tv_loss_matches_explicit_torch_and_its_boundary_rule():
    z = np.random.RandomState(0).uniform(-1, 1, (2, 6, 5, 1))
    with x64():
        ours = losses.tv_loss(jnp.asarray(z), eps=1e-8)
    theirs = ref.tv_loss(nchw(z), 1e-8)
    assert abs(float(ours) - float(theirs)) < 1e-12
    dx = z[:, :-1, 1:] - z[:, :-1, :-1]
    dy = z[:, 1:, :-1] - z[:, :-1, :-1]
    assert abs(float(ours) - np.sqrt(dx**2 + dy**2 + 1e-8).mean()) < 1e-12
    flat = jax.grad(lambda x: losses.tv_loss(x))(jnp.zeros((1, 4, 4, 1)))
    assert np.all(np.isfinite(flat))  # eps keeps sqrt's gradient finite on flat images


@pytest.mark.parametrize("gamma", [0.0, 0.05])
def test_every_loss_term_matches_in_float32(gamma):
    config = tiny_config(gamma=gamma)
    method, state, tnets = build(config)
    reference = ref.DTNReference(tnets["f"], tnets["g"], tnets["D"], alpha=config.alpha,
                                 beta=config.beta, gamma=gamma, tv_eps=config.tv_eps)
    batch = batch_of(config, 1)
    p = state.params
    total, aux = jax.jit(method.generator_loss)({"g": p["g"]}, p["f"], p["D"], state.model_state, batch)
    s, t = nchw(batch["B"]), nchw(batch["A"])
    with torch.no_grad():
        t_total, t_terms, t_fakes = reference.generator_loss(s, t)
        d_total, d_terms = reference.discriminator_loss(t, t_fakes["fake_s"], t_fakes["fake_t"])
    for name, value in t_terms.items():
        assert rel_err(aux["terms"][name], value.numpy()) < 1e-5 or float(value) == 0.0, name
    assert rel_err(total, t_total.numpy()) < 1e-5
    assert rel_err(aux["fakes"]["fake_source"], t_fakes["fake_s"].numpy().transpose(0, 2, 3, 1)) < 1e-5
    ours_d, d_aux = jax.jit(method.discriminator_loss)(
        p["D"], aux["model_state"], batch, aux["fakes"]["fake_source"], aux["fakes"]["fake_target"])
    for name, value in d_terms.items():
        assert rel_err(d_aux["terms"][name], value.numpy()) < 1e-5, name
    assert rel_err(ours_d, d_total.numpy()) < 1e-5
    # BN moving statistics after all 10 training-mode calls, every network, by TF name.
    for n in ("f", "g", "D"):
        ours = nets.to_tf(n, {"params": p[n], "batch_stats": d_aux["model_state"][n]})
        for name, value in ref.tf_state(tnets[n], SCOPE[n]).items():
            assert rel_err(ours[name], value) < 1e-5, name
    assert float(t_terms["tv"]) > 0 if gamma else float(aux["terms"]["tv"]) == 0.0


def test_total_loss_gradients_match_in_float64():
    config = tiny_config(gamma=0.05)
    method, state, tnets = build(config, torch.float64)
    reference = ref.DTNReference(tnets["f"], tnets["g"], tnets["D"], alpha=config.alpha,
                                 beta=config.beta, gamma=config.gamma, tv_eps=config.tv_eps)
    batch = batch_of(config, 2, np.float64)
    s, t = nchw(batch["B"]), nchw(batch["A"])
    loss_g, _, fakes = reference.generator_loss(s, t)
    g_grads = torch.autograd.grad(loss_g, list(tnets["g"].parameters()))
    loss_d, _ = reference.discriminator_loss(t, fakes["fake_s"], fakes["fake_t"])
    d_grads = torch.autograd.grad(loss_d, list(tnets["D"].parameters()))
    with x64():
        p = state.params
        (_, aux), dg = jax.jit(jax.value_and_grad(method.generator_loss, has_aux=True))(
            {"g": p["g"]}, p["f"], p["D"], state.model_state, batch)
        dd = jax.jit(jax.grad(method.discriminator_loss, has_aux=True))(
            p["D"], aux["model_state"], batch, aux["fakes"]["fake_source"],
            aux["fakes"]["fake_target"])[0]
    for net, ours, theirs in (("g", dg["g"], g_grads), ("D", dd, d_grads)):
        errors = grad_errors(tf_named(net, ours), torch_named(tnets[net], SCOPE[net], theirs))
        assert max(errors.values()) < 1e-9, max(errors.items(), key=lambda kv: kv[1])


def _assert_close(ours: dict, theirs: dict, what):
    assert set(ours) == set(theirs), what
    scale = max(np.max(np.abs(v)) for v in theirs.values())
    worst = max(np.max(np.abs(np.asarray(ours[k], np.float64) - v)) for k, v in theirs.items())
    assert worst / scale < 1e-9, (what, worst / scale)


def _adam_moments(opt_state):
    inner = opt_state.inner_state[0]
    return inner.mu, inner.nu, int(inner.count)


def test_three_stage2_steps_match_the_reference_in_float64():
    """g and D parameters, all moving statistics, Adam moments and losses after 3 steps; f unchanged."""
    config = tiny_config(gamma=0.05)
    method, state, tnets = build(config, torch.float64)
    f_before = jax.tree.map(np.asarray, state.params["f"])
    reference = ref.DTNReference(tnets["f"], tnets["g"], tnets["D"], lr=config.lr,
                                 beta1=config.beta1, beta2=config.beta2, eps=config.adam_eps,
                                 alpha=config.alpha, beta=config.beta, gamma=config.gamma,
                                 tv_eps=config.tv_eps)
    step = jax.jit(method.train_step)
    with x64():
        for i in range(3):
            batch = batch_of(config, 10 + i, np.float64)
            theirs = reference.step(nchw(batch["B"]), nchw(batch["A"]))
            state, metrics = step(state, batch)
            for name, value in theirs.items():
                assert abs(float(metrics[name]) - value) <= 1e-9 * max(abs(value), 1e-3), (i, name)
            for n in ("f", "g", "D"):
                ours = nets.to_tf(n, {"params": state.params[n], "batch_stats": state.model_state[n]})
                _assert_close(ours, ref.tf_state(tnets[n], SCOPE[n]), (i, n))
            for group, opt in (("g", reference.opt_g), ("D", reference.opt_d)):
                mu, nu, count = _adam_moments(state.opt_state[group])
                params = list(tnets[group].parameters())
                assert count == i + 1
                for ours, key in ((mu, "exp_avg"), (nu, "exp_avg_sq")):
                    expected = torch_named(tnets[group], SCOPE[group], [opt.state[q][key] for q in params])
                    _assert_close(tf_named(group, ours[group]), expected, (i, group, key))
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, state.params["f"]), f_before)


def assert_pretrain_steps_match(config, first_seed):
    """Three stage-1 steps in float64 against `PretrainReference`, batches from `first_seed`:
    f's loss to 1e-9 and its weights (with its BN statistics, where it has BN) after each."""
    method, state, tnets = build(config, torch.float64)
    reference = ref.PretrainReference(tnets["f"], lr=config.lr, beta1=config.beta1,
                                      beta2=config.beta2, eps=config.adam_eps)
    step = jax.jit(method.train_step)
    with x64():
        for i in range(3):
            batch = batch_of(config, first_seed + i, np.float64)
            loss = reference.step(nchw(batch["B"]), torch.as_tensor(batch["B_label"]).long())
            state, metrics = step(state, batch)
            assert abs(float(metrics["f"]) - loss) <= 1e-9 * abs(loss), i
            variables = {"params": state.params["f"]}
            if state.model_state["f"]:
                variables["batch_stats"] = state.model_state["f"]
            _assert_close(nets.to_tf("f", variables), ref.tf_state(tnets["f"], SCOPE["f"]), i)


def test_three_pretrain_steps_match_the_reference_in_float64():
    config = tiny_config(stage1=True)
    assert_pretrain_steps_match(config, 20)
