"""Config overrides for the tiny test configs (torch-free: the multi-process workers import it)."""

from __future__ import annotations


def set_keys(config, overrides, sep: str = "."):
    """`config` with each `{'a.b': v}` (or `a__b=v` with sep='__') set as config.a.b = v;
    returns it. One spelling of the tiny test configs' overrides."""
    for key, value in overrides.items():
        target = config
        *parents, leaf = key.split(sep)
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    return config
