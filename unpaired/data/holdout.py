"""A fixed held-out slice of each domain's training images (config.data.holdout, a count).

Model selection needs labelled images the model never trained on and that are not the
target test set. `holdout_indices(n, count)` picks the same `count` images of an n-image
training set every time (a permutation from a fixed seed, so classes stay mixed even in
files sorted by label, and the same images for every run seed); the 'train' split then
reads the other images, the 'holdout' split these. With count 0 nothing changes.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from unpaired.data.errors import DataError

HOLDOUT_SEED = 20170310  # fixed: the held-out images do not depend on config.seed


def holdout_indices(n: int, count: int) -> np.ndarray:
    """The sorted indices of the `count` held-out images of an `n`-image training set."""
    if not 0 <= count < n:
        raise DataError(f"config.data.holdout={count} must be >= 0 and leave training images "
                        f"(a domain has {n})")
    return np.sort(np.random.default_rng(HOLDOUT_SEED).permutation(n)[:count])


class SubsetSource:
    """The images `indices` of another source (its labels, if any, follow them)."""

    def __init__(self, source: Any, indices: np.ndarray, what: str) -> None:
        self.source = source
        self.indices = np.asarray(indices, np.int64)
        self.name = f"{getattr(source, 'name', type(source).__name__)} ({what})"
        labels = getattr(source, "labels", None)
        self.labels = None if labels is None else np.asarray(labels)[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Any:
        return self.source[int(self.indices[index])]

    def item_name(self, index: int) -> str:
        """The wrapped source's name of the image."""
        inner = int(self.indices[index])
        item_name = getattr(self.source, "item_name", None)
        return item_name(inner) if callable(item_name) else f"{self.name}[{inner}]"


def split_holdout(sources: Mapping[str, Any], count: int, part: str) -> dict[str, Any]:
    """Each training source restricted to its 'train' images (all but the held-out) or its 'holdout'."""
    if part not in ("train", "holdout"):
        raise DataError(f"part must be 'train' or 'holdout', got {part!r}")
    if part == "train" and count == 0:
        return dict(sources)
    out = {}
    for domain, source in sources.items():
        n = len(source)
        held = holdout_indices(n, count)
        if part == "holdout":
            out[domain] = SubsetSource(source, held, f"{count} held-out training images")
        else:
            keep = np.setdiff1d(np.arange(n), held)
            out[domain] = SubsetSource(source, keep, f"training images without {count} held out")
    return out
