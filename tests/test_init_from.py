"""Staged training: config.init_from / config.init_networks, the layout check, and the start/resume lines."""

import os
import subprocess
import sys

import jax
import pytest

from unpaired import checkpoint, config_validation, init_from, methods, torch_io, train
from unpaired.methods.cyclegan import CycleGAN

from tests.test_train import REPO, flags_for, tiny_config


def _equal(a, b):
    return checkpoint.state_matches(jax.device_get(a), jax.device_get(b))


@pytest.fixture(scope="module")
def run_a(tmp_path_factory):
    """Run A: 2 steps of the tiny CycleGAN, one checkpoint at step 2."""
    workdir = str(tmp_path_factory.mktemp("run_a"))
    state = train.train_and_evaluate(tiny_config(max_steps=2), workdir)
    return workdir, jax.device_get(state)


def _fresh(config):
    method = methods.build(config)
    return method, method.create_state(jax.random.key(config.seed))


def test_named_networks_come_from_the_source_and_the_rest_stay_fresh(run_a):
    workdir, a = run_a
    config = tiny_config(seed=1, init_from=workdir, init_networks="G_A, D_A,G_B=G_A")
    method, fresh = _fresh(config)
    state, record = init_from.apply_init(method, config, fresh)
    for name in ("G_A", "D_A"):
        assert _equal(state.params[name], a.params[name])
        assert not _equal(fresh.params[name], a.params[name])  # A really trained them
    assert _equal(state.params["G_B"], a.params["G_A"])  # taken under another name
    assert _equal(state.params["D_B"], fresh.params["D_B"])  # B's own fresh init
    assert _equal(state.opt_state, fresh.opt_state) and int(state.step) == 0
    assert record.to_meta() == {"path": os.path.abspath(workdir), "step": 2,
                                "networks": {"G_A": "G_A", "D_A": "D_A", "G_B": "G_A"}}
    # A checkpoints/<step> folder is a source too.
    by_step, _ = init_from.apply_init(
        method, tiny_config(seed=1, init_from=os.path.join(workdir, "checkpoints", "2"),
                            init_networks="D_B=D_A"), fresh)
    assert _equal(by_step.params["D_B"], a.params["D_A"])


def test_another_architecture_names_every_mismatched_leaf(run_a):
    config = tiny_config(ngf=8, init_from=run_a[0], init_networks="G_A,D_A")
    method, fresh = _fresh(config)
    with pytest.raises(init_from.InitFromError) as err:
        init_from.apply_init(method, config, fresh)
    message = str(err.value)
    assert message.startswith(f"config.init_from={run_a[0]!r} does not fit")
    assert "G_A/params/model_1/kernel: checkpoint (7,7,1,4) vs model (7,7,1,8)" in message
    assert "D_A" not in message  # ndf is unchanged: only G_A's leaves differ


def test_missing_or_unknown_networks_are_named(run_a, tmp_path):
    workdir = run_a[0]
    method, fresh = _fresh(tiny_config())
    cases = [
        (dict(init_networks="G_A=C"), r"names 'C' which the source does not have; it has G_A, G_B, D_A, D_B"),
        (dict(init_networks="f=C"), r"names 'f', which cyclegan does not have; it has G_A, G_B, D_A, D_B"),
        (dict(init_from=str(tmp_path)), r"config\.init_from=.* has no checkpoint"),
        (dict(init_from=str(tmp_path / "nowhere")), r"config\.init_from=.* does not exist"),
    ]
    for overrides, message in cases:
        config = tiny_config(**{"init_from": workdir, "init_networks": "G_A", **overrides})
        with pytest.raises(init_from.InitFromError, match=message):
            init_from.apply_init(method, config, fresh)


def test_a_single_network_pth_initialises_one_network(run_a, tmp_path):
    _, a = run_a
    path = str(tmp_path / "latest_net_G_A.pth")
    torch_io.save_pth(torch_io.to_state_dict({"params": a.params["G_A"]}), path)
    config = tiny_config(init_from=path, init_networks="G_B")  # G_A and G_B have one shape here
    method, fresh = _fresh(config)
    state, record = init_from.apply_init(method, config, fresh)
    assert _equal(state.params["G_B"], a.params["G_A"])
    assert _equal(state.params["G_A"], fresh.params["G_A"]) and record.step is None
    with pytest.raises(init_from.InitFromError, match="must name one of G_A, G_B, D_A, D_B"):
        init_from.apply_init(method, tiny_config(init_from=path, init_networks="G_A,G_B"), fresh)
    with pytest.raises(init_from.InitFromError, match=r"model\.1\.weight"):  # a G is not a D
        init_from.apply_init(method, tiny_config(init_from=path, init_networks="D_A"), fresh)


def test_names_and_required_networks_are_validated(monkeypatch):
    assert init_from.parse_networks(" G_A, f=C ,") == {"G_A": "G_A", "f": "C"}
    with pytest.raises(config_validation.ConfigError, match=r"config\.init_networks=.*repeated"):
        init_from.parse_networks("G_A,G_A=G_B")
    for overrides, message in ((dict(init_from="x"), r"config\.init_networks is empty"),
                               (dict(init_networks="G_A"), r"config\.init_from is empty")):
        with pytest.raises(config_validation.ConfigError, match=message):
            init_from.validate_init(tiny_config(**overrides), CycleGAN)
    init_from.validate_init(tiny_config(), CycleGAN)  # CycleGAN needs no earlier stage
    # A second stage never starts from random weights: training refuses before step 0.
    monkeypatch.setattr(CycleGAN, "required_init", classmethod(lambda cls, config: ("G_A",)))
    with pytest.raises(config_validation.ConfigError, match=r"config\.init_from is empty, but cyclegan must take G_A"):
        train.train_and_evaluate(tiny_config(max_steps=2), "/nonexistent/never-created")
    with pytest.raises(config_validation.ConfigError, match=r"config\.init_networks='D_A' must include G_A"):
        init_from.validate_init(tiny_config(init_from="x", init_networks="D_A"), CycleGAN)


def test_command_line_says_new_initialised_and_resumed_and_resume_ignores_init_from(run_a, tmp_path):
    """Run B from A's G_A and D_A via the CLI, then resume it with init_from pointing nowhere."""
    a_dir, a = run_a
    b_dir = str(tmp_path / "run_b")
    config = tiny_config(max_steps=2, checkpoint_every=2)
    cmd = [sys.executable, "-m", "launch.train", f"--workdir={b_dir}"] + flags_for(config)
    first = subprocess.run(cmd + [f"--config.init_from={a_dir}", "--config.init_networks=G_A,D_A"],
                           cwd=REPO, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr[-3000:]
    out = first.stdout + first.stderr
    assert f"starting a new run in {b_dir}" in out
    assert f"initialising G_A, D_A from {os.path.abspath(a_dir)} step 2" in out
    meta = checkpoint.Checkpointer.for_workdir(b_dir).read_meta(2)
    assert meta["init_from"] == {"path": os.path.abspath(a_dir), "step": 2,
                                 "networks": {"G_A": "G_A", "D_A": "D_A"}}

    resumed = subprocess.run(
        [c.replace("--config.max_steps=2", "--config.max_steps=4") for c in cmd]
        + [f"--config.init_from={tmp_path / 'gone'}", "--config.init_networks=G_A", "--verbose"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    out = resumed.stdout + resumed.stderr
    assert f"resuming from step 2 in {b_dir}" in out and "starting a new run" not in out
    # --verbose prints the resolved config after the header (a plain run only names config.json).
    assert "\nconfig:\n" in resumed.stdout and "\nngf: 4\n" in resumed.stdout
    assert "config:" not in first.stdout and "ngf: 4" not in first.stdout
    assert "is ignored: the run resumes from its own checkpoint" in out
    assert "changed config" not in out  # init_from changes nothing in a resumed run
    meta = checkpoint.Checkpointer.for_workdir(b_dir).read_meta(4)
    assert meta["init_from"]["path"] == os.path.abspath(a_dir)  # the first stage's record stays
    assert meta["data_step"] == 4
