"""UNIT digit DA end to end on the real MNIST -> USPS data in the data root (tests.helpers):
`launch.train --config=configs/unit.py:mnist2usps` (grids, checkpoints, the target test
accuracy printed and saved, resume bit-identical) and `launch.translate` from the workdir."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
from PIL import Image

from configs import unit as unit_config
from unpaired import checkpoint, config_validation, data, methods, torch_io, train
from unpaired.data.spec import DataSpec
from unpaired.torch_reference import unit_da as ref

from tests.helpers import nchw, needs_real_digits, workdir_at_step
from tests.overrides import set_keys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = needs_real_digits
TINY = {"gen_ch": 4, "dis_ch": 4, "batch_size": 4, "test_batch_size": 500, "data.num_workers": 1,
        "log_every": 1, "sample_every": 2, "checkpoint_every": 2}


def tiny_config(**overrides):
    config = unit_config.get_config("mnist2usps")
    return set_keys(config, {**TINY, **overrides})


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory):
    """4 steps through `python -m launch.train --config=configs/unit.py:mnist2usps`."""
    workdir = str(tmp_path_factory.mktemp("unit_da_cli"))
    flags = [f"--config.{k}={v}" for k, v in TINY.items()]
    cmd = [sys.executable, "-m", "launch.train", f"--workdir={workdir}",
           "--config=configs/unit.py:mnist2usps", "--config.max_steps=4"] + flags
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir, done.stdout


def _restore(workdir, step):
    method = methods.build(tiny_config(max_steps=4))
    state, _ = checkpoint.Checkpointer.for_workdir(workdir).restore(
        method.create_state(jax.random.key(0)), step)
    return method, state


def test_cli_run_leaves_grids_checkpoints_terms_and_the_target_accuracy(cli_run):
    workdir, stdout = cli_run
    assert checkpoint.Checkpointer.for_workdir(workdir).all_steps() == [2, 4]
    assert sorted(os.listdir(os.path.join(workdir, "samples"))) == [
        "step_00000002.png", "step_00000004.png"]
    grid = np.asarray(Image.open(os.path.join(workdir, "samples", "step_00000004.png")))
    assert grid.shape[0] >= 32 * 2 and grid.std() > 0
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert {"G", "D", "ad", "kl", "ll_a", "ll_b", "ad_true", "ad_fake", "cls", "cls_acc",
            "feature_a", "feature_b"} <= set(rows[0])
    result = json.load(open(os.path.join(workdir, "da_accuracy.json")))
    assert result["images"] == 2007 and result["domain"] == "B" and result["step"] == 4
    assert f"test accuracy: {result['accuracy']:.4f} (2007 images)" in stdout
    # The same accuracy from the PyTorch re-expression's classify_b on the same test images.
    method, state = _restore(workdir, 4)
    tdis = ref.CoDis32x32(4, 1, 1).eval()
    tdis.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in
                          torch_io.to_state_dict({"params": state.params["dis"]}).items()})
    spec = DataSpec(domains=("B",), channels={"B": 1}, labels=("B",))
    loader = data.make_loader(tiny_config().data, split="test", batch_size=2007, seed=0, spec=spec)
    try:
        batch = loader.batch(0)
    finally:
        loader.close()
    with torch.no_grad():
        predicted = tdis.classify_b(nchw(batch["B"])).argmax(1).numpy()
    assert abs(float(np.mean(predicted == batch["B_label"])) - result["accuracy"]) < 1e-9
    ours = method.digit_accuracy(state.params, state.model_state, batch["B"][:64],
                                 batch["B_label"][:64])
    assert abs(float(ours) - float(np.mean(predicted[:64] == batch["B_label"][:64]))) < 1e-9


def test_resumed_run_equals_the_cli_run_bit_for_bit(cli_run, tmp_path):
    workdir, _ = cli_run
    _, expected = _restore(workdir, 4)
    # The CLI process's step-2 checkpoint, resumed here for the last two steps.
    resumed = train.train_and_evaluate(tiny_config(max_steps=4), workdir_at_step(workdir, 2, tmp_path))
    assert int(resumed.step) == 4
    assert checkpoint.state_matches(jax.device_get(resumed), jax.device_get(expected))
    stats = resumed.model_state["gen"]["g_en_conv1"]["model_1"]
    assert int(stats["num_batches_tracked"]) == 8  # two generator passes per iteration


def test_translate_cli_from_the_workdir_runs_the_a_to_b_stream(cli_run, tmp_path):
    workdir, _ = cli_run
    src = tmp_path / "in"
    src.mkdir()
    image = np.random.RandomState(0).randint(0, 256, (32, 32), np.uint8)
    Image.fromarray(image).save(src / "x.png")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "launch.translate", f"--checkpoint={workdir}", f"--input={src}",
           f"--output={out}", "--direction=AtoB"]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = np.asarray(Image.open(out / "x.png")).astype(np.float64)
    method, state = _restore(workdir, 4)
    x = (image.astype(np.float32) / 127.5 - 1.0)[None, :, :, None]
    want = np.asarray(method.translate(state.params, x, "AtoB", state.model_state))[0, :, :, 0]
    assert np.max(np.abs(got - (want + 1.0) * 127.5)) <= 1.0
    other = np.asarray(method.translate(state.params, x, "BtoA", state.model_state))[0, :, :, 0]
    assert np.max(np.abs(other - want)) > 1e-3  # the direction matters


def test_export_writes_the_version_02_state_dicts_torch_loads_strictly(cli_run, tmp_path):
    """`unpaired.export` (launch.export's library call) on the workdir: gen.pkl and dis.pkl
    load strictly into the torch re-expression and classify as our D does."""
    from unpaired import export

    workdir, _ = cli_run
    files = export.export_workdir(workdir, tmp_path / "out")
    assert [os.path.basename(f) for f in files] == ["gen.pkl", "dis.pkl"]
    method, state = _restore(workdir, 4)
    tgen, tdis = ref.CoVAE32x32(4, 3, 1, 3, 1).eval(), ref.CoDis32x32(4, 1, 1).eval()  # +2 xy
    tgen.load_state_dict(torch.load(files[0], weights_only=True), strict=True)
    tdis.load_state_dict(torch.load(files[1], weights_only=True), strict=True)
    x = np.random.RandomState(1).uniform(-1, 1, (3, 32, 32, 1)).astype(np.float32)
    with torch.no_grad():
        logits = tdis.classify_b(nchw(x)).numpy()
    ours = method.digit_accuracy(state.params, state.model_state, x, logits.argmax(1))
    assert float(ours) == 1.0


def test_presets_validate_and_bad_values_name_the_key():
    for preset in ("mnist2usps", "usps2mnist"):
        config = unit_config.get_config(preset)
        assert config.method == "unit_da"
        config_validation.validate(config)
    assert "usps" in unit_config.get_config("usps2mnist").data.idx_A
    for key, value, message in [("gen_ch", 0, "config.gen_ch"), ("cls_w", -1.0, "config.cls_w"),
                                ("beta1", 1.0, "config.beta1"), ("data.crop_size", 28, "config.data.crop_size"),
                                ("batch_size", 1, "config.batch_size")]:
        config = tiny_config(**{key: value})
        if key == "data.crop_size":
            config.data.load_size = config.data.image_size = 28
        with pytest.raises(config_validation.ConfigError, match=message.replace(".", r"\.")):
            config_validation.validate(config)


def test_digit_accuracy_reads_each_domain_through_its_own_first_d_layers():
    """The eval seam passes the images' domain: UNIT's source held-out images (model selection)
    go through D's source layers, the target test images through the target's."""
    from unpaired.eval import run
    from unpaired.data.sets import EvalSet

    method = methods.build(tiny_config())
    state = method.create_state(jax.random.key(0))
    x = np.random.RandomState(2).uniform(-1, 1, (24, 32, 32, 1)).astype(np.float32)
    by_a = np.asarray(method.classify(state.params["dis"], x, "A")).argmax(1)
    by_b = np.asarray(method.classify(state.params["dis"], x, "B")).argmax(1)
    assert (by_a != by_b).any()  # the two domains' first layers disagree at random weights
    eval_data = run.EvalData({}, {}, {}, [], ("A",), 16)
    labelled_a = EvalSet("A", "holdout", x, by_a.astype(np.int32))
    assert run.digit_accuracy(method, state, eval_data, labelled_a, "A") == 1.0
    assert run.digit_accuracy(method, state, eval_data, labelled_a, "B") == float(np.mean(by_a == by_b))
    # The default (no domain) stays the target's, as the reference's test-set evaluation.
    assert float(method.digit_accuracy(state.params, state.model_state, x, by_b)) == 1.0
