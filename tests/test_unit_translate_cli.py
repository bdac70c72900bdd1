"""`python -m launch.translate --checkpoint=gen_00000010.pt --config=configs/unit.py:digits`
on a file written the way UNIT_Trainer.save writes it ({'a': state_dict, 'b': state_dict},
by real torch), as a subprocess: the PNG equals gen_a.encode -> gen_b.decode of the PyTorch
re-expression (up to the 8-bit output). gen_a and gen_b hold different weights, so a
swapped 'a'/'b' or encoder/decoder pair would not match."""

import os
import subprocess
import sys

import numpy as np
import torch
from PIL import Image

from unpaired.torch_reference import unit as ref

from tests.helpers import nchw, nhwc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 16
ARCH = {"gen_dim": 4, "gen_n_res": 2, "dis_dim": 4, "dis_n_layer": 2}


def test_translate_cli_on_a_reference_gen_file_equals_torch(tmp_path):
    nets = ref.build_unit(1, 1, ARCH["gen_dim"], 2, ARCH["gen_n_res"], ARCH["dis_dim"],
                          ARCH["dis_n_layer"], 3, seed=5)
    with torch.no_grad():  # non-zero biases and LN betas, so a dropped or swapped key shows
        for name in ("gen_a", "gen_b"):
            for key, p in nets[name].named_parameters():
                if key.endswith(("bias", "beta")):
                    p.normal_(0, 0.1)
    checkpoint = tmp_path / "gen_00000010.pt"
    torch.save({"a": nets["gen_a"].state_dict(), "b": nets["gen_b"].state_dict()}, checkpoint)
    src = tmp_path / "in"
    src.mkdir()
    image = np.random.RandomState(0).randint(0, 256, (SIZE, SIZE), np.uint8)
    Image.fromarray(image).save(src / "x.png")
    trainer = ref.UNITReference(nets, {"gan_w": 1, "recon_x_w": 10, "recon_kl_w": 0.01,
                                       "recon_x_cyc_w": 10, "recon_kl_cyc_w": 0.01, "lr": 1e-4,
                                       "beta1": 0.5, "beta2": 0.999, "weight_decay": 1e-4,
                                       "step_size": 100000, "gamma": 0.5})
    x = (image.astype(np.float32) / 127.5 - 1.0)[None, :, :, None]
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "launch.translate", f"--checkpoint={checkpoint}",
           "--config=configs/unit.py:digits", f"--input={src}", f"--output={out}",
           "--direction=AtoB"] + [f"--config.{k}={v}" for k, v in ARCH.items()]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    got = np.asarray(Image.open(out / "x.png"))
    assert got.shape == (SIZE, SIZE)  # grayscale in, grayscale out
    with torch.no_grad():
        want = nhwc(trainer.translate(nchw(x), a2b=True))[0, :, :, 0]
        other = nhwc(trainer.translate(nchw(x), a2b=False))[0, :, :, 0]
    assert np.max(np.abs(got.astype(np.float64) - (want + 1.0) * 127.5)) <= 1.0
    assert np.max(np.abs(got.astype(np.float64) - (other + 1.0) * 127.5)) > 2.0  # not BtoA
