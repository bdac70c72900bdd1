"""Official UNIT weight files: `gen_XXXXXXXX.pt` / `dis_XXXXXXXX.pt` ({'a': ..., 'b': ...})
written by real torch from the re-expression, read without torch, translated equal to torch."""

import jax
import numpy as np
import pytest
import torch

from configs import unit as unit_config
from unpaired import methods, torch_io, translate
from unpaired.methods.translation import TranslationRequest
from unpaired.torch_reference import unit as ref

from tests.helpers import nchw, nhwc, rel_err

SIZE = 16


def tiny_config():
    config = unit_config.get_config("digits")
    config.input_dim_a, config.input_dim_b = 1, 3  # different channels catch a swapped a/b
    config.gen_dim, config.gen_n_res, config.dis_dim, config.dis_n_layer = 4, 2, 4, 2
    config.data.image_size = config.data.crop_size = config.data.load_size = SIZE
    return config


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """gen_00001000.pt (with PyTorch-0.3 InstanceNorm buffers, as released models have) and
    dis_00001000.pt, saved by torch.save the way UNIT_Trainer.save does."""
    config = tiny_config()
    nets = ref.build_unit(1, 3, config.gen_dim, config.gen_n_downsample, config.gen_n_res,
                          config.dis_dim, config.dis_n_layer, config.dis_num_scales, seed=3)
    for name in ("gen_a", "gen_b"):  # non-zero biases and LN betas, so a dropped key shows
        with torch.no_grad():
            for key, p in nets[name].named_parameters():
                if key.endswith(("bias", "beta")):
                    p.normal_(0, 0.1)
    folder = tmp_path_factory.mktemp("unit_weights")
    gen = {d: nets[f"gen_{d}"].state_dict() for d in "ab"}
    legacy = {d: dict(sd) for d, sd in gen.items()}
    for d in "ab":
        for key in list(gen[d]):
            if key.startswith("enc.model.0.conv."):
                stem = key.rsplit(".", 2)[0]
                legacy[d][f"{stem}.norm.running_mean"] = torch.zeros(config.gen_dim)
                legacy[d][f"{stem}.norm.running_var"] = torch.ones(config.gen_dim)
    torch.save(legacy, folder / "gen_00001000.pt")
    torch.save({d: nets[f"dis_{d}"].state_dict() for d in "ab"}, folder / "dis_00001000.pt")
    return config, nets, folder


def test_gen_file_loads_and_translates_equal_to_torch_both_ways(files):
    config, nets, folder = files
    method = methods.build(config)
    trainer = ref.UNITReference(nets, {**{k: config[k] for k in (
        "gan_w", "recon_x_w", "recon_kl_w", "recon_x_cyc_w", "recon_kl_cyc_w", "lr", "beta1",
        "beta2", "weight_decay", "step_size", "gamma")}})
    rng = np.random.RandomState(0)
    for direction, in_nc in (("AtoB", 1), ("BtoA", 3)):
        params, model_state, served = method.load_official(
            str(folder / "gen_00001000.pt"), TranslationRequest(direction=direction))
        assert served.direction == direction
        x = rng.uniform(-1, 1, (2, SIZE, SIZE, in_nc)).astype(np.float32)
        with torch.no_grad():
            want = nhwc(trainer.translate(nchw(x), a2b=direction == "AtoB"))
        got = method.translate(params, x, direction, model_state)
        assert rel_err(got, want) < 1e-5, direction
        # and through unpaired.translate, as `launch.translate --checkpoint=gen_*.pt` does
        gen = translate.load_generator(str(folder / "gen_00001000.pt"), config=config,
                                       direction=direction)
        assert (gen.in_channels, gen.out_channels) == (in_nc, 4 - in_nc)
        assert rel_err(gen.apply(x), want) < 1e-5


def test_files_initialise_networks_and_export_back(files):
    config, nets, folder = files
    method = methods.build(config)
    gen = method.import_weights(str(folder / "gen_00001000.pt"), ("gen_a", "gen_b"))
    dis = method.import_weights(str(folder / "dis_00001000.pt"), ("dis_b",))
    assert set(dis) == {"dis_b"}
    params = {**{n: v["params"] for n, v in gen.items()}, "dis_a": None,
              "dis_b": dis["dis_b"]["params"]}
    exported = method.official_pair(params, "gen")
    for d in "ab":
        theirs = nets[f"gen_{d}"].state_dict()
        assert set(exported[d]) == set(theirs)  # legacy buffers are not written back
        for key, value in theirs.items():
            np.testing.assert_array_equal(exported[d][key], value.numpy())
    for key, value in torch_io.to_state_dict(dis["dis_b"]).items():
        np.testing.assert_array_equal(value, nets["dis_b"].state_dict()[key].numpy())
    with pytest.raises(ValueError, match="gen_a, gen_b"):
        method.import_weights(str(folder / "gen_00001000.pt"), ("dis_a",))


def test_export_official_writes_files_torch_loads_as_the_reference_saves_them(files, tmp_path):
    """The `unpaired.export` hook: gen.pt / dis.pt as {'a': state_dict, 'b': state_dict}."""
    config, nets, folder = files
    method = methods.build(config)
    gen = method.import_weights(str(folder / "gen_00001000.pt"), ("gen_a", "gen_b"))
    dis = method.import_weights(str(folder / "dis_00001000.pt"), ("dis_a", "dis_b"))
    params = {n: v["params"] for n, v in {**gen, **dis}.items()}
    written = method.export_official(params, {}, str(tmp_path / "out"))
    assert [p.rsplit("/", 1)[-1] for p in written] == ["gen.pt", "dis.pt"]
    for path, kind in zip(written, ("gen", "dis")):
        loaded = torch.load(path, weights_only=True)
        assert set(loaded) == {"a", "b"}
        for d in "ab":
            theirs = nets[f"{kind}_{d}"].state_dict()
            assert set(loaded[d]) == set(theirs)
            for key, value in theirs.items():
                np.testing.assert_array_equal(loaded[d][key].numpy(), value.numpy())
            nets[f"{kind}_{d}"].load_state_dict(loaded[d])  # strict: every key, every shape
    again = method.load_official(written[0], TranslationRequest(direction="AtoB"))[0]
    for name in ("gen_a", "gen_b"):
        for a, b in zip(jax.tree.leaves(again[name]), jax.tree.leaves(params[name])):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_files_that_do_not_fit_name_the_keys_and_the_file(files, tmp_path):
    config, nets, folder = files
    method = methods.build(config)
    bad = {d: dict(nets[f"gen_{d}"].state_dict()) for d in "ab"}
    del bad["b"]["dec.model.2.norm.gamma"]
    bad["b"]["dec.model.9.conv.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "gen_bad.pt")
    with pytest.raises(torch_io.StateDictMismatchError,
                       match=r"gen_bad.pt\['b'\].*dec\.model\.2\.norm\.gamma.*dec\.model\.9\.conv\.weight"):
        method.load_official(str(tmp_path / "gen_bad.pt"), TranslationRequest(direction="AtoB"))
    torch.save(nets["gen_a"].state_dict(), tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="plain.pt is not a UNIT gen/dis file"):
        method.load_official(str(tmp_path / "plain.pt"), TranslationRequest(direction="AtoB"))
    wide = tiny_config()
    wide.gen_dim = 8  # the architecture of the config does not fit the file
    with pytest.raises(torch_io.StateDictMismatchError, match=r"gen_00001000.pt\['a'\]: key .* has "
                       r"shape .*check config.input_dim_a/b, gen_dim"):
        methods.build(wide).load_official(str(folder / "gen_00001000.pt"),
                                          TranslationRequest(direction="AtoB"))
    assert jax.devices()  # the reads above ran without importing torch in the library


def test_init_from_a_gen_file_takes_both_generators(files):
    from unpaired import init_from
    config, nets, folder = files
    config = tiny_config()
    config.init_from = str(folder / "gen_00001000.pt")
    config.init_networks = "gen_a,gen_b"
    method = methods.build(config)
    state, record = init_from.apply_init(method, config, method.create_state(jax.random.key(0)))
    assert set(record.networks) == {"gen_a", "gen_b"}
    for d in "ab":
        got = torch_io.to_state_dict({"params": state.params[f"gen_{d}"]})
        for key, value in nets[f"gen_{d}"].state_dict().items():
            np.testing.assert_array_equal(got[key], value.numpy())
