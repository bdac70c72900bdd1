"""The seed's shared-weight UNIT form (NIPS-2017 version_02 idea on the master networks):
shared encoder/decoder residual blocks and shared high-level D layers, stored once."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import unit as unit_config
from unpaired import config_validation, methods

from tests.helpers import sized_config

SIZE = 8


def shared_config(**overrides):
    config = unit_config.get_config("digits")
    config.gen_dim, config.gen_n_res, config.dis_dim = 2, 2, 2
    config.dis_n_layer, config.dis_num_scales = 2, 2
    config.gen_shared_blocks, config.dis_shared_layers = 1, 1
    return sized_config(config, SIZE, 2, overrides)


@pytest.fixture(scope="module")
def built():
    method = methods.build(shared_config())
    return method, method.create_state(jax.random.key(0))


def _count(tree):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def test_shared_parameters_exist_once(built):
    method, state = built
    assert set(state.params) == {"gen_a", "gen_b", "gen_shared", "dis_a", "dis_b", "dis_shared"}
    assert method.groups == {"gen": ("gen_a", "gen_b", "gen_shared"),
                             "dis": ("dis_a", "dis_b", "dis_shared")}
    unshared = methods.build(shared_config(gen_shared_blocks=0, dis_shared_layers=0))
    plain = unshared.create_state(jax.random.key(0)).params
    # Sharing removes exactly one copy of the shared layers: private + shared + private.
    gen_saved = _count(plain["gen_a"]) + _count(plain["gen_b"]) - (
        _count(state.params["gen_a"]) + _count(state.params["gen_b"]) + _count(state.params["gen_shared"]))
    assert gen_saved == _count(state.params["gen_shared"]) > 0
    dis_saved = _count(plain["dis_a"]) + _count(plain["dis_b"]) - (
        _count(state.params["dis_a"]) + _count(state.params["dis_b"]) + _count(state.params["dis_shared"]))
    assert dis_saved == _count(state.params["dis_shared"]) > 0
    # The shared blocks are the last encoder / first decoder residual blocks.
    assert set(state.params["gen_shared"]) == {"enc", "dec"}
    assert "model_1" not in state.params["gen_a"]["enc"]["model_3"]
    assert set(state.params["dis_shared"]["cnns_0"]) == {"1", "2"}
    assert set(state.params["dis_a"]["cnns_0"]) == {"0"}
    assert set(state.opt_state) == {"gen", "dis"}


def test_shared_parameters_get_gradients_from_both_domains(built):
    method, state = built
    rng = np.random.RandomState(0)
    x = {d: jnp.asarray(rng.uniform(-1, 1, (2, SIZE, SIZE, 1)), jnp.float32) for d in "ab"}

    @jax.jit
    def grads(params):
        recon = lambda d: lambda p: jnp.mean(jnp.square(
            method.decode(f"gen_{d}", p, method.encode(f"gen_{d}", p, x[d]))))
        judge = lambda d: lambda p: sum(jnp.mean(o) for o in method.discriminate(f"dis_{d}", p, x[d]))
        return {d: (jax.grad(recon(d))(params), jax.grad(judge(d))(params)) for d in "ab"}

    g = grads(state.params)
    norm = lambda t: float(sum(jnp.sum(jnp.abs(v)) for v in jax.tree.leaves(t)))
    for d, other in (("a", "b"), ("b", "a")):
        gen_grad, dis_grad = g[d]
        assert norm(gen_grad["gen_shared"]["enc"]) > 0 and norm(gen_grad["gen_shared"]["dec"]) > 0, d
        assert norm(dis_grad["dis_shared"]) > 0, d
        assert norm(gen_grad[f"gen_{other}"]) == 0 and norm(dis_grad[f"dis_{other}"]) == 0, d
    # The two domains pull the shared block in different directions: both contribute.
    diff = jax.tree.map(lambda u, v: u - v, g["a"][0]["gen_shared"], g["b"][0]["gen_shared"])
    assert norm(diff) > 0


def test_both_translation_streams_run(built):
    method, state = built
    x = jnp.asarray(np.random.RandomState(1).uniform(-1, 1, (2, SIZE, SIZE, 1)), jnp.float32)
    vis = jax.jit(method.visuals)(state.params, {"A": x, "B": -x})
    for name in method.visual_names:
        assert vis[name].shape == (2, SIZE, SIZE, 1) and bool(jnp.all(jnp.isfinite(vis[name])))
    ab = method.translate(state.params, x, "AtoB")
    # Same stream, one jitted and one not: equal up to float32 rounding (a wrong stream is off by ~0.1).
    np.testing.assert_allclose(np.asarray(ab), np.asarray(vis["x_ab"]), rtol=1e-5, atol=1e-5)
    assert not np.allclose(np.asarray(vis["x_ab"]), np.asarray(vis["x_a_recon"]))


def test_shared_counts_are_validated_and_official_files_refused(built, tmp_path):
    method, _ = built
    for key, value in (("gen_shared_blocks", 3), ("dis_shared_layers", 2), ("gen_shared_blocks", -1)):
        with pytest.raises(config_validation.ConfigError, match=f"config.{key}"):
            config_validation.validate(shared_config(**{key: value}))
    with pytest.raises(ValueError, match="gen_shared_blocks=0"):
        method.import_weights(str(tmp_path / "gen_00000001.pt"), ("gen_a",))
