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

from unpaired import config_validation
from unpaired.methods import ufdn as ufdn_method

from tests import test_parity_ufdn_step as face
from tests import test_parity_ufdn_uda_step as uda
from tests.helpers import rel_err, x64

torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False


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
    method, state, reference, tnets = face.build(torch.float64, objective="paper")
    batch = face.batch_of(2, np.float64)
    terms, ours, noise = face.our_gradients(method, state, batch)
    expected, theirs = face.reference_gradients(reference, tnets, batch, noise)
    assert set(terms) == set(expected) and "gp" not in terms  # the paper's D_x has no GP
    for name, value in expected.items():
        assert rel_err(terms[name], value.detach().numpy()) < 1e-9, name
    face.assert_gradients_match(ours, theirs)


def test_paper_translation_after_three_steps_matches_in_float64():
    method, state, reference, tnets = face.build(torch.float64, objective="paper")
    state = face.three_steps(method, state, reference)
    assert int(state.step) == 3
    face.assert_networks_match(state, tnets, face.tiny_config().lr)


def test_paper_uda_terms_and_parameters_after_three_steps_match_in_float64():
    def feat_is_negative(metrics):  # +lambda * E[log P(v_c | z)] is negative
        assert float(metrics["feat"]) < 0

    with x64():
        _, state, tnets = uda.run_steps(torch.float64, jnp.float64, np.float64, 3, 1e-9,
                                        objective="paper", on_step=feat_is_negative)
    face.assert_networks_match(state, tnets, uda.tiny_config().lr)
