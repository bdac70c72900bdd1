"""UFDN domain adaptation end to end on the real MNIST -> USPS data, and official files.

A short `launch.train` run of the `uda_small` preset (narrow networks; the official ones
have ~122M parameters) on the real MNIST/USPS in the data root: grids, checkpoints, resume, the final
adaptation accuracy (printed and in `da_accuracy.json`); then `launch.export` writes the
run as plain state_dicts that the PyTorch re-expression loads and computes equally. Last,
`launch.translate` on a whole pickled module, saved the way the reference saves `vae`,
translates as torch does.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from configs import ufdn as ufdn_config
from unpaired import translate as tr
from unpaired.methods.translation import TranslationRequest
from unpaired.torch_reference import ufdn as ref

from tests.helpers import nchw, needs_real_digits as needs_data, nhwc, rel_err
from tests.test_ufdn_official_weights import _pickled, _trained_like_vae

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The preset's own data paths: the data root, which the subprocesses inherit (UNPAIRED_DATA).
FLAGS = ["--config=configs/ufdn.py:uda_small", "--config.batch_size=4", "--config.log_every=1",
         "--config.sample_every=2", "--config.checkpoint_every=2", "--config.eval_batch_size=500",
         "--config.data.num_workers=1"]


def _run(module, *args):
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def uda_run(tmp_path_factory):
    """2 steps from launch.train, resumed to 3 by a second launch; (workdir, stdouts)."""
    workdir = str(tmp_path_factory.mktemp("ufdn_uda"))
    first = _run("launch.train", f"--workdir={workdir}", *FLAGS, "--config.max_steps=2")
    with open(os.path.join(workdir, "da_accuracy.json"), encoding="utf-8") as f:
        first_result = json.load(f)
    second = _run("launch.train", f"--workdir={workdir}", *FLAGS, "--config.max_steps=3")
    return workdir, first.stdout, second.stdout, first_result


@needs_data
def test_uda_run_writes_grids_checkpoints_resumes_and_reports_accuracy(uda_run):
    workdir, first, second, first_result = uda_run
    assert os.listdir(os.path.join(workdir, "samples"))
    steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
    assert steps[-2:] == [2, 3]
    assert first_result["step"] == 2
    with open(os.path.join(workdir, "da_accuracy.json"), encoding="utf-8") as f:
        result = json.load(f)
    assert result["step"] == 3 and result["model"] == "final"
    # Full batches of 500: USPS test 2007 -> 2000 images, MNIST test 10000.
    assert (result["target"]["domain"], result["target"]["images"]) == ("usps", 2000)
    assert (result["source"]["domain"], result["source"]["images"]) == ("mnist", 10000)
    for part in ("source", "target"):
        acc = result[part]["accuracy"]
        assert 0 <= acc <= 1 and acc * result[part]["images"] == pytest.approx(
            round(acc * result[part]["images"]))  # a count of correct images
    assert "adaptation accuracy at step 2" in first
    assert f"adaptation accuracy at step 3 (final model): target usps " \
           f"{result['target']['accuracy']:.4f}" in second
    _, state, _ = tr.load_workdir_state(workdir)
    assert int(state.step) == 3


@needs_data
def test_export_writes_state_dicts_that_torch_loads_and_computes_equally(uda_run, tmp_path):
    workdir = uda_run[0]
    out = tmp_path / "exported"
    printed = _run("launch.export", f"--workdir={workdir}", f"--output={out}").stdout.split()
    assert sorted(os.path.basename(p) for p in printed) == ["d_feat.pth", "dnet.pth", "vae.pth"]
    config = ufdn_config.get_config("uda_small")
    z = config.encoder[-1][1]
    vae = ref.UFDN(config.encoder, config.decoder, 2)
    dnet = ref.Discriminator(config.D_digit, z)
    d_feat = ref.Discriminator(config.D_feat, z)
    for net, name in ((vae, "vae.pth"), (dnet, "dnet.pth"), (d_feat, "d_feat.pth")):
        net.load_state_dict(torch.load(out / name, weights_only=True))  # strict: every key
        net.eval()
    method, state, _ = tr.load_workdir_state(workdir)
    x = np.random.RandomState(0).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    with torch.no_grad():
        want = nhwc(vae(nchw(x), torch.tensor([[0.0, 1.0]] * 4))[0])
        mu = vae(nchw(x), return_enc=True)
        logits = dnet(mu).numpy()
    ours = method.translate(state.params, x, TranslationRequest(target="usps"), state.model_state)
    assert rel_err(ours, want) < 1e-5
    labels = logits.argmax(1)
    acc = method.digit_accuracy(state.params, state.model_state, x, labels)
    assert float(acc) == 1.0
    bad = tmp_path / "nothing"
    result = subprocess.run([sys.executable, "-m", "launch.export", f"--workdir={bad}",
                             f"--output={out}"], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode != 0 and "--workdir" in result.stderr


def test_translate_command_on_a_pickled_official_vae_equals_torch(tmp_path, monkeypatch):
    """`launch.translate --checkpoint=<vae pickled as the reference saves it> --target=2`."""
    net = _trained_like_vae()  # the digits preset's widths, 3 domains
    rng = np.random.RandomState(1)
    inputs = tmp_path / "in"
    inputs.mkdir()
    images = [rng.randint(0, 256, (32, 32, 3), np.uint8) for _ in range(2)]
    for i, image in enumerate(images):
        Image.fromarray(image).save(inputs / f"{i}.png")
    x = np.stack([tr.prepare_input(Image.fromarray(im), 32, "pad") for im in images])
    with torch.no_grad():
        want = nhwc(net(nchw(x), torch.tensor([[0.0, 0.0, 1.0]] * 2))[0])
    path = _pickled(tmp_path, monkeypatch, net, "UFDN")
    out = tmp_path / "out"
    _run("launch.translate", f"--checkpoint={path}", "--config=configs/ufdn.py:digits",
         f"--input={inputs}", f"--output={out}", "--target=2")
    for i in range(2):
        got = np.asarray(Image.open(out / f"{i}.png"), np.int16)
        expected = tr.tensor2im(want[i]).astype(np.int16)
        # Truncation to 8 bits: a 1e-6 difference can cross an integer boundary.
        assert np.abs(got - expected).max() <= 1
        assert np.mean(got != expected) < 0.01
