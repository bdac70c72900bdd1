"""Command-line config errors end in one `error:` line naming the key, path or preset, never a
traceback; log lines are plain and the run header is short."""

import io
import logging
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from unpaired import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIGITS = os.path.join(REPO, "configs", "cyclegan.py") + ":digits"

CASES = [
    (["--config.lamda_A=1"],
     "error: unknown config key config.lamda_A (did you mean config.lambda_A?)"),
    (["--config.data.crop_sz=3"],
     "error: unknown config key config.data.crop_sz (did you mean config.data.crop_size?)"),
    (["--config.zzzzzz=3"], "error: unknown config key config.zzzzzz"),
    (["--config.lr=fast"], "error: bad value for config.lr: flag --config.lr=fast: "
                           "could not convert string to float: 'fast'"),
    (["--config=configs/nope.py"], "error: config file not found: configs/nope.py"),
    (["--config=configs/cyclegan.py:zebra"],
     "error: unknown cyclegan preset 'zebra'; expected digits, mnist2usps, usps2mnist, horse2zebra, "
     "folder, mnist2usps_cpu or usps2mnist_cpu (--config=configs/cyclegan.py:zebra)"),
]


def _stderr_lines(module, args):
    result = subprocess.run([sys.executable, "-m", module, *args], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    return [line for line in result.stderr.splitlines() if line.strip()]


@pytest.mark.parametrize("args,message", CASES, ids=[c[1][7:40] for c in CASES])
def test_train_config_errors_are_one_line(args, message, tmp_path):
    assert _stderr_lines("launch.train", [f"--workdir={tmp_path}", *args]) == [message]


@pytest.mark.parametrize("args,message", [
    (["--config=configs/cyclegan.py:digits", "--config.lamda_A=1"], CASES[0][1]),
    (["--config=configs/nope.py"], CASES[4][1]),
    (["--config=configs/cyclegan.py:digits", "--config.lr=fast"], CASES[3][1]),
])
def test_benchmark_config_errors_are_one_line(args, message):
    assert _stderr_lines("launch.benchmark", ["--torch=none", *args]) == [message]


@pytest.mark.parametrize("args,message", [
    (["--config.lamda_A=1"], CASES[0][1]),
    (["--config=configs/nope.py"], CASES[4][1]),
])
def test_translate_config_errors_are_one_line(args, message, tmp_path):
    flags = [f"--checkpoint={tmp_path}", f"--input={tmp_path}", f"--output={tmp_path / 'out'}"]
    assert _stderr_lines("launch.translate", [*flags, *args]) == [message]


def test_check_config_args_reads_every_override_form(tmp_path):
    assert cli.check_config_args(["--config.lambda_A=1", "--noconfig.no_dropout",
                                  "--config.data.crop_size", "32"], default_config=DIGITS) is None
    assert cli.check_config_args(["--noconfig.no_dropot"], default_config=DIGITS) == (
        "unknown config key config.no_dropot (did you mean config.no_dropout?)")
    # The last --config wins; arguments after `--` are not flags.
    assert cli.check_config_args([f"--config={tmp_path}/x.py", f"--config={DIGITS}",
                                  "--", "--config.nope=1"]) is None
    unreadable = tmp_path / "broken.py"
    unreadable.write_text("raise RuntimeError('boom')\n")
    assert cli.check_config_args([f"--config={unreadable}"]) == (
        f"config file {unreadable} failed to load: RuntimeError: boom")
    assert cli.check_config_args([]) is None  # no file and no default: nothing to check


@pytest.fixture
def root_logging():
    """The root logger's handlers and level (and absl's level), put back after the test."""
    root, absl = logging.getLogger(), logging.getLogger("absl")
    handlers, level, absl_level = root.handlers[:], root.level, absl.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    absl.setLevel(absl_level)


def test_log_lines_are_plain_and_third_party_info_needs_verbose(root_logging):
    # As after a launcher parsed its flags (absl's default verbosity): absl's logger at WARNING.
    logging.getLogger("absl").setLevel(logging.WARNING)
    for verbose in (False, True):
        stream = io.StringIO()
        cli.setup_logging(verbose, stream=stream)
        logging.getLogger("unpaired.train").info("starting a new run in w")
        logging.getLogger("absl").info("orbax: saving step 2")
        logging.getLogger("jax._src.xla_bridge").info("Unable to initialize backend 'tpu'")
        logging.getLogger("jax._src.xla_bridge").warning("no GPU found")
        logging.getLogger("unpaired.train").error("loss is nan")
        chatter = ["orbax: saving step 2", "Unable to initialize backend 'tpu'"] if verbose else []
        assert stream.getvalue().splitlines() == [
            "starting a new run in w", *chatter, "warning: no GPU found", "error: loss is nan"]
    assert sum(getattr(h, "unpaired_plain", False) for h in logging.getLogger().handlers) == 1


def test_header_names_method_config_workdir_devices_and_overrides():
    devices = [SimpleNamespace(device_kind="NVIDIA H100", platform="gpu")] * 8
    lines = cli.header_lines("training", "ufdn", os.path.join(os.getcwd(), "configs", "ufdn.py:digits"),
                             "workdirs/ufdn_digits", cli.describe_devices(devices, 2),
                             {"max_steps": 20, "data.crop_size": 16})
    assert lines == [
        "training ufdn (configs/ufdn.py, preset digits) on 8 NVIDIA H100 (2 processes)",
        "workdir: workdirs/ufdn_digits  (full config in config.json there; --verbose prints it)",
        "overrides: max_steps=20 data.crop_size=16"]
    assert len(cli.header_lines("training", "cyclegan", "c.py", "w", "1 cpu", {})) == 2
