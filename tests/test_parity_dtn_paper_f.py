"""The paper's f (config.f_arch='paper': conv + max-pool, no BN) against the torch
re-expression `PaperContentExtractor`: outputs in float32 within 1e-5, stage 1 after 3
steps and stage 2's whole-loss gradients in float64 within 1e-9. Facts: dtn.md 1.4, 5.1.
"""

import jax
import numpy as np
import torch

from unpaired.torch_reference import dtn as ref

from tests.helpers import grad_errors, nchw, rel_err, x64
from tests.test_parity_dtn_step import (SCOPE, assert_pretrain_steps_match, batch_of, build,
                                        tf_named, tiny_config, torch_named)


def test_paper_f_features_and_logits_match_in_float32():
    config = tiny_config(stage1=True, f_arch="paper")
    method, state, tnets = build(config)
    assert "bn1" not in state.params["f"] and not state.model_state["f"]
    x = np.random.RandomState(0).uniform(-1, 1, (3, 32, 32, 1)).astype(np.float32)
    module = method.modules["f"]
    variables = {"params": state.params["f"]}
    with torch.no_grad():
        feature = tnets["f"](nchw(x)).numpy().transpose(0, 2, 3, 1)
        logits = tnets["f"](nchw(x), logits=True).numpy()
    ours = module.apply(variables, x, True)
    assert ours.shape == (3, 1, 1, config.feature_dim) and rel_err(ours, feature) < 1e-5
    # Taken before the ReLU: with conv4's bias lowered by 5 (both sides) features go negative.
    with torch.no_grad():
        tnets["f"].conv4.bias -= 5.0
        shifted = tnets["f"](nchw(x)).numpy().transpose(0, 2, 3, 1)
    low = jax.tree.map(np.asarray, state.params["f"])
    low["conv4"]["bias"] = low["conv4"]["bias"] - 5.0
    assert float(np.min(shifted)) < 0 and rel_err(module.apply({"params": low}, x, True), shifted) < 1e-5
    assert rel_err(module.apply(variables, x, True, logits=True), logits) < 1e-5


def test_three_pretrain_steps_with_the_paper_f_match_in_float64():
    assert_pretrain_steps_match(tiny_config(stage1=True, f_arch="paper"), 30)


def test_stage2_gradients_with_the_paper_f_match_in_float64():
    config = tiny_config(f_arch="paper", gamma=0.05)
    method, state, tnets = build(config, torch.float64)
    reference = ref.DTNReference(tnets["f"], tnets["g"], tnets["D"], alpha=config.alpha,
                                 beta=config.beta, gamma=config.gamma, tv_eps=config.tv_eps)
    batch = batch_of(config, 3, np.float64)
    loss, _, _ = reference.generator_loss(nchw(batch["B"]), nchw(batch["A"]))
    theirs = torch.autograd.grad(loss, list(tnets["g"].parameters()))
    with x64():
        p = state.params
        (ours_loss, _), grads = jax.jit(jax.value_and_grad(method.generator_loss, has_aux=True))(
            {"g": p["g"]}, p["f"], p["D"], state.model_state, batch)
    assert abs(float(ours_loss) - float(loss)) <= 1e-9 * abs(float(loss))
    errors = grad_errors(tf_named("g", grads["g"]), torch_named(tnets["g"], SCOPE["g"], theirs))
    assert max(errors.values()) < 1e-9, max(errors.items(), key=lambda kv: kv[1])
