"""Fixed evaluation sets: the same images, in the same order, at every evaluation.

Whole labelled splits in memory and `batched`, a function mapped over them in batches of
one size (one compiled program). Evaluation, DTN's end-of-training scores and pixel-level
DA read them; they sit with the data so that methods need nothing from `eval/`.

A domain's 'test' split (its first `limit` images) or its 'holdout' split (the
config.data.holdout training images that training never reads), prepared as the
reference prepares test images (load_size = crop_size, no flip, no random crop).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from unpaired import data
from unpaired.data.spec import DataSpec
from unpaired.data.sources import as_image
from unpaired.data.transforms import Preprocess


@dataclasses.dataclass(frozen=True)
class EvalSet:
    """images float32 [N,H,W,C] in [-1, 1]; labels int32 [N] or None."""

    domain: str
    split: str
    images: np.ndarray
    labels: np.ndarray | None


def load_set(data_config: Any, domain: str, split: str, channels: int, labelled: bool,
             limit: int = 0) -> EvalSet:
    """Domain `domain`'s `split` ('test', 'holdout' or 'train': all but the held-out), first `limit` (0: all)."""
    spec = DataSpec(domains=(domain,), channels={domain: channels},
                    labels=(domain,) if labelled else ())
    loader = data.make_loader(data_config, split=split, batch_size=1, seed=0, spec=spec)
    crop = data_config.crop_size
    transform = Preprocess(mode=data_config.preprocess, load_size=crop, crop_size=crop, flip=False)
    source = loader.sources[domain]
    n = len(source) if limit <= 0 else min(limit, len(source))
    rng = np.random.default_rng(0)  # unused by eval transforms (no crop, no flip); required by them
    images = []
    for i in range(n):
        item = source[i]
        if not hasattr(item, "mode"):  # an array item: as the loader does
            arr = np.asarray(item)
            item = as_image(arr, 1 if arr.ndim == 2 or arr.shape[-1] == 1 else 3)
        images.append(transform(item, rng))
    labels = loader.labels[domain][:n].astype(np.int32) if labelled else None
    return EvalSet(domain, split, np.stack(images).astype(np.float32), labels)


def batched(fn: Callable[[Any], Any], images: np.ndarray, batch_size: int) -> np.ndarray:
    """fn over `images` in batches of exactly `batch_size` (the last padded, its padding dropped)."""
    import jax.numpy as jnp  # pylint: disable=import-outside-toplevel  (jax only where it runs)

    outs, n = [], len(images)
    for start in range(0, n, batch_size):
        chunk = images[start:start + batch_size]
        real = len(chunk)
        if real < batch_size:
            pad = np.repeat(chunk[-1:], batch_size - real, axis=0)
            chunk = np.concatenate([chunk, pad])
        outs.append(np.asarray(fn(jnp.asarray(chunk)))[:real])
    return np.concatenate(outs) if outs else np.zeros((0,))
