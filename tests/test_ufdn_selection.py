"""UFDN model selection (issue 11, item 7): the held-out source split and the selection
record, pure functions a periodic-evaluation hook calls with `UFDN.digit_accuracy`."""

import numpy as np
import pytest

from unpaired.methods.ufdn import holdout_split, select_model


def test_holdout_split_is_fixed_disjoint_and_complete():
    kept, held = holdout_split(100, 20, seed=3)
    again_kept, again_held = holdout_split(100, 20, seed=3)
    assert np.array_equal(held, again_held) and np.array_equal(kept, again_kept)
    assert len(held) == 20 and len(kept) == 80 and not set(held) & set(kept)
    assert np.array_equal(np.sort(np.concatenate([kept, held])), np.arange(100))
    assert not np.array_equal(holdout_split(100, 20, seed=4)[1], held)
    assert not np.array_equal(held, np.arange(20))  # drawn, not the file's first images
    for size in (0, 100):
        with pytest.raises(ValueError, match="size"):
            holdout_split(100, size, seed=0)


def test_selection_keeps_the_source_rule_apart_from_the_reference_rule():
    record = select_model(None, 500, source_val=0.80, target_test=0.60)
    assert record["improved"] == ["source_val", "target_test"]
    record = select_model(record, 1000, source_val=0.90, target_test=0.55)
    assert record["improved"] == ["source_val"]
    before = dict(record)
    record = select_model(record, 1500, source_val=0.90, target_test=0.70)  # a tie: keep 1000
    assert before["source_val"] == {"step": 1000, "accuracy": 0.90}  # the input is not changed
    assert record["source_val"] == {"step": 1000, "accuracy": 0.90}
    assert record["target_test"] == {"step": 1500, "accuracy": 0.70}
    assert record["improved"] == ["target_test"]
    assert [h["step"] for h in record["history"]] == [500, 1000, 1500]
    record = select_model(record, 2000, source_val=0.95)  # no target evaluation this time
    assert record["improved"] == ["source_val"] and record["target_test"]["step"] == 1500
