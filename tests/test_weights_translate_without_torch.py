"""`python -m launch.translate --checkpoint=<official .pth>` where `import torch` fails.

The .pth files are written by real torch (zip and legacy formats) from the reference
generator; the CLI runs in a subprocess with `sys.modules['torch'] = None`. Its pixels
equal those of the same CLI with torch importable, and match the reference's own forward
pass converted as its `tensor2im` does (float32 rounding may move a value by one level).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from unpaired.torch_reference import cyclegan as ref

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--config.netG=resnet_6blocks", "--config.ngf=4"]


def _translate(checkpoint: Path, inputs: Path, output: Path, *, torch_importable: bool) -> str:
    argv = ["launch.translate", f"--checkpoint={checkpoint}", f"--input={inputs}",
            f"--output={output}", *ARGS]
    blocker = "" if torch_importable else "sys.modules['torch'] = None; "
    code = (f"import sys; {blocker}import runpy; sys.argv = {argv!r}; "
            "runpy.run_module('launch.translate', run_name='__main__', alter_sys=True)")
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=os.environ.get("XLA_FLAGS", "--xla_backend_optimization_level=0"))
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _read(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("no_torch")
    torch.manual_seed(0)
    net = ref.define_G(3, 3, 4, "resnet_6blocks", "instance", False)
    ref.init_weights(net, 0.5, torch.Generator().manual_seed(0))  # outputs span [-1, 1]
    net.eval()
    zip_path, legacy_path = root / "latest_net_G.pth", root / "legacy_net_G.pth"
    torch.save(net.state_dict(), zip_path)
    torch.save(net.state_dict(), legacy_path, _use_new_zipfile_serialization=False)
    inputs = root / "inputs"
    inputs.mkdir()
    rng = np.random.RandomState(0)
    image = np.clip(np.linspace(0, 255, 32)[None, :, None] + rng.randint(-60, 60, (32, 32, 3)),
                    0, 255).astype(np.uint8)
    Image.fromarray(image).save(inputs / "a.png")
    return root, net, zip_path, legacy_path, inputs, image


def test_translate_cli_without_torch_matches_torch(setup):
    root, net, zip_path, legacy_path, inputs, image = setup
    outputs = {}
    for name, path, importable in [("zip", zip_path, False), ("legacy", legacy_path, False),
                                   ("with_torch", zip_path, True)]:
        stdout = _translate(path, inputs, root / name, torch_importable=importable)
        assert "translated 1 image(s)" in stdout
        outputs[name] = _read(root / name / "a.png")
    assert outputs["zip"].shape == (32, 32, 3) and outputs["zip"].std() > 20
    np.testing.assert_array_equal(outputs["zip"], outputs["legacy"])
    np.testing.assert_array_equal(outputs["zip"], outputs["with_torch"])
    # The reference's forward pass on the same input, converted as its tensor2im does.
    x = torch.from_numpy((image.astype(np.float32) / 255.0 - 0.5) / 0.5).permute(2, 0, 1)[None]
    with torch.no_grad():
        y = net(x)[0].permute(1, 2, 0).numpy()
    theirs = ((y + 1) / 2.0 * 255.0).astype(np.uint8)
    diff = np.abs(outputs["zip"].astype(int) - theirs)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.1
