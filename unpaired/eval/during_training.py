"""Evaluation inside the training loop: every config.eval_every steps and at the end.

The metrics (`unpaired.eval.run.evaluate`) go to TensorBoard and metrics.jsonl under an
`eval/` prefix and to stdout. Model selection uses the source held-out accuracy
(config.eval.select, never a target test metric): the best step and its metrics are in
`<workdir>/best.json` and its whole state in `<workdir>/best/checkpoints/<step>`, outside
the rotating `checkpoints/`, so it is never garbage-collected; a resumed run keeps the
record and replaces it only with a better one.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Mapping

import ml_collections

from unpaired import checkpoint
from unpaired.eval import run

log = logging.getLogger(__name__)

BEST_JSON = "best.json"
BEST_DIR = "best"


def read_best(workdir: str) -> dict[str, Any] | None:
    """The best record of a run (None before its first selected evaluation)."""
    path = os.path.join(workdir, BEST_JSON)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _write_json(path: str, value: Mapping[str, Any]) -> None:
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
        return metrics

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
