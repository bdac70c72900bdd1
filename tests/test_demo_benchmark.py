"""launch.demo_benchmark's library on one tiny demo: trained afresh, timed, scored by a judge of
the target rendering, its record and grid kept, other methods' kept rows reused."""

import json

import pytest

from unpaired.benchmarks import demos

TINY = {"ufdn": {"max_steps": 2, "batch_size": 2, "log_every": 1, "sample_every": 2, "checkpoint_every": 2,
                 "encoder": [["conv", 4, 4, 2, 1, "bn", "LeakyReLU"], ["conv", 4, 4, 2, 1, "bn", "LeakyReLU"],
                             ["conv", 8, 4, 2, 1, "bn", "LeakyReLU"], ["conv", 8, 4, 2, 1, "bn", "LeakyReLU"],
                             ["conv", 8, 4, 2, 1, "", ""]]},
        "classifier": {"max_steps": 3, "nf": 4, "feature_dim": 8, "batch_size": 8, "log_every": 1,
                       "sample_every": 3, "checkpoint_every": 3}}


def test_a_demo_is_trained_scored_and_kept(tmp_path):
    s = demos.Settings(methods=("ufdn",), workroot=str(tmp_path / "runs"), output=str(tmp_path / "demos.md"),
                       overrides=TINY)
    (tmp_path / "demos_runs").mkdir()
    kept_dtn = {"method": "dtn", "preset": "configs/dtn.py:digits", "steps": 7, "seconds": 3.0,
                "others_busy": 0.1, "source": "B (printed)", "target": "A (handwritten)",
                "translation_accuracy": 0.5, "diversity": 0.25, "judge_accuracy": 0.75, "test_images": 400}
    (tmp_path / "demos_runs" / "dtn.json").write_text(json.dumps(kept_dtn))
    stale = tmp_path / "runs" / "ufdn"
    stale.mkdir(parents=True)
    (stale / "from_an_earlier_run").write_text("")
    results = demos.run_benchmark(s)
    assert not (stale / "from_an_earlier_run").exists()  # afresh: a resumed run would time nothing
    assert [r["method"] for r in results] == ["ufdn", "dtn"]
    r = results[0]
    assert r["steps"] == 2 and r["seconds"] > 0 and r["source"] == "A (handwritten)" and r["target"] == "B (printed)"
    assert r["test_images"] == 297 and 0.0 <= r["translation_accuracy"] <= 1.0 and r["diversity"] > 0
    assert json.loads((tmp_path / "demos_runs" / "ufdn.json").read_text()) == r
    assert (tmp_path / "demos_figures" / "ufdn.png").stat().st_size > 500
    text = (tmp_path / "demos.md").read_text()
    assert "| ufdn | `configs/ufdn.py:digits` | A (handwritten) -> B (printed) | 2 |" in text
    # The identity baseline: the judge on the raw source digits, and an older kept record completed.
    assert 0.0 <= r["untranslated_accuracy"] <= 1.0
    assert r["untranslated_accuracy"] * 297 == pytest.approx(round(r["untranslated_accuracy"] * 297))  # of 297
    completed = json.loads((tmp_path / "demos_runs" / "dtn.json").read_text())
    assert completed == {**kept_dtn, "untranslated_accuracy": completed["untranslated_accuracy"]}
    assert completed["untranslated_accuracy"] * 400 == pytest.approx(round(completed["untranslated_accuracy"] * 400))
    assert (f"| dtn | `configs/dtn.py:digits` | B (printed) -> A (handwritten) | 7 | 3 | 0.10 | 0.500 (400 digits) | "
            f"{completed['untranslated_accuracy']:.3f} | 0.250 | 0.750 |") in text
    assert f"(297 digits) | {r['untranslated_accuracy']:.3f} |" in text
    with pytest.raises(ValueError, match="--methods: unknown"):
        demos.run_benchmark(demos.Settings(methods=("gan",)))
