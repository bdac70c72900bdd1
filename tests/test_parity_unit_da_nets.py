"""UNIT's digit DA networks (version_02 CoVAE32x32, CoDis32x32) against the PyTorch
re-expression with the same weights, loaded through `unpaired.torch_io` (so the state_dict
names are checked too). float32 with TF32 off, relative error < 1e-5; BatchNorm(affine=False)
running statistics as PyTorch updates them."""

import os
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from unpaired import layers, torch_io
from unpaired.nets import unit_da as nets
from unpaired.torch_reference import unit_da as ref

from tests.helpers import nchw, nhwc, rel_err


def _pair(ch, dis_ch, in_a=1, in_b=1, seed=0):
    torch.manual_seed(seed)
    tgen = ref.CoVAE32x32(ch, in_a + 2, in_a, in_b + 2, in_b)
    tdis = ref.CoDis32x32(dis_ch, in_a, in_b)
    ref.init_reference(tgen, tdis)
    with torch.no_grad():  # non-trivial running statistics, so eval mode is tested too
        for m in tgen.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    gen, dis = nets.CoVAE32x32(ch, in_a, in_b), nets.CoDis32x32(dis_ch)
    za, zb = jnp.zeros((2, 32, 32, in_a)), jnp.zeros((2, 32, 32, in_b))
    gtemp = jax.eval_shape(gen.init, jax.random.key(0), nets.with_xy(za), nets.with_xy(zb))
    dtemp = jax.eval_shape(dis.init, jax.random.key(0), za, zb)
    return (tgen, tdis, gen, dis, torch_io.from_state_dict(tgen.state_dict(), gtemp),
            torch_io.from_state_dict(tdis.state_dict(), dtemp))


def _images(n, c, seed):
    return np.random.RandomState(seed).uniform(-1, 1, (n, 32, 32, c)).astype(np.float32)


def test_xy_channels_are_the_reference_coordinates():
    assert np.array_equal(nhwc(ref.xy_image(32)[None])[0], nets.xy_channels(1)[0])
    xy = nets.xy_channels(1)[0]
    assert xy[5, 0, 1] == -1.0 and xy[31, 0, 0] == 15 / 16 and xy[3, 7, 0] == (3 - 16) / 16


@pytest.mark.parametrize("in_a,in_b", [(1, 1), (3, 1)])
def test_generator_train_mode_outputs_codes_and_running_stats(in_a, in_b):
    tgen, _, gen, _, gvars, _ = _pair(8, 8, in_a, in_b)
    x_a, x_b = _images(3, in_a, 1), _images(3, in_b, 2)
    eps = np.random.RandomState(3).randn(6, 1, 1, 64).astype(np.float32)
    tgen.train()
    with torch.no_grad():
        t_out = tgen(ref.with_xy(nchw(x_a)), ref.with_xy(nchw(x_b)),
                     nchw(eps))
    out, updated = jax.jit(lambda v, a, b, e: gen.apply(v, a, b, e, train=True, mutable=["batch_stats"]))(
        gvars, nets.with_xy(x_a), nets.with_xy(x_b), eps)
    for ours, theirs in zip(out[:4], t_out[:4]):
        assert rel_err(ours, nhwc(theirs)) < 1e-5
    mu, sd = t_out[4][0]
    assert rel_err(out[4], nhwc(mu)) < 1e-5 and rel_err(out[5], nhwc(sd)) < 1e-5
    stats = torch_io.to_state_dict({"params": gvars["params"], **updated})
    for key, value in tgen.state_dict().items():
        if "running" in key:
            assert rel_err(stats[key], value.numpy()) < 1e-5, key
        if key.endswith("num_batches_tracked"):
            assert int(stats[key]) == int(value) == 1


def test_generator_eval_translation_uses_running_stats_and_the_mean():
    tgen, _, gen, _, gvars, _ = _pair(8, 8)
    x = _images(2, 1, 4)
    tgen.eval()
    with torch.no_grad():
        want = tgen.translate_a2b(ref.with_xy(nchw(x)))
    got = jax.jit(lambda v, x: gen.apply(v, x, "A", "B", False, method="translate"))(gvars, nets.with_xy(x))
    assert rel_err(got, nhwc(want)) < 1e-5


def test_discriminator_heads_features_and_dropout_masks():
    _, tdis, _, dis, _, dvars = _pair(8, 8)
    x_a, x_b = _images(3, 1, 5), _images(3, 1, 6)
    keep = [np.asarray(m) for m in nets.dropout_masks(jax.random.key(1), 6, 8)]
    keep_a = [np.asarray(m) for m in nets.dropout_masks(jax.random.key(2), 3, 8)]
    tdis.train()
    with torch.no_grad():
        t_res, t_h3a, t_h3b = tdis(nchw(x_a), nchw(x_b), [nchw(k) for k in keep])
        t_cls = tdis.classify_a(nchw(x_a), [nchw(k) for k in keep_a])
        tdis.eval()
        t_cls_b = tdis.classify_b(nchw(x_b))
    forward = jax.jit(dis.apply)
    res, h3a, h3b = forward(dvars, x_a, x_b, keep)
    assert res.shape == (6, 2) and h3a.shape == (3, 2, 2, 64)
    assert rel_err(res, t_res.numpy()) < 1e-5
    assert rel_err(h3a, nhwc(t_h3a)) < 1e-5 and rel_err(h3b, nhwc(t_h3b)) < 1e-5
    classify = jax.jit(lambda v, x, d, k: dis.apply(v, x, d, k, method="classify"), static_argnums=2)
    assert rel_err(classify(dvars, x_a, "A", keep_a), t_cls.numpy()) < 1e-5
    assert rel_err(classify(dvars, x_b, "B", None), t_cls_b.numpy()) < 1e-5
    # the masks matter: another draw changes the real/fake logits
    other = [np.asarray(m) for m in nets.dropout_masks(jax.random.key(9), 6, 8)]
    assert rel_err(forward(dvars, x_a, x_b, other)[0], t_res.numpy()) > 1e-3


def test_state_dict_names_are_version_02_ones_and_shared_layers_exist_once():
    tgen, tdis, _, _, gvars, dvars = _pair(96, 64)
    gen_keys = set(torch_io.to_state_dict(gvars))
    assert gen_keys == set(tgen.state_dict())
    assert {"g_en_conv1.model.0.weight", "g_en_conv1.model.1.running_var", "g_en_conv1.model.2.bias",
            "g_vae.en_sigma.bias", "g_de_conv3_b.model.0.weight", "de_conv4_a.bias"} <= gen_keys
    # affine-free BN: statistics only; Bias2d is the block's learned bias
    assert set(gvars["params"]["g_en_conv1"]) == {"model_0", "model_2"}
    assert set(gvars["batch_stats"]["g_en_conv1"]["model_1"]) == {"mean", "var", "num_batches_tracked"}
    count = lambda tree: sum(int(np.prod(np.shape(v))) for v in jax.tree.leaves(tree))
    assert count(gvars["params"]) == sum(p.numel() for p in tgen.parameters())
    assert set(gvars["params"]) == {"g_en_conv0_a", "g_en_conv0_b", "g_en_conv1", "g_en_conv2",
                                    "g_en_conv3", "g_vae", "g_de_conv0", "g_de_conv1", "g_de_conv2",
                                    "g_de_conv3_a", "g_de_conv3_b", "de_conv4_a", "de_conv4_b"}
    assert set(torch_io.to_state_dict(dvars)) == set(tdis.state_dict())
    assert set(dvars["params"]) == {"conv0_a", "conv0_b", "conv1", "conv2", "conv3", "conv4", "conv_cl"}


def test_affine_free_batchnorm_matches_torch_train_and_eval():
    x = np.random.RandomState(0).randn(4, 5, 5, 3).astype(np.float32) * 2 + 1
    tbn = torch.nn.BatchNorm2d(3, affine=False)
    bn = layers.BatchNorm(affine=False)
    variables = bn.init(jax.random.key(0), x)
    assert "params" not in variables or not variables["params"]
    y, upd = bn.apply(variables, x, True, mutable=["batch_stats"])
    with torch.no_grad():
        ty = tbn.train()(nchw(x))
    assert rel_err(y, nhwc(ty)) < 1e-5
    assert rel_err(upd["batch_stats"]["var"], tbn.running_var.numpy()) < 1e-6
    assert rel_err(upd["batch_stats"]["mean"], tbn.running_mean.numpy()) < 1e-6
    with torch.no_grad():
        te = tbn.eval()(nchw(x))
    assert rel_err(bn.apply(upd, x, False), nhwc(te)) < 1e-5


def test_version_02_gen_file_loads_without_torch_and_translates_equal_to_torch(tmp_path):
    """A `*_gen_XXXXXXXX.pkl` as version_02 saves it (one state_dict; PyTorch 0.3 had no
    `num_batches_tracked`), read through the method's loader."""
    from configs import unit as unit_config
    from unpaired import methods
    from unpaired.methods.translation import TranslationRequest

    tgen, _, _, _, _, _ = _pair(8, 8)
    legacy = {k: v for k, v in tgen.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(legacy, tmp_path / "mnist2usps_gen_00000100.pkl")
    config = unit_config.get_config("mnist2usps")
    config.gen_ch = config.dis_ch = 8
    method = methods.build(config)
    params, model_state, served = method.load_official(
        str(tmp_path / "mnist2usps_gen_00000100.pkl"), TranslationRequest(direction="AtoB"))
    assert served.direction == "AtoB"
    x = _images(2, 1, 7)
    tgen.eval()
    with torch.no_grad():
        want = tgen.translate_a2b(ref.with_xy(nchw(x)))
    assert rel_err(jax.jit(method.translate, static_argnums=2)(params, x, "AtoB", model_state),
                   nhwc(want)) < 1e-5
    exported = method.official_state_dict(params, model_state)
    assert set(exported) == set(tgen.state_dict())
    [gen_file] = method.export_official(params, model_state, str(tmp_path / "out"))
    assert os.path.basename(gen_file) == "gen.pkl"
    reloaded = torch.load(gen_file, weights_only=True)  # a plain state_dict torch reads
    assert set(reloaded) == set(tgen.state_dict())
    assert all(np.array_equal(exported[k], v.numpy()) for k, v in legacy.items())
    config.gen_ch = 6
    with pytest.raises(torch_io.StateDictMismatchError, match=r"mnist2usps_gen_00000100\.pkl: key .* has shape"):
        methods.build(config).load_official(str(tmp_path / "mnist2usps_gen_00000100.pkl"),
                                            TranslationRequest(direction="AtoB"))
