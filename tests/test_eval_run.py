"""The evaluation seam (unpaired.eval.run) and its use in the training loop.

Tiny widths on the built-in digits: the held-out split is fixed and disjoint from
training; `evaluate` equals an independent per-image computation (translation accuracy,
cycle L1, a method's digit_accuracy); training with eval_every logs eval/ metrics,
keeps the best step (source held-out accuracy) in best.json and best/, and a resumed run
keeps that record.
"""

import json
import os

import jax
import numpy as np
import pytest

from configs import cyclegan as cyclegan_config
from configs import dtn as dtn_config
from configs import ufdn as ufdn_config
from tests.overrides import set_keys
from unpaired import checkpoint, config_validation, data, methods, train, translate
from unpaired.data.spec import DataSpec
from unpaired.eval import diversity, during_training, fid, report, run


def classifier_config(domain, steps=3):
    config = dtn_config.get_config("digits_pretrain")
    config.source_domain, config.target_domain = domain, "B" if domain == "A" else "A"
    config.nf, config.feature_dim = 4, 8
    config.batch_size = 8
    config.data.num_workers = 1
    config.max_steps = steps
    config.log_every = config.sample_every = config.checkpoint_every = steps
    return config


@pytest.fixture(scope="module")
def classifiers(tmp_path_factory):
    """A dtn_pretrain workdir per digit domain (A handwritten, B printed), saved untrained.

    The metrics are checked against an independent computation with the same classifier,
    so its quality does not matter; saving a fresh state skips a training compile.
    """
    out = {}
    for i, domain in enumerate(("A", "B")):
        config = classifier_config(domain)
        workdir = str(tmp_path_factory.mktemp(f"clf_{domain}"))
        state = methods.build(config).create_state(jax.random.key(10 + i))
        with checkpoint.Checkpointer.for_workdir(workdir, async_save=False) as ckpt:
            ckpt.save(0, state, {"config": config.to_dict(), "method": config.method})
        out[domain] = workdir
    return out


def cyclegan_tiny(classifiers=None, **overrides):
    config = cyclegan_config.get_config("digits")
    config.ngf = config.ndf = 2
    config.netG = "resnet_6blocks"
    config.batch_size = 2
    config.pool_size = 2
    config.data.num_workers = 1
    config.log_every = 1
    config.sample_every = 100
    config.checkpoint_every = 2
    config.keep_checkpoints = 1
    config.data.holdout = 16
    config.eval.test_size = 21   # 21 = 16 + 5: the second batch is padded
    config.eval.batch_size = 16
    if classifiers:
        config.eval.classifiers = ",".join(f"{d}={p}" for d, p in classifiers.items())
    return set_keys(config, overrides)


def test_holdout_split_is_fixed_disjoint_and_off_by_default():
    config = cyclegan_tiny()
    spec = DataSpec(domains=("A",), channels={"A": 1}, labels=("A",))
    without_key = {k: v for k, v in config.data.items() if k != "holdout"}  # as before the key
    plain = data.make_loader(without_key, split="train", batch_size=2, seed=0, spec=spec)
    n = len(plain.sources["A"])
    config.data.holdout = 0
    same = data.make_loader(config.data, split="train", batch_size=2, seed=0, spec=spec)
    np.testing.assert_array_equal(same.batch(3)["A"], plain.batch(3)["A"])  # holdout 0: unchanged
    config.data.holdout = 16
    held = data.make_loader(config.data, split="holdout", batch_size=2, seed=0, spec=spec)
    rest = data.make_loader(config.data, split="train", batch_size=2, seed=5, spec=spec)
    assert len(held.sources["A"]) == 16 and len(rest.sources["A"]) == n - 16
    held_idx, rest_idx = held.sources["A"].indices, rest.sources["A"].indices
    assert not set(held_idx) & set(rest_idx) and len(set(held_idx) | set(rest_idx)) == n
    np.testing.assert_array_equal(held.labels["A"], plain.labels["A"][held_idx])
    again = data.make_loader(config.data, split="holdout", batch_size=2, seed=9, spec=spec)
    np.testing.assert_array_equal(again.sources["A"].indices, held_idx)  # the same for any seed
    assert len(set(held.labels["A"])) > 1  # a mixed slice, not one class
    config.data.holdout = n
    with pytest.raises(data.DataError, match="config.data.holdout"):
        data.make_loader(config.data, split="train", batch_size=2, seed=0, spec=spec)


def test_validation_names_the_key(classifiers):
    for key, value, match in (("eval_every", -1, "config.eval_every"),
                              ("data.holdout", -2, "config.data.holdout"),
                              ("eval.test_size", -1, "config.eval.test_size"),
                              ("eval.classifiers", "Z=/nowhere", "config.eval.classifiers"),
                              ("eval.classifiers", "A=/nowhere", "config.eval.classifiers")):
        with pytest.raises(config_validation.ConfigError, match=match.replace(".", r"\.")):
            config_validation.validate(cyclegan_tiny(**{key: value}))
    config_validation.validate(cyclegan_tiny(classifiers, eval_every=2))


def test_evaluate_equals_an_independent_computation(classifiers):
    config = cyclegan_tiny(classifiers)
    method = methods.build(config)
    state = method.create_state(jax.random.key(3))
    eval_data = run.load_eval_data(method, config)
    metrics = run.evaluate(method, state, config, eval_data)
    assert sorted(metrics) == ["classifier_fid/A_to_B", "classifier_fid/B_to_A",
                               "classifier_kid/A_to_B", "classifier_kid/B_to_A",
                               "cycle_l1/A_to_B", "cycle_l1/B_to_A",
                               "diversity/A_to_B", "diversity/B_to_A",
                               "diversity_within_class/A_to_B", "diversity_within_class/B_to_A",
                               "translation_accuracy/A_to_B", "translation_accuracy/B_to_A",
                               "translation_accuracy_holdout/A_to_B",
                               "translation_accuracy_holdout/B_to_A"]
    clf = {d: translate.load_workdir_state(p) for d, p in classifiers.items()}
    for s, t, direction in (("A", "B", "AtoB"), ("B", "A", "BtoA")):
        test = eval_data.test[s]
        assert len(test.images) == 21
        # Independent: the whole set in one call (no batching, no padding), then NumPy.
        fakes = np.asarray(jax.jit(lambda p, ms, x: method.translate(p, x, direction, ms))(
            state.params, state.model_state, test.images))
        c_method, c_state, _ = clf[t]
        predicted = np.asarray(jax.jit(c_method.classify)(c_state.params, c_state.model_state, fakes))
        expected = float(np.mean(predicted == test.labels))
        assert abs(metrics[f"translation_accuracy/{s}_to_{t}"] - expected) <= 1 / 21 + 1e-12
        # FID/KID of the translations against t's real test images in t's classifier features.
        feats = jax.jit(c_method.features)
        fa = np.asarray(feats(c_state.params, c_state.model_state, fakes), np.float64)
        fb = np.asarray(feats(c_state.params, c_state.model_state, eval_data.test[t].images), np.float64)
        np.testing.assert_allclose(metrics[f"classifier_fid/{s}_to_{t}"], fid.frechet_distance(
            *fid.statistics(fa), *fid.statistics(fb)), rtol=1e-4)
        np.testing.assert_allclose(metrics[f"classifier_kid/{s}_to_{t}"], fid.kernel_inception_distance(
            fa, fb, 100, 21)["kid_mean"], rtol=1e-4, atol=1e-7)
        back = "BtoA" if direction == "AtoB" else "AtoB"
        again = np.asarray(jax.jit(lambda p, ms, x: method.translate(p, x, back, ms))(
            state.params, state.model_state, fakes))
        expected_l1 = float(np.mean(np.abs(again.astype(np.float64) - test.images)))
        np.testing.assert_allclose(metrics[f"cycle_l1/{s}_to_{t}"], expected_l1, rtol=1e-5)
        np.testing.assert_allclose(metrics[f"diversity/{s}_to_{t}"],
                                   diversity.diversity_ratio(test.images, fakes), rtol=1e-5)
        np.testing.assert_allclose(metrics[f"diversity_within_class/{s}_to_{t}"],
                                   diversity.within_class_ratio(test.images, fakes, test.labels), rtol=1e-5)
        assert len(eval_data.holdout[s].images) == 16
    # The same images every time: a second evaluation gives identical numbers.
    assert run.evaluate(method, state, config, run.load_eval_data(method, config)) == metrics


def test_selection_uses_source_holdout_never_test():
    metrics = {"translation_accuracy/A_to_B": 0.9, "translation_accuracy_holdout/A_to_B": 0.5,
               "translation_accuracy_holdout/B_to_A": 0.7, "cycle_l1/A_to_B": 0.2}
    assert run.selection_value(metrics, "auto") == ("mean(translation_accuracy_holdout/*)", 0.6)
    metrics["da_accuracy_holdout/A"] = 0.4
    assert run.selection_value(metrics, "auto") == ("mean(da_accuracy_holdout/*)", 0.4)
    assert run.selection_value(metrics, "cycle_l1/A_to_B") == ("cycle_l1/A_to_B", -0.2)
    assert run.selection_value({"translation_accuracy/A_to_B": 0.9}, "auto") is None
    assert run.selection_value(metrics, "none") is None
    with pytest.raises(ValueError, match="config.eval.select"):
        run.selection_value(metrics, "nope/x")


@pytest.fixture(scope="module")
def trained(classifiers, tmp_path_factory):
    """A tiny CycleGAN run with in-training evaluation: 2 steps, then resumed to 4."""
    workdir = str(tmp_path_factory.mktemp("trained"))
    train.train_and_evaluate(cyclegan_tiny(classifiers, eval_every=2, max_steps=2), workdir)
    first = during_training.read_best(workdir)
    train.train_and_evaluate(cyclegan_tiny(classifiers, eval_every=2, max_steps=4), workdir)
    return workdir, first


def test_training_evaluates_keeps_the_best_and_resumes_with_it(trained):
    workdir, best = trained

    def eval_rows():
        rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
        return {r["step"]: r for r in rows if "eval/translation_accuracy/A_to_B" in r}

    def score(step):
        return np.mean([evals[step][f"eval/translation_accuracy_holdout/{k}"] for k in ("A_to_B", "B_to_A")])

    evals = eval_rows()
    assert {"eval/cycle_l1/A_to_B", "eval/cycle_l1/B_to_A"} <= set(evals[2])
    assert best["step"] == 2 and best["select"] == "mean(translation_accuracy_holdout/*)"
    np.testing.assert_allclose(best["value"], score(2), rtol=1e-6)
    # Resumed (keep_checkpoints=1): the record is kept and replaced only by a strictly better step.
    assert sorted(evals) == [2, 4]
    best = during_training.read_best(workdir)
    best_step = 4 if score(4) > score(2) else 2
    assert best["step"] == best_step
    np.testing.assert_allclose(best["value"], score(best_step), rtol=1e-6)
    # The best state is kept outside the rotating checkpoints, loadable as a workdir.
    assert os.listdir(os.path.join(workdir, "best", "checkpoints")) == [str(best_step)]
    _, best_state, _ = translate.load_workdir_state(os.path.join(workdir, "best"))
    assert int(best_state.step) == best_step


def test_the_references_target_test_rule_is_recorded_apart(monkeypatch, tmp_path):
    """best.json follows the source held-out accuracy; the target-test choice (the
    references' rule) goes to its own record and never moves best.json or best/."""
    sequence = iter([
        {"da_accuracy_holdout/B": 0.5, "da_accuracy/A": 0.9},
        {"da_accuracy_holdout/B": 0.7, "da_accuracy/A": 0.6},
        {"da_accuracy_holdout/B": 0.6, "da_accuracy/A": 0.95},
    ])
    monkeypatch.setattr(run, "evaluate", lambda *args: next(sequence))
    saved = []
    monkeypatch.setattr(during_training.Evaluator, "_save_best",
                        lambda self, step, state, meta, what, value, metrics: (
                            saved.append(step), setattr(self, "best", {"step": step, "select": what,
                                                                       "value": value})))
    config = ufdn_uda_tiny()
    evaluator = during_training.Evaluator(None, config, str(tmp_path), eval_data=object())
    for step in (1, 2, 3):
        evaluator(step, None, None, {})
    assert saved == [1, 2]  # by source held-out: 0.5, then 0.7; 0.6 is not better
    record = during_training.read_best(str(tmp_path), during_training.TARGET_TEST_JSON)
    assert record["step"] == 3 and record["value"] == 0.95 and "comparison only" in record["note"]
    # A new Evaluator (a resumed run) keeps the record and replaces it only with a better one.
    sequence = iter([{"da_accuracy_holdout/B": 0.1, "da_accuracy/A": 0.9}])
    during_training.Evaluator(None, config, str(tmp_path), eval_data=object())(4, None, None, {})
    assert during_training.read_best(str(tmp_path), during_training.TARGET_TEST_JSON)["step"] == 3


def ufdn_uda_tiny():
    """UFDN procedure uda on two built-in digit domains (B labelled source, A target), tiny nets."""
    config = ufdn_config.get_config("digits")
    config.procedure = "uda"
    config.data.domains = "B,A"
    config.D_feat = [ufdn_config._fc(8), ufdn_config._fc(2, "")]
    config.D_digit = [ufdn_config._fc(10, "")]
    config.lambdas = {"pix_recon": (1.0, 1.0, 1), "kl": (1e-7, 1e-7, 1), "feat_domain": (0.1, 0.1, 1)}
    config.data.holdout = 12
    config.eval.test_size = 21
    config.eval.batch_size = 16
    return config


def test_digit_accuracy_hook_on_target_test_and_source_holdout():
    config = ufdn_uda_tiny()
    config_validation.validate(config)
    method = methods.build(config)
    state = method.create_state(jax.random.key(0))
    eval_data = run.load_eval_data(method, config)
    metrics = run.evaluate(method, state, config, eval_data)
    assert {"da_accuracy/A", "da_accuracy_holdout/B"} <= set(metrics)
    assert not any(k.startswith("translation_accuracy") for k in metrics)  # no classifiers given
    for key, eval_set in (("da_accuracy/A", eval_data.test["A"]),
                          ("da_accuracy_holdout/B", eval_data.holdout["B"])):
        whole = float(jax.jit(method.digit_accuracy)(state.params, state.model_state,
                                                     eval_set.images, eval_set.labels))
        assert abs(metrics[key] - whole) <= 1 / len(eval_set.images) + 1e-12
    assert run.selection_value(metrics, "auto")[0] == "mean(da_accuracy_holdout/*)"


def test_ufdn_translation_procedure_is_scored_without_a_digit_classifier(classifiers):
    # Regression: procedure translation has no D_digit, yet evaluate asked its digit_accuracy
    # (a KeyError) as soon as a target classifier made it load labelled test sets.
    config = ufdn_uda_tiny()
    config.procedure, config.data.domains = "translation", "A,B,C"
    config.lambdas = ufdn_config.get_config("digits").lambdas
    config.data.holdout = 0
    config.eval.classifiers = f"B={classifiers['B']}"
    method = methods.build(config)
    assert not hasattr(method, "digit_accuracy") and hasattr(methods.build(ufdn_uda_tiny()), "digit_accuracy")
    metrics = run.evaluate(method, method.create_state(jax.random.key(0)), config, run.load_eval_data(method, config))
    assert {"translation_accuracy/A_to_B", "translation_accuracy/C_to_B", "diversity/A_to_C"} <= set(metrics)
    assert not any(k.startswith("da_accuracy") for k in metrics)


def test_pixel_da_classifier_learns_and_composes(classifiers):
    from unpaired.eval import pixel_da
    from unpaired.data.sets import load_set

    config = cyclegan_tiny()
    real = load_set(config.data, "B", "train", 1, True, limit=40)
    clf, clf_state = pixel_da.train_classifier(real.images, real.labels, steps=40, nf=4, lr=3e-3,
                                               batch_size=20)
    predicted = np.asarray(jax.jit(clf.classify)(clf_state.params, clf_state.model_state, real.images))
    assert np.mean(predicted == real.labels) > 0.5  # chance is 0.1: it learns its training set
    # The protocol = translate the source set, train on the fakes with source labels, test on target.
    config.eval.pixel_da_nf, config.eval.pixel_da_batch = 4, 8
    method = methods.build(config)
    state = method.create_state(jax.random.key(1))
    source = load_set(config.data, "A", "train", 1, True, limit=24)
    target = load_set(config.data, "B", "test", 1, True, limit=21)
    request = method.resolve_request(run.TranslationRequest(target="B"))
    got = pixel_da.pixel_da_accuracy(method, state, config, "A", "B", request, steps=3,
                                     source_set=source, target_test=target, seed=4)
    fakes = np.asarray(jax.jit(lambda p, ms, x: method.translate(p, x, "AtoB", ms))(
        state.params, state.model_state, source.images))
    c2, s2 = pixel_da.train_classifier(fakes, source.labels, steps=3, nf=4, lr=3e-4, batch_size=8, seed=4)
    expected = np.mean(np.asarray(jax.jit(c2.classify)(s2.params, s2.model_state, target.images))
                       == target.labels)
    assert abs(got - expected) <= 1 / 21 + 1e-12


def test_launch_evaluate_prints_the_metrics_as_json_last(trained):
    import subprocess
    import sys

    workdir, _ = trained
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run(
        [sys.executable, "-m", "launch.evaluate", f"--workdir={workdir}", "--test_size=8",
         "--pixel_da_steps=2", "--config.eval.pixel_da_nf=2"],
        cwd=repo, capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads(out.stdout.strip().splitlines()[-1])
    assert metrics["step"] == 4 and metrics["method"] == "cyclegan"
    for key in ("translation_accuracy/A_to_B", "translation_accuracy/B_to_A", "cycle_l1/A_to_B",
                "translation_accuracy_holdout/A_to_B", "pixel_da_accuracy/A_to_B",
                "pixel_da_accuracy/B_to_A"):
        assert 0.0 <= metrics[key] <= (1.0 if "accuracy" in key else 2.0), key
    # The same numbers as in-process, on the same 8 test images.
    model = report.load_model(workdir)
    model.config.eval.test_size = 8
    direct = run.evaluate(model.method, model.state, model.config,
                          run.load_eval_data(model.method, model.config))
    for key, value in direct.items():
        np.testing.assert_allclose(metrics[key], value, rtol=1e-6, err_msg=key)


def test_report_reads_an_official_weight_file_for_its_one_direction(classifiers):
    from tests.fixtures import make_tf_dtn_checkpoint as fixture

    config = dtn_config.get_config("digits")  # source B (printed) -> target A (handwritten)
    for key, value in fixture.WIDTHS.items():
        config[key] = value
    config.eval.classifiers = f"A={classifiers['A']}"
    config.eval.test_size = 21
    config.eval.batch_size = 16
    model = report.load_model(fixture.PREFIX, config=config)
    assert model.served.direction == "AtoB" and model.state.step == 0
    metrics = report.report(model)
    assert sorted(k for k in metrics if "/" in k) == ["diversity/B_to_A", "diversity_within_class/B_to_A",
                                                      "translation_accuracy/B_to_A"]
    params, model_state, _ = model.method.load_official(fixture.PREFIX, run.TranslationRequest())
    test = run.load_eval_data(model.method, model.config).test["B"]
    fakes = jax.jit(lambda p, ms, x: model.method.translate(p, x, "AtoB", ms))(params, model_state, test.images)
    c_method, c_state, _ = translate.load_workdir_state(classifiers["A"])
    predicted = np.asarray(jax.jit(c_method.classify)(c_state.params, c_state.model_state, fakes))
    assert abs(metrics["translation_accuracy/B_to_A"] - np.mean(predicted == test.labels)) <= 1 / 21 + 1e-12
    with pytest.raises(ValueError, match="--config"):
        report.load_model(fixture.PREFIX)


def test_load_model_errors_name_the_flag_and_the_cause(tmp_path):
    """A missing --workdir is said to be missing (it was called a weight file); a file given
    as --workdir is pointed at --checkpoint; a weight file without --config asks for it."""
    from unpaired.eval import report

    with pytest.raises(ValueError, match=r"^--workdir='/nonexistent' does not exist$"):
        report.load_model("/nonexistent", flag="--workdir")
    weights = tmp_path / "latest_net_G_A.pth"
    weights.write_bytes(b"")
    with pytest.raises(ValueError, match=r"--workdir=.*is a file, not a training workdir.*--checkpoint"):
        report.load_model(str(weights), flag="--workdir")
    with pytest.raises(ValueError, match=r"--checkpoint=.*is a weight file: give --config"):
        report.load_model(str(weights))
    with pytest.raises(ValueError, match=r"--checkpoint='/nonexistent' does not exist"):
        report.load_model("/nonexistent")
