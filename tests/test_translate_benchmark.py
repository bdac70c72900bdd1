"""Smoke tests of the inference benchmark (`launch/benchmark.py --mode=translate`,
`unpaired/benchmarks/translate.py`, `unpaired/torch_reference/translators.py`).

One tiny CPU run through the command line (CycleGAN digits, batch 1, 32x32, ngf 8, 2 timed
forwards in 2 rounds, torch eager; ~15-20 s) checks the JSON contract and the markdown row;
a method without a translate path must end in one `error:` line naming it; the other
methods' reference translators must produce what our `translate` produces (shapes; no
JAX compile). Timings are never asserted, only that they are positive and finite.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import jax
import pytest

from configs import cyclegan, dtn, ufdn, unit
from unpaired import methods
from unpaired.benchmarks import step as benchmark
from unpaired.methods.translation import TranslationRequest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _positive(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_translate_mode_cli_smoke(tmp_path):
    table = tmp_path / "benchmarks.md"
    cmd = [
        sys.executable, "-m", "launch.benchmark", "--mode=translate",
        "--config=configs/cyclegan.py:digits", "--batch_size=1", "--image_size=32",
        "--precision=fp32", "--config.ngf=8", "--config.ndf=8", "--steps=2", "--rounds=2",
        "--warmup=1", "--torch=eager", f"--append={table}", "--notes=smoke",
        "--allow_loaded", "--peak_size=64",  # never refused for what else this machine runs
    ]
    # Inherits conftest's XLA_FLAGS (backend optimisation level 0): faster compiles.
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads([line for line in proc.stdout.splitlines() if line.strip()][-1])

    assert result["mode"] == "translate"
    for key in ("img_per_s", "step_ms", "compile_s", "torch_eager_img_per_s",
                "ratio_vs_torch_eager", "peak_memory_bytes", "flops_per_step"):
        assert _positive(result[key]), (key, result[key])
    assert result["img_per_s"] == pytest.approx(1e3 / result["step_ms"])
    assert result["ratio_vs_torch_eager_of_medians"] == pytest.approx(
        result["img_per_s"] / result["torch_eager_img_per_s"])
    assert result["rounds"] == 2 and len(result["ratio_vs_torch_eager_rounds"]) == 2
    assert result["timed_steps"] == result["torch_eager_timed_steps"] == 2
    assert result["torch_compile_img_per_s"] is None and result["ratio_vs_torch_compile"] is None
    # The forward served: CycleGAN's default request, G_A, one 1-channel 32x32 image.
    assert result["request"] == "direction=AtoB" and result["generator"].startswith("G_A")
    assert result["output_shape"] == [1, 32, 32, 1]
    assert (result["method"], result["ngf"], result["image_size"]) == ("cyclegan", 8, 32)
    # A forward of resnet_6blocks ngf 8 at 32x32 is tens of MFLOPs; a training step
    # (4 generator passes, D, backward) would be several times more.
    assert 5e6 < result["flops_per_step"] < 1e8
    assert "mode translate" in proc.stdout and "JAX / torch eager" in proc.stdout
    rows = [line for line in table.read_text().splitlines() if line.startswith("|")]
    assert rows[0] == benchmark.MARKDOWN_HEADER.splitlines()[0]
    assert "| cyclegan translate |" in rows[-1] and "smoke" in rows[-1] and "| 1 | 32 | fp32 |" in rows[-1]
    # The forward's GFLOP/s against the CPU's measured matmul peak, JAX's and torch's.
    assert _positive(result["fraction_of_peak"]) and _positive(result["torch_eager_fraction_of_peak"])
    assert "CPU use: JAX" in rows[-1]


def test_translate_mode_refuses_a_method_without_translate():
    cmd = [sys.executable, "-m", "launch.benchmark", "--mode=translate",
           "--config=configs/dtn.py:digits_pretrain", "--steps=1", "--torch=none"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "dtn_pretrain" in errors[0] and "translate" in errors[0]
    assert "Traceback" not in proc.stderr


def _tiny(name: str):
    if name == "unit":
        c = unit.get_config("digits")
        overrides = {"gen_dim": 4, "dis_dim": 4}
    elif name == "ufdn":
        c = ufdn.get_config("digits")
        overrides = {}
    elif name == "dtn":
        c = dtn.get_config("digits")
        overrides = {"ngf": 4, "nf": 4}
    else:
        c = cyclegan.get_config("digits")
        overrides = {"ngf": 4, "ndf": 4}
    with c.unlocked():
        for key, value in overrides.items():
            c[key] = value
    return benchmark.resolve_config(c, batch_size=2)


@pytest.mark.parametrize("name", ["cyclegan", "unit", "ufdn", "dtn"])
def test_reference_translator_matches_our_translate_shape(name):
    """The torch forward the benchmark times maps the same input to the same output shape as
    our translate (checked abstractly on the JAX side: nothing is compiled)."""
    torch = pytest.importorskip("torch")
    from unpaired.torch_reference import translators

    config = _tiny(name)
    method = methods.build(config)
    request = method.resolve_request(TranslationRequest())
    in_nc, out_nc = method.translation_channels(request)
    size = int(config.data.crop_size)
    state = jax.eval_shape(method.create_state, jax.random.key(0))
    x = jax.ShapeDtypeStruct((2, size, size, in_nc), jax.numpy.float32)
    ours = jax.eval_shape(lambda p, s, x: method.translate(p, x, request, s), state.params,
                          state.model_state, x)
    forward = translators.build_reference_translator(config)
    theirs = forward(torch.rand(2, in_nc, size, size) * 2 - 1)
    assert tuple(ours.shape) == (2, size, size, out_nc)
    assert tuple(theirs.shape) == (2, out_nc, size, size)
    assert not theirs.requires_grad  # run under no_grad, as the references' test scripts
    assert bool(torch.isfinite(theirs).all())
