"""unpaired.translate and `python -m launch.translate`: workdir and .pth checkpoints, any size/mode.

Networks are tiny (resnet_6blocks, ngf 4) with a large init gain so outputs span the
whole [-1, 1] range and a wrong pixel conversion or crop shows. "Pixel-exact" compares
the written PNGs with the same generator applied directly (same jitted program on a
batch of one), converted by the same tensor2im.
"""

from __future__ import annotations

import html.parser
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
import torch
from PIL import Image

from configs import cyclegan as cyclegan_configs
from unpaired import methods, torch_io
from unpaired import translate as tr
from unpaired.checkpoint import CheckpointMismatchError, Checkpointer
from unpaired.data.decode import load_image
from unpaired.data.errors import DataError
from unpaired.data.transforms import to_unit_range
from unpaired.nets import cyclegan as nets

from tests.helpers import nchw, nhwc, rel_err
from unpaired.torch_reference import cyclegan as ref

REPO = Path(__file__).resolve().parents[1]
GAIN = 0.5
TINY = dict(netG="resnet_6blocks", ngf=4, norm="instance", no_dropout=True, input_nc=3, output_nc=3)


def _tiny_config():
    c = cyclegan_configs.get_config("folder")
    c.netG, c.ngf, c.ndf, c.init_gain = "resnet_6blocks", 4, 4, GAIN
    c.data.crop_size = 16
    c.pool_size = 2
    return c


def _rgb(h, w, seed):
    rng = np.random.RandomState(seed)
    base = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))
    return np.clip(base + rng.randint(-60, 60, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A folder tree: odd sizes, a valid size, grayscale, RGBA, 16-bit, a.jpg beside a.png."""
    root = tmp_path_factory.mktemp("images")
    (root / "sub").mkdir()
    Image.fromarray(_rgb(53, 37, 0)).save(root / "a.png")                   # 37x53 (W x H)
    Image.fromarray(_rgb(53, 37, 1)).save(root / "a.jpg", quality=95)       # same stem
    Image.fromarray(_rgb(32, 32, 2)).save(root / "sub" / "valid.png")       # already valid
    Image.fromarray(_rgb(53, 37, 3)[..., 0]).save(root / "sub" / "gray.png")  # mode L
    rgba = np.concatenate([_rgb(53, 37, 4), np.full((53, 37, 1), 128, np.uint8)], -1)
    Image.fromarray(rgba, "RGBA").save(root / "rgba.png")
    sixteen = (np.linspace(0, 65535, 37 * 53).reshape(53, 37)).astype(np.uint16)
    Image.fromarray(sixteen).save(root / "sub" / "deep.png")                # mode I;16
    (root / "notes.txt").write_text("not an image")
    return root


def _pth_generator(path, **fields):
    """A generator from a reference .pth, the architecture given as config fields."""
    config = _tiny_config()
    for key, value in fields.items():
        config[key] = value
    return tr.load_generator(path, config=config)


def _random_state(method, seed):
    """A TrainState of `method` with N(0, GAIN) weights, made without compiling the inits.

    (Compiling the reference init of four networks takes ~10 s on CPU; translate only
    needs the layout and some weights.)
    """
    rng = np.random.RandomState(seed)
    template = jax.eval_shape(method.create_state, jax.random.key(0))

    def fill(leaf):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return jax.random.key(seed)
        return jax.numpy.asarray(rng.normal(0, GAIN, leaf.shape).astype(leaf.dtype))

    return jax.tree.map(fill, template)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A workdir holding one CycleGAN checkpoint (step 7), as the training loop writes it."""
    wd = tmp_path_factory.mktemp("run")
    config = _tiny_config()
    method = methods.build(config)
    state = _random_state(method, 3).replace(step=jax.numpy.asarray(7, jax.numpy.int32))
    meta = {"config": config.to_dict(), "method": config.method, "data_step": 7, "version": "test"}
    with Checkpointer.for_workdir(wd, async_save=False) as ckpt:
        ckpt.save(7, state, meta)
    return wd, method, state


@pytest.fixture(scope="module")
def pth(tmp_path_factory):
    """A reference generator's state_dict written by torch.save, and the torch module."""
    torch.manual_seed(0)
    net = ref.define_G(3, 3, 4, "resnet_6blocks", "instance", False)
    ref.init_weights(net, GAIN, torch.Generator().manual_seed(0))
    net.eval()
    path = tmp_path_factory.mktemp("pth") / "latest_net_G.pth"
    torch.save(net.state_dict(), path)
    return path, net


def _read(path) -> np.ndarray:
    with Image.open(path) as img:
        arr = np.asarray(img)
    return arr[..., None] if arr.ndim == 2 else arr


def _direct(apply, src, channels, multiple=4, mode="pad"):
    """What translating `src` must give: prepare, apply on a batch of one, tensor2im, crop."""
    img = load_image(src, channels)
    x = tr.prepare_input(img, multiple, mode)
    y = np.asarray(apply(x[None]))[0]
    return tr.finish_output(y, img.size, mode)


def test_workdir_folder_matches_generator_both_directions(workdir, images, tmp_path):
    wd, method, state = workdir
    out = tmp_path / "AtoB"
    gen = tr.load_generator(wd / "checkpoints" / "7")  # default direction AtoB
    assert "step 7" in gen.source and gen.size_multiple == 4
    rows = tr.translate_path(gen, images, out)
    assert [r.output for r in rows] == [
        "a_jpg.png", "a_png.png", "rgba.png", "sub/deep.png", "sub/gray.png", "sub/valid.png"]
    for direction, files in (("AtoB", rows), ("BtoA", None)):
        if files is None:  # BtoA on one file (each direction and shape costs a compile)
            gen = tr.load_generator(wd, direction=direction)
            files = tr.translate_path(gen, images / "sub" / "gray.png", tmp_path / direction)
            out = tmp_path / direction
        direct = jax.jit(lambda p, s, x, d=direction: method.translate(p, x, d, s))
        for r in files:
            expected = _direct(lambda x: direct(state.params, state.model_state, x), r.source, 3)
            got = _read(out / r.output)
            assert got.shape == expected.shape == (r.size[1], r.size[0], 3), r.output
            np.testing.assert_array_equal(got, expected, err_msg=f"{direction} {r.output}")
            with Image.open(out / r.input_copy) as copy:
                assert copy.size == r.size and copy.mode == "RGB"  # grayscale in, RGB model
    a_to_b = _read(tmp_path / "AtoB" / "sub" / "gray.png")
    b_to_a = _read(tmp_path / "BtoA" / "gray.png")
    assert np.abs(a_to_b.astype(int) - b_to_a).max() > 10  # G_A and G_B really differ
    assert a_to_b.std() > 20  # outputs span a real range: truncation and crops are tested


def test_workdir_paths_and_steps(workdir, images):
    wd, _, _ = workdir
    assert tr.resolve_workdir(wd / "checkpoints") == (wd, None)
    assert tr.resolve_workdir(wd / "checkpoints" / "7") == (wd, 7)
    assert tr.resolve_workdir(wd, 7) == (wd, 7)
    with pytest.raises(tr.TranslateError, match="step 7 but step=3"):
        tr.resolve_workdir(wd / "checkpoints" / "7", step=3)
    with pytest.raises(tr.TranslateError, match=str(images)):
        tr.load_generator(images)  # a folder without checkpoints/
    with pytest.raises(Exception, match=r"step 5 .*available: \[7\]"):
        tr.load_generator(wd, step=5)
    leaf = r"params/G_A/model_1/.*\(7,7,3,4\).*\(7,7,3,8\)"  # checkpoint vs model
    with pytest.raises(CheckpointMismatchError, match=leaf):
        tr.load_workdir_state(wd, overrides={"ngf": 8})
    method, state, config = tr.load_workdir_state(wd, overrides={"dtype": "bfloat16"})
    assert config.dtype == "bfloat16" and config.ngf == 4 and int(state.step) == 7
    assert set(state.params) == {"G_A", "G_B", "D_A", "D_B"} and not state.opt_state


def test_pth_file_matches_generator_and_torch(pth, images, tmp_path):
    path, net = pth
    gen = tr.load_generator(path, config=_tiny_config())
    src = images / "a.png"
    rows = tr.translate_path(gen, src, tmp_path)
    assert [(r.name, r.output, r.input_copy) for r in rows] == [("a.png", "a.png", "inputs/a.png")]
    got = _read(tmp_path / "a.png")
    assert got.shape == (53, 37, 3) and got.std() > 20
    module = nets.define_G("resnet_6blocks", 3, 4, "instance", False)
    template = jax.eval_shape(module.init, jax.random.key(0), np.zeros((1, 16, 16, 3), np.float32))
    variables = torch_io.from_state_dict(torch_io.load_pth(path), template)
    apply = jax.jit(lambda v, x: module.apply(v, x, False))
    np.testing.assert_array_equal(got, _direct(lambda x: apply(variables, x), src, 3))
    # The reference's own forward pass, converted the same way. Float32 rounding differs
    # (relative 1e-6), so truncation may move a value by one level, never more.
    x = tr.prepare_input(load_image(src, 3), 4, "pad")
    with torch.no_grad():
        theirs = nhwc(net(nchw(x[None])))[0]
    ours = np.asarray(apply(variables, x[None]))[0]
    assert np.abs(ours - theirs).max() < 1e-4
    diff = np.abs(got.astype(int) - tr.finish_output(theirs, (37, 53), "pad"))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.1


@pytest.fixture(scope="module")
def gen(pth):
    """One generator for the tests below, so they share its compiled shapes."""
    return _pth_generator(pth[0], **TINY)


@pytest.mark.parametrize("mode", ["pad", "resize"])
def test_odd_sizes_come_back_at_their_size(gen, images, tmp_path, mode):
    rows = tr.translate_path(gen, images, tmp_path, resize=mode)
    for r in rows:
        with Image.open(tmp_path / r.output) as img:
            assert img.size == r.size and img.mode == "RGB", r.output
    assert {r.size for r in rows} == {(37, 53), (32, 32)}


def test_grayscale_model_writes_grayscale(tmp_path, images):
    torch.manual_seed(1)
    net = ref.define_G(1, 1, 4, "resnet_6blocks", "instance", False)
    ref.init_weights(net, GAIN, torch.Generator().manual_seed(1))
    torch.save(net.state_dict(), tmp_path / "g.pth")
    gen = _pth_generator(tmp_path / "g.pth", **{**TINY, "input_nc": 1, "output_nc": 1})
    rows = tr.translate_path(gen, images / "rgba.png", tmp_path / "out")
    with Image.open(tmp_path / "out" / rows[0].output) as img:
        assert img.mode == "L" and img.size == (37, 53)
    with Image.open(tmp_path / "out" / rows[0].input_copy) as img:
        assert img.mode == "L"


def test_mismatched_pth_names_key_and_file(pth):
    path = pth[0]
    with pytest.raises(torch_io.StateDictMismatchError) as err:
        _pth_generator(path, **{**TINY, "netG": "resnet_9blocks"})
    assert str(path) in str(err.value) and "model.16.conv_block.1.weight" in str(err.value)
    with pytest.raises(torch_io.StateDictMismatchError) as err:
        _pth_generator(path, **{**TINY, "ngf": 8})
    assert str(path) in str(err.value) and "key 'model.1." in str(err.value)


def test_missing_paths_are_named(gen, tmp_path):
    missing = tmp_path / "no_such_dir" / "x.png"
    with pytest.raises(DataError, match=str(missing)):
        tr.translate_path(gen, missing, tmp_path / "out")
    with pytest.raises(tr.TranslateError, match=str(missing)):
        tr.load_generator(missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        tr.translate_path(gen, tmp_path / "empty", tmp_path / "out")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="bad.png"):
        tr.translate_path(gen, tmp_path / "bad.png", tmp_path / "out")
    Image.fromarray(_rgb(8, 8, 0)).save(tmp_path / "x.png")
    with pytest.raises(tr.TranslateError, match="would overwrite the input"):
        tr.translate_path(gen, tmp_path / "x.png", tmp_path)


class _Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src"):
                self.links.add(value)


def test_index_html_references_every_output_and_input(gen, images, tmp_path):
    out = tmp_path / "out dir#1"  # links must be URL-quoted
    rows = tr.translate_path(gen, images, out)
    parser = _Links()
    parser.feed((out / "index.html").read_text(encoding="utf-8"))
    expected = {r.output for r in rows} | {r.input_copy for r in rows}
    assert parser.links == expected and len(rows) == 6
    for link in parser.links:  # relative, and present
        assert not os.path.isabs(link) and (out / link).is_file()
    # The output folder inside the input folder is skipped on a second run.
    inner = images / "translated"
    try:
        tr.translate_path(gen, images, inner)
        again = tr.translate_path(gen, images, inner)
        assert len(again) == 6
    finally:
        import shutil
        shutil.rmtree(inner)


def test_output_names_are_unique():
    assert tr.output_names(["a.jpg", "a.png", "b.png", "sub/a.png"]) == [
        "a_jpg.png", "a_png.png", "b.png", "sub/a.png"]
    assert tr.output_names(["A.JPG", "a.png"]) == ["A_jpg.png", "a_png.png"]
    names = tr.output_names(["a.jpg", "a.png", "a_jpg.png", "a_jpg.PNG"])
    assert len({n.lower() for n in names}) == 4
    assert tr.inputs_dir_name(["x.png", "inputs/y.png"]) == "inputs_"
    assert tr.inputs_dir_name(["inputs.png"]) == "inputs"


def test_sizes_and_pixel_conversion():
    assert [tr.valid_size(n, 4, "pad") for n in (1, 4, 37, 53)] == [4, 4, 40, 56]
    assert [tr.valid_size(n, 4, "resize") for n in (1, 37, 53, 54)] == [4, 36, 52, 56]
    assert tr.valid_size(300, nets.SIZE_MULTIPLES["unet_256"], "pad") == 512
    assert tr.valid_size(300, nets.SIZE_MULTIPLES["unet_256"], "resize") == 256
    assert nets.SIZE_MULTIPLES["unet_128"] == 128
    y = np.array([-1.0, -0.5, 0.0, 0.999, 1.0, 1.5, np.nan], np.float32)
    np.testing.assert_array_equal(tr.tensor2im(y), [0, 63, 127, 254, 255, 255, 0])
    img = Image.fromarray(_rgb(5, 3, 0))
    x = tr.prepare_input(img, 4, "pad")
    assert x.shape == (8, 4, 3)
    # Cropped back exactly; tensor2im truncates, so even an identity net loses a level
    # on some pixels, as in the reference.
    expected = tr.tensor2im(to_unit_range(np.asarray(img)))
    np.testing.assert_array_equal(tr.finish_output(x, (3, 5), "pad"), expected)


def test_translate_arrays_batches_by_shape():
    calls = []

    def apply(x):
        calls.append(x.shape)
        return x * 2

    items = [(i, np.full((4 + 4 * (i % 2), 4, 1), i, np.float32)) for i in range(5)]
    out = dict(tr.translate_arrays(apply, items, batch_size=2))
    assert sorted(out) == list(range(5))
    for i, y in out.items():
        np.testing.assert_array_equal(y, items[i][1] * 2)
    assert sorted(calls) == [(2, 4, 4, 1)] * 2 + [(2, 8, 4, 1)]  # one batch size per shape


def test_command_line_end_to_end(pth, images, tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=os.environ.get("XLA_FLAGS", "--xla_backend_optimization_level=0"))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "launch.translate", f"--checkpoint={pth[0]}",
           f"--input={images / 'sub'}", f"--output={out}", "--config.netG=resnet_6blocks",
           "--config.ngf=4", "--batch_size=2"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "translated 3 image(s)" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "deep.png", "gray.png", "index.html", "inputs", "valid.png"]


def test_command_line_errors_end_with_the_message(pth, tmp_path, monkeypatch):
    """A mismatched .pth exits with status 1 and a message naming the file and key (in-process)."""
    from absl import flags

    from launch import translate as cli

    argv = ["translate", f"--checkpoint={pth[0]}", f"--input={tmp_path}", f"--output={tmp_path}",
            f"--config={REPO / 'configs' / 'cyclegan.py'}:folder",
            "--config.netG=resnet_6blocks", "--config.ngf=8"]
    monkeypatch.setattr(sys, "argv", argv)  # config_flags reads its overrides from sys.argv
    try:
        flags.FLAGS(argv)
        with pytest.raises(SystemExit) as exit_:
            cli.main(argv[:1])
    finally:
        flags.FLAGS.unparse_flags()
    message = str(exit_.value.code)
    assert message.startswith("error: ") and str(pth[0]) in message and "key 'model.1." in message


def test_target_and_code_are_resolved_by_the_method(workdir, pth):
    wd, _, _ = workdir
    assert tr.make_request(None, "1", "0.3, 0.7,0") == tr.TranslationRequest(None, 1, (0.3, 0.7, 0.0))
    assert tr.make_request("BtoA", "zebra", "") == tr.TranslationRequest("BtoA", "zebra", None)
    with pytest.raises(ValueError, match=r"--code='0\.3,x' must be comma-separated numbers"):
        tr.make_request(code="0.3,x")
    with pytest.raises(ValueError, match=r"--direction='up'"):
        tr.TranslationRequest(direction="up")
    # CycleGAN: --target=A (or 0) is BtoA, i.e. G_B; B (or 1) is AtoB.
    method = methods.build(_tiny_config())
    for target, direction in (("A", "BtoA"), (0, "BtoA"), ("B", "AtoB"), (1, "AtoB")):
        assert method.resolve_request(tr.TranslationRequest(target=target)).direction == direction
    assert method.resolve_request(tr.TranslationRequest()).direction == "AtoB"
    gen = tr.load_generator(wd, request=tr.TranslationRequest(target="A"))
    assert "(cyclegan G_B: resnet_6blocks, ngf 4, norm instance, 3->3 channels)" in gen.source
    for request, message in (
            (tr.TranslationRequest(code=(0.5, 0.5)), r"--code does not apply to cyclegan"),
            (tr.TranslationRequest(target="C"), r"--target='C' is not a cyclegan domain; expected A or B"),
            (tr.TranslationRequest(direction="AtoB", target="A"),
             r"--target=A means BtoA, but --direction=AtoB was given")):
        with pytest.raises(tr.TranslateError, match=message):  # an official file
            tr.load_generator(pth[0], config=_tiny_config(), request=request)
    with pytest.raises(tr.TranslateError, match=r"--code does not apply to cyclegan"):
        tr.load_generator(wd, request=tr.TranslationRequest(code=(1.0,)))  # and a workdir


def test_eval_mode_false_is_the_reference_train_mode_forward(tmp_path):
    """BatchNorm generator: eval_mode=False uses batch statistics exactly like torch's train()."""
    torch.manual_seed(2)
    net = ref.define_G(3, 3, 4, "resnet_6blocks", "batch", False)
    ref.init_weights(net, 0.02, torch.Generator().manual_seed(2))  # the reference's gain
    with torch.no_grad():  # give the running statistics values unlike any batch's
        net.train()(torch.randn(4, 3, 16, 16) * 3 + 1)
    path = tmp_path / "bn.pth"
    torch.save(net.state_dict(), path)
    x = np.random.RandomState(0).uniform(-1, 1, (2, 16, 16, 3)).astype(np.float32)
    fields = dict(TINY, norm="batch")
    config = _tiny_config()
    for key, value in fields.items():
        config[key] = value
    train_gen = tr.load_generator(path, config=config, eval_mode=False)
    eval_gen = tr.load_generator(path, config=config)
    with torch.no_grad():
        theirs_eval = nhwc(net.eval()(nchw(x)))
        theirs_train = nhwc(net.train()(nchw(x)))
    ours_train, ours_eval = np.asarray(train_gen.apply(x)), np.asarray(eval_gen.apply(x))
    assert rel_err(ours_train, theirs_train) < 1e-5
    assert rel_err(ours_eval, theirs_eval) < 1e-5
    assert rel_err(theirs_train, theirs_eval) > 0.05  # the two modes really differ
    # Batch composition matters in train mode: the first image alone gives another output.
    alone = np.asarray(train_gen.apply(x[:1]))[0]
    assert np.abs(alone - ours_train[0]).max() > 1e-3


def test_eval_mode_false_runs_dropout_with_a_fixed_key(tmp_path):
    torch.manual_seed(3)
    net = ref.define_G(3, 3, 4, "resnet_6blocks", "instance", True)
    ref.init_weights(net, 0.02, torch.Generator().manual_seed(3))
    torch.save(net.state_dict(), tmp_path / "dropout.pth")
    config = _tiny_config()
    config.netG, config.ngf, config.no_dropout = "resnet_6blocks", 4, False
    x = np.random.RandomState(1).uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32)
    train_gen = tr.load_generator(tmp_path / "dropout.pth", config=config, eval_mode=False)
    eval_gen = tr.load_generator(tmp_path / "dropout.pth", config=config, eval_mode=True)
    first, second = np.asarray(train_gen.apply(x)), np.asarray(train_gen.apply(x))
    np.testing.assert_array_equal(first, second)  # reproducible
    assert rel_err(first, eval_gen.apply(x)) > 1e-2  # dropout is active
    with torch.no_grad():  # eval mode is the reference's eval forward
        assert rel_err(eval_gen.apply(x), nhwc(net.eval()(nchw(x)))) < 1e-5


def test_command_line_target_eval_mode_and_code_flags(pth, images, tmp_path):
    """--target and --eval_mode reach the generator; --code ends with the method's one-line message."""
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=os.environ.get("XLA_FLAGS", "--xla_backend_optimization_level=0"))
    src = images / "sub" / "valid.png"
    cmd = [sys.executable, "-m", "launch.translate", f"--checkpoint={pth[0]}", f"--input={src}",
           f"--output={tmp_path / 'out'}", "--config.netG=resnet_6blocks", "--config.ngf=4"]
    done = subprocess.run(cmd + ["--target=B", "--eval_mode=false"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = _direct(_pth_generator(pth[0], **TINY).apply, src, 3)
    np.testing.assert_array_equal(_read(tmp_path / "out" / "valid.png"), expected)  # no BN, no dropout
    refused = subprocess.run(cmd + ["--code=0.3,0.7"], cwd=REPO, env=env, capture_output=True,
                             text=True, timeout=120)
    assert refused.returncode == 1
    assert refused.stderr.strip().splitlines()[-1] == (
        "error: --code does not apply to cyclegan (two domains, no domain code); "
        "use --direction=AtoB|BtoA or --target=A|B")


def test_pth_with_other_channels_in_and_out_loads_with_a_training_config(tmp_path, images):
    """A grayscale->RGB generator loads with the folder preset as is (lambda_identity is for training)."""
    torch.manual_seed(4)
    net = ref.define_G(1, 3, 4, "resnet_6blocks", "instance", False)
    ref.init_weights(net, GAIN, torch.Generator().manual_seed(4))
    torch.save(net.state_dict(), tmp_path / "g13.pth")
    gen = _pth_generator(tmp_path / "g13.pth", **{**TINY, "input_nc": 1, "output_nc": 3})
    assert (gen.in_channels, gen.out_channels) == (1, 3)
    rows = tr.translate_path(gen, images / "rgba.png", tmp_path / "out")
    with Image.open(tmp_path / "out" / rows[0].output) as img:
        assert img.mode == "RGB" and img.size == (37, 53)


def test_networks_that_take_one_size_get_every_image_resized_to_it_and_back(tmp_path):
    """DTN, UFDN and UNIT DA take one square side: a 72x40 photo is resized to it for the net
    (whatever --resize says) and its output resized back (it was a traceback at 288x288)."""
    from configs import dtn as dtn_configs
    from configs import ufdn as ufdn_configs
    from configs import unit as unit_configs

    assert methods.build(dtn_configs.get_config("digits")).input_size == 32
    assert methods.build(ufdn_configs.get_config("digits")).input_size == 32
    assert methods.build(unit_configs.get_config("mnist2usps")).input_size == 32
    assert getattr(methods.build(cyclegan_configs.get_config("digits")), "input_size", None) is None
    seen = []

    def apply(x):
        seen.append(x.shape)
        return -np.asarray(x)

    generator = tr.Generator(apply=apply, in_channels=1, out_channels=1, size_multiple=32,
                             source="fixed-size stand-in", input_size=32)
    photo = np.random.RandomState(0).randint(0, 256, (40, 72), np.uint8)
    Image.fromarray(photo).save(tmp_path / "photo.png")
    for mode in tr.RESIZE_MODES:
        rows = tr.translate_path(generator, tmp_path / "photo.png", tmp_path / mode, resize=mode)
        out = np.asarray(Image.open(tmp_path / mode / rows[0].output))
        assert out.shape == (40, 72)
    assert seen == [(1, 32, 32, 1)] * 2
