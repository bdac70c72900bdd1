"""The digits benchmark's protocol pieces that need no data: schedules stretched with the run,
metrics a procedure does not train marked, the references' selection read from the curves."""

import dataclasses
import importlib
import json

import pytest

from configs import ufdn as ufdn_config
from configs import unit as unit_config
from unpaired import config_validation
from unpaired.benchmarks import digits as bench
from tests.helpers import fake_digits_root


def test_step_counted_schedules_stretch_with_the_run():
    unit = unit_config.get_config("digits")
    unit.lr_policy, unit.max_steps, unit.step_size = "step", 300, 200  # StepLR every 200 of 300
    bench.rescale_schedules(unit, 1000)
    assert unit.step_size == 667
    config, _ = bench.method_config(bench.Settings(steps=3000), "unit", "mnist2usps", 0, {})
    assert config.max_steps == 3000 and config.lr_policy == "constant"  # the preset's own: nothing to stretch
    ufdn = ufdn_config.get_config("digits")  # 2,000 steps; ramps over 100 and 1,000 steps
    bench.rescale_schedules(ufdn, 5000)
    assert ufdn.lambdas.pix_recon == (10.0, 1.0, 250) and ufdn.lambdas.feat_domain == (0.0, 1.0, 2500)
    assert ufdn.lambdas.kl == (1e-6, 1e-6, 1)  # constants stay constants
    same = unit_config.get_config("digits")
    same.lr_policy, same.max_steps, same.step_size = "step", 300, 200
    bench.rescale_schedules(same, 300)
    assert same.step_size == 200


def _result(tmp_path, method, seed, curve):
    workdir = tmp_path / f"{method}_{seed}"
    workdir.mkdir()
    key = "eval/da_accuracy/B" if method in bench.LATENT_DA else "eval/translation_accuracy/A_to_B"
    with open(workdir / "metrics.jsonl", "w", encoding="utf-8") as f:
        for step, value in curve:
            f.write(json.dumps({"step": step, key: value, "loss": 1.0}) + "\n")
            f.write(json.dumps({"step": step, "loss": 0.5}) + "\n")
    return {"method": method, "direction": "mnist2usps", "seed": seed, "workdir": str(workdir),
            "src": "A", "tgt": "B", "steps": 30, "networks": "small", "translation_accuracy": 0.25,
            "da_accuracy": 0.5 if method in bench.LATENT_DA else None, "pixel_da_accuracy": 0.125,
            "diversity": 0.75, "diversity_within_class": 0.375}


def test_table_marks_untrained_metrics_and_shows_the_references_selection(tmp_path):
    results = [_result(tmp_path, "ufdn", 0, [(10, 0.5), (20, 0.9), (30, 0.7)]),
               _result(tmp_path, "ufdn", 1, [(10, 0.6), (20, 0.7)]),
               _result(tmp_path, "dtn", 0, [(10, 0.2), (20, 0.4)])]
    assert bench.reference_selection(results[0]) == 0.9 and bench.last_evaluation(results[0]) == 0.7
    s = bench.Settings(methods=("ufdn", "dtn"), directions=("mnist2usps",), seeds=2, steps=30,
                       output=str(tmp_path / "results.md"))
    text = bench.write_results(s, results, {}, {"translations": [], "curves": []}, str(tmp_path / "figs"))
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in text.splitlines()
            if line.startswith("| ufdn |") or line.startswith("| dtn |")}
    # translation, latent DA, pixel DA, diversity, within class, last step, best target test
    assert rows["ufdn"][2:9] == ["n/t", "0.500 ± 0.000", "n/t", "n/t", "n/t", "0.700 ± 0.000",
                                 "0.800 ± 0.141"]
    assert rows["dtn"][2:9] == ["0.250 (1 seed)", "—", "0.125 (1 seed)", "0.750 (1 seed)", "0.375 (1 seed)",
                                "0.400 (1 seed)", "0.400 (1 seed)"]
    assert "**n/t**: a metric the method's procedure does not train" in text



def test_report_only_rebuilds_from_the_kept_record_without_the_runs(tmp_path):
    s = bench.Settings(methods=("dtn",), directions=("mnist2usps",), seeds=1, steps=30, report_only=True,
                       workroot=str(tmp_path / "gone"), output=str(tmp_path / "docs" / "results.md"))
    kept = tmp_path / "docs" / "results_runs"
    r = _result(tmp_path, "dtn", 0, [(10, 0.2), (20, 0.4)])
    (kept / "dtn_mnist2usps_seed0").mkdir(parents=True)
    (kept / "dtn_mnist2usps_seed0" / "result.json").write_text(json.dumps(r))
    (kept / "dtn_mnist2usps_seed0" / "metrics.jsonl").write_text(open(r["workdir"] + "/metrics.jsonl").read())
    assert bench.record_dir(s) == str(kept)
    got = bench.run_one(s, "dtn", "mnist2usps", 0, {})
    assert got["workdir"] == str(kept / "dtn_mnist2usps_seed0") and bench.reference_selection(got) == 0.4
    assert bench.run_one(s, "dtn", "mnist2usps", 1, {}) is None  # not finished anywhere
    data = tmp_path / "data"  # a data root of its own: the test never reads the user's
    for d in ("mnist", "usps"):
        (data / d).mkdir(parents=True)
        (data / d / "train-images-idx3-ubyte.gz").write_bytes(b"")
    s.data_root = str(data)
    with pytest.raises(ValueError, match="no finished classifier for mnist, usps"):
        bench.run_benchmark(s)
    # UFDN's uda alone needs no judge: its translations are not trained (n/t), nothing to judge.
    assert bench.run_benchmark(dataclasses.replace(s, methods=("ufdn",))) == []
    for d in ("mnist", "usps"):
        (kept / f"classifier_{d}").mkdir()
        (kept / f"classifier_{d}" / "accuracy.json").write_text(json.dumps({"accuracy": 0.5}))
    assert [x["seed"] for x in bench.run_benchmark(s)] == [0]
    assert "| dtn | mnist2usps | 0.250 (1 seed) |" in (tmp_path / "docs" / "results.md").read_text()


def test_cpu_networks_take_each_cpu_preset_whole():
    s = bench.Settings(networks="cpu", steps=123)
    config, names = bench.method_config(s, "ufdn", "usps2mnist", 2, {})
    preset = ufdn_config.get_config("uda_cpu")
    assert bench.steps_of(s, "ufdn") == preset.max_steps == config.max_steps
    assert config.lr == preset.lr and config.encoder == preset.encoder and config.seed == 2
    assert config.data.domains == "usps,mnist" and names == {"usps": "usps", "mnist": "mnist"}
    assert bench.run_name(s, "ufdn", "usps2mnist", 2) == "ufdn_usps2mnist_cpu_seed2"
    assert bench.run_name(bench.Settings(), "ufdn", "usps2mnist", 2) == "ufdn_usps2mnist_seed2"
    assert set(bench.CPU_PRESETS) == set(bench.METHODS)  # every method has a CPU preset


@pytest.mark.parametrize("method,name,preset_name,reference,widths", [
    ("unit_da", "unit", "{direction}_cpu", "{direction}", ("gen_ch", "dis_ch")),
    ("dtn", "dtn", "{direction}_cpu", "{direction}", ("ngf", "ndf")),
    ("cyclegan", "cyclegan", "{direction}_cpu", "horse2zebra", ("ngf", "ndf")),
    ("unit", "unit", "{direction}_master_cpu", "folder", ("gen_dim", "dis_dim", "gen_shared_blocks", "dis_shared_layers"))])
def test_cpu_presets_per_direction_are_taken_whole(method, name, preset_name, reference, widths,
                                                   monkeypatch, tmp_path):
    """The CPU presets of UNIT DA, DTN, CycleGAN and UNIT master are one per direction: the
    benchmark takes the direction's preset (its widths, batch and length) and its own data
    order, and the preset alone (`--config=configs/<name>.py:<preset>`) reads the direction's
    source as domain A."""
    monkeypatch.setenv("UNPAIRED_DATA", fake_digits_root(tmp_path))  # the presets' IDX files exist
    s = bench.Settings(networks="cpu", steps=123)
    module = importlib.import_module(f"configs.{name}")
    for direction in ("mnist2usps", "usps2mnist"):
        preset = module.get_config(preset_name.format(direction=direction))
        config, names = bench.method_config(s, method, direction, 1, {})
        assert config.method == preset.method == method
        config_validation.validate(preset)  # a user can train the preset as it is
        assert f"/{bench.DIRECTIONS[direction][0]}/" in preset.data.idx_A
        assert [config[w] for w in widths] == [preset[w] for w in widths]
        reference_widths = [module.get_config(reference.format(direction=direction))[w] for w in widths]
        assert [config[w] for w in widths] != reference_widths
        assert (config.batch_size, config.max_steps) == (preset.batch_size, preset.max_steps)
        assert bench.steps_of(s, method) == preset.max_steps and config.seed == 1
        assert names == dict(zip("AB", bench.DIRECTIONS[direction]))
        if method == "unit":  # the seed's shared layers for USPS -> MNIST only (docs/quality.md UC3)
            assert (preset.gen_shared_blocks, preset.dis_shared_layers) == (
                (1, 1) if direction == "usps2mnist" else (0, 0))


def test_kept_records_name_the_data_by_its_variable(tmp_path):
    root = str(tmp_path / "data")
    text = '{"idx": "mnist=%s/mnist/train.gz", "other": "/elsewhere"}' % root
    assert bench.portable(text, root) == '{"idx": "mnist=$UNPAIRED_DATA/mnist/train.gz", "other": "/elsewhere"}'


def test_the_protocol_names_each_methods_evaluation_interval_when_reused_runs_differ(tmp_path):
    def run(method, every):
        folder = tmp_path / f"{method}_{every}"
        folder.mkdir(exist_ok=True)
        (folder / "config.json").write_text(json.dumps({"eval_every": every}))
        return {"method": method, "workdir": str(folder)}

    s = bench.Settings(eval_every=500)
    assert bench._eval_every_phrase(s, [run("dtn", 500), run("unit_da", 500)]) == "500"
    assert bench._eval_every_phrase(s, [run("ufdn", 1000), run("dtn", 500)]) == "1000 (ufdn), 500 (dtn)"


def test_overrides_change_every_runs_config_and_name_their_own_runs():
    """--overrides (a diagnostic: docs/quality.md's runs) sets dotted keys to Python literals,
    puts the change in the runs' folder names so preset runs are never reused for them, and
    names a bad entry, a key the config lacks, or a key the benchmark's own flags set."""
    s = bench.Settings(networks="cpu", overrides="lr_schedule=cosine, lambdas.kl=(0, 1e-5, 100),lr=1")
    config, _ = bench.method_config(s, "ufdn", "mnist2usps", 0, {})
    preset = ufdn_config.get_config("uda_cpu")
    assert (config.lr_schedule, tuple(config.lambdas.kl), config.lr) == ("cosine", (0, 1e-5, 100), 1.0)
    assert config.batch_size == preset.batch_size and config.max_steps == preset.max_steps
    name = bench.run_name(s, "ufdn", "mnist2usps", 0)
    assert name.startswith("ufdn_mnist2usps_cpu_lr_schedule-cosine") and name.endswith("_seed0")
    assert name != bench.run_name(bench.Settings(networks="cpu"), "ufdn", "mnist2usps", 0)
    for overrides, needle in (("lr_schedul=cosine", "has no 'lr_schedul'"),
                              ("lambdas.kll=(0,0,1)", "has no 'kll'"),
                              ("seed=3", "set by the benchmark's own flags"),
                              ("cosine", "bad entry 'cosine'")):
        with pytest.raises(ValueError, match=needle):
            bench.method_config(bench.Settings(networks="cpu", overrides=overrides), "ufdn",
                                "mnist2usps", 0, {})


def test_a_run_is_marked_loaded_when_others_shared_the_cores_during_its_training():
    """The start sample alone misses a run that another one joined later (issue 23: a
    CycleGAN run that started alone and trained beside a UNIT run for 40 minutes)."""
    base = {"steps": 30, "networks": "cpu", "train_seconds": 600.0}
    assert not bench._loaded({**base, "others_busy": 0.01, "others_busy_during": 0.1})
    assert bench._loaded({**base, "others_busy": 0.01, "others_busy_during": 1.2})
    assert bench._loaded({**base, "others_busy": 0.9})  # records from before the window
    assert bench._loaded({**base, "others_busy": 0.01, "shared_cores": True})  # marked by hand
    assert bench._runs_length([{**base, "others_busy": 0.01, "others_busy_during": 1.2}]).endswith("(loaded)")
