"""The `config.eval` block and `config.eval_every`, defined once for every method's config.

A config file calls `add_eval_keys(c)`; `validate_eval(config)` names the key of a bad
value. Paths of target-domain classifiers are given per domain, like the data paths.
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

from unpaired.config_checks import ConfigError

SELECT_AUTO, SELECT_NONE = "auto", "none"


def eval_config() -> ml_collections.ConfigDict:
    """The eval fields with their defaults (evaluation itself is off while eval_every = 0)."""
    return ml_collections.ConfigDict(dict(
        classifiers="",         # "domain=workdir,...": a classifier run (dtn_pretrain) per TARGET domain
        test_size=0,            # the first N test images of each domain (0: the whole test split)
        batch_size=100,         # images per evaluation batch (the last batch is padded, then dropped)
        select="auto",          # best.json metric: auto (source held-out accuracy) | none | a metric name
        pixel_da_steps=0,       # launch/evaluate: train a classifier on translated source images (0: off)
        pixel_da_batch=64,
        pixel_da_lr=3e-4,
        pixel_da_nf=64,         # that classifier's width (dtn_pretrain's f)
        pixel_da_size=0,        # the first N labelled source training images it learns from (0: all)
    ))


def add_eval_keys(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Adds `eval_every` (0 = off) and the `eval` block to a method's config; returns it."""
    c.eval_every = 0            # evaluate every k steps and at the end (unpaired.eval.run)
    c.eval = eval_config()
    return c


def parse_classifiers(text: str) -> dict[str, str]:
    """'B=/runs/clf_b,A=/runs/clf_a' -> {domain: workdir}; ConfigError naming config.eval.classifiers."""
    out: dict[str, str] = {}
    for part in (p.strip() for p in str(text or "").split(",")):
        if not part:
            continue
        name, sep, path = (s.strip() for s in part.partition("="))
        if not sep or not name or not path or name in out:
            raise ConfigError(f"config.eval.classifiers={text!r} must be comma-separated "
                              f"domain=workdir entries, each domain once; bad entry {part!r}")
        out[name] = path
    return out


def _int_at_least(block: Any, key: str, minimum: int, prefix: str) -> None:
    value = block[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{prefix}.{key}={value!r} must be an integer >= {minimum}")


def validate_eval(config: ml_collections.ConfigDict, domains: tuple[str, ...] = ()) -> None:
    """Raises ConfigError naming the first eval key whose value cannot work (absent keys: off)."""
    if "eval_every" in config:
        _int_at_least(config, "eval_every", 0, "config")
    if "eval" not in config:
        return
    e = config.eval
    for key, minimum in (("test_size", 0), ("batch_size", 1), ("pixel_da_steps", 0),
                         ("pixel_da_batch", 1), ("pixel_da_nf", 1),
                         ("pixel_da_size", 0)):
        if key in e:
            _int_at_least(e, key, minimum, "config.eval")
    if "pixel_da_lr" in e and not e.pixel_da_lr > 0:
        raise ConfigError(f"config.eval.pixel_da_lr={e.pixel_da_lr!r} must be > 0")
    if not isinstance(e.get("select", SELECT_AUTO), str) or not e.get("select", SELECT_AUTO):
        raise ConfigError(f"config.eval.select={e.get('select')!r} must be auto, none or a metric name")
    for domain, path in parse_classifiers(e.get("classifiers", "")).items():
        if domains and domain not in domains:
            raise ConfigError(f"config.eval.classifiers names domain {domain!r}, which is not one "
                              f"of this method's domains {', '.join(domains)}")
        if not os.path.isdir(os.path.join(path, "checkpoints")):
            raise ConfigError(f"config.eval.classifiers entry {domain}={path!r} is not a training "
                              "workdir (no checkpoints/ folder); train one with a *_pretrain preset")
