"""A collapse measure: are distinct inputs translated to distinct outputs?

`diversity_ratio(inputs, outputs)` is the mean pairwise RMS distance between the
translations of a set divided by the same mean over the inputs. A generator that maps
every input to one image scores 0; one that moves images apart as much as they were
scores about 1. It needs no classifier and no labels, so every method and dataset gets it
(issue 23: UNIT DA's translations were one grey blob while its losses looked normal).

`within_class_ratio(inputs, outputs, labels)` is the same ratio inside each class, averaged
over the classes: a generator that maps every input of a class to one template scores 0
there while its global ratio stays near 1, since the classes still differ (issue 23, DT3:
DTN's translations, read correctly by a target classifier, teach a fresh one little).
"""

from __future__ import annotations

import numpy as np

MAX_IMAGES = 256  # pairs grow as n^2: 256 images are 32,640 pairs, plenty for a mean
WITHIN_CLASS_IMAGES = 4 * MAX_IMAGES  # ~100 a class for 10 classes


def mean_pairwise_rms(images: np.ndarray, limit: int = MAX_IMAGES) -> float:
    """Mean over pairs i < j of the RMS pixel difference of the first `limit` images."""
    x = np.asarray(images, np.float64)[:limit].reshape(min(len(images), limit), -1)
    if len(x) < 2:
        raise ValueError(f"mean_pairwise_rms needs at least 2 images, got {len(x)}")
    sq = np.sum(x * x, axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * x @ x.T, 0.0) / x.shape[1]
    upper = np.triu_indices(len(x), k=1)
    return float(np.mean(np.sqrt(d2[upper])))


def diversity_ratio(inputs: np.ndarray, outputs: np.ndarray, limit: int = MAX_IMAGES) -> float:
    """mean_pairwise_rms(outputs) / mean_pairwise_rms(inputs): 0 when every output is the same."""
    if len(inputs) != len(outputs):
        raise ValueError(f"diversity_ratio: {len(inputs)} inputs but {len(outputs)} outputs")
    spread = mean_pairwise_rms(inputs, limit)
    if spread == 0.0:
        raise ValueError("diversity_ratio: the inputs are all identical, so no ratio exists")
    return mean_pairwise_rms(outputs, limit) / spread


def within_class_ratio(inputs: np.ndarray, outputs: np.ndarray, labels: np.ndarray,
                       limit: int = WITHIN_CLASS_IMAGES) -> float:
    """Mean over the classes (with >= 2 of the first `limit` images) of diversity_ratio within
    the class: 0 when every input of a class gives one image, about 1 when a class's outputs
    are as spread as its inputs."""
    if not len(inputs) == len(outputs) == len(labels):
        raise ValueError(f"within_class_ratio: {len(inputs)} inputs, {len(outputs)} outputs, "
                         f"{len(labels)} labels")
    labels = np.asarray(labels)[:limit]
    ratios = [diversity_ratio(inputs[:limit][labels == k], outputs[:limit][labels == k], limit)
              for k in np.unique(labels) if np.sum(labels == k) >= 2]
    if not ratios:
        raise ValueError("within_class_ratio: no class has 2 images")
    return float(np.mean(ratios))
