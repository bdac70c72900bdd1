"""UFDN in the benchmark: the reference steps registered for both procedures, and a short
`launch.benchmark --config=configs/ufdn.py:digits --torch=eager` run (timings never asserted)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")

from configs import ufdn as ufdn_config  # noqa: E402
from unpaired import torch_reference  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(preset: str):
    config = ufdn_config.get_config(preset)
    conv = lambda out, norm="bn", act="LeakyReLU": ["conv", out, 4, 2, 1, norm, act]
    config.data.image_size = config.data.load_size = config.data.crop_size = 16
    config.encoder = [conv(4), conv(8), conv(8), conv(6, "", "")]
    config.decoder = [conv(8) + [True], conv(8) + [False], conv(4) + [False],
                      conv(3, "", "Tanh") + [False]]
    n = 3 if preset == "digits" else 2
    config.D_feat = [["fc", 8, "", "LeakyReLU", 0], ["fc", n, "", "", 0]]
    config.D_pix = [conv(4, ""), ["fc", 8, "", "LeakyReLU", 0], ["fc", [1, 3], "", "", 0]]
    config.data_augment = True
    return config


@pytest.mark.parametrize("preset,objective", [("digits", "code"), ("digits", "paper"),
                                              ("uda", "code")])
def test_reference_step_trains_every_network(preset, objective):
    config = _tiny(preset)
    config.objective = objective
    step = torch_reference.build_reference_step(config)
    model = step.model
    nets = {n: getattr(model, n) for n in ("vae", "d_feat", "d_pix", "d_digit") if hasattr(model, n)}
    before = {n: [p.detach().clone() for p in net.parameters()] for n, net in nets.items()}
    n_domains = 3 if preset == "digits" else 2
    images = [torch.rand(2, 3, 16, 16) * 2 - 1 for _ in range(n_domains)]
    for _ in range(2):
        terms = step(*images)
    assert all(math.isfinite(float(v)) for v in terms.values())
    assert ("digit" in terms) == (preset == "uda")
    assert ("gp" in terms) == (preset == "digits" and objective == "code")
    for name, net in nets.items():
        assert any(not torch.equal(a, b) for a, b in zip(before[name], net.parameters())), name


def test_launch_benchmark_ufdn_digits_smoke():
    cmd = [sys.executable, "-m", "launch.benchmark", "--config=configs/ufdn.py:digits",
           "--batch_size=2", "--precision=fp32", "--steps=2", "--rounds=2", "--warmup=1",
           "--torch=eager", "--allow_loaded", "--peak_gflops=50"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads([line for line in proc.stdout.splitlines() if line.strip()][-1])
    assert result["method"] == "ufdn" and result["batch_size"] == 2
    for key in ("img_per_s", "torch_eager_img_per_s", "ratio_vs_torch_eager"):
        assert isinstance(result[key], float) and math.isfinite(result[key]) and result[key] > 0, key
    assert result["timed_steps"] == result["torch_eager_timed_steps"] == 2
