"""Evaluation inside the training loop: every config.eval_every steps and at the end.

The metrics (`unpaired.eval.run.evaluate`) go to TensorBoard and metrics.jsonl under an
`eval/` prefix and to stdout. Model selection uses the source held-out accuracy
(config.eval.select, never a target test metric): the best step and its metrics are in
`<workdir>/best.json` and its whole state in `<workdir>/best/checkpoints/<step>`, outside
the rotating `checkpoints/`, so it is never garbage-collected; a resumed run keeps the
record and replaces it only with a better one.

The references select their reported model on the target test set; that rule's choice is
recorded apart, for comparison only, in `<workdir>/best_on_target_test.json` (no state is
kept for it, and it never decides anything here).
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping

import jax
import ml_collections

from unpaired import checkpoint
from unpaired.eval import run

log = logging.getLogger(__name__)

BEST_JSON = "best.json"
BEST_DIR = "best"
TARGET_TEST_JSON = "best_on_target_test.json"
TARGET_TEST_PREFIX = "da_accuracy/"  # target test-set accuracy: the references' selection metric


def read_best(workdir: str, name: str = BEST_JSON) -> dict[str, Any] | None:
    """The best record of a run (None before its first selected evaluation); `name`
    TARGET_TEST_JSON reads the references' target-test rule's record instead."""
    path = os.path.join(workdir, name)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _write_json(path: str, value: Mapping[str, Any]) -> None:
    """Atomically, from process 0 only (every process evaluates and saves the global state)."""
    if jax.process_index() != 0:
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
    os.replace(tmp, path)  # a reader never sees half a record


class Evaluator:
    """Holds the fixed sets and classifiers of one run; called at each evaluation step."""

    def __init__(self, method: Any, config: ml_collections.ConfigDict, workdir: str,
                 eval_data: run.EvalData | None = None):
        self.method, self.config, self.workdir = method, config, workdir
        self.data = eval_data or run.load_eval_data(method, config)
        self.select = str(config.eval.get("select", "auto"))
        self.best = read_best(workdir)
        self.best_on_test = read_best(workdir, TARGET_TEST_JSON)
        self.verify = bool(config.get("verify_checkpoints", True))

    def __call__(self, step: int, state: Any, writer: Any, meta: Mapping[str, Any]) -> dict[str, float]:
        """Evaluates, logs and prints; saves `state` as the best if it is. Returns the metrics."""
        metrics = run.evaluate(self.method, state, self.config, self.data)
        if writer is not None and metrics:
            writer.scalars(step, {f"eval/{k}": v for k, v in metrics.items()})
        print(f"eval step {step}: " + (" ".join(f"{k}={v:.4f}" for k, v in sorted(metrics.items()))
                                       or "nothing to report (see config.eval)"), flush=True)
        chosen = run.selection_value(metrics, self.select)
        if chosen is not None:
            what, value = chosen
            if self.best is None or self.best.get("select") != what or value > self.best["value"]:
                self._save_best(step, state, meta, what, value, metrics)
        self._note_target_test_rule(step, metrics)
        return metrics

    def _note_target_test_rule(self, step: int, metrics: Mapping[str, float]) -> None:
        """Records the step the references' rule (mean target test accuracy) would pick."""
        values = [v for k, v in sorted(metrics.items()) if k.startswith(TARGET_TEST_PREFIX)]
        if not values:
            return
        value = float(sum(values) / len(values))
        if self.best_on_test is not None and value <= self.best_on_test["value"]:
            return
        self.best_on_test = {
            "step": int(step), "select": f"mean({TARGET_TEST_PREFIX}*)", "value": value,
            "metrics": {k: float(v) for k, v in metrics.items()},
            "note": "the references' selection on the target test set, for comparison only; "
                    f"our model selection is in {BEST_JSON}"}
        _write_json(os.path.join(self.workdir, TARGET_TEST_JSON), self.best_on_test)

    def _save_best(self, step: int, state: Any, meta: Mapping[str, Any], what: str, value: float,
                   metrics: Mapping[str, float]) -> None:
        directory = os.path.join(self.workdir, BEST_DIR, checkpoint.CHECKPOINT_SUBDIR)
        ckpt = checkpoint.Checkpointer(directory, keep=1, async_save=False, verify=self.verify)
        try:
            ckpt.save(step, state, dict(meta), force=True)
        finally:
            ckpt.close()
        self.best = {"step": int(step), "select": what, "value": float(value),
                     "metrics": {k: float(v) for k, v in metrics.items()},
                     "checkpoint": os.path.join(BEST_DIR, checkpoint.CHECKPOINT_SUBDIR, str(int(step)))}
        _write_json(os.path.join(self.workdir, BEST_JSON), self.best)
        log.info("step %d is the best so far by %s = %.4f", step, what, value)


def make_evaluator(method: Any, config: ml_collections.ConfigDict, workdir: str) -> Evaluator | None:
    """An Evaluator when config.eval_every > 0, else None (evaluation off)."""
    if int(config.get("eval_every", 0)) <= 0:
        return None
    return Evaluator(method, config, workdir)
