"""DTN networks (f, g, D) against the torch re-expression of the TF reference.

Weights are Glorot-uniform in torch, named and laid out as a TF checkpoint
(`ref.tf_state`) and loaded through `nets.dtn.from_tf`, so every case also checks the
TF name table. Outputs in float32 within 1e-5 relative (3e-5 at the reference's full
widths, where bn4 normalises each 128-d feature over a batch of 3 single pixels and so
magnifies float32 rounding, as for CycleGAN's full-size generator), in training mode
(batch statistics) and eval mode; the moving statistics after a training-mode pass too.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from unpaired.nets import dtn as nets
from unpaired.torch_reference import dtn as ref

from tests.helpers import nchw, rel_err

SMALL = dict(nf=8, feature_dim=16, ngf=8, ndf=8)
FULL = dict(nf=64, feature_dim=128, ngf=128, ndf=128)


def pair(kind, widths, in_nc=1, num_outputs=1, seed=0):
    """(torch net, flax module, flax variables) with the same weights, via TF names."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "f":
        tnet = ref.ContentExtractor(widths["nf"], widths["feature_dim"])
        module = nets.ContentExtractor(widths["nf"], widths["feature_dim"])
        x = jnp.zeros((1, 32, 32, in_nc))
    elif kind == "g":
        tnet = ref.Generator(widths["feature_dim"], widths["ngf"], 1)
        module = nets.Generator(widths["ngf"], 1)
        x = jnp.zeros((1, 1, 1, widths["feature_dim"]))
    else:
        tnet = ref.Discriminator(in_nc, widths["ndf"], num_outputs)
        module = nets.Discriminator(widths["ndf"], num_outputs)
        x = jnp.zeros((1, 32, 32, in_nc))
    ref.glorot_init(tnet, gen)
    with torch.no_grad():  # non-trivial BN parameters and statistics
        for name, buf in list(tnet.named_parameters()) + list(tnet.named_buffers()):
            if name.split(".")[0].startswith("bn"):
                buf.copy_(torch.rand(buf.shape, generator=gen) * 0.5 + 0.75)
    template = module.init(jax.random.key(0), x, False)
    arrays = ref.tf_state(tnet, nets.SCOPES[kind])
    variables = nets.from_tf(kind, arrays, template, source="test")
    return tnet, module, variables


def inputs(kind, widths, in_nc=1, batch=3, seed=1):
    rng = np.random.RandomState(seed)
    if kind == "g":
        return rng.uniform(-1, 1, (batch, 1, 1, widths["feature_dim"])).astype(np.float32)
    return rng.uniform(-1, 1, (batch, 32, 32, in_nc)).astype(np.float32)


def torch_out(tnet, kind, x, **kw):
    y = tnet(nchw(x), **kw)
    return y.detach().numpy().transpose(0, 2, 3, 1) if y.ndim == 4 else y.detach().numpy()


CASES = [("f", SMALL, 1, 1), ("f", SMALL, 3, 1), ("g", SMALL, 1, 1), ("D", SMALL, 1, 1),
         ("D", SMALL, 1, 3), ("f", FULL, 3, 1)]  # full g and D: same layers, 15 s more each


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-{c[1]['nf']}-in{c[2]}-out{c[3]}")
def test_outputs_and_statistics_match_in_train_and_eval_mode(case):
    kind, widths, in_nc, outs = case
    tnet, module, variables = pair(kind, widths, in_nc, outs)
    x = inputs(kind, widths, in_nc)
    tol = 3e-5 if widths is FULL else 1e-5
    tnet.train()
    ours, updated = module.apply(variables, jnp.asarray(x), True, mutable=["batch_stats"])
    assert rel_err(ours, torch_out(tnet, kind, x)) < tol
    # Moving statistics after one training-mode call, by TF name.
    ours_tf = nets.to_tf(kind, {**variables, **updated})
    for name, value in ref.tf_state(tnet, nets.SCOPES[kind]).items():
        if "moving" in name:
            assert rel_err(ours_tf[name], value) < 1e-6, name
    tnet.eval()
    ours_eval = module.apply({**variables, **updated}, jnp.asarray(x), False)
    assert rel_err(ours_eval, torch_out(tnet, kind, x)) < tol


def test_classifier_head_and_shapes():
    tnet, module, variables = pair("f", SMALL, 3)
    x = inputs("f", SMALL, 3)
    tnet.eval()
    logits = module.apply(variables, jnp.asarray(x), False, logits=True)
    assert logits.shape == (3, 10)
    assert rel_err(logits, torch_out(tnet, "f", x, logits=True)) < 1e-5
    feature = module.apply(variables, jnp.asarray(x), False)
    assert feature.shape == (3, 1, 1, 16) and float(jnp.max(jnp.abs(feature))) < 1


def test_tf_names_cover_the_reference_checkpoint_and_reject_bad_shapes():
    tnet, module, variables = pair("g", SMALL)
    table = nets.tf_names("g", variables)
    assert set(table) == set(ref.tf_state(tnet, "generator"))
    assert table["generator/bn1/moving_mean"] == ("batch_stats", "bn1", "mean")
    assert table["generator/conv_transpose1/weights"] == ("params", "conv_transpose1", "kernel")
    arrays = ref.tf_state(tnet, "generator")
    arrays["generator/conv_transpose2/weights"] = arrays["generator/conv_transpose2/weights"][:, :, :, :1]
    with pytest.raises(ValueError, match="generator/conv_transpose2/weights has shape"):
        nets.from_tf("g", arrays, variables, source="x.ckpt")
    del arrays["generator/conv_transpose2/weights"]
    with pytest.raises(ValueError, match="x.ckpt: variable generator/conv_transpose2/weights is missing"):
        nets.from_tf("g", arrays, variables, source="x.ckpt")


def test_full_width_parameter_counts_are_the_references():
    counts = {}
    for kind, x in (("f", (1, 32, 32, 3)), ("g", (1, 1, 1, 128)), ("D", (1, 32, 32, 1))):
        module = {"f": nets.ContentExtractor(), "g": nets.Generator(), "D": nets.Discriminator()}[kind]
        shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros(x), False))
        counts[kind] = sum(int(np.prod(v.shape)) for v in jax.tree.leaves(shapes["params"]))
    assert counts == {"f": 897_674, "g": 2_526_977, "D": 1_486_593}  # dtn.md 2.3 (f with `out`)
