"""DTN stage 2 as the public TF code trains it (config.variant='code') against the torch
re-expression `DTNCodeReference`: binary D, five train ops, each with its own TF Adam.

Same weights and inputs on both sides. Every op's loss and all BN moving statistics in
float32 within 1e-5; each op's gradient for its own network in float64 within 1e-9;
parameters, moving statistics, all five Adam states and the losses after 3 full
iterations (f's op due at 2 of them) in float64 within 1e-9. Facts: dtn.md 2.5 and 4.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from unpaired.methods.dtn import CODE_GROUPS, f_update_due
from unpaired.nets import dtn as nets
from unpaired.tf_adam import tf_adam
from unpaired.torch_reference import dtn as ref

from tests.helpers import grad_errors, nchw, rel_err, x64
from tests.test_parity_dtn_step import (SCOPE, _assert_close, batch_of, build, tf_named,
                                        tiny_config, torch_named)


def code_config(**overrides):
    return tiny_config(variant="code", **overrides)


def reference_for(config, tnets, steps_per_epoch):
    return ref.DTNCodeReference(
        tnets["f"], tnets["g"], tnets["D"], lr=config.lr, beta1=config.beta1,
        beta2=config.beta2, eps=config.adam_eps, alpha=config.alpha, beta=config.beta,
        updates=(config.d_src_updates, config.g_src_updates, config.d_trg_updates,
                 config.g_trg_updates),
        f_interval=(config.f_interval, config.f_interval_late, config.f_interval_switch),
        steps_per_epoch=steps_per_epoch)


def test_tf_adam_puts_eps_on_the_raw_sqrt_v_like_the_torch_re_expression():
    rng = np.random.RandomState(0)
    w0 = rng.standard_normal((3, 4))
    grads = [rng.standard_normal((3, 4)) * 1e-6 for _ in range(4)]  # small: eps placement matters
    with x64():
        tx = tf_adam(1e-2, 0.9, 0.999, 1e-8)
        params, state = jnp.asarray(w0), None
        state = tx.init(params)
        for g in grads:
            updates, state = tx.update(jnp.asarray(g), state)
            params = optax.apply_updates(params, updates)
        ours = np.asarray(params)
    p = torch.nn.Parameter(torch.tensor(w0))
    opt = ref.TFAdam([p], lr=1e-2, betas=(0.9, 0.999), eps=1e-8)
    m = v = np.zeros_like(w0)
    closed = w0.copy()
    for t, g in enumerate(grads, start=1):
        p.grad = torch.tensor(g)
        opt.step()
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        closed -= 1e-2 * np.sqrt(1 - 0.999**t) / (1 - 0.9**t) * m / (np.sqrt(v) + 1e-8)
    assert np.max(np.abs(ours - p.detach().numpy())) < 1e-15
    assert np.max(np.abs(ours - closed)) < 1e-15
    assert int(state.count) == 4
    # optax.adam / torch Adam put eps on sqrt(v_hat): a visibly different trajectory here.
    with x64():
        other, ostate = jnp.asarray(w0), optax.adam(1e-2, 0.9, 0.999, 1e-8).init(jnp.asarray(w0))
        for g in grads:
            updates, ostate = optax.adam(1e-2, 0.9, 0.999, 1e-8).update(jnp.asarray(g), ostate)
            other = optax.apply_updates(other, updates)
    assert np.max(np.abs(ours - np.asarray(other))) > 1e-4


def test_f_op_schedule_gives_the_reference_counts():
    """yunjey's 2,001 iterations over 732 SVHN batches: 121 f updates, 115 before step 1800."""
    config = tiny_config(variant="code")
    steps = jnp.arange(2001)
    due = np.asarray(jax.vmap(lambda s: f_update_due(s, 732, config))(steps))
    assert due.sum() == 121 and due[:1800].sum() == 115
    assert list(np.flatnonzero(due[1590:1700]) + 1590) == [1599, 1614, 1644, 1674]
    reference = ref.DTNCodeReference.f_due
    fake = type("R", (), {"f_interval": (15, 30, 1600), "steps_per_epoch": 732})()
    assert [reference(fake, int(s)) for s in range(2001)] == list(due)


def test_every_op_loss_and_bn_statistics_match_in_float32():
    config = code_config()
    method, state, tnets = build(config)
    reference = reference_for(config, tnets, 1)
    batch = batch_of(config, 1)
    s, t = nchw(batch["B"]), nchw(batch["A"])
    assert state.params["D"]["conv4"]["kernel"].shape[-1] == 1  # the code's binary D
    with torch.no_grad():
        theirs = {**reference.source_graph(s), **reference.target_graph(s, t)}
    src, ms = jax.jit(method.source_graph)(state.params, state.model_state, batch)
    trg, ms = jax.jit(method.target_graph)(state.params, ms, batch)
    ours = {**src, **trg}
    assert set(ours) == set(theirs)
    for name, value in theirs.items():
        assert rel_err(ours[name], value) < 1e-5, name
    # BN statistics after the source graph, then the target op's source + target calls.
    for n in ("f", "g", "D"):
        got = nets.to_tf(n, {"params": state.params[n], "batch_stats": ms[n]})
        for name, value in ref.tf_state(tnets[n], SCOPE[n]).items():
            assert rel_err(got[name], value) < 1e-5, name


def test_each_op_gradient_for_its_own_network_matches_in_float64():
    config = code_config()
    method, state, tnets = build(config, torch.float64)
    reference = reference_for(config, tnets, 1)
    batch = batch_of(config, 2, np.float64)
    s, t = nchw(batch["B"]), nchw(batch["A"])
    for op, (net,) in CODE_GROUPS.items():
        graph = reference.source_graph if op.endswith("_src") else \
            (lambda s_, op=op: reference.target_graph(s_, t))
        params = list(tnets[net].parameters())
        theirs = torch.autograd.grad(graph(s)[op], params, allow_unused=True)
        theirs = [torch.zeros_like(p) if g is None else g for p, g in zip(params, theirs)]
        ours_graph = method.source_graph if op.endswith("_src") else method.target_graph
        with x64():
            grads = jax.jit(jax.grad(lambda p, op=op, net=net, g=ours_graph: g(
                {**state.params, net: p}, state.model_state, batch)[0][op]))(state.params[net])
        errors = grad_errors(tf_named(net, grads), torch_named(tnets[net], SCOPE[net], theirs))
        assert max(errors.values()) < 1e-9, (op, max(errors.items(), key=lambda kv: kv[1]))


def test_three_code_iterations_match_the_reference_in_float64():
    """All networks (f trained by f_src), BN statistics and five TF Adam states, 3 iterations.

    Two batches per epoch and f_interval 2: f's op runs at iterations 0 and 2, not 1.
    """
    config = code_config(f_interval=2, f_interval_late=2)
    method, state, tnets = build(config, torch.float64)
    method.steps_per_epoch = 2
    reference = reference_for(config, tnets, 2)
    step = jax.jit(method.train_step)
    counts = {"d_src": 0, "g_src": 0, "f_src": 0, "d_trg": 0, "g_trg": 0}
    with x64():
        for i in range(3):
            batch = batch_of(config, 10 + i, np.float64)
            theirs = reference.step(nchw(batch["B"]), nchw(batch["A"]))
            state, metrics = step(state, batch)
            assert float(metrics["f_updated"]) == theirs["f_updated"] == float(i != 1)
            for name, value in theirs.items():
                assert abs(float(metrics[name]) - value) <= 1e-9 * max(abs(value), 1e-3), (i, name)
            for n in ("f", "g", "D"):
                ours = nets.to_tf(n, {"params": state.params[n], "batch_stats": state.model_state[n]})
                _assert_close(ours, ref.tf_state(tnets[n], SCOPE[n]), (i, n))
            for op, times in (("d_src", config.d_src_updates), ("g_src", config.g_src_updates),
                              ("f_src", int(i != 1)), ("d_trg", config.d_trg_updates),
                              ("g_trg", config.g_trg_updates)):
                counts[op] += times
                net = CODE_GROUPS[op][0]
                adam = state.opt_state[op]
                assert int(adam.count) == counts[op], (i, op)
                opt = reference.opts[op]
                params = list(tnets[net].parameters())
                assert all(opt.state[q]["step"] == counts[op] for q in params)
                for ours, key in ((adam.mu, "m"), (adam.nu, "v")):
                    expected = torch_named(tnets[net], SCOPE[net], [opt.state[q][key] for q in params])
                    _assert_close(tf_named(net, ours[net]), expected, (i, op, key))
