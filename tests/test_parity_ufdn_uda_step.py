"""The UFDN domain-adaptation step (train_uda.py) against the PyTorch re-expression.

Same weights and noise; the source (first domain) is labelled, target labels are -1.
Loss terms in float32 within 1e-5; parameters (vae, D_feat, D_digit) and BatchNorm
statistics after 3 steps in float64 within 1e-9 (conv biases cancelled by a BatchNorm:
an lr-sized bound, see test_parity_ufdn_step.py).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from configs import ufdn as ufdn_config
from unpaired import methods
from unpaired.torch_reference import ufdn as ref

from tests.helpers import nchw, rel_err, x64
from tests.test_parity_ufdn_step import (SIZE, assert_networks_match, tiny_vae, to_f64,
                                         torch_variables)

BATCH = 3


def tiny_config():
    config = tiny_vae(ufdn_config.get_config("uda"), BATCH)
    config.D_feat = [["fc", 8, "", "LeakyReLU", 0], ["fc", 2, "", "", 0]]
    config.lambdas.feat_domain = (0.1, 0.3, 2)
    config.lambdas.pix_recon = (2.0, 1.0, 3)
    config.lr = 2e-4
    return config


def build(dtype, objective="code"):
    config = tiny_config()
    config.objective = objective
    torch.manual_seed(0)
    tnets = {"vae": ref.UFDN(config.encoder, config.decoder, 2),
             "D_feat": ref.Discriminator(config.D_feat, 6),
             "D_digit": ref.Discriminator(config.D_digit, 6)}
    tnets = {k: v.to(dtype) for k, v in tnets.items()}
    method = methods.build(config)
    variables = torch_variables(method, tnets)
    reference = ref.UFDNUdaReference(tnets["vae"], tnets["D_feat"], tnets["D_digit"],
                                     config.lambdas.to_dict(), lr=config.lr, objective=objective)
    return method, variables, reference, tnets


def batch_of(seed, dtype):
    rng = np.random.RandomState(seed)
    batch = {d: rng.uniform(-1, 1, (BATCH, SIZE, SIZE, 3)).astype(dtype) for d in ("mnist", "usps")}
    batch["mnist_label"] = rng.randint(0, 10, (BATCH,)).astype(np.int32)
    return batch


def torch_inputs(batch, dtype):
    x = torch.cat([nchw(batch["mnist"]), nchw(batch["usps"])])
    code = torch.eye(2, dtype=dtype)[torch.arange(2).repeat_interleave(BATCH)]
    labels = torch.cat([torch.from_numpy(batch["mnist_label"]).long(),
                        torch.full((BATCH,), -1, dtype=torch.long)])
    return x, code, labels


def run_steps(dtype, jdtype, np_dtype, steps, tol, objective="code", on_step=None):
    """`steps` uda steps on both sides from the same weights, every loss term within `tol`;
    `on_step(metrics)` checks more after each."""
    method, variables, reference, tnets = build(dtype, objective)
    state = method.state_from_variables(variables, jax.random.key(3))
    if jdtype == jnp.float64:
        state = to_f64(state)
    step = jax.jit(method.train_step)
    key = state.key
    for s in range(steps):
        batch = batch_of(20 + s, np_dtype)
        key, noise_key = jax.random.split(key)
        noise = {k: torch.from_numpy(np.array(v)) for k, v in
                 method.draw_noise(noise_key, 2 * BATCH, jdtype).items()}
        state, metrics = step(state, batch)
        terms = reference.step(*torch_inputs(batch, dtype), noise)
        for name, value in terms.items():
            assert rel_err(metrics[name], value.numpy()) < tol, (s, name)
        if on_step is not None:
            on_step(metrics)
    return method, state, tnets


def test_uda_loss_terms_match_in_float32():
    run_steps(torch.float32, jnp.float32, np.float32, 1, 1e-5)


def test_uda_parameters_after_three_steps_match_in_float64():
    with x64():
        method, state, tnets = run_steps(torch.float64, jnp.float64, np.float64, 3, 1e-9)
    assert_networks_match(state, tnets, tiny_config().lr)


def test_mixed_batch_labels_and_inversion_augmentation():
    """Source labels kept, target labels -1; with data_augment, odd steps invert x (1 - x on [0, 1])."""
    config = tiny_config()
    config.data_augment = True
    method = methods.build(config)
    batch = batch_of(5, np.float32)
    even = method.mixed_batch(batch, jnp.asarray(0))
    odd = method.mixed_batch(batch, jnp.asarray(1))
    assert np.array_equal(even["labels"][:BATCH], batch["mnist_label"])
    assert (np.asarray(even["labels"][BATCH:]) == -1).all()
    assert np.array_equal(np.asarray(odd["x"]), -np.asarray(even["x"]))
    assert np.array_equal(np.asarray(even["v"]), np.repeat(np.eye(2), BATCH, axis=0))


def test_digit_accuracy_is_the_eval_mode_classifier_on_mu():
    method, variables, _, tnets = build(torch.float32)
    state = method.state_from_variables(variables, jax.random.key(0))
    batch = batch_of(6, np.float32)
    for net in tnets.values():
        net.eval()
    with torch.no_grad():
        mu = tnets["vae"](nchw(batch["mnist"]), return_enc=True)
        predicted = tnets["D_digit"](mu).argmax(1).numpy()
    labels = predicted.copy()
    labels[0] = (labels[0] + 1) % 10  # one wrong of BATCH
    acc = method.digit_accuracy(state.params, state.model_state, batch["mnist"], labels)
    assert float(acc) == pytest.approx((BATCH - 1) / BATCH)
