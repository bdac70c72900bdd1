"""UNIT version_02's weight sharing and config: the shared layers exist once in the TrainState,
get gradients from both domains, both translation streams run; bad values name their key."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import unit as unit_config
from unpaired import methods
from unpaired.config_checks import ConfigError

from tests.helpers import sized_config

SIZE = 8


def v02_config(**overrides):
    config = unit_config.get_config("digits_v02")
    config.gen_dim, config.dis_dim = 2, 2
    config.gen_n_enc_front_blk = config.gen_n_gen_front_blk = 2
    config.dis_n_shared_layer = 1
    return sized_config(config, SIZE, 2, overrides)


@pytest.fixture(scope="module")
def built():
    method = methods.build(v02_config())
    return method, method.create_state(jax.random.key(0))


def _leaves(tree):
    return {jax.tree_util.keystr(p): x for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_shared_layers_exist_once(built):
    method, state = built
    assert type(method).__name__ == "UNITv02"
    assert set(state.params) == {"gen", "dis"} and set(state.opt_state) == {"gen", "dis"}
    gen, dis = state.params["gen"], state.params["dis"]
    assert set(gen) == {"encode_A", "encode_B", "enc_shared", "dec_shared", "decode_A", "decode_B"}
    assert set(dis) == {"model_A", "model_B", "model_S"}
    # One copy: no private layer holds an array equal in shape and value to a shared one.
    shared = [x for k, x in _leaves(gen).items() if "_shared" in k] + list(_leaves(dis["model_S"]).values())
    private = [x for k, x in _leaves(gen).items() if "_shared" not in k] + [
        x for k, x in _leaves(dis).items() if "model_S" not in k]
    assert shared and not any(a.shape == b.shape and np.array_equal(a, b)
                              for a in shared for b in private)
    # The shared code: enc_shared's n blocks (2 convs each) and dec_shared's, once.
    assert len(gen["enc_shared"]) == 1 and len(gen["dec_shared"]) == 1
    assert set(gen["enc_shared"]["0"]) == {"model_0", "model_3"}
    # The decoders start from dec_shared's output; per-domain layers follow.
    assert set(gen["decode_A"]) == {"0", "1", "2"} and set(dis["model_S"]) == {"0", "1"}
    counts = {n: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(state.params[n])) for n in ("gen", "dis")}
    more = methods.build(v02_config(gen_n_enc_shared_blk=2, dis_n_shared_layer=2))
    assert more.network_template("gen")["params"]["enc_shared"].keys() == {"0", "1"}
    assert counts["gen"] > 0 and counts["dis"] > 0


def _norm(tree):
    return float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree.leaves(tree)))


def test_shared_layers_get_gradients_from_both_domains(built):
    method, state = built
    rng = np.random.RandomState(0)
    x = jnp.asarray(rng.uniform(-1, 1, (2, SIZE, SIZE, 1)), jnp.float32)

    @jax.jit
    def all_grads(params):  # one compile for both streams and both discriminators
        out = {}
        for direction, src in (("AtoB", "A"), ("BtoA", "B")):
            out[direction] = jax.grad(lambda p: jnp.mean(method.translate(p, x, direction) ** 2))(params)
            out[src] = jax.grad(lambda p: jnp.mean(method.discriminate(src, p, x)))(params)
        return out

    grads = all_grads(state.params)
    for direction, src, dst in (("AtoB", "A", "B"), ("BtoA", "B", "A")):
        g = grads[direction]["gen"]
        assert _norm(g["enc_shared"]) > 0 and _norm(g["dec_shared"]) > 0, direction
        assert _norm(g[f"encode_{src}"]) > 0 and _norm(g[f"decode_{dst}"]) > 0, direction
        assert _norm(g[f"encode_{dst}"]) == 0 and _norm(g[f"decode_{src}"]) == 0, direction
        dgrads = grads[src]["dis"]
        assert _norm(dgrads["model_S"]) > 0 and _norm(dgrads[f"model_{src}"]) > 0
        assert _norm(dgrads[f"model_{dst}"]) == 0


def test_both_streams_run_and_a_step_updates_the_shared_layers(built):
    method, state = built
    rng = np.random.RandomState(1)
    batch = {d: jnp.asarray(rng.uniform(-1, 1, (2, SIZE, SIZE, 1)), jnp.float32) for d in "AB"}
    visuals = method.visuals(state.params, batch)
    assert set(visuals) == set(method.visual_names)
    for name in ("x_ab", "x_ba", "x_a_recon", "x_b_recon"):
        assert visuals[name].shape == (2, SIZE, SIZE, 1) and bool(jnp.all(jnp.abs(visuals[name]) <= 1))
    assert not np.allclose(visuals["x_ab"], visuals["x_a_recon"])  # different decoders
    new, metrics = jax.jit(method.train_step)(state, batch)
    assert all(np.isfinite(float(v)) for v in metrics.values())
    for net, part in (("gen", "enc_shared"), ("gen", "dec_shared"), ("dis", "model_S")):
        before, after = state.params[net][part], new.params[net][part]
        assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after))), part
    # Inference is deterministic (no noise), training draws it from the state key.
    again = method.translate(state.params, batch["A"], "AtoB")
    np.testing.assert_array_equal(again, visuals["x_ab"])


@pytest.mark.parametrize("key,value,message", [
    ("arch", "v3", "config.arch"),
    ("gen_name", "COCOResGen3", "config.gen_name"),
    ("dis_name", "COCOMsDis", "config.dis_name"),
    ("gan_type", "lsgan", "config.gan_type"),
    ("gen_n_gen_front_blk", 3, "config.gen_n_gen_front_blk"),
    ("gen_n_enc_shared_blk", -1, "config.gen_n_enc_shared_blk"),
    ("dis_n_shared_layer", -1, "config.dis_n_shared_layer"),
    ("gen_res_dropout_ratio", 0.5, "config.gen_res_dropout_ratio"),
    ("vgg_w", 1.0, "config.vgg_w"),
])
def test_bad_values_name_their_key(key, value, message):
    config = v02_config(**{key: value})
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        methods.get_method_class("unit").validate_config(config)


def test_presets_validate_and_build():
    for preset in ("folder_v02", "digits_v02"):
        config = unit_config.get_config(preset)
        methods.get_method_class("unit").validate_config(config)
        assert config.arch == "version_02" and config.gan_w == 10 and config.recon_x_w == 100
    config = unit_config.get_config("folder_v02")
    method = methods.build(config)
    gen = method.network_template("gen")["params"]
    assert gen["encode_A"]["0"]["model_0"]["kernel"].shape == (7, 7, 3, 64)
    assert gen["enc_shared"]["0"]["model_0"]["kernel"].shape == (3, 3, 256, 256)
    assert method.network_template("dis")["params"]["model_S"]["4"]["kernel"].shape == (1, 1, 2048, 1)  # 64 -> 128 (front), 256 .. 2048 (shared)
